/*
 * `loupe dump-qk`: one layer's post-RoPE query and key vectors over a context, as big-ann-benchmarks
 * .fbin files (u32 n, u32 d, f32 row-major) for the index benchmarks (`loupe bench anns`).
 *
 * The context is either sources laid out exactly as `loupe ask` lays them out (plus --question),
 * or a generated needle-in-a-haystack prompt (niah_cases.c, the bundled model's training format).
 * One prefill runs with query capture on (rt_ctx_set_capture); keys come from the KV cache. With
 * --backend cuda (or auto on a machine with a GPU) the prefill runs on the CUDA engine
 * (rt_cuda_set_q_capture, rt_cuda_kv_read): bf16 KV and activations unless LOUPE_CUDA_F32=1, and
 * minutes faster at 128K.
 *
 * Files in --out-dir, <l> the layer, <g> a KV head, <h> a query head (h reads KV head h / group):
 *   L<l>.kvh<g>.keys.fbin     (n_keys, head_dim)  positions 0..n_keys-1
 *   L<l>.qh<h>.queries.fbin   (n_q, head_dim)     the --query-positions rows among those
 *   L<l>.queries.pos.ibin     (n_q, 1)            their positions
 *   L<l>.qh<h>.decode.fbin    (N, head_dim)       with --decode N: the last N positions, which
 *                                                 are then not among the keys (decode steps over
 *                                                 the prefilled cache)
 *   L<l>.tokens.ibin          (n, 1)              the context's token ids, every position
 *   L<l>.manifest.txt         what was run and how the files relate
 */
#include "app/app.h"
#include "app/niah.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loupe dump-qk [OPTIONS] [SOURCE... [--question Q] | --synthetic-haystack]\n"
            "Writes one layer's post-RoPE keys (per KV head) and queries (per query head) as .fbin.\n"
            "  --model FILE            (default $LOUPE_MODEL, else the bundled model)\n"
            "  --layer L               layer (default: the middle one, n_layer / 2)\n"
            "  --ctx N                 context tokens (synthetic: its length, default 4096;\n"
            "                          sources: the budget, default the model's context)\n"
            "  --beyond-train          allow --ctx past the model's training context (the\n"
            "                          vectors exist; the model's answers there are no good)\n"
            "  --out-dir D             (qk)\n"
            "  --synthetic-haystack    a generated passkey haystack (default without sources)\n"
            "  --task T --depth X      its task (passkey) and needle depth (0.5); --seed N\n"
            "  --question Q            the question after the sources (\"What is this about?\")\n"
            "  --query-positions R     all | last:N | sample:N (uniform, sorted) (all)\n"
            "  --decode N              the last N positions become L<l>.qh<h>.decode.fbin and are\n"
            "                          left out of keys and queries (0)\n"
            "  --threads N\n"
            "recipe: loupe dump-qk --ctx 16384 --decode 256 --query-positions sample:4096 --out-dir qk\n"
            "        loupe bench anns --keys qk/L<l>.kvh0.keys.fbin \\\n"
            "            --build-queries qk/L<l>.qh0.queries.fbin --queries qk/L<l>.qh0.decode.fbin\n"
            "%s",
            app_sources_help());
}

typedef enum { QP_ALL, QP_LAST, QP_SAMPLE } qp_rule;

static int parse_qp(const char *v, qp_rule *rule, int64_t *n)
{
    const char *cmd = "dump-qk";
    if (!strcmp(v, "all")) {
        *rule = QP_ALL;
        return 0;
    }
    if (!strncmp(v, "last:", 5)) {
        *rule = QP_LAST;
        return app_parse_i64(cmd, "--query-positions last:N", v + 5, 1, INT32_MAX, n);
    }
    if (!strncmp(v, "sample:", 7)) {
        *rule = QP_SAMPLE;
        return app_parse_i64(cmd, "--query-positions sample:N", v + 7, 1, INT32_MAX, n);
    }
    return app_usage(cmd, "--query-positions must be all, last:N or sample:N, got '%s'", v);
}

/* ==== The context ========================================================================= */

/* Sources laid out as `loupe ask` does, within `limit` tokens with the question. */
static loupe_status source_ids(app_sources *src, const rt_tokenizer *tok, rt_chat_format fmt,
                               const char *question, uint64_t limit, int threads, rt_ids *ids,
                               char **desc, loupe_err *err)
{
    rt_chat_msg q = {RT_ROLE_USER, question, strlen(question)};
    loupe_status st = rt_chat_render(tok, fmt, &q, 1, true, ids, err);
    if (st)
        return st;
    size_t overhead = ids->n + 2;
    ids->n = 0;
    if (overhead >= limit)
        return loupe_fail(err, LOUPE_ERR_TOO_LONG, "the question leaves no room for the sources in "
                          "%llu tokens", (unsigned long long)limit);
    app_counter cnt;
    src->io.ctx = (int64_t)(limit - overhead);
    src->io.threads = threads;
    app_counter_attach(&cnt, tok, threads, &src->io);
    ing_result *r = NULL;
    st = ing_ingest(src->paths, src->n_paths, &src->io, &r, err);
    if (st == LOUPE_ERR_TOO_LONG)
        loupe_err_prefix(err, "the sources do not fit in --ctx %llu (try --truncate tail): ",
                         (unsigned long long)limit);
    if (st) {
        ing_result_destroy(r);
        return st;
    }
    size_t qlen = strlen(question);
    char *user = malloc(r->len + 1 + qlen + 1);
    *desc = malloc(256);
    if (!user || !*desc) {
        free(user);
        ing_result_destroy(r);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory building the prompt");
    }
    memcpy(user, r->text, r->len);
    user[r->len] = '\n';
    memcpy(user + r->len + 1, question, qlen + 1);
    snprintf(*desc, 256, "%zu documents laid out as `loupe ask` does (%zu truncated), then the "
             "question \"%.80s\"", r->n_included + r->n_truncated, r->n_truncated, question);
    rt_chat_msg msg = {RT_ROLE_USER, user, r->len + 1 + qlen};
    st = rt_chat_render(tok, fmt, &msg, 1, true, ids, err);
    free(user);
    ing_result_destroy(r);
    return st;
}

/* ==== Output ============================================================================== */

static loupe_status write_manifest(const char *path, const char *text, loupe_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return loupe_fail(err, LOUPE_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok ? LOUPE_OK : loupe_fail(err, LOUPE_ERR_IO, "%s: write failed", path);
}

static loupe_status mkdir_p(const char *dir, loupe_err *err)
{
    struct stat sb;
    if (stat(dir, &sb) == 0)
        return S_ISDIR(sb.st_mode) ? LOUPE_OK
                                   : loupe_fail(err, LOUPE_ERR_IO, "%s: not a directory", dir);
    if (mkdir(dir, 0777) != 0)
        return loupe_fail(err, LOUPE_ERR_IO, "%s: cannot create directory: %s", dir,
                          strerror(errno));
    return LOUPE_OK;
}

/* The CUDA engine's capture: one layer's rows into the (n, n_head, hd) array. */
typedef struct {
    float *q;
    uint32_t layer;
    size_t row;
} cuda_cap;

static void on_cuda_q(void *user, uint32_t layer, uint32_t pos0, uint32_t stride, size_t n,
                      const float *q)
{
    cuda_cap *cc = user;
    if (layer != cc->layer)
        return;
    for (size_t i = 0; i < n; i++)
        memcpy(cc->q + (pos0 + i * stride) * cc->row, q + i * cc->row, cc->row * sizeof *q);
}

static bool on_progress(void *user, size_t done, size_t total)
{
    double *t0 = user;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double s = (double)t.tv_sec + 1e-9 * (double)t.tv_nsec - *t0;
    fprintf(stderr, "\rloupe: dump-qk: prefill %zu/%zu tokens, %.0f tokens/s", done, total,
            s > 0 ? (double)done / s : 0.0);
    if (done == total)
        fputc('\n', stderr);
    return true;
}

/* ==== The command ========================================================================= */

int cmd_dump_qk(int argc, char **argv)
{
    const char *cmd = "dump-qk";
    app_opts o;
    app_opts_init(&o);
    app_sources src;
    app_sources_init(&src);
    const char *out_dir = "qk", *question = "What is this about?", *task_s = "passkey";
    int64_t layer = -1, decode = 0, qp_n = 0;
    float depth = 0.5f;
    qp_rule rule = QP_ALL;
    bool synthetic = false;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r = app_opts_parse(&o, cmd, argc, argv, &i);
        if (r == 0 && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) {
            usage(stdout);
            app_sources_free(&src);
            return APP_EXIT_OK;
        }
        if (r == 0 && !strcmp(argv[i], "--synthetic-haystack")) {
            synthetic = true;
            continue;
        }
        if (r == 0 && !strcmp(argv[i], "--beyond-train")) {
            o.beyond_train = true;
            continue;
        }
        if (r == 0)
            r = app_sources_parse(&src, cmd, argc, argv, &i);
        if (r == 0 && (r = app_opt_value(cmd, "--layer", argc, argv, &i, &v)) == 1)
            r = app_parse_i64(cmd, "--layer", v, 0, 65535, &layer) ? APP_EXIT_USAGE : 1;
        if (r == 0 && (r = app_opt_value(cmd, "--decode", argc, argv, &i, &v)) == 1)
            r = app_parse_i64(cmd, "--decode", v, 0, INT32_MAX, &decode) ? APP_EXIT_USAGE : 1;
        if (r == 0 && (r = app_opt_value(cmd, "--depth", argc, argv, &i, &v)) == 1)
            r = app_parse_f32(cmd, "--depth", v, &depth) ? APP_EXIT_USAGE : 1;
        if (r == 0 && (r = app_opt_value(cmd, "--query-positions", argc, argv, &i, &v)) == 1)
            r = parse_qp(v, &rule, &qp_n) ? APP_EXIT_USAGE : 1;
        if (r == 0)
            r = app_opt_value(cmd, "--out-dir", argc, argv, &i, &out_dir);
        if (r == 0)
            r = app_opt_value(cmd, "--question", argc, argv, &i, &question);
        if (r == 0)
            r = app_opt_value(cmd, "--task", argc, argv, &i, &task_s);
        if (r == 0 && argv[i][0] == '-' && argv[i][1] != '\0')
            r = app_usage(cmd, "unknown option '%s'", argv[i]);
        if (r == 0)
            r = app_sources_add(&src, cmd, argv[i]);
        if (r > 1) {
            app_sources_free(&src);
            return r;
        }
    }
    niah_task task;
    int urc = 0;
    if (synthetic && src.n_paths > 0)
        urc = app_usage(cmd, "give sources or --synthetic-haystack, not both");
    else if (!niah_task_parse(task_s, &task))
        urc = app_usage(cmd, "--task must be passkey, needles, kv or whichfile, got '%s'", task_s);
    else if (!(depth >= 0 && depth <= 1))
        urc = app_usage(cmd, "--depth must be in 0..1");
    if (urc) {
        app_sources_free(&src);
        return urc;
    }
    synthetic = src.n_paths == 0;
    app_sources_finish(&src);

    int rc = APP_EXIT_FAIL;
    loupe_err err = {0};
    app_chat_model cm = {0};
    rt_model *m = NULL;
    rt_tokenizer *tok = NULL;
    rt_ctx *c = NULL;
    niah_filler *fill = NULL;
    niah_case cs = {0};
    rt_ids ids;
    rt_ids_init(&ids);
    rt_ids_init(&cs.ids);
    float *qcap = NULL, *rows = NULL;
    int32_t *pos = NULL;
    char *desc = NULL, *manifest = NULL;
    size_t man_cap = 1 << 16, man_len = 0;

    const bool cuda = o.backend == RT_BACKEND_CUDA ||
                      (o.backend == RT_BACKEND_AUTO && rt_cuda_available());
    rt_cuda_engine *ce = NULL;
    float *kbuf = NULL;
    if (app_chat_model_open(&o, &cm, &err))
        goto fail;
    m = cm.model;
    tok = cm.tok;
    rt_chat_format fmt = cm.fmt;
    const rt_hparams *hp = rt_model_hparams(m);
    uint32_t L = layer < 0 ? hp->n_layer / 2 : (uint32_t)layer;
    if (L >= hp->n_layer) {
        loupe_fail(&err, LOUPE_ERR_RANGE, "--layer %u: the model has layers 0..%u", L,
                   hp->n_layer - 1);
        goto fail;
    }
    uint64_t limit = 0;
    if (app_context_limit(&o, hp, &limit, &err))
        goto fail;
    if (!o.ctx && synthetic && (limit == 0 || limit > 4096))
        limit = 4096; /* the generated haystack defaults to 4K tokens */

    /* The context. */
    uint64_t seed = o.seed_set ? o.seed : 1;
    if (synthetic) {
        niah_spec sp = {task, (uint32_t)limit, depth, seed, 0};
        if (niah_filler_builtin(tok, seed, 3 * limit, &fill, &err) ||
            niah_case_build(fill, tok, fmt, &sp, &cs, &err))
            goto fail;
        if (rt_ids_reserve(&ids, cs.ids.n, &err))
            goto fail;
        memcpy(ids.ids, cs.ids.ids, cs.ids.n * sizeof *ids.ids);
        ids.n = cs.ids.n;
        desc = malloc(512);
        if (desc)
            snprintf(desc, 512, "generated %s haystack (seed %llu, depth %.2f): needle at token "
                     "%zu, answer \"%s\", question \"%s\"", niah_task_name(task),
                     (unsigned long long)seed, depth, cs.needle_pos, cs.answer, cs.question);
    } else if (source_ids(&src, tok, fmt, question, limit, o.threads, &ids, &desc, &err)) {
        goto fail;
    }
    if (!desc) {
        loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    size_t n = ids.n;
    if ((uint64_t)decode >= n) {
        loupe_fail(&err, LOUPE_ERR_RANGE, "--decode %lld leaves no keys in a %zu-token context",
                   (long long)decode, n);
        goto fail;
    }
    size_t n_keys = n - (size_t)decode;

    /* Prefill with capture. */
    const uint32_t hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv, group = nh / nkv;
    rt_ctx_params cp;
    rt_ctx_params_init(&cp);
    cp.n_ctx = (uint32_t)n;
    cp.n_threads = o.threads;
    cp.beyond_train = o.beyond_train;
    qcap = malloc(n * nh * hd * sizeof *qcap);
    rows = malloc(n * hd * sizeof *rows);
    pos = malloc(n * sizeof *pos);
    manifest = malloc(man_cap);
    if (!qcap || !rows || !pos || !manifest) {
        loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory for %zu tokens of queries", n);
        goto fail;
    }
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double t0 = (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
    if (cuda) {
        rt_cuda_params gp;
        rt_cuda_params_init(&gp);
        gp.n_ctx = (uint32_t)n;
        gp.gpu_mem = o.gpu_mem;
        gp.beyond_train = o.beyond_train;
        const char *f32 = getenv("LOUPE_CUDA_F32");
        if (f32 && !strcmp(f32, "1"))
            gp.precision = RT_CUDA_F32;
        cuda_cap cc = {qcap, L, (size_t)nh * hd};
        kbuf = malloc((size_t)nkv * n * hd * 2 * sizeof *kbuf);
        if (!kbuf) {
            loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory for %zu tokens of keys", n);
            goto fail;
        }
        if (rt_cuda_engine_create(m, &gp, &ce, &err) ||
            rt_cuda_set_q_capture(ce, on_cuda_q, &cc, 1, &err) ||
            rt_cuda_prefill(ce, ids.ids, n, NULL, &err) ||
            rt_cuda_kv_read(ce, L, 0, (uint32_t)n, kbuf, kbuf + (size_t)nkv * n * hd, n, 0,
                            &err))
            goto fail;
    } else {
        if (rt_ctx_create(m, &cp, &c, &err) || rt_ctx_set_capture(c, L, qcap, &err))
            goto fail;
        rt_ctx_set_progress(c, on_progress, &t0);
        if (rt_ctx_prefill(c, ids.ids, n, NULL, &err))
            goto fail;
    }

    /* Query positions among the key positions. */
    size_t n_q = n_keys;
    if (rule != QP_ALL && (size_t)qp_n < n_keys)
        n_q = (size_t)qp_n;
    for (size_t i = 0; i < n_q; i++) {
        if (rule == QP_LAST)
            pos[i] = (int32_t)(n_keys - n_q + i);
        else if (rule == QP_SAMPLE) /* evenly spread, deterministic: sorted by construction */
            pos[i] = (int32_t)((2 * i + 1) * n_keys / (2 * n_q));
        else
            pos[i] = (int32_t)i;
    }

    if (mkdir_p(out_dir, &err))
        goto fail;
    char fpath[4096];
    for (uint32_t gk = 0; gk < nkv; gk++) {
        snprintf(fpath, sizeof fpath, "%s/L%u.kvh%u.keys.fbin", out_dir, L, gk);
        const float *keys = cuda ? kbuf + (size_t)gk * n * hd : rt_ctx_keys(c, L, gk);
        if (ann_fbin_write(fpath, keys, (int64_t)n_keys, (int)hd, &err))
            goto fail;
    }
    for (uint32_t h = 0; h < nh; h++) {
        for (size_t i = 0; i < n_q; i++)
            memcpy(rows + i * hd, qcap + ((size_t)pos[i] * nh + h) * hd, hd * sizeof *rows);
        snprintf(fpath, sizeof fpath, "%s/L%u.qh%u.queries.fbin", out_dir, L, h);
        if (ann_fbin_write(fpath, rows, (int64_t)n_q, (int)hd, &err))
            goto fail;
        if (decode > 0) {
            for (size_t i = 0; i < (size_t)decode; i++)
                memcpy(rows + i * hd, qcap + ((n_keys + i) * nh + h) * hd, hd * sizeof *rows);
            snprintf(fpath, sizeof fpath, "%s/L%u.qh%u.decode.fbin", out_dir, L, h);
            if (ann_fbin_write(fpath, rows, decode, (int)hd, &err))
                goto fail;
        }
    }
    snprintf(fpath, sizeof fpath, "%s/L%u.queries.pos.ibin", out_dir, L);
    if (ann_ibin_write(fpath, pos, (int64_t)n_q, 1, &err))
        goto fail;
    snprintf(fpath, sizeof fpath, "%s/L%u.tokens.ibin", out_dir, L);
    if (ann_ibin_write(fpath, ids.ids, (int64_t)n, 1, &err))
        goto fail;

    const char *rule_s = rule == QP_ALL ? "all" : rule == QP_LAST ? "last" : "sample";
    man_len = (size_t)snprintf(
        manifest, man_cap,
        "loupe dump-qk\n"
        "model: %s (%s, %u layers, %u query heads, %u KV heads, head_dim %u, rope base %g)\n"
        "context: %zu tokens: %s\n"
        "layer: %u\n"
        "vectors: post-RoPE, float32, as attention uses them: score(q, k) = q.k / sqrt(%u); the\n"
        "  query at position p attends keys 0..p (causal)\n"
        "head mapping: query head h reads KV head h / %u (qh0..qh%u -> kvh0, ...)\n"
        "keys: L%u.kvh<g>.keys.fbin, (%zu, %u) = positions 0..%zu\n"
        "queries (build side, prefill): L%u.qh<h>.queries.fbin, (%zu, %u), rule %s%s%lld;\n"
        "  their positions: L%u.queries.pos.ibin (%zu, 1)\n"
        "tokens: L%u.tokens.ibin (%zu, 1), every position\n",
        rt_gguf_path(cm.gguf), hp->name[0] ? hp->name : hp->arch_name, hp->n_layer, nh, nkv, hd,
        (double)hp->rope_freq_base, n, desc, L, hd, group, group - 1, L, n_keys, hd, n_keys - 1, L,
        n_q, hd, rule_s, rule == QP_ALL ? "" : ":", rule == QP_ALL ? 0LL : (long long)qp_n, L,
        n_q, L, n);
    if (man_len < man_cap && decode > 0)
        man_len += (size_t)snprintf(
            manifest + man_len, man_cap - man_len,
            "decode queries (test side): L%u.qh<h>.decode.fbin, (%lld, %u) = positions %zu..%zu,\n"
            "  the tokens after the keys, as decode steps over the prefilled cache would ask\n"
            "benchmark: loupe bench anns --keys %s/L%u.kvh0.keys.fbin \\\n"
            "  --build-queries %s/L%u.qh0.queries.fbin --queries %s/L%u.qh0.decode.fbin\n",
            L, (long long)decode, hd, n_keys, n - 1, out_dir, L, out_dir, L, out_dir, L);
    if (man_len >= man_cap)
        man_len = man_cap - 1;
    snprintf(fpath, sizeof fpath, "%s/L%u.manifest.txt", out_dir, L);
    if (write_manifest(fpath, manifest, &err))
        goto fail;
    fprintf(stderr, "loupe: dump-qk: layer %u, %zu keys x %u KV heads, %zu queries x %u heads%s "
            "-> %s/\n", L, n_keys, nkv, n_q, nh, decode > 0 ? " (+ decode)" : "", out_dir);
    rc = APP_EXIT_OK;
    goto done;
fail:
    rc = app_fail(cmd, &err);
done:
    free(manifest);
    free(desc);
    free(pos);
    free(rows);
    free(qcap);
    niah_case_free(&cs);
    niah_filler_destroy(fill);
    rt_ids_free(&ids);
    rt_ctx_destroy(c);
    rt_cuda_engine_destroy(ce);
    free(kbuf);
    app_chat_model_close(&cm);
    app_sources_free(&src);
    return rc;
}
