#!/usr/bin/env bash
# Accuracy tables of the bundled model on the GPU machine (issues 5 and 7), with the full `loupe`
# that tests/cuda/devlibs.sh built here and carried there (build-devfull/app/loupe + .devlibs):
#   1. CUDA backend, full attention: passkey and kv at 4K, 8K, 16K, 32K, $CASES cases per cell;
#   2. CPU backend at 4K, full attention, the same cases (the answers must agree);
#   3. CPU backend, retrieval (default budget) against full and static-only (--topk 0) at 4K and
#      8K, $RCASES cases per cell (16 threads);
#   4. (STAGES=hybrid) the CUDA backend's retrieval hybrid the same way at $RLENGTHS.
# STAGES picks stages (default "cuda_full cpu_full retrieval"), LENGTHS the lengths of stage 1.
# Each stage has a deadline so the whole run fits one 10-minute call; logs and CSVs go to $OUT.
# usage: tests/niah/run_device_niah.sh   (env: CASES=100 RCASES=20 BUDGET=560)
set -uo pipefail
OUT=${OUT:-/tmp/loupe-niah-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
L=${LOUPE_BIN:-$PWD/build-devfull/app/loupe}
CASES=${CASES:-100} RCASES=${RCASES:-20} BUDGET=${BUDGET:-560}
T0=$(date +%s)
left() { echo $((BUDGET - $(date +%s) + T0)); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >"$OUT/env.txt" 2>&1
"$L" --version >>"$OUT/env.txt" 2>&1
ldd "$L" | grep -i 'not found' >>"$OUT/env.txt"
run() { # run NAME SECONDS ARGS... : one bench niah call with a time limit, csv to $OUT/NAME.csv
    local name=$1 secs=$2; shift 2
    local l; l=$(left); [ "$secs" -gt "$l" ] && secs=$l
    if [ "$secs" -lt 10 ]; then echo "$name: skipped (no time left)" | tee -a "$OUT/summary.txt"; return; fi
    local t=$(date +%s)
    timeout "$secs" "$L" bench niah --model "$PWD/tests/models/loupe-tiny.gguf" --csv "$@" >"$OUT/$name.csv" 2>"$OUT/$name.log"
    local rc=$?
    echo "$name: rc $rc, $(( $(date +%s) - t )) s" | tee -a "$OUT/summary.txt"
}
STAGES=${STAGES:-cuda_full cpu_full retrieval}
for stage in $STAGES; do
    case $stage in
    cuda_full) # issue 5: full attention on the GPU, 100 cases per task × length
        for len in ${LENGTHS:-4096 8192 16384 32768}; do
            run cuda_full_$len 150 --backend cuda --task passkey,kv --lengths $len \
                --depths 0,0.25,0.5,0.75,1 --cases $((CASES / 5)) --seed 101 --show-misses
        done ;;
    cpu_full) # issue 5: the CPU backend gives the same answers at 4K
        run cpu_full_4k 90 --backend cpu --threads 16 --task passkey,kv --lengths 4096 \
            --depths 0,0.25,0.5,0.75,1 --cases $((CASES / 5)) --seed 101 --show-misses ;;
    retrieval) # issue 7 on the CPU backend
        for a in "full" "retrieval" "retrieval --topk 0"; do
            tag=$(echo "$a" | tr -d ' -')
            run "cpu_${tag}_4k8k" 70 --backend cpu --threads 16 --attention $a --task kv \
                --lengths 4096,8192 --depths 0.25,0.75 --cases $((RCASES / 2)) --seed 202
        done ;;
    hybrid) # issue 7: GPU prefill, CPU retrieval decode; needles at $RDEPTHS (default
            # 0.25-0.75: in the host set), against full attention and the static set alone on
            # the same cases
        # RMODES: the modes, comma-separated; RTASKS the tasks; RSECS a run's seconds (each
        # retrieval case builds its indexes: 100 cases a task at 16K and 32K ran within 150 s
        # on the H100 machine; 150 a task at 16K did not finish in 60)
        IFS=, read -r -a modes <<<"${RMODES:-full,retrieval,retrieval --topk 0}"
        for len in ${RLENGTHS:-4096 16384}; do
            for a in "${modes[@]}"; do
                tag=$(echo "$a" | tr -d ' -')
                run "hybrid_${tag}_$len" ${RSECS:-150} --backend cuda --threads 16 --attention $a \
                    --task "${RTASKS:-passkey,kv}" --lengths $len \
                    --depths "${RDEPTHS:-0.25,0.5,0.75}" \
                    --cases $RCASES --show-misses \
                    --seed 303
            done
        done ;;
    esac
done
echo "---- tables ----" >>"$OUT/summary.txt"
for f in "$OUT"/*.csv; do echo "== $(basename "$f")"; cat "$f"; done >>"$OUT/summary.txt"
tail -n 60 "$OUT/summary.txt"
