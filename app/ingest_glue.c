/*
 * What `loupe layout` and `loupe ask` share about ingestion: the source options (--truncate,
 * --exclude, ...) and token counting through the model's own tokenizer.
 */
#include "app/app.h"

#include <stdlib.h>
#include <string.h>

/* Inputs this large are tokenized on all threads (rt_tokenize_parallel splits at safe points). */
#define PARALLEL_TOKENIZE_BYTES (1u << 20)

/* ---- Token counting --------------------------------------------------------------------- */

static loupe_status tokenize_any(const app_counter *c, const char *text, size_t len, rt_ids *ids,
                                 loupe_err *e)
{
    return len >= PARALLEL_TOKENIZE_BYTES
               ? rt_tokenize_parallel(c->tok, text, len, c->threads, ids, e)
               : rt_tokenize(c->tok, text, len, ids, e);
}

static int64_t count_tokens(void *ctx, const char *text, size_t len)
{
    const app_counter *c = ctx;
    rt_ids ids;
    rt_ids_init(&ids);
    loupe_err e = {0};
    int64_t n = tokenize_any(c, text, len, &ids, &e) ? -1 : (int64_t)ids.n;
    rt_ids_free(&ids);
    return n;
}

/* Bytes of the longest prefix of `text` that is at most max_tokens tokens (for truncation). */
static int64_t prefix_bytes(void *ctx, const char *text, size_t len, int64_t max_tokens)
{
    const app_counter *c = ctx;
    rt_ids ids;
    rt_ids_init(&ids);
    loupe_err e = {0};
    int64_t bytes = -1;
    if (!tokenize_any(c, text, len, &ids, &e)) {
        bytes = 0;
        for (size_t i = 0; i < ids.n && (int64_t)i < max_tokens; i++) {
            size_t n = 0;
            rt_token_bytes(c->tok, ids.ids[i], &n);
            bytes += (int64_t)n;
        }
    }
    rt_ids_free(&ids);
    return bytes;
}

void app_counter_attach(app_counter *c, const rt_tokenizer *tok, int threads, ing_opts *io)
{
    c->tok = tok;
    c->threads = threads;
    io->count = count_tokens;
    io->prefix = prefix_bytes;
    io->count_ctx = c;
}

/* ---- Source options --------------------------------------------------------------------- */

void app_sources_init(app_sources *s)
{
    memset(s, 0, sizeof *s);
    ing_opts_init(&s->io);
}

void app_sources_free(app_sources *s)
{
    free(s->paths);
    free(s->exclude);
    free(s->include);
    memset(s, 0, sizeof *s);
}

static int push(const char ***arr, size_t *n, const char *v)
{
    const char **p = realloc(*arr, (*n + 1) * sizeof *p);
    if (!p)
        return -1;
    p[(*n)++] = v;
    *arr = p;
    return 0;
}

int app_sources_parse(app_sources *s, const char *cmd, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *v = NULL;
    int r;
    if (!strcmp(a, "--no-ignore")) {
        s->io.no_ignore = true;
    } else if ((r = app_opt_value(cmd, "--truncate", argc, argv, i, &v))) {
        if (r > 1)
            return r;
        if (!ing_truncate_parse(v, &s->io.truncate))
            return app_usage(cmd, "--truncate must be none, tail or proportional, got '%s'", v);
    } else if ((r = app_opt_value(cmd, "--max-file-size", argc, argv, i, &v))) {
        if (r > 1 || (r = app_parse_size(cmd, "--max-file-size", v, &s->io.max_file_size)))
            return r;
    } else if ((r = app_opt_value(cmd, "--max-size", argc, argv, i, &v))) {
        if (r > 1 || (r = app_parse_size(cmd, "--max-size", v, &s->io.max_url_size)))
            return r;
    } else if ((r = app_opt_value(cmd, "--timeout", argc, argv, i, &v)) ||
               (r = app_opt_value(cmd, "--connect-timeout", argc, argv, i, &v))) {
        bool total = !strncmp(a, "--timeout", 9);
        const char *name = total ? "--timeout" : "--connect-timeout";
        float sec = 0;
        if (r > 1 || (r = app_parse_f32(cmd, name, v, &sec)))
            return r;
        if (sec <= 0 || sec > 86400)
            return app_usage(cmd, "%s must be between 0 and 86400 seconds, got '%s'", name, v);
        long ms = (long)(sec * 1000.0f + 0.5f);
        if (ms < 1)
            ms = 1;
        if (total)
            s->io.timeout_ms = ms;
        else
            s->io.connect_timeout_ms = ms;
    } else if ((r = app_opt_value(cmd, "--exclude", argc, argv, i, &v)) ||
               (r = app_opt_value(cmd, "--include", argc, argv, i, &v))) {
        if (r > 1)
            return r;
        bool excl = !strncmp(a, "--exclude", 9);
        if (push(excl ? &s->exclude : &s->include, excl ? &s->n_exclude : &s->n_include, v))
            return app_usage(cmd, "out of memory");
    } else {
        return 0;
    }
    return 1;
}

int app_sources_add(app_sources *s, const char *cmd, const char *path)
{
    if (push(&s->paths, &s->n_paths, path))
        return app_usage(cmd, "out of memory");
    return 0;
}

void app_sources_finish(app_sources *s)
{
    s->io.exclude = s->exclude;
    s->io.n_exclude = s->n_exclude;
    s->io.include = s->include;
    s->io.n_include = s->n_include;
}

const char *app_sources_help(void)
{
    return "  --truncate none|tail|proportional\n"
           "                             over the context: none (default) refuses and says what\n"
           "                             would be cut; tail cuts the last documents; proportional\n"
           "                             cuts each document by the same share\n"
           "  --max-file-size SIZE       skip larger files (default 10M)\n"
           "  --exclude GLOB             skip matching entries (gitignore syntax; repeatable)\n"
           "  --include GLOB             take only files matching one (repeatable)\n"
           "  --no-ignore                do not read .gitignore, .ignore, .git/info/exclude\n"
           "  --max-size SIZE            URL body limit (default 64M)\n"
           "  --timeout SECONDS          URL transfer timeout (default 60)\n"
           "  --connect-timeout SECONDS  URL connect timeout (default 10)\n";
}

/* ---- The model, for commands that talk to it --------------------------------------------- */

loupe_status app_chat_model_open(const app_opts *o, app_chat_model *cm, loupe_err *err)
{
    memset(cm, 0, sizeof *cm);
    const char *path = app_model_path(o);
    loupe_status st = rt_gguf_open(path, &cm->gguf, err);
    if (!st)
        st = rt_model_load(cm->gguf, &cm->model, err);
    if (!st)
        st = rt_tokenizer_load(cm->gguf, &cm->tok, err);
    if (!st)
        st = rt_chat_format_detect(cm->gguf, cm->tok, &cm->fmt, err);
    if (st)
        app_chat_model_close(cm);
    return st;
}

void app_chat_model_close(app_chat_model *cm)
{
    rt_tokenizer_destroy(cm->tok);
    rt_model_destroy(cm->model);
    rt_gguf_close(cm->gguf);
    memset(cm, 0, sizeof *cm);
}

loupe_status app_context_limit(const app_opts *o, const rt_hparams *hp, uint64_t *limit,
                               loupe_err *err)
{
    *limit = o->ctx ? (uint64_t)o->ctx : hp->n_ctx_train;
    if (hp->n_ctx_train && *limit > hp->n_ctx_train && !o->beyond_train)
        return loupe_fail(err, LOUPE_ERR_TOO_LONG, "--ctx %llu is longer than the model's context "
                          "of %u tokens", (unsigned long long)*limit, hp->n_ctx_train);
    return LOUPE_OK;
}
