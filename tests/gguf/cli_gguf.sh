#!/usr/bin/env bash
# `loupe mkmodel` + `loupe model-info` end to end: presets and types write files that model-info
# reads back with the right shape; bad files and bad flags give the contract's exit codes and
# `loupe: <what>: <why>` messages. Usage: cli_gguf.sh LOUPE TMPDIR
set -u
loupe=$1
tmp=$(mktemp -d "${2:-/tmp}/cli_gguf.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
say() { echo "FAIL: $*"; fail=1; }
# expect CODE STDERR-PATTERN -- ARGS...: exit code and a stderr line matching the pattern.
expect() {
    local code=$1 pat=$2; shift 3
    local err rc
    err=$("$loupe" "$@" 2>&1 >/dev/null); rc=$?
    [ "$rc" = "$code" ] || say "loupe $* exited $rc, expected $code ($err)"
    if [ -n "$pat" ] && ! grep -qE -- "$pat" <<<"$err"; then say "loupe $*: stderr '$err' lacks /$pat/"; fi
}
# info FILE PATTERN...: model-info succeeds and prints every pattern.
info() {
    local f=$1; shift
    local out
    out=$("$loupe" model-info "$f" 2>&1) || { say "model-info $f failed: $out"; return; }
    for p in "$@"; do grep -qE -- "$p" <<<"$out" || say "model-info $f lacks /$p/:"$'\n'"$out"; done
}

seed=$(( $(date +%s) % 100000 )); echo "seed $seed"
"$loupe" mkmodel --out "$tmp/tiny.gguf" --preset tiny --seed "$seed" || say "mkmodel tiny failed"
info "$tmp/tiny.gguf" '^architecture: +llama$' '^layers: +2$' '^embedding: +256$' \
    '^heads: +2 query, 1 key/value, head dim 128$' '^feed-forward: +512$' '^vocabulary: +384$' \
    '^GGUF version: +3$' '^alignment: +32$' 'F32 +21 tensors' '^output: +separate$' \
    'rope: +norm, base 500000' '^qkv bias: +no$'
# Same seed, same bytes; another seed, other bytes.
"$loupe" mkmodel --out "$tmp/tiny2.gguf" --preset tiny --seed "$seed" || say "mkmodel tiny again failed"
cmp -s "$tmp/tiny.gguf" "$tmp/tiny2.gguf" || say "mkmodel is not deterministic for a seed"
"$loupe" mkmodel --out "$tmp/tiny3.gguf" --preset tiny --seed $((seed + 1)) || say "mkmodel seed+1 failed"
cmp -s "$tmp/tiny.gguf" "$tmp/tiny3.gguf" && say "different seeds gave identical files"

"$loupe" mkmodel --out "$tmp/qwen.gguf" --preset qwen2-tiny --type q8_0 || say "mkmodel qwen2-tiny failed"
info "$tmp/qwen.gguf" '^architecture: +qwen2$' 'rope: +neox' '^qkv bias: +yes$' \
    '^output: +tied' 'Q8_0 +15 tensors'

"$loupe" mkmodel --out "$tmp/q4.gguf" --layers 3 --embd 512 --heads 4 --kv-heads 2 --ff 768 \
    --vocab 1000 --type q4_k --rope-freqs --tied --rope-base 123456 || say "mkmodel q4_k failed"
info "$tmp/q4.gguf" '^layers: +3$' '^feed-forward: +768$' 'Q4_K +[0-9]+ tensors' \
    'base 123456' 'rope_freqs factors' '^vocabulary: +1000$' '^heads: +4 query, 2 key/value'
for t in f16 bf16 q6_k; do
    "$loupe" mkmodel --out "$tmp/$t.gguf" --type "$t" --layers 1 || say "mkmodel --type $t failed"
    info "$tmp/$t.gguf" "$(tr a-z A-Z <<<"$t") +[0-9]+ tensors"
done
# An --embd that Q4_K blocks cannot divide falls back, with a note.
expect 0 'note: some rows do not fit' -- mkmodel --out "$tmp/fb.gguf" --embd 96 --heads 2 \
    --kv-heads 1 --ff 128 --type q4_k
info "$tmp/fb.gguf" 'Q8_0'

# Failures: exit 1 with "loupe: model-info: <file>: <problem>".
expect 1 "^loupe: model-info: $tmp/none.gguf: cannot open" -- model-info "$tmp/none.gguf"
printf 'GGUX0000000000000000000000' > "$tmp/magic.gguf"
expect 1 "^loupe: model-info: $tmp/magic.gguf: not a GGUF file \(bad magic\)" -- model-info "$tmp/magic.gguf"
head -c 300 "$tmp/tiny.gguf" > "$tmp/trunc.gguf"
expect 1 "^loupe: model-info: $tmp/trunc.gguf: .*(truncated|past the end|could hold)" -- model-info "$tmp/trunc.gguf"
head -c $(( $(stat -c %s "$tmp/tiny.gguf") - 100 )) "$tmp/tiny.gguf" > "$tmp/short.gguf"
expect 1 "data ends past the end of the file" -- model-info "$tmp/short.gguf"
expect 1 "is a directory" -- model-info "$tmp"
# Usage errors: exit 2.
expect 2 '^loupe: model-info: expects a GGUF FILE' -- model-info
expect 2 '^loupe: model-info: unknown option' -- model-info --frob x
expect 2 '^loupe: mkmodel: --out FILE is required' -- mkmodel --preset tiny
expect 2 "^loupe: mkmodel: unknown preset 'huge'" -- mkmodel --out "$tmp/x.gguf" --preset huge
expect 2 "^loupe: mkmodel: --type must be" -- mkmodel --out "$tmp/x.gguf" --type q4_0
expect 2 "^loupe: mkmodel: --embd 100 is not a multiple of --heads 3" -- mkmodel --out "$tmp/x.gguf" --embd 100 --heads 3
expect 2 "^loupe: mkmodel: --heads 4 is not a multiple of --kv-heads 3" -- mkmodel --out "$tmp/x.gguf" --heads 4 --kv-heads 3
expect 2 "^loupe: mkmodel: --layers expects an integer" -- mkmodel --out "$tmp/x.gguf" --layers two
expect 2 "^loupe: mkmodel: unknown option '--bogus'" -- mkmodel --out "$tmp/x.gguf" --bogus
expect 1 "^loupe: mkmodel: --vocab 100 is too small" -- mkmodel --out "$tmp/x.gguf" --vocab 100
expect 1 "^loupe: mkmodel: $tmp/nodir/x.gguf: cannot create" -- mkmodel --out "$tmp/nodir/x.gguf"
expect 1 "^loupe: mkmodel: $tmp/none.json: cannot read JSON" -- mkmodel --out "$tmp/x.gguf" --tokenizer "$tmp/none.json"
[ -e "$tmp/x.gguf" ] && say "a failed mkmodel left $tmp/x.gguf behind"
ls "$tmp" | grep -q '\.tmp-' && say "temporary files left behind: $(ls "$tmp")"
exit $fail
