/* Exactness: the CPU kNN and the flat index return exactly the brute-force top-k (ids in order,
 * scores equal to the stored-key score), with a small k and a large one (ties in id order, in
 * every index type's results),
 * every key's best query is right, and an f32 re-rank turns bf16 results into the f32 top-k.
 * Uneven sizes exercise the tiles' edges. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "common/test_util.h"

enum { N = 1237, D = 72, NQ = 131, K = 20 };

/* Brute force top-k of n keys by stored score, ties by id. */
static void brute_k(const ann_keys *keys, int n, const float *q, int k, int32_t *ids, float *sc)
{
    for (int j = 0; j < k; j++) {
        ids[j] = -1;
        sc[j] = -INFINITY;
    }
    for (int i = 0; i < n; i++) {
        float s = ann_keys_score(keys, q, i);
        int p = k;
        while (p > 0 && s > sc[p - 1])
            p--;
        if (p == k)
            continue;
        memmove(ids + p + 1, ids + p, sizeof(int32_t) * (k - 1 - p));
        memmove(sc + p + 1, sc + p, sizeof(float) * (k - 1 - p));
        ids[p] = i;
        sc[p] = s;
    }
}

static void brute(const ann_keys *keys, const float *q, int32_t *ids, float *sc)
{
    brute_k(keys, N, q, K, ids, sc);
}

/* A copy of the N keys k whose keys 1000..1099 repeat keys 0..99: their scores tie exactly.
 * Caller frees. */
static float *with_repeats(const float *k)
{
    float *kd = malloc(sizeof(float) * N * D);
    memcpy(kd, k, sizeof(float) * N * D);
    for (int i = 1000; i < 1100; i++)
        memcpy(kd + i * D, k + (i - 1000) * D, sizeof(float) * D);
    return kd;
}

/* A k large against the keys (the graph build's top-512/1024 over a short context: the kNN's
 * score-row path) gives the brute-force top-k as well; keys 1000..1099 repeat keys 0..99, so
 * their scores tie exactly, and tied keys come lower id first. */
static void check_large_k(const float *k, const float *q)
{
    enum { K2 = 300 };
    float *kd = with_repeats(k);
    loupe_err err;
    ann_keys *keys = NULL;
    CHECK(ann_keys_create(kd, N, D, ANN_KEYS_BF16, &keys, &err) == LOUPE_OK);
    int32_t *ids = malloc(sizeof(int32_t) * NQ * K2), bid[K2];
    float *sc = malloc(sizeof(float) * NQ * K2), bsc[K2];
    CHECK(ann_knn_cpu(NULL, keys, q, NQ, K2, 2, ids, sc, NULL, &err) == LOUPE_OK);
    int mism = 0, order = 0;
    for (int t = 0; t < NQ; t++) {
        brute_k(keys, N, q + t * D, K2, bid, bsc);
        for (int j = 0; j < K2; j++) {
            const int64_t x = (int64_t)t * K2 + j;
            mism += ids[x] != bid[j] && fabsf(sc[x] - bsc[j]) > 1e-4f * (1 + fabsf(bsc[j]));
            CHECK(fabsf(sc[x] - bsc[j]) <= 1e-4f * (1 + fabsf(bsc[j])));
            order += j > 0 && (sc[x] > sc[x - 1] || (sc[x] == sc[x - 1] && ids[x] < ids[x - 1]));
        }
    }
    CHECK_MSG(mism == 0, "top-%d: %d kNN ids differ from brute force", K2, mism);
    CHECK_MSG(order == 0, "top-%d: %d entries out of (score, id) order", K2, order);
    ann_keys_destroy(keys);
    free(kd);
    free(ids);
    free(sc);
}

/* Scores tied at the k-th (keys 1000..1099 repeat keys 0..99: a repeated token's key) resolve
 * as in flat, lower id first, whichever index returns them: each query's k cuts its first tied
 * pair, and flat, an exhaustive graph search (beam of every key), the graph searched
 * interleaved (ann_search_many) and in a group of two (ann_search_group) all keep the lower id
 * and order the pairs above the cut by id. A graph pool that kept the tied key it reached first
 * fails this. */
static void check_ties(const float *k, const float *q)
{
    float *kd = with_repeats(k);
    loupe_err err;
    ann_keys *keys = NULL;
    ann_index *flat = NULL, *graph = NULL;
    ann_search_ctx *ctx = NULL, *ctx2 = NULL;
    ann_build_opts bo;
    ann_build_opts_init(&bo);
    CHECK(ann_keys_create(kd, N, D, ANN_KEYS_F32, &keys, &err) == LOUPE_OK);
    CHECK(ann_index_build(ANN_FLAT, keys, NULL, 0, &bo, &flat, NULL, &err) == LOUPE_OK);
    CHECK(ann_index_build(ANN_GRAPH, keys, q, NQ, &bo, &graph, NULL, &err) == LOUPE_OK);
    CHECK(ann_search_ctx_create(N, N, &ctx, &err) == LOUPE_OK);
    CHECK(ann_search_ctx_create(N, N, &ctx2, &err) == LOUPE_OK);
    enum { KT = 40 };
    int32_t bid[KT], got[2 * KT];
    float bsc[KT], gsc[2 * KT];
    int cut_pairs = 0, wrong = 0;
    for (int t = 0; t + 1 < NQ && keys && flat && graph && ctx && ctx2; t++) {
        brute_k(keys, N, q + t * D, KT, bid, bsc);
        int kt = 0; /* the first tied pair's first member, kept alone */
        for (int j = 1; j < KT && !kt; j++)
            if (bsc[j] == bsc[j - 1])
                kt = j;
        if (!kt)
            continue;
        cut_pairs++;
        const ann_search_params pf = {.k = kt};
        const ann_search_params pg[2] = {{.k = kt, .ef = N}, {.k = kt, .ef = N}};
        const ann_index *gs[2] = {graph, graph};
        ann_search_ctx *cs[2] = {ctx, ctx2};
        const float *qs[2] = {q + t * D, q + (t + 1) * D};
        int nf[2] = {0, 0};
        for (int way = 0; way < 4; way++) {
            loupe_status st;
            if (way == 0)
                st = ann_search(flat, ctx, q + t * D, &pf, got, gsc, nf, &err);
            else if (way == 1)
                st = ann_search(graph, ctx, q + t * D, &pg[0], got, gsc, nf, &err);
            else if (way == 2)
                st = ann_search_many(gs, cs, qs, pg, 2, got, gsc, nf, &err);
            else
                st = ann_search_group(graph, ctx, q + t * D, 2, &pg[0], got, gsc, nf, &err);
            CHECK(st == LOUPE_OK && nf[0] == kt);
            wrong += st != LOUPE_OK || memcmp(got, bid, sizeof(int32_t) * (size_t)kt) != 0;
        }
    }
    CHECK_MSG(cut_pairs >= 10, "only %d queries cut a tied pair: the check below is idle",
              cut_pairs);
    CHECK_MSG(wrong == 0, "%d searches (of 4 per query) returned other tied keys or order than "
              "brute force's lower id first", wrong);
    ann_index_destroy(flat);
    ann_index_destroy(graph);
    ann_search_ctx_destroy(ctx);
    ann_search_ctx_destroy(ctx2);
    ann_keys_destroy(keys);
    free(kd);
}

int main(void)
{
    test_rng r;
    test_rng_seed(&r, test_seed());
    float *k = malloc(sizeof(float) * N * D), *q = malloc(sizeof(float) * NQ * D);
    for (int i = 0; i < N * D; i++)
        k[i] = test_rng_normal(&r) + (i % D == 3 ? 2.0f : 0.0f);
    for (int i = 0; i < NQ * D; i++)
        q[i] = test_rng_normal(&r);
    loupe_err err;
    loupe_err_clear(&err);
    ann_keys *f32 = NULL, *bf = NULL;
    ann_index *flat = NULL;
    ann_search_ctx *ctx = NULL;
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_F32, &f32, &err) == LOUPE_OK);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_BF16, &bf, &err) == LOUPE_OK);

    /* kNN against brute force (f32 keys; scores equal up to summation order). */
    int32_t *ids = malloc(sizeof(int32_t) * NQ * K), *best = malloc(sizeof(int32_t) * N);
    float *sc = malloc(sizeof(float) * NQ * K);
    int32_t bid[K];
    float bsc[K];
    CHECK(ann_knn_cpu(NULL, f32, q, NQ, K, 2, ids, sc, best, &err) == LOUPE_OK);
    int mism = 0;
    for (int t = 0; t < NQ; t++) {
        brute(f32, q + t * D, bid, bsc);
        for (int j = 0; j < K; j++) {
            if (ids[t * K + j] != bid[j] && fabsf(sc[t * K + j] - bsc[j]) > 1e-4f)
                mism++;
            CHECK(fabsf(sc[t * K + j] - bsc[j]) <= 1e-4f * (1 + fabsf(bsc[j])));
        }
    }
    CHECK_MSG(mism == 0, "%d kNN ids differ from brute force", mism);
    for (int i = 0; i < N; i += 7) {
        float bs = -INFINITY;
        for (int t = 0; t < NQ; t++)
            bs = fmaxf(bs, ann_keys_score(f32, q + t * D, i));
        CHECK(best[i] >= 0 && best[i] < NQ);
        CHECK(fabsf(ann_keys_score(f32, q + best[i] * D, i) - bs) <= 1e-4f * (1 + fabsf(bs)));
    }
    check_large_k(k, q);
    check_ties(k, q);
    /* k larger than the key count pads with -1. */
    {
        int32_t id2[8];
        float s2[8];
        ann_keys *few = NULL;
        CHECK(ann_keys_create(k, 5, D, ANN_KEYS_F32, &few, &err) == LOUPE_OK);
        CHECK(ann_knn_cpu(NULL, few, q, 1, 8, 1, id2, s2, NULL, &err) == LOUPE_OK);
        CHECK(id2[4] >= 0 && id2[5] == -1 && id2[7] == -1 && isinf(s2[6]));
        ann_keys_destroy(few);
    }

    /* Flat index over bf16: exact with respect to the stored keys. */
    CHECK(ann_index_build(ANN_FLAT, bf, NULL, 0, NULL, &flat, NULL, &err) == LOUPE_OK);
    CHECK(ann_search_ctx_create(N, 64, &ctx, &err) == LOUPE_OK);
    ann_search_params p = {.k = K};
    int nf = 0;
    for (int t = 0; t < NQ; t++) {
        CHECK(ann_search(flat, ctx, q + t * D, &p, bid, bsc, &nf, &err) == LOUPE_OK);
        CHECK(nf == K);
        int32_t want[K];
        float wsc[K];
        brute(bf, q + t * D, want, wsc);
        for (int j = 0; j < K; j++) {
            CHECK(bsc[j] == ann_keys_score(bf, q + t * D, bid[j]));
            CHECK(bid[j] == want[j] || bsc[j] == wsc[j]);
        }
    }
    CHECK(ann_search_ctx_scanned(ctx) == (int64_t)NQ * N);
    /* Re-rank with the f32 keys: the f32 top-k exactly (the pool of 64 covers bf16's error). */
    p.rerank_keys = k;
    p.ef = 64;
    for (int t = 0; t < NQ; t++) {
        CHECK(ann_search(flat, ctx, q + t * D, &p, bid, bsc, &nf, &err) == LOUPE_OK);
        int32_t want[K];
        float wsc[K];
        brute(f32, q + t * D, want, wsc);
        for (int j = 0; j < K; j++)
            CHECK(bid[j] == want[j] && fabsf(bsc[j] - wsc[j]) <= 1e-4f * (1 + fabsf(wsc[j])));
    }
    /* A beam beyond the context is refused with a sentence. */
    p.ef = 65;
    CHECK(ann_search(flat, ctx, q, &p, bid, bsc, &nf, &err) == LOUPE_ERR_INVALID);
    CHECK(strstr(err.msg, "beam") != NULL);

    ann_index_destroy(flat);
    ann_search_ctx_destroy(ctx);
    ann_keys_destroy(f32);
    ann_keys_destroy(bf);
    free(k);
    free(q);
    free(ids);
    free(best);
    free(sc);
    return test_summary("test_anns_exact");
}
