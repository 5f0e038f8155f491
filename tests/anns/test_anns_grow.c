/* Growth (ann_keys_set_count, ann_index_reserve, ann_index_add) on a synthetic out-of-distribution
 * set (anns/synth.c, bf16 keys): an attention graph built over the first N0 keys and grown to N
 * in STEPS steps, each linked by the build queries of the added positions and of the next
 * WINDOW positions (the tokens after them, as in a conversation), against
 *   (a) a graph built from scratch over all N keys, and
 *   (b) the graph over the first N0 keys, never grown (the new keys unfindable),
 * on test queries that recall the added tokens, and on test queries that recall any token (growth
 * must not cost the old keys their recall). Also: every key reachable from the entry points (BFS
 * over the lists, a white-box check through ann_impl.h); flat and IVF growth exact; capacity and
 * argument errors; a grown index saved → mapped → identical answers; a version-1 file read and
 * grown exactly as the in-memory index; an index saved half-way, mapped and grown on, as good as
 * the one grown in memory. A graph that searches an int8c copy of its keys grows with the copy
 * (refused until the copy follows) and finds as much as the one searching the keys. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "anns/ann_impl.h"
#include "common/test_util.h"

enum { N = 16000, N0 = 10000, D = 128, NT = 200, K = 100, STEPS = 4, WINDOW = 512, EF = 320 };

/* recall@K over the true top-K ids at least `from` (0: all). */
static double recall_from(const int32_t *got, const int32_t *truth, int32_t from)
{
    int64_t hit = 0, all = 0;
    for (int t = 0; t < NT; t++)
        for (int j = 0; j < K; j++) {
            if (truth[t * K + j] < from)
                continue;
            all++;
            for (int i = 0; i < K; i++)
                if (got[t * K + i] == truth[t * K + j]) {
                    hit++;
                    break;
                }
        }
    return all ? (double)hit / (double)all : 1.0;
}

static double recall(const int32_t *got, const int32_t *truth)
{
    return recall_from(got, truth, 0);
}

static void search_all(const ann_index *ix, ann_search_ctx *ctx, const float *tq,
                       const ann_search_params *p, int32_t *ids, float *sc)
{
    loupe_err err;
    int nf;
    for (int t = 0; t < NT; t++)
        CHECK(ann_search(ix, ctx, tq + t * D, p, ids + t * K, sc + t * K, &nf, &err) == LOUPE_OK);
}

static double run(const ann_index *ix, ann_search_ctx *ctx, const float *tq, const int32_t *truth,
                  int32_t *ids, float *sc)
{
    ann_search_params p = {.k = K, .ef = EF};
    search_all(ix, ctx, tq, &p, ids, sc);
    return recall(ids, truth);
}

/* Keys the entry points do not reach, by a BFS of our own over the index's lists. */
static int64_t unreachable(const ann_index *ix)
{
    uint8_t *seen = calloc((size_t)ix->n, 1);
    int32_t *queue = malloc((size_t)ix->n * sizeof *queue);
    int64_t qn = 0, bad = 0;
    for (int i = 0; i < ix->n_entry; i++)
        if (!seen[ix->entry[i]]) {
            seen[ix->entry[i]] = 1;
            queue[qn++] = ix->entry[i];
        }
    for (int64_t h = 0; h < qn; h++) {
        int32_t u = queue[h];
        for (uint32_t j = ix->adj_off[u]; j < ix->adj_off[u + 1] && ix->adj[j] >= 0; j++) {
            int32_t v = ix->adj[j];
            CHECK(v >= 0 && v < ix->n);
            if (!seen[v]) {
                seen[v] = 1;
                queue[qn++] = v;
            }
        }
    }
    for (int64_t u = 0; u < ix->n; u++)
        bad += !seen[u];
    free(seen);
    free(queue);
    return bad;
}

/* Grows ix over `keys` (a view) from its count to n, linked by the build queries of the added
 * positions and the WINDOW after them. */
static void grow_to(ann_index *ix, ann_keys *keys, const float *bq, int64_t n, ann_search_ctx *ctx)
{
    loupe_err err;
    int64_t from = ann_index_count(ix), q_end = n + WINDOW < N ? n + WINDOW : N;
    CHECK(ann_keys_set_count(keys, n, &err) == LOUPE_OK);
    CHECK_MSG(ann_index_add(ix, bq + from * D, q_end - from, ctx, &err) == LOUPE_OK, "%s",
              loupe_err_message(&err));
    CHECK(ann_index_count(ix) == n);
}

int main(void)
{
    uint64_t seed = test_seed();
    loupe_err err;
    loupe_err_clear(&err);
    float *K32 = NULL, *BQ = NULL, *TQ = NULL, *K2 = NULL, *BQ2 = NULL, *TQ_ALL = NULL;
    ann_synth_opts so = {.n_keys = N, .n_test = NT, .dim = D, .seed = seed, .rope = 1,
                         .test_src_lo = N0, .test_src_hi = N};
    CHECK(ann_synth_generate(&so, &K32, &BQ, &TQ, &err) == LOUPE_OK);
    ann_synth_opts so_all = so;
    so_all.test_src_lo = so_all.test_src_hi = 0;
    CHECK(ann_synth_generate(&so_all, &K2, &BQ2, &TQ_ALL, &err) == LOUPE_OK);
    CHECK(!memcmp(K32, K2, sizeof(float) * N * D)); /* the same keys, other test queries */

    /* All rows live in one bf16 array; the grown index sees a view whose count rises. */
    ann_keys *all = NULL, *exact = NULL, *view = NULL, *view_b = NULL;
    CHECK(ann_keys_create(K32, N, D, ANN_KEYS_BF16, &all, &err) == LOUPE_OK);
    CHECK(ann_keys_create(K32, N, D, ANN_KEYS_F32, &exact, &err) == LOUPE_OK);
    int64_t stride;
    const void *rows = ann_keys_data(all, &stride, NULL);
    CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, N0, D, stride, &view, &err) == LOUPE_OK);
    CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, N0, D, stride, &view_b, &err) == LOUPE_OK);
    int32_t *truth = malloc(sizeof(int32_t) * NT * K);
    int32_t *truth_all = malloc(sizeof(int32_t) * NT * K);
    int32_t *ids = malloc(sizeof(int32_t) * NT * K), *ids2 = malloc(sizeof(int32_t) * NT * K);
    float *sc = malloc(sizeof(float) * NT * K), *sc2 = malloc(sizeof(float) * NT * K);
    CHECK(ann_knn_cpu(NULL, exact, TQ, NT, K, 2, truth, sc, NULL, &err) == LOUPE_OK);
    CHECK(ann_knn_cpu(NULL, exact, TQ_ALL, NT, K, 2, truth_all, sc, NULL, &err) == LOUPE_OK);
    ann_search_ctx *ctx = NULL, *small = NULL;
    CHECK(ann_search_ctx_create(N, 1024, &ctx, &err) == LOUPE_OK);
    CHECK(ann_search_ctx_create(N - 1, 1024, &small, &err) == LOUPE_OK);
    ann_build_opts bo;
    ann_build_opts_init(&bo);
    bo.threads = 2;
    bo.seed = seed;

    /* ---- Graph: grown vs rebuilt vs never grown ---- */
    ann_index *ga = NULL, *gb = NULL, *g = NULL;
    CHECK(ann_index_build(ANN_GRAPH, all, BQ, N, &bo, &ga, NULL, &err) == LOUPE_OK);
    CHECK(ann_index_build(ANN_GRAPH, view_b, BQ, N0, &bo, &gb, NULL, &err) == LOUPE_OK);
    CHECK(ann_index_build(ANN_GRAPH, view, BQ, N0, &bo, &g, NULL, &err) == LOUPE_OK);
    double ra = run(ga, ctx, TQ, truth, ids, sc), ra_new = recall_from(ids, truth, N0);
    double rb = run(gb, ctx, TQ, truth, ids, sc);
    double ra_all = run(ga, ctx, TQ_ALL, truth_all, ids, sc);
    CHECK(ann_index_reserve(g, N, &err) == LOUPE_OK);
    /* Reserving alone changes no answer (the lists only moved into regions with room). */
    {
        ann_search_params p = {.k = K, .ef = EF};
        search_all(gb, ctx, TQ, &p, ids, sc);
        search_all(g, ctx, TQ, &p, ids2, sc2);
        CHECK(!memcmp(ids, ids2, sizeof(int32_t) * NT * K));
    }
    double t0 = ann_now();
    for (int s = 1; s <= STEPS; s++) {
        int64_t n = N0 + (int64_t)(N - N0) * s / STEPS;
        double ts = ann_now();
        int64_t rep0 = ann_index_build_stats(g)->n_repaired;
        int64_t unl0 = ann_index_build_stats(g)->n_untouched;
        grow_to(g, view, BQ, n, ctx);
        fprintf(stderr, "grow step %d: %lld keys, %.3f s, %lld linked by their best query, "
                "%lld repair edges\n", s, (long long)n, ann_now() - ts,
                (long long)(ann_index_build_stats(g)->n_untouched - unl0),
                (long long)(ann_index_build_stats(g)->n_repaired - rep0));
        CHECK_MSG(ann_index_build_stats(g)->n_unreachable == 0, "%lld unreachable after step %d",
                  (long long)ann_index_build_stats(g)->n_unreachable, s);
    }
    double grow_s = ann_now() - t0;
    double rg = run(g, ctx, TQ, truth, ids, sc), rg_new = recall_from(ids, truth, N0);
    double rg_all = run(g, ctx, TQ_ALL, truth_all, ids, sc);
    for (int t = 0; t < NT; t += 17) /* scores exact for the stored keys, new keys included */
        for (int i = 0; i < K; i += 7)
            CHECK(ids[t * K + i] >= 0 && sc[t * K + i] == ann_keys_score(all, TQ_ALL + t * D,
                                                                         ids[t * K + i]));
    const ann_build_stats *st = ann_index_build_stats(g);
    fprintf(stderr,
            "recall@%d at ef=%d on queries recalling the added keys: grown %.4f, rebuilt %.4f, "
            "never grown %.4f; of the added keys alone: grown %.4f, rebuilt %.4f; on queries "
            "recalling any key: grown %.4f, rebuilt %.4f\n"
            "growth of %d keys in %d steps: %.2f s; %lld edges (rebuilt %lld), %lld new keys "
            "linked through their best query, %lld repair edges, index %zu bytes (rebuilt %zu)\n",
            K, EF, rg, ra, rb, rg_new, ra_new, rg_all, ra_all, N - N0, STEPS, grow_s,
            (long long)st->n_edges,
            (long long)ann_index_build_stats(ga)->n_edges, (long long)st->n_untouched,
            (long long)st->n_repaired, ann_index_bytes(g), ann_index_bytes(ga));
    /* Margins: over seeds 1-10 the grown index was within -0.004..+0.015 of a rebuild on every
     * measure (down to -0.015 at ef = 128), the never-grown one 0.48-0.73 on the added keys'
     * queries. Grown must stay within 0.03 of a rebuild (all of the true top-k, and the added
     * keys alone), the old keys keep their recall, and growth must recover at least 80% of the
     * recall the never-grown index lacks. Growth that gives new keys no in-edges (no pivot and
     * no reverse edges) scored 0.79 (0.39 on the added keys) and fails all of these. */
    CHECK_MSG(rg >= ra - 0.03, "grown recall %.4f < rebuilt %.4f - 0.03", rg, ra);
    CHECK_MSG(rg_new >= ra_new - 0.03, "grown recall of the added keys %.4f < rebuilt %.4f - 0.03",
              rg_new, ra_new);
    CHECK_MSG(rg_all >= ra_all - 0.03, "grown recall %.4f < rebuilt %.4f - 0.03 (any key)",
              rg_all, ra_all);
    CHECK_MSG(1 - rg <= 0.2 * (1 - rb), "grown recall %.4f recovers < 80%% of what never grown "
              "(%.4f) lacks", rg, rb);
    CHECK_MSG(unreachable(g) == 0, "%lld keys unreachable", (long long)unreachable(g));

    /* ---- Capacity and argument errors ---- */
    {
        ann_index *f = NULL;
        CHECK(ann_keys_set_count(all, N - 1, &err) == LOUPE_ERR_INVALID); /* owns its rows */
        CHECK(ann_keys_set_count(view, 0, &err) == LOUPE_ERR_INVALID);
        CHECK(ann_index_reserve(g, N - 1, &err) == LOUPE_ERR_RANGE);    /* below its count */
        CHECK(ann_index_reserve(g, N, &err) == LOUPE_OK);               /* already: no-op */
        CHECK(ann_index_add(g, NULL, 0, ctx, &err) == LOUPE_OK);        /* nothing new */
        CHECK(ann_index_add(g, NULL, 5, ctx, &err) == LOUPE_ERR_INVALID);
        enum { NS = 2000 }; /* a small graph for the rest */
        ann_keys *v2 = NULL;
        CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, NS, D, stride, &v2, &err) == LOUPE_OK);
        CHECK(ann_index_build(ANN_GRAPH, v2, BQ, NS, &bo, &f, NULL, &err) == LOUPE_OK);
        CHECK(ann_keys_set_count(v2, NS + 10, &err) == LOUPE_OK);
        CHECK(ann_index_add(f, BQ, 10, ctx, &err) == LOUPE_ERR_RANGE);  /* never reserved */
        CHECK(strstr(err.msg, "capacity") != NULL);
        CHECK(ann_index_reserve(f, NS + 5, &err) == LOUPE_OK);
        CHECK(ann_index_add(f, BQ, 10, ctx, &err) == LOUPE_ERR_RANGE);  /* past the reserve */
        CHECK(ann_index_count(f) == NS);
        CHECK(ann_index_reserve(f, N, &err) == LOUPE_OK);               /* reserve again, more */
        CHECK(ann_index_add(f, BQ, 10, small, &err) == LOUPE_ERR_INVALID); /* ctx too small */
        CHECK(ann_index_count(f) == NS);
        CHECK(ann_index_add(f, BQ + NS * D, 10, ctx, &err) == LOUPE_OK);
        CHECK(ann_index_count(f) == NS + 10 && unreachable(f) == 0);
        CHECK(ann_keys_set_count(v2, NS, &err) == LOUPE_OK);
        CHECK(ann_index_add(f, NULL, 0, ctx, &err) == LOUPE_ERR_INVALID); /* keys shrank */
        /* No queries: each new key linked as its own query (the degraded mode), all reachable. */
        CHECK(ann_keys_set_count(v2, NS + 400, &err) == LOUPE_OK);
        CHECK(ann_index_add(f, NULL, 0, ctx, &err) == LOUPE_OK);
        CHECK(ann_index_count(f) == NS + 400 && unreachable(f) == 0);
        /* The key-only graph grows by its own rule (keys as queries), queries or not. */
        ann_index *kg = NULL;
        ann_keys *v7 = NULL;
        CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, NS, D, stride, &v7, &err) == LOUPE_OK);
        CHECK(ann_index_build(ANN_KEYGRAPH, v7, NULL, 0, &bo, &kg, NULL, &err) == LOUPE_OK);
        CHECK(ann_index_reserve(kg, NS + 400, &err) == LOUPE_OK);
        CHECK(ann_keys_set_count(v7, NS + 400, &err) == LOUPE_OK);
        CHECK(ann_index_add(kg, BQ + NS * D, 400, ctx, &err) == LOUPE_OK);
        CHECK(ann_index_count(kg) == NS + 400 && unreachable(kg) == 0);
        ann_index_destroy(kg);
        ann_keys_destroy(v7);
        ann_index_destroy(f);
        ann_keys_destroy(v2);
    }

    /* ---- A search copy (int8c) grows with its keys ---- */
    {
        ann_keys *vc = NULL, *copy = NULL, *short_copy = NULL;
        ann_index *gc = NULL;
        CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, N0, D, stride, &vc, &err) == LOUPE_OK);
        CHECK(ann_index_build(ANN_GRAPH, vc, BQ, N0, &bo, &gc, NULL, &err) == LOUPE_OK);
        CHECK(ann_index_reserve(gc, N, &err) == LOUPE_OK);
        CHECK(ann_keys_search_copy(vc, N, &copy, &err) == LOUPE_OK);
        CHECK(ann_keys_set_count(vc, N0 - 1, &err) == LOUPE_OK);
        CHECK(ann_keys_search_copy(vc, N, &short_copy, &err) == LOUPE_OK);
        CHECK(ann_index_set_search_keys(gc, short_copy, &err) == LOUPE_ERR_INVALID); /* fewer */
        CHECK(ann_index_set_search_keys(gc, copy, &err) == LOUPE_OK);
        for (int s = 1; s <= STEPS; s++) {
            int64_t n = N0 + (int64_t)(N - N0) * s / STEPS, from = ann_index_count(gc);
            int64_t q_end = n + WINDOW < N ? n + WINDOW : N;
            CHECK(ann_keys_set_count(vc, n, &err) == LOUPE_OK);
            CHECK(ann_index_add(gc, BQ + from * D, q_end - from, ctx, &err) ==
                  LOUPE_ERR_INVALID); /* the copy is behind */
            CHECK(strstr(err.msg, "search copy") != NULL && ann_index_count(gc) == from);
            CHECK(ann_keys_search_copy_sync(copy, vc, &err) == LOUPE_OK);
            CHECK(ann_index_add(gc, BQ + from * D, q_end - from, ctx, &err) == LOUPE_OK);
        }
        double rc = run(gc, ctx, TQ, truth, ids, sc), rc_new = recall_from(ids, truth, N0);
        for (int t = 0; t < NT; t += 17) /* chosen and scored by the keys, not the copy */
            for (int i = 0; i < K; i += 7)
                CHECK(sc[t * K + i] == ann_keys_score(all, TQ + t * D, ids[t * K + i]) &&
                      (i == 0 || sc[t * K + i] <= sc[t * K + i - 7]));
        fprintf(stderr, "with an int8c search copy: grown %.4f (added keys %.4f)\n", rc, rc_new);
        /* Seeds 1-10: within -0.004..+0.001 of the graph searching its bf16 keys. Returning
         * the beam's best by the copy's scores instead of re-scoring it against the keys lost
         * 0.006-0.012 (the rounding swaps keys at the top-100's edge); a copy that saturated
         * instead of widening its scales, up to 0.044. */
        CHECK_MSG(rc >= rg - 0.01 && rc_new >= rg_new - 0.01,
                  "search copy: recall %.4f / %.4f against %.4f / %.4f", rc, rc_new, rg, rg_new);
        CHECK(ann_index_set_search_keys(gc, NULL, &err) == LOUPE_OK); /* back to the keys */
        ann_index_destroy(gc);
        ann_keys_destroy(short_copy);
        ann_keys_destroy(copy);
        ann_keys_destroy(vc);
    }

    /* ---- Flat and IVF: growth is exact ---- */
    {
        ann_keys *vf = NULL;
        ann_index *flat = NULL, *flat_all = NULL, *ivf = NULL;
        CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, N0, D, stride, &vf, &err) == LOUPE_OK);
        CHECK(ann_index_build(ANN_FLAT, vf, NULL, 0, &bo, &flat, NULL, &err) == LOUPE_OK);
        CHECK(ann_index_build(ANN_IVF, vf, NULL, 0, &bo, &ivf, NULL, &err) == LOUPE_OK);
        CHECK(ann_index_build(ANN_FLAT, all, NULL, 0, &bo, &flat_all, NULL, &err) == LOUPE_OK);
        CHECK(ann_index_set_search_keys(flat, all, &err) == LOUPE_ERR_INVALID); /* graphs only */
        CHECK(ann_index_set_search_keys(ivf, all, &err) == LOUPE_ERR_INVALID);
        CHECK(strstr(err.msg, "only graphs") != NULL);
        CHECK(ann_index_reserve(flat, N, &err) == LOUPE_OK);
        CHECK(ann_index_reserve(ivf, N, &err) == LOUPE_OK);
        for (int s = 1; s <= STEPS; s++) {
            int64_t n = N0 + (int64_t)(N - N0) * s / STEPS;
            CHECK(ann_keys_set_count(vf, n, &err) == LOUPE_OK);
            CHECK(ann_index_add(flat, NULL, 0, ctx, &err) == LOUPE_OK);
            CHECK(ann_index_add(ivf, NULL, 0, ctx, &err) == LOUPE_OK);
        }
        ann_search_params pf = {.k = K}, pi = {.k = K, .nprobe = ivf->nlist};
        search_all(flat_all, ctx, TQ, &pf, ids, sc);
        search_all(flat, ctx, TQ, &pf, ids2, sc2);
        CHECK(!memcmp(ids, ids2, sizeof(int32_t) * NT * K) &&
              !memcmp(sc, sc2, sizeof(float) * NT * K));
        search_all(ivf, ctx, TQ, &pi, ids2, sc2); /* every list probed: exact */
        CHECK(!memcmp(sc, sc2, sizeof(float) * NT * K));
        /* IVF lists: one CSR over all N keys, ascending in each list, new keys in the list of
         * their nearest centroid. */
        CHECK(ivf->list_off[0] == 0 && ivf->list_off[ivf->nlist] == N);
        uint8_t *in = calloc(N, 1);
        float row[D];
        for (int l = 0; l < ivf->nlist; l++)
            for (uint32_t j = ivf->list_off[l]; j < ivf->list_off[l + 1]; j++) {
                int32_t u = ivf->list_ids[j];
                CHECK(u >= 0 && u < N && !in[u]);
                in[u] = 1;
                CHECK(j == ivf->list_off[l] || u > ivf->list_ids[j - 1]);
                if (u < N0 || u % 97)
                    continue;
                ann_keys_row(all, u, row);
                int best = 0;
                float bd = INFINITY;
                for (int c = 0; c < ivf->nlist; c++) {
                    float dd = ann_l2sq_f32(row, ivf->centroids + (int64_t)c * D, D);
                    if (dd < bd) {
                        bd = dd;
                        best = c;
                    }
                }
                CHECK_MSG(best == l, "key %d in list %d, nearest centroid %d", u, l, best);
            }
        free(in);
        ann_index_destroy(flat);
        ann_index_destroy(flat_all);
        ann_index_destroy(ivf);
        ann_keys_destroy(vf);
    }

    /* ---- Serialisation of grown indexes; a mapped index grows like the in-memory one ---- */
    {
        char path[512], path1[600];
        snprintf(path, sizeof path, "%s/anns_grow_%llu.idx", test_tmpdir(),
                 (unsigned long long)seed);
        snprintf(path1, sizeof path1, "%s.v1", path);
        ann_search_params p = {.k = K, .ef = EF};
        ann_index *m = NULL;
        CHECK(ann_index_save(g, path, &err) == LOUPE_OK);
        CHECK(ann_index_map(path, view, &m, &err) == LOUPE_OK);
        if (m) {
            CHECK(ann_index_build_stats(m)->n_edges == ann_index_build_stats(g)->n_edges);
            search_all(g, ctx, TQ_ALL, &p, ids, sc);
            search_all(m, ctx, TQ_ALL, &p, ids2, sc2);
            CHECK_MSG(!memcmp(ids, ids2, sizeof(int32_t) * NT * K) &&
                      !memcmp(sc, sc2, sizeof(float) * NT * K),
                      "mapped grown graph answers differently");
        }
        ann_index_destroy(m);
        m = NULL;

        /* Version 1 had no growth parameters: a file of the never-grown graph less its last
         * array reads with the default options, which its build used, so the two grow alike. */
        ann_keys *v4 = NULL, *v6 = NULL;
        ann_index *hm = NULL, *h1 = NULL;
        int64_t mid = (N0 + N) / 2;
        {
            size_t sz = ann_index_serialized_size(gb);
            unsigned char *buf = aligned_alloc(64, (sz + 63) / 64 * 64);
            CHECK(ann_index_serialize(gb, buf, sz, &err) == LOUPE_OK);
            uint32_t ver = 1, na;
            memcpy(&na, buf + 40, 4);
            na--;
            memcpy(buf + 8, &ver, 4); /* the header is outside the checksum */
            memcpy(buf + 40, &na, 4);
            FILE *f = fopen(path1, "wb");
            CHECK(f && fwrite(buf, 1, sz, f) == sz);
            if (f)
                fclose(f);
            free(buf);
        }
        CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, N0, D, stride, &v6, &err) == LOUPE_OK);
        CHECK(ann_index_map(path1, v6, &h1, &err) == LOUPE_OK);
        CHECK(ann_index_reserve(gb, N, &err) == LOUPE_OK);
        grow_to(gb, view_b, BQ, mid, ctx);
        if (h1) {
            CHECK(ann_index_reserve(h1, N, &err) == LOUPE_OK);
            grow_to(h1, v6, BQ, mid, ctx);
            search_all(gb, ctx, TQ, &p, ids, sc);
            search_all(h1, ctx, TQ, &p, ids2, sc2);
            CHECK_MSG(!memcmp(ids, ids2, sizeof(int32_t) * NT * K),
                      "a version-1 file grows differently");
        }
        /* Half-way state saved, then the second half grown in memory and after mapping. The
         * two differ in layout (a mapped index is CSR: every list gets the same slack on
         * reserve, where the grown one gave new keys a full region), so in answers slightly. */
        CHECK(ann_index_save(gb, path, &err) == LOUPE_OK);
        CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, mid, D, stride, &v4, &err) == LOUPE_OK);
        CHECK(ann_index_map(path, v4, &hm, &err) == LOUPE_OK);
        if (hm) {
            CHECK(ann_index_reserve(hm, N, &err) == LOUPE_OK);
            grow_to(gb, view_b, BQ, N, ctx);
            grow_to(hm, v4, BQ, N, ctx);
            double r1 = run(gb, ctx, TQ, truth, ids, sc), r2 = run(hm, ctx, TQ, truth, ids, sc);
            fprintf(stderr, "saved half-way, grown on: recall@%d in memory %.4f, mapped %.4f\n",
                    K, r1, r2);
            CHECK_MSG(fabs(r1 - r2) <= 0.02 && r2 >= ra - 0.03,
                      "mapped-then-grown recall %.4f, grown in memory %.4f, rebuilt %.4f", r2, r1,
                      ra);
            CHECK(unreachable(hm) == 0);
        }
        ann_index_destroy(hm);
        ann_index_destroy(h1);
        ann_keys_destroy(v4);
        ann_keys_destroy(v6);
        remove(path);
        remove(path1);

        /* Grown IVF and flat round-trip too. */
        for (int ty = ANN_FLAT; ty <= ANN_IVF; ty++) {
            ann_keys *vi = NULL, *vn = NULL;
            ann_index *ix = NULL, *mi = NULL;
            ann_search_params pq = {.k = K, .nprobe = 8};
            CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, N0, D, stride, &vi, &err) ==
                  LOUPE_OK);
            CHECK(ann_index_build((ann_type)ty, vi, NULL, 0, &bo, &ix, NULL, &err) == LOUPE_OK);
            CHECK(ann_index_reserve(ix, N, &err) == LOUPE_OK);
            CHECK(ann_keys_set_count(vi, N, &err) == LOUPE_OK);
            CHECK(ann_index_add(ix, NULL, 0, ctx, &err) == LOUPE_OK);
            CHECK(ann_index_save(ix, path, &err) == LOUPE_OK);
            CHECK(ann_keys_view(ANN_KEYS_BF16, rows, NULL, N, D, stride, &vn, &err) == LOUPE_OK);
            CHECK(ann_index_map(path, vn, &mi, &err) == LOUPE_OK);
            if (mi) {
                search_all(ix, ctx, TQ, &pq, ids, sc);
                search_all(mi, ctx, TQ, &pq, ids2, sc2);
                CHECK_MSG(!memcmp(ids, ids2, sizeof(int32_t) * NT * K), "%s: mapped grown "
                          "index answers differently", ann_type_name((ann_type)ty));
            }
            ann_index_destroy(mi);
            ann_index_destroy(ix);
            ann_keys_destroy(vi);
            ann_keys_destroy(vn);
            remove(path);
        }
    }

    ann_index_destroy(ga);
    ann_index_destroy(gb);
    ann_index_destroy(g);
    ann_search_ctx_destroy(ctx);
    ann_search_ctx_destroy(small);
    ann_keys_destroy(all);
    ann_keys_destroy(exact);
    ann_keys_destroy(view);
    ann_keys_destroy(view_b);
    free(K32);
    free(BQ);
    free(TQ);
    free(K2);
    free(BQ2);
    free(TQ_ALL);
    free(truth);
    free(truth_all);
    free(ids);
    free(ids2);
    free(sc);
    free(sc2);
    return test_summary("test_anns_grow");
}
