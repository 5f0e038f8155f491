/*
 * ingest's pieces through the C API, with a stub token counter: decoding (UTF-8, Latin-1
 * fallback, UTF-16 with BOM), binary sniffing, git's wildmatch and ignore-file rules, HTML to
 * text, the exact layout of a small tree (golden text), --include/--exclude, progress and
 * cancellation, and the truncation policies on random documents against random budgets.
 *
 * The stub counter is a real (toy) tokenizer: alphanumeric runs in 4-byte pieces, one token per
 * whitespace run, one per other byte. It is not additive across boundaries (runs merge), which
 * is what makes the exact-total logic worth testing.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/test_util.h"
#include "ingest/ingest.h"

static test_rng rng;
static char tmp[512];

/* ---- Stub tokenizer ---------------------------------------------------------------------- */

static bool is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

/* Walks tokens; returns the count, or the end offset of token `stop` when stop >= 0. */
static int64_t stub_walk(const char *t, size_t n, int64_t stop)
{
    int64_t k = 0;
    size_t i = 0;
    while (i < n) {
        if (stop >= 0 && k == stop)
            return (int64_t)i;
        unsigned char c = (unsigned char)t[i];
        size_t j = i + 1;
        if (is_alnum(c)) {
            while (j < n && j - i < 4 && is_alnum((unsigned char)t[j]))
                j++;
        } else if (is_space(c)) {
            while (j < n && is_space((unsigned char)t[j]))
                j++;
        }
        i = j;
        k++;
    }
    return stop >= 0 ? (int64_t)n : k;
}
static int64_t stub_count(void *ctx, const char *t, size_t n)
{
    (void)ctx;
    return stub_walk(t, n, -1);
}
static int64_t stub_prefix(void *ctx, const char *t, size_t n, int64_t k)
{
    (void)ctx;
    return stub_walk(t, n, k);
}

/* ---- Files ------------------------------------------------------------------------------- */

static void write_file(const char *rel, const char *data, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    for (char *p = path + strlen(tmp) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        test_failures++;
        return;
    }
    fwrite(data, 1, n, f);
    fclose(f);
}
static void write_str(const char *rel, const char *s)
{
    write_file(rel, s, strlen(s));
}

static bool valid_utf8_no_nul(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!k || i + k > n || c == 0)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((u[i + j] & 0xC0) != 0x80)
                return false;
        i += k;
    }
    return strlen(s) == n;
}

static size_t enc_utf8(uint32_t cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

static uint32_t random_cp(void)
{
    switch (test_rng_u64(&rng) % 4) {
    case 0: return 0x20 + (uint32_t)(test_rng_u64(&rng) % 0x5F);
    case 1: return 0x80 + (uint32_t)(test_rng_u64(&rng) % 0x780);
    case 2: { uint32_t c = 0x800 + (uint32_t)(test_rng_u64(&rng) % 0xF000);
              return c >= 0xD800 && c <= 0xDFFF ? 0x4E2D : c; }
    default: return 0x10000 + (uint32_t)(test_rng_u64(&rng) % 0xFFFF0);
    }
}

/* ---- Decoding ---------------------------------------------------------------------------- */

static void test_decode(void)
{
    size_t n = 0;
    char *t;
    for (int round = 0; round < 200; round++) {
        /* Valid UTF-8 passes unchanged; UTF-16 LE/BE with BOM decodes to the same text. */
        char u8[4096];
        unsigned char le[4096], be[4096];
        size_t un = 0, ln = 2, bn = 2;
        le[0] = 0xFF, le[1] = 0xFE, be[0] = 0xFE, be[1] = 0xFF;
        int count = 1 + (int)(test_rng_u64(&rng) % 300);
        for (int i = 0; i < count; i++) {
            uint32_t cp = random_cp();
            un += enc_utf8(cp, u8 + un);
            uint16_t units[2];
            int nu = 1;
            if (cp >= 0x10000) {
                units[0] = (uint16_t)(0xD800 + ((cp - 0x10000) >> 10));
                units[1] = (uint16_t)(0xDC00 + ((cp - 0x10000) & 0x3FF));
                nu = 2;
            } else {
                units[0] = (uint16_t)cp;
            }
            for (int k = 0; k < nu; k++) {
                le[ln++] = (unsigned char)(units[k] & 0xFF);
                le[ln++] = (unsigned char)(units[k] >> 8);
                be[bn++] = (unsigned char)(units[k] >> 8);
                be[bn++] = (unsigned char)(units[k] & 0xFF);
            }
        }
        t = ing_decode_text(u8, un, &n);
        CHECK(t && n == un && !memcmp(t, u8, un));
        free(t);
        t = ing_decode_text(le, ln, &n);
        CHECK(t && n == un && !memcmp(t, u8, un));
        free(t);
        t = ing_decode_text(be, bn, &n);
        CHECK(t && n == un && !memcmp(t, u8, un));
        free(t);
        /* Random bytes always give valid UTF-8 without NULs, never shorter than the input
         * (every byte survives, as itself or as Latin-1). */
        unsigned char raw[1024];
        size_t rn = 1 + test_rng_u64(&rng) % sizeof raw;
        for (size_t i = 0; i < rn; i++)
            raw[i] = (unsigned char)test_rng_u64(&rng);
        if (rn >= 2 && ((raw[0] == 0xFF && raw[1] == 0xFE) || (raw[0] == 0xFE && raw[1] == 0xFF)))
            raw[0] = 'x';
        if (rn >= 3 && raw[0] == 0xEF && raw[1] == 0xBB && raw[2] == 0xBF)
            raw[0] = 'x';
        t = ing_decode_text(raw, rn, &n);
        CHECK(t && valid_utf8_no_nul(t, n) && n >= rn);
        free(t);
    }
    t = ing_decode_text("caf\xE9 \xFF ok \xC3\xA9", 12, &n);
    CHECK_MSG(t && !strcmp(t, "caf\xC3\xA9 \xC3\xBF ok \xC3\xA9"), "latin-1: %s", t);
    free(t);
    t = ing_decode_text("\xEF\xBB\xBFhi", 5, &n); /* UTF-8 BOM dropped */
    CHECK(t && !strcmp(t, "hi") && n == 2);
    free(t);
    t = ing_decode_text("\xED\xA0\x80\xC0\xAF", 5, &n); /* surrogate, overlong: Latin-1 */
    CHECK(t && !strcmp(t, "\xC3\xAD\xC2\xA0\xC2\x80\xC3\x80\xC2\xAF"));
    free(t);
    t = ing_decode_text("\xFF\xFE\x00\xD8\x41\x00", 6, &n); /* lone surrogate → U+FFFD */
    CHECK(t && !strcmp(t, "\xEF\xBF\xBD" "A"));
    free(t);
    t = ing_decode_text("a\0b", 3, &n);
    CHECK(t && !strcmp(t, "a\xEF\xBF\xBD" "b"));
    free(t);

    const char *why = NULL;
    char buf[9000];
    memset(buf, 'a', sizeof buf);
    CHECK(!ing_looks_binary(buf, sizeof buf, &why));
    buf[8190] = '\0';
    CHECK(ing_looks_binary(buf, sizeof buf, &why) && strstr(why, "NUL"));
    buf[8190] = 'a';
    buf[8500] = '\0'; /* past the sniff window */
    CHECK(!ing_looks_binary(buf, sizeof buf, &why));
    for (int i = 0; i < 8192; i += 5)
        buf[i] = 0x01;
    CHECK(ing_looks_binary(buf, sizeof buf, &why) && strstr(why, "control"));
    CHECK(!ing_looks_binary("\xFF\xFE" "a\0b\0", 6, &why));
}

/* ---- wildmatch and ignore files ---------------------------------------------------------- */

static void test_wildmatch(void)
{
    static const struct { const char *pat, *text; int want; } cases[] = {
        {"foo", "foo", 1}, {"foo", "bar", 0}, {"", "", 1}, {"???", "foo", 1}, {"??", "foo", 0},
        {"*", "foo", 1}, {"f*", "foo", 1}, {"*f", "foo", 0}, {"*foo*", "foo", 1},
        {"*ob*a*r*", "foobar", 1}, {"*ab", "aaaaaaabababab", 1}, {"foo\\*", "foo*", 1},
        {"foo\\*bar", "foobar", 0}, {"f\\\\oo", "f\\oo", 1}, {"*[al]?", "ball", 1},
        {"[ten]", "ten", 0}, {"**[!te]", "ten", 1}, {"**[!ten]", "ten", 0},
        {"t[a-g]n", "ten", 1}, {"t[!a-g]n", "ten", 0}, {"t[!a-g]n", "ton", 1},
        {"t[^a-g]n", "ton", 1}, {"a[]]b", "a]b", 1}, {"a[]-]b", "a-b", 1},
        {"a[]-]b", "a]b", 1}, {"a[]-]b", "aab", 0}, {"a[]a-]b", "aab", 1}, {"]", "]", 1},
        {"foo*bar", "foo/baz/bar", 0}, {"foo**bar", "foo/baz/bar", 0},
        {"foo/**/bar", "foo/baz/bar", 1}, {"foo/**/bar", "foo/b/a/z/bar", 1},
        {"foo/**/bar", "foo/bar", 1}, {"foo/**/**/bar", "foo/b/a/z/bar", 1},
        {"**/foo", "foo", 1}, {"**/foo", "XXX/foo", 1}, {"**/foo", "bar/baz/foo", 1},
        {"*/foo", "bar/baz/foo", 0}, {"**/bar*", "foo/bar/baz", 0},
        {"**/bar/*", "deep/foo/bar/baz", 1}, {"**/bar/*", "deep/foo/bar/baz/", 0},
        {"**/bar/**", "deep/foo/bar/baz/", 1}, {"**/bar/*", "deep/foo/bar", 0},
        {"**/bar/**", "deep/foo/bar/", 1}, {"*/bar/**", "foo/bar/baz/x", 1},
        {"foo?bar", "foo/bar", 0}, {"foo[/]bar", "foo/bar", 0},
        {"[[:alpha:]][[:digit:]][[:upper:]]", "a1B", 1},
        {"[[:digit:][:upper:][:space:]]", "a", 0}, {"[[:digit:][:upper:][:space:]]", "A", 1},
        {"a/**", "a/b/c", 1}, {"a/**", "a", 0}, {"[a-", "a", 0}, {"x\\", "x", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(ing_wildmatch(cases[i].pat, cases[i].text) == (cases[i].want == 1),
                  "wildmatch('%s', '%s') should be %d", cases[i].pat, cases[i].text,
                  cases[i].want);
}

static void test_ignore_rules(void)
{
    const char text[] = "# comment\n*.log\n!keep.log\nbuild/\n/root.txt\ndocs/*.md\n\\#hash\n"
                        "\\!bang\ntrail   \nesc\\ \na/**/z\r\n\n   \n";
    ing_ignore *ig = NULL;
    loupe_err err = {0};
    CHECK(ing_ignore_parse(text, sizeof text - 1, "x/.gitignore", &ig, &err) == LOUPE_OK);
    static const struct { const char *path; bool dir; int want; } cases[] = {
        {"x.log", false, 1}, {"sub/x.log", false, 1}, {"keep.log", false, -1},
        {"sub/keep.log", false, -1}, {"build", true, 1}, {"build", false, 0},
        {"sub/build", true, 1}, {"root.txt", false, 1}, {"sub/root.txt", false, 0},
        {"docs/a.md", false, 1}, {"docs/sub/a.md", false, 0}, {"#hash", false, 1},
        {"!bang", false, 1}, {"trail", false, 1}, {"trail   ", false, 0}, {"esc ", false, 1},
        {"esc", false, 0}, {"a/z", false, 1}, {"a/b/c/z", false, 1}, {"b/a/z", false, 0},
        {"comment", false, 0}, {"# comment", false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(ing_ignore_match(ig, cases[i].path, cases[i].dir, NULL, 0) == cases[i].want,
                  "ignore '%s'%s should give %d", cases[i].path, cases[i].dir ? "/" : "",
                  cases[i].want);
    char why[256] = "";
    CHECK(ing_ignore_match(ig, "sub/keep.log", false, why, sizeof why) == -1);
    CHECK_MSG(!strcmp(why, "x/.gitignore:3: !keep.log"), "why: %s", why);
    ing_ignore_destroy(ig);
    ing_ignore_destroy(NULL);
}

/* ---- HTML ------------------------------------------------------------------------------- */

static void test_html(void)
{
    const char page[] = "<html><head><title> T </title><script>x()</script></head><body>"
                        "<div>a<br>b</div><table><tr><td>1</td><td>2</td></tr>"
                        "<tr><td>3</td><td>4</td></tr></table><p>  x  &lt;y&gt;  </p>"
                        "<pre>\n a  b\n</pre><style>.c{}</style>tail</body></html>";
    loupe_err err = {0};
    size_t n = 0;
    char *t = ing_html_to_text(page, sizeof page - 1, NULL, &n, &err);
    CHECK_MSG(t && !strcmp(t, "T\n\na\nb\n\n1 | 2\n3 | 4\n\nx <y>\n\n a  b\n\ntail\n"),
              "html: [%s]", t ? t : err.msg);
    CHECK(t && n == strlen(t));
    free(t);
    t = ing_html_to_text("", 0, NULL, &n, &err); /* empty page: empty text, no crash */
    CHECK(t && n == 0);
    free(t);
}

/* ---- Layout ------------------------------------------------------------------------------ */

static void test_layout_golden(void)
{
    char root[600];
    snprintf(root, sizeof root, "%s/L", tmp);
    write_str("L/b.txt", "bee\n");
    write_str("L/a/x.c", "int x;\n");
    write_str("L/a.c", "no newline");
    write_str("L/empty.txt", "");
    write_str("L/q&\"<>.txt", "</document> stays as is\n");
    write_str("L/.gitignore", "*.o\n");
    write_str("L/skip.o", "object");
    int fds[2];
    CHECK(pipe(fds) == 0);
    CHECK(write(fds[1], "from stdin", 10) == 10);
    close(fds[1]);
    char dir_arg[700], dup_arg[700];
    snprintf(dir_arg, sizeof dir_arg, "%s/", root); /* trailing slash: normalised away */
    snprintf(dup_arg, sizeof dup_arg, "%s/b.txt", root);
    /* Paths are shown relative as given: run from tmp with relative arguments. */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(tmp) == 0);
    const char *src[] = {"./L/", "L/b.txt", "-"};
    ing_opts o;
    ing_opts_init(&o);
    o.stdin_fd = fds[0];
    o.count = stub_count;
    ing_result *r = NULL;
    loupe_err err = {0};
    CHECK_MSG(ing_ingest(src, 3, &o, &r, &err) == LOUPE_OK, "%s", err.msg);
    close(fds[0]);
    const char *want =
        "<context>\n<sources>\nL/.gitignore\nL/a/x.c\nL/a.c\nL/b.txt\nL/empty.txt\n"
        "L/q&amp;&quot;&lt;&gt;.txt\n<stdin>\n</sources>\n"
        "<tree>\nL/\n  .gitignore\n  a/\n    x.c\n  a.c\n  b.txt\n  empty.txt\n"
        "  q&amp;&quot;&lt;&gt;.txt\n</tree>\n"
        "<document path=\"L/.gitignore\">\n*.o\n</document>\n"
        "<document path=\"L/a/x.c\">\nint x;\n</document>\n"
        "<document path=\"L/a.c\">\nno newline\n</document>\n"
        "<document path=\"L/b.txt\">\nbee\n</document>\n"
        "<document path=\"L/empty.txt\">\n</document>\n"
        "<document path=\"L/q&amp;&quot;&lt;&gt;.txt\">\n</document> stays as is\n</document>\n"
        "<document path=\"<stdin>\">\nfrom stdin\n</document>\n"
        "</context>\n";
    if (r) {
        CHECK_MSG(!strcmp(r->text, want), "layout:\n%s\n--- wanted:\n%s", r->text, want);
        CHECK(r->len == strlen(r->text));
        CHECK(r->total_tokens == stub_count(NULL, r->text, r->len));
        CHECK(r->n_included == 7 && r->n_skipped == 2);
        bool saw_o = false, saw_dup = false;
        int64_t sum = 0;
        for (size_t i = 0; i < r->n_docs; i++) {
            const ing_doc *d = &r->docs[i];
            if (!strcmp(d->path, "L/skip.o"))
                saw_o = d->status == ING_DOC_SKIPPED && strstr(d->reason, "L/.gitignore:1: *.o");
            if (d->status == ING_DOC_SKIPPED && !strcmp(d->path, "L/b.txt"))
                saw_dup = strstr(d->reason, "listed already") != NULL;
            if (d->status == ING_DOC_INCLUDED) {
                CHECK(d->tokens == stub_count(NULL, d->text, d->text_bytes));
                sum += d->tokens;
            }
        }
        CHECK(saw_o && saw_dup);
        CHECK(r->doc_tokens == sum);
    }
    ing_result_destroy(r);

    /* --include / --exclude and --no-ignore. */
    const char *inc[] = {"*.c"}, *exc[] = {"a/"};
    o.include = inc;
    o.n_include = 1;
    o.exclude = exc;
    o.n_exclude = 1;
    o.no_ignore = true;
    o.stdin_fd = 0;
    const char *src2[] = {"L"};
    r = NULL;
    CHECK_MSG(ing_ingest(src2, 1, &o, &r, &err) == LOUPE_OK, "%s", err.msg);
    if (r) {
        CHECK_MSG(strstr(r->text, "<sources>\nL/a.c\n</sources>"), "%s", r->text);
        size_t excluded = 0, not_included = 0;
        for (size_t i = 0; i < r->n_docs; i++) {
            if (r->docs[i].reason && strstr(r->docs[i].reason, "excluded by --exclude:1: a/"))
                excluded++;
            if (r->docs[i].reason && strstr(r->docs[i].reason, "--include"))
                not_included++;
        }
        CHECK(excluded == 1 && not_included == 5); /* .gitignore b.txt empty q skip.o */
    }
    ing_result_destroy(r);
    CHECK(chdir(cwd) == 0);
}

/* ---- Progress ---------------------------------------------------------------------------- */

typedef struct {
    int calls, stop_after;
    uint64_t last_scanned;
    bool monotone;
} prog_state;

static int on_progress(void *ctx, const ing_progress *p)
{
    prog_state *s = ctx;
    s->calls++;
    if (p->files_scanned < s->last_scanned)
        s->monotone = false;
    s->last_scanned = p->files_scanned;
    return s->stop_after && s->calls >= s->stop_after;
}

static void test_progress(void)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/L", tmp);
    const char *src[] = {dir};
    ing_opts o;
    ing_opts_init(&o);
    o.count = stub_count;
    prog_state s = {0, 0, 0, true};
    o.progress = on_progress;
    o.progress_ctx = &s;
    ing_result *r = NULL;
    loupe_err err = {0};
    CHECK(ing_ingest(src, 1, &o, &r, &err) == LOUPE_OK);
    CHECK(s.calls >= 8 && s.monotone);
    ing_result_destroy(r);
    prog_state stop = {0, 3, 0, true};
    o.progress_ctx = &stop;
    r = NULL;
    CHECK(ing_ingest(src, 1, &o, &r, &err) == LOUPE_ERR_CANCELLED && !r);
    CHECK(strstr(err.msg, "cancelled"));
}

/* ---- Truncation -------------------------------------------------------------------------- */

static void random_words(char *out, size_t n)
{
    static const char *const w[] = {"alpha", "be", "gamma42", "d", "epsilonic", "zeta", "eta",
                                    "théta", "{", "}", "(x)", ";", "naïve"};
    size_t o = 0;
    while (o + 12 < n) {
        const char *s = w[test_rng_u64(&rng) % (sizeof w / sizeof w[0])];
        size_t k = strlen(s);
        memcpy(out + o, s, k);
        o += k;
        out[o++] = test_rng_u64(&rng) % 9 ? ' ' : '\n';
    }
    out[o] = '\0';
}

static void check_truncated(const ing_result *r, ing_truncate how, int64_t ctx)
{
    CHECK_MSG(r->total_tokens <= ctx, "%s: total %lld > ctx %lld", ing_truncate_name(how),
              (long long)r->total_tokens, (long long)ctx);
    CHECK(r->total_tokens == stub_count(NULL, r->text, r->len));
    CHECK(r->n_truncated + r->n_dropped > 0);
    int phase = 0; /* tail: included*, truncated?, dropped* */
    for (size_t i = 0; i < r->n_docs; i++) {
        const ing_doc *d = &r->docs[i];
        char head[700];
        snprintf(head, sizeof head, "<document path=\"%s\">\n", d->path);
        const char *at = strstr(r->text, head);
        if (d->status == ING_DOC_DROPPED) {
            CHECK(!at && d->reason && strstr(d->reason, "dropped"));
            phase = 2;
            continue;
        }
        if (d->status == ING_DOC_SKIPPED)
            continue;
        CHECK(at != NULL);
        if (!at)
            continue;
        const char *body = at + strlen(head);
        if (d->status == ING_DOC_INCLUDED) {
            CHECK(how != ING_TRUNCATE_TAIL || phase == 0);
            CHECK(!strncmp(body, d->text, d->text_bytes));
            continue;
        }
        CHECK(d->status == ING_DOC_TRUNCATED);
        CHECK(how != ING_TRUNCATE_TAIL || phase == 0);
        phase = 1;
        char marker[128];
        snprintf(marker, sizeof marker, "[... truncated: %lld of %lld tokens kept ...]\n"
                 "</document>\n", (long long)d->tokens_kept, (long long)d->tokens);
        const char *m = strstr(body, marker);
        CHECK_MSG(m, "marker for %s missing", d->path);
        CHECK(d->reason && strstr(d->reason, "cut to"));
        if (m) {
            /* The kept text is the segment, or the segment minus the newline the layout added
             * after a cut that did not end a line (when both read as a prefix, either may be). */
            size_t seg = (size_t)(m - body);
            bool ok = false;
            for (size_t kept = seg; kept + 1 >= seg && kept <= seg; kept--) {
                if (kept < d->text_bytes && !strncmp(body, d->text, kept) &&
                    (kept == seg || body[kept] == '\n') &&
                    stub_count(NULL, body, kept) == d->tokens_kept)
                    ok = true;
                if (!kept)
                    break;
            }
            CHECK_MSG(ok, "%s: the kept text does not match %lld kept tokens", d->path,
                      (long long)d->tokens_kept);
            CHECK(d->tokens_kept < d->tokens);
        }
    }
}

static void test_truncation(void)
{
    for (int k = 0; k < 10; k++) {
        char name[64], text[4000];
        snprintf(name, sizeof name, "T/f%02d.txt", k);
        random_words(text, 200 + test_rng_u64(&rng) % (sizeof text - 200));
        write_str(name, text);
    }
    char dir[700];
    snprintf(dir, sizeof dir, "%s/T", tmp);
    const char *src[] = {dir};
    ing_opts o;
    ing_opts_init(&o);
    o.count = stub_count;
    ing_result *r = NULL;
    loupe_err err = {0};
    CHECK(ing_ingest(src, 1, &o, &r, &err) == LOUPE_OK);
    int64_t full = r ? r->total_tokens : 0;
    int64_t overhead = r ? r->total_tokens - r->doc_tokens : 0;
    ing_result_destroy(r);
    CHECK(full > 1000 && full > overhead + 800);
    for (int round = 0; round < 12; round++) {
        int64_t lo = overhead + 400; /* room for the markers of 10 cut documents */
        int64_t ctx = lo + (int64_t)(test_rng_u64(&rng) % (uint64_t)(full - lo));
        o.ctx = ctx;
        o.prefix = round % 2 ? stub_prefix : NULL; /* bisection and the tokenizer's cut */
        o.truncate = ING_TRUNCATE_NONE;
        r = NULL;
        CHECK(ing_ingest(src, 1, &o, &r, &err) == LOUPE_ERR_TOO_LONG);
        CHECK(r && !r->text);
        CHECK_MSG(strstr(err.msg, "nothing was cut") && strstr(err.msg, "--truncate tail would"),
                  "%s", err.msg);
        if (r) {
            size_t would = 0;
            for (size_t i = 0; i < r->n_docs; i++)
                would += r->docs[i].reason && strstr(r->docs[i].reason, "would be") != NULL;
            CHECK(would > 0);
        }
        ing_result_destroy(r);
        for (int how = ING_TRUNCATE_TAIL; how <= ING_TRUNCATE_PROPORTIONAL; how++) {
            o.truncate = (ing_truncate)how;
            r = NULL;
            loupe_err_clear(&err);
            loupe_status st = ing_ingest(src, 1, &o, &r, &err);
            CHECK_MSG(st == LOUPE_OK, "%s ctx %lld: %s", ing_truncate_name(o.truncate),
                      (long long)ctx, err.msg);
            if (r && st == LOUPE_OK) {
                check_truncated(r, o.truncate, ctx);
                if (how == ING_TRUNCATE_TAIL)
                    CHECK_MSG(r->total_tokens > ctx * 3 / 4, "tail used %lld of %lld",
                              (long long)r->total_tokens, (long long)ctx);
            }
            ing_result_destroy(r);
        }
    }
    /* A budget smaller than the headers: a clear refusal, not an empty context. */
    o.ctx = 5;
    o.truncate = ING_TRUNCATE_TAIL;
    r = NULL;
    CHECK(ing_ingest(src, 1, &o, &r, &err) == LOUPE_ERR_TOO_LONG);
    CHECK_MSG(strstr(err.msg, "too small") || strstr(err.msg, "could not fit"), "%s", err.msg);
    ing_result_destroy(r);
    /* A limit without a counter is a programming error, said clearly. */
    o.count = NULL;
    CHECK(ing_ingest(src, 1, &o, &r, &err) == LOUPE_ERR_INVALID);
}

int main(void)
{
    test_rng_seed(&rng, test_seed());
    snprintf(tmp, sizeof tmp, "%s/units.%d", test_tmpdir(), (int)getpid());
    mkdir(tmp, 0755);
    test_decode();
    test_wildmatch();
    test_ignore_rules();
    test_html();
    test_layout_golden();
    test_progress();
    test_truncation();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return test_summary("test_ingest_units");
}
