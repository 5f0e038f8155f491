#!/usr/bin/env bash
# `loupe bench retrieval` on the bundled model, CPU backend, one short context: one row per mode,
# each with a positive ms/token; the key counts each mode implies (full and static attend no host
# key, hostfull every host key without a search, flat scans every host key per search, the graph
# searches and attends); a row that cannot run (a context past the model's) is reported and the
# bench goes on, failing only when every row failed; bad options are usage errors (exit 2).
# Skipped (exit 77) while the model file does not exist.
# usage: bench_retrieval_cli.sh LOUPE MODEL
set -u
loupe=$1 model=$2
if [ ! -f "$model" ]; then
    echo "SKIP: $model does not exist yet (trained by tests/models/); nothing to test"
    exit 77
fi
fail=0
bench() { "$loupe" bench retrieval --model "$model" --backend cpu --threads 2 "$@"; }

csv=$(bench --ctx 1536 --gen 4 --modes full,retrieval,flat,hostfull,static --csv 2>/dev/null) ||
    { echo "FAIL: bench retrieval exited $?"; fail=1; }
echo "$csv"
[ "$(wc -l <<<"$csv")" = 6 ] || { echo "FAIL: want 1 header + 5 rows"; fail=1; }
# Columns by name, so that added columns do not break the checks. 1532 prefill tokens − 128 sinks
# − 512 window = 892 host keys.
awk -F, '
NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
function v(name) { if (!(name in c)) { print "FAIL: no column " name; bad = 1; return 0 } return $c[name] }
function want(cond, what) { if (!cond) { print "FAIL: " v("mode") ": " what ": " $0; bad = 1 } }
{
    m = v("mode"); seen[m]++
    want(v("status") == "ok", "status ok")
    want(v("ctx") == 1536 && v("prefill_tokens") == 1532 && v("gen") == 4, "ctx 1536 = 1532 + 4")
    want(v("ms_tok_mean") > 0 && v("ms_tok_median") > 0, "ms/token > 0")
    want(v("prefill_s") > 0 && v("peak_rss_bytes") > 0 && v("rss_prefill_bytes") > 0, "prefill time and RSS")
    want(v("coexec_tokens") == 0 && v("gpu_bytes") == 0 && v("build_knn_gpu_s") == 0 && v("build_prune_gpu_s") == 0, "no co-execution, GPU memory, GPU kNN or pruning on the CPU")
    if (m == "full" || m == "static")
        want(v("searches") == 0 && v("keys_scanned") == 0 && v("keys_attended") == 0, "no host key scanned or attended")
    if (m == "static")
        want(v("topk") == 0 && v("n_host") == 892 && v("attended_pct") == 0, "static set only")
    if (m == "hostfull")
        want(v("searches") == 0 && v("keys_scanned") == 0 && v("attended_pct") == 100 && v("n_host") == 892, "every host key, no search")
    if (m == "flat")
        want(v("searches") > 0 && v("scanned_pct") == 100 && v("keys_attended") == v("searches") * 100, "exact scan, topk 100 each")
    if (m == "retrieval")
        want(v("searches") > 0 && v("keys_scanned") > 0 && v("keys_attended") > 0 && v("build_s") > 0, "graph searched")
    if (m == "retrieval")
        want(v("cold_searches") == 0, "decode started from the lists the build kept, none cold")
    if (m == "retrieval")
        want(v("build_proj_s") > 0 && v("build_task_s") + 0.002 >= v("build_knn_s") + v("build_proj_s") + v("build_repair_s"), "build split (CSV rounding aside): the tasks hold kNN, projection and repair")
    want(v("search_ms_tok") >= 0 && v("attend_ms_tok") >= 0 && v("imbalance_ms_tok") >= 0, "host time split")
}
END {
    split("full retrieval flat hostfull static", ms, " ")
    for (i in ms) if (seen[ms[i]] != 1) { print "FAIL: " seen[ms[i]] + 0 " rows for " ms[i]; bad = 1 }
    exit bad
}' <<<"$csv" || fail=1

# --expand reaches the search: expanding only the pool's best 8 entries scans fewer keys than
# expanding all of them (the same cases, one binary).
scanned() { bench --ctx 1536 --gen 4 --modes retrieval --csv "$@" 2>/dev/null |
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next } { print $c["keys_scanned"] }'; }
all=$(scanned) narrow=$(scanned --expand 8) near=$(scanned --margin 2)
[ -n "$all" ] && [ -n "$narrow" ] && [ "$narrow" -lt "$all" ] ||
    { echo "FAIL: --expand 8 scanned '$narrow' keys, the full expansion '$all'"; fail=1; }
# --margin too: stopping 2 logits below the best scans fewer keys than no such stop.
[ -n "$near" ] && [ "$near" -lt "$all" ] ||
    { echo "FAIL: --margin 2 scanned '$near' keys, without a margin '$all'"; fail=1; }

# --search: one prefill, a row per setting, each decoded with its own settings (the columns say
# which); a narrower expansion, or a margin, scans fewer keys than the full one in the same run.
csv=$(bench --ctx 1536 --gen 2 --modes retrieval --search 200/0/2,200/8/2,100/0/1,100/0/1/1/2 \
    --csv 2>/dev/null) ||
    { echo "FAIL: bench retrieval --search exited $?"; fail=1; }
awk -F, '
NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
{ n++; set[n] = $c["ef"] "/" $c["expand"] "/" $c["search_group"] "/" $c["margin"]
  sc[n] = $c["keys_scanned"] + 0
  pre[n] = $c["prefill_tokens"]; if ($c["status"] != "ok") bad = 1 }
END {
    if (n != 4 || set[1] != "200/0/2/0" || set[2] != "200/8/2/0" || set[3] != "100/0/1/0" ||
        set[4] != "100/0/1/2") {
        print "FAIL: --search rows: " set[1] " " set[2] " " set[3] " " set[4]; bad = 1 }
    if (pre[1] != 1528 || pre[4] != 1528) { print "FAIL: one prefill of 1536 - 4·2 tokens: " pre[1]; bad = 1 }
    if (!(sc[2] < sc[1])) { print "FAIL: expand 8 scanned " sc[2] ", all " sc[1]; bad = 1 }
    if (!(sc[4] < sc[3])) { print "FAIL: margin 2 scanned " sc[4] ", none " sc[3]; bad = 1 }
    exit bad
}' <<<"$csv" || { echo "$csv"; fail=1; }

# A context past the model's (32768) fails its row and the run goes on; all rows failed: exit 1.
out=$(bench --ctx 64,40000 --gen 2 --modes full --csv 2>&1) || { echo "FAIL: one good row should exit 0: $out"; fail=1; }
grep -q ',40000,full,.*"failed: .*"$' <<<"$out" || { echo "FAIL: no failed row for ctx 40000: $out"; fail=1; }
grep -q ',64,full,.*,ok$' <<<"$out" || { echo "FAIL: no ok row for ctx 64: $out"; fail=1; }
table=$(bench --ctx 40000 --modes static 2>/dev/null)
rc=$?
[ $rc = 1 ] || { echo "FAIL: every row failed: exited $rc, want 1"; fail=1; }
grep -qE "^ +40000 static +failed: " <<<"$table" || { echo "FAIL: table failed row: $table"; fail=1; }

# --local-prefill (timing only) exists on the CUDA backend alone: on the CPU every row fails with
# the sentence that says so, and the rows carry the mark.
out=$(bench --ctx 64 --gen 2 --modes retrieval --local-prefill --csv 2>&1)
rc=$?
[ $rc = 1 ] && grep -q '\[local prefill\],.*"failed: .*CUDA backend only"$' <<<"$out" ||
    { echo "FAIL: --local-prefill on the CPU backend: exit $rc: $out"; fail=1; }

help=$("$loupe" bench retrieval --help) || { echo "FAIL: --help exited $?"; fail=1; }
grep -q -- "--modes" <<<"$help" && grep -q -- "--full-gpu-mem" <<<"$help" &&
    grep -q -- "--local-prefill" <<<"$help" || { echo "FAIL: --help: $help"; fail=1; }
"$loupe" bench --help | grep -q "^  retrieval " || { echo "FAIL: bench --help does not list retrieval"; fail=1; }

expect_rc() { local want=$1; shift; bench "$@" >/dev/null 2>&1; local rc=$?
    [ $rc = "$want" ] || { echo "FAIL: bench retrieval $* exited $rc, want $want"; fail=1; }; }
expect_rc 2 --modes full,nope
expect_rc 2 --modes ""
expect_rc 2 --ctx 1024,x
expect_rc 2 --gen 0
expect_rc 2 --full-gpu-mem lots
expect_rc 2 --frobnicate
expect_rc 2 --expand 0
expect_rc 2 --search 100/0
expect_rc 2 --search 100/0/2,x
expect_rc 2 --search 100/0/1/1/-1
expect_rc 2 --margin -1
expect_rc 2 --interleave 0
expect_rc 2 --interleave 5
expect_rc 2 --search 100/0/1/1/0/5
expect_rc 2 --margin x
[ $fail = 0 ] && echo "bench_retrieval_cli: PASS"
exit $fail
