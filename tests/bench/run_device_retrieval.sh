#!/usr/bin/env bash
# Issue 7 on the GPU machine: retrieval attention co-executed (static set on the GPU, host set
# searched and attended on the CPU, merged per layer), with the full `loupe` that
# tests/cuda/devlibs.sh built here (carry build-devfull/app/loupe and .devlibs).
#
#   tests/bench/run_device_retrieval.sh STAGE...
#
# Stages (each has a deadline so the whole run fits one 10-minute call; BUDGET seconds, 570):
#   niah     the bundled model, `bench niah --backend cuda`: full attention, retrieval (default
#            budget) and the static set alone (--topk 0) on the same cases,
#            needles in the host set (depths 0.25-0.75), at $RLENGTHS (4096 16384), $RCASES
#            cases per task (20);
#   8b32k    the Llama-3-8B shape, BF16 (`mkmodel --preset llama3-8b`, random weights),
#            `bench retrieval --backend cuda --gpu-mem 24G` at 32K: full attention with the whole
#            card, retrieval, flat, ivf, full attention over host KV on the CPU (hostfull) and
#            the static set alone;
#   8b128k   the same at 128K, every mode but the static set alone (ivf's k-means build takes
#            ~90 s of it);
#   8b512k   retrieval alone at 512K (a model file of its own, made for that context; the prefill
#            takes most of a call, and every other mode would need one of its own), under
#            --gpu-mem 32G: the retrieval layout's prefill keeps the whole residual stream
#            (f32, 16 KiB a token) and one layer's K/V on the GPU, 10 GiB beside the weights;
#   8b512kall  issue 7's 512K row, TIMING ONLY (--local-prefill, as 8b1m; one prefill per mode
#            then fits a call): retrieval and flat over 16 tokens, hostfull over 4 (each of its
#            tokens attends to 512K keys on the CPU, ~4× the 128K one's 4.4 s), ivf as well
#            when R512_IVF=1 (its CPU k-means took 81 s at 128K). Full attention on the GPU
#            does not fit an 80 GB card at 512K (64 GiB of K/V beside 15 GiB of weights);
#   8b1m     retrieval alone at 1M with int8 host K/V, TIMING ONLY: --local-prefill (each chunk
#            attends to itself alone, so the prefill is linear; K/V and queries are the
#            model's), --gpu-mem 48G for the same reason (20 GiB of prefill buffers); with
#            $SEARCH set, decoded under each of its settings after the one prefill (e.g.
#            0/0/1,0/0/1: the second row without the first step after the prefill, which
#            expands its whole beam);
#   8b128k_retr  retrieval alone at 128K with the graph's beam (--ef) at each of $REFS (200 100);
#            with $SEARCH set instead, one prefill per entry of $RVARIANTS (';'-separated extra
#            options, default one empty entry), each decoded under every setting of
#            `--search $SEARCH` (EF/EXPAND/GROUP,...).
# Retrieval settings of the 8B stages: $RETR_ARGS (default: 16 threads; the runner's defaults:
# one degree-16 index per KV head from 16384 of its query heads' prefill queries).
# Only 8 files come back from $OUT: summary.txt (every table), logs.tgz (every log), env.txt.
set -uo pipefail
OUT=${OUT:-/tmp/loupe-retr-out}
W=$(mktemp -d /tmp/loupe-retr.XXXXXX)
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# OpenMP's default wait policy on purpose: the co-executed decode enters a parallel region per
# layer, a fraction of a millisecond apart, and sleeping threads would wake up late every time.
export LOUPE_MKMODEL_NO_FSYNC=1
L=${LOUPE_BIN:-$PWD/build-devfull/app/loupe}
BUDGET=${BUDGET:-570} RCASES=${RCASES:-20}
read -r -a RETR <<<"${RETR_ARGS:---threads 16}"
T0=$(date +%s)
left() { echo $((BUDGET - $(date +%s) + T0)); }
MD=/dev/shm
[ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')" -gt 20000000 ] 2>/dev/null || MD=$W
trap 'rm -f "$MD"/loupe-8b.gguf "$W"/loupe-8b-512k.gguf "$W"/loupe-8b-1m.gguf; tar -C "$W" -czf "$OUT/logs.tgz" . 2>/dev/null; rm -rf "$W"' EXIT
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nproc
    free -g | head -2
    "$L" --version
    ldd "$L" | grep -i 'not found'
} >"$OUT/env.txt" 2>&1

# run NAME SECONDS CMD...: one command with a time limit, stdout to $W/NAME.out.
run() {
    local name=$1 secs=$2
    shift 2
    local l
    l=$(left)
    [ "$secs" -gt "$l" ] && secs=$l
    if [ "$secs" -lt 15 ]; then
        echo "$name: skipped (no time left)" | tee -a "$OUT/summary.txt"
        return
    fi
    local t=$(date +%s)
    timeout -k 5 "$secs" "$@" >"$W/$name.out" 2>"$W/$name.log"
    local rc=$?
    echo "$name: rc $rc, $(($(date +%s) - t)) s" | tee -a "$OUT/summary.txt"
    tail -n 3 "$W/$name.log" | sed "s/^/  $name: /" >>"$OUT/summary.txt"
}

model_8b() {
    [ -f "$MD/loupe-8b.gguf" ] && return 0
    run mkmodel_8b 150 "$L" mkmodel --preset llama3-8b --ctx 135168 --type bf16 \
        --out "$MD/loupe-8b.gguf"
    [ -f "$MD/loupe-8b.gguf" ]
}

for stage in "$@"; do
    case $stage in
    niah)
        for len in ${RLENGTHS:-4096 16384}; do
            for a in "full" "retrieval" "retrieval --topk 0"; do
                tag=$(echo "$a" | tr -d ' -')
                run "niah_${tag}_$len" "${RSECS:-70}" "$L" bench niah \
                    --model "$PWD/tests/models/loupe-tiny.gguf" --csv --backend cuda \
                    --threads 16 --attention $a --task passkey,kv --lengths "$len" \
                    --depths 0.25,0.5,0.75 --cases "$RCASES" --seed 303
            done
        done ;;
    8b32k)
        model_8b &&
            run retr_8b_32k 300 "$L" bench retrieval --model "$MD/loupe-8b.gguf" --backend cuda \
                --gpu-mem 24G --ctx 32768 --gen 32 --csv \
                --modes full,retrieval,flat,ivf,hostfull,static "${RETR[@]}" ;;
    8b128k)
        model_8b &&
            run retr_8b_128k 500 "$L" bench retrieval --model "$MD/loupe-8b.gguf" --backend cuda \
                --gpu-mem 24G --ctx 131072 --gen 16 --csv \
                --modes full,retrieval,flat,ivf,hostfull "${RETR[@]}" ;;
    8b512k) # the model on disk, not in /dev/shm: RAM holds K/V (64 GiB) and indexes
        rm -f "$MD/loupe-8b.gguf" # the 128K model's 15 GiB of RAM back
        run mkmodel_8b_512k 150 "$L" mkmodel --preset llama3-8b --ctx 528384 --type bf16 \
            --out "$W/loupe-8b-512k.gguf"
        [ -f "$W/loupe-8b-512k.gguf" ] &&
            run retr_8b_512k 560 "$L" bench retrieval --model "$W/loupe-8b-512k.gguf" \
                --backend cuda --gpu-mem 32G --ctx 524288 --gen 16 --csv --modes retrieval \
                "${RETR[@]}"
        rm -f "$W/loupe-8b-512k.gguf" ;;
    8b512kall) # issue 7's 512K row, TIMING ONLY (see the header)
        rm -f "$MD/loupe-8b.gguf"
        run mkmodel_8b_512k 150 "$L" mkmodel --preset llama3-8b --ctx 528384 --type bf16 \
            --out "$W/loupe-8b-512k.gguf"
        # a run per mode: one killed at its time limit loses its own row alone
        for m in retrieval:16:280 flat:16:120 hostfull:4:150 ${R512_IVF:+ivf:16:450}; do
            IFS=: read -r r_mode r_gen r_secs <<<"$m"
            [ -f "$W/loupe-8b-512k.gguf" ] &&
                run "retr_8b_512k_$r_mode" "$r_secs" "$L" bench retrieval \
                    --model "$W/loupe-8b-512k.gguf" --backend cuda --gpu-mem 32G --ctx 524288 \
                    --gen "$r_gen" --csv --local-prefill --modes "$r_mode" "${RETR[@]}"
        done
        rm -f "$W/loupe-8b-512k.gguf" ;;
    8b1m) # the model on disk, not in /dev/shm: its 15 GiB of RAM are needed (K/V 66, indexes 18)
        rm -f "$MD/loupe-8b.gguf"
        run mkmodel_8b_1m 150 "$L" mkmodel --preset llama3-8b --ctx 1052672 --type bf16 \
            --out "$W/loupe-8b-1m.gguf"
        [ -f "$W/loupe-8b-1m.gguf" ] &&
            run retr_8b_1m 570 "$L" bench retrieval --model "$W/loupe-8b-1m.gguf" \
                --backend cuda --gpu-mem 48G --ctx 1048576 --gen 16 --csv --modes retrieval \
                --host-kv int8 --local-prefill ${SEARCH:+--search "$SEARCH"} "${RETR[@]}"
        rm -f "$W/loupe-8b-1m.gguf" ;;
    8b128k_retr) # retrieval alone at 128K, the graph's beam at each of $REFS (default: its
                 # 200, then the default beam: topk, 100), or the --search settings of $SEARCH
        if [ -n "${SEARCH:-}" ]; then
            IFS=';' read -r -a variants <<<"${RVARIANTS:-}"
            [ ${#variants[@]} = 0 ] && variants=("")
            for i in "${!variants[@]}"; do
                read -r -a extra <<<"${variants[$i]}"
                model_8b &&
                    run "retr_8b_128k_search$i" 280 "$L" bench retrieval \
                        --model "$MD/loupe-8b.gguf" --backend cuda --gpu-mem 24G --ctx 131072 \
                        --gen 16 --csv --modes retrieval --search "$SEARCH" "${RETR[@]}" \
                        "${extra[@]}"
            done
            continue
        fi
        for ef in ${REFS:-200 100}; do
            model_8b &&
                run "retr_8b_128k_ef$ef" 240 "$L" bench retrieval --model "$MD/loupe-8b.gguf" \
                    --backend cuda --gpu-mem 24G --ctx 131072 --gen 16 --csv --modes retrieval \
                    --ef "$ef" "${RETR[@]}"
        done ;;
    *)
        echo "unknown stage $stage (niah, 8b32k, 8b128k, 8b128k_retr, 8b512k, 8b512kall, 8b1m)" >&2
        exit 2 ;;
    esac
done
{
    echo "---- tables ----"
    for f in "$W"/*.out; do
        [ -s "$f" ] || continue
        echo "== $(basename "$f" .out)"
        cat "$f"
    done
} >>"$OUT/summary.txt"
tail -n 80 "$OUT/summary.txt"
