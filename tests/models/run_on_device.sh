#!/usr/bin/env bash
# Runs one stage of the loupe-tiny pipeline on the GPU machine, from the repository root.
#
#   tests/models/run_on_device.sh prep                 tokenizer + corpus (skips what exists)
#   tests/models/run_on_device.sh bench                throughput per length, data-gen speed
#   tests/models/run_on_device.sh train ARGS...        train.py ARGS (resumes), weights to $OUT
#   tests/models/run_on_device.sh final ARGS...        export GGUFs + eval.py ARGS, files to $OUT
#
# State lives in .cache/model-train (git-ignored, kept while the machine stays warm). To move to
# a fresh machine, carry .cache/model-carry: tokenizer.json and the fp16 weights in parts
# (weights.pt.part-*) that the train stage writes to $OUT; they are restored here when
# .cache/model-train has no checkpoint. Everything is seeded (see README.md).
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
C=.cache/model-train
K=.cache/model-carry
OUT=${OUT:-/tmp/out}
mkdir -p "$C" "$OUT"
stage=${1:?stage}
shift || true

restore() {
    if [[ -f $K/tokenizer.json && ! -f $C/tokenizer.json ]]; then
        cp "$K/tokenizer.json" "$C/"
    fi
    if [[ ! -f $C/corpus.npz ]]; then
        python3 tests/models/prep.py --out "$C"
    fi
    if [[ ! -f $C/ckpt.pt ]] && ls "$K"/weights.pt.part-* >/dev/null 2>&1; then
        cat "$K"/weights.pt.part-* > "$C/ckpt.pt"
        echo "restored weights from $K (no optimizer state)"
    fi
    if [[ -f $K/runs.jsonl && ! -f $C/runs.jsonl ]]; then
        cp "$K/runs.jsonl" "$C/"
    fi
}

snapshot() {
    # fp16 weights only (no optimizer), in parts under the 16 MB per-file limit of $OUT.
    python3 - "$C" <<'EOF'
import sys, torch
c = sys.argv[1]
ck = torch.load(c + "/ckpt.pt", map_location="cpu")
torch.save({"model": {k: v.to(torch.float16) for k, v in ck["model"].items()},
            "opt": None, "step": ck["step"], "config": ck["config"], "args": ck["args"]},
           c + "/weights.pt")
EOF
    split -b 15M -d "$C/weights.pt" "$OUT/weights.pt.part-"
    cp "$C/tokenizer.json" "$C/runs.jsonl" "$OUT/" 2>/dev/null || true
}

case $stage in
prep)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c 'import sys, torch, tokenizers, numpy; print(sys.version.split()[0], torch.__version__, tokenizers.__version__, numpy.__version__)'
    restore
    cp "$C/tokenizer.json" "$C/prep.json" "$OUT/"
    ;;
bench)
    restore
    python3 tests/models/train.py --cache "$C" --bench "$@"
    ;;
train)
    restore
    python3 tests/models/train.py --cache "$C" "$@" 2>&1 | tee "$OUT/train.log"
    snapshot
    ;;
final)
    restore
    python3 tests/models/export_gguf.py --ckpt "$C/ckpt.pt" --tokenizer "$C/tokenizer.json" \
        --type f16 --out "$C/loupe-tiny.gguf"
    python3 tests/models/export_gguf.py --ckpt "$C/ckpt.pt" --tokenizer "$C/tokenizer.json" \
        --type q8_0 --out "$C/loupe-tiny-q8_0.gguf"
    python3 tests/models/eval.py --gguf "$C/loupe-tiny.gguf" --cache "$C" --ckpt "$C/ckpt.pt" \
        --out "$OUT/eval.json" "$@" 2>&1 | tee "$OUT/eval.log"
    split -b 15M -d "$C/loupe-tiny.gguf" "$OUT/loupe-tiny.gguf.part-"
    split -b 15M -d "$C/loupe-tiny-q8_0.gguf" "$OUT/loupe-tiny-q8_0.gguf.part-"
    # The Q8_0 variant: same checks, fewer cases (a sanity check of the quantised file).
    python3 tests/models/eval.py --gguf "$C/loupe-tiny-q8_0.gguf" --cache "$C" \
        --lengths 16384 --cases 50 --sparsity-len 0 2>&1 | tee "$OUT/eval_q8.log"
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
