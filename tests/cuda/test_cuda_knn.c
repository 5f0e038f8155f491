/*
 * test_cuda_knn CASE: rt_cuda_knn (exact query→key top-k on the GPU, the graph build's kNN)
 * against ann_knn_cpu on fresh random data (seed printed). CASE is one of
 *   random    Gaussian keys with a bias and scaled queries, f32 / bf16 / int8 keys, odd sizes
 *   synth     ann_synth_generate's out-of-distribution keys and build queries (RoPE, sinks)
 *   shapes    dims 64, 96, 200 (padded to 64/128/256), 300 (the wide path), k 1 and 200 (the
 *             fused scan), 700 to 8192 (the wide path), strided key views (bf16 and int8 over
 *             caller rows)
 *   edges     k > n (on both paths), n = 1, nq = 0, k <= 0; forced key splits and query chunks
 *   fallback  duplicated keys with margin 0: certificates fail, the CPU redoes those queries
 *   threads   four host threads calling at once, each its own data and key type
 *   large     131072 keys, few queries: the planner's many key splits
 *   wide      131072 keys, k 1024: the graph build's large build k on the wide path (its
 *             sampled selection, and keys tied so often that the radix selection decides)
 * Exits 77 when no CUDA device is usable.
 *
 * What "the same as the CPU" means (knn.cu, "Exactness"): both return fp32 scores summed in
 * different orders, so each may be off the true q·k by up to dim·2^-24·Σ|q_i k_i| (tol below,
 * computed per key in double). Per query:
 *   - the first min(k, n) slots hold distinct valid ids with non-increasing scores, the rest
 *     -1 / -inf;
 *   - each score is the key's true score within tol;
 *   - rank by rank, GPU and CPU scores agree within tol;
 *   - the id sets agree except for keys tied with the other side's k-th score within tol (a
 *     near-tie at the cut may go either way, nothing else may differ).
 * key_best_query: the GPU's choice is the argmax of bf16 scores, so its true score must be
 * within E(gpu's query) + E(cpu's query) + tol of the CPU choice's (E: rt_cuda_knn_bound).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "cuda/cuda_test.h"
#include "runtime/cuda/knn.cuh"

static uint64_t g_seed;

/* ---- Data ------------------------------------------------------------------------------- */

static float *gauss(test_rng *r, int64_t n, int dim, float bias, float scale_lo, float scale_hi)
{
    float *v = malloc((size_t)n * dim * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        float s = scale_lo + (scale_hi - scale_lo) * test_rng_uniform(r);
        for (int d = 0; d < dim; d++)
            v[i * dim + d] = s * (test_rng_normal(r) + (d % 7 == 3 ? bias : 0.0f));
    }
    return v;
}

static float bf16_round(float f) /* round to nearest even, as ann_keys stores bf16 */
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- Comparison ------------------------------------------------------------------------- */

typedef struct {
    const ann_keys *keys;
    int64_t n;
    int dim;
    float *row; /* (dim) scratch */
} scorer;

/* True score of key id for q, in double, from the stored key widened to f32; *tol receives
 * the fp32 summation bound dim·2^-24·Σ|q_i k_i| (doubled: either side may be off that much). */
static double true_score(scorer *s, const float *q, int32_t id, double *tol)
{
    ann_keys_row(s->keys, id, s->row);
    double acc = 0, abs = 0;
    for (int d = 0; d < s->dim; d++) {
        acc += (double)q[d] * s->row[d];
        abs += fabs((double)q[d] * s->row[d]);
    }
    *tol = 2.0 * s->dim * ldexp(1.0, -24) * abs + 1e-30;
    return acc;
}

static int in_list(const int32_t *ids, int m, int32_t id)
{
    for (int i = 0; i < m; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

/* max ||key|| and max ||key − bf16(key)|| (f32 storage only) over the widened stored keys. */
static void key_norms(const ann_keys *keys, double *w_max, double *r_max)
{
    int64_t n = ann_keys_count(keys);
    int dim = ann_keys_dim(keys);
    float *row = malloc((size_t)dim * sizeof *row);
    *w_max = *r_max = 0;
    for (int64_t i = 0; i < n; i++) {
        ann_keys_row(keys, i, row);
        double w = 0, r = 0;
        for (int d = 0; d < dim; d++) {
            w += (double)row[d] * row[d];
            double e = (double)row[d] - bf16_round(row[d]);
            r += e * e;
        }
        *w_max = fmax(*w_max, sqrt(w));
        if (ann_keys_type(keys) == ANN_KEYS_F32)
            *r_max = fmax(*r_max, sqrt(r));
    }
    free(row);
}

/* Checks one GPU result against the CPU's; returns the number of failed queries. */
static int compare(const char *what, const ann_keys *keys, const float *Q, int64_t nq, int k,
                   const int32_t *gi, const float *gs, const int32_t *gb, const int32_t *ci,
                   const float *cs, const int32_t *cb)
{
    int64_t n = ann_keys_count(keys);
    int dim = ann_keys_dim(keys);
    int keff = k < n ? k : (int)n;
    scorer sc = {keys, n, dim, malloc((size_t)dim * sizeof(float))};
    int bad_q = 0;
    for (int64_t q = 0; q < nq; q++) {
        const float *qv = Q + q * dim;
        const int32_t *G = gi + q * k, *C = ci + q * k;
        const float *GS = gs + q * k, *CS = cs + q * k;
        int ok = 1;
        char why[200] = "";
        /* One tolerance per query: the largest over the keys either side returned. */
        double tq = 0;
        for (int r = 0; r < keff; r++) {
            double t;
            if (G[r] >= 0 && G[r] < n) {
                true_score(&sc, qv, G[r], &t);
                tq = fmax(tq, t);
            }
            true_score(&sc, qv, C[r], &t);
            tq = fmax(tq, t);
        }
        for (int r = 0; r < k && ok; r++) {
            if (r >= keff) {
                if (G[r] != -1 || !(isinf(GS[r]) && GS[r] < 0)) {
                    ok = 0;
                    snprintf(why, sizeof why, "slot %d past %d should be -1/-inf: %d %g", r, keff,
                             G[r], GS[r]);
                }
                continue;
            }
            double tol;
            if (G[r] < 0 || G[r] >= n || in_list(G, r, G[r])) {
                ok = 0;
                snprintf(why, sizeof why, "rank %d: bad or repeated id %d", r, G[r]);
                break;
            }
            if (r > 0 && GS[r] > GS[r - 1]) {
                ok = 0;
                snprintf(why, sizeof why, "rank %d: score %g above rank %d's %g", r, GS[r], r - 1,
                         GS[r - 1]);
                break;
            }
            double t = true_score(&sc, qv, G[r], &tol);
            if (fabs(GS[r] - t) > tol) {
                ok = 0;
                snprintf(why, sizeof why, "rank %d id %d: score %.9g, true %.9g (tol %.3g)", r,
                         G[r], GS[r], t, tol);
                break;
            }
            if (fabs(GS[r] - CS[r]) > tq) {
                ok = 0;
                snprintf(why, sizeof why, "rank %d: GPU score %.9g, CPU %.9g (tol %.3g)", r,
                         GS[r], CS[r], tq);
            }
        }
        if (ok) {
            double tg, tc;
            double gk = true_score(&sc, qv, G[keff - 1], &tg);
            double ck = true_score(&sc, qv, C[keff - 1], &tc);
            for (int r = 0; r < keff && ok; r++) {
                double t;
                if (!in_list(C, keff, G[r])) {
                    double s = true_score(&sc, qv, G[r], &t);
                    if (s < ck - t - tc) {
                        ok = 0;
                        snprintf(why, sizeof why,
                                 "GPU id %d (true %.9g) is not in the CPU's top %d, whose last "
                                 "scores %.9g",
                                 G[r], s, keff, ck);
                    }
                }
                if (!in_list(G, keff, C[r])) {
                    double s = true_score(&sc, qv, C[r], &t);
                    if (s > gk + t + tg) {
                        ok = 0;
                        snprintf(why, sizeof why,
                                 "CPU id %d (true %.9g) is missing from the GPU's top %d, whose "
                                 "last scores %.9g",
                                 C[r], s, keff, gk);
                    }
                }
            }
        }
        if (!ok) {
            if (bad_q < 5)
                fprintf(stderr, "%s: query %lld: %s\n", what, (long long)q, why);
            bad_q++;
        }
    }
    int bad_b = 0;
    if (gb) {
        double w_max, r_max;
        key_norms(keys, &w_max, &r_max);
        double *E = malloc((size_t)(nq ? nq : 1) * sizeof *E);
        for (int64_t q = 0; q < nq; q++)
            E[q] = rt_cuda_knn_bound(Q + q * dim, dim, w_max, r_max);
        for (int64_t j = 0; j < n; j++) {
            if (nq == 0) {
                bad_b += gb[j] != -1;
                continue;
            }
            if (gb[j] < 0 || gb[j] >= nq) {
                if (bad_b++ < 5)
                    fprintf(stderr, "%s: key %lld: best query %d out of range\n", what,
                            (long long)j, gb[j]);
                continue;
            }
            if (gb[j] == cb[j])
                continue;
            double tg, tc;
            double sg = true_score(&sc, Q + (int64_t)gb[j] * dim, (int32_t)j, &tg);
            double scb = true_score(&sc, Q + (int64_t)cb[j] * dim, (int32_t)j, &tc);
            if (sg < scb - E[gb[j]] - E[cb[j]] - tg - tc) {
                if (bad_b++ < 5)
                    fprintf(stderr,
                            "%s: key %lld: GPU best query %d scores %.9g, CPU's %d scores %.9g "
                            "(allowed %.3g)\n",
                            what, (long long)j, gb[j], sg, cb[j], scb,
                            E[gb[j]] + E[cb[j]] + tg + tc);
            }
        }
        free(E);
    }
    free(sc.row);
    CHECK_MSG(bad_q == 0, "%s: %d of %lld queries differ from the CPU", what, bad_q,
              (long long)nq);
    CHECK_MSG(bad_b == 0, "%s: %d keys' best query is wrong", what, bad_b);
    return bad_q + bad_b;
}

/* ---- One run: GPU and CPU on the same input ---------------------------------------------- */

typedef struct {
    const char *what;
    const ann_keys *keys;
    const float *Q;
    int64_t nq;
    int k;
    int want_best;
    rt_cuda_knn_opts opts;
    rt_cuda_knn_info info;
    loupe_status st;
    int failures; /* queries/keys that differ */
} run_case;

/* GPU then CPU; outputs poisoned first. Safe to run from several threads at once. */
static void run_one(run_case *c)
{
    int64_t n = ann_keys_count(c->keys);
    size_t nk = (size_t)(c->nq ? c->nq : 1) * (size_t)c->k;
    int32_t *gi = malloc(nk * sizeof *gi), *ci = malloc(nk * sizeof *ci);
    float *gs = malloc(nk * sizeof *gs), *cs = malloc(nk * sizeof *cs);
    int32_t *gb = c->want_best ? malloc((size_t)n * sizeof *gb) : NULL;
    int32_t *cb = c->want_best ? malloc((size_t)n * sizeof *cb) : NULL;
    memset(gi, 0x5a, nk * sizeof *gi);
    memset(gs, 0xff, nk * sizeof *gs); /* NaN */
    if (gb)
        memset(gb, 0x5a, (size_t)n * sizeof *gb);
    loupe_err err;
    loupe_err_clear(&err);
    c->st = rt_cuda_knn_run(&c->opts, c->keys, c->Q, c->nq, c->k, 4, gi, gs, gb, &c->info, &err);
    if (c->st != LOUPE_OK) {
        fprintf(stderr, "%s: rt_cuda_knn_run: %s\n", c->what, loupe_err_message(&err));
        c->failures = 1;
        goto done;
    }
    loupe_status cst = ann_knn_cpu(NULL, c->keys, c->Q, c->nq, c->k, 4, ci, cs, cb, &err);
    CHECK_MSG(cst == LOUPE_OK, "%s: ann_knn_cpu: %s", c->what, loupe_err_message(&err));
    c->failures = compare(c->what, c->keys, c->Q, c->nq, c->k, gi, gs, gb, ci, cs, cb);
    fprintf(stderr,
            "%s: n %lld, nq %lld, k %d: %s, splits %d, K' %d, slots %d, rows/warp %d, chunks "
            "%lld, CPU redo %lld, %.1f MiB, kernels %.2f ms\n",
            c->what, (long long)n, (long long)c->nq, c->k,
            c->info.cpu_only ? "CPU only" : c->info.wide ? "GPU (wide)" : "GPU",
            c->info.nsplit, c->info.kkeep, c->info.bcap, c->info.rows_per_warp,
            (long long)c->info.n_chunks, (long long)c->info.n_fallback,
            c->info.device_bytes / 1048576.0, 1e3 * c->info.kernel_s);
done:
    free(gi);
    free(ci);
    free(gs);
    free(cs);
    free(gb);
    free(cb);
}

static const ann_key_type TYPES[] = {ANN_KEYS_F32, ANN_KEYS_BF16, ANN_KEYS_INT8};

/* Which path computed a result. */
enum { FUSED = 0, CPU_ONLY = 1, WIDE = 2 };

static int path_of(const rt_cuda_knn_info *i) { return i->cpu_only ? CPU_ONLY : i->wide ? WIDE : FUSED; }

/* Runs one case over all three key types; also checks that at most 5 % of the queries needed
 * the CPU (with the default margin almost none should) and which path was taken. */
static void all_types(const char *name, const float *K, int64_t n, int dim, const float *Q,
                      int64_t nq, int k, const rt_cuda_knn_opts *o, int expect_path)
{
    for (int t = 0; t < 3; t++) {
        ann_keys *keys = NULL;
        loupe_err err;
        loupe_err_clear(&err);
        CHECK(ann_keys_create(K, n, dim, TYPES[t], &keys, &err) == LOUPE_OK);
        char what[96];
        snprintf(what, sizeof what, "%s/%s", name, ann_key_type_name(TYPES[t]));
        run_case c = {.what = what, .keys = keys, .Q = Q, .nq = nq, .k = k, .want_best = 1};
        if (o)
            c.opts = *o;
        else
            rt_cuda_knn_opts_init(&c.opts);
        run_one(&c);
        CHECK_MSG(c.st == LOUPE_OK && c.failures == 0, "%s failed", what);
        CHECK_MSG(path_of(&c.info) == expect_path, "%s: path %d, expected %d", what,
                  path_of(&c.info), expect_path);
        CHECK_MSG(c.info.n_fallback * 20 <= nq, "%s: %lld of %lld queries needed the CPU", what,
                  (long long)c.info.n_fallback, (long long)nq);
        ann_keys_destroy(keys);
    }
}

/* ---- Cases ------------------------------------------------------------------------------ */

static void case_random(test_rng *r)
{
    const int64_t n = 10007, nq = 1531;
    const int dim = 128;
    float *K = gauss(r, n, dim, 1.5f, 0.7f, 1.3f), *Q = gauss(r, nq, dim, 0.0f, 0.3f, 3.0f);
    all_types("random", K, n, dim, Q, nq, 64, NULL, 0);
    free(K);
    free(Q);
}

static void case_synth(void)
{
    ann_synth_opts so = {.n_keys = 16384, .n_test = 0, .dim = 128, .seed = g_seed, .rope = 1};
    float *K, *BQ, *TQ;
    loupe_err err;
    loupe_err_clear(&err);
    CHECK(ann_synth_generate(&so, &K, &BQ, &TQ, &err) == LOUPE_OK);
    /* Every 4th build query: all positions, a quarter of the CPU reference's time. */
    const int64_t nq = so.n_keys / 4;
    float *Q = malloc((size_t)nq * so.dim * sizeof *Q);
    for (int64_t i = 0; i < nq; i++)
        memcpy(Q + i * so.dim, BQ + 4 * i * so.dim, (size_t)so.dim * sizeof *Q);
    all_types("synth", K, so.n_keys, so.dim, Q, nq, 64, NULL, 0);
    free(K);
    free(BQ);
    free(TQ);
    free(Q);
}

static void case_shapes(test_rng *r)
{
    static const struct {
        int dim, k;
        int64_t n, nq;
        int path;
    } S[] = {{64, 32, 4099, 517, FUSED},    {96, 16, 3001, 333, FUSED},
             {200, 40, 2500, 300, FUSED},   {300, 10, 1000, 50, WIDE},
             {128, 1, 5000, 700, FUSED},    {128, 200, 5000, 400, FUSED},
             {24, 8, 777, 129, FUSED},      {128, 1024, 20000, 300, WIDE},
             {64, 3000, 5000, 64, WIDE},    {96, 700, 701, 90, WIDE},
             {128, 8192, 9000, 6, WIDE}};
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        float *K = gauss(r, S[i].n, S[i].dim, 1.0f, 0.5f, 1.5f);
        float *Q = gauss(r, S[i].nq, S[i].dim, 0.0f, 0.5f, 2.0f);
        char name[64];
        snprintf(name, sizeof name, "shape dim %d k %d", S[i].dim, S[i].k);
        all_types(name, K, S[i].n, S[i].dim, Q, S[i].nq, S[i].k, NULL, S[i].path);
        free(K);
        free(Q);
    }

    /* Views over caller rows wider than dim (a KV row holds other heads too). */
    const int64_t n = 3333, nq = 257, stride = 160;
    const int dim = 128, k = 48;
    float *K = gauss(r, n, dim, 1.0f, 0.5f, 1.5f), *Q = gauss(r, nq, dim, 0.0f, 0.5f, 2.0f);
    uint16_t *kb = malloc((size_t)n * stride * sizeof *kb);
    int8_t *k8 = malloc((size_t)n * stride);
    float *sc8 = malloc((size_t)n * sizeof *sc8);
    for (int64_t i = 0; i < n; i++) {
        float amax = 0;
        for (int d = 0; d < dim; d++)
            amax = fmaxf(amax, fabsf(K[i * dim + d]));
        sc8[i] = amax / 127.0f;
        for (int64_t d = 0; d < stride; d++) {
            float v = d < dim ? K[i * dim + d] : 1e30f; /* garbage past dim must be ignored */
            float b = bf16_round(v);
            uint32_t u;
            memcpy(&u, &b, sizeof u);
            kb[i * stride + d] = (uint16_t)(u >> 16);
            k8[i * stride + d] = d < dim ? (int8_t)lrintf(v / sc8[i]) : (int8_t)127;
        }
    }
    ann_keys *vb = NULL, *v8 = NULL;
    loupe_err err;
    loupe_err_clear(&err);
    CHECK(ann_keys_view(ANN_KEYS_BF16, kb, NULL, n, dim, stride, &vb, &err) == LOUPE_OK);
    CHECK(ann_keys_view(ANN_KEYS_INT8, k8, sc8, n, dim, stride, &v8, &err) == LOUPE_OK);
    run_case c1 = {.what = "view/bf16", .keys = vb, .Q = Q, .nq = nq, .k = k, .want_best = 1};
    run_case c2 = {.what = "view/int8", .keys = v8, .Q = Q, .nq = nq, .k = k, .want_best = 1};
    rt_cuda_knn_opts_init(&c1.opts);
    rt_cuda_knn_opts_init(&c2.opts);
    run_one(&c1);
    run_one(&c2);
    CHECK(c1.st == LOUPE_OK && c1.failures == 0);
    CHECK(c2.st == LOUPE_OK && c2.failures == 0);
    ann_keys_destroy(vb);
    ann_keys_destroy(v8);
    free(kb);
    free(k8);
    free(sc8);
    free(K);
    free(Q);
}

static void case_edges(test_rng *r)
{
    const int dim = 128;
    /* k > n: the first n slots, then -1 / -inf (as the CPU). */
    static const struct {
        int64_t n, nq;
        int k, path;
    } S[] = {{50, 97, 64, FUSED}, {1, 33, 1, FUSED},   {1, 5, 7, FUSED},
             {70, 200, 64, FUSED}, {64, 130, 64, FUSED}, {3000, 40, 5000, WIDE}};
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        float *K = gauss(r, S[i].n, dim, 1.0f, 0.5f, 1.5f);
        float *Q = gauss(r, S[i].nq, dim, 0.0f, 0.5f, 2.0f);
        char name[64];
        snprintf(name, sizeof name, "edge n %lld k %d", (long long)S[i].n, S[i].k);
        all_types(name, K, S[i].n, dim, Q, S[i].nq, S[i].k, NULL, S[i].path);
        free(K);
        free(Q);
    }

    /* Forced key splits and query chunks (several passes; best-query indices offset by the
     * chunk's first query). */
    const int64_t n = 10007, nq = 1531;
    float *K = gauss(r, n, dim, 1.5f, 0.7f, 1.3f), *Q = gauss(r, nq, dim, 0.0f, 0.3f, 3.0f);
    rt_cuda_knn_opts o;
    rt_cuda_knn_opts_init(&o);
    o.nsplit = 5;
    o.max_chunk = 700;
    all_types("splits 5 chunks 700", K, n, dim, Q, nq, 64, &o, 0);
    o.nsplit = 1;
    o.max_chunk = 129;
    all_types("splits 1 chunks 129", K, n, dim, Q, nq, 16, &o, 0);

    ann_keys *keys = NULL;
    loupe_err err;
    loupe_err_clear(&err);
    CHECK(ann_keys_create(K, n, dim, ANN_KEYS_BF16, &keys, &err) == LOUPE_OK);
    /* nq = 0: nothing to do, every key's best query is -1. */
    int32_t *best = malloc((size_t)n * sizeof *best), id1;
    float s1;
    memset(best, 0, (size_t)n * sizeof *best);
    CHECK(rt_cuda_knn(NULL, keys, Q, 0, 8, 2, &id1, &s1, best, &err) == LOUPE_OK);
    int all_neg = 1;
    for (int64_t i = 0; i < n; i++)
        all_neg &= best[i] == -1;
    CHECK_MSG(all_neg, "nq = 0: best queries should all be -1");
    /* k <= 0 is invalid, as for the CPU. */
    CHECK(rt_cuda_knn(NULL, keys, Q, 1, 0, 2, &id1, &s1, NULL, &err) == LOUPE_ERR_INVALID);
    /* The public entry point with a device number, no best queries: equals the CPU. */
    int dev = 0;
    const int k = 32;
    int32_t *gi = malloc((size_t)nq * k * sizeof *gi), *ci = malloc((size_t)nq * k * sizeof *ci);
    float *gs = malloc((size_t)nq * k * sizeof *gs), *cs = malloc((size_t)nq * k * sizeof *cs);
    CHECK(rt_cuda_knn(&dev, keys, Q, nq, k, 2, gi, gs, NULL, &err) == LOUPE_OK);
    CHECK(ann_knn_cpu(NULL, keys, Q, nq, k, 4, ci, cs, NULL, &err) == LOUPE_OK);
    CHECK(compare("rt_cuda_knn(&device)", keys, Q, nq, k, gi, gs, NULL, ci, cs, NULL) == 0);
    ann_keys_destroy(keys);
    free(best);
    free(gi);
    free(ci);
    free(gs);
    free(cs);
    free(K);
    free(Q);
}

/* n rows of dim floats: row i is B's row i mod distinct (keys tied distinct-fold). */
static float *repeated_rows(const float *B, int64_t distinct, int64_t n, int dim)
{
    float *K = malloc((size_t)n * dim * sizeof *K);
    CHECK(K != NULL);
    for (int64_t i = 0; K && i < n; i++)
        memcpy(K + i * dim, B + (i % distinct) * dim, (size_t)dim * sizeof *K);
    return K;
}

static void case_fallback(test_rng *r)
{
    /* With no margin and one key split, a query's candidate cut is its own k-th approximate
     * score, so the certificate (cut + E <= k-th fp32 score) fails and the CPU redoes it. Each
     * key three times: exact ties at the cut as well. */
    const int64_t base = 1000, n = 3 * base, nq = 500;
    const int dim = 128, k = 20;
    float *B = gauss(r, base, dim, 1.0f, 0.5f, 1.5f), *Q = gauss(r, nq, dim, 0.0f, 0.5f, 2.0f);
    float *K = repeated_rows(B, base, n, dim);
    rt_cuda_knn_opts o;
    rt_cuda_knn_opts_init(&o);
    o.margin = 0;
    o.nsplit = 1;
    for (int t = 0; t < 3; t++) {
        ann_keys *keys = NULL;
        loupe_err err;
        loupe_err_clear(&err);
        CHECK(ann_keys_create(K, n, dim, TYPES[t], &keys, &err) == LOUPE_OK);
        char what[64];
        snprintf(what, sizeof what, "fallback/%s", ann_key_type_name(TYPES[t]));
        run_case c = {.what = what, .keys = keys, .Q = Q, .nq = nq, .k = k, .want_best = 1,
                      .opts = o};
        run_one(&c);
        CHECK(c.st == LOUPE_OK && c.failures == 0);
        CHECK_MSG(c.info.n_fallback > 0, "%s: no query was redone on the CPU", what);
        ann_keys_destroy(keys);
    }
    free(B);
    free(K);
    free(Q);
}

static void *thread_main(void *arg)
{
    run_one(arg);
    return NULL;
}

static void case_threads(test_rng *r)
{
    enum { NT = 4 };
    const int64_t n = 20011, nq = 1200;
    const int dim = 128;
    ann_keys *keys[NT];
    float *K[NT], *Q[NT];
    run_case c[NT];
    pthread_t th[NT];
    char what[NT][32];
    for (int t = 0; t < NT; t++) {
        K[t] = gauss(r, n, dim, 1.0f + 0.3f * t, 0.5f, 1.5f);
        Q[t] = gauss(r, nq, dim, 0.0f, 0.5f, 2.0f);
        loupe_err err;
        loupe_err_clear(&err);
        CHECK(ann_keys_create(K[t], n, dim, TYPES[t % 3], &keys[t], &err) == LOUPE_OK);
        snprintf(what[t], sizeof what[t], "thread %d/%s", t, ann_key_type_name(TYPES[t % 3]));
        c[t] = (run_case){.what = what[t], .keys = keys[t], .Q = Q[t], .nq = nq, .k = 64,
                          .want_best = t % 2 == 0};
        rt_cuda_knn_opts_init(&c[t].opts);
    }
    for (int t = 0; t < NT; t++)
        CHECK(pthread_create(&th[t], NULL, thread_main, &c[t]) == 0);
    for (int t = 0; t < NT; t++) {
        pthread_join(th[t], NULL);
        CHECK_MSG(c[t].st == LOUPE_OK && c[t].failures == 0, "%s failed", what[t]);
        ann_keys_destroy(keys[t]);
        free(K[t]);
        free(Q[t]);
    }
}

/* 131,072 bf16 keys and nq queries, top-k, against the CPU; info for the caller's checks. */
static rt_cuda_knn_info run_131k(test_rng *r, const char *what, int64_t nq, int k)
{
    const int64_t n = 131072;
    const int dim = 128;
    float *K = gauss(r, n, dim, 1.0f, 0.5f, 1.5f), *Q = gauss(r, nq, dim, 0.0f, 0.5f, 2.0f);
    ann_keys *keys = NULL;
    loupe_err err;
    loupe_err_clear(&err);
    CHECK(ann_keys_create(K, n, dim, ANN_KEYS_BF16, &keys, &err) == LOUPE_OK);
    run_case c = {.what = what, .keys = keys, .Q = Q, .nq = nq, .k = k, .want_best = 1};
    rt_cuda_knn_opts_init(&c.opts);
    run_one(&c);
    CHECK(c.st == LOUPE_OK && c.failures == 0);
    ann_keys_destroy(keys);
    free(K);
    free(Q);
    return c.info;
}

static void case_large(test_rng *r)
{
    rt_cuda_knn_info info = run_131k(r, "large/bf16", 300, 64);
    CHECK_MSG(info.nsplit > 1, "large: expected several key splits for 300 queries");
}

/* The graph build's large build k: top-1024 (the wide path), selected by the sampled
 * threshold; then keys of 16 distinct rows, each 8,192 times: every threshold then passes at
 * least 8,192 keys, more than the filter holds, so each row falls back to the radix selection
 * (exact ties broken by the lower key id). */
static void case_wide(test_rng *r)
{
    rt_cuda_knn_info info = run_131k(r, "wide/bf16", 512, 1024);
    CHECK_MSG(path_of(&info) == WIDE, "wide: path %d", path_of(&info));
    CHECK_MSG(info.wide_sampled && info.wide_redo < 512 / 8,
              "wide: sampled %d, %lld of 512 rows left to the radix selection",
              info.wide_sampled, (long long)info.wide_redo);

    const int64_t n = 131072, nq = 64, distinct = 16;
    const int dim = 128;
    float *B = gauss(r, distinct, dim, 1.0f, 0.5f, 1.5f), *Q = gauss(r, nq, dim, 0.0f, 0.5f, 2.0f);
    float *K = repeated_rows(B, distinct, n, dim);
    ann_keys *keys = NULL;
    loupe_err err;
    loupe_err_clear(&err);
    CHECK(ann_keys_create(K, n, dim, ANN_KEYS_BF16, &keys, &err) == LOUPE_OK);
    run_case c = {.what = "wide/ties", .keys = keys, .Q = Q, .nq = nq, .k = 1024,
                  .want_best = 1};
    rt_cuda_knn_opts_init(&c.opts);
    run_one(&c);
    CHECK(c.st == LOUPE_OK && c.failures == 0);
    CHECK_MSG(c.info.wide_sampled && c.info.wide_redo == nq,
              "wide/ties: sampled %d, %lld of %lld rows left to the radix selection",
              c.info.wide_sampled, (long long)c.info.wide_redo, (long long)nq);
    ann_keys_destroy(keys);
    free(B);
    free(K);
    free(Q);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr,
                "usage: test_cuda_knn random|synth|shapes|edges|fallback|threads|large|wide\n");
        return 2;
    }
    cuda_test_require_device();
    g_seed = test_seed();
    test_rng r;
    test_rng_seed(&r, g_seed);
    const char *c = argv[1];
    if (!strcmp(c, "random"))
        case_random(&r);
    else if (!strcmp(c, "synth"))
        case_synth();
    else if (!strcmp(c, "shapes"))
        case_shapes(&r);
    else if (!strcmp(c, "edges"))
        case_edges(&r);
    else if (!strcmp(c, "fallback"))
        case_fallback(&r);
    else if (!strcmp(c, "threads"))
        case_threads(&r);
    else if (!strcmp(c, "large"))
        case_large(&r);
    else if (!strcmp(c, "wide"))
        case_wide(&r);
    else {
        fprintf(stderr, "test_cuda_knn: unknown case '%s'\n", c);
        return 2;
    }
    return test_summary("test_cuda_knn");
}
