#!/usr/bin/env bash
# Builds loupe's CUDA backend on the GPU machine, runs every CUDA test and a small benchmark, and
# prints a short table last. Run from the repository root:
#
#   tests/cuda/run_device.sh [--no-bench]
#
# - Configures with -DLOUPE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90: the whole tree when pkg-config
#   finds its dependencies (pcre2, ncursesw, libcurl, json-c, poppler-glib, libxml2), else the
#   stand-alone CUDA test project in tests/cuda (anns + runtime without the tokenizer + a
#   stand-alone mkmodel), which needs only a C compiler with OpenMP, CMake and the CUDA toolkit.
# - ctest -R cuda (kernels vs CPU references, whole-model logits vs the CPU backend for every
#   weight type in fp32 and bf16 precision, 64-token greedy generation, the memory plan).
# - Benchmark: a Llama-3.2-1B-shaped random model (`mkmodel --preset llama3-1b`), BF16 and Q8_0
#   weights: prefill of 4096 tokens (tokens/s) and 64 greedy decode steps after it (median ms per
#   token) against the floor = bytes streamed per token / 2.97 TB/s.
# Logs go to $OUT (at most 8 files): env.txt, build.log, ctest.log, bench.log, summary.txt.
# Stages have time limits so the whole run stays under 8 minutes on a 16-core H100 machine.
set -uo pipefail
bench=1
[ "${1:-}" = --no-bench ] && bench=0
OUT=${OUT:-/tmp/loupe-cuda-out}
mkdir -p "$OUT"
B=build-device
MODE=
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
export PATH="$(dirname "$NVCC"):$PATH"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (plus uncommitted changes)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    "$NVCC" --version | tail -2
    cmake --version | head -1
    cc --version | head -1
    nproc
} >"$OUT/env.txt" 2>&1

GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
# configure_build SRC DIR: configure and build one way; returns the build's status.
configure_build() {
    cmake -S "$1" -B "$2" "${GEN[@]}" -DLOUPE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_BUILD_TYPE=Release &&
        timeout 200 cmake --build "$2" -j16
}
build_ok=0
: >"$OUT/build.log"
if pkg-config --exists libpcre2-8 ncursesw libcurl json-c poppler-glib libxml-2.0 2>/dev/null; then
    MODE="full tree"
    echo "== $MODE" >>"$OUT/build.log"
    configure_build . "$B" >>"$OUT/build.log" 2>&1 && build_ok=1
    MKMODEL=("$B/app/loupe" mkmodel)
    BENCH=$B/tests/cuda/bench_cuda
fi
if [ $build_ok = 0 ]; then
    # The tree's dependencies are missing (or its build failed): the stand-alone CUDA project.
    MODE="stand-alone tests/cuda${MODE:+ (full tree failed)}"
    [ "$MODE" = "stand-alone tests/cuda" ] && MODE="$MODE (tree dependencies missing)"
    B=build-device-sa
    echo "== $MODE" >>"$OUT/build.log"
    configure_build tests/cuda "$B" >>"$OUT/build.log" 2>&1 && build_ok=1
    MKMODEL=("$B/loupe_mkmodel")
    BENCH=$B/bench_cuda
fi
[ $build_ok = 1 ] || tail -30 "$OUT/build.log"
echo "build: $([ $build_ok = 1 ] && echo ok || echo FAILED) ($MODE) at $(elapsed) s"

ctest_line="not run"
if [ $build_ok = 1 ]; then
    OMP_WAIT_POLICY=passive timeout 180 ctest --test-dir "$B" -R cuda --output-on-failure \
        -j4 --timeout 120 >"$OUT/ctest.log" 2>&1
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
    echo "== loupe CUDA on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(elapsed) s =="
    echo "build : $([ $build_ok = 1 ] && echo ok || echo FAILED) ($MODE)"
    echo "tests : $ctest_line"
    echo "bench : 4096-token prefill, 64 greedy decode steps, bf16 activations/KV"
    printf '%-24s %9s %11s %10s %9s %6s %8s\n' model prefill_s prefill_t/s decode_ms floor_ms ratio gpu_GiB
    for r in "${rows[@]}"; do
        IFS=, read -r name prec n ps pts dms fms ratio gib <<<"$r"
        if [ -n "${gib:-}" ]; then
            printf '%-24s %9s %11s %10s %9s %6s %8s\n' "$name" "$ps" "$pts" "$dms" "$fms" "$ratio" "$gib"
        else
            echo "$r"
        fi
    done
} | tee "$OUT/summary.txt"
