#!/usr/bin/env bash
# `loupe layout` end to end: a fixture repository (nested .gitignore files with negations,
# directory-only rules, anchors, "**", escapes, trailing spaces; a .ignore; binaries; a large file;
# a symlink loop; non-ASCII names) must lay out exactly the files `git ls-files --cached --others
# --exclude-standard` lists, minus the documented skips (binary, over --max-file-size, symlink
# loop, .ignore), in depth-first bytewise order; plus the CLI contract (exit codes, messages,
# stdin, clean stderr) and, when `loupe mkmodel` works, token counts and --ctx/--truncate.
#
# usage: layout_cli.sh LOUPE WORKDIR
set -u
loupe=$1
work=$2
fail=0
bad() { echo "FAIL: $*"; fail=1; }
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
command -v git >/dev/null || { echo "git not found: skipping"; exit 77; }

# ---- fixture repository ---------------------------------------------------------------------
mkdir repo && cd repo
git init -q .
mk() { mkdir -p "$(dirname "$1")"; printf '%s\n' "${2:-content of $1}" > "$1"; }
printf '%s\n' '# comment line' '*.log' '!keep.log' 'build/' '/top-only.txt' 'docs/**/draft*' \
    '\#literal' 'trailing-space.txt   ' 'ignored-dir/' > .gitignore
mk src/main.c 'int main(void) { return 0; }'
mk src/util/strings.c; mk src/util/strings.h
mk app.log; mk keep.log; mk sub/keep.log; mk sub/x.log
mk build/out.txt; mk src/build 'a file named build: dir-only rules do not match it'
mk top-only.txt; mk src/top-only.txt
mk docs/a/draft1.txt; mk docs/draft0.txt; mk docs/final.txt
mk '#literal'; mk trailing-space.txt
printf '%s\n' '*.md' '!README.md' '/local.txt' 'deep/' > nested.gitignore
mkdir -p nested && mv nested.gitignore nested/.gitignore
mk nested/notes.md; mk nested/README.md; mk nested/local.txt; mk nested/sub/local.txt
mk nested/deep/x.c
mk ignored-dir/secret.txt; printf '!secret.txt\n' > ignored-dir/.gitignore
printf 'scratch.txt\n' > .ignore; mk scratch.txt
printf 'PNG\0\0\0binary' > image.bin
head -c 100000 /dev/zero | tr '\0' 'a' > large.txt
ln -s . loop
ln -s src/main.c link.txt
mk 'héllo wörld.txt'; mk '日本語.md'; mk 'ünï/çà.txt'
mk 'a/x.c'; mk 'a.c'; mk 'a-b.c'
git add -A >/dev/null 2>&1
cd ..

git -C repo ls-files -z --cached --others --exclude-standard | tr '\0' '\n' | sort -u > git.txt
skips='image.bin|large.txt|loop|scratch.txt'
grep -vxE "$skips" git.txt | LC_ALL=C sort > expected.txt

"$loupe" layout --no-count --manifest --max-file-size 64K repo > manifest.txt 2> err.txt
rc=$?
[ $rc = 0 ] || bad "layout --manifest exited $rc: $(cat err.txt)"
[ -s err.txt ] && bad "stderr not clean: $(cat err.txt)"
awk -F'\t' '$1 == "included" { print $4 }' manifest.txt | sed 's|^repo/||' > ours_order.txt
LC_ALL=C sort ours_order.txt > ours.txt
if ! diff -u expected.txt ours.txt > diff.txt; then
    bad "included files differ from git ls-files minus the documented skips:"; cat diff.txt
fi
reason() { awk -F'\t' -v p="repo/$1" '$4 == p { print $1 ": " $5 }' manifest.txt; }
reason image.bin | grep -q '^skipped: binary file' || bad "image.bin: $(reason image.bin)"
reason large.txt | grep -q '^skipped: 97.7 KiB is over the --max-file-size limit of 64 KiB' ||
    bad "large.txt: $(reason large.txt)"
reason loop | grep -q '^skipped: symbolic link loop' || bad "loop: $(reason loop)"
reason scratch.txt | grep -q '^skipped: ignored by repo/.ignore:1: scratch.txt' ||
    bad "scratch.txt: $(reason scratch.txt)"
reason build | grep -q 'ignored by repo/.gitignore:4: build/' || bad "build: $(reason build)"
reason ignored-dir | grep -q 'ignored by repo/.gitignore:9' || bad "ignored-dir: $(reason ignored-dir)"
reason .git | grep -q 'version-control' || bad ".git: $(reason .git)"
grep -q 'ignored-dir/secret' manifest.txt && bad "entered an ignored directory"
tail -1 manifest.txt | grep -qE '^# [0-9]+ entries: [0-9]+ included' || bad "summary: $(tail -1 manifest.txt)"

# Depth-first, entries sorted bytewise: component-wise byte order.
python3 - ours_order.txt <<'PY' || bad "documents are not in depth-first bytewise order"
import sys
paths = open(sys.argv[1], 'rb').read().split(b'\n')[:-1]
sys.exit(0 if paths == sorted(paths, key=lambda p: p.split(b'/')) else 1)
PY

# The layout itself: sources block = the included list; tree rooted at repo/; framing.
"$loupe" layout --no-count --max-file-size 64K repo > layout.txt 2> err.txt || bad "layout failed: $(cat err.txt)"
[ -s err.txt ] && bad "layout stderr not clean: $(cat err.txt)"
head -2 layout.txt | diff -q - <(printf '<context>\n<sources>\n') >/dev/null || bad "layout header: $(head -2 layout.txt)"
[ "$(tail -c 11 layout.txt)" = "</context>" ] || bad "layout does not end with </context>"
sed -n '/^<sources>$/,/^<\/sources>$/p' layout.txt | sed '1d;$d' | sed 's|^repo/||' > src_block.txt
diff -q src_block.txt ours_order.txt >/dev/null || bad "<sources> differs from the manifest order"
grep -qx '<tree>' layout.txt && grep -qx 'repo/' layout.txt && grep -qx '  src/' layout.txt &&
    grep -qx '    util/' layout.txt && grep -qx '      strings.c' layout.txt || bad "tree shape"
grep -qx '<document path="repo/link.txt">' layout.txt || bad "symlinked file missing"
[ "$(grep -c '^<document path=' layout.txt)" = "$(wc -l < ours.txt)" ] || bad "document count"

# ---- CLI contract -----------------------------------------------------------------------------
expect() { # expect CODE PATTERN ARGS...
    local code=$1 pat=$2; shift 2
    local err rc
    err=$("$loupe" "$@" 2>&1 >/dev/null </dev/null); rc=$?
    [ "$rc" = "$code" ] || bad "loupe $* exited $rc, expected $code ($err)"
    [ -z "$pat" ] || grep -qE "$pat" <<<"$err" || bad "loupe $*: stderr '$err' lacks /$pat/"
}
expect 2 '^loupe: layout: no sources' layout --no-count
expect 2 '^loupe: layout: --truncate must be' layout --no-count --truncate bogus repo
expect 2 "^loupe: layout: unknown option '--bogus'" layout --bogus repo
expect 2 '^loupe: layout: --ctx needs token counts' layout --no-count --ctx 100 repo
expect 1 '^loupe: layout: nope.txt: no such file or directory' layout --no-count nope.txt
expect 1 "^loupe: layout: ftp://h/x: unsupported URL scheme 'ftp'" layout --no-count ftp://h/x
expect 1 '^loupe: layout: repo/image.bin: binary file' layout --no-count repo/image.bin
expect 1 'pass --model FILE, or --no-count' layout --model "$work/missing.gguf" repo
expect 0 '' layout --help
out=$(printf 'from stdin' | "$loupe" layout --no-count - 2>&1)
[ "$out" = "$(printf '<context>\n<sources>\n<stdin>\n</sources>\n<document path="<stdin>">\nfrom stdin\n</document>\n</context>')" ] ||
    bad "stdin layout: $out"

# ---- with a model: counts, --ctx and --truncate ----------------------------------------------
if "$loupe" mkmodel --preset tiny --out "$work/tiny.gguf" >/dev/null 2>&1; then
    M=(--model "$work/tiny.gguf" --max-file-size 64K)
    # Documents large next to their headers, so that cutting is meaningful.
    for i in 1 2 3 4; do
        mkdir -p repo/texts
        for j in $(seq 1 $((i * 40))); do echo "line $j of text $i: the quick brown fox"; done > repo/texts/t$i.txt
    done
    "$loupe" layout "${M[@]}" --manifest repo > m2.txt 2> err.txt || bad "counted manifest: $(cat err.txt)"
    awk -F'\t' '$1 == "included" && $3 !~ /^[0-9]+$/ { bad = 1 } END { exit bad }' m2.txt ||
        bad "included documents without token counts"
    total=$(tail -1 m2.txt | sed -nE 's/.*; ([0-9]+) tokens laid out.*/\1/p')
    [ -n "$total" ] || bad "no total in $(tail -1 m2.txt)"
    if [ -n "$total" ]; then
        ctx=$((total * 2 / 3))
        expect 1 'nothing was cut' layout "${M[@]}" --ctx $ctx repo
        for how in tail proportional; do
            "$loupe" layout "${M[@]}" --ctx $ctx --truncate $how --manifest repo > m3.txt 2> err.txt ||
                bad "--truncate $how: $(cat err.txt)"
            t=$(tail -1 m3.txt | sed -nE 's/.*; ([0-9]+) tokens laid out.*/\1/p')
            [ -n "$t" ] && [ "$t" -le "$ctx" ] || bad "--truncate $how: $t tokens > --ctx $ctx"
            grep -q "^truncated" m3.txt || bad "--truncate $how cut nothing"
            "$loupe" layout "${M[@]}" --ctx $ctx --truncate $how repo | grep -qE '^\[\.\.\. truncated: [0-9]+ of [0-9]+ tokens kept \.\.\.\]$' ||
                bad "--truncate $how: no marker line"
        done
    fi
else
    echo "note: loupe mkmodel unavailable, token-count checks skipped"
fi

[ $fail = 0 ] && echo "layout_cli: ok"
exit $fail
