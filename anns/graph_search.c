/*
 * Best-first beam search over a key→key graph (both the attention-aware graph and the key-only
 * baseline), the NSG/DiskANN form: a pool of at most `ef` candidates sorted best first, each
 * flagged once expanded; repeatedly expand the best unexpanded one, scoring its unvisited
 * neighbours; stop when every pool entry is expanded, or with `expand` < ef, when the best
 * `expand` entries are (a narrower search whose pool still collects every key it scored: on
 * attention's near one-hot score profiles the tail of the top-k carries almost no weight, and the
 * neighbours of the expanded head find most of it). The pool is bounded, so the search
 * allocates nothing.
 *
 * Visited marks are epochs: a key is visited in this search iff visited[key] == epoch; bumping
 * the epoch clears every mark in O(1) (a full clear only when the 32-bit counter wraps).
 * Before scoring an expansion's neighbours, their key rows are prefetched, so the memory
 * latency of the rows overlaps with the dot products.
 */
#include "anns/ann_impl.h"

/* Inserts (s, id) into the sorted pool of *n entries, capacity cap; returns its position, or cap
 * when it did not make it. */
static int pool_insert(ann_search_ctx *ctx, int *n, int cap, float s, int32_t id)
{
    ann_cand *pool = ctx->pool;
    if (*n == cap && s <= pool[cap - 1].s)
        return cap;
    int lo = 0, hi = *n;
    while (lo < hi) { /* first position whose score is below s */
        int mid = (lo + hi) / 2;
        if (pool[mid].s >= s)
            lo = mid + 1;
        else
            hi = mid;
    }
    int tail = (*n < cap ? *n : cap - 1) - lo;
    if (tail > 0) {
        memmove(pool + lo + 1, pool + lo, (size_t)tail * sizeof *pool);
        memmove(ctx->expanded + lo + 1, ctx->expanded + lo, (size_t)tail);
    }
    pool[lo].s = s;
    pool[lo].id = id;
    ctx->expanded[lo] = 0;
    if (*n < cap)
        (*n)++;
    return lo;
}

static void start_at(const ann_index *ix, ann_search_ctx *ctx, const float *q, uint32_t ep,
                     int32_t id, int *n, int ef)
{
    if (id < 0 || id >= ix->n || ctx->visited[id] == ep)
        return;
    ctx->visited[id] = ep;
    ctx->scanned++;
    pool_insert(ctx, n, ef, ann_score(ix->keys, q, id), id);
}

int ann_graph_search_pool(const ann_index *ix, ann_search_ctx *ctx, const float *q, int ef,
                          int expand, const int32_t *seeds, int n_seeds)
{
    const ann_keys *keys = ix->keys;
    uint32_t *visited = ctx->visited;
    uint32_t ep = ++ctx->epoch;
    if (ep == 0) { /* wrapped: marks from 2^32 searches ago would read as current */
        memset(visited, 0, (size_t)ctx->max_keys * sizeof *visited);
        ep = ctx->epoch = 1;
    }
    int n = 0;
    for (int i = 0; i < n_seeds; i++)
        start_at(ix, ctx, q, ep, seeds[i], &n, ef);
    for (int i = 0; i < ix->n_entry; i++)
        start_at(ix, ctx, q, ep, ix->entry[i], &n, ef);

    if (expand <= 0 || expand > ef)
        expand = ef;
    int i = 0;
    while (i < n && i < expand) {
        ctx->expanded[i] = 1;
        int32_t u = ctx->pool[i].id;
        const int32_t *nb = ix->adj + ix->adj_off[u];
        int deg = (int)(ix->adj_off[u + 1] - ix->adj_off[u]);
        int m = 0;
        for (int j = 0; j < deg; j++) {
            int32_t v = nb[j];
            if (v < 0) /* padding of a list under construction (graph_build.c) */
                break;
            if (visited[v] != ep) {
                visited[v] = ep;
                ctx->nbuf[m++] = v;
                ann_prefetch_row(keys, v);
            }
        }
        ctx->scanned += m;
        int lowest = n;
        for (int j = 0; j < m; j++) {
            int32_t v = ctx->nbuf[j];
            int pos = pool_insert(ctx, &n, ef, ann_score(keys, q, v), v);
            if (pos < lowest)
                lowest = pos;
        }
        int next = lowest <= i ? lowest : i + 1;
        while (next < n && ctx->expanded[next])
            next++;
        i = next;
    }
    return n;
}
