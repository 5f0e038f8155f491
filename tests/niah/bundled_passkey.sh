#!/usr/bin/env bash
# The bundled model (tests/models/loupe-tiny.gguf) answers a held-out passkey question at a 2K-token
# context on the CPU. Skipped (exit 77) until the model file exists.
# usage: bundled_passkey.sh LOUPE MODEL
set -u
loupe=$1 model=$2
if [ ! -f "$model" ]; then
    echo "SKIP: $model does not exist yet (trained by tests/models/); nothing to test"
    exit 77
fi
out=$("$loupe" bench niah --model "$model" --task passkey --lengths 2048 --depths 0.5 --cases 1 \
      --seed 1 --csv --show-misses 2>&1) || { echo "FAIL: bench niah: $out"; exit 1; }
echo "$out"
grep -q "^passkey,2048,0.5,full,1,1,1.0000,0," <<<"$out" || { echo "FAIL: the passkey was not answered"; exit 1; }
echo "bundled_passkey: PASS"
