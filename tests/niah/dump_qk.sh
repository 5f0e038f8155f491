#!/usr/bin/env bash
# `loupe dump-qk` on a random GQA model: a synthetic haystack at layers 0 and 1 (with --decode and
# sampled query positions) and a plain text file (all positions); each output checked by
# niah_qk_check against the runtime and, for layer 0, against the weights. Then the files feed
# `loupe bench anns` as the documented recipe says, and bad options fail with usage errors.
# usage: dump_qk.sh LOUPE QK_CHECK WORKDIR
set -u
loupe=$1 check=$2 dir=$3
mkdir -p "$dir"
fail=0
model=$dir/qk.gguf
"$loupe" mkmodel --out "$model" --layers 2 --embd 128 --heads 4 --kv-heads 2 --ff 256 \
    --vocab 400 --ctx 2048 --seed 17 >/dev/null || { echo "FAIL: mkmodel"; exit 1; }

run() { # run DESC ARGS...: loupe must succeed
    local desc=$1; shift
    if ! "$loupe" "$@" 2>"$dir/err.txt"; then echo "FAIL: $desc: $(cat "$dir/err.txt")"; fail=1; fi
}

out=$dir/syn
rm -rf "$out"
run "dump-qk synthetic L0" dump-qk --model "$model" --synthetic-haystack --ctx 700 --layer 0 \
    --decode 40 --query-positions sample:100 --out-dir "$out" --threads 2
run "dump-qk synthetic L1" dump-qk --model "$model" --ctx 700 --layer 1 --decode 40 \
    --query-positions last:64 --out-dir "$out" --threads 2
for L in 0 1; do
    for f in L$L.kvh0.keys.fbin L$L.kvh1.keys.fbin L$L.qh3.queries.fbin L$L.qh3.decode.fbin \
             L$L.queries.pos.ibin L$L.tokens.ibin L$L.manifest.txt; do
        [ -s "$out/$f" ] || { echo "FAIL: $out/$f missing"; fail=1; }
    done
    "$check" "$model" "$out" $L 40 || { echo "FAIL: niah_qk_check layer $L"; fail=1; }
done
grep -q "query head h reads KV head h / 2" "$out/L0.manifest.txt" ||
    { echo "FAIL: manifest lacks the head mapping"; fail=1; }
grep -q "needle at token" "$out/L0.manifest.txt" || { echo "FAIL: manifest lacks the context"; fail=1; }

# A text source laid out as `loupe ask` does; all positions are queries, no decode split.
txt=$dir/doc.txt
for i in $(seq 1 20); do echo "Line $i of a small document about vectors, keys and queries."; done >"$txt"
out2=$dir/txt
rm -rf "$out2"
run "dump-qk text" dump-qk --model "$model" "$txt" --question "What is line 7?" --layer 1 \
    --out-dir "$out2" --threads 2
"$check" "$model" "$out2" 1 0 || { echo "FAIL: niah_qk_check text"; fail=1; }
grep -q "1 documents laid out" "$out2/L1.manifest.txt" || { echo "FAIL: text manifest"; fail=1; }

# The recipe: keys + prefill queries to build, decode queries to search.
if ! "$loupe" bench anns --keys "$out/L1.kvh0.keys.fbin" --build-queries "$out/L1.qh0.queries.fbin" \
        --queries "$out/L1.qh0.decode.fbin" --k 10 --index flat --threads 1 --csv >"$dir/anns.csv" 2>&1; then
    echo "FAIL: bench anns on dump-qk files: $(cat "$dir/anns.csv")"; fail=1
fi

# --analyze: where a decode step's new top keys come from (40 decode queries in order); the
# shares of its "decode steps" line add up to 100%.
streams=$("$loupe" bench anns --keys "$out/L1.kvh0.keys.fbin" --build-queries \
    "$out/L1.qh0.queries.fbin" --queries "$out/L1.qh0.decode.fbin" --k 10 --index flat \
    --threads 1 --analyze 2>&1 | grep '^#   decode steps:')
total=$(echo "$streams" | grep -o '[0-9.]*%' | tr -d % | awk '{s += $1} END {print s + 0}')
if ! awk -v s="$total" 'BEGIN { exit !(s > 99.5 && s < 100.5) }'; then
    echo "FAIL: bench anns --analyze decode steps: '$streams' (shares sum to $total)"; fail=1
fi

# --margin: a gap no score reaches changes no result (recall, mass, rows: columns 4-6 and 13).
anns_graph() {
    "$loupe" bench anns --keys "$out/L1.kvh0.keys.fbin" --build-queries "$out/L1.qh0.queries.fbin" \
        --queries "$out/L1.qh0.decode.fbin" --k 10 --index graph --ef 16 --threads 1 --csv "$@" \
        2>&1 | tail -n 1 | cut -d, -f4-6,13
}
plain=$(anns_graph) wide=$(anns_graph --margin 1000)
if [ -z "$plain" ] || [ "$plain" != "$wide" ]; then
    echo "FAIL: bench anns --margin 1000 changed the search: '$plain' vs '$wide'"; fail=1
fi

# --expand-frac 1 expands the whole beam, as without it; a narrower share scans fewer rows
# (column 13, rows a query). --next-seeds (the runtime's seeding) runs.
whole=$(anns_graph --expand-frac 1) narrow=$(anns_graph --expand-frac 0.2)
if [ -z "$whole" ] || [ "$plain" != "$whole" ]; then
    echo "FAIL: bench anns --expand-frac 1 changed the search: '$plain' vs '$whole'"; fail=1
fi
fewer='BEGIN { exit !(b + 0 < a + 0) }'
if [ -z "$narrow" ] || ! awk -v a="${plain##*,}" -v b="${narrow##*,}" "$fewer"; then
    echo "FAIL: bench anns --expand-frac 0.2 scanned no fewer rows: '$plain' vs '$narrow'"; fail=1
fi
seeded=$(anns_graph --prev-seeds 5 --next-seeds)
[ -n "$seeded" ] || { echo "FAIL: bench anns --prev-seeds 5 --next-seeds printed no row"; fail=1; }
# --stream-seeds 1 is --next-seeds; more steps back seed more keys, and the search changes.
lag1=$(anns_graph --prev-seeds 5 --stream-seeds 1) lag8=$(anns_graph --prev-seeds 5 --stream-seeds 8)
if [ "$lag1" != "$seeded" ] || [ -z "$lag8" ] || [ "$lag8" = "$seeded" ]; then
    echo "FAIL: bench anns --stream-seeds 1 / 8: '$lag1' / '$lag8', --next-seeds '$seeded'"; fail=1
fi

# Usage errors: a negative margin, a zero expansion share, --next-seeds or --stream-seeds
# without --prev-seeds, zero steps back.
for bad in "--margin -1" "--expand-frac 0" "--next-seeds" "--stream-seeds 2" \
        "--prev-seeds 5 --stream-seeds 0"; do
    # shellcheck disable=SC2086
    "$loupe" bench anns --synthetic 500,16 --index graph $bad >/dev/null 2>&1
    rc=$?
    [ $rc = 2 ] || { echo "FAIL: bench anns $bad: exit $rc, want 2"; fail=1; }
done
# dump-qk's usage errors.
for bad in "--layer 9" "--query-positions some:3" "--decode 5000" "--depth 2"; do
    # shellcheck disable=SC2086
    "$loupe" dump-qk --model "$model" --ctx 300 $bad --out-dir "$dir/bad" >/dev/null 2>&1
    rc=$?
    [ $rc = 1 ] || [ $rc = 2 ] || { echo "FAIL: dump-qk $bad exited $rc"; fail=1; }
done
[ $fail = 0 ] && echo "dump_qk: PASS"
exit $fail
