/*
 * bench_anns_build: the build cost of the attention-aware graph indexes of an 8B-shaped layout
 * (issue 6): 1024 indexes (32 layers × 32 query heads) of 131,072 keys, head dim 128, with the
 * kNN step (rt_cuda_knn) and the projection's pruning (rt_cuda_prune) on the GPU, the rest of
 * the projection and the repair on CPU threads. A benchmark program, not a test.
 *
 *   bench_anns_build [--keys N] [--indexes N] [--build-queries LIST] [--threads N]
 *                    [--concurrent N] [--time-limit S] [--datasets N] [--key-type T] [--k N]
 *                    [--recall-indexes N] [--ef LIST] [--test N] [--cpu-knn-queries N]
 *                    [--seed N] [--device N] [--no-knn-compare] [--cpu-prune] [--degree M]
 *                    [--prune-nearest N]
 *
 * --cpu-prune prunes on the CPU (ann_prune_cpu) instead, for the A/B; --degree is the graphs'
 * out-degree (anns' default, 32, when absent; the runtime builds degree 16); --prune-nearest
 * cuts each list to its N candidates nearest the owner before pruning
 * (ann_build_opts.prune_nearest; 0, the default: no cut).
 *
 * Data: ann_synth_generate (RoPE'd out-of-distribution queries and keys, sinks). Generating 131K
 * keys and queries takes seconds on the CPU, so only --datasets distinct KV heads are generated
 * (default 4) and index i uses KV head (i / 4) mod datasets: the 4 query heads of a KV group
 * share its ann_keys, as under GQA. The 4 query heads of a group reuse the group's generated
 * queries, each sampling its own --build-queries subset (build seed = index number); real query
 * heads would differ more, which does not change the build's cost.
 *
 * Output:
 *   1. kNN alone on one head: rt_cuda_knn for all queries and for each sampled count (median of
 *      3 after a warm-up; wall time of the call, which includes uploading keys and queries, and
 *      the kernels' time), against ann_knn_cpu on --cpu-knn-queries queries extrapolated to all;
 *      the GPU's top-k is checked against the CPU's on those queries (identical id sets).
 *   2. Per --build-queries setting: indexes are built --concurrent at a time (each with
 *      threads/concurrent OpenMP threads, so the GPU kNN of one overlaps the CPU projection of
 *      others) until all --indexes are built or the setting's share of --time-limit is spent; the
 *      wall time is then extrapolated to --indexes (marked '*'). knn/proj/repair are the mean
 *      seconds per index of ann_build_stats (phases of concurrent builds overlap in wall time).
 *      recall@100 and % keys scanned are measured on the first --recall-indexes indexes with
 *      --test held-out queries (later positions than the keys) per --ef value, against exact
 *      top-100 from ann_knn_cpu.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "anns/anns.h"
#include "runtime/cuda/knn.cuh"
#include "runtime/cuda/prune.cuh"
#include "runtime/rt_cuda.h"

enum { MAX_LIST = 16, RECALL_K = 100 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const loupe_err *err)
{
    fprintf(stderr, "bench_anns_build: %s: %s\n", what, err ? loupe_err_message(err) : "failed");
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- Options ------------------------------------------------------------------------------ */

typedef struct {
    int64_t keys, indexes, test, cpu_q;
    int64_t bq[MAX_LIST]; /* 0: all */
    int n_bq;
    int ef[MAX_LIST], n_ef;
    int threads, concurrent, datasets, k, recall_indexes, device, knn_compare, cpu_prune, degree,
        nearest;
    double time_limit;
    uint64_t seed;
    ann_key_type type;
} options;

static int64_t parse_i64(const char *opt, const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < 0) {
        fprintf(stderr, "bench_anns_build: %s wants a non-negative integer, got '%s'\n", opt, s);
        exit(2);
    }
    return (int64_t)v;
}

/* "8192,16384,all" → values (all → 0). */
static int parse_list(const char *opt, const char *s, int64_t *out)
{
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < MAX_LIST; tok = strtok(NULL, ","))
        out[n++] = !strcmp(tok, "all") ? 0 : parse_i64(opt, tok);
    if (n == 0) {
        fprintf(stderr, "bench_anns_build: %s wants a comma-separated list\n", opt);
        exit(2);
    }
    return n;
}

static void parse(int argc, char **argv, options *o)
{
    *o = (options){.keys = 131072, .indexes = 1024, .test = 500, .cpu_q = 1024, .threads = 16,
                   .concurrent = 4, .datasets = 4, .k = 64, .recall_indexes = 2, .device = 0,
                   .knn_compare = 1, .time_limit = 0, .seed = 1, .type = ANN_KEYS_BF16};
    o->n_bq = parse_list("--build-queries", "8192,16384,32768,all", o->bq);
    int64_t ef[MAX_LIST];
    o->n_ef = parse_list("--ef", "128,256", ef);
    for (int i = 0; i < o->n_ef; i++)
        o->ef[i] = (int)ef[i];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-knn-compare")) {
            o->knn_compare = 0;
            continue;
        }
        if (!strcmp(a, "--cpu-prune")) {
            o->cpu_prune = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench_anns_build: %s needs a value (see the file's header)\n", a);
            exit(2);
        }
        i++;
        if (!strcmp(a, "--keys"))
            o->keys = parse_i64(a, v);
        else if (!strcmp(a, "--indexes"))
            o->indexes = parse_i64(a, v);
        else if (!strcmp(a, "--build-queries"))
            o->n_bq = parse_list(a, v, o->bq);
        else if (!strcmp(a, "--threads"))
            o->threads = (int)parse_i64(a, v);
        else if (!strcmp(a, "--concurrent"))
            o->concurrent = (int)parse_i64(a, v);
        else if (!strcmp(a, "--time-limit"))
            o->time_limit = strtod(v, NULL);
        else if (!strcmp(a, "--datasets"))
            o->datasets = (int)parse_i64(a, v);
        else if (!strcmp(a, "--k"))
            o->k = (int)parse_i64(a, v);
        else if (!strcmp(a, "--recall-indexes"))
            o->recall_indexes = (int)parse_i64(a, v);
        else if (!strcmp(a, "--test"))
            o->test = parse_i64(a, v);
        else if (!strcmp(a, "--cpu-knn-queries"))
            o->cpu_q = parse_i64(a, v);
        else if (!strcmp(a, "--seed"))
            o->seed = (uint64_t)parse_i64(a, v);
        else if (!strcmp(a, "--degree"))
            o->degree = (int)parse_i64(a, v);
        else if (!strcmp(a, "--prune-nearest"))
            o->nearest = (int)parse_i64(a, v);
        else if (!strcmp(a, "--device"))
            o->device = (int)parse_i64(a, v);
        else if (!strcmp(a, "--ef")) {
            o->n_ef = parse_list(a, v, ef);
            for (int j = 0; j < o->n_ef; j++)
                o->ef[j] = (int)ef[j];
        } else if (!strcmp(a, "--key-type")) {
            o->type = !strcmp(v, "f32") ? ANN_KEYS_F32 : !strcmp(v, "int8") ? ANN_KEYS_INT8
                                                                           : ANN_KEYS_BF16;
        } else {
            fprintf(stderr, "bench_anns_build: unknown option %s (see the file's header)\n", a);
            exit(2);
        }
    }
    if (o->keys < 1000 || o->indexes < 1 || o->threads < 1 || o->concurrent < 1 ||
        o->datasets < 1 || o->k < 1) {
        fprintf(stderr, "bench_anns_build: need --keys >= 1000 and positive counts\n");
        exit(2);
    }
    for (int i = 0; i < o->n_ef; i++)
        if (o->ef[i] < RECALL_K) {
            fprintf(stderr, "bench_anns_build: --ef values must be >= %d\n", RECALL_K);
            exit(2);
        }
}

/* ---- Data: one generated KV head ----------------------------------------------------------- */

typedef struct {
    ann_keys *keys;
    float *bq;       /* (n, dim) build queries */
    float *tq;       /* (n_test, dim) held-out queries */
    int32_t *truth;  /* (n_test, RECALL_K) exact, or NULL until needed */
} dataset;

enum { DIM = 128 };

static void make_dataset(const options *o, int d, dataset *ds)
{
    ann_synth_opts so = {.n_keys = o->keys, .n_test = o->test, .dim = DIM,
                         .seed = o->seed * 1000 + (uint64_t)d, .rope = 1};
    float *K = NULL;
    loupe_err err;
    loupe_err_clear(&err);
    if (ann_synth_generate(&so, &K, &ds->bq, &ds->tq, &err) ||
        ann_keys_create(K, o->keys, DIM, o->type, &ds->keys, &err))
        die("synthetic data", &err);
    free(K);
    ds->truth = NULL;
    /* Page-locked, as the runtime's host keys are (rt_cuda_host_pin): the GPU calls' uploads
     * are then DMA, not staged by a CPU thread. Never unpinned: the process ends. */
    int64_t stride = 0;
    const float *scales = NULL;
    void *rows = (void *)ann_keys_data(ds->keys, &stride, &scales);
    if (!rt_cuda_host_pin(rows, (size_t)o->keys * stride * ann_key_type_bytes(o->type)))
        printf("(KV head %d's keys could not be page-locked: their uploads are staged)\n", d);
}

static void ensure_truth(const options *o, dataset *ds)
{
    if (ds->truth || o->test == 0)
        return;
    loupe_err err;
    loupe_err_clear(&err);
    ds->truth = malloc((size_t)o->test * RECALL_K * sizeof *ds->truth);
    float *sc = malloc((size_t)o->test * RECALL_K * sizeof *sc);
    if (!ds->truth || !sc ||
        ann_knn_cpu(NULL, ds->keys, ds->tq, o->test, RECALL_K, o->threads, ds->truth, sc, NULL,
                    &err))
        die("exact top-100 of the test queries", &err);
    free(sc);
}

/* ---- 1. kNN alone ----------------------------------------------------------------------------- */

/* Median wall seconds (and kernel seconds) of 3 GPU kNN calls for the first nq queries. */
static void time_gpu_knn(const options *o, const dataset *ds, int64_t nq, double *wall,
                         double *kern, rt_cuda_knn_info *info)
{
    rt_cuda_knn_opts ko;
    rt_cuda_knn_opts_init(&ko);
    ko.device = o->device;
    int32_t *ids = malloc((size_t)nq * o->k * sizeof *ids);
    float *sc = malloc((size_t)nq * o->k * sizeof *sc);
    int32_t *best = malloc((size_t)o->keys * sizeof *best);
    double w[3], kk[3];
    loupe_err err;
    loupe_err_clear(&err);
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        if (!ids || !sc || !best ||
            rt_cuda_knn_run(&ko, ds->keys, ds->bq, nq, o->k, o->threads, ids, sc, best, info,
                            &err))
            die("GPU kNN", &err);
        w[r] = now_s() - t0;
        kk[r] = info->kernel_s;
    }
    qsort(w, 3, sizeof w[0], cmp_double);
    qsort(kk, 3, sizeof kk[0], cmp_double);
    *wall = w[1];
    *kern = kk[1];
    free(ids);
    free(sc);
    free(best);
}

static void knn_compare(const options *o, const dataset *ds)
{
    loupe_err err;
    loupe_err_clear(&err);
    const int64_t n = o->keys;
    printf("== kNN alone, one head: %lld keys x %lld queries, dim %d, k %d, %s keys\n",
           (long long)n, (long long)n, DIM, o->k, ann_key_type_name(o->type));
    /* Warm-up: module load, first allocations. */
    {
        rt_cuda_knn_info info;
        double w, kk;
        time_gpu_knn(o, ds, 1024 < n ? 1024 : n, &w, &kk, &info);
    }
    printf("%-14s %10s %10s %8s %7s %9s %9s\n", "queries", "wall_ms", "kernel_ms", "splits",
           "K'", "cpu_redo", "dev_MiB");
    for (int i = -1; i < o->n_bq; i++) {
        int64_t nq = i < 0 ? n : o->bq[i];
        if (i >= 0 && (nq == 0 || nq >= n))
            continue;
        rt_cuda_knn_info info;
        double w, kk;
        time_gpu_knn(o, ds, nq, &w, &kk, &info);
        printf("%-14lld %10.2f %10.2f %8d %7d %9lld %9.1f\n", (long long)nq, 1e3 * w, 1e3 * kk,
               info.nsplit, info.kkeep, (long long)info.n_fallback,
               info.device_bytes / 1048576.0);
    }

    /* CPU on a subset, extrapolated; and agreement of the two on that subset. */
    int64_t cq = o->cpu_q < n ? o->cpu_q : n;
    if (cq <= 0)
        return;
    int32_t *ci = malloc((size_t)cq * o->k * sizeof *ci), *gi = malloc((size_t)cq * o->k * sizeof *gi);
    float *cs = malloc((size_t)cq * o->k * sizeof *cs), *gs = malloc((size_t)cq * o->k * sizeof *gs);
    if (!ci || !gi || !cs || !gs)
        die("kNN comparison", NULL);
    double t0 = now_s();
    if (ann_knn_cpu(NULL, ds->keys, ds->bq, cq, o->k, o->threads, ci, cs, NULL, &err))
        die("CPU kNN", &err);
    double cpu = now_s() - t0;
    int dev = o->device;
    if (rt_cuda_knn(&dev, ds->keys, ds->bq, cq, o->k, o->threads, gi, gs, NULL, &err))
        die("GPU kNN", &err);
    int64_t same = 0;
    double max_diff = 0;
    for (int64_t q = 0; q < cq; q++) {
        int all = 1;
        for (int j = 0; j < o->k; j++) {
            int found = 0;
            for (int l = 0; l < o->k && !found; l++)
                found = gi[q * o->k + j] == ci[q * o->k + l];
            all &= found;
            max_diff = fmax(max_diff, fabs((double)gs[q * o->k + j] - cs[q * o->k + j]));
        }
        same += all;
    }
    printf("ann_knn_cpu (%d threads): %lld queries in %.3f s -> %.0f ms per head of %lld "
           "queries (extrapolated)\n",
           o->threads, (long long)cq, cpu, 1e3 * cpu * (double)n / (double)cq, (long long)n);
    printf("GPU vs CPU on those queries: %lld of %lld identical top-%d id sets (the rest differ "
           "only by fp32 near-ties at rank %d), largest score difference at equal rank %.3g\n",
           (long long)same, (long long)cq, o->k, o->k, max_diff);
    printf("reference (DESIGN.md): unfused matmul + torch.topk, 138 ms per head at 128K x 128K\n\n");
    free(ci);
    free(gi);
    free(cs);
    free(gs);
}

/* ---- 2. Index builds ------------------------------------------------------------------------ */

typedef struct {
    const options *o;
    dataset *ds;
    int64_t build_queries;
    double deadline; /* no new build starts after this (0: none) */
    pthread_mutex_t mu;
    int64_t next, built;
    double knn_s, proj_s, repair_s, total_s;
    ann_index **keep; /* (recall_indexes) the first indexes, kept for the recall measurement */
    int failed;
    loupe_err err;
} sweep;

/* The GPU calls' own time, summed over a sweep's builds (they run at once, so these overlap). */
static struct {
    pthread_mutex_t mu;
    int64_t knn_calls, prune_calls, lists_gpu, lists_long, lists_cpu;
    int64_t knn_queries, knn_redo; /* the wide path's queries and those its sampled threshold
                                      left to the radix selection */
    double knn_wall, knn_prep, knn_kernel, prune_wall, prune_upload, prune_kernel, prune_download;
} g_gpu = {.mu = PTHREAD_MUTEX_INITIALIZER};

static loupe_status knn_timed(void *user, const ann_keys *keys, const float *queries, int64_t nq,
                              int k, int threads, int32_t *ids, float *scores,
                              int32_t *key_best_query, loupe_err *err)
{
    rt_cuda_knn_opts ko;
    rt_cuda_knn_opts_init(&ko);
    ko.device = *(const int *)user;
    rt_cuda_knn_info info;
    loupe_status st = rt_cuda_knn_run(&ko, keys, queries, nq, k, threads, ids, scores,
                                      key_best_query, &info, err);
    pthread_mutex_lock(&g_gpu.mu);
    g_gpu.knn_calls++;
    g_gpu.knn_wall += info.gpu_s;
    g_gpu.knn_prep += info.prep_s;
    g_gpu.knn_kernel += info.kernel_s;
    g_gpu.knn_queries += info.wide ? nq : 0;
    g_gpu.knn_redo += info.wide_redo;
    pthread_mutex_unlock(&g_gpu.mu);
    return st;
}

static loupe_status prune_timed(void *user, const ann_prune_job *job, loupe_err *err)
{
    rt_cuda_prune_info info;
    loupe_status st = rt_cuda_prune_run(*(const int *)user, job, &info, err);
    pthread_mutex_lock(&g_gpu.mu);
    g_gpu.prune_calls++;
    g_gpu.prune_wall += info.wall_s;
    g_gpu.prune_upload += info.upload_s;
    g_gpu.prune_kernel += info.kernel_s;
    g_gpu.prune_download += info.download_s;
    g_gpu.lists_gpu += info.n_gpu;
    g_gpu.lists_long += info.n_long;
    g_gpu.lists_cpu += info.n_cpu;
    pthread_mutex_unlock(&g_gpu.mu);
    return st;
}

static void *build_worker(void *arg)
{
    sweep *s = arg;
    const options *o = s->o;
    int dev = o->device;
    int per = o->threads / o->concurrent > 0 ? o->threads / o->concurrent : 1;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int64_t i = s->next;
        int go = !s->failed && i < o->indexes && (s->deadline == 0 || now_s() < s->deadline);
        if (go)
            s->next++;
        pthread_mutex_unlock(&s->mu);
        if (!go)
            break;
        dataset *ds = &s->ds[(i / 4) % o->datasets];
        ann_build_opts bo;
        ann_build_opts_init(&bo);
        bo.threads = per;
        bo.seed = (uint64_t)i + 1;
        bo.build_k = o->k;
        bo.prune_nearest = o->nearest;
        bo.max_build_queries = s->build_queries;
        bo.knn = knn_timed;
        bo.knn_user = &dev;
        if (!o->cpu_prune) {
            bo.prune_lists = prune_timed;
            bo.prune_user = &dev;
        }
        if (o->degree > 0)
            bo.degree = o->degree;
        ann_index *ix = NULL;
        ann_build_stats st;
        loupe_err err;
        loupe_err_clear(&err);
        loupe_status rc =
            ann_index_build(ANN_GRAPH, ds->keys, ds->bq, o->keys, &bo, &ix, &st, &err);
        pthread_mutex_lock(&s->mu);
        if (rc != LOUPE_OK) {
            if (!s->failed)
                s->err = err;
            s->failed = 1;
        } else {
            s->built++;
            s->knn_s += st.knn_s;
            s->proj_s += st.projection_s;
            s->repair_s += st.repair_s;
            s->total_s += st.total_s;
            if (i < o->recall_indexes) {
                s->keep[i] = ix;
                ix = NULL;
            }
        }
        pthread_mutex_unlock(&s->mu);
        ann_index_destroy(ix);
    }
    return NULL;
}

/* recall@100 and fraction of keys scanned of index ix at beam ef. */
static void measure_recall(const options *o, const dataset *ds, const ann_index *ix, int ef,
                           double *recall, double *scanned)
{
    int nth = o->threads;
    ann_search_ctx **ctx = calloc((size_t)nth, sizeof *ctx);
    int32_t *ids = malloc((size_t)o->test * RECALL_K * sizeof *ids);
    float *sc = malloc((size_t)o->test * RECALL_K * sizeof *sc);
    loupe_err err;
    loupe_err_clear(&err);
    if (!ctx || !ids || !sc)
        die("recall", NULL);
    for (int t = 0; t < nth; t++)
        if (ann_search_ctx_create(o->keys, ef, &ctx[t], &err))
            die("search context", &err);
    ann_search_params p = {.k = RECALL_K, .ef = ef};
    if (ann_search_batch(ix, ctx, nth, ds->tq, o->test, &p, ids, sc, &err))
        die("search", &err);
    int64_t hits = 0, scan = 0;
    for (int t = 0; t < nth; t++)
        scan += ann_search_ctx_scanned(ctx[t]);
    for (int64_t q = 0; q < o->test; q++)
        for (int j = 0; j < RECALL_K; j++)
            for (int l = 0; l < RECALL_K; l++)
                if (ids[q * RECALL_K + j] >= 0 &&
                    ids[q * RECALL_K + j] == ds->truth[q * RECALL_K + l]) {
                    hits++;
                    break;
                }
    *recall = (double)hits / ((double)o->test * RECALL_K);
    *scanned = (double)scan / ((double)o->test * (double)o->keys);
    for (int t = 0; t < nth; t++)
        ann_search_ctx_destroy(ctx[t]);
    free(ctx);
    free(ids);
    free(sc);
}

static void run_sweep(const options *o, dataset *ds)
{
    printf("== Index builds: %lld indexes of %lld keys (dim %d, %s keys, build k %d, degree %d), "
           "%d builds in flight x %d threads, kNN on the GPU, pruning on the %s\n",
           (long long)o->indexes, (long long)o->keys, DIM, ann_key_type_name(o->type), o->k,
           o->degree > 0 ? o->degree : 32, o->concurrent,
           o->threads / o->concurrent > 0 ? o->threads / o->concurrent : 1,
           o->cpu_prune ? "CPU" : "GPU");
    printf("%-9s %6s %7s %7s %7s %8s %10s %11s", "build_q", "built", "knn_s", "proj_s",
           "repair_s", "idx_s", "wall_s", "total_s");
    for (int e = 0; e < o->n_ef; e++)
        printf("  r@100/ef%-4d %%scan", o->ef[e]);
    printf("\n");
    fflush(stdout);
    int any_extrapolated = 0;
    for (int b = 0; b < o->n_bq; b++) {
        sweep s;
        memset(&s, 0, sizeof s);
        s.o = o;
        s.ds = ds;
        s.build_queries = o->bq[b];
        s.keep = calloc((size_t)(o->recall_indexes > 0 ? o->recall_indexes : 1), sizeof *s.keep);
        pthread_mutex_init(&s.mu, NULL);
        double t0 = now_s();
        if (o->time_limit > 0)
            s.deadline = t0 + o->time_limit / o->n_bq;
        pthread_t *th = malloc((size_t)o->concurrent * sizeof *th);
        for (int t = 0; t < o->concurrent; t++)
            if (pthread_create(&th[t], NULL, build_worker, &s)) {
                fprintf(stderr, "bench_anns_build: cannot start a thread\n");
                exit(1);
            }
        for (int t = 0; t < o->concurrent; t++)
            pthread_join(th[t], NULL);
        double wall = now_s() - t0;
        free(th);
        if (s.failed)
            die("index build", &s.err);
        int64_t nb = s.built > 0 ? s.built : 1;
        int extrap = s.built < o->indexes;
        any_extrapolated |= extrap;
        char bq[32];
        if (o->bq[b] == 0 || o->bq[b] >= o->keys)
            snprintf(bq, sizeof bq, "all");
        else
            snprintf(bq, sizeof bq, "%lld", (long long)o->bq[b]);
        printf("%-9s %6lld %7.3f %7.3f %7.3f %8.3f %10.1f %10.1f%s", bq, (long long)s.built,
               s.knn_s / nb, s.proj_s / nb, s.repair_s / nb, s.total_s / nb, wall,
               wall * (double)o->indexes / (double)nb, extrap ? "*" : " ");
        for (int e = 0; e < o->n_ef; e++) {
            double rs = 0, fs = 0;
            int m = 0;
            for (int i = 0; i < o->recall_indexes; i++) {
                if (!s.keep[i] || o->test == 0)
                    continue;
                dataset *d = &ds[(i / 4) % o->datasets];
                ensure_truth(o, d);
                double r, f;
                measure_recall(o, d, s.keep[i], o->ef[e], &r, &f);
                rs += r;
                fs += f;
                m++;
            }
            if (m)
                printf("  %12.4f %5.2f", rs / m, 100.0 * fs / m);
            else
                printf("  %12s %5s", "-", "-");
        }
        printf("\n");
        pthread_mutex_lock(&g_gpu.mu);
        printf("  GPU calls, seconds summed over them: kNN %lld, wall %.2f, keys' upload and "
               "widening %.2f, kernels %.2f; pruning %lld, wall %.2f, uploads %.2f, kernels %.2f, "
               "downloads %.2f; lists %lld on the GPU (%lld long), %lld on the CPU\n",
               (long long)g_gpu.knn_calls, g_gpu.knn_wall, g_gpu.knn_prep, g_gpu.knn_kernel,
               (long long)g_gpu.prune_calls, g_gpu.prune_wall, g_gpu.prune_upload,
               g_gpu.prune_kernel, g_gpu.prune_download, (long long)g_gpu.lists_gpu,
               (long long)g_gpu.lists_long, (long long)g_gpu.lists_cpu);
        if (g_gpu.knn_queries > 0)
            printf("  wide kNN: %lld of %lld queries left by the sampled threshold to the radix "
                   "selection\n",
                   (long long)g_gpu.knn_redo, (long long)g_gpu.knn_queries);
        g_gpu.knn_queries = g_gpu.knn_redo = 0;
        g_gpu.knn_calls = g_gpu.prune_calls = g_gpu.lists_gpu = g_gpu.lists_long = 0;
        g_gpu.lists_cpu = 0;
        g_gpu.knn_wall = g_gpu.knn_prep = g_gpu.knn_kernel = g_gpu.prune_wall = 0;
        g_gpu.prune_upload = 0;
        g_gpu.prune_kernel = g_gpu.prune_download = 0;
        pthread_mutex_unlock(&g_gpu.mu);
        fflush(stdout);
        for (int i = 0; i < o->recall_indexes; i++)
            ann_index_destroy(s.keep[i]);
        free(s.keep);
        pthread_mutex_destroy(&s.mu);
    }
    printf("knn_s, proj_s, repair_s, idx_s: mean seconds per index (ann_build_stats; builds in "
           "flight overlap, so their sum exceeds the wall time); total_s: wall time for all %lld "
           "indexes%s; recall@100 over %lld held-out queries of the first %d indexes\n",
           (long long)o->indexes,
           any_extrapolated ? " (* = extrapolated from the indexes built within --time-limit)"
                            : "",
           (long long)o->test, o->recall_indexes);
}

int main(int argc, char **argv)
{
    options o;
    parse(argc, argv, &o);
    loupe_err err;
    loupe_err_clear(&err);
    rt_cuda_device_info dev;
    if (!rt_cuda_available()) {
        fprintf(stderr, "bench_anns_build: no usable CUDA device\n");
        return 1;
    }
    if (rt_cuda_device_info_get(o.device, &dev, &err))
        die("device", &err);
    printf("device %d: %s, %d SMs, %.1f GiB\n", dev.device, dev.name, dev.n_sm,
           dev.total_mem / 1073741824.0);
    int n_groups = (int)((o.indexes + 3) / 4);
    if (o.datasets > n_groups)
        o.datasets = n_groups;
    double t0 = now_s();
    dataset *ds = calloc((size_t)o.datasets, sizeof *ds);
    for (int d = 0; d < o.datasets; d++)
        make_dataset(&o, d, &ds[d]);
    printf("generated %d KV heads of %lld keys + %lld build queries + %lld test queries in "
           "%.1f s (index i uses KV head (i/4) mod %d)\n\n",
           o.datasets, (long long)o.keys, (long long)o.keys, (long long)o.test, now_s() - t0,
           o.datasets);
    if (o.knn_compare)
        knn_compare(&o, &ds[0]);
    run_sweep(&o, ds);
    for (int d = 0; d < o.datasets; d++) {
        ann_keys_destroy(ds[d].keys);
        free(ds[d].bq);
        free(ds[d].tq);
        free(ds[d].truth);
    }
    free(ds);
    return 0;
}
