/*
 * `loupe bench decode [--model F | --preset NAME] [--ctx 1024,8192] [--gen N] [--threads N]
 * [--csv]`: CPU prefill and decode speed at each context length, and the memory bandwidth a
 * decode step uses — (weight bytes + KV bytes read) per token / time — next to the machine's
 * streaming-read bandwidth measured in the same run with the same threads, so the two compare
 * directly.
 *
 * At context L the bench prefills L − gen random tokens and then decodes gen tokens greedily, so
 * the last decode step attends over L keys. With --preset the model is written by `loupe mkmodel`
 * to a temporary file, removed afterwards.
 */
#include "app/app.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/runtime.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: loupe bench decode [--model FILE | --preset NAME] [--ctx 1024,8192]\n"
               "                          [--gen N] [--threads N] [--csv]\n"
               "Prefill and decode tokens/s on the CPU at each context length, and the memory\n"
               "bandwidth a decode step uses next to the machine's measured read bandwidth.\n");
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Best of three parallel streaming reads over a 512 MiB buffer, in GB/s (1e9 bytes). */
static double measure_read_bandwidth(int threads)
{
    const size_t n = (size_t)128 << 20; /* floats */
    float *a = malloc(n * sizeof *a);
    if (!a)
        return 0;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(i & 7);
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s(), total = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : total)
        for (size_t b = 0; b < n; b += 4096) {
            float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (size_t i = b; i < b + 4096; i += 8)
                for (int j = 0; j < 8; j++)
                    s[j] += a[i + j];
            total += s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
        }
        double dt = now_s() - t0;
        sink += total;
        double gbs = (double)(n * sizeof *a) / dt / 1e9;
        if (gbs > best)
            best = gbs;
    }
    free(a);
    return sink == -1 ? 0 : best; /* the sum is used so the reads are not optimised away */
}

/* Parses "1024,8192" into up to `cap` lengths. */
static int parse_ctx_list(const char *s, int64_t *out, int cap, int *n)
{
    *n = 0;
    while (*s) {
        char item[32];
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof item || *n == cap)
            return app_usage("bench decode", "--ctx expects lengths like 1024,8192, got '%s'", s);
        memcpy(item, s, len);
        item[len] = '\0';
        int r = app_parse_i64("bench decode", "--ctx", item, 2, INT32_MAX, &out[(*n)++]);
        if (r)
            return r;
        s += len;
        if (*s == ',')
            s++;
    }
    return *n ? 0 : app_usage("bench decode", "--ctx needs at least one length");
}

int bench_decode(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    const char *preset = NULL, *ctx_list = "1024,8192", *v = NULL;
    int64_t gen = 16;
    bool csv = false;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return APP_EXIT_OK;
        }
        if (!strcmp(argv[i], "--csv")) {
            csv = true;
            continue;
        }
        if ((r = app_opt_value("bench decode", "--ctx", argc, argv, &i, &ctx_list)) != 0) {
            if (r > 1)
                return r;
            continue;
        }
        if ((r = app_opt_value("bench decode", "--preset", argc, argv, &i, &preset)) != 0) {
            if (r > 1)
                return r;
            continue;
        }
        if ((r = app_opt_value("bench decode", "--gen", argc, argv, &i, &v)) != 0) {
            if (r > 1 || (r = app_parse_i64("bench decode", "--gen", v, 1, 1 << 20, &gen)))
                return r;
            continue;
        }
        r = app_opts_parse(&o, "bench decode", argc, argv, &i);
        if (r > 1)
            return r;
        if (r == 0)
            return app_usage("bench decode", "unknown option '%s'", argv[i]);
    }
    int64_t lens[16];
    int n_lens = 0, r = parse_ctx_list(ctx_list, lens, 16, &n_lens);
    if (r)
        return r;
    int threads = o.threads > 0 ? o.threads : omp_get_max_threads();

    int rc = APP_EXIT_FAIL;
    loupe_err err = {0};
    char tmp_path[256] = "";
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    rt_ctx *c = NULL;
    int32_t *ids = NULL;
    const char *path = NULL;
    if (preset) {
        snprintf(tmp_path, sizeof tmp_path, "%s/loupe-bench-%s-%d.gguf",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", preset, (int)getpid());
        char *mk[] = {"mkmodel", "--preset", (char *)preset, "--out", tmp_path, NULL};
        if ((rc = cmd_mkmodel(5, mk)) != APP_EXIT_OK) {
            tmp_path[0] = '\0';
            goto done;
        }
        rc = APP_EXIT_FAIL;
        path = tmp_path;
    } else {
        path = app_model_path(&o);
    }
    if (rt_gguf_open(path, &g, &err) || rt_model_load(g, &m, &err)) {
        app_fail("bench decode", &err);
        goto done;
    }
    const rt_hparams *hp = rt_model_hparams(m);
    double bw = measure_read_bandwidth(threads);
    const char *name = preset ? preset : path;
    if (csv)
        printf("model,params,weight_bytes,threads,ctx,prefill_tokens,prefill_tok_s,"
               "decode_tokens,decode_tok_s,decode_ms_tok,decode_gb_s,mem_read_gb_s\n");
    else
        printf("model %s: %.1fM params, %.1f MiB of weights read per token, %u layers, "
               "%u/%u heads, %d threads\nmachine streaming read: %.1f GB/s\n\n"
               "%8s %12s %12s %10s %12s %9s\n",
               name, (double)rt_model_n_params(m) / 1e6,
               (double)rt_model_weight_bytes(m) / (1024.0 * 1024.0), hp->n_layer, hp->n_head,
               hp->n_head_kv, threads, bw, "ctx", "prefill t/s", "decode t/s", "ms/token",
               "decode GB/s", "% of read");

    uint64_t seed = o.seed_set ? o.seed : 12345;
    for (int li = 0; li < n_lens; li++) {
        uint32_t L = (uint32_t)lens[li];
        if (hp->n_ctx_train && L > hp->n_ctx_train) {
            fprintf(stderr, "loupe: bench decode: skipping ctx %u: the model's context is %u\n",
                    L, hp->n_ctx_train);
            continue;
        }
        uint32_t n_gen = (uint32_t)gen < L / 2 ? (uint32_t)gen : L / 2;
        uint32_t n_pre = L - n_gen;
        rt_ctx_params cp;
        rt_ctx_params_init(&cp);
        cp.n_ctx = L;
        cp.n_threads = threads;
        free(ids);
        ids = malloc((size_t)L * sizeof *ids);
        if (!ids) {
            loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory for %u token ids", L);
            app_fail("bench decode", &err);
            goto done;
        }
        for (uint32_t i = 0; i < L; i++) { /* splitmix-style ids, reproducible per seed */
            seed += 0x9E3779B97F4A7C15ull;
            uint64_t z = (seed ^ (seed >> 31)) * 0xBF58476D1CE4E5B9ull;
            ids[i] = (int32_t)((z >> 33) % hp->n_vocab);
        }
        rt_ctx_destroy(c);
        c = NULL;
        if (rt_ctx_create(m, &cp, &c, &err)) {
            app_fail("bench decode", &err);
            goto done;
        }
        double t0 = now_s();
        if (rt_ctx_prefill(c, ids, n_pre, NULL, &err)) {
            app_fail("bench decode", &err);
            goto done;
        }
        double t_pre = now_s() - t0;
        double kv_bytes = 0;
        t0 = now_s();
        for (uint32_t i = 0; i < n_gen; i++) {
            /* K and V of every layer and KV head up to and including this token, float32 */
            kv_bytes += 2.0 * hp->n_layer * hp->n_head_kv * (double)hp->head_dim * 4 *
                        (double)(rt_ctx_n_past(c) + 1);
            if (rt_ctx_decode(c, ids[n_pre + i], &err)) {
                app_fail("bench decode", &err);
                goto done;
            }
        }
        double t_dec = now_s() - t0;
        double dec_tps = n_gen / t_dec, pre_tps = n_pre / t_pre;
        double gbs = ((double)rt_model_weight_bytes(m) * n_gen + kv_bytes) / t_dec / 1e9;
        if (csv)
            printf("%s,%llu,%llu,%d,%u,%u,%.2f,%u,%.2f,%.3f,%.2f,%.2f\n", name,
                   (unsigned long long)rt_model_n_params(m),
                   (unsigned long long)rt_model_weight_bytes(m), threads, L, n_pre, pre_tps,
                   n_gen, dec_tps, 1e3 / dec_tps, gbs, bw);
        else
            printf("%8u %12.1f %12.2f %10.2f %12.2f %8.0f%%\n", L, pre_tps, dec_tps,
                   1e3 / dec_tps, gbs, bw > 0 ? 100.0 * gbs / bw : 0.0);
        fflush(stdout);
    }
    rc = APP_EXIT_OK;
done:
    free(ids);
    rt_ctx_destroy(c);
    rt_model_destroy(m);
    rt_gguf_close(g);
    if (tmp_path[0])
        unlink(tmp_path);
    return rc;
}
