#!/usr/bin/env bash
# The command-line contract of DESIGN.md: usage errors exit 2, failures exit 1 with
# "loupe: <what>: <why>" on stderr, --help exits 0.
set -u
loupe=$1
fail=0
expect() { # expect CODE PATTERN -- ARGS...
    local code=$1 pat=$2; shift 3
    local err rc
    err=$("$loupe" "$@" 2>&1 >/dev/null); rc=$?
    if [ "$rc" != "$code" ]; then echo "FAIL: loupe $* exited $rc, expected $code ($err)"; fail=1; fi
    if [ -n "$pat" ] && ! grep -qE "$pat" <<<"$err"; then echo "FAIL: loupe $*: stderr '$err' lacks /$pat/"; fail=1; fi
}
expect 2 'usage' --
expect 0 '' -- --help
expect 2 "^loupe: unknown command 'frobnicate'" -- frobnicate
expect 2 '^loupe: bench: unknown benchmark' -- bench nope
exit $fail
