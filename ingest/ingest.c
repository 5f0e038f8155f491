/*
 * ing_ingest: the pipeline and its policy.
 *
 *   1. read    — each source in argument order: "-" (stdin), a URL, a directory (walk.c) or a
 *                file; records for everything met, skipped ones with their reason.
 *   2. dedupe  — a path laid out twice (a file also inside a listed directory) keeps its first
 *                record; later ones are skipped "listed already".
 *   3. count   — each document's tokens through the caller's counter, in parallel (OpenMP),
 *                biggest first so the last thread is not left with the largest file.
 *   4. layout  — lay out, count the whole text (the exact total: pieces do not add up exactly
 *                because a tokenizer may merge across a boundary). Over opts.ctx:
 *                none → refuse, describing what `tail` would do; tail/proportional → plan cuts
 *                against the budget ctx − overhead, cut, lay out and count again; the budget
 *                shrinks by the excess until the exact total fits (a few rounds at most).
 */
#include "ingest/ing_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- Names and defaults ------------------------------------------------------------------ */

void ing_opts_init(ing_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_file_size = ING_DEFAULT_MAX_FILE_SIZE;
    o->max_url_size = ING_DEFAULT_MAX_URL_SIZE;
    o->connect_timeout_ms = ING_DEFAULT_CONNECT_TIMEOUT_MS;
    o->timeout_ms = ING_DEFAULT_TIMEOUT_MS;
    o->max_redirects = ING_DEFAULT_MAX_REDIRECTS;
    o->truncate = ING_TRUNCATE_NONE;
}

bool ing_truncate_parse(const char *s, ing_truncate *out)
{
    if (!strcmp(s, "none"))
        *out = ING_TRUNCATE_NONE;
    else if (!strcmp(s, "tail"))
        *out = ING_TRUNCATE_TAIL;
    else if (!strcmp(s, "proportional"))
        *out = ING_TRUNCATE_PROPORTIONAL;
    else
        return false;
    return true;
}

const char *ing_truncate_name(ing_truncate t)
{
    switch (t) {
    case ING_TRUNCATE_NONE: return "none";
    case ING_TRUNCATE_TAIL: return "tail";
    case ING_TRUNCATE_PROPORTIONAL: return "proportional";
    }
    return "?";
}

const char *ing_doc_status_name(ing_doc_status s)
{
    switch (s) {
    case ING_DOC_INCLUDED: return "included";
    case ING_DOC_TRUNCATED: return "truncated";
    case ING_DOC_DROPPED: return "dropped";
    case ING_DOC_SKIPPED: return "skipped";
    }
    return "?";
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- Records ----------------------------------------------------------------------------- */

loupe_status ing_doc_add(ing_ctx *c, const char *path, int source, ing_doc **out)
{
    if (c->n_docs == c->cap_docs) {
        size_t cap = c->cap_docs ? c->cap_docs * 2 : 64;
        ing_doc *d = realloc(c->docs, cap * sizeof *d);
        if (!d)
            return loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory at %s", path);
        c->docs = d;
        ing_docx *x = realloc(c->x, cap * sizeof *x);
        if (!x)
            return loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory at %s", path);
        c->x = x;
        c->cap_docs = cap;
    }
    ing_doc *d = &c->docs[c->n_docs];
    memset(d, 0, sizeof *d);
    memset(&c->x[c->n_docs], 0, sizeof c->x[0]);
    if (!(d->path = strdup(path)))
        return loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory at %s", path);
    d->source = source;
    d->tokens = d->tokens_kept = -1;
    c->n_docs++;
    *out = d;
    return LOUPE_OK;
}

__attribute__((format(printf, 3, 0))) static loupe_status set_reason(ing_ctx *c, ing_doc *d,
                                                                       const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    free(d->reason);
    if (!(d->reason = strdup(msg)))
        return loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory at %s", d->path);
    return LOUPE_OK;
}

static loupe_status reason(ing_ctx *c, ing_doc *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static loupe_status reason(ing_ctx *c, ing_doc *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    loupe_status rc = set_reason(c, d, fmt, ap);
    va_end(ap);
    return rc;
}

loupe_status ing_doc_skip(ing_ctx *c, ing_doc *d, const char *fmt, ...)
{
    d->status = ING_DOC_SKIPPED;
    free(d->text);
    d->text = NULL;
    d->text_bytes = 0;
    d->tokens = d->tokens_kept = -1;
    va_list ap;
    va_start(ap, fmt);
    loupe_status rc = set_reason(c, d, fmt, ap);
    va_end(ap);
    return rc;
}

loupe_status ing_progress_tick(ing_ctx *c, const char *current)
{
    c->prog.files_scanned++;
    if (!c->o->progress)
        return LOUPE_OK;
    c->prog.current = current;
    int stop = c->o->progress(c->o->progress_ctx, &c->prog);
    c->prog.current = NULL;
    if (stop)
        return loupe_fail(c->err, LOUPE_ERR_CANCELLED, "cancelled while reading %s", current);
    return LOUPE_OK;
}

static void docs_free(ing_doc *docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(docs[i].path);
        free(docs[i].reason);
        free(docs[i].text);
    }
    free(docs);
}

void ing_result_destroy(ing_result *r)
{
    if (!r)
        return;
    docs_free(r->docs, r->n_docs);
    free(r->text);
    free(r);
}

/* ---- Reading sources --------------------------------------------------------------------- */

/* "./a/b/" → "a/b", "." → "", "/" stays "/". Returns a malloc'd string. */
static char *display_path(const char *s)
{
    while (s[0] == '.' && s[1] == '/') {
        s += 2;
        while (*s == '/')
            s++;
    }
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        n--;
    if (n == 1 && s[0] == '.')
        n = 0;
    return strndup(s, n);
}

static loupe_status add_named(ing_ctx *c, const char *src, int idx)
{
    loupe_status rc = LOUPE_OK;
    ing_doc *d = NULL;
    loupe_err why = {0};
    char *disp = NULL;
    if (!strcmp(src, "-")) {
        if ((rc = ing_doc_add(c, "<stdin>", idx, &d)) || (rc = ing_progress_tick(c, "<stdin>")))
            return rc;
        if (ing_stdin_load(c->o, d, &why))
            return loupe_fail(c->err, why.status, "<stdin>: %s", why.msg);
        goto read_ok;
    }
    if (ing_is_url(src)) {
        if ((rc = ing_doc_add(c, src, idx, &d)) || (rc = ing_progress_tick(c, src)))
            return rc;
        if (ing_url_load(c->o, src, d, &why))
            return loupe_fail(c->err, why.status, "%s: %s", src, why.msg);
        goto read_ok;
    }
    struct stat st;
    if (stat(src, &st) != 0)
        return loupe_fail(c->err, errno == ENOENT ? LOUPE_ERR_NOT_FOUND : LOUPE_ERR_IO, "%s: %s",
                          src, errno == ENOENT ? "no such file or directory" : strerror(errno));
    if (!(disp = display_path(src)))
        return loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory");
    if (S_ISDIR(st.st_mode)) {
        c->src[idx].is_dir = true;
        c->src[idx].disp_root = disp;
        return ing_walk(c, src, disp, idx);
    }
    rc = ing_doc_add(c, disp, idx, &d);
    free(disp);
    if (rc || (rc = ing_progress_tick(c, src)))
        return rc;
    if (ing_file_load(c->o, src, d, &why))
        return loupe_fail(c->err, why.status, "%s: %s", src, why.msg);
read_ok:
    c->prog.docs++;
    c->prog.bytes += d->text_bytes;
    return LOUPE_OK;
}

static int cmp_doc_path(const void *a, const void *b, void *docs)
{
    const ing_doc *v = docs;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int k = strcmp(v[i].path, v[j].path);
    return k ? k : (i < j ? -1 : i > j);
}

static const ing_doc *sort_docs; /* qsort has no context argument in C11 */
static int cmp_doc_path_q(const void *a, const void *b)
{
    return cmp_doc_path(a, b, (void *)sort_docs);
}

/* Skips later records whose path was laid out already. Needs a stable order: ties by index. */
static loupe_status dedupe(ing_ctx *c)
{
    if (c->n_src < 2 || !c->n_docs)
        return LOUPE_OK;
    size_t *idx = malloc(c->n_docs * sizeof *idx);
    if (!idx)
        return loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < c->n_docs; i++)
        if (c->docs[i].status != ING_DOC_SKIPPED)
            idx[m++] = i;
    sort_docs = c->docs;
    qsort(idx, m, sizeof *idx, cmp_doc_path_q);
    loupe_status rc = LOUPE_OK;
    for (size_t k = 1; k < m && !rc; k++)
        if (!strcmp(c->docs[idx[k]].path, c->docs[idx[k - 1]].path))
            rc = ing_doc_skip(c, &c->docs[idx[k]], "%s", "listed already by an earlier source");
    free(idx);
    return rc;
}

/* ---- Counting ---------------------------------------------------------------------------- */

static int cmp_size_desc(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    uint64_t x = sort_docs[i].text_bytes, y = sort_docs[j].text_bytes;
    return x < y ? 1 : x > y ? -1 : (i > j) - (i < j);
}

static loupe_status count_docs(ing_ctx *c)
{
    const ing_opts *o = c->o;
    size_t *order = malloc((c->n_docs + 1) * sizeof *order);
    if (!order)
        return loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < c->n_docs; i++)
        if (c->docs[i].status != ING_DOC_SKIPPED)
            order[m++] = i;
    sort_docs = c->docs;
    qsort(order, m, sizeof *order, cmp_size_desc);
    long failed_at = -1;
    int cancelled = 0;
    c->prog.phase = ING_PHASE_COUNT;
    int nt = o->threads > 0 ? o->threads : 0;
#ifdef _OPENMP
    if (!nt)
        nt = omp_get_max_threads();
#endif
    (void)nt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (size_t k = 0; k < m; k++) {
        int stop;
#pragma omp atomic read
        stop = cancelled;
        if (stop)
            continue;
        ing_doc *d = &c->docs[order[k]];
        int64_t t = o->count(o->count_ctx, d->text ? d->text : "", d->text_bytes);
        d->tokens = d->tokens_kept = t;
#pragma omp critical(ing_progress)
        {
            if (t < 0) {
                if (failed_at < 0)
                    failed_at = (long)order[k];
                cancelled = 1;
            } else {
                c->prog.tokens += t;
                c->prog.docs_counted++;
                if (o->progress && o->progress(o->progress_ctx, &c->prog))
                    cancelled = 2;
            }
        }
    }
    free(order);
    if (failed_at >= 0)
        return loupe_fail(c->err, LOUPE_ERR_INTERNAL, "%s: the token counter failed",
                          c->docs[failed_at].path);
    if (cancelled)
        return loupe_fail(c->err, LOUPE_ERR_CANCELLED, "cancelled while counting tokens");
    return LOUPE_OK;
}

/* ---- Truncation -------------------------------------------------------------------------- */

static int64_t count_text(const ing_ctx *c, const char *t, size_t n)
{
    return c->o->count(c->o->count_ctx, t, n);
}

/* Moves n back to the start of a UTF-8 character. */
static size_t char_boundary(const char *t, size_t n)
{
    while (n > 0 && ((unsigned char)t[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* Bytes of the longest prefix of d's text with at most k tokens; -1 on counter failure. */
static int64_t prefix_bytes(const ing_ctx *c, const ing_doc *d, int64_t k)
{
    const ing_opts *o = c->o;
    size_t len = d->text_bytes;
    if (o->prefix) {
        int64_t p = o->prefix(o->count_ctx, d->text, len, k);
        if (p < 0)
            return -1;
        return (int64_t)char_boundary(d->text, (size_t)p < len ? (size_t)p : len);
    }
    size_t lo = 0, hi = len; /* count(lo) <= k < count(hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t t = count_text(c, d->text, mid);
        if (t < 0)
            return -1;
        if (t <= k)
            lo = mid;
        else
            hi = mid;
    }
    return (int64_t)char_boundary(d->text, lo);
}

static bool is_text_doc(const ing_doc *d)
{
    return d->status != ING_DOC_SKIPPED;
}

/* Sets every document's status and planned token count for the budget. `marker` is what a cut
 * costs on top of the kept tokens (the marker line, a closing page tag for PDFs). */
static void plan(ing_ctx *c, ing_truncate how, int64_t budget, int64_t marker)
{
    double frac = 0;
    if (how == ING_TRUNCATE_PROPORTIONAL) {
        /* One fraction for all; documents that would keep nothing are dropped and stop costing
         * a marker, which raises the fraction for the rest: iterate until stable. */
        for (size_t i = 0; i < c->n_docs; i++)
            c->x[i].kept_plan = is_text_doc(&c->docs[i]) ? 1 : 0; /* 1 = still in */
        for (int round = 0; round < 64; round++) {
            int64_t sum = 0, n_in = 0;
            for (size_t i = 0; i < c->n_docs; i++)
                if (c->x[i].kept_plan) {
                    sum += c->docs[i].tokens;
                    n_in++;
                }
            frac = sum > 0 ? (double)(budget - n_in * marker) / (double)sum : 0;
            bool changed = false;
            for (size_t i = 0; i < c->n_docs; i++)
                if (c->x[i].kept_plan && c->docs[i].tokens > 0 &&
                    (frac <= 0 || (int64_t)((double)c->docs[i].tokens * frac) <= 0)) {
                    c->x[i].kept_plan = 0;
                    changed = true;
                }
            if (!changed)
                break;
        }
    }
    int64_t acc = 0;
    bool full = false;
    for (size_t i = 0; i < c->n_docs; i++) {
        ing_doc *d = &c->docs[i];
        if (!is_text_doc(d))
            continue;
        int64_t t = d->tokens;
        int64_t keep;
        if (how == ING_TRUNCATE_PROPORTIONAL) {
            keep = !c->x[i].kept_plan ? 0 : frac >= 1 ? t : (int64_t)((double)t * frac);
        } else if (full) {
            keep = 0;
        } else if (acc + t <= budget) {
            keep = t;
            acc += t;
        } else {
            keep = budget - acc - marker;
            full = true;
        }
        if (keep >= t) {
            d->status = ING_DOC_INCLUDED;
            c->x[i].kept_plan = t;
        } else if (keep <= 0) {
            d->status = ING_DOC_DROPPED;
            c->x[i].kept_plan = 0;
        } else {
            d->status = ING_DOC_TRUNCATED;
            c->x[i].kept_plan = keep;
        }
    }
}

/* Makes the planned cuts: finds each cut's bytes and counts what is kept. */
static loupe_status apply_cuts(ing_ctx *c)
{
    long failed_at = -1;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < c->n_docs; i++) {
        ing_doc *d = &c->docs[i];
        if (d->status != ING_DOC_TRUNCATED) {
            if (d->status == ING_DOC_INCLUDED)
                d->tokens_kept = d->tokens;
            else if (d->status == ING_DOC_DROPPED)
                d->tokens_kept = 0;
            continue;
        }
        int64_t cut = prefix_bytes(c, d, c->x[i].kept_plan);
        int64_t kept = cut > 0 ? count_text(c, d->text, (size_t)cut) : 0;
        if (cut < 0 || kept < 0) {
#pragma omp critical(ing_cut_fail)
            failed_at = (long)i;
            continue;
        }
        c->x[i].cut = (size_t)cut;
        d->tokens_kept = kept;
        if (cut == 0) {
            d->status = ING_DOC_DROPPED;
            d->tokens_kept = 0;
        }
    }
    if (failed_at >= 0)
        return loupe_fail(c->err, LOUPE_ERR_INTERNAL, "%s: the token counter failed",
                          c->docs[failed_at].path);
    return LOUPE_OK;
}

static loupe_status layout_count(ing_ctx *c, ing_buf *out, int64_t *total)
{
    ing_buf_free(out);
    loupe_status rc = ing_layout_build(c, out, c->err);
    if (rc)
        return rc;
    *total = -1;
    if (c->o->count) {
        *total = count_text(c, out->p, out->n);
        if (*total < 0)
            return loupe_fail(c->err, LOUPE_ERR_INTERNAL, "the token counter failed on the "
                              "laid-out text (%zu bytes)", out->n);
    }
    return LOUPE_OK;
}

/* Describes the plan in each record (what was, or under `none` would be, cut or dropped). */
static loupe_status describe(ing_ctx *c, ing_truncate how, bool would)
{
    const char *policy = ing_truncate_name(how);
    loupe_status rc = LOUPE_OK;
    for (size_t i = 0; i < c->n_docs && !rc; i++) {
        ing_doc *d = &c->docs[i];
        if (d->status == ING_DOC_TRUNCATED)
            rc = reason(c, d, "%s to %s%lld of %lld tokens (--truncate %s)",
                        would ? "would be cut" : "cut", would ? "about " : "",
                        (long long)(would ? c->x[i].kept_plan : d->tokens_kept),
                        (long long)d->tokens, policy);
        else if (d->status == ING_DOC_DROPPED)
            rc = reason(c, d, "%s: its %lld tokens do not fit in --ctx %lld (--truncate %s)",
                        would ? "would be dropped" : "dropped", (long long)d->tokens,
                        (long long)c->o->ctx, policy);
    }
    return rc;
}

static loupe_status refuse(ing_ctx *c, int64_t total, int64_t budget, int64_t marker,
                           int64_t doc_sum)
{
    const ing_opts *o = c->o;
    plan(c, ING_TRUNCATE_TAIL, budget, marker);
    loupe_status rc = describe(c, ING_TRUNCATE_TAIL, true);
    if (rc)
        return rc;
    const char *cut = NULL;
    long long cut_keep = 0, cut_of = 0;
    size_t dropped = 0;
    for (size_t i = 0; i < c->n_docs; i++) {
        if (c->docs[i].status == ING_DOC_TRUNCATED) {
            cut = c->docs[i].path;
            cut_keep = c->x[i].kept_plan;
            cut_of = c->docs[i].tokens;
        } else if (c->docs[i].status == ING_DOC_DROPPED) {
            dropped++;
        }
    }
    char tail[400];
    if (cut)
        snprintf(tail, sizeof tail, "--truncate tail would cut %.200s to about %lld of %lld "
                 "tokens and drop %zu document%s after it", cut, cut_keep, cut_of, dropped,
                 dropped == 1 ? "" : "s");
    else
        snprintf(tail, sizeof tail, "--truncate tail would drop the last %zu document%s",
                 dropped, dropped == 1 ? "" : "s");
    double pct = doc_sum > 0 ? 100.0 * (double)budget / (double)doc_sum : 0;
    if (pct < 0)
        pct = 0;
    return loupe_fail(c->err, LOUPE_ERR_TOO_LONG,
                      "the sources take %lld tokens, %lld more than --ctx %lld; nothing was cut: "
                      "%s; --truncate proportional would keep about %.0f%% of each document; "
                      "or raise --ctx",
                      (long long)total, (long long)(total - o->ctx), (long long)o->ctx, tail,
                      pct);
}

static loupe_status fit(ing_ctx *c, ing_buf *out, int64_t *total)
{
    const ing_opts *o = c->o;
    loupe_status rc = layout_count(c, out, total);
    if (rc || !o->count || !o->ctx || *total <= o->ctx)
        return rc;
    int64_t doc_sum = 0;
    for (size_t i = 0; i < c->n_docs; i++)
        if (is_text_doc(&c->docs[i]))
            doc_sum += c->docs[i].tokens;
    int64_t overhead = *total - doc_sum;
    static const char sample[] = "[... truncated: 999999 of 999999 tokens kept ...]\n";
    static const char page_close[] = "</page>\n";
    int64_t marker = count_text(c, sample, sizeof sample - 1);
    int64_t page = count_text(c, page_close, sizeof page_close - 1);
    if (marker < 0 || page < 0)
        return loupe_fail(c->err, LOUPE_ERR_INTERNAL, "the token counter failed");
    bool any_pdf = false;
    for (size_t i = 0; i < c->n_docs; i++)
        any_pdf |= c->docs[i].format == ING_FMT_PDF && is_text_doc(&c->docs[i]);
    /* + a newline added after the cut and slack for merges at the cut; the budget loop below
     * corrects whatever this estimate misses. */
    marker += 2 + (any_pdf ? page : 0);
    int64_t budget = o->ctx - overhead;
    if (o->truncate == ING_TRUNCATE_NONE) {
        ing_buf_free(out);
        return refuse(c, *total, budget, marker, doc_sum);
    }
    /* Shrink the budget while the exact total is over; grow it back while a fitting plan leaves
     * room that dropped documents' headers freed. Keep the fullest plan that fits. */
    int64_t best_budget = INT64_MIN, best_total = -1;
    for (int round = 0; round < 10; round++) {
        plan(c, o->truncate, budget, marker);
        if ((rc = apply_cuts(c)) || (rc = layout_count(c, out, total)))
            return rc;
        if (*total <= o->ctx && *total > best_total) {
            best_total = *total;
            best_budget = budget;
        }
        int64_t room = o->ctx - *total;
        if (room >= 0 && room <= marker + 8)
            break; /* full enough */
        int64_t next = room < 0 ? budget + room - ((int64_t)16 << round) : budget + room / 2;
        if (next == budget)
            break;
        budget = next;
    }
    if (best_total < 0) {
        ing_buf_free(out);
        describe(c, o->truncate, true);
        return loupe_fail(c->err, LOUPE_ERR_TOO_LONG,
                          "could not fit the layout into --ctx %lld tokens (its headers alone "
                          "take about %lld)", (long long)o->ctx, (long long)overhead);
    }
    if (budget != best_budget || *total > o->ctx) {
        plan(c, o->truncate, best_budget, marker);
        if ((rc = apply_cuts(c)) || (rc = layout_count(c, out, total)))
            return rc;
    }
    bool any = false;
    for (size_t i = 0; i < c->n_docs; i++)
        any |= c->docs[i].status == ING_DOC_INCLUDED || c->docs[i].status == ING_DOC_TRUNCATED;
    if (!any && doc_sum > 0) {
        ing_buf_free(out);
        describe(c, o->truncate, true);
        return loupe_fail(c->err, LOUPE_ERR_TOO_LONG,
                          "--ctx %lld is too small: the layout's own headers take about %lld "
                          "tokens and no document fits", (long long)o->ctx, (long long)overhead);
    }
    return describe(c, o->truncate, false);
}

/* ---- The pipeline ------------------------------------------------------------------------ */

loupe_status ing_ingest(const char *const *sources, size_t n, const ing_opts *o, ing_result **out,
                        loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    ing_ctx c = {0};
    ing_buf text = {0};
    ing_result *r = NULL;
    *out = NULL;
    c.o = o;
    c.err = err;
    if (o->ctx < 0 || (o->ctx > 0 && !o->count)) {
        rc = loupe_fail(err, LOUPE_ERR_INVALID, "a context limit (%lld tokens) needs a token "
                        "counter", (long long)o->ctx);
        goto done;
    }
    if (!(r = calloc(1, sizeof *r)) || !(c.src = calloc(n + 1, sizeof *c.src))) {
        rc = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory");
        goto done;
    }
    c.n_src = n;
    double t0 = now_sec();
    c.prog.phase = ING_PHASE_READ;
    for (size_t i = 0; i < n && !rc; i++)
        rc = add_named(&c, sources[i], (int)i);
    if (rc || (rc = dedupe(&c)))
        goto done;
    double t1 = now_sec();
    if (o->count && (rc = count_docs(&c)))
        goto done;
    double t2 = now_sec();
    c.prog.phase = ING_PHASE_LAYOUT;
    if (o->progress && o->progress(o->progress_ctx, &c.prog)) {
        rc = loupe_fail(err, LOUPE_ERR_CANCELLED, "cancelled before laying out");
        goto done;
    }
    int64_t total = -1;
    rc = fit(&c, &text, &total);
    if (rc && rc != LOUPE_ERR_TOO_LONG)
        goto done;
    double t3 = now_sec();

    r->sec_read = t1 - t0;
    r->sec_count = t2 - t1;
    r->sec_layout = t3 - t2;
    r->ctx = o->ctx;
    r->total_tokens = rc ? -1 : total;
    r->doc_tokens = o->count ? 0 : -1;
    for (size_t i = 0; i < c.n_docs; i++) {
        ing_doc *d = &c.docs[i];
        switch (d->status) {
        case ING_DOC_INCLUDED: r->n_included++; break;
        case ING_DOC_TRUNCATED: r->n_truncated++; break;
        case ING_DOC_DROPPED: r->n_dropped++; break;
        case ING_DOC_SKIPPED: r->n_skipped++; break;
        }
        if (d->status == ING_DOC_INCLUDED)
            r->text_bytes += d->text_bytes;
        else if (d->status == ING_DOC_TRUNCATED)
            r->text_bytes += c.x[i].cut;
        if (o->count && d->status != ING_DOC_SKIPPED)
            r->doc_tokens += d->tokens;
    }
    if (!rc) {
        r->text = ing_buf_take(&text, &r->len);
        if (!r->text) {
            rc = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    r->docs = c.docs;
    r->n_docs = c.n_docs;
    c.docs = NULL;
    c.n_docs = 0;
    *out = r;
    r = NULL;
done:
    ing_result_destroy(r);
    docs_free(c.docs, c.n_docs);
    free(c.x);
    if (c.src)
        for (size_t i = 0; i < c.n_src; i++)
            free(c.src[i].disp_root);
    free(c.src);
    ing_buf_free(&text);
    return rc;
}
