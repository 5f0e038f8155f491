#!/usr/bin/env bash
# Issue 4's decode measurements in one device call (< 10 minutes), from the repository root:
#
#   tests/cuda/run_device_decode.sh [SRC]
#
# 1. builds the stand-alone CUDA project (tests/cuda of SRC, default the working tree: a source
#    snapshot can be carried when the tree is mid-edit) into build-device-sa;
# 2. ctest -R cuda (every kernel against its CPU reference, whole-model logits, graphs, co-exec);
# 3. bench_cuda --kernels (mat-vec and flash-decoding GB/s on the 8B shapes);
# 4. the Llama-3-8B shape, BF16 then Q8_0 weights (mkmodel into /dev/shm): decode at 4K, 32K and
#    128K of context (bench_cuda, one engine, 64 greedy steps each).
# Every stage has a deadline derived from BUDGET (default 570 s). Logs to $OUT (env.txt,
# build.log, ctest.log, kernels.log, decode.log, summary.txt); the table is printed last.
set -uo pipefail
SRC=${1:-.}
OUT=${OUT:-/tmp/loupe-decode-out}
BUDGET=${BUDGET:-570}
mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $((BUDGET - $(date +%s) + T0)); }
# cap MAX RESERVE: a stage's limit, at most MAX, leaving RESERVE for the stages after it; the
# reserves are sized for the default budget and shrink with a smaller one (tests/device.sh).
cap() {
    local l=$(($(left) - $2 * BUDGET / 570))
    [ "$l" -gt "$1" ] && l=$1
    [ "$l" -lt 1 ] && l=1
    echo "$l"
}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
export PATH="$(dirname "$NVCC"):$PATH" OMP_WAIT_POLICY=passive LOUPE_MKMODEL_NO_FSYNC=1
{
    date -u +%FT%TZ
    git rev-parse --short HEAD 2>/dev/null || echo "commit unknown"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$NVCC" --version | tail -1
} >"$OUT/env.txt" 2>&1
B=build-device-sa
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
build_ok=0
cmake -S "$SRC/tests/cuda" -B "$B" "${GEN[@]}" -DLOUPE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_BUILD_TYPE=Release >"$OUT/build.log" 2>&1 &&
    timeout "$(cap 240 300)" cmake --build "$B" -j16 >>"$OUT/build.log" 2>&1 && build_ok=1
echo "build: $build_ok at $((BUDGET - $(left))) s"
[ $build_ok = 1 ] || { tail -30 "$OUT/build.log"; exit 1; }

timeout "$(cap 150 330)" ctest --test-dir "$B" -R cuda --output-on-failure -j4 --timeout 120 \
    >"$OUT/ctest.log" 2>&1
ctest_line=$(grep -E "tests passed|tests failed" "$OUT/ctest.log" | tail -1)
grep -E "\*\*\*Failed|Timeout" "$OUT/ctest.log" | head -20
echo "ctest: $ctest_line at $((BUDGET - $(left))) s"

timeout "$(cap 60 280)" "$B/bench_cuda" --kernels 2970 >"$OUT/kernels.log" 2>&1
echo "kernels: rc $? at $((BUDGET - $(left))) s"

MD=/dev/shm/loupe-decode
mkdir -p "$MD"
: >"$OUT/decode.log"
rows=()
for type in bf16 q8_0; do
    f=$MD/llama3-8b-$type.gguf
    if ! timeout "$(cap 90 60)" "$B/loupe_mkmodel" --out "$f" --preset llama3-8b --ctx 135168 \
        --type "$type" --seed 3 >>"$OUT/decode.log" 2>&1; then
        rows+=("8b-$type: mkmodel failed or no time left")
        continue
    fi
    echo "== $type" >>"$OUT/decode.log"
    while IFS= read -r line; do
        rows+=("$line")
    done < <(timeout "$(cap 150 20)" "$B/bench_cuda" "$f" 4096,32768,131072 64 bf16 2970 \
        2>>"$OUT/decode.log" | tee -a "$OUT/decode.log" | tail -n +2)
    rm -f "$f"
done
rm -rf "$MD"
{
    echo
    echo "== loupe decode on $(head -3 "$OUT/env.txt" | tail -1), $((BUDGET - $(left))) s =="
    echo "tests : $ctest_line"
    echo "$(sed -n 1p <(grep -m1 '^model' "$OUT/decode.log" || echo 'bench_cuda columns'))"
    printf '%s\n' "${rows[@]}"
    echo "-- kernels (GB/s) --"
    tail -40 "$OUT/kernels.log"
} | tee "$OUT/summary.txt"
