/*
 * `loupe layout [OPTIONS] SOURCE...` — prints the sources laid out exactly as they would enter the
 * context (docs/LAYOUT.md), or with --manifest one line per document:
 *
 *     STATUS <TAB> BYTES <TAB> TOKENS <TAB> PATH [<TAB> REASON]
 *
 * STATUS is included|truncated|dropped|skipped (would-truncate|would-drop when --truncate none
 * refuses), TOKENS "-" when not counted; a last line starting with "#" sums up.
 *
 * Token counts use the model's own tokenizer (--model, $LOUPE_MODEL or the bundled model).
 * Without a loadable model, layout fails and says so; --no-count lays out without counting (and
 * then --ctx is refused, having nothing to measure with). Without --ctx no limit is enforced: the
 * command previews; `loupe ask` passes its context size.
 *
 * A progress line goes to stderr only when stderr is a terminal and the work takes over a second,
 * so pipes and tests see clean output.
 */
#include "app/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


#define CMD "layout"

/* ---- Progress on a terminal --------------------------------------------------------------- */

typedef struct {
    double start, last;
    bool shown;
} progress_line;

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int on_progress(void *ctx, const ing_progress *p)
{
    progress_line *pl = ctx;
    double t = now_sec();
    if (t - pl->start < 1.0 || t - pl->last < 0.1)
        return 0;
    pl->last = t;
    pl->shown = true;
    static const char *const phase[] = {"reading", "counting", "laying out"};
    fprintf(stderr, "\r\033[Kloupe: layout: %s: %llu files, %llu docs, %.1f MB",
            phase[p->phase], (unsigned long long)p->files_scanned, (unsigned long long)p->docs,
            (double)p->bytes / 1e6);
    if (p->phase == ING_PHASE_COUNT)
        fprintf(stderr, ", %lld tokens", (long long)p->tokens);
    if (p->current)
        fprintf(stderr, " %.60s", p->current);
    fflush(stderr);
    return 0;
}

/* ---- Output ------------------------------------------------------------------------------ */

static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02X", c);
        else
            fputc(c, f);
    }
}

static void print_manifest(FILE *f, const ing_result *r, bool refused)
{
    for (size_t i = 0; i < r->n_docs; i++) {
        const ing_doc *d = &r->docs[i];
        const char *st = ing_doc_status_name(d->status);
        if (refused && d->status == ING_DOC_TRUNCATED)
            st = "would-truncate";
        else if (refused && d->status == ING_DOC_DROPPED)
            st = "would-drop";
        fprintf(f, "%s\t%llu\t", st, (unsigned long long)d->bytes);
        if (d->tokens >= 0)
            fprintf(f, "%lld", (long long)d->tokens);
        else
            fputc('-', f);
        fputc('\t', f);
        put_escaped(f, d->path);
        if (d->reason) {
            fputc('\t', f);
            put_escaped(f, d->reason);
        }
        fputc('\n', f);
    }
    fprintf(f, "# %zu entries: %zu included, %zu truncated, %zu dropped, %zu skipped; "
               "%llu bytes of text",
            r->n_docs, r->n_included, r->n_truncated, r->n_dropped, r->n_skipped,
            (unsigned long long)r->text_bytes);
    if (r->total_tokens >= 0)
        fprintf(f, "; %lld tokens laid out", (long long)r->total_tokens);
    if (r->ctx > 0)
        fprintf(f, " (--ctx %lld)", (long long)r->ctx);
    fputc('\n', f);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loupe layout [OPTIONS] SOURCE...\n"
            "Prints the sources (files, directories, http(s) URLs, PDFs, - for stdin) laid out\n"
            "exactly as they would enter the context (docs/LAYOUT.md).\n\n"
            "  --manifest                 one line per document instead: STATUS BYTES TOKENS PATH\n"
            "                             [REASON], tab-separated, then a # summary line\n"
            "  --no-count                 no model, no token counts (and no --ctx)\n"
            "  --ctx N                    token budget; over it see --truncate (default: no limit)\n"
            "%s"
            "  --model FILE, --threads N  the tokenizer's model, counting threads\n",
            app_sources_help());
}

/* ---- The command ------------------------------------------------------------------------- */

int cmd_layout(int argc, char **argv)
{
    int rc = APP_EXIT_OK;
    app_opts opts;
    app_opts_init(&opts);
    app_sources src;
    app_sources_init(&src);
    bool manifest = false, no_count = false;
    rt_gguf *g = NULL;
    rt_tokenizer *tok = NULL;
    app_counter cnt;
    ing_result *res = NULL;
    loupe_err err = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            goto done;
        }
        if (!strcmp(a, "--")) {
            while (++i < argc)
                if ((rc = app_sources_add(&src, CMD, argv[i])))
                    goto done;
            break;
        }
        if ((r = app_opts_parse(&opts, CMD, argc, argv, &i)) ||
            (r = app_sources_parse(&src, CMD, argc, argv, &i))) {
            if (r > 1) {
                rc = r;
                goto done;
            }
        } else if (!strcmp(a, "--manifest")) {
            manifest = true;
        } else if (!strcmp(a, "--no-count")) {
            no_count = true;
        } else if (a[0] == '-' && a[1]) {
            rc = app_usage(CMD, "unknown option '%s'", a);
            goto done;
        } else if ((rc = app_sources_add(&src, CMD, a))) {
            goto done;
        }
    }
    if (!src.n_paths) {
        rc = app_usage(CMD, "no sources given (files, directories, URLs, or - for stdin)");
        goto done;
    }
    if (no_count && opts.ctx) {
        rc = app_usage(CMD, "--ctx needs token counts; drop --no-count");
        goto done;
    }
    app_sources_finish(&src);
    ing_opts *io = &src.io;
    io->ctx = opts.ctx;
    io->threads = opts.threads;
    if (!no_count) {
        const char *model = app_model_path(&opts);
        if (rt_gguf_open(model, &g, &err) || rt_tokenizer_load(g, &tok, &err)) {
            loupe_err_prefix(&err, "token counts need the model's tokenizer: ");
            fprintf(stderr, "loupe: layout: %s (pass --model FILE, or --no-count to lay out "
                            "without token counts)\n", loupe_err_message(&err));
            rc = APP_EXIT_FAIL;
            goto done;
        }
        app_counter_attach(&cnt, tok, opts.threads, io);
    }
    progress_line pl = {now_sec(), 0, false};
    if (isatty(STDERR_FILENO)) {
        io->progress = on_progress;
        io->progress_ctx = &pl;
    }
    loupe_status st = ing_ingest(src.paths, src.n_paths, io, &res, &err);
    if (pl.shown)
        fprintf(stderr, "\r\033[K");
    if (st == LOUPE_ERR_TOO_LONG && res) {
        if (manifest)
            print_manifest(stdout, res, true);
        rc = app_fail(CMD, &err);
        for (size_t i = 0; i < res->n_docs && !manifest; i++)
            if ((res->docs[i].status == ING_DOC_TRUNCATED ||
                 res->docs[i].status == ING_DOC_DROPPED) && res->docs[i].reason)
                fprintf(stderr, "loupe: layout:   %s: %s\n", res->docs[i].path,
                        res->docs[i].reason);
        goto done;
    }
    if (st) {
        rc = app_fail(CMD, &err);
        goto done;
    }
    if (manifest)
        print_manifest(stdout, res, false);
    else
        fwrite(res->text, 1, res->len, stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "loupe: layout: cannot write the output\n");
        rc = APP_EXIT_FAIL;
    }
done:
    ing_result_destroy(res);
    rt_tokenizer_destroy(tok);
    rt_gguf_close(g);
    app_sources_free(&src);
    return rc;
}
