#!/usr/bin/env bash
# One device call, several of the GPU machine's scripts, one table at the end. From the
# repository root, with build-devfull/app/loupe and .devlibs carried (tests/cuda/devlibs.sh):
#
#   tests/device.sh STAGE[:SECONDS]...
#
# Stages (each runs with OUT set to its own folder and BUDGET to its seconds):
#   decode     tests/cuda/run_device_decode.sh: stand-alone CUDA build, ctest -R cuda, kernel
#              GB/s, the 8B shape's decode at 4K/32K/128K in BF16 and Q8_0 (issue 4)
#   niah       tests/niah/run_device_niah.sh with STAGES=cuda_full: the bundled model's 100-case
#              passkey and key→value cells at 4K-32K on the CUDA backend (issue 5)
#   hybrid     tests/niah/run_device_niah.sh with STAGES=hybrid: retrieval co-executed against
#              full attention and the static set alone (issue 7)
#   retr128k   tests/bench/run_device_retrieval.sh 8b128k_retr (issue 7; RETR_ARGS passes on)
#   retr32k    tests/bench/run_device_retrieval.sh 8b32k (issue 7)
#   sparsity   tests/models/run_on_device.sh sparsity: the bundled model's attention table (issue 5)
# Environment passes on to the scripts (RETR_ARGS, REFS, RLENGTHS, RDEPTHS, RCASES, RMODES,
# RTASKS, RSECS, CASES, ...).
# Only 8 files come back from a call: $OUT gets summary.txt (each stage's table) and logs.tgz
# (every log and CSV of every stage).
set -uo pipefail
OUT=${OUT:-/tmp/loupe-device-out}
W=$(mktemp -d /tmp/loupe-device.XXXXXX)
mkdir -p "$OUT"
trap 'tar -C "$W" -czf "$OUT/logs.tgz" . 2>/dev/null; rm -rf "$W"' EXIT
for arg in "$@"; do
    stage=${arg%%:*} secs=${arg#*:}
    [ "$secs" = "$arg" ] && secs=300
    o=$W/$stage
    mkdir -p "$o"
    t=$(date +%s)
    case $stage in
    decode) OUT=$o BUDGET=$secs bash tests/cuda/run_device_decode.sh >"$o/stdout.txt" 2>&1 ;;
    niah) OUT=$o BUDGET=$secs STAGES=cuda_full bash tests/niah/run_device_niah.sh \
        >"$o/stdout.txt" 2>&1 ;;
    hybrid) OUT=$o BUDGET=$secs STAGES=hybrid bash tests/niah/run_device_niah.sh \
        >"$o/stdout.txt" 2>&1 ;;
    retr128k) OUT=$o BUDGET=$secs bash tests/bench/run_device_retrieval.sh 8b128k_retr \
        >"$o/stdout.txt" 2>&1 ;;
    retr32k) OUT=$o BUDGET=$secs bash tests/bench/run_device_retrieval.sh 8b32k \
        >"$o/stdout.txt" 2>&1 ;;
    sparsity) OUT=$o bash tests/models/run_on_device.sh sparsity >"$o/stdout.txt" 2>&1 ;;
    *) echo "unknown stage $stage (decode, niah, hybrid, retr128k, retr32k, sparsity)" >&2
       exit 2 ;;
    esac
    echo "==== $stage: rc $?, $(($(date +%s) - t)) s of $secs" >>"$OUT/summary.txt"
    if [ -f "$o/summary.txt" ]; then
        tail -n 60 "$o/summary.txt" >>"$OUT/summary.txt"
    else
        tail -n 30 "$o/stdout.txt" >>"$OUT/summary.txt"
    fi
done
cat "$OUT/summary.txt"
