#!/usr/bin/env bash
# Runs one stage of the loupe-tiny pipeline on the GPU machine, from the repository root.
#
#   tests/models/run_on_device.sh prep                 tokenizer + corpus (skips what exists)
#   tests/models/run_on_device.sh bench                throughput per length, data-gen speed
#   tests/models/run_on_device.sh train ARGS...        train.py ARGS (resumes), weights to $OUT
#   tests/models/run_on_device.sh final ARGS...        export GGUFs + eval.py ARGS, files to $OUT
#   tests/models/run_on_device.sh finetune             restore from the committed GGUF, check the
#                                                      tokenizer, fine-tune, export, eval: one call
#   tests/models/run_on_device.sh sparsity [GGUF]      the model card's attention table (top-100
#                                                      mass, Mahalanobis) for the committed GGUF
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

# ---- finetune: one device call of < 590 s ---------------------------------------------------
# Phases, each under a deadline (seconds since the stage began): restore tokenizer.json + init.pt
# from the GGUF (from_gguf.py) into $C, dropping any earlier checkpoint; prep.py (keeps that
# tokenizer.json, only tokenizes the corpus); tokenizer check (HF ids == `loupe tokenize` ids, or
# abort); train.py --init for the time left less FT_AFTER; export F16; GGUF parts to $OUT;
# eval.py (loupe-layout kv first, then data.py's kv and passkey, then 8K/4K) until FT_END less
# the niah reserve; `loupe bench niah --backend cuda` kv at 16K (seed 101, what issue 5 scores)
# when FT_NIAH=1 and time is left; a summary. $OUT gets 5 files: loupe-tiny.gguf.part-00..02,
# finetune.log (everything printed), eval.json.
FT_END=${FT_END:-585}              # the stage ends by then (a device call stops at 600 s)
FT_AFTER=${FT_AFTER:-200}          # kept for train start-up/save, export, eval.py and niah
FT_SEC_PER_STEP=${FT_SEC_PER_STEP:-0.25}  # H100 at these phases (README throughput): plans --steps
FT_SEED=${FT_SEED:-4321}           # batches: neither the original run's (1234) nor eval's
FT_LR=${FT_LR:-3e-4}
FT_PHASES=${FT_PHASES:-0.45:16384,0.35:32768,0.20:16384}
FT_MIX=${FT_MIX:-lm=0.12,passkey=0.10,needles=0.10,kv=0.28,kvl=0.30,whichfile=0.10}
FT_GGUF=${FT_GGUF:-tests/models/loupe-tiny.gguf}
FT_CELLS=${FT_CELLS:-kvl@16384:100,kv@16384:100,passkey@16384:40,kvl@8192:100,kvl@4096:100,kv@8192:50,kv@4096:50}
FT_NIAH=${FT_NIAH:-1}              # 0: no `loupe bench niah` phase
FT_NIAH_RESERVE=${FT_NIAH_RESERVE:-100}
LOUPE_BIN=${LOUPE_BIN:-build-devfull/app/loupe}

ft_t0=$SECONDS
ft_log() { echo "[finetune $((SECONDS - ft_t0))s] $*"; }
ft_left() { echo $((FT_END - (SECONDS - ft_t0))); }

# ft_phase NAME SECONDS CMD...: CMD under a hard time limit; a failure ends the stage with one
# line saying which phase failed and why.
ft_phase() {
    local name=$1 limit=$2 rc=0
    shift 2
    if ((limit < 5)); then
        ft_log "FAILED: no time left for $name"
        exit 1
    fi
    ft_log "$name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    if ((rc != 0)); then
        ft_log "FAILED in $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (time limit)')"
        exit "$rc"
    fi
}

ft_summary() {
    python3 - "$C/runs.jsonl" "$OUT/eval.json" "$1" <<'EOF'
import json, os, sys
run = json.loads(open(sys.argv[1]).read().splitlines()[-1])
ev = json.load(open(sys.argv[2]))
print("==== finetune summary " + "=" * 56)
print("train   steps %d -> %d, %.1f M tokens, %.1f s (stopped for time: %s), peak %.1f GB, %s"
      % (run["from_step"], run["to_step"], run["tokens"] / 1e6, run["train_seconds"],
         run["stopped_for_time"], run["peak_mem_gb"], run["gpu"]))
print("losses  last log %s" % json.dumps(run.get("last_log")))
print("gguf    %s, %d bytes" % (sys.argv[3], os.path.getsize(sys.argv[3])))
print("checks  numpy vs torch %.1e, gguf vs ckpt %.1e (argmax agree %.3f)"
      % (ev["numpy_vs_torch_max_rel"], ev.get("gguf_vs_ckpt_max_rel", -1),
         ev.get("gguf_vs_ckpt_argmax_agree", -1)))
for k, a in ev["accuracy"].items():
    d = ev["kvl_by_depth"].get(k)
    print("eval    %-15s %5.1f%% of %3d%s" % (k, 100 * a, ev["cases"][k],
                                            "  by depth " + json.dumps(d) if d else ""))
print("=" * 78)
EOF
}

finetune() {
    local G=$C/loupe-tiny.gguf r train_s steps base niah=0
    ft_log "device: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null \
        || echo none); GGUF $FT_GGUF; loupe $LOUPE_BIN"
    python3 -c 'import sys, torch, tokenizers, numpy; print(sys.version.split()[0], torch.__version__, tokenizers.__version__, numpy.__version__)'
    if [[ ! -x $LOUPE_BIN ]]; then
        ft_log "FAILED: no loupe binary at $LOUPE_BIN (set LOUPE_BIN: the tokenizer check needs it)"
        exit 1
    fi
    # A fresh state: no checkpoint or run log of an earlier run is picked up; the corpus stays
    # only when it was tokenized with an identical tokenizer.json.
    mkdir -p "$C/restore"
    ft_phase restore 60 python3 tests/models/from_gguf.py restore --gguf "$FT_GGUF" \
        --out "$C/restore"
    if ! cmp -s "$C/restore/tokenizer.json" "$C/tokenizer.json"; then
        rm -f "$C/corpus.npz" "$C/prep.json"
    fi
    rm -f "$C/ckpt.pt" "$C/ckpt.pt.tmp" "$C/runs.jsonl" "$G"
    cp "$C/restore/tokenizer.json" "$C/tokenizer.json"
    if [[ ! -f $C/corpus.npz ]]; then
        ft_phase prep 150 python3 tests/models/prep.py --out "$C"
    fi
    ft_phase tokenizer-check 90 python3 tests/models/from_gguf.py check-tokenizer \
        --gguf "$FT_GGUF" --tokenizer "$C/tokenizer.json" --loupe "$LOUPE_BIN"

    train_s=$(($(ft_left) - FT_AFTER))
    steps=$(python3 -c "print(max(50, int($train_s * 0.95 / $FT_SEC_PER_STEP)))")
    ft_log "training for ${train_s}s, ${steps} steps planned (schedule and lengths follow steps)"
    ft_phase train $((train_s + 60)) python3 tests/models/train.py --cache "$C" \
        --init "$C/restore/init.pt" --steps "$steps" --lr "$FT_LR" --warmup 40 \
        --min-lr-frac 0.1 --phases "$FT_PHASES" --mix "$FT_MIX" --seed "$FT_SEED" \
        --time-limit "$train_s" --log-every 25
    base=$(python3 -c "import torch; print(torch.load('$C/restore/init.pt', map_location='cpu')['args']['gguf_train_steps'])")
    ft_phase export 60 python3 tests/models/export_gguf.py --ckpt "$C/ckpt.pt" \
        --tokenizer "$C/tokenizer.json" --type f16 --base-steps "$base" --out "$G"
    split -b 15M -d "$G" "$OUT/loupe-tiny.gguf.part-"
    sha256sum "$G"

    if [[ $FT_NIAH == 1 ]]; then
        niah=$FT_NIAH_RESERVE
    fi
    # eval.py starts no case after its deadline; the margin covers imports and one last case.
    r=$(($(ft_left) - niah))
    ft_phase eval $((r - 5)) python3 tests/models/eval.py --gguf "$G" --cache "$C" \
        --ckpt "$C/ckpt.pt" --cells "$FT_CELLS" --sparsity-len 0 \
        --deadline $((r > 36 ? r - 35 : 1)) --out "$OUT/eval.json"
    r=$(($(ft_left) - 10))
    if ((niah > 0 && r > 30)); then
        # The command issue 5 is scored by, kv at 16K only; cut off, it has still printed the
        # cells it finished. Nothing in this stage is chosen by its result.
        ft_log "loupe bench niah kv 16384 (limit ${r}s)"
        timeout --kill-after=5 "$r" "$LOUPE_BIN" bench niah --model "$G" --backend cuda \
            --task kv --lengths 16384 --depths 0,0.25,0.5,0.75,1 --cases 20 --seed 101 ||
            ft_log "loupe bench niah: exit $? (time limit or error)"
    fi
    ft_summary "$G"
    ft_log "done"
}

case $stage in
finetune)
    # Everything printed also goes to one log in $OUT (at most 8 files come back).
    if [[ -d .devlibs ]]; then
        export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
    finetune 2>&1 | tee "$OUT/finetune.log"
    ;;
sparsity)
    # The corpus needs only the GGUF's own tokenizer; a held-out passkey cell of 20 cases checks
    # the file reads back before the per-layer table at 16K (eval.py's sparsity()).
    G=${1:-tests/models/loupe-tiny.gguf}
    mkdir -p "$C/restore"
    python3 tests/models/from_gguf.py restore --gguf "$G" --out "$C/restore"
    if ! cmp -s "$C/restore/tokenizer.json" "$C/tokenizer.json"; then
        rm -f "$C/corpus.npz" "$C/prep.json"
        cp "$C/restore/tokenizer.json" "$C/tokenizer.json"
    fi
    [[ -f $C/corpus.npz ]] || python3 tests/models/prep.py --out "$C"
    python3 tests/models/eval.py --gguf "$G" --cache "$C" --cells passkey@16384:20 \
        --sparsity-len 16384 --out "$OUT/sparsity.json" 2>&1 | tee "$OUT/sparsity.log"
    ;;
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
