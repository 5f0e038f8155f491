/*
 * `loupe bench ingest [--dir D] [--bytes N] [--reps N] [--csv] [--model FILE] [--threads N]`
 *
 * Ingests a source tree, lays it out and tokenizes it, reporting the time split: walk + read,
 * per-document token counts, layout (which includes counting the whole laid-out text once with
 * rt_tokenize_parallel, the count that bounds the context). Without --dir it first generates a
 * deterministic tree of C-like source text (--bytes, default 4.2 MB, spread over directories and
 * files of 2–20 KB) in a temporary directory, removed afterwards; generation is not timed. Each
 * of --reps runs (default 3) is timed; the fastest is reported (the file cache is warm after
 * the first, as it is for a user re-asking about the same repository).
 *
 * Tokens come from the model's tokenizer (--model, $LOUPE_MODEL, or the bundled model); when no
 * model can be loaded the bench says so and counts bytes/4 instead, labelled as an estimate.
 */
#include "app/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/ingest.h"
#include "runtime/rt_gguf.h"
#include "runtime/rt_tokenizer.h"

#define CMD "bench ingest"

typedef struct {
    rt_tokenizer *tok;
    int threads;
} bench_counter;

static int64_t count_tok(void *ctx, const char *text, size_t len)
{
    bench_counter *c = ctx;
    rt_ids ids;
    rt_ids_init(&ids);
    loupe_err e = {0};
    loupe_status st = len >= (1u << 20)
                          ? rt_tokenize_parallel(c->tok, text, len, c->threads, &ids, &e)
                          : rt_tokenize(c->tok, text, len, &ids, &e);
    int64_t n = st ? -1 : (int64_t)ids.n;
    rt_ids_free(&ids);
    return n;
}

static int64_t count_estimate(void *ctx, const char *text, size_t len)
{
    (void)ctx;
    (void)text;
    return (int64_t)((len + 3) / 4);
}

/* xorshift: deterministic trees, the same on every machine. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int generate(const char *root, uint64_t bytes, size_t *n_files)
{
    static const char *const words[] = {
        "static", "int", "return", "struct", "const", "char", "size_t", "if", "else", "for",
        "while", "buffer", "length", "count", "index", "node", "value", "result", "error",
        "config", "parse", "token", "layout", "document", "offset", "(", ")", "{", "}", ";",
        "=", "+", "->", "*", "0", "1", "NULL", "/* note */", "uint64_t", "printf(\"%d\\n\", x)"};
    uint64_t s = 0x9E3779B97F4A7C15ull, written = 0;
    char path[4096];
    char *buf = malloc(24 * 1024);
    if (!buf || mkdir(root, 0755) != 0) {
        free(buf);
        return -1;
    }
    *n_files = 0;
    for (int d = 0; written < bytes; d++) {
        snprintf(path, sizeof path, "%s/mod%02d", root, d);
        if (mkdir(path, 0755) != 0)
            break;
        for (int f = 0; f < 24 && written < bytes; f++) {
            size_t target = 2048 + next(&s) % (18 * 1024), n = 0;
            int indent = 0;
            while (n + 64 < target) {
                if (next(&s) % 7 == 0) {
                    buf[n++] = '\n';
                    indent = (int)(next(&s) % 3);
                    for (int i = 0; i < indent * 4; i++)
                        buf[n++] = ' ';
                }
                const char *w = words[next(&s) % (sizeof words / sizeof words[0])];
                size_t k = strlen(w);
                memcpy(buf + n, w, k);
                n += k;
                buf[n++] = ' ';
            }
            buf[n++] = '\n';
            snprintf(path, sizeof path, "%s/mod%02d/file%02d.c", root, d, f);
            FILE *fp = fopen(path, "wb");
            if (!fp || fwrite(buf, 1, n, fp) != n) {
                if (fp)
                    fclose(fp);
                free(buf);
                return -1;
            }
            fclose(fp);
            written += n;
            ++*n_files;
        }
    }
    free(buf);
    return 0;
}

int bench_ingest(int argc, char **argv)
{
    int rc = APP_EXIT_OK;
    app_opts opts;
    app_opts_init(&opts);
    const char *dir = NULL;
    bool csv = false;
    uint64_t bytes = 4200000;
    int64_t reps = 3;
    char gen_dir[4096] = "";
    rt_gguf *g = NULL;
    bench_counter bc = {0};
    loupe_err err = {0};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: loupe bench ingest [--dir D] [--bytes N] [--reps N] [--csv] "
                   "[--model FILE] [--threads N]\n");
            return APP_EXIT_OK;
        }
        if ((r = app_opts_parse(&opts, CMD, argc, argv, &i))) {
            if (r > 1)
                return r;
        } else if (!strcmp(argv[i], "--csv")) {
            csv = true;
        } else if ((r = app_opt_value(CMD, "--dir", argc, argv, &i, &v))) {
            if (r > 1)
                return r;
            dir = v;
        } else if ((r = app_opt_value(CMD, "--bytes", argc, argv, &i, &v))) {
            if (r > 1 || (r = app_parse_size(CMD, "--bytes", v, &bytes)))
                return r;
        } else if ((r = app_opt_value(CMD, "--reps", argc, argv, &i, &v))) {
            if (r > 1 || (r = app_parse_i64(CMD, "--reps", v, 1, 100, &reps)))
                return r;
        } else {
            return app_usage(CMD, "unknown argument '%s'", argv[i]);
        }
    }
    if (!dir) {
        const char *t = getenv("TMPDIR");
        snprintf(gen_dir, sizeof gen_dir, "%s/loupe-bench-ingest.%d", t && *t ? t : "/tmp",
                 (int)getpid());
        size_t n_files = 0;
        if (generate(gen_dir, bytes, &n_files) != 0) {
            fprintf(stderr, "loupe: bench ingest: cannot generate the tree in %s\n", gen_dir);
            rc = APP_EXIT_FAIL;
            goto done;
        }
        dir = gen_dir;
    }
    const char *model = app_model_path(&opts);
    ing_opts io;
    ing_opts_init(&io);
    io.threads = opts.threads;
    const char *tok_name = model;
    if (rt_gguf_open(model, &g, &err) || rt_tokenizer_load(g, &bc.tok, &err)) {
        fprintf(stderr, "loupe: bench ingest: note: %s; counting bytes/4 instead\n",
                loupe_err_message(&err));
        io.count = count_estimate;
        tok_name = "estimate (bytes/4)";
    } else {
        bc.threads = opts.threads;
        io.count = count_tok;
        io.count_ctx = &bc;
    }
    double best = 1e30, b_read = 0, b_count = 0, b_layout = 0;
    size_t docs = 0;
    uint64_t text_bytes = 0;
    int64_t tokens = 0;
    for (int64_t r = 0; r < reps; r++) {
        ing_result *res = NULL;
        const char *src[] = {dir};
        if (ing_ingest(src, 1, &io, &res, &err)) {
            rc = app_fail(CMD, &err);
            goto done;
        }
        double total = res->sec_read + res->sec_count + res->sec_layout;
        if (total < best) {
            best = total;
            b_read = res->sec_read;
            b_count = res->sec_count;
            b_layout = res->sec_layout;
        }
        docs = res->n_included;
        text_bytes = res->len;
        tokens = res->total_tokens;
        ing_result_destroy(res);
    }
    if (csv) {
        printf("files,bytes,tokens,read_s,count_s,layout_s,total_s,tokens_per_s,tokenizer\n");
        printf("%zu,%llu,%lld,%.4f,%.4f,%.4f,%.4f,%.0f,%s\n", docs,
               (unsigned long long)text_bytes, (long long)tokens, b_read, b_count, b_layout,
               best, (double)tokens / best, tok_name);
    } else {
        printf("ingest benchmark: %s (%zu files, %.2f MB laid out, %lld tokens)\n", dir, docs,
               (double)text_bytes / 1e6, (long long)tokens);
        printf("tokenizer: %s; best of %lld runs\n", tok_name, (long long)reps);
        printf("  %-34s %8.3f s\n", "walk + read + decode", b_read);
        printf("  %-34s %8.3f s\n", "token counts per document", b_count);
        printf("  %-34s %8.3f s\n", "layout + total count (parallel)", b_layout);
        printf("  %-34s %8.3f s  (%.2f M tokens/s)\n", "total", best,
               (double)tokens / best / 1e6);
    }
done:
    rt_tokenizer_destroy(bc.tok);
    rt_gguf_close(g);
    if (gen_dir[0]) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", gen_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "loupe: bench ingest: could not remove %s\n", gen_dir);
    }
    return rc;
}
