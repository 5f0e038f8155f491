#!/usr/bin/env bash
# cli_cuda.sh LOUPE MODEL: `loupe logits --backend cuda` against `--backend cpu` on the same ids.
#   Built without CUDA: --backend cuda fails (exit 1) saying loupe was built without CUDA, and
#   --backend auto takes the CPU path (identical output).
#   With CUDA but no device: exit 77 (skipped).
#   With a device: the last row and every row (--all) agree within the bf16 tolerance, 2e-2 of
#   the row's largest logit.
set -uo pipefail
LOUPE=$1 MODEL=$2
ids="1 17 42 300 7 99 250 3 128 64 511 0 5"
cpu=$("$LOUPE" logits --model "$MODEL" --tokens "$ids" --backend cpu --threads 2) || exit 1
out=$("$LOUPE" logits --model "$MODEL" --tokens "$ids" --backend cuda 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
    if grep -q "built without CUDA" <<<"$out"; then
        auto=$("$LOUPE" logits --model "$MODEL" --tokens "$ids" --backend auto --threads 2) || exit 1
        [ "$auto" = "$cpu" ] || { echo "--backend auto differs from cpu without CUDA"; exit 1; }
        echo "built without CUDA: --backend cuda refused, auto = cpu"
        exit 0
    fi
    if grep -q "no CUDA device" <<<"$out"; then
        echo "no CUDA device: skipped"
        exit 77
    fi
    echo "loupe logits --backend cuda failed: $out"
    exit 1
fi
compare() { # two files of rows: worst max|a-b|/max|b| over rows
    paste -d'\n' "$1" "$2" | awk '
        NR % 2 == 1 { n = split($0, a, " "); next }
        { split($0, b, " "); md = 0; mb = 0
          for (i = 1; i <= n; i++) { d = a[i] - b[i]; if (d < 0) d = -d; if (d > md) md = d
                                     v = b[i]; if (v < 0) v = -v; if (v > mb) mb = v }
          e = md / mb; if (e > worst) worst = e }
        END { printf "%.6g\n", worst }'
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$out" >"$tmp/gpu"
echo "$cpu" >"$tmp/cpu"
"$LOUPE" logits --model "$MODEL" --tokens "$ids" --backend cuda --all >"$tmp/gpu_all" || exit 1
"$LOUPE" logits --model "$MODEL" --tokens "$ids" --backend cpu --all --threads 2 >"$tmp/cpu_all" || exit 1
e1=$(compare "$tmp/gpu" "$tmp/cpu")
e2=$(compare "$tmp/gpu_all" "$tmp/cpu_all")
echo "last row error $e1, all rows $e2 (tolerance 2e-2)"
awk -v a="$e1" -v b="$e2" 'BEGIN { exit !(a <= 2e-2 && b <= 2e-2 && a == a && b == b) }'
