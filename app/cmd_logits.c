/*
 * `loupe logits --model FILE --tokens "ID ID ..." [--all]`: runs the ids through the model and
 * prints the logits after the last token (every position with --all), one row per line, values
 * space-separated as %.9g so rows round-trip float32 exactly.
 *
 * With --attention retrieval|flat|ivf every token but the last is the context's prefill (full
 * attention, then the indexes are built) and the last goes through that decode path (rt_runner.h):
 * static set + the --topk host keys the index returns, merged. --stats prints what the retrieval
 * did on stderr.
 *
 * --backend cuda runs full attention on the GPU (rt_cuda.h, bf16 KV cache and prefill operands,
 * within --gpu-mem); --backend auto does so when a CUDA device is usable and the mode runs there.
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
               "                    [--attention full|retrieval|flat|ivf] [--topk N] [--sinks N]\n"
               "                    [--window N] [--ef N] [--nprobe N] [--stats]\n"
               "                    [--ctx N] [--threads N]\n"
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

int cmd_logits(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    const char *tokens = NULL;
    bool all = false, stats = false;
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
        if (!strcmp(argv[i], "--stats")) {
            stats = true;
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
    rt_runner *c = NULL;
    float *rows = NULL;
    if ((rc = parse_ids(tokens, &ids)) != 0)
        goto done;
    rc = APP_EXIT_FAIL;
    if (ids.n == 0) {
        rc = app_usage("logits", "--tokens holds no token ids");
        goto done;
    }
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
    rt_runner_params rp;
    app_runner_params(&o, &rp);
    rp.n_ctx = (uint32_t)ids.n;
    if (rt_runner_create(m, &rp, &c, &err)) {
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
    /* In a retrieval mode the last token is the one decoded through the retrieval path. */
    rt_attn_mode mode = rt_runner_attention(c);
    size_t n_pre = mode == RT_ATTN_FULL || ids.n == 1 ? ids.n : ids.n - 1;
    if (rt_runner_prefill(c, ids.ids, n_pre, rows, &err) ||
        (n_pre < ids.n && rt_runner_decode(c, ids.ids[ids.n - 1], &err))) {
        app_fail("logits", &err);
        goto done;
    }
    const float *last = rt_runner_logits(c, &err);
    if (!last) {
        app_fail("logits", &err);
        goto done;
    }
    if (rows && n_pre < ids.n)
        memcpy(rows + n_pre * n_vocab, last, n_vocab * sizeof *rows);
    if (rows)
        for (size_t t = 0; t < ids.n; t++)
            print_row(rows + t * n_vocab, n_vocab);
    else
        print_row(last, n_vocab);
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "writing the logits to stdout failed");
        app_fail("logits", &err);
        goto done;
    }
    if (stats) {
        rt_runner_stats st;
        rt_runner_stats_get(c, &st);
        fprintf(stderr,
                "loupe: logits: %s backend, %s attention: %u static + %u host tokens; "
                "%llu searches scanned %llu keys (%.2f%% of the host set per search), "
                "%llu host keys attended\n",
                rt_backend_name(rt_runner_backend(c)), rt_attn_mode_name(mode), st.n_static,
                st.n_host, (unsigned long long)st.searches, (unsigned long long)st.keys_scanned,
                st.searches && st.n_host ? 100.0 * (double)st.keys_scanned /
                                               ((double)st.searches * st.n_host)
                                         : 0.0,
                (unsigned long long)st.keys_attended);
    }
    rc = APP_EXIT_OK;
done:
    free(rows);
    rt_runner_destroy(c);
    rt_model_destroy(m);
    rt_gguf_close(g);
    rt_ids_free(&ids);
    return rc;
}
