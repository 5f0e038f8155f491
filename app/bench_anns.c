/*
 * `loupe bench anns`: builds each index type over one head's keys, sweeps its search parameter
 * (ef for graphs, nprobe for IVF) and prints, per setting, recall@k against exact ground truth,
 * the fraction of keys scanned (distance computations / keys), searches/s and build seconds with
 * their split. Vectors come from .fbin files or from the synthetic attention-like generator.
 * Ground truth is computed exactly from the f32 keys unless --truth gives it, so recall includes
 * the error of the key storage type.
 */
#include "app/app.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: loupe bench anns (--keys K.fbin --build-queries Q.fbin --queries T.fbin |\n"
    "                         --synthetic N,D) [OPTIONS]\n"
    "  --truth G.ibin        ground truth ids (n_queries, >= k); computed exactly if absent\n"
    "  --k N                 results per query (100)\n"
    "  --index LIST          comma-separated: flat,ivf,graph,keygraph (all)\n"
    "  --threads N           search and build threads (all cores)\n"
    "  --storage T           key storage: bf16 (default), int8, f32\n"
    "  --n-test N            synthetic test queries (1000)\n"
    "  --sample N            build queries sampled for the graph (all)\n"
    "  --degree M            graph out-degree cap (32)\n"
    "  --build-k N           exact top-k per build query (64)\n"
    "  --fill N              top lists up to N edges with pruned candidates (16)\n"
    "  --prune l2|ip         pruning rule (l2)\n"
    "  --pivot-cap N         lists one key may own as pivot, 0 = no cap (8)\n"
    "  --entries N           entry points (4)\n"
    "  --no-repair           skip the connectivity repair\n"
    "  --nlist N             IVF lists (2·sqrt(n))\n"
    "  --ef LIST             graph beams to sweep (100,128,160,200,256,320,400,512,768)\n"
    "  --nprobe LIST         IVF probes to sweep (1,2,4,8,16,32,64,128)\n"
    "  --write-synthetic P   also write P.keys.fbin, P.build.fbin, P.test.fbin\n"
    "  --seed N              (1)\n"
    "  --csv                 one header line, then one row per setting\n";

typedef struct {
    int vals[32];
    int n;
} int_list;

static int parse_list(const char *cmd, const char *name, const char *s, int_list *out)
{
    out->n = 0;
    char buf[512];
    if (strlen(s) >= sizeof buf)
        return app_usage(cmd, "%s: list too long", name);
    memcpy(buf, s, strlen(s) + 1);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int64_t v;
        if (out->n == 32)
            return app_usage(cmd, "%s: at most 32 values", name);
        if (app_parse_i64(cmd, name, tok, 1, 1 << 20, &v))
            return APP_EXIT_USAGE;
        out->vals[out->n++] = (int)v;
    }
    return out->n ? 0 : app_usage(cmd, "%s: empty list", name);
}

typedef struct {
    const ann_index *ix;
    ann_search_ctx **ctxs;
    int nth;
    const float *tq;
    int64_t nt;
    const int32_t *truth;
    int truth_d;
    int k;
    int64_t n;
    int csv;
    double build_s;
    const ann_build_stats *bs;
    int32_t *ids;
    float *scores;
} sweep_ctx;

static int run_setting(sweep_ctx *s, const char *param, int value, int ef, int nprobe)
{
    loupe_err err;
    loupe_err_clear(&err);
    ann_search_params p = {.k = s->k, .ef = ef, .nprobe = nprobe};
    for (int t = 0; t < s->nth; t++)
        ann_search_ctx_reset_scanned(s->ctxs[t]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (ann_search_batch(s->ix, s->ctxs, s->nth, s->tq, s->nt, &p, s->ids, s->scores, &err))
        return app_fail("bench anns: search", &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    int64_t scanned = 0, hits = 0;
    for (int t = 0; t < s->nth; t++)
        scanned += ann_search_ctx_scanned(s->ctxs[t]);
    for (int64_t q = 0; q < s->nt; q++)
        for (int i = 0; i < s->k; i++) {
            int32_t id = s->ids[q * s->k + i];
            for (int j = 0; j < s->k && id >= 0; j++)
                if (s->truth[q * s->truth_d + j] == id) {
                    hits++;
                    break;
                }
        }
    double recall = (double)hits / ((double)s->nt * s->k);
    double frac = (double)scanned / ((double)s->nt * (double)s->n);
    double bpk = (double)ann_index_bytes(s->ix) / (double)s->n;
    const char *name = ann_type_name(ann_index_type(s->ix));
    if (s->csv)
        printf("%s,%s,%d,%.4f,%.5f,%.1f,%.3f,%.3f,%.3f,%.3f,%.1f\n", name, param, value, recall,
               frac, (double)s->nt / secs, s->build_s, s->bs->knn_s, s->bs->projection_s,
               s->bs->repair_s, bpk);
    else
        printf("%-9s %-7s %6d  %8.4f  %9.3f%%  %11.0f  %8.2f  %6.2f %6.2f %6.2f  %7.1f\n", name,
               param, value, recall, 100.0 * frac, (double)s->nt / secs, s->build_s,
               s->bs->knn_s, s->bs->projection_s, s->bs->repair_s, bpk);
    fflush(stdout);
    return 0;
}

int bench_anns(int argc, char **argv)
{
    const char *cmd = "bench anns";
    const char *keys_path = NULL, *bq_path = NULL, *tq_path = NULL, *truth_path = NULL;
    const char *synthetic = NULL, *write_syn = NULL;
    int64_t k = 100, threads = 0, n_test = 1000, seed = 1, v;
    int csv = 0, want[4] = {1, 1, 1, 1};
    ann_key_type storage = ANN_KEYS_BF16;
    ann_build_opts bo;
    ann_build_opts_init(&bo);
    int_list efs = {{100, 128, 160, 200, 256, 320, 400, 512, 768}, 9};
    int_list probes = {{1, 2, 4, 8, 16, 32, 64, 128}, 8};
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        int r;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return APP_EXIT_OK;
        } else if (!strcmp(a, "--csv")) {
            csv = 1;
        } else if (!strcmp(a, "--no-repair")) {
            bo.repair = 0;
        } else if ((r = app_opt_value(cmd, "--keys", argc, argv, &i, &keys_path))) {
        } else if ((r = app_opt_value(cmd, "--build-queries", argc, argv, &i, &bq_path))) {
        } else if ((r = app_opt_value(cmd, "--queries", argc, argv, &i, &tq_path))) {
        } else if ((r = app_opt_value(cmd, "--truth", argc, argv, &i, &truth_path))) {
        } else if ((r = app_opt_value(cmd, "--synthetic", argc, argv, &i, &synthetic))) {
        } else if ((r = app_opt_value(cmd, "--write-synthetic", argc, argv, &i, &write_syn))) {
        } else if ((r = app_opt_value(cmd, "--k", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--k", val, 1, 4096, &k))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--threads", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--threads", val, 1, 1024, &threads))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--n-test", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--n-test", val, 1, 1 << 24, &n_test))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--seed", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--seed", val, 0, INT64_MAX, &seed))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--sample", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--sample", val, 1, INT32_MAX, &bo.max_build_queries))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--degree", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--degree", val, 1, 1024, &v))
                return APP_EXIT_USAGE;
            bo.degree = (int)v;
        } else if ((r = app_opt_value(cmd, "--build-k", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--build-k", val, 1, 4096, &v))
                return APP_EXIT_USAGE;
            bo.build_k = (int)v;
        } else if ((r = app_opt_value(cmd, "--fill", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--fill", val, 0, 1024, &v))
                return APP_EXIT_USAGE;
            bo.fill = (int)v;
        } else if ((r = app_opt_value(cmd, "--pivot-cap", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--pivot-cap", val, 0, 1 << 30, &v))
                return APP_EXIT_USAGE;
            bo.pivot_cap = (int)v;
        } else if ((r = app_opt_value(cmd, "--entries", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--entries", val, 1, 1024, &v))
                return APP_EXIT_USAGE;
            bo.n_entry = (int)v;
        } else if ((r = app_opt_value(cmd, "--nlist", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--nlist", val, 1, 1 << 24, &v))
                return APP_EXIT_USAGE;
            bo.nlist = (int)v;
        } else if ((r = app_opt_value(cmd, "--prune", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (strcmp(val, "l2") && strcmp(val, "ip"))
                return app_usage(cmd, "--prune expects l2 or ip, got '%s'", val);
            bo.prune = !strcmp(val, "ip") ? ANN_PRUNE_IP : ANN_PRUNE_L2;
        } else if ((r = app_opt_value(cmd, "--storage", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (!strcmp(val, "bf16"))
                storage = ANN_KEYS_BF16;
            else if (!strcmp(val, "int8"))
                storage = ANN_KEYS_INT8;
            else if (!strcmp(val, "f32"))
                storage = ANN_KEYS_F32;
            else
                return app_usage(cmd, "--storage expects bf16, int8 or f32, got '%s'", val);
        } else if ((r = app_opt_value(cmd, "--ef", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (parse_list(cmd, "--ef", val, &efs))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--nprobe", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (parse_list(cmd, "--nprobe", val, &probes))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--index", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            char buf[256];
            loupe_err e;
            if (strlen(val) >= sizeof buf)
                return app_usage(cmd, "--index: list too long");
            memcpy(buf, val, strlen(val) + 1);
            memset(want, 0, sizeof want);
            for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
                ann_type ty;
                if (ann_type_parse(t, &ty, &e))
                    return app_usage(cmd, "%s", e.msg);
                want[ty] = 1;
            }
        } else {
            return app_usage(cmd, "unknown option '%s'", a);
        }
        if (r == APP_EXIT_USAGE)
            return r;
    }
    if (!synthetic && (!keys_path || !bq_path || !tq_path))
        return app_usage(cmd, "give --keys, --build-queries and --queries, or --synthetic N,D");

    int rc = APP_EXIT_FAIL;
    loupe_err err;
    loupe_err_clear(&err);
    float *K = NULL, *BQ = NULL, *TQ = NULL, *scores = NULL;
    int32_t *truth = NULL, *ids = NULL;
    int64_t n = 0, nbq = 0, nt = 0, ntr = 0;
    int d = 0, dbq = 0, dt = 0, truth_d = 0;
    ann_keys *keys = NULL, *keys_f32 = NULL;
    ann_search_ctx *ctxs[1024] = {0};
    int nth = threads > 0 ? (int)threads : omp_get_max_threads();
    bo.threads = nth;
    bo.seed = (uint64_t)seed;

    if (synthetic) {
        long long sn = 0;
        int sd = 0;
        char tail = 0;
        if (sscanf(synthetic, "%lld,%d%c", &sn, &sd, &tail) != 2 || sn < 16 || sn > INT32_MAX ||
            sd < 8 || sd > 4096 || sd % 2)
            return app_usage(cmd, "--synthetic expects N,D (N >= 16 keys, even D in 8..4096), "
                             "got '%s'", synthetic);
        ann_synth_opts so = {.n_keys = sn, .n_test = n_test, .dim = sd, .seed = (uint64_t)seed,
                             .rope = 1};
        if (ann_synth_generate(&so, &K, &BQ, &TQ, &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }
        n = nbq = sn;
        nt = n_test;
        d = dbq = dt = sd;
        if (write_syn) {
            char path[4096];
            const char *suffix[3] = {"keys", "build", "test"};
            const float *arr[3] = {K, BQ, TQ};
            int64_t cnt[3] = {n, nbq, nt};
            for (int i = 0; i < 3; i++) {
                snprintf(path, sizeof path, "%s.%s.fbin", write_syn, suffix[i]);
                if (ann_fbin_write(path, arr[i], cnt[i], d, &err)) {
                    rc = app_fail("bench anns", &err);
                    goto done;
                }
            }
        }
    } else {
        if (ann_fbin_read(keys_path, &K, &n, &d, &err) ||
            ann_fbin_read(bq_path, &BQ, &nbq, &dbq, &err) ||
            ann_fbin_read(tq_path, &TQ, &nt, &dt, &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }
        if (dbq != d || dt != d) {
            fprintf(stderr, "loupe: bench anns: dimensions differ: keys %d, build queries %d, "
                    "queries %d\n", d, dbq, dt);
            goto done;
        }
    }
    if (k > n)
        k = n;
    if (ann_keys_create(K, n, d, storage, &keys, &err) ||
        ann_keys_create(K, n, d, ANN_KEYS_F32, &keys_f32, &err)) {
        rc = app_fail("bench anns", &err);
        goto done;
    }
    if (truth_path) {
        if (ann_ibin_read(truth_path, &truth, &ntr, &truth_d, &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }
        if (ntr != nt || truth_d < k) {
            fprintf(stderr, "loupe: bench anns: %s: %lld × %d ids, need %lld × >= %lld\n",
                    truth_path, (long long)ntr, truth_d, (long long)nt, (long long)k);
            goto done;
        }
    } else {
        truth_d = (int)k;
        truth = malloc((size_t)nt * (size_t)k * sizeof *truth);
        float *ts = malloc((size_t)nt * (size_t)k * sizeof *ts);
        loupe_status st = truth && ts ? ann_knn_cpu(NULL, keys_f32, TQ, nt, (int)k, nth, truth,
                                                    ts, NULL, &err)
                                      : loupe_fail(&err, LOUPE_ERR_NOMEM, "no memory for truth");
        free(ts);
        if (st) {
            rc = app_fail("bench anns: ground truth", &err);
            goto done;
        }
    }
    ids = malloc((size_t)nt * (size_t)k * sizeof *ids);
    scores = malloc((size_t)nt * (size_t)k * sizeof *scores);
    if (!ids || !scores) {
        fprintf(stderr, "loupe: bench anns: out of memory\n");
        goto done;
    }
    int max_beam = 128;
    for (int i = 0; i < efs.n; i++)
        max_beam = efs.vals[i] > max_beam ? efs.vals[i] : max_beam;
    for (int i = 0; i < probes.n; i++)
        max_beam = probes.vals[i] > max_beam ? probes.vals[i] : max_beam;
    max_beam = (int)k > max_beam ? (int)k : max_beam;
    if (nth > 1024)
        nth = 1024;
    for (int t = 0; t < nth; t++)
        if (ann_search_ctx_create(n, max_beam, &ctxs[t], &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }

    if (!csv) {
        printf("# %lld keys × %d (%s), %lld build queries, %lld test queries, k=%lld, "
               "%d threads\n", (long long)n, d, ann_key_type_name(storage), (long long)nbq,
               (long long)nt, (long long)k, nth);
        printf("%-9s %-7s %6s  %8s  %10s  %11s  %8s  %6s %6s %6s  %7s\n", "index", "param",
               "value", "recall", "scanned", "searches/s", "build_s", "knn", "proj", "repair",
               "B/key");
    } else {
        printf("index,param,value,recall,scanned_frac,searches_per_s,build_s,knn_s,"
               "projection_s,repair_s,index_bytes_per_key\n");
    }
    for (int ty = 0; ty < 4; ty++) {
        if (!want[ty])
            continue;
        ann_index *ix = NULL;
        ann_build_stats bs;
        if (ann_index_build((ann_type)ty, keys, BQ, nbq, &bo, &ix, &bs, &err)) {
            rc = app_fail("bench anns: build", &err);
            goto done;
        }
        if (!csv && (ty == ANN_GRAPH || ty == ANN_KEYGRAPH))
            printf("# %s: %lld build queries, %lld keys in no top-%d list, %lld repair edges, "
                   "%lld unreachable, %.1f edges/key\n", ann_type_name((ann_type)ty),
                   (long long)bs.n_build_queries, (long long)bs.n_untouched, bo.build_k,
                   (long long)bs.n_repaired, (long long)bs.n_unreachable,
                   (double)bs.n_edges / (double)n);
        sweep_ctx s = {ix, ctxs, nth, TQ, nt, truth, truth_d, (int)k, n, csv, bs.total_s, &bs,
                       ids, scores};
        int r = 0;
        if (ty == ANN_FLAT) {
            r = run_setting(&s, "-", 0, (int)k, 1);
        } else if (ty == ANN_IVF) {
            for (int i = 0; i < probes.n && !r; i++)
                r = run_setting(&s, "nprobe", probes.vals[i], (int)k, probes.vals[i]);
        } else {
            for (int i = 0; i < efs.n && !r; i++)
                if (efs.vals[i] >= k)
                    r = run_setting(&s, "ef", efs.vals[i], efs.vals[i], 1);
        }
        ann_index_destroy(ix);
        if (r) {
            rc = r;
            goto done;
        }
    }
    rc = APP_EXIT_OK;
done:
    for (int t = 0; t < 1024; t++)
        ann_search_ctx_destroy(ctxs[t]);
    ann_keys_destroy(keys);
    ann_keys_destroy(keys_f32);
    free(K);
    free(BQ);
    free(TQ);
    free(truth);
    free(ids);
    free(scores);
    return rc;
}
