#!/usr/bin/env bash
# Runs the README's main-job command (from the source tree, where the README's path is relative
# to) and checks the bundled model finds the value in the demo document.
set -u
loupe=$1
cd "$2" || exit 1
cmd=$(grep -o 'loupe ask tests/models/demo/ -q "[^"]*" --temp 0' README.md | head -1)
if [ -z "$cmd" ]; then echo "FAIL: README.md no longer shows the demo command"; exit 1; fi
key=$(sed -n 's/.*the key \([0-9a-f]*\)?.*/\1/p' <<<"$cmd")
want=$(sed -n "s/^$key: //p" tests/models/demo/vault.txt)
got=$("$loupe" ask tests/models/demo/ -q "What is the value for the key $key?" --temp 0 2>/dev/null)
echo "key $key: want '$want', got '$got'"
[ -n "$want" ] && [ "$got" = "$want" ] || exit 1
# The same through retrieval attention: the same answer, and stderr's progress is the sources'
# prefill, the indexes' build and the question's extension only (the answer's tokens, each a
# one-token extension of the context there, once reported "prefill 1/1" between its words).
err=$(mktemp)
trap 'rm -f "$err"' EXIT
got=$("$loupe" ask tests/models/demo/ -q "What is the value for the key $key?" --temp 0 \
    --attention retrieval 2>"$err")
echo "retrieval: got '$got'"
tr '\r' '\n' <"$err" | grep -v '^$' | tail -n 3
[ "$got" = "$want" ] || exit 1
if tr '\r' '\n' <"$err" | grep -qE '(prefill|question) 1/1 '; then
    echo "FAIL: progress reported for the answer's tokens"
    exit 1
fi
