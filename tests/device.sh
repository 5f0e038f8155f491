#!/usr/bin/env bash
# One device call, several of the GPU machine's scripts, one table at the end. From the
# repository root, with build-devfull/app/loupe (or build-devfull/xz/loupe.xz) and .devlibs
# (or .devlibs.tar.xz) carried (tests/cuda/devlibs.sh):
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
#   retr128kall  tests/bench/run_device_retrieval.sh 8b128k: every mode at 128K (issue 7)
#   retr512k   tests/bench/run_device_retrieval.sh 8b512k: retrieval at 512K (issue 7)
#   retr512kall  tests/bench/run_device_retrieval.sh 8b512kall: retrieval, flat and hostfull at
#              512K, timing-only local prefills (issue 7; R512_IVF=1 adds ivf)
#   retr1m     tests/bench/run_device_retrieval.sh 8b1m: retrieval at 1M, int8 host K/V, the
#              timing-only local prefill (issue 7)
#   coexec     test_cuda_coexec on its two ctest models, f32 and bf16 engines (carry
#              build-devfull/tests/cuda/test_cuda_coexec too): the co-executed retrieval path
#              against full attention, without the whole CUDA build of the decode stage
#   prune      test_cuda_prune's five cases, test_cuda_knn's wide/shapes/edges (when carried),
#              then bench_anns_build's 64 indexes of 131,072 keys (degree 16, 16,384 build
#              queries) with the pruning on the GPU and on the CPU, and with build k 1024 over
#              4,096 queries on the GPU (carry build-devfull/tests/cuda/test_cuda_prune,
#              bench_anns_build and test_cuda_knn too; PRUNE_BENCH=0: the tests alone)
#   largek     large build k on the GPU (issues 6, 7): test_cuda_prune long and lists (the
#              cut lists), test_cuda_knn wide, bench_anns_build's 32 indexes with top-64 lists
#              over 16,384 queries and top-1024 over 4,096 cut to 128 (the GPU calls' time
#              split), each under LARGEK_BASE (default build-devfull/head_bench.xz, an xz of
#              another bench_anns_build; skipped when missing) and this tree's, and top-1024
#              uncut under this tree's, then retr128k with the default build (top-1024 over
#              4,096 queries, cut to 128) and with top-64 over 16,384 ($RVARIANTS), each
#              decoded under $SEARCH (default 100/0/1 and 200/0/1) (carry what prune carries)
#   builds     bench_anns_build's top-64 and cut top-1024 builds under BUILDS_BASE (default
#              build-devfull/prev_bench.xz, an xz of another bench_anns_build) and this tree's,
#              alternated (carry build-devfull/tests/cuda/bench_anns_build and the base)
#   sparsity   tests/models/run_on_device.sh sparsity: the bundled model's attention table (issue 5)
#   storage    one graph search's cost per key row by key storage (STORAGES, default f32 bf16
#              int8 int8c) on STORAGE_KEYS (default 1,048,576) synthetic keys, every thread:
#              whether 16 threads' searches are bound by the bytes of the rows they read
#              (issues 6 and 7; a thread alone is probe's)
#   probe      the host's memory facts (huge pages, NUMA, CPU) and one graph search's cost per key
#              row on 131,072 synthetic keys, one thread and every thread (issues 6 and 7)
#   ab         the retr128k stage with another loupe and with this tree's, alternated (this,
#              other, this): on one machine, the binary the only difference. AB_BIN names the
#              other (default build-cmp/base.xz, made by `xz -c OTHER/build-devfull/app/loupe`;
#              an .xz is unpacked). Two binaries and .devlibs exceed the 64 MiB carry: carry
#              .devlibs.tar.xz instead (devlibs.sh writes it; unpacked here when .devlibs is
#              missing).
#   envab      the retr128k stage with the environment setting AB_ENV (default
#              LOUPE_KNN_CALLS=2: two GPU kNN calls of the graph build at once) and without,
#              alternated on this tree's binary
#   buildsplit bench_anns_build's 16 indexes as the runtime builds them at 128K (top-1,024 over
#              6,144 queries, cut to 128), one build at a time (each GPU call's own wall, keys'
#              upload and kernels), then four (carry build-devfull/tests/cuda/bench_anns_build)
#   kprofile   Nsight Compute (ncu --clock-control none) over bench_anns_build's 2 indexes as the
#              runtime builds them at 128K: the pruning kernels' and the wide kNN's launches, with
#              their speed-of-light, occupancy, warp-state, memory and instruction-count sections
#              (carry build-devfull/tests/cuda/bench_anns_build)
#   envs       the retr128k stage once under each entry of ENVS (';'-separated settings, - for
#              none; bench_retrieval.c lists the switches), in order, on this tree's binary
# Environment passes on to the scripts (RETR_ARGS, REFS, SEARCH, RVARIANTS, RLENGTHS, RDEPTHS,
# RCASES, RMODES, RTASKS, RSECS, CASES, ...).
# Only 8 files come back from a call: $OUT gets summary.txt (each stage's table) and logs.tgz
# (every log and CSV of every stage).
set -uo pipefail
OUT=${OUT:-/tmp/loupe-device-out}
W=$(mktemp -d /tmp/loupe-device.XXXXXX)
mkdir -p "$OUT"
trap 'tar -C "$W" -czf "$OUT/logs.tgz" . 2>/dev/null; rm -rf "$W"' EXIT
[ -d .devlibs ] || { [ -f .devlibs.tar.xz ] && tar -xJf .devlibs.tar.xz; }
# Binaries carried as xz (the tracked tree is ~36 MiB of the 64 MiB carry, the bundled model
# most of it): build-devfull/xz/NAME.xz unpacks to build-devfull/app/loupe (NAME loupe) or
# build-devfull/tests/cuda/NAME, over what is there.
for x in build-devfull/xz/*.xz; do
    [ -f "$x" ] || continue
    n=$(basename "$x" .xz)
    d=build-devfull/tests/cuda
    [ "$n" = loupe ] && d=build-devfull/app
    mkdir -p "$d" && xz -dc "$x" >"$d/$n" && chmod +x "$d/$n"
done

# One retr128k run of an alternation: retr_run O RUN SECONDS LABEL [NAME=VALUE...], the
# assignments in its environment, its table into $O/summary.txt under "-- RUN: LABEL".
retr_run() {
    local o=$1 run=$2 secs=$3 label=$4
    shift 4
    mkdir -p "$o/$run"
    env "$@" OUT="$o/$run" BUDGET="$secs" \
        bash tests/bench/run_device_retrieval.sh 8b128k_retr >"$o/$run/stdout.txt" 2>&1
    { echo "-- $run: $label"; grep -A12 '^model,' "$o/$run/summary.txt"; } >>"$o/summary.txt"
}

# The ab stage: retr128k under two binaries, alternated, each run's table in the summary.
ab() {
    local o=$1 secs=$2 other=${AB_BIN:-build-cmp/base.xz}
    if [[ $other == *.xz ]]; then # unpacked outside $o: the logs that come back stay small
        xz -dc "$other" >/tmp/loupe-ab-other && chmod +x /tmp/loupe-ab-other || return 1
        other=/tmp/loupe-ab-other
    fi
    local this=$PWD/build-devfull/app/loupe
    other=$(realpath "$other")
    retr_run "$o" this1 $((secs / 3)) "$this" LOUPE_BIN="$this"
    retr_run "$o" other $((secs / 3)) "$other" LOUPE_BIN="$other"
    retr_run "$o" this2 $((secs / 3)) "$this" LOUPE_BIN="$this"
}

# The envab stage: retr128k with and without the environment setting AB_ENV (default
# LOUPE_KNN_CALLS=2), alternated (with, without, with) on one binary.
envab() {
    local set=${AB_ENV:-LOUPE_KNN_CALLS=2}
    ENVS="$set;-;$set" envs "$1" "$2"
}

# The envs stage: the retr128k stage once under each entry of ENVS, in order (';'-separated;
# an entry is space-separated NAME=VALUE assignments, or - for none), e.g.
# ENVS="-;LOUPE_KNN_CALLS=2;LOUPE_PRUNE_CALLS=8;-": the same binary, one machine.
envs() {
    local o=$1 secs=$2 i=0 e
    local list assigns
    IFS=';' read -r -a list <<<"${ENVS:--}"
    for e in "${list[@]}"; do
        i=$((i + 1))
        if [ "$e" = - ]; then
            retr_run "$o" "run$i" $((secs / ${#list[@]})) "defaults"
        else
            read -r -a assigns <<<"$e"
            retr_run "$o" "run$i" $((secs / ${#list[@]})) "$e" "${assigns[@]}"
        fi
    done
}

# The probe stage: what decides a graph search's cost on this host.
probe() {
    # PROBE_BIN: another build, to try the stage on this machine
    local o=$1 secs=$2 bin=${PROBE_BIN:-build-devfull/app/loupe}
    export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    {
        grep -m1 'model name' /proc/cpuinfo
        echo "cpus $(nproc); THP $(cat /sys/kernel/mm/transparent_hugepage/enabled)" \
            "defrag $(cat /sys/kernel/mm/transparent_hugepage/defrag)"
        grep -E 'MemTotal|AnonHugePages|Hugepagesize' /proc/meminfo
        ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l | sed 's/^/numa nodes /'
    } >"$o/summary.txt"
    for t in 1 16; do
        timeout $((secs / 2)) "$bin" bench anns --synthetic 131072,128 --index graph,keygraph \
            --threads $t --degree 16 --sample 16384 --ef 100,200 --n-test 2000 \
            >"$o/anns_t$t.txt" 2>&1
        echo "-- threads $t (rc $?)" >>"$o/summary.txt"
        grep -E '^(index|graph|keygraph) ' "$o/anns_t$t.txt" >>"$o/summary.txt"
    done
}

# The storage stage: searches/s and rows per search by key storage on every thread, one
# synthetic key set (written once, so every storage searches the same keys and queries).
storage() {
    local o=$1 secs=$2 n=${STORAGE_KEYS:-1048576} bin=build-devfull/app/loupe
    export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    local t0=$SECONDS d=/dev/shm/loupe-storage st left
    mkdir -p $d
    "$bin" bench anns --synthetic "$n,128" --write-synthetic $d/syn --index flat --n-test 8000 \
        --threads "$(nproc)" --k 1 >"$o/write.txt" 2>&1
    ls -la $d >>"$o/write.txt"
    : >"$o/summary.txt"
    for st in ${STORAGES:-f32 bf16 int8 int8c}; do
        left=$((secs - SECONDS + t0))
        [ $left -gt 10 ] || break
        timeout $left "$bin" bench anns --keys $d/syn.keys.fbin \
            --build-queries $d/syn.build.fbin --queries $d/syn.test.fbin --index graph \
            --degree 16 --sample 8192 --ef 100 --threads "$(nproc)" --n-test 8000 \
            --storage $st >"$o/anns_$st.txt" 2>&1
        echo "-- $st, threads $(nproc) (rc $?)" >>"$o/summary.txt"
        grep -E '^(index|graph) ' "$o/anns_$st.txt" >>"$o/summary.txt"
    done
    rm -rf $d
}

# The coexec stage: the ctest models made with this loupe, then test_cuda_coexec's four cases.
coexec() {
    local o=$1 m=$1/models t=build-devfull/tests/cuda/test_cuda_coexec
    local base=(--layers 3 --embd 256 --heads 4 --kv-heads 2 --ff 512 --vocab 512 --ctx 256
                --seed 7)
    export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    mkdir -p "$m"
    build-devfull/app/loupe mkmodel --out "$m/f32.gguf" "${base[@]}" --type f32 &&
        build-devfull/app/loupe mkmodel --out "$m/hd128.gguf" "${base[@]}" --type q8_0 \
            --embd 512 --heads 4 --kv-heads 1 || return 1
    for model in f32 hd128; do
        for prec in f32 bf16; do
            LOUPE_TEST_TMP=$o OMP_WAIT_POLICY=passive "$t" "$m/$model.gguf" $prec \
                >"$o/${model}_$prec.txt" 2>&1
            echo "coexec $model $prec: rc $?" >>"$o/summary.txt"
            tail -n 4 "$o/${model}_$prec.txt" >>"$o/summary.txt"
        done
    done
    rm -rf "$m"
}

# One case of test_cuda_prune (in $d) with a time limit, its rc, failures and how far its lists
# differ from the CPU's into $o/summary.txt.
prune_case() {
    local o=$1 d=$2 c=$3 secs=$4
    LOUPE_TEST_TMP=$o timeout "$secs" "$d/test_cuda_prune" "$c" >"$o/test_$c.txt" 2>&1
    echo "test_cuda_prune $c: rc $?" >>"$o/summary.txt"
    grep -E 'CHECK|graph,|malformed|error' "$o/test_$c.txt" | head -n 8 >>"$o/summary.txt"
    awk '/differ/ {n++; if ($(NF-4) + 0 > m) m = $(NF-4) + 0} END {if (n) printf \
        "  %d batches compared, at most %.2f%% of a batch'"'"'s lists differ\n", n, m}' \
        "$o/test_$c.txt" >>"$o/summary.txt"
}

# The prune stage: the GPU pruning's tests, then the build A/B.
prune() {
    local o=$1 secs=$2 d=build-devfull/tests/cuda
    export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    for c in lists long graph threads shapes; do
        prune_case "$o" "$d" $c 150
    done
    if [ -x "$d/test_cuda_knn" ]; then # the wide kNN path (large build k)
        for c in wide shapes edges; do
            LOUPE_TEST_TMP=$o timeout 120 "$d/test_cuda_knn" $c >"$o/knn_$c.txt" 2>&1
            echo "test_cuda_knn $c: rc $?" >>"$o/summary.txt"
            grep -E 'CHECK|wide|rt_cuda_knn_run' "$o/knn_$c.txt" | head -n 6 >>"$o/summary.txt"
        done
    fi
    [ "${PRUNE_BENCH:-1}" = 0 ] && return 0 # the tests alone (the builds stage times them)
    for p in gpu cpu gpu-k1024; do
        local extra=(--build-queries 16384)
        [ $p = cpu ] && extra+=(--cpu-prune)
        [ $p = gpu-k1024 ] && extra=(--build-queries 4096 --k 1024)
        timeout $((secs / 4)) "$d/bench_anns_build" --indexes 64 \
            --degree 16 --no-knn-compare --time-limit $((secs / 6)) "${extra[@]}" \
            >"$o/build_$p.txt" 2>&1
        echo "-- build, pruning on the $p (rc $?)" >>"$o/summary.txt"
        sed -n '/== Index builds/,$p' "$o/build_$p.txt" | head -n 6 >>"$o/summary.txt"
    done
}

# bench_anns_build's 32 indexes of 131,072 keys: the command line of one (run_build O BIN WHO
# QUERIES K CUT), and build_ab O DIR BASE: top-64 over 16,384 queries and top-1024 over 4,096 cut
# to 128, under BASE (an xz of another bench_anns_build, when present) and DIR's, alternated on
# this machine. Each run's table and GPU split into $o/summary.txt.
run_build() {
    local o=$1 bin=$2 who=$3 nq=$4 k=$5 cut=$6
    timeout 100 "$bin" --indexes 32 --degree 16 --build-queries "$nq" --k "$k" \
        --no-knn-compare --ef 128 --prune-nearest "$cut" >"$o/build_${who}_k${k}_cut$cut.txt" 2>&1
    echo "-- bench_anns_build ($who), top-$k over $nq queries, cut $cut (rc $?)" >>"$o/summary.txt"
    sed -n '/== Index builds/,$p' "$o/build_${who}_k${k}_cut$cut.txt" | head -n 6 >>"$o/summary.txt"
}
build_ab() {
    local o=$1 d=$2 base=$3 r who nq k cut bin
    local runs=("this 16384 64 0" "this 4096 1024 128")
    if [ -f "$base" ] && xz -dc "$base" >/tmp/loupe-bench-base && chmod +x /tmp/loupe-bench-base
    then
        runs=("base 16384 64 0" "this 16384 64 0" "base 4096 1024 128" "this 4096 1024 128")
    fi
    for r in "${runs[@]}"; do
        read -r who nq k cut <<<"$r"
        bin=$d/bench_anns_build
        [ "$who" = base ] && bin=/tmp/loupe-bench-base
        run_build "$o" "$bin" "$who" "$nq" "$k" "$cut"
    done
}

# The buildsplit stage: the default 128K build's GPU calls (top-1,024 over 6,144 queries, cut to
# 128, degree 16: the runtime's per index) with one build at a time, where no call shares the GPU
# and each call's wall, keys' upload and kernels are its own, then with four at once.
buildsplit() {
    local o=$1 secs=$2 c
    for c in 1 4; do
        timeout $((secs / 2)) build-devfull/tests/cuda/bench_anns_build --indexes 16 \
            --concurrent "$c" --datasets 2 --degree 16 --build-queries 6144 --k 1024 \
            --prune-nearest 128 --no-knn-compare --ef 128 --recall-indexes 1 --test 100 \
            >"$o/split_c$c.txt" 2>&1
        echo "-- bench_anns_build, $c build(s) at once (rc $?)" >>"$o/summary.txt"
        sed -n '/== Index builds/,$p' "$o/split_c$c.txt" | head -n 5 >>"$o/summary.txt"
    done
}

# The kprofile stage: each build kernel's own counters (ncu), its launches in one build.
kprofile() {
    local o=$1 secs=$2 re ncu
    local keep='^  [a-z_]+[<(]|Duration|Occupancy|Registers Per|Dynamic Shared|Block Limit'
    keep+='|Throughput|L2 Hit|Warp Cycles Per Issued|Executed Instructions  '
    ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
    local -a args=(--indexes 2 --concurrent 1 --datasets 1 --degree 16 --build-queries 6144
        --k 1024 --prune-nearest 128 --no-knn-compare --ef 128 --recall-indexes 1 --test 10)
    local knn='scores|best_of_chunk|select_sampled|select_topk|widen'
    for re in 'prune_long|prune_shared|prune_explicit' "$knn"; do
        timeout $((secs / 2)) "$ncu" --clock-control none --kernel-name "regex:$re" \
            --launch-count 6 \
            --section SpeedOfLight --section Occupancy --section LaunchStats \
            --section WarpStateStats --section MemoryWorkloadAnalysis --section InstructionStats \
            build-devfull/tests/cuda/bench_anns_build "${args[@]}" >"$o/ncu_${re%%|*}.txt" 2>&1
        echo "-- ncu $re (rc $?)" >>"$o/summary.txt"
        grep -E "$keep" "$o/ncu_${re%%|*}.txt" | head -n 60 >>"$o/summary.txt"
    done
}

# The largek stage: the large-k GPU build's correctness and cost, then what it buys the decode.
largek() {
    local o=$1 secs=$2 d=build-devfull/tests/cuda
    export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    for c in long lists; do # the long-list kernel and the cut lists (ann_prune_job.nearest)
        prune_case "$o" "$d" $c 100
    done
    if [ -x "$d/test_cuda_knn" ]; then # the wide kNN's selection
        LOUPE_TEST_TMP=$o timeout 60 "$d/test_cuda_knn" wide >"$o/knn_wide.txt" 2>&1
        echo "test_cuda_knn wide: rc $?" >>"$o/summary.txt"
    fi
    build_ab "$o" build-devfull/tests/cuda "${LARGEK_BASE:-build-devfull/head_bench.xz}"
    run_build "$o" build-devfull/tests/cuda/bench_anns_build this 4096 1024 0
    mkdir -p "$o/retr"
    OUT=$o/retr BUDGET=$((secs - $(date +%s) + T_STAGE)) SEARCH=${SEARCH:-100/0/1,200/0/1} \
        RVARIANTS="${RVARIANTS:-;--build-k 64 --build-queries 16384}" \
        bash tests/bench/run_device_retrieval.sh 8b128k_retr >"$o/retr/stdout.txt" 2>&1
    grep -A6 '^model,' "$o/retr/summary.txt" >>"$o/summary.txt"
}

# Transparent huge pages in use, sampled every 5 s while the stages run: the largest value is
# printed last (host K/V and graphs are advised huge pages; whether the kernel gave them is here).
(while sleep 5; do awk '/AnonHugePages/ {print $2}' /proc/meminfo; done >"$W/thp_kb.txt") &
THP_PID=$!
for arg in "$@"; do
    stage=${arg%%:*} secs=${arg#*:}
    [ "$secs" = "$arg" ] && secs=300
    o=$W/$stage
    mkdir -p "$o"
    t=$(date +%s) T_STAGE=$(date +%s)
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
    retr128kall) OUT=$o BUDGET=$secs bash tests/bench/run_device_retrieval.sh 8b128k \
        >"$o/stdout.txt" 2>&1 ;;
    retr512k) OUT=$o BUDGET=$secs bash tests/bench/run_device_retrieval.sh 8b512k \
        >"$o/stdout.txt" 2>&1 ;;
    retr512kall) OUT=$o BUDGET=$secs bash tests/bench/run_device_retrieval.sh 8b512kall \
        >"$o/stdout.txt" 2>&1 ;;
    retr1m) OUT=$o BUDGET=$secs bash tests/bench/run_device_retrieval.sh 8b1m \
        >"$o/stdout.txt" 2>&1 ;;
    coexec) coexec "$o" >"$o/stdout.txt" 2>&1 ;;
    sparsity) OUT=$o bash tests/models/run_on_device.sh sparsity >"$o/stdout.txt" 2>&1 ;;
    probe) probe "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    storage) storage "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    prune) prune "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    largek) largek "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    builds) LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} build_ab "$o" \
        build-devfull/tests/cuda "${BUILDS_BASE:-build-devfull/prev_bench.xz}" \
        >"$o/stdout.txt" 2>&1 ;;
    ab) ab "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    envab) envab "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    envs) envs "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    kprofile) LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        kprofile "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    buildsplit) LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        buildsplit "$o" "$secs" >"$o/stdout.txt" 2>&1 ;;
    *) echo "unknown stage $stage (decode, niah, hybrid, retr128k, retr32k, retr128kall," \
            "retr512k, retr512kall, retr1m, coexec, prune, largek, builds, sparsity, probe, ab," \
            "envab, envs, buildsplit, kprofile)" >&2
       exit 2 ;;
    esac
    echo "==== $stage: rc $?, $(($(date +%s) - t)) s of $secs" >>"$OUT/summary.txt"
    if [ -f "$o/summary.txt" ]; then
        tail -n 60 "$o/summary.txt" >>"$OUT/summary.txt"
    else
        tail -n 30 "$o/stdout.txt" >>"$OUT/summary.txt"
    fi
done
kill "$THP_PID" 2>/dev/null
echo "peak AnonHugePages: $(sort -n "$W/thp_kb.txt" | tail -1) kB" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
