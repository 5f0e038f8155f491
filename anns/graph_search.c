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
 * the epoch clears every mark in O(1) (a full clear only when the byte wraps, every 255
 * searches).
 * Before scoring an expansion's neighbours, their key rows are prefetched, so the memory
 * latency of the rows overlaps with the dot products. The next expansion's neighbour list is
 * asked for meanwhile too, its offset having been asked for when the key entered the pool: an
 * expansion otherwise began with two dependent misses (offset, then list) before its rows
 * could even be requested (0-12% more searches/s on dev-2c, 128K real and 1M synthetic keys).
 *
 * Group search (ann_search_group): the query heads of a KV group search the same graph over the
 * same keys and visit overlapping regions, and a search's cost is the latency of loading random
 * key rows. So one traversal serves the whole group: each visited row is loaded once and scored
 * for every query (the row is in cache for the second one on). By default (ANN_GROUP_EACH) every
 * query keeps its own pool and the queries take turns expanding, sharing rows and expansions;
 * the shared-pool modes rank one pool by a combination of the scores, each query keeping a
 * bounded top-k of every key scored (a key one query alone wants may leave the pool).
 */
#include "anns/ann_impl.h"

#include <stdbool.h>

/* Inserts (s, id) into the sorted pool (with its expanded flags) of *n entries, capacity cap;
 * returns its position, or cap when it did not make it. */
static int pool_insert_in(ann_cand *pool, uint8_t *expanded, int *n, int cap, float s, int32_t id)
{
    if (*n == cap && !ann_ranks_below(pool[cap - 1].s, pool[cap - 1].id, s, id))
        return cap;
    /* the first position that ranks below (s, id): in the sorted pool, how many score >= s,
     * less the tied entries of higher id (rare: stepped over after the count). Counted, not
     * bisected: the count's compares are independent (vectorised), a bisection's seven are a
     * chain of dependent loads, and a search inserts a thousand keys or more; comparing ids in
     * the count too cost a quarter of the searches/s */
    int lo = 0;
    for (int j = 0; j < *n; j++)
        lo += pool[j].s >= s;
    while (lo > 0 && pool[lo - 1].s == s && pool[lo - 1].id > id)
        lo--;
    int tail = (*n < cap ? *n : cap - 1) - lo;
    if (tail > 0) {
        memmove(pool + lo + 1, pool + lo, (size_t)tail * sizeof *pool);
        memmove(expanded + lo + 1, expanded + lo, (size_t)tail);
    }
    pool[lo].s = s;
    pool[lo].id = id;
    expanded[lo] = 0;
    if (*n < cap)
        (*n)++;
    return lo;
}

static int pool_insert(ann_search_ctx *ctx, int *n, int cap, float s, int32_t id)
{
    return pool_insert_in(ctx->pool, ctx->expanded, n, cap, s, id);
}

/* A new search's epoch: marks of earlier searches no longer count. */
static uint32_t next_epoch(ann_search_ctx *ctx)
{
    uint32_t ep = ++ctx->epoch;
    if (ep > ANN_EPOCH_MAX) { /* wrapped: marks of searches long ago would read as current */
        memset(ctx->visited, 0, (size_t)ctx->max_keys * sizeof *ctx->visited);
        memset(ctx->xmark, 0, (size_t)ctx->max_keys * sizeof *ctx->xmark);
        ep = ctx->epoch = 1;
    }
    return ep;
}

/* A shared-pool group search's queries and per-query heaps; NULL for a single-query search. */
typedef struct {
    const float *qs;  /* (nq, dim) */
    int nq;
    int kk;           /* heap capacity: results kept per query */
    ann_group_mode mix;
    ann_cand *heaps;  /* (nq, stride) */
    int stride;
    int *hn;          /* (nq) heap sizes */
} group_scorer;

/* Key id's pool score: q·k, or for a group its queries' scores combined, each also offered to
 * its query's heap. */
static float score_key(const ann_keys *keys, const float *q, const group_scorer *g, int32_t id)
{
    if (!g)
        return ann_score(keys, q, id);
    float best = -INFINITY, sum = 0;
    for (int j = 0; j < g->nq; j++) {
        float s = ann_score(keys, g->qs + (int64_t)j * keys->dim, id);
        ann_heap_push(g->heaps + (int64_t)j * g->stride, &g->hn[j], g->kk, s, id);
        best = s > best ? s : best;
        sum += s;
    }
    return g->mix == ANN_GROUP_SHARED_MEAN ? sum / (float)g->nq : best;
}

/* u's neighbours not visited in this search (epoch ep) into out, marked visited, their rows
 * prefetched; counts them as scanned (rows loaded: once per traversal, however many queries
 * score them). Returns how many. */
static int unvisited_neighbours(const ann_index *ix, ann_search_ctx *ctx, int32_t u, uint32_t ep,
                                int32_t *out)
{
    const int32_t *nb = ix->adj + ix->adj_off[u];
    const int deg = (int)(ix->adj_off[u + 1] - ix->adj_off[u]);
    int m = 0;
    /* without a branch on the marks: whether a neighbour was visited is a coin toss the
     * predictor loses, half the search's time on small indexes */
    for (int j = 0; j < deg; j++) {
        int32_t v = nb[j];
        if (v < 0) /* padding of a list under construction (graph_build.c) */
            break;
        out[m] = v;
        m += ctx->visited[v] != ep;
        ctx->visited[v] = (uint8_t)ep;
    }
    for (int j = 0; j < m; j++)
        ann_prefetch_row(ann_search_keys(ix), out[j]);
    ctx->scanned += m;
    return m;
}

/* Marks start key id (a seed or an entry point) visited and counts it scanned; false when it
 * is out of range or already visited in this search (epoch ep). */
static bool first_start(const ann_index *ix, ann_search_ctx *ctx, uint32_t ep, int32_t id)
{
    if (id < 0 || id >= ix->n || ctx->visited[id] == ep)
        return false;
    ctx->visited[id] = ep;
    ctx->scanned++;
    return true;
}

/* The search's start keys (seeds, then entry points) not visited yet into ctx->nbuf, in that
 * order, marked and counted by first_start, their rows prefetched before any is scored: a
 * decode step's seeds are a hundred or more random rows, which scored one at a time would each
 * wait for memory. Returns how many. */
static int start_keys(const ann_index *ix, ann_search_ctx *ctx, uint32_t ep, const int32_t *seeds,
                      int n_seeds)
{
    int m = 0;
    for (int i = 0; i < n_seeds + ix->n_entry; i++) {
        int32_t id = i < n_seeds ? seeds[i] : ix->entry[i - n_seeds];
        if (first_start(ix, ctx, ep, id)) {
            ctx->nbuf[m++] = id;
            ann_prefetch_row(ann_search_keys(ix), id);
        }
    }
    return m;
}

/* Asks for key u's neighbour list ahead of reading it: its first and last lines (a list of 16
 * ids at any 4-byte offset straddles two). */
static inline void prefetch_list(const ann_index *ix, int32_t u)
{
    __builtin_prefetch(ix->adj + ix->adj_off[u], 0, 3);
    __builtin_prefetch(ix->adj + ix->adj_off[u + 1] - 1, 0, 3);
}

/* Asks for key v's list offset: v just entered a pool at position pos (capacity ef), so it is
 * likely expanded later, and prefetch_list would otherwise wait for this offset first. */
static inline void prefetch_offset(const ann_index *ix, int32_t v, int pos, int ef)
{
    if (pos < ef)
        __builtin_prefetch(ix->adj_off + v, 0, 3);
}

/* Asks for the list of the first unexpanded pool entry at or after `from` (within n and
 * expand): the one likely expanded next, unless a neighbour scored meanwhile displaces it. Its
 * offset is in cache (prefetch_offset), so the list is requested at once. */
static inline void prefetch_next_list(const ann_index *ix, const ann_cand *pool,
                                      const uint8_t *expanded, int from, int n, int expand)
{
    for (int j = from; j < n && j < expand; j++)
        if (!expanded[j]) {
            prefetch_list(ix, pool[j].id);
            return;
        }
}

/* The neighbours of keys us (n) not visited yet into ctx->nbuf (see unvisited_neighbours),
 * their lists fetched together first; returns how many. */
static int gather_neighbours(const ann_index *ix, ann_search_ctx *ctx, const int32_t *us, int n,
                             uint32_t ep)
{
    if (n > 1)
        for (int j = 0; j < n; j++)
            prefetch_list(ix, us[j]);
    int m = 0;
    for (int j = 0; j < n; j++)
        m += unvisited_neighbours(ix, ctx, us[j], ep, ctx->nbuf + m);
    return m;
}

/* The walk's limits made concrete: expand within 1..ef, batch within 1..ANN_BATCH_MAX. */
static void limits(const ann_walk *w, int *expand, int *batch)
{
    *expand = w->expand <= 0 || w->expand > w->ef ? w->ef : w->expand;
    *batch = w->batch < 1 ? 1 : w->batch > ANN_BATCH_MAX ? ANN_BATCH_MAX : w->batch;
}

/* Whether pool entry s is worth expanding beside the pool's best, best: within the walk's
 * margin (attention weights fall as exp(score): an entry far below the best is a key of no
 * weight, and so, mostly, are its neighbours). */
static inline bool within_margin(const ann_walk *w, float best, float s)
{
    return w->margin <= 0 || s >= best - w->margin;
}

/* Scores the m keys waiting in ctx->nbuf (for q, or g's queries) into the pool of *n entries
 * (capacity ef); returns the best unexpanded entry from i on, the one an insertion above i
 * took first: where the search goes next. */
static int score_waiting(const ann_index *ix, ann_search_ctx *ctx, const float *q,
                         const group_scorer *g, int ef, int *n, int i, int m)
{
    int lowest = *n;
    for (int j = 0; j < m; j++) {
        int32_t v = ctx->nbuf[j];
        int pos = pool_insert(ctx, n, ef, score_key(ann_search_keys(ix), q, g, v), v);
        prefetch_offset(ix, v, pos, ef);
        lowest = pos < lowest ? pos : lowest;
    }
    int next = lowest < i ? lowest : i;
    while (next < *n && ctx->expanded[next])
        next++;
    return next;
}

/* The beam search (file comment) for q, or for g's queries when g is non-NULL, expanding the
 * best `batch` unexpanded pool entries at a time; returns the pool size. */
static int traverse(const ann_index *ix, ann_search_ctx *ctx, const float *q,
                    const group_scorer *g, const ann_walk *w)
{
    int expand, batch;
    limits(w, &expand, &batch);
    uint32_t ep = next_epoch(ctx);
    int n = 0;
    const int m0 = start_keys(ix, ctx, ep, w->seeds, w->n_seeds);
    int i = score_waiting(ix, ctx, q, g, w->ef, &n, 0, m0); /* the best unexpanded entry */
    while (i < n && i < expand && within_margin(w, ctx->pool[0].s, ctx->pool[i].s)) {
        int32_t us[ANN_BATCH_MAX];
        int nu = 0;
        for (int j = i; j < n && j < expand && nu < batch &&
                        within_margin(w, ctx->pool[0].s, ctx->pool[j].s);
             j++)
            if (!ctx->expanded[j]) {
                ctx->expanded[j] = 1;
                us[nu++] = ctx->pool[j].id;
            }
        int m = gather_neighbours(ix, ctx, us, nu, ep);
        prefetch_next_list(ix, ctx->pool, ctx->expanded, i, n, expand); /* while these score */
        i = score_waiting(ix, ctx, q, g, w->ef, &n, i, m);
    }
    return n;
}

int ann_graph_search_pool(const ann_index *ix, ann_search_ctx *ctx, const float *q,
                          const ann_walk *w)
{
    return traverse(ix, ctx, q, NULL, w);
}

/* ---- Interleaved searches (ann_search_many) ------------------------------------------- *
 *
 * traverse() with batch 1, cut into its two memory waits: a walker either scores the rows it
 * asked for (then picks its next entry and asks for that entry's list), or reads the list it
 * asked for (then marks the unvisited neighbours and asks for their rows). Walkers take turns,
 * so between a walker's request and its use, the others compute. Each walker's steps are
 * traverse()'s, in its order: the same pool, the same rows scanned. */

typedef struct {
    const ann_index *ix;
    ann_search_ctx *ctx;
    const float *q;
    const ann_walk *w;
    int expand, n, i, m; /* m: rows waiting in ctx->nbuf */
    uint32_t ep;
    int32_t u;           /* the entry whose list was asked for */
    bool gather, done;   /* next step reads u's list; no step left */
} walker;

static void walker_start(walker *k)
{
    int batch;
    limits(k->w, &k->expand, &batch);
    k->ep = next_epoch(k->ctx);
    k->n = k->i = 0;
    k->m = start_keys(k->ix, k->ctx, k->ep, k->w->seeds, k->w->n_seeds);
    k->gather = k->done = false;
}

/* Scores the waiting rows into the pool, then picks the next entry to expand (traverse()'s
 * rule) and asks for its list, or finishes. */
static void walker_score(walker *k)
{
    ann_search_ctx *ctx = k->ctx;
    const int next = k->i = score_waiting(k->ix, ctx, k->q, NULL, k->w->ef, &k->n, k->i, k->m);
    if (next < k->n && next < k->expand &&
        within_margin(k->w, ctx->pool[0].s, ctx->pool[next].s)) {
        ctx->expanded[next] = 1;
        k->u = ctx->pool[next].id;
        prefetch_list(k->ix, k->u);
        k->gather = true;
    } else {
        k->done = true;
    }
}

void ann_graph_search_many(const ann_index *const *ix, ann_search_ctx *const *ctx,
                           const float *const *q, const ann_walk *w, int n, int *n_pool)
{
    walker k[ANN_INTERLEAVE_MAX];
    int busy = n;
    for (int j = 0; j < n; j++) {
        k[j] = (walker){.ix = ix[j], .ctx = ctx[j], .q = q[j], .w = &w[j]};
        walker_start(&k[j]);
        /* Odd walkers one step ahead: then a walker's rows are asked for just before another
         * walker SCORES (the long step) and used after it, not after a short list read. */
        if (j % 2) {
            walker_score(&k[j]);
            busy -= k[j].done;
        }
    }
    while (busy > 0)
        for (int j = 0; j < n; j++) {
            if (k[j].done)
                continue;
            if (k[j].gather) {
                k[j].m =
                    unvisited_neighbours(k[j].ix, k[j].ctx, k[j].u, k[j].ep, k[j].ctx->nbuf);
                k[j].gather = false;
                continue;
            }
            walker_score(&k[j]);
            busy -= k[j].done;
        }
    for (int j = 0; j < n; j++)
        n_pool[j] = k[j].n;
}

/* ---- Group search, one pool per query (ANN_GROUP_EACH) --------------------------------- *
 *
 * Each query keeps its own pool of ef, as its single search would, and the queries take turns
 * expanding their best unexpanded entry. What is shared is the work: a key's row is loaded and
 * scored for every query the first time any of them reaches it (and offered to every pool), and
 * a key expanded for one query is never expanded again for another (xmark), its neighbours being
 * in every pool already. So each query searches at least as widely as alone, and the rows saved
 * are the overlap of the queries' regions. */

/* Scores key v for every query and offers it to every pool; lowest[j] tracks the best position
 * an insertion took in pool j (the next expansion restarts there). */
static void offer_each(const ann_index *ix, ann_search_ctx *ctx, const float *qs, int nq,
                       int ef, int32_t v, int *n, int *lowest)
{
    const int stride = ctx->max_beam + 1;
    for (int j = 0; j < nq; j++) {
        float s = ann_score(ann_search_keys(ix), qs + (int64_t)j * ix->dim, v);
        int pos = pool_insert_in(ctx->gheap + (int64_t)j * stride,
                                 ctx->gexpanded + (int64_t)j * stride, &n[j], ef, s, v);
        prefetch_offset(ix, v, pos, ef);
        if (pos < lowest[j])
            lowest[j] = pos;
    }
}

static void traverse_each(const ann_index *ix, ann_search_ctx *ctx, const float *qs, int nq,
                          const ann_walk *w, int *n)
{
    const int stride = ctx->max_beam + 1, ef = w->ef;
    int expand, batch;
    limits(w, &expand, &batch);
    uint32_t ep = next_epoch(ctx);
    int cur[ANN_GROUP_MAX], lowest[ANN_GROUP_MAX];
    for (int j = 0; j < nq; j++)
        n[j] = cur[j] = lowest[j] = 0;
    const int m0 = start_keys(ix, ctx, ep, w->seeds, w->n_seeds);
    for (int j = 0; j < m0; j++)
        offer_each(ix, ctx, qs, nq, ef, ctx->nbuf[j], n, lowest);
    for (int busy = 1; busy;) {
        busy = 0;
        if (batch <= 1) {
            for (int q = 0; q < nq; q++) { /* one expansion per query per round */
                ann_cand *pool = ctx->gheap + (int64_t)q * stride;
                uint8_t *done = ctx->gexpanded + (int64_t)q * stride;
                int i = cur[q];
                while (i < n[q] && i < expand && (done[i] || ctx->xmark[pool[i].id] == ep))
                    done[i++] = 1; /* expanded, here or for another query */
                cur[q] = i;
                if (i >= n[q] || i >= expand || !within_margin(w, pool[0].s, pool[i].s))
                    continue;
                busy = 1;
                done[i] = 1;
                int32_t u = pool[i].id;
                ctx->xmark[u] = ep;
                int m = unvisited_neighbours(ix, ctx, u, ep, ctx->nbuf);
                prefetch_next_list(ix, pool, done, i + 1, n[q], expand);
                for (int j = 0; j < nq; j++)
                    lowest[j] = n[j];
                for (int j = 0; j < m; j++)
                    offer_each(ix, ctx, qs, nq, ef, ctx->nbuf[j], n, lowest);
                for (int j = 0; j < nq; j++)
                    if (lowest[j] < cur[j])
                        cur[j] = lowest[j];
            }
            continue;
        }
        /* Batched: each query's best `batch` unexpanded entries (not expanded for another),
         * their neighbours gathered and fetched together, then offered to every pool. */
        int32_t us[ANN_GROUP_MAX * ANN_BATCH_MAX];
        int nu = 0;
        for (int q = 0; q < nq; q++) {
            ann_cand *pool = ctx->gheap + (int64_t)q * stride;
            uint8_t *done = ctx->gexpanded + (int64_t)q * stride;
            int taken = 0;
            for (int i = cur[q]; i < n[q] && i < expand && taken < batch &&
                                 within_margin(w, pool[0].s, pool[i].s);
                 i++) {
                if (done[i])
                    continue;
                done[i] = 1;
                if (ctx->xmark[pool[i].id] == ep) /* expanded for another query */
                    continue;
                ctx->xmark[pool[i].id] = ep;
                us[nu++] = pool[i].id;
                taken++;
            }
        }
        if (nu == 0)
            break;
        busy = 1;
        int m = gather_neighbours(ix, ctx, us, nu, ep);
        for (int j = 0; j < nq; j++)
            lowest[j] = n[j];
        for (int j = 0; j < m; j++)
            offer_each(ix, ctx, qs, nq, ef, ctx->nbuf[j], n, lowest);
        for (int q = 0; q < nq; q++) {
            uint8_t *done = ctx->gexpanded + (int64_t)q * stride;
            int i = lowest[q] < cur[q] ? lowest[q] : cur[q];
            while (i < n[q] && done[i])
                i++;
            cur[q] = i;
        }
    }
}

void ann_graph_search_group(const ann_index *ix, ann_search_ctx *ctx, const float *qs, int nq,
                            const ann_walk *w, int kk, ann_group_mode mix, int *hn)
{
    if (mix == ANN_GROUP_EACH) {
        traverse_each(ix, ctx, qs, nq, w, hn);
        return;
    }
    group_scorer g = {qs, nq, kk, mix, ctx->gheap, ctx->max_beam + 1, hn};
    for (int j = 0; j < nq; j++)
        hn[j] = 0;
    traverse(ix, ctx, NULL, &g, w);
}
