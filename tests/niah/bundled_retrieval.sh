#!/usr/bin/env bash
# Retrieval attention on the bundled model, CPU backend: key→value lookups at a 2K-token context
# with a small static set (16 sinks, 64-token window), so the needle sits in the host set and only
# the index can bring it back. Retrieval must answer every case full attention answers — also with
# the host set's K/V stored as int8 (--host-kv int8) — and the static set alone (--topk 0) must
# answer fewer — otherwise the check proves nothing.
# usage: bundled_retrieval.sh LOUPE MODEL
set -u
loupe=$1 model=$2
if [ ! -f "$model" ]; then
    echo "SKIP: $model does not exist"
    exit 77
fi
common=(bench niah --model "$model" --task kv --lengths 2048 --depths 0.25,0.75 --cases 3
        --seed 5 --csv --show-misses --sinks 16 --window 64 --threads 2)
correct() { # total correct answers in a --csv output
    awk -F, 'NR > 1 { c += $6 } END { print c + 0 }' <<<"$1"
}
full=$("$loupe" "${common[@]}" --attention full 2>&1) || { echo "FAIL: full: $full"; exit 1; }
retr=$("$loupe" "${common[@]}" --attention retrieval --topk 32 2>&1) || { echo "FAIL: retrieval: $retr"; exit 1; }
i8=$("$loupe" "${common[@]}" --attention retrieval --topk 32 --host-kv int8 2>&1) || { echo "FAIL: int8 host K/V: $i8"; exit 1; }
none=$("$loupe" "${common[@]}" --attention retrieval --topk 0 2>&1) || { echo "FAIL: topk 0: $none"; exit 1; }
printf '%s\n---\n%s\n---\n%s\n---\n%s\n' "$full" "$retr" "$i8" "$none"
f=$(correct "$(grep -E '^(task|kv),' <<<"$full")")
r=$(correct "$(grep -E '^(task|kv),' <<<"$retr")")
q=$(correct "$(grep -E '^(task|kv),' <<<"$i8")")
z=$(correct "$(grep -E '^(task|kv),' <<<"$none")")
echo "correct: full $f, retrieval $r, retrieval with int8 host K/V $q, static only $z (of 6)"
fail=0
[ "$f" -ge 5 ] || { echo "FAIL: full attention answers only $f of 6: the cases are too hard to judge retrieval"; fail=1; }
[ "$r" -ge "$f" ] || { echo "FAIL: retrieval answers $r, full attention $f"; fail=1; }
[ "$q" -ge "$f" ] || { echo "FAIL: retrieval with int8 host K/V answers $q, full attention $f"; fail=1; }
[ "$z" -lt "$r" ] || { echo "FAIL: the static set alone answers $z, as many as retrieval ($r)"; fail=1; }
grep -q '^kv,2048,0.25,retrieval,3,' <<<"$retr" || { echo "FAIL: no retrieval row in the csv"; fail=1; }
[ $fail = 0 ] && echo "bundled_retrieval: PASS"
exit $fail
