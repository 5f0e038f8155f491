/* Group search (ann_search_group): the query heads of a KV group searched with one traversal of
 * their shared graph. On a synthetic attention-like set (anns/synth.c; 20K keys, d = 128, bf16):
 *   - one query is exactly ann_search (ids, scores, counts; with seeds, expand and re-rank);
 *   - flat and IVF answer each query as ann_search does;
 *   - groups of 2 and 4 related queries (one recalled content seen by several heads: the test
 *     query plus per-head noise) keep each query's recall@100 against its exact top-100 within a
 *     small margin of its own single search at the same ef, while scanning fewer key rows per
 *     query; every result is k distinct keys, sorted, with scores exact for the stored keys;
 *   - a group seeded with its previous results does not lose recall;
 *   - expanding 4 pool entries at a time (expand_batch), alone and in a group of 2, keeps
 *     recall within 0.01 of one at a time, with the same result checks;
 *   - a margin (stop below the pool's best by that much) too wide to matter changes nothing,
 *     bit for bit and row for row; a narrow one scans fewer rows, every result still valid;
 *   - interleaved searches (ann_search_many) give each search ann_search's results and rows;
 *   - nq outside 1..ANN_GROUP_MAX fails with a sentence.
 * Recall and rows per query are printed for both pool rankings (max, mean). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "common/test_util.h"

enum { N = 20000, D = 128, NT = 120, K = 100, EF = 200, G_MAX = 4 };

/* Hits of got (K) in truth (K) over K. */
static double recall1(const int32_t *got, const int32_t *truth)
{
    int hit = 0;
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K && got[i] >= 0; j++)
            if (got[i] == truth[j]) {
                hit++;
                break;
            }
    return (double)hit / K;
}

/* The first nf (1..K) of a query's results: distinct valid ids, sorted best first, scores exact
 * for the keys; the rest padding. */
static void check_prefix(const ann_keys *keys, const float *q, const int32_t *ids,
                         const float *sc, int nf)
{
    CHECK(nf >= 1 && nf <= K);
    for (int i = 0; i < K; i++) {
        if (i >= nf) {
            CHECK(ids[i] == -1);
            continue;
        }
        CHECK(ids[i] >= 0 && ids[i] < N);
        if (ids[i] < 0 || ids[i] >= N)
            return;
        CHECK(i == 0 || sc[i] <= sc[i - 1]);
        CHECK(sc[i] == ann_keys_score(keys, q, ids[i]));
        for (int j = 0; j < i; j++)
            CHECK(ids[j] != ids[i]);
    }
}

/* Each query's results: K distinct valid ids, sorted best first, scores exact for the keys. */
static void check_results(const ann_keys *keys, const float *q, const int32_t *ids,
                          const float *sc, int nf)
{
    CHECK(nf == K);
    check_prefix(keys, q, ids, sc, nf);
}

/* nq == 1 against ann_search, bit for bit, on the first nt queries. */
static void check_single(const ann_index *ix, ann_search_ctx *ctx, const float *tq, int nt,
                         const ann_search_params *p)
{
    int32_t a[K], b[K];
    float sa[K], sb[K];
    loupe_err err;
    for (int t = 0; t < nt; t++) {
        int na = -1, nb = -2;
        int64_t s0 = ann_search_ctx_scanned(ctx);
        CHECK(ann_search(ix, ctx, tq + (int64_t)t * D, p, a, sa, &na, &err) == LOUPE_OK);
        int64_t s1 = ann_search_ctx_scanned(ctx);
        CHECK(ann_search_group(ix, ctx, tq + (int64_t)t * D, 1, p, b, sb, &nb, &err) ==
              LOUPE_OK);
        int64_t s2 = ann_search_ctx_scanned(ctx);
        CHECK(na == nb && !memcmp(a, b, sizeof a) && !memcmp(sa, sb, sizeof sa));
        CHECK(s2 - s1 == s1 - s0);
    }
}

int main(void)
{
    uint64_t seed = test_seed();
    loupe_err err;
    loupe_err_clear(&err);
    test_rng rng;
    test_rng_seed(&rng, seed ^ 0x9e0);
    float *K32 = NULL, *BQ = NULL, *TQ = NULL;
    ann_synth_opts so = {.n_keys = N, .n_test = NT, .dim = D, .seed = seed, .rope = 1};
    CHECK(ann_synth_generate(&so, &K32, &BQ, &TQ, &err) == LOUPE_OK);
    ann_keys *keys = NULL, *exact = NULL;
    CHECK(ann_keys_create(K32, N, D, ANN_KEYS_BF16, &keys, &err) == LOUPE_OK);
    CHECK(ann_keys_create(K32, N, D, ANN_KEYS_F32, &exact, &err) == LOUPE_OK);
    ann_search_ctx *ctx = NULL;
    CHECK(ann_search_ctx_create(N, 512, &ctx, &err) == LOUPE_OK);

    /* Group queries: head j of test query t recalls t's content with its own noise, |noise| ~
     * 0.5 |q| (heads of one KV group attend to related, not identical, keys). */
    float *GQ = malloc(sizeof(float) * NT * G_MAX * D);
    int32_t *truth = malloc(sizeof(int32_t) * NT * G_MAX * K);
    float *tsc = malloc(sizeof(float) * NT * G_MAX * K);
    CHECK(GQ && truth && tsc);
    for (int t = 0; t < NT; t++) {
        const float *q = TQ + (int64_t)t * D;
        double qn = 0;
        for (int c = 0; c < D; c++)
            qn += (double)q[c] * q[c];
        float sd = 0.5f * (float)sqrt(qn / D);
        for (int j = 0; j < G_MAX; j++)
            for (int c = 0; c < D; c++)
                GQ[((int64_t)t * G_MAX + j) * D + c] = q[c] + sd * test_rng_normal(&rng);
    }
    CHECK(ann_knn_cpu(NULL, exact, GQ, NT * G_MAX, K, 2, truth, tsc, NULL, &err) == LOUPE_OK);

    ann_build_opts bo;
    ann_build_opts_init(&bo);
    bo.threads = 2;
    bo.seed = seed;
    ann_index *g = NULL;
    CHECK(ann_index_build(ANN_GRAPH, keys, BQ, N, &bo, &g, NULL, &err) == LOUPE_OK);

    /* One query is ann_search: plain, seeded, narrow, re-ranked. */
    ann_search_params p = {.k = K, .ef = EF};
    check_single(g, ctx, GQ, 20, &p);
    {
        int32_t seeds[K];
        for (int i = 0; i < K; i++)
            seeds[i] = truth[i * 3 % K] + i % 2; /* near-truth keys, some repeated by others */
        ann_search_params ps = {.k = K, .ef = EF, .seeds = seeds, .n_seeds = K};
        check_single(g, ctx, GQ, 20, &ps);
        ann_search_params pn = {.k = K, .ef = K, .expand = K / 3};
        check_single(g, ctx, GQ, 20, &pn);
        ann_search_params pr = {.k = K, .ef = EF, .rerank_keys = K32};
        check_single(g, ctx, GQ, 20, &pr);
    }

    /* Flat and IVF: each query as ann_search answers it. */
    {
        ann_index *fl = NULL, *ivf = NULL;
        CHECK(ann_index_build(ANN_FLAT, keys, NULL, 0, &bo, &fl, NULL, &err) == LOUPE_OK);
        CHECK(ann_index_build(ANN_IVF, keys, NULL, 0, &bo, &ivf, NULL, &err) == LOUPE_OK);
        ann_index *ixs[2] = {fl, ivf};
        for (int x = 0; x < 2; x++) {
            ann_search_params pf = {.k = K, .nprobe = 8};
            int32_t a[G_MAX * K], b[G_MAX * K];
            float sa[G_MAX * K], sb[G_MAX * K];
            int na[G_MAX], nb[G_MAX];
            for (int j = 0; j < G_MAX; j++)
                CHECK(ann_search(ixs[x], ctx, GQ + (int64_t)j * D, &pf, a + j * K, sa + j * K,
                                 &na[j], &err) == LOUPE_OK);
            CHECK(ann_search_group(ixs[x], ctx, GQ, G_MAX, &pf, b, sb, nb, &err) == LOUPE_OK);
            CHECK(!memcmp(a, b, sizeof a) && !memcmp(sa, sb, sizeof sa) &&
                  !memcmp(na, nb, sizeof na));
        }
        ann_index_destroy(fl);
        ann_index_destroy(ivf);
    }

    /* Interleaved (ann_search_many): 1..4 searches with different queries and settings each
     * give ann_search's results and scan its rows, bit for bit; a flat index among them (one
     * after another) too; shared contexts, n out of range and unequal k fail. */
    {
        ann_search_ctx *cs[ANN_INTERLEAVE_MAX] = {NULL};
        for (int j = 0; j < ANN_INTERLEAVE_MAX; j++)
            CHECK(ann_search_ctx_create(N, 512, &cs[j], &err) == LOUPE_OK);
        ann_index *fl = NULL;
        CHECK(ann_index_build(ANN_FLAT, keys, NULL, 0, &bo, &fl, NULL, &err) == LOUPE_OK);
        int32_t seeds[K];
        for (int i = 0; i < K; i++)
            seeds[i] = truth[(i * 7 + K) % (2 * K)];
        const ann_search_params set[ANN_INTERLEAVE_MAX] = {
            {.k = K, .ef = EF},
            {.k = K, .ef = EF, .seeds = seeds, .n_seeds = K},
            {.k = K, .ef = K, .expand = K / 3},
            {.k = K, .ef = EF, .margin = 20}};
        int32_t a[ANN_INTERLEAVE_MAX * K], b[ANN_INTERLEAVE_MAX * K];
        float sa[ANN_INTERLEAVE_MAX * K], sb[ANN_INTERLEAVE_MAX * K];
        int na[ANN_INTERLEAVE_MAX], nb[ANN_INTERLEAVE_MAX];
        for (int t = 0; t < 12; t++)
            for (int n = 1; n <= ANN_INTERLEAVE_MAX; n++) {
                const ann_index *ixs[ANN_INTERLEAVE_MAX];
                const float *qs[ANN_INTERLEAVE_MAX];
                ann_search_params ps[ANN_INTERLEAVE_MAX];
                int64_t rows_a = 0, rows_b = 0;
                for (int j = 0; j < n; j++) {
                    ixs[j] = t == 11 && j == 1 ? fl : g;
                    qs[j] = GQ + ((int64_t)t * G_MAX + j) * D;
                    ps[j] = set[(t + j) % ANN_INTERLEAVE_MAX];
                    int64_t s0 = ann_search_ctx_scanned(ctx);
                    CHECK(ann_search(ixs[j], ctx, qs[j], &ps[j], a + j * K, sa + j * K, &na[j],
                                     &err) == LOUPE_OK);
                    rows_a += ann_search_ctx_scanned(ctx) - s0;
                    rows_b -= ann_search_ctx_scanned(cs[j]);
                }
                CHECK(ann_search_many(ixs, cs, qs, ps, n, b, sb, nb, &err) == LOUPE_OK);
                for (int j = 0; j < n; j++)
                    rows_b += ann_search_ctx_scanned(cs[j]);
                CHECK_MSG(!memcmp(a, b, sizeof(int32_t) * n * K) &&
                              !memcmp(sa, sb, sizeof(float) * n * K) &&
                              !memcmp(na, nb, sizeof(int) * n),
                          "interleaved search of %d (query %d) differs from ann_search", n, t);
                CHECK_MSG(rows_a == rows_b, "interleaved %d scanned %lld rows, alone %lld", n,
                          (long long)rows_b, (long long)rows_a);
            }
        const ann_index *ixs[2] = {g, g};
        const float *qs[2] = {GQ, GQ + D};
        ann_search_ctx *same[2] = {cs[0], cs[0]};
        ann_search_params two[2] = {set[0], set[0]};
        CHECK(ann_search_many(ixs, same, qs, two, 2, b, sb, nb, &err) == LOUPE_ERR_INVALID &&
              strlen(err.msg) > 0);
        CHECK(ann_search_many(ixs, cs, qs, two, 0, b, sb, nb, &err) == LOUPE_ERR_INVALID);
        CHECK(ann_search_many(ixs, cs, qs, two, ANN_INTERLEAVE_MAX + 1, b, sb, nb, &err) ==
              LOUPE_ERR_INVALID);
        two[1].k = K / 2;
        CHECK(ann_search_many(ixs, cs, qs, two, 2, b, sb, nb, &err) == LOUPE_ERR_INVALID);
        ann_index_destroy(fl);
        for (int j = 0; j < ANN_INTERLEAVE_MAX; j++)
            ann_search_ctx_destroy(cs[j]);
    }

    /* Singles: every query of every group searched alone. */
    int32_t *ids = malloc(sizeof(int32_t) * G_MAX * K);
    float *sc = malloc(sizeof(float) * G_MAX * K);
    int nf[G_MAX];
    CHECK(ids && sc);
    double r_single = 0;
    ann_search_ctx_reset_scanned(ctx);
    for (int t = 0; t < NT * G_MAX; t++) {
        CHECK(ann_search(g, ctx, GQ + (int64_t)t * D, &p, ids, sc, nf, &err) == LOUPE_OK);
        r_single += recall1(ids, truth + (int64_t)t * K);
    }
    r_single /= NT * G_MAX;
    double rows_single = (double)ann_search_ctx_scanned(ctx) / (NT * G_MAX);
    fprintf(stderr, "single ef=%d: recall@100 %.4f, rows/query %.0f\n", EF, r_single,
            rows_single);

    /* Groups of 2 and 4 (the first nq heads of each test query), each mode. */
    static const char *const mode_name[] = {"each", "shared max", "shared mean"};
    for (int mode = ANN_GROUP_EACH; mode <= ANN_GROUP_SHARED_MEAN; mode++)
        for (int nq = 2; nq <= G_MAX; nq *= 2) {
            ann_search_params pg = {.k = K, .ef = EF, .group_mode = (ann_group_mode)mode};
            double r = 0;
            ann_search_ctx_reset_scanned(ctx);
            for (int t = 0; t < NT; t++) {
                const float *qs = GQ + (int64_t)t * G_MAX * D;
                CHECK(ann_search_group(g, ctx, qs, nq, &pg, ids, sc, nf, &err) == LOUPE_OK);
                for (int j = 0; j < nq; j++) {
                    r += recall1(ids + j * K, truth + ((int64_t)t * G_MAX + j) * K);
                    if (t % 17 == 0)
                        check_results(keys, qs + (int64_t)j * D, ids + j * K, sc + j * K, nf[j]);
                }
            }
            r /= (double)NT * nq;
            double rows = (double)ann_search_ctx_scanned(ctx) / ((double)NT * nq);
            fprintf(stderr, "group of %d (%s) ef=%d: recall@100 %.4f, rows/query %.0f\n", nq,
                    mode_name[mode], EF, r, rows);
            /* The default mode is held to the margin; the shared pools (whose recall falls with
             * the queries' spread: they trade it for rows) are printed to compare. */
            if (mode == ANN_GROUP_EACH) {
                CHECK_MSG(r >= r_single - 0.01, "group of %d: recall %.4f < single %.4f - 0.01",
                          nq, r, r_single);
                CHECK_MSG(rows < 0.9 * rows_single,
                          "group of %d: %.0f rows per query, not below 0.9 x single %.0f", nq,
                          rows, rows_single);
            }
        }

    /* Batched expansion: the same recall within 0.01, single and grouped (each), results exact. */
    for (int nq = 1; nq <= 2; nq++) {
        double r1 = 0, r4 = 0;
        for (int b = 1; b <= 4; b += 3) {
            ann_search_params pb = {.k = K, .ef = EF, .expand_batch = b};
            double r = 0;
            for (int t = 0; t < NT; t++) {
                const float *qs = GQ + (int64_t)t * G_MAX * D;
                CHECK(ann_search_group(g, ctx, qs, nq, &pb, ids, sc, nf, &err) == LOUPE_OK);
                for (int j = 0; j < nq; j++) {
                    r += recall1(ids + j * K, truth + ((int64_t)t * G_MAX + j) * K);
                    if (t % 13 == 0)
                        check_results(keys, qs + (int64_t)j * D, ids + j * K, sc + j * K, nf[j]);
                }
            }
            *(b == 1 ? &r1 : &r4) = r / ((double)NT * nq);
        }
        fprintf(stderr, "%d quer%s, expand_batch 1 / 4: recall@100 %.4f / %.4f\n", nq,
                nq == 1 ? "y" : "ies", r1, r4);
        CHECK_MSG(r4 >= r1 - 0.01, "expand_batch 4 (%d queries): recall %.4f < %.4f - 0.01", nq,
                  r4, r1);
    }

    /* Seeded with the group's previous results (here: its own unseeded ones), no recall lost. */
    {
        int32_t *prev = malloc(sizeof(int32_t) * G_MAX * K);
        CHECK(prev != NULL);
        double r0 = 0, r1 = 0;
        for (int t = 0; prev && t < NT; t++) {
            const float *qs = GQ + (int64_t)t * G_MAX * D;
            CHECK(ann_search_group(g, ctx, qs, G_MAX, &p, prev, sc, nf, &err) == LOUPE_OK);
            ann_search_params ps = p;
            ps.seeds = prev;
            ps.n_seeds = G_MAX * K;
            CHECK(ann_search_group(g, ctx, qs, G_MAX, &ps, ids, sc, nf, &err) == LOUPE_OK);
            for (int j = 0; j < G_MAX; j++) {
                const int32_t *tr = truth + ((int64_t)t * G_MAX + j) * K;
                r0 += recall1(prev + j * K, tr);
                r1 += recall1(ids + j * K, tr);
            }
        }
        fprintf(stderr, "group of %d seeded: recall@100 %.4f (unseeded %.4f)\n", G_MAX,
                r1 / (NT * G_MAX), r0 / (NT * G_MAX));
        /* Every seed is scored into its query's heap, so each seeded top-k scores at least as
         * well by stored score; recall (against f32 truth) may differ by a bf16 tie at most. */
        CHECK_MSG(r1 >= r0 - 1e-3, "seeded group recall %.4f < unseeded %.4f",
                  r1 / (NT * G_MAX), r0 / (NT * G_MAX));
        free(prev);
    }

    /* Margins: one too wide to matter is no margin; a narrow one (a quarter of the first
     * query's top-100 score range) scans fewer rows, single and grouped. */
    for (int nq = 1; nq <= 2; nq++) {
        ann_search_params p0 = {.k = K, .ef = EF};
        CHECK(ann_search_group(g, ctx, GQ, 1, &p0, ids, sc, nf, &err) == LOUPE_OK);
        const float narrow = (sc[0] - sc[K - 1]) / 4;
        CHECK(narrow > 0);
        int32_t *ids0 = malloc(sizeof(int32_t) * G_MAX * K);
        float *sc0 = malloc(sizeof(float) * G_MAX * K);
        CHECK(ids0 && sc0);
        int64_t rows[3] = {0, 0, 0};
        for (int t = 0; ids0 && sc0 && t < NT; t++) {
            const float *qs = GQ + (int64_t)t * G_MAX * D;
            for (int m = 0; m < 3; m++) {
                ann_search_params pm = p0;
                pm.margin = m == 0 ? 0 : m == 1 ? 1e30f : narrow;
                int64_t s0 = ann_search_ctx_scanned(ctx);
                CHECK(ann_search_group(g, ctx, qs, nq, &pm, m == 0 ? ids0 : ids,
                                       m == 0 ? sc0 : sc, nf, &err) == LOUPE_OK);
                rows[m] += ann_search_ctx_scanned(ctx) - s0;
                if (m == 1)
                    CHECK(!memcmp(ids, ids0, sizeof(int32_t) * nq * K) &&
                          !memcmp(sc, sc0, sizeof(float) * nq * K));
                if (m == 2 && t % 7 == 0)
                    for (int j = 0; j < nq; j++)
                        check_prefix(keys, qs + (int64_t)j * D, ids + j * K, sc + j * K, nf[j]);
            }
        }
        fprintf(stderr, "%d quer%s, margin none / wide / %.3g: rows %lld / %lld / %lld\n", nq,
                nq == 1 ? "y" : "ies", (double)narrow, (long long)rows[0], (long long)rows[1],
                (long long)rows[2]);
        CHECK(rows[1] == rows[0]);
        CHECK_MSG(rows[2] < rows[0], "margin %.3g scanned %lld rows, none %lld", (double)narrow,
                  (long long)rows[2], (long long)rows[0]);
        free(ids0);
        free(sc0);
    }

    /* Out of range. */
    CHECK(ann_search_group(g, ctx, GQ, 0, &p, ids, sc, nf, &err) == LOUPE_ERR_INVALID);
    CHECK(ann_search_group(g, ctx, GQ, ANN_GROUP_MAX + 1, &p, ids, sc, nf, &err) ==
          LOUPE_ERR_INVALID && strlen(err.msg) > 0);

    ann_index_destroy(g);
    ann_search_ctx_destroy(ctx);
    ann_keys_destroy(keys);
    ann_keys_destroy(exact);
    free(K32);
    free(BQ);
    free(TQ);
    free(GQ);
    free(truth);
    free(tsc);
    free(ids);
    free(sc);
    return test_summary("test_anns_group");
}
