#!/usr/bin/env bash
# `loupe logits` and `loupe ask` on a small random model: output shape and determinism, and the
# bad inputs the CPU-inference issue names (unsupported architecture, context too long, empty
# question) each failing with exit 1 and a `loupe: <what>: <why>` sentence.
# usage: cli_cpu.sh LOUPE WORKDIR
set -u
loupe=$1
dir=$2
mkdir -p "$dir"
fail=0
model=$dir/cli.gguf
"$loupe" mkmodel --out "$model" --layers 2 --embd 64 --heads 4 --kv-heads 2 --ff 128 \
    --vocab 400 --ctx 1024 --seed 3 >/dev/null || { echo "FAIL: mkmodel"; exit 1; }

expect() { # expect CODE PATTERN -- ARGS...
    local code=$1 pat=$2; shift 3
    local err rc
    err=$("$loupe" "$@" 2>&1 >/dev/null); rc=$?
    if [ "$rc" != "$code" ]; then echo "FAIL: loupe $* exited $rc, expected $code ($err)"; fail=1; fi
    if [ -n "$pat" ] && ! grep -qE "$pat" <<<"$err"; then
        echo "FAIL: loupe $*: stderr '$err' lacks /$pat/"; fail=1
    fi
}

# --- logits -------------------------------------------------------------------------------
last=$("$loupe" logits --model "$model" --tokens "5 17 200 3" --threads 2) || fail=1
all=$("$loupe" logits --model "$model" --tokens "5 17 200 3" --all --threads 1) || fail=1
[ "$(wc -l <<<"$all")" = 4 ] || { echo "FAIL: --all gave $(wc -l <<<"$all") rows, want 4"; fail=1; }
[ "$(wc -w <<<"$last")" = 400 ] || { echo "FAIL: a row has $(wc -w <<<"$last") values, want 400"; fail=1; }
# The last row of --all equals the plain output (same arithmetic whatever the thread count).
[ "$(tail -n 1 <<<"$all")" = "$last" ] || { echo "FAIL: last --all row differs from the plain row"; fail=1; }
flat=$("$loupe" logits --model "$model" --tokens "5 17 200 3" --attention flat --sinks 1 --window 1 --topk 100) || fail=1
[ "$flat" = "$last" ] || python3 - "$flat" "$last" <<'EOF' || { echo "FAIL: --attention flat (top-k covers all) differs from full"; fail=1; }
import sys
a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
m = max(abs(x) for x in b)
sys.exit(0 if max(abs(x - y) for x, y in zip(a, b)) <= 1e-5 * m else 1)
EOF
expect 1 'exceed the window' -- logits --model "$model" --tokens "1 2" --attention ivf --window 16 --static-max 8
expect 2 'token ids' -- logits --model "$model" --tokens "1 two 3"
expect 2 'required' -- logits --model "$model"
expect 1 'outside the vocabulary' -- logits --model "$model" --tokens "1 400"
expect 1 '^loupe: logits: .*longer than the context allows \(3 tokens\)' -- logits --model "$model" --tokens "1 2 3 4" --ctx 3
expect 1 '^loupe: logits: ' -- logits --model "$dir/missing.gguf" --tokens "1"

# --- ask ----------------------------------------------------------------------------------
printf 'The cat sat on the mat.\nIt was a sunny day.\n' >"$dir/doc.txt"
a1=$("$loupe" ask --model "$model" "$dir/doc.txt" -q "Where did the cat sit?" --seed 42 --max-tokens 12 --threads 2); rc=$?
[ $rc = 0 ] || { echo "FAIL: ask exited $rc"; fail=1; }
a2=$("$loupe" ask --model "$model" "$dir/doc.txt" -q "Where did the cat sit?" --seed 42 --max-tokens 12 --threads 1)
[ "$a1" = "$a2" ] || { echo "FAIL: ask with the same seed gave different answers"; fail=1; }
g1=$("$loupe" ask --model "$model" "$dir/doc.txt" -q "Where?" --temp 0 --max-tokens 6)
g2=$("$loupe" ask --model "$model" "$dir/doc.txt" -q "Where?" --temp 0 --max-tokens 6 --seed 9)
[ "$g1" = "$g2" ] || { echo "FAIL: greedy answers depend on the seed"; fail=1; }
expect 1 '^loupe: ask: the question is empty' -- ask --model "$model" "$dir/doc.txt" -q "  "
expect 2 'question is required' -- ask --model "$model" "$dir/doc.txt"
# With sources, the question and the answer's room are taken out of the context first ...
expect 1 '^loupe: ask: the question \([0-9]+ tokens with the chat format\) and --max-tokens 512 leave no room for the sources in a context of 16 tokens' -- ask --model "$model" "$dir/doc.txt" -q "Where?" --ctx 16
# ... sources over what is left are refused with what would be cut ...
expect 1 '^loupe: ask: the sources do not fit \(with --max-tokens 4 of answer\)' -- ask --model "$model" "$dir/doc.txt" -q "Where?" --ctx 40 --max-tokens 4
# ... and a question alone longer than the context is refused as it stands.
expect 1 '^loupe: ask: the prompt is [0-9]+ tokens but the context allows 16' -- ask --model "$model" -q "Where is the thing that is described in the text, and why is it there at all?" --ctx 16
expect 1 "^loupe: ask: .*longer than the model's context" -- ask --model "$model" "$dir/doc.txt" -q "Where?" --ctx 100000
expect 1 '^loupe: ask: .*nope.txt' -- ask --model "$model" "$dir/nope.txt" -q "Where?"

# --- unsupported architecture: the same file with every "llama" renamed ------------------------
python3 - "$model" "$dir/mamba.gguf" <<'EOF' || { echo "FAIL: could not write the renamed model"; fail=1; }
import sys
data = open(sys.argv[1], 'rb').read()
open(sys.argv[2], 'wb').write(data.replace(b'llama', b'mamba'))
EOF
expect 1 "^loupe: ask: .*unsupported architecture 'mamba'" -- ask --model "$dir/mamba.gguf" "$dir/doc.txt" -q "Where?"
expect 1 "^loupe: logits: .*unsupported architecture 'mamba'" -- logits --model "$dir/mamba.gguf" --tokens "1 2"

[ $fail = 0 ] && echo "cli_cpu: ok"
exit $fail
