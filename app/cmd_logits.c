/*
 * `loupe logits --model FILE --tokens "ID ID ..." [--all]`: runs the ids through the model and
 * prints the logits after the last token (every position with --all), one row per line, values
 * space-separated as %.9g so rows round-trip float32 exactly.
 *
 * With --attention flat every token but the last is prefilled and the last goes through the
 * sparse decode path (static set + exact top-k); retrieval and ivf arrive with their issue.
 *
 * --backend cuda runs full attention on the GPU (rt_cuda.h, bf16 KV cache and prefill operands,
 * within --gpu-mem); --backend auto does so when a CUDA device is usable and the attention is
 * full, and otherwise takes the CPU path, which is unchanged.
 */
#include "app/app.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: loupe logits [--model FILE] --tokens \"ID ID ...\" [--all]\n"
               "                    [--attention full|flat] [--ctx N] [--threads N]\n"
               "                    [--backend auto|cpu|cuda] [--gpu-mem SIZE]\n"
               "Prints the logits after the last token (every position with --all), one row\n"
               "per line, space-separated.\n");
}

/* Parses space-separated ids into `ids`; usage error on anything else. */
static int parse_ids(const char *s, rt_ids *ids)
{
    loupe_err err = {0};
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == ',')
            s++;
        if (!*s)
            break;
        char *end = NULL;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX ||
            (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != ','))
            return app_usage("logits", "--tokens expects space-separated token ids, got '%.40s'",
                             s);
        if (rt_ids_push(ids, (int32_t)v, &err))
            return app_fail("logits", &err);
        s = end;
    }
    return 0;
}

static void print_row(const float *row, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        printf(i ? " %.9g" : "%.9g", (double)row[i]);
    putchar('\n');
}

/* The CUDA path: every id prefilled on the GPU, logits printed as the CPU path prints them. */
static int logits_cuda(const app_opts *o, const rt_model *m, const rt_ids *ids, bool all)
{
    loupe_err err = {0};
    rt_cuda_engine *e = NULL;
    float *rows = NULL;
    int rc = APP_EXIT_FAIL;
    const uint32_t n_vocab = rt_model_hparams(m)->n_vocab;
    rt_cuda_params p;
    rt_cuda_params_init(&p);
    p.n_ctx = (uint32_t)ids->n;
    p.gpu_mem = o->gpu_mem;
    if (all && !(rows = malloc(ids->n * (size_t)n_vocab * sizeof *rows))) {
        loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory for %zu rows of logits", ids->n);
        goto done;
    }
    if (rt_cuda_engine_create(m, &p, &e, &err) || rt_cuda_prefill(e, ids->ids, ids->n, rows, &err))
        goto done;
    const float *last = rt_cuda_logits(e, &err);
    if (!last)
        goto done;
    if (rows)
        for (size_t t = 0; t < ids->n; t++)
            print_row(rows + t * n_vocab, n_vocab);
    else
        print_row(last, n_vocab);
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "writing the logits to stdout failed");
        goto done;
    }
    rc = APP_EXIT_OK;
done:
    if (rc != APP_EXIT_OK)
        app_fail("logits", &err);
    rt_cuda_engine_destroy(e);
    free(rows);
    return rc;
}

int cmd_logits(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    const char *tokens = NULL;
    bool all = false;
    for (int i = 1; i < argc; i++) {
        int r = app_opts_parse(&o, "logits", argc, argv, &i);
        if (r > 1)
            return r;
        if (r == 1)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return APP_EXIT_OK;
        }
        if (!strcmp(argv[i], "--all")) {
            all = true;
            continue;
        }
        if ((r = app_opt_value("logits", "--tokens", argc, argv, &i, &tokens)) > 1)
            return r;
        if (r == 0)
            return app_usage("logits", "unknown option '%s'", argv[i]);
    }
    if (!tokens)
        return app_usage("logits", "--tokens is required");

    int rc = APP_EXIT_FAIL;
    loupe_err err = {0};
    rt_ids ids;
    rt_ids_init(&ids);
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    rt_ctx *c = NULL;
    float *rows = NULL;
    if ((rc = parse_ids(tokens, &ids)) != 0)
        goto done;
    rc = APP_EXIT_FAIL;
    if (ids.n == 0) {
        rc = app_usage("logits", "--tokens holds no token ids");
        goto done;
    }
    if (o.attention == APP_ATTN_RETRIEVAL || o.attention == APP_ATTN_IVF) {
        loupe_fail(&err, LOUPE_ERR_UNSUPPORTED, "--attention %s is not yet supported (use full "
                   "or flat)", o.attention == APP_ATTN_IVF ? "ivf" : "retrieval");
        app_fail("logits", &err);
        goto done;
    }
    if (o.backend == APP_BACKEND_CUDA && o.attention == APP_ATTN_FLAT) {
        loupe_fail(&err, LOUPE_ERR_UNSUPPORTED,
                   "--attention flat runs on the CPU only for now; use --backend cpu");
        app_fail("logits", &err);
        goto done;
    }
    const bool cuda = o.backend == APP_BACKEND_CUDA ||
                      (o.backend == APP_BACKEND_AUTO && o.attention != APP_ATTN_FLAT &&
                       rt_cuda_available());
    const char *path = app_model_path(&o);
    if (rt_gguf_open(path, &g, &err) || rt_model_load(g, &m, &err)) {
        app_fail("logits", &err);
        goto done;
    }
    const rt_hparams *hp = rt_model_hparams(m);
    uint64_t limit = o.ctx ? (uint64_t)o.ctx : hp->n_ctx_train;
    if (hp->n_ctx_train && limit > hp->n_ctx_train)
        limit = hp->n_ctx_train;
    if (ids.n > limit) {
        loupe_fail(&err, LOUPE_ERR_TOO_LONG,
                   "%zu tokens are longer than the context allows (%llu tokens)", ids.n,
                   (unsigned long long)limit);
        app_fail("logits", &err);
        goto done;
    }
    if (cuda) {
        rc = logits_cuda(&o, m, &ids, all);
        goto done;
    }
    rt_ctx_params cp;
    rt_ctx_params_init(&cp);
    cp.n_ctx = (uint32_t)ids.n;
    cp.n_threads = o.threads;
    if (rt_ctx_create(m, &cp, &c, &err)) {
        app_fail("logits", &err);
        goto done;
    }
    uint32_t n_vocab = hp->n_vocab;
    if (all) {
        rows = malloc(ids.n * (size_t)n_vocab * sizeof *rows);
        if (!rows) {
            loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory for %zu rows of logits", ids.n);
            app_fail("logits", &err);
            goto done;
        }
    }
    bool sparse = o.attention == APP_ATTN_FLAT;
    size_t n_pre = sparse ? ids.n - 1 : ids.n;
    if (n_pre > 0 && rt_ctx_prefill(c, ids.ids, n_pre, rows, &err)) {
        app_fail("logits", &err);
        goto done;
    }
    if (sparse) {
        rt_sparse_params sp = {.enabled = true,
                               .topk = (uint32_t)o.topk,
                               .sinks = (uint32_t)o.sinks,
                               .window = (uint32_t)o.window};
        if (rt_ctx_decode_sparse(c, ids.ids[ids.n - 1], &sp, &err)) {
            app_fail("logits", &err);
            goto done;
        }
        if (rows)
            memcpy(rows + n_pre * n_vocab, rt_ctx_logits(c), n_vocab * sizeof *rows);
    }
    if (rows)
        for (size_t t = 0; t < ids.n; t++)
            print_row(rows + t * n_vocab, n_vocab);
    else
        print_row(rt_ctx_logits(c), n_vocab);
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "writing the logits to stdout failed");
        app_fail("logits", &err);
        goto done;
    }
    rc = APP_EXIT_OK;
done:
    free(rows);
    rt_ctx_destroy(c);
    rt_model_destroy(m);
    rt_gguf_close(g);
    rt_ids_free(&ids);
    return rc;
}
