#!/usr/bin/env bash
# `loupe bench niah` on a random model, which cannot know any answer: it runs every task without
# crashing and scores 0; --list is deterministic per seed and differs across seeds; a length past
# the context is flagged and skipped; whichfile over a haystack without Python is reported n/a;
# bad options are usage errors.
# usage: bench_cli.sh LOUPE WORKDIR
set -u
loupe=$1 dir=$2
mkdir -p "$dir"
fail=0
model=$dir/rand.gguf
"$loupe" mkmodel --out "$model" --layers 2 --embd 64 --heads 4 --kv-heads 2 --ff 128 \
    --vocab 400 --ctx 1024 --seed 5 >/dev/null || { echo "FAIL: mkmodel"; exit 1; }

csv=$("$loupe" bench niah --model "$model" --task passkey,needles,kv,whichfile --lengths 600,4096 \
      --depths 0,1 --cases 2 --csv --threads 2 2>"$dir/err.txt") || { echo "FAIL: bench niah: $(cat "$dir/err.txt")"; fail=1; }
echo "$csv"
[ "$(wc -l <<<"$csv")" = 17 ] || { echo "FAIL: want 1 + 16 rows"; fail=1; }
# Cells at 600 tokens ran 2 cases with 0 correct; cells at 4096 are too long for ctx 1024.
awk -F, 'NR > 1 && $2 == 600 && !($5 == 2 && $6 == 0 && $14 == "ok" && $9 > 480 && $9 <= 568) { print "FAIL: " $0; bad = 1 }
         NR > 1 && $2 == 4096 && $14 != "too_long" { print "FAIL: " $0; bad = 1 }
         END { exit bad }' <<<"$csv" || fail=1
grep -q "length 4096 exceeds the context of 1024" "$dir/err.txt" || { echo "FAIL: no too-long warning"; fail=1; }

# The table form names every task.
table=$("$loupe" bench niah --model "$model" --task kv --lengths 500 --depths 0.5 --cases 1 2>/dev/null)
grep -qE "^kv +500 +0\.0" <<<"$table" || { echo "FAIL: table: $table"; fail=1; }

# Determinism of the cases.
a=$("$loupe" bench niah --model "$model" --task passkey,kv --lengths 800 --cases 3 --list --seed 4 2>/dev/null)
b=$("$loupe" bench niah --model "$model" --task passkey,kv --lengths 800 --cases 3 --list --seed 4 2>/dev/null)
c=$("$loupe" bench niah --model "$model" --task passkey,kv --lengths 800 --cases 3 --list --seed 5 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] || { echo "FAIL: --list differs between runs"; fail=1; }
[ "$a" != "$c" ] || { echo "FAIL: --list same for seeds 4 and 5"; fail=1; }
# --case K builds exactly case K of each cell, as a run of more cases numbers it.
d=$("$loupe" bench niah --model "$model" --task passkey,kv --lengths 800 --case 2 --list --seed 4 2>/dev/null)
want=$(grep -E '^(task|[a-z]+,800,[0-9.]+,2,)' <<<"$a")
[ -n "$d" ] && [ "$d" = "$want" ] || { echo "FAIL: --case 2 is not case 2 of the --cases 3 list"; fail=1; }

# A haystack of given files without Python: whichfile is n/a, passkey runs.
hay=$dir/hay
mkdir -p "$hay"
for i in 1 2 3; do for j in $(seq 1 30); do echo "Note $j of file $i: the weather was mild and the trains ran on time."; done >"$hay/n$i.txt"; done
out=$("$loupe" bench niah --model "$model" --task passkey,whichfile --lengths 700 --depths 0.5 \
      --cases 1 --haystack "$hay" --csv 2>"$dir/err2.txt") || { echo "FAIL: --haystack: $(cat "$dir/err2.txt")"; fail=1; }
grep -q "^passkey,700,0.5,full,1,0,.*,ok$" <<<"$out" || { echo "FAIL: haystack passkey: $out"; fail=1; }
grep -q "^whichfile,700,.*,failed$" <<<"$out" || { echo "FAIL: haystack whichfile: $out"; fail=1; }
grep -q "Python" "$dir/err2.txt" || { echo "FAIL: whichfile reason missing"; fail=1; }
# The retrieval modes run (static set + index search); their csv rows say which mode ran.
for a in flat ivf retrieval; do
    out=$("$loupe" bench niah --model "$model" --task passkey --lengths 600 --depths 0.5 --cases 1 \
        --attention $a --topk 8 --sinks 4 --window 16 --csv 2>&1) || { echo "FAIL: --attention $a: $out"; fail=1; }
    grep -q "^passkey,600,0.5,$a,1," <<<"$out" || { echo "FAIL: --attention $a row: $out"; fail=1; }
done

expect_rc() { local want=$1; shift; "$loupe" bench niah --model "$model" "$@" >/dev/null 2>&1; local rc=$?
    [ $rc = "$want" ] || { echo "FAIL: bench niah $* exited $rc, want $want"; fail=1; }; }
expect_rc 2 --task nope
expect_rc 2 --depths 1.5
expect_rc 2 --lengths 12,x
expect_rc 1 --attention ivf --window 64 --static-max 32 --lengths 600 --depths 0.5 --cases 1
expect_rc 1 --haystack "$dir/does-not-exist"
[ $fail = 0 ] && echo "bench_cli: PASS"
exit $fail
