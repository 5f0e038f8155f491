#!/usr/bin/env bash
# Builds loupe's CUDA backend on the GPU machine and measures it; prints a short table last. Run
# from the repository root:
#
#   tests/cuda/run_device.sh [--no-bench]     tests + a small benchmark (< 8 minutes)
#   tests/cuda/run_device.sh --8b             the Llama-3-8B-shape run of issue 4 (< 9 minutes)
#
# Build: configures with -DLOUPE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90: the whole tree when
# pkg-config finds its dependencies (pcre2, ncursesw, libcurl, json-c, poppler-glib, libxml2),
# else the stand-alone CUDA test project in tests/cuda (anns + runtime without the tokenizer + a
# stand-alone mkmodel), which needs only a C compiler with OpenMP, CMake and the CUDA toolkit.
#
# Default mode: ctest -R cuda (kernels vs CPU references, whole-model logits vs the CPU backend
# for every weight type in fp32 and bf16 precision, 64-token greedy generation, the memory plan),
# then a Llama-3.2-1B-shaped random model (`mkmodel --preset llama3-1b`), BF16 and Q8_0 weights:
# prefill of 4096 tokens and 64 greedy decode steps against the floor.
#
# --8b mode (no ctest; run the default mode for the tests):
#   1. parity with Hugging Face transformers (tests/cuda/hf_parity.py): small random models (GQA
#      fp32; Q8_0 with rope_freqs and tied output; qwen2 BF16) and 2 layers of the Llama-3-8B
#      widths in BF16, loupe's cpu/cuda-f32/cuda-bf16 logits against LlamaForCausalLM in fp32;
#   2. the Llama-3-8B shape in BF16 (`mkmodel --preset llama3-8b`): decode ms/token at 4K and 32K
#      of context, prefill tokens/s at both, peak GPU memory, the floor (bytes streamed per token
#      / 2.97 TB/s) and the measured device copy rate (bench_cuda);
#   3. parity of the full 8B BF16 model (cuda-f32, cuda-bf16) with transformers, if time allows;
#   4. the PyTorch reference: a plain eager decode loop, bf16 weights of the same shape, KV on the
#      GPU, at 4K, 32K and 128K (tests/cuda/torch_decode_ref.py);
#   5. the same shape in Q8_0: decode at 4K, and 32K if the time left allows.
#   128K is measured separately (--128k) to keep each call inside its time limit.
# --128k mode: only the BF16 8B model at 131072 tokens (prefill, then decode; 20.5 s + decode on
#   the H100 with the tensor-core prefill), with all the time a 10-minute call leaves.
# Every stage has a time limit derived from a deadline (LOUPE_DEVICE_BUDGET seconds, default 540)
# so the whole run ends inside a 10-minute call; a stage that would not fit says so in the table.
# Models go to /dev/shm when it has room (no disk writeback), else to the build directory.
#
# Logs go to $OUT (at most 8 files): env.txt, build.log, ctest.log, bench.log, parity.log,
# torch_ref.log, summary.txt.
set -uo pipefail
mode=default
bench=1
long=0
for a in "$@"; do
    case $a in
    --no-bench) bench=0 ;;
    --8b) mode=8b ;;
    --128k) mode=8b long=1 ;;
    *) echo "usage: tests/cuda/run_device.sh [--no-bench | --8b | --128k]" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-/tmp/loupe-cuda-out}
mkdir -p "$OUT"
B=build-device
MODE=
T0=$(date +%s)
DEADLINE=${LOUPE_DEVICE_BUDGET:-$([ $long = 1 ] && echo 570 || echo 540)}
elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((DEADLINE - $(date +%s) + T0)); }
# limit WANT RESERVE: seconds a stage may take: WANT, or less so that RESERVE seconds remain.
limit() {
    local l=$(($(left) - $2))
    [ "$l" -gt "$1" ] && l=$1
    [ "$l" -lt 1 ] && l=1 # timeout 0 would mean no limit at all
    echo "$l"
}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
export PATH="$(dirname "$NVCC"):$PATH"
PY=python3
[ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
PY=${LOUPE_PY:-$PY}
# Dry runs of --8b on a machine without a GPU can shrink the big model and the torch loop:
# LOUPE_8B_ARGS (default "--preset llama3-8b --ctx 131072": the preset says 8192, too short for 32K), LOUPE_TORCH_ARGS (extra torch_decode_ref options).
# --128k needs room past 131072 for the decode steps after the prefill.
big_ctx=$([ $long = 1 ] && echo 135168 || echo 131072)
read -r -a BIG <<<"${LOUPE_8B_ARGS:---preset llama3-8b --ctx $big_ctx}"
read -r -a TORCH_ARGS <<<"${LOUPE_TORCH_ARGS:-}"
# Scratch models need no fsync (tests/cuda/mkmodel_main.c); the stand-alone mkmodel honours this.
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=passive LOUPE_MKMODEL_NO_FSYNC=1
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (plus uncommitted changes)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    "$NVCC" --version | tail -2
    cmake --version | head -1
    cc --version | head -1
    echo "cores: $(nproc)"
    free -g | head -2
    df -h /dev/shm . | tail -n +1
    "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"
    "$PY" -c "import transformers; print('transformers', transformers.__version__)"
} >"$OUT/env.txt" 2>&1

GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
# configure_build SRC DIR TARGET...: configure and build one way; returns the build's status.
configure_build() {
    local src=$1 dir=$2
    shift 2
    local targets=()
    [ $# -gt 0 ] && targets=(--target "$@")
    cmake -S "$src" -B "$dir" "${GEN[@]}" -DLOUPE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_BUILD_TYPE=Release &&
        timeout 240 cmake --build "$dir" -j16 "${targets[@]}"
}
build_ok=0
: >"$OUT/build.log"
# LOUPE_STANDALONE=1 takes the stand-alone way even where the tree's dependencies exist.
if [ "${LOUPE_STANDALONE:-0}" != 1 ] &&
    pkg-config --exists libpcre2-8 ncursesw libcurl json-c poppler-glib libxml-2.0 2>/dev/null; then
    MODE="full tree"
    echo "== $MODE" >>"$OUT/build.log"
    targets=()
    [ $mode = 8b ] && targets=(loupe bench_cuda logits_dump)
    configure_build . "$B" "${targets[@]}" >>"$OUT/build.log" 2>&1 && build_ok=1
    MKMODEL=("$B/app/loupe" mkmodel)
    BENCH=$B/tests/cuda/bench_cuda
    LOGITS=$B/tests/cuda/logits_dump
fi
if [ $build_ok = 0 ]; then
    # The tree's dependencies are missing (or its build failed): the stand-alone CUDA project.
    MODE="stand-alone tests/cuda${MODE:+ (full tree failed)}"
    [ "$MODE" = "stand-alone tests/cuda" ] && MODE="$MODE (tree dependencies missing)"
    B=build-device-sa
    echo "== $MODE" >>"$OUT/build.log"
    targets=()
    [ $mode = 8b ] && targets=(loupe_mkmodel bench_cuda logits_dump)
    configure_build tests/cuda "$B" "${targets[@]}" >>"$OUT/build.log" 2>&1 && build_ok=1
    MKMODEL=("$B/loupe_mkmodel")
    BENCH=$B/bench_cuda
    LOGITS=$B/logits_dump
fi
[ $build_ok = 1 ] || tail -30 "$OUT/build.log"
echo "build: $([ $build_ok = 1 ] && echo ok || echo FAILED) ($MODE) at $(elapsed) s"

# ==== default mode: tests and the 1B benchmark ==================================================
if [ $mode = default ]; then
    ctest_line="not run"
    if [ $build_ok = 1 ]; then
        timeout 180 ctest --test-dir "$B" -R cuda --output-on-failure -j4 --timeout 120 \
            >"$OUT/ctest.log" 2>&1
        ctest_line=$(grep -E "tests passed|tests failed" "$OUT/ctest.log" | tail -1)
        n_skip=$(grep -c '\*\*\*Skipped' "$OUT/ctest.log" || true)
        ctest_line="$ctest_line; $n_skip skipped"
        grep -E "\*\*\*Failed|Timeout" "$OUT/ctest.log" | head -20
    fi
    echo "ctest: $ctest_line at $(elapsed) s"

    rows=()
    if [ $build_ok = 1 ] && [ $bench = 1 ] && [ "$(elapsed)" -gt 330 ]; then
        rows+=("benchmark skipped: $(elapsed) s used, it would not finish inside 8 minutes")
    elif [ $build_ok = 1 ] && [ $bench = 1 ]; then
        M=$B/bench-models
        mkdir -p "$M"
        : >"$OUT/bench.log"
        for type in bf16 q8_0; do
            f=$M/llama3-1b-$type.gguf
            if ! timeout 120 "${MKMODEL[@]}" --out "$f" --preset llama3-1b --type "$type" \
                --seed 3 >>"$OUT/bench.log" 2>&1; then
                rows+=("llama3-1b-$type: mkmodel failed")
                continue
            fi
            line=$(timeout 120 "$BENCH" "$f" 4096 64 bf16 2970 2>>"$OUT/bench.log" |
                tee -a "$OUT/bench.log" | sed -n 2p)
            rows+=("${line:-llama3-1b-$type: bench failed (see bench.log)}")
            rm -f "$f"
        done
    fi

    {
        echo
        echo "== loupe CUDA on ${gpu_name:-unknown GPU}, $(elapsed) s =="
        echo "build : $([ $build_ok = 1 ] && echo ok || echo FAILED) ($MODE)"
        echo "tests : $ctest_line"
        echo "bench : 4096-token prefill, 64 greedy decode steps, bf16 activations/KV"
        printf '%-24s %9s %11s %10s %9s %6s %8s\n' model prefill_s prefill_t/s decode_ms \
            floor_ms ratio gpu_GiB
        for r in "${rows[@]}"; do
            IFS=, read -r name prec n ps pts dms fms ratio gib _ <<<"$r"
            if [ -n "${gib:-}" ]; then
                printf '%-24s %9s %11s %10s %9s %6s %8s\n' "$name" "$ps" "$pts" "$dms" "$fms" \
                    "$ratio" "$gib"
            else
                echo "$r"
            fi
        done
    } | tee "$OUT/summary.txt"
    exit 0
fi

# ==== --8b mode ==================================================================================
W=$(mktemp -d)  # CSV rows and notes for the table
: >"$OUT/bench.log"
: >"$OUT/parity.log"
: >"$OUT/torch_ref.log"
notes=()
MD=$B/bench-models
shm_free=$(df -B1G --output=avail /dev/shm 2>/dev/null | tail -1 | tr -d ' ')
[ "${shm_free:-0}" -ge 20 ] && MD=/dev/shm/loupe-bench
mkdir -p "$MD"
trap 'rm -rf "$W"; rm -f "$MD"/*.gguf' EXIT
echo "models in $MD; deadline $DEADLINE s" >>"$OUT/bench.log"

# mk NAME TIMEOUT ARGS...: writes $MD/NAME.gguf; logs the time it took.
mk() {
    local name=$1 t=$2 s
    shift 2
    s=$(date +%s)
    if timeout -k 5 "$t" "${MKMODEL[@]}" --out "$MD/$name.gguf" "$@" >>"$OUT/bench.log" 2>&1; then
        echo "mkmodel $name: $(($(date +%s) - s)) s, $(du -h "$MD/$name.gguf" | cut -f1)" |
            tee -a "$OUT/bench.log"
        return 0
    fi
    echo "mkmodel $name: FAILED or over $t s" | tee -a "$OUT/bench.log"
    return 1
}

# bench NAME CTXS TIMEOUT: bench_cuda rows into $W/bench.csv.
bench() {
    local t=$3
    echo "== bench_cuda $1 $2 (limit $t s) at $(elapsed) s" >>"$OUT/bench.log"
    timeout -k 5 "$t" "$BENCH" "$MD/$1.gguf" "$2" 32 bf16 2970 2>>"$OUT/bench.log" |
        tee -a "$OUT/bench.log" | grep -E '^[^,]+[.]gguf,' >>"$W/bench.csv"
    echo "bench $1 done at $(elapsed) s"
}

# parity LIMIT BACKENDS MODEL...: hf_parity.py into parity.log, PARITY lines kept for the table.
parity() {
    local t=$1 be=$2
    shift 2
    echo "== hf_parity (limit $t s) at $(elapsed) s" >>"$OUT/parity.log"
    timeout -k 5 "$t" "$PY" tests/cuda/hf_parity.py "$@" --logits-dump "$LOGITS" \
        --backends "$be" --n-tokens 40 --n-decode 8 --hf-bf16 --tmp "$W" >>"$OUT/parity.log" 2>&1
    local rc=$?
    [ $rc = 124 ] && echo "PARITY (stage): stopped at its $t s limit" >>"$OUT/parity.log"
    grep '^PARITY' "$OUT/parity.log" >"$W/parity.txt"
    echo "parity done at $(elapsed) s (rc $rc)"
}

# Expected stage times on the H100 (s): small parity 45, mkmodel 8B 20, bench BF16 4K+32K 60,
# full parity 60, torch loop 20, Q8_0 4K 30 (+32K prefill). Each stage's limit keeps back what the
# essential later ones need (reserve), so a slow stage shortens the optional ones, not the table.
if [ $build_ok = 1 ] && [ $long = 1 ]; then
    if mk llama3-8b-bf16 "$(limit 120 60)" "${BIG[@]}" --type bf16 --seed 3; then
        bench llama3-8b-bf16 131072 "$(limit 600 5)"
        grep -q ',131072,' "$W/bench.csv" ||
            notes+=("llama3-8b bf16 at 128K: did not finish by the $DEADLINE s deadline")
    fi
elif [ $build_ok = 1 ]; then
    # 1. parity on small models and on 2 layers of the 8B widths.
    small=()
    for spec in "tiny-gqa-f32:--preset tiny --embd 256 --heads 4 --kv-heads 2 --type f32 --seed 5" \
        "tiny-q8-ropefreqs-tied:--preset tiny --heads 4 --kv-heads 1 --type q8_0 --rope-freqs --tied --seed 6" \
        "qwen2-tiny-bf16:--preset qwen2-tiny --type bf16 --seed 7" \
        "l8b-2layers-bf16:--preset llama3-8b --layers 2 --type bf16 --seed 8"; do
        n=${spec%%:*}
        # shellcheck disable=SC2086 # the options are words
        mk "$n" 60 ${spec#*:} && small+=("$n=$MD/$n.gguf")
    done
    [ ${#small[@]} -gt 0 ] && parity "$(limit 120 200)" cpu,cuda-f32,cuda-bf16 "${small[@]}"
    rm -f "$MD"/tiny-*.gguf "$MD"/qwen2-*.gguf "$MD"/l8b-2layers-bf16.gguf

    # 2. the 8B shape in BF16.
    p32=""
    if [ "$(left)" -lt 120 ]; then
        notes+=("llama3-8b bf16: not run, $(left) s left")
    elif mk llama3-8b-bf16 "$(limit 120 100)" "${BIG[@]}" --type bf16 --seed 3; then
        bench llama3-8b-bf16 4096,32768 "$(limit 240 60)"
        p32=$(awk -F, '$1 ~ /bf16/ && $3 == 32768 {print int($4 + 1)}' "$W/bench.csv")
        # 3. full-model parity, only when the torch loop and Q8_0 at 4K still fit after it.
        if [ "$(left)" -gt 250 ]; then
            parity "$(limit 100 150)" cuda-f32,cuda-bf16 "llama3-8b-bf16=$MD/llama3-8b-bf16.gguf"
        else
            notes+=("full llama3-8b parity: skipped, $(left) s left (the 2-layer 8B-width one ran)")
        fi
    else
        notes+=("llama3-8b bf16: mkmodel failed or too slow (bench.log)")
    fi
    rm -f "$MD/llama3-8b-bf16.gguf"

    # 4. the PyTorch eager reference loop.
    if [ "$(left)" -gt 50 ]; then
        echo "== torch_decode_ref at $(elapsed) s" >>"$OUT/torch_ref.log"
        timeout -k 5 "$(limit 90 20)" "$PY" tests/cuda/torch_decode_ref.py \
            --ctx 4096,32768,131072 --steps 24 "${TORCH_ARGS[@]}" 2>>"$OUT/torch_ref.log" |
            tee -a "$OUT/torch_ref.log" | grep '^torch_eager,' >"$W/torch.csv"
        echo "torch reference done at $(elapsed) s"
    else
        notes+=("torch reference: not run, $(left) s left")
    fi

    # 5. the 8B shape in Q8_0: 32K only if its prefill (about the BF16 one) fits.
    if [ "$(left)" -gt 80 ] && mk llama3-8b-q8_0 "$(limit 90 40)" "${BIG[@]}" \
        --type q8_0 --seed 3; then
        ctxs=4096
        if [ -n "$p32" ] && [ "$(left)" -gt $((p32 + 90)) ]; then
            ctxs=4096,32768
        else
            notes+=("llama3-8b q8_0 at 32K: skipped, $(left) s left (32K prefill ~${p32:-?} s)")
        fi
        bench llama3-8b-q8_0 "$ctxs" "$(limit 200 3)"
        rm -f "$MD/llama3-8b-q8_0.gguf"
    else
        notes+=("llama3-8b q8_0: not run ($(left) s left, or mkmodel failed)")
    fi
fi

# ==== the table ===================================================================================
{
    echo
    echo "== loupe CUDA, Llama-3-8B shape, on ${gpu_name:-unknown GPU}, $(elapsed) s =="
    echo "build  : $([ $build_ok = 1 ] && echo ok || echo FAILED) ($MODE)"
    copy=$(awk -F, 'NF >= 11 {print $11; exit}' "$W/bench.csv" 2>/dev/null)
    echo "HBM    : device copy ${copy:-?} GB/s measured; floors use 2970 GB/s"
    echo "parity : max relative logit error per row vs transformers fp32 (tolerance cpu, cuda-f32"
    echo "         2e-3; cuda-bf16 2e-2 or HF's own bf16 error if larger; hf-bf16 = that error)"
    if [ -s "$W/parity.txt" ]; then
        sed 's/^PARITY /  /' "$W/parity.txt"
    else
        echo "  (not run)"
    fi
    echo "decode : median of 32 greedy steps after a prefill of ctx random tokens; torch: 24 steps"
    printf '%-12s %-5s %7s %9s %11s %10s %9s %6s %8s\n' engine wts ctx prefill_s prefill_t/s \
        decode_ms floor_ms ratio peak_GiB
    if [ -s "$W/bench.csv" ]; then
        while IFS=, read -r name prec n ps pts dms fms ratio gib used _; do
            w=${name#llama3-8b-}
            w=${w%.gguf}
            printf '%-12s %-5s %7s %9s %11s %10s %9s %6s %8s\n' loupe "$w" "$n" "$ps" "$pts" \
                "$dms" "$fms" "$ratio" "$used"
        done <"$W/bench.csv"
    fi
    if [ -s "$W/torch.csv" ]; then
        while IFS=, read -r name prec n dms fms ratio peak; do
            printf '%-12s %-5s %7s %9s %11s %10s %9s %6s %8s\n' torch-eager "$prec" "$n" - - \
                "$dms" "$fms" "$ratio" "$peak"
        done <"$W/torch.csv"
    fi
    # loupe / torch at each length both have.
    if [ -s "$W/bench.csv" ] && [ -s "$W/torch.csv" ]; then
        awk -F, 'NR == FNR { t[$3] = $4; next }
                 ($3 in t) { w = $1; sub(/^llama3-8b-/, "", w); sub(/\.gguf$/, "", w)
                             printf "vs torch: loupe %s at %d: %.3f / %.3f ms = %.2fx the eager loop\n", w, $3, $6, t[$3], $6 / t[$3] }' \
            "$W/torch.csv" "$W/bench.csv"
    fi
    [ $long = 1 ] ||
        echo "128K   : measured by --128k (its own call)"
    for n in "${notes[@]}"; do echo "note   : $n"; done
} | tee "$OUT/summary.txt"
