/*
 * IVF: k-means lists over the keys, searched by probing the nprobe centroids with the highest
 * inner product with the query and scanning their keys exactly.
 *
 * Training is Lloyd's algorithm in L2 on a seeded sample of keys (the usual IVF-IP recipe: the
 * lists partition key space; probing ranks them by q·centroid). Empty clusters are re-seeded with
 * a random sample point so every list stays useful. Lists are one contiguous id array with
 * offsets (list_off[l] .. list_off[l+1]), ids ascending inside a list, so a mapped index is two
 * flat arrays. "Keys scanned" counts the nlist centroid scores too: they are real dot products.
 *
 * nprobe is the fewest lists probed: when they hold fewer than k keys in all, the next best lists
 * follow until k keys are found (or every list is probed). Probing ranks lists by q·centroid,
 * and on attention keys the best-scoring centroids are often those of small clusters of
 * large-norm keys: a fixed nprobe then returned fewer than k keys (58 of 100 on average at 128K
 * on the 8B shape), which no caller asked for.
 */
#include "anns/ann_impl.h"

#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>

/* argmin_c |x - c|^2 = argmax_c x·c - |c|^2 / 2 */
static int nearest_centroid(const float *x, const float *cent, const float *half_norm, int nlist,
                            int d)
{
    int best = 0;
    float bs = -INFINITY;
    for (int c = 0; c < nlist; c++) {
        float s = ann_dot_f32(x, cent + (int64_t)c * d, d) - half_norm[c];
        if (s > bs) {
            bs = s;
            best = c;
        }
    }
    return best;
}

void ann_ivf_half_norms(const float *cent, int nlist, int d, float *out)
{
    for (int c = 0; c < nlist; c++)
        out[c] = 0.5f * ann_dot_f32(cent + (int64_t)c * d, cent + (int64_t)c * d, d);
}

/* Rows assigned by one kNN call: their widened copies, (d + 1) floats each, are the only memory
 * the assignment takes. A hook's (the GPU's, in the runtime) take many a call; the CPU's
 * blocked kNN gains nothing from more than a few thousand, and builds run many at once. */
enum { HOOK_ROWS = 65536, CPU_ROWS = 16384 };

/* The nearest centroid of each of m rows, through knn (the build's hook, or ann_knn_cpu):
 * argmin |x − c|² is the top-1 inner product of x' = (x, 1) with c' = (c, −|c|²/2), a search
 * over nlist keys of d + 1 dimensions. The rows are rows (m, d) when given, else the keys'
 * (widened by ann_keys_row); xa holds min(m, per_call) widened rows. Differs from
 * nearest_centroid only where two centroids tie within rounding. */
static loupe_status assign_by_knn(ann_knn_fn knn, void *knn_user, int64_t per_call, int nth,
                                  const float *cent, const float *half_norm, int nlist, int d,
                                  int64_t m, const ann_keys *keys, const float *rows, float *xa,
                                  int32_t *assign, loupe_err *err)
{
    const int da = d + 1;
    float *ca = malloc((size_t)nlist * (size_t)da * sizeof *ca);
    if (!ca)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "IVF: no memory for %d centroids", nlist);
    for (int c = 0; c < nlist; c++) {
        memcpy(ca + (int64_t)c * da, cent + (int64_t)c * d, (size_t)d * sizeof *ca);
        ca[(int64_t)c * da + d] = -half_norm[c];
    }
    ann_keys *ck = NULL;
    loupe_status rc = ann_keys_create(ca, nlist, da, ANN_KEYS_F32, &ck, err);
    free(ca);
    for (int64_t i0 = 0; rc == LOUPE_OK && i0 < m; i0 += per_call) {
        const int64_t mc = m - i0 < per_call ? m - i0 : per_call;
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t i = 0; i < mc; i++) {
            float *x = xa + i * da;
            if (rows)
                memcpy(x, rows + (i0 + i) * d, (size_t)d * sizeof *x);
            else
                ann_keys_row(keys, i0 + i, x);
            x[d] = 1.0f;
        }
        rc = knn(knn_user, ck, xa, mc, 1, nth, assign + i0, NULL, NULL, err);
    }
    ann_keys_destroy(ck);
    return rc;
}

loupe_status ann_ivf_build(ann_index *ix, const ann_build_opts *opts, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    int64_t n = ix->n;
    int d = ix->dim;
    int nth = opts->threads > 0 ? opts->threads : omp_get_max_threads();
    int nlist = opts->nlist > 0 ? opts->nlist : (int)(2.0 * sqrt((double)n) + 0.5);
    if (nlist > n)
        nlist = (int)n;
    if (nlist < 1)
        nlist = 1;
    int64_t ns = opts->kmeans_sample > 0 ? opts->kmeans_sample : 64 * (int64_t)nlist;
    if (ns > n)
        ns = n;
    if (ns < nlist)
        ns = nlist;
    int iters = opts->kmeans_iters > 0 ? opts->kmeans_iters : 8;
    uint64_t rng = opts->seed ^ 0x1f1f1f1full;
    float *sample = malloc((size_t)ns * (size_t)d * sizeof(float));
    float *cent = malloc((size_t)nlist * (size_t)d * sizeof(float));
    float *hn = malloc((size_t)nlist * sizeof(float));
    double *sum = malloc((size_t)nlist * (size_t)d * sizeof(double));
    int64_t *cnt = malloc((size_t)nlist * sizeof(int64_t));
    int32_t *assign = malloc((size_t)n * sizeof(int32_t));
    int64_t *perm = malloc((size_t)n * sizeof(int64_t));
    uint32_t *off = calloc((size_t)nlist + 1, sizeof(uint32_t));
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    /* The assignments, nearly all of the training's arithmetic, are top-1 kNN searches
     * (assign_by_knn): through the build's hook with opts->kmeans_knn (a GPU's), else through
     * ann_knn_cpu's blocked products, 2.1-2.4x as fast as a dot product a centroid
     * (nearest_centroid; 131,072 keys on 2 threads 2.14 → 0.90 s), which took ~80 s of the 8B
     * shape's 256 indexes at 128K on 16 threads (docs/BENCHMARKS.md). */
    const bool hook = opts->kmeans_knn && opts->knn;
    ann_knn_fn knn = hook ? opts->knn : ann_knn_cpu;
    void *knn_user = hook ? opts->knn_user : NULL;
    const int64_t per_call = hook ? HOOK_ROWS : CPU_ROWS;
    const int64_t xrows = n < per_call ? n : per_call;
    float *xa = malloc((size_t)xrows * (size_t)(d + 1) * sizeof(float));
    double t0 = ann_now();
    if (!sample || !cent || !hn || !sum || !cnt || !assign || !perm || !off || !ids || !xa) {
        rc = loupe_fail(err, LOUPE_ERR_NOMEM, "IVF: no memory for %d lists over %lld keys",
                        nlist, (long long)n);
        goto done;
    }
    /* Sample without replacement: a partial Fisher–Yates shuffle of the key ids. */
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = 0; i < ns; i++) {
        int64_t j = i + (int64_t)(ann_rng_next(&rng) % (uint64_t)(n - i));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        ann_keys_row(ix->keys, perm[i], sample + i * d);
    }
    for (int c = 0; c < nlist; c++) /* the first nlist sampled keys: already a random choice */
        memcpy(cent + (int64_t)c * d, sample + (int64_t)c * d, (size_t)d * sizeof(float));
    for (int it = 0; it < iters; it++) {
        ann_ivf_half_norms(cent, nlist, d, hn);
        rc = assign_by_knn(knn, knn_user, per_call, nth, cent, hn, nlist, d, ns, NULL, sample,
                           xa, assign, err);
        if (rc != LOUPE_OK)
            goto done;
        memset(sum, 0, (size_t)nlist * (size_t)d * sizeof(double));
        memset(cnt, 0, (size_t)nlist * sizeof(int64_t));
        for (int64_t i = 0; i < ns; i++) {
            double *s = sum + (int64_t)assign[i] * d;
            for (int c = 0; c < d; c++)
                s[c] += sample[i * d + c];
            cnt[assign[i]]++;
        }
        for (int l = 0; l < nlist; l++) {
            float *ce = cent + (int64_t)l * d;
            if (cnt[l] == 0) {
                int64_t r = (int64_t)(ann_rng_next(&rng) % (uint64_t)ns);
                memcpy(ce, sample + r * d, (size_t)d * sizeof(float));
                continue;
            }
            for (int c = 0; c < d; c++)
                ce[c] = (float)(sum[(int64_t)l * d + c] / (double)cnt[l]);
        }
    }
    ann_ivf_half_norms(cent, nlist, d, hn);
    rc = assign_by_knn(knn, knn_user, per_call, nth, cent, hn, nlist, d, n, ix->keys, NULL, xa,
                       assign, err);
    if (rc != LOUPE_OK)
        goto done;
    for (int64_t i = 0; i < n; i++)
        off[assign[i] + 1]++;
    for (int l = 0; l < nlist; l++)
        off[l + 1] += off[l];
    {
        uint32_t *fill = (uint32_t *)perm; /* reuse: nlist u32 fit in n int64 slots */
        memcpy(fill, off, (size_t)nlist * sizeof(uint32_t));
        for (int64_t i = 0; i < n; i++)
            ids[fill[assign[i]]++] = (int32_t)i;
    }
    ix->nlist = nlist;
    ix->centroids = cent;
    ix->list_off = off;
    ix->list_ids = ids;
    if (ann_index_own(ix, cent) == 0)
        cent = NULL;
    if (ann_index_own(ix, off) == 0)
        off = NULL;
    if (ann_index_own(ix, ids) == 0)
        ids = NULL;
    if (cent || off || ids) { /* never with a fresh index */
        ix->centroids = NULL;
        ix->list_off = NULL;
        ix->list_ids = NULL;
        rc = loupe_fail(err, LOUPE_ERR_INTERNAL, "IVF: index ownership table full");
        goto done;
    }
    ix->stats.knn_s = ann_now() - t0;
done:
    free(xa);
    free(sample);
    free(cent);
    free(hn);
    free(sum);
    free(cnt);
    free(assign);
    free(perm);
    free(off);
    free(ids);
    return rc;
}

/* Scores list l's keys for q into the bounded min-heap out (*hn of k). */
static void scan_list(const ann_index *ix, ann_search_ctx *ctx, const float *q, int l, int k,
                      ann_cand *out, int *hn)
{
    for (uint32_t j = ix->list_off[l]; j < ix->list_off[l + 1]; j++) {
        int32_t id = ix->list_ids[j];
        ann_heap_push(out, hn, k, ann_score(ix->keys, q, id), id);
    }
    ctx->scanned += ix->list_off[l + 1] - ix->list_off[l];
}

int ann_ivf_search(const ann_index *ix, ann_search_ctx *ctx, const float *q, int k, int nprobe,
                   ann_cand *out)
{
    int d = ix->dim, np = 0, hn = 0;
    if (nprobe > ix->nlist)
        nprobe = ix->nlist;
    ann_cand *probe = ctx->pool;
    float *cs = ctx->cscore; /* the centroid scores, kept for probing past nprobe */
    for (int l = 0; l < ix->nlist; l++) {
        cs[l] = ann_dot_f32(q, ix->centroids + (int64_t)l * d, d);
        ann_heap_push(probe, &np, nprobe, cs[l], l);
    }
    ctx->scanned += ix->nlist;
    for (int p = 0; p < np; p++)
        scan_list(ix, ctx, q, probe[p].id, k, out, &hn);
    /* Fewer than k keys: the next lists in probing order (score down, id up) after the worst
     * probed one, the heap's root, until k are found. */
    float bs = np ? probe[0].s : INFINITY;
    int bl = np ? probe[0].id : -1;
    for (int probed = np; hn < k && probed < ix->nlist; probed++) {
        int next = -1;
        for (int l = 0; l < ix->nlist; l++) {
            bool after = cs[l] < bs || (cs[l] == bs && l > bl);
            if (after && (next < 0 || cs[l] > cs[next]))
                next = l;
        }
        if (next < 0)
            break;
        scan_list(ix, ctx, q, next, k, out, &hn);
        bs = cs[next];
        bl = next;
    }
    ann_heap_sort_desc(out, hn);
    return hn;
}

/* ---- Growth ---------------------------------------------------------------------------------- */

/* Each new key joins the list of its nearest centroid (the build's assignment). The lists stay
 * one CSR array: every list moves right by the new keys of the lists before it (last list first,
 * so nothing is overwritten before it has moved) and the new ids go at the ends, ascending. */
void ann_ivf_add(ann_index *ix, ann_grow *g, int64_t n_old, int64_t n_new, int32_t *assign)
{
    int nlist = ix->nlist, d = ix->dim;
    uint32_t *off = g->list_off, *cnt = g->cnt;
    memset(cnt, 0, (size_t)nlist * sizeof *cnt);
    for (int64_t u = n_old; u < n_new; u++) {
        ann_keys_row(ix->keys, u, g->orow);
        int l = nearest_centroid(g->orow, ix->centroids, g->half_norm, nlist, d);
        assign[u - n_old] = l;
        cnt[l]++;
    }
    uint32_t shift = (uint32_t)(n_new - n_old), old_end = off[nlist];
    off[nlist] = old_end + shift;
    for (int l = nlist - 1; l >= 0; l--) {
        shift -= cnt[l];
        uint32_t start = off[l], len = old_end - start;
        memmove(g->list_ids + start + shift, g->list_ids + start, (size_t)len * sizeof(int32_t));
        off[l] = start + shift;
        cnt[l] = off[l] + len; /* where list l's new ids go */
        old_end = start;
    }
    for (int64_t u = n_old; u < n_new; u++)
        g->list_ids[cnt[assign[u - n_old]]++] = (int32_t)u;
}
