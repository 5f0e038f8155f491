/*
 * Growth: keys appended to an index after its build. Retrieval attention moves the oldest tokens
 * of its static set to host memory as a conversation grows; their keys must become findable
 * through every query head's index without a rebuild and without allocating per token.
 *
 * ann_index_reserve allocates everything once, for a capacity of keys; ann_index_add then
 * allocates nothing:
 *   flat   counts the new rows.
 *   ivf    the list ids get room for `cap` ids; a new key joins its nearest centroid's list (the
 *          build's rule), the lists shifted in place so they stay one CSR array (ivf.c).
 *   graph  the CSR lists are laid out again with room: old key u gets deg(u) + ANN_GROW_SLACK
 *          slots, every key to come M + ANN_GROW_SLACK, padded with -1. The beam search already
 *          stops a list at -1, so its hot loop is unchanged, and the cost is the slack only, not
 *          a fixed stride of the longest list (lists average ~20 of M = 32 on attention data).
 *
 * Linking new keys follows the build (graph_build.c) with the queries that attended to them:
 *   for each given query, in order, L = its top-K (K = the build's build_k) among the old keys
 *   (beam search of the current graph, beam K) and the new keys (scored exactly: there are few),
 *   then
 *   - every new key of L without an out-list yet gets L, pruned, as its list (the build gives a
 *     key that pivots no query its best query's list; here the first query ranking it), and
 *   - L's pivot (its best key that pivoted fewer than pivot_cap lists in this add: hubs such as
 *     sinks would take every list) gets the new keys of L as candidates, all of L when the pivot
 *     is itself new: the projection's forward edges, which give new keys in-edges from the old
 *     keys that queries like this one reach first;
 *   every key a merge adds gets a reverse edge; a list past its region is re-pruned by the
 *   build's rule (ann_prune_list) to at most M.
 *   A new key no query ranked takes its best query's list (the query scoring it highest), and
 *   that list's pivot points at it. Without queries (and always for the key-only graph) each new
 *   key is its own query, the key graph's rule: degraded for the attention graph, whose queries
 *   are not keys, but the only choice when none are given.
 *   Last, a BFS from the entry points finds keys left unreachable (new keys whose in-edges were
 *   re-pruned away, old keys a re-prune cut off) and links each from the best reached key with
 *   room that its best query's search finds, as the build's repair does.
 *
 * Scratch: per index (ann_grow) the rows of one prune; per thread the caller's search context
 * (visited epochs and pool for searches, aux for pivot counts then reachability marks, nbuf for
 * the BFS queue), which must cover the reserved capacity. An index must not be searched while
 * keys are added to it; indexes sharing one ann_keys may be grown in parallel, each with its own
 * context, once the keys' count was raised.
 */
#include "anns/ann_impl.h"

#include <stdlib.h>

enum { ANN_GROW_SLACK = 4, ANN_GROW_REPAIR_EF = 64, ANN_GROW_REPAIR_ROUNDS = 3 };

/* ctx->aux during the query pass: bit 31 = the key has its out-list, low bits = lists it
 * pivoted in this add. */
#define ANN_LISTED 0x80000000u

void ann_graph_params_init(ann_graph_params *gp, const ann_build_opts *o)
{
    gp->build_k = o && o->build_k > 0 ? o->build_k : 64;
    gp->degree = o && o->degree > 0 ? o->degree : 32;
    gp->fill = o ? (o->fill < 0 ? 0 : o->fill > gp->degree ? gp->degree : o->fill) : 16;
    gp->pivot_cap = o ? (o->pivot_cap > 0 ? o->pivot_cap : 0) : 8;
    gp->prune = o ? o->prune : ANN_PRUNE_L2;
    gp->alpha = o && o->prune_alpha > 0 ? o->prune_alpha : 1.0f;
}

void ann_grow_free(ann_index *ix)
{
    ann_grow *g = ix->grow;
    if (!g)
        return;
    free(g->adj_off);
    free(g->adj);
    free(g->rows);
    free(g->orow);
    free(g->qrow);
    free(g->cand);
    free(g->rowix);
    free(g->tmp);
    free(g->work);
    free(g->kept);
    free(g->indeg);
    free(g->added);
    free(g->list);
    free(g->sel);
    free(g->list_off);
    free(g->list_ids);
    free(g->cnt);
    free(g->half_norm);
    free(g);
    ix->grow = NULL;
}

size_t ann_grow_bytes(const ann_index *ix)
{
    const ann_grow *g = ix->grow;
    size_t d = (size_t)ix->dim;
    if (ix->type == ANN_IVF)
        return (size_t)ix->nlist * (d * 4 + 4) + 4 + (size_t)ix->cap * 4 + (size_t)ix->nlist * 8 +
               d * 4;
    size_t r = (size_t)(g->max_list + g->K);
    return (size_t)(ix->cap + 1) * 5 + (size_t)g->adj_off[ix->cap] * 4 + (size_t)ix->n_entry * 4 +
           r * (d * 4 + 8 + sizeof(ann_prune_cand)) + 2 * d * 4 +
           ((size_t)2 * g->M + 2 * (size_t)g->max_list + 2 * (size_t)g->K) * 4;
}

int64_t ann_index_count(const ann_index *ix) { return ix->n; }

/* ---- Reserve --------------------------------------------------------------------------------- */

/* In-degrees saturate: a key with 255 in-edges is never taken for an orphan. */
static void indeg_inc(ann_grow *g, int32_t v)
{
    if (g->indeg[v] < 255)
        g->indeg[v]++;
}

static void indeg_dec(ann_grow *g, int32_t v)
{
    if (g->indeg[v] > 0 && g->indeg[v] < 255)
        g->indeg[v]--;
}

static loupe_status reserve_graph(ann_index *ix, int64_t cap, loupe_err *err)
{
    ann_grow *g = calloc(1, sizeof *g);
    if (!g)
        goto nomem;
    int M = ix->gp.degree > 0 ? ix->gp.degree : ix->degree > 0 ? ix->degree : 32;
    int K = ix->gp.build_k > 0 ? ix->gp.build_k : 64, s_new = M + ANN_GROW_SLACK;
    int max_list = s_new;
    uint64_t total = (uint64_t)(cap - ix->n) * (uint64_t)s_new;
    /* A list keeps its region when the index grew before; a CSR list gets the slack. */
    for (int64_t u = 0; u < ix->n; u++) {
        int c = ix->grow ? (int)(ix->adj_off[u + 1] - ix->adj_off[u])
                         : ann_graph_degree(ix, u) + ANN_GROW_SLACK;
        total += (uint64_t)c;
        if (c > max_list)
            max_list = c;
    }
    if (total >= UINT32_MAX) {
        free(g);
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "graph reserve: %lld keys need %llu edge slots, past 32-bit offsets",
                          (long long)cap, (unsigned long long)total);
    }
    size_t r = (size_t)(max_list + K), d = (size_t)ix->dim;
    g->K = K;
    g->M = M;
    g->max_list = max_list;
    g->adj_off = malloc(((size_t)cap + 1) * sizeof *g->adj_off);
    g->adj = malloc((size_t)(total ? total : 1) * sizeof *g->adj);
    ann_advise_huge_pages(g->adj, (size_t)total * sizeof *g->adj); /* searched at random */
    g->rows = malloc(r * d * sizeof *g->rows);
    g->orow = malloc(d * sizeof *g->orow);
    g->qrow = malloc(d * sizeof *g->qrow);
    g->cand = malloc(r * sizeof *g->cand);
    g->rowix = malloc(r * sizeof *g->rowix);
    g->tmp = malloc(r * sizeof *g->tmp);
    g->work = malloc(2 * (size_t)M * sizeof *g->work);
    g->kept = malloc((size_t)max_list * sizeof *g->kept);
    g->indeg = calloc((size_t)cap, 1);
    g->added = malloc((size_t)max_list * sizeof *g->added);
    g->list = malloc((size_t)K * sizeof *g->list);
    g->sel = malloc((size_t)K * sizeof *g->sel);
    if (!g->adj_off || !g->adj || !g->rows || !g->orow || !g->qrow || !g->cand || !g->rowix ||
        !g->tmp || !g->work || !g->kept || !g->indeg || !g->added || !g->list || !g->sel)
        goto nomem;
    for (size_t i = 0; i < r; i++)
        g->rowix[i] = (int32_t)i;
    uint32_t pos = 0;
    for (int64_t u = 0; u < cap; u++) {
        int c = s_new, e = 0;
        if (u < ix->n) {
            e = ann_graph_degree(ix, u);
            c = ix->grow ? (int)(ix->adj_off[u + 1] - ix->adj_off[u]) : e + ANN_GROW_SLACK;
            memcpy(g->adj + pos, ix->adj + ix->adj_off[u], (size_t)e * sizeof *g->adj);
        }
        for (int j = e; j < c; j++)
            g->adj[pos + (uint32_t)j] = -1;
        for (int j = 0; j < e; j++)
            indeg_inc(g, g->adj[pos + (uint32_t)j]);
        g->adj_off[u] = pos;
        pos += (uint32_t)c;
    }
    g->adj_off[cap] = pos;
    /* Swap in the new layout; the arrays it replaces are freed unless a mapping holds them. */
    if (ix->grow) {
        ann_grow_free(ix);
    } else {
        ann_index_disown(ix, ix->adj_off);
        ann_index_disown(ix, ix->adj);
    }
    ix->grow = g;
    ix->adj_off = g->adj_off;
    ix->adj = g->adj;
    ix->cap = cap;
    return LOUPE_OK;
nomem:
    if (g) {
        ann_index tmp = {.grow = g};
        ann_grow_free(&tmp);
    }
    return loupe_fail(err, LOUPE_ERR_NOMEM, "graph reserve: no memory for %lld keys",
                      (long long)cap);
}

static loupe_status reserve_ivf(ann_index *ix, int64_t cap, loupe_err *err)
{
    ann_grow *g = calloc(1, sizeof *g);
    int nlist = ix->nlist;
    if (!g || !(g->list_off = malloc(((size_t)nlist + 1) * sizeof *g->list_off)) ||
        !(g->list_ids = malloc((size_t)cap * sizeof *g->list_ids)) ||
        !(g->cnt = malloc((size_t)nlist * sizeof *g->cnt)) ||
        !(g->half_norm = malloc((size_t)nlist * sizeof *g->half_norm)) ||
        !(g->orow = malloc((size_t)ix->dim * sizeof *g->orow))) {
        if (g) {
            ann_index tmp = {.grow = g};
            ann_grow_free(&tmp);
        }
        return loupe_fail(err, LOUPE_ERR_NOMEM, "IVF reserve: no memory for %lld keys",
                          (long long)cap);
    }
    memcpy(g->list_off, ix->list_off, ((size_t)nlist + 1) * sizeof *g->list_off);
    memcpy(g->list_ids, ix->list_ids, (size_t)ix->n * sizeof *g->list_ids);
    ann_ivf_half_norms(ix->centroids, nlist, ix->dim, g->half_norm);
    if (ix->grow) {
        ann_grow_free(ix);
    } else {
        ann_index_disown(ix, ix->list_off);
        ann_index_disown(ix, ix->list_ids);
    }
    ix->grow = g;
    ix->list_off = g->list_off;
    ix->list_ids = g->list_ids;
    ix->cap = cap;
    return LOUPE_OK;
}

loupe_status ann_index_reserve(ann_index *ix, int64_t max_keys, loupe_err *err)
{
    if (max_keys < ix->n || max_keys > INT32_MAX)
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "index reserve: %lld keys is outside %lld (held now) .. %d",
                          (long long)max_keys, (long long)ix->n, INT32_MAX);
    if (ix->cap >= max_keys)
        return LOUPE_OK;
    switch (ix->type) {
    case ANN_FLAT: ix->cap = max_keys; return LOUPE_OK;
    case ANN_IVF: return reserve_ivf(ix, max_keys, err);
    default: return reserve_graph(ix, max_keys, err);
    }
}

/* ---- Linking --------------------------------------------------------------------------------- */

typedef struct {
    ann_index *ix;
    ann_grow *g;
    ann_search_ctx *ctx;
    const ann_keys *keys;
    int d, K, ef;
    int64_t n_old, n_new;
} linker;

static int has(const int32_t *l, int n, int32_t v)
{
    for (int i = 0; i < n; i++)
        if (l[i] == v)
            return 1;
    return 0;
}

/* Settles the in-degrees of a re-pruned list (old: e entries, kept: kn) and keeps the old
 * neighbours the prune would orphan (their last in-edge): in a free slot of the region, else in
 * place of a kept key that other lists also point at. Without this a re-prune cuts off the keys
 * that the build's repair linked by a single edge. Returns the new count of kept. */
static int keep_orphans(ann_grow *g, const int32_t *old, int e, int32_t *kept, int kn, int capu)
{
    for (int i = 0; i < kn; i++)
        if (!has(old, e, kept[i]))
            indeg_inc(g, kept[i]);
    int victim = kn - 1;
    for (int j = 0; j < e; j++) {
        int32_t v = old[j];
        if (has(kept, kn, v))
            continue;
        indeg_dec(g, v);
        if (g->indeg[v] > 0)
            continue;
        if (kn < capu) {
            kept[kn++] = v;
        } else {
            while (victim >= 0 && g->indeg[kept[victim]] < 2)
                victim--;
            if (victim < 0)
                continue; /* the repair will link it */
            indeg_dec(g, kept[victim]);
            kept[victim--] = v;
        }
        indeg_inc(g, v);
    }
    return kn;
}

/* Merges candidates c (m) into u's list: appended while the region holds them, else the list
 * and they are re-pruned together (at most M kept, plus orphans). With rev, each key the merge
 * added gets u in its own list (one level: the build adds reverse edges of the forward lists
 * only). */
static void merge(linker *lk, int32_t u, const int32_t *c, int m, int rev)
{
    ann_grow *g = lk->g;
    int32_t *lst = g->adj + g->adj_off[u];
    int capu = (int)(g->adj_off[u + 1] - g->adj_off[u]), e = 0, k = 0, nadd = 0;
    while (e < capu && lst[e] >= 0)
        e++;
    for (int i = 0; i < e; i++)
        g->cand[k++] = lst[i];
    for (int j = 0; j < m; j++) {
        int dup = c[j] == u;
        for (int i = 0; i < k && !dup; i++)
            dup = g->cand[i] == c[j];
        if (!dup)
            g->cand[k++] = c[j];
    }
    if (k == e)
        return;
    if (k <= capu) {
        memcpy(lst + e, g->cand + e, (size_t)(k - e) * sizeof *lst);
        for (int i = e; i < k; i++)
            indeg_inc(g, g->cand[i]);
        if (rev)
            memcpy(g->added, g->cand + e, (size_t)(k - e) * sizeof *lst);
        nadd = k - e;
    } else {
        int keep = g->M < capu ? g->M : capu;
        int fill = lk->ix->gp.fill < keep ? lk->ix->gp.fill : keep;
        ann_keys_row(lk->keys, u, g->orow);
        for (int i = 0; i < k; i++)
            ann_keys_row(lk->keys, g->cand[i], g->rows + (int64_t)i * lk->d);
        int kn = ann_prune_list(lk->ix->gp.prune, lk->ix->gp.alpha, keep, fill, lk->d, g->orow,
                                g->rows, g->cand, g->rowix, k, g->tmp, g->work, g->kept);
        kn = keep_orphans(g, lst, e, g->kept, kn, capu);
        for (int i = 0; i < kn && rev; i++)
            if (!has(lst, e, g->kept[i]))
                g->added[nadd++] = g->kept[i];
        memcpy(lst, g->kept, (size_t)kn * sizeof *lst);
        for (int i = kn; i < capu; i++)
            lst[i] = -1;
    }
    for (int i = 0; i < nadd && rev; i++)
        merge(lk, g->added[i], &u, 1, 0);
}

/* q's top-K (best first) into g->list among the keys the graph reaches and every new key. */
static int top_k(linker *lk, const float *q)
{
    ann_search_ctx *ctx = lk->ctx;
    int m = ann_graph_search_pool(lk->ix, ctx, q, &(ann_walk){.ef = lk->ef}), hn = 0;
    uint32_t ep = ctx->epoch;
    for (int i = 0; i < m; i++)
        ann_heap_push(ctx->heap, &hn, lk->K, ctx->pool[i].s, ctx->pool[i].id);
    for (int64_t v = lk->n_old; v < lk->n_new; v++)
        if (ctx->visited[v] != ep)
            ann_heap_push(ctx->heap, &hn, lk->K, ann_score(lk->keys, q, v), (int32_t)v);
    ann_heap_sort_desc(ctx->heap, hn);
    for (int i = 0; i < hn; i++)
        lk->g->list[i] = ctx->heap[i].id;
    return hn;
}

/* The query among qs (nq) scoring key u highest. */
static const float *best_query(const linker *lk, const float *qs, int64_t nq, int64_t u)
{
    int64_t best = 0;
    float bs = -INFINITY;
    for (int64_t i = 0; i < nq; i++) {
        float s = ann_score(lk->keys, qs + i * lk->d, u);
        if (s > bs) {
            bs = s;
            best = i;
        }
    }
    return qs + best * lk->d;
}

/* One query's projection: out-lists for the new keys it ranks first, then its pivot's list. */
static void link_query(linker *lk, const float *q, int pivot_cap)
{
    uint32_t *aux = lk->ctx->aux;
    int l = top_k(lk, q), ns = 0;
    const int32_t *L = lk->g->list;
    int32_t p = -1;
    for (int i = 0; i < l && p < 0; i++)
        if (pivot_cap <= 0 || (aux[L[i]] & ~ANN_LISTED) < (uint32_t)pivot_cap)
            p = L[i];
    /* A new pivot listed before owns this list too (the union of its lists, pruned); one that
     * gets its first list here is served by the loop below. */
    int p_merge = p >= lk->n_old && (aux[p] & ANN_LISTED);
    for (int i = 0; i < l; i++)
        if (L[i] >= lk->n_old && !(aux[L[i]] & ANN_LISTED)) {
            aux[L[i]] |= ANN_LISTED;
            merge(lk, L[i], L, l, 1);
        }
    if (p < 0)
        return;
    aux[p]++;
    if (p >= lk->n_old) {
        if (p_merge)
            merge(lk, p, L, l, 1);
        return;
    }
    for (int i = 0; i < l; i++)
        if (L[i] >= lk->n_old)
            lk->g->sel[ns++] = L[i];
    merge(lk, p, lk->g->sel, ns, 1);
}

/* Marks (aux = 1) every key reachable from the queued ones (nbuf, qn of them, already marked);
 * returns how many it marked, the queued included. */
static int64_t bfs(const ann_index *ix, ann_search_ctx *ctx, int64_t qn)
{
    uint32_t *seen = ctx->aux;
    int32_t *queue = ctx->nbuf;
    for (int64_t h = 0; h < qn; h++) {
        int32_t u = queue[h];
        const int32_t *l = ix->adj + ix->adj_off[u];
        int c = (int)(ix->adj_off[u + 1] - ix->adj_off[u]);
        for (int j = 0; j < c && l[j] >= 0; j++)
            if (!seen[l[j]]) {
                seen[l[j]] = 1;
                queue[qn++] = l[j];
            }
    }
    return qn;
}

static int64_t reach_from_entries(const ann_index *ix, ann_search_ctx *ctx)
{
    int64_t qn = 0;
    memset(ctx->aux, 0, (size_t)ix->n * sizeof *ctx->aux);
    for (int i = 0; i < ix->n_entry; i++)
        if (!ctx->aux[ix->entry[i]]) {
            ctx->aux[ix->entry[i]] = 1;
            ctx->nbuf[qn++] = ix->entry[i];
        }
    return bfs(ix, ctx, qn);
}

static int has_room(const ann_index *ix, int64_t u)
{
    return ann_graph_degree(ix, u) < (int)(ix->adj_off[u + 1] - ix->adj_off[u]);
}

/* Links every key the entry points do not reach (the build's repair); returns the edges added. */
static int64_t repair(linker *lk, const float *qs, int64_t nq)
{
    ann_index *ix = lk->ix;
    ann_grow *g = lk->g;
    ann_search_ctx *ctx = lk->ctx;
    int ef = ctx->max_beam < ANN_GROW_REPAIR_EF ? ctx->max_beam : ANN_GROW_REPAIR_EF;
    int64_t added = 0;
    for (int round = 0; round < ANN_GROW_REPAIR_ROUNDS; round++) {
        if (reach_from_entries(ix, ctx) == ix->n)
            break;
        int64_t cursor = 0;
        for (int64_t u = 0; u < ix->n; u++) {
            if (ctx->aux[u])
                continue;
            const float *q = g->qrow;
            if (nq > 0)
                q = best_query(lk, qs, nq, u);
            else
                ann_keys_row(lk->keys, u, g->qrow);
            int m = ann_graph_search_pool(ix, ctx, q, &(ann_walk){.ef = ef});
            int32_t r = -1;
            for (int i = 0; i < m && r < 0; i++)
                if (ctx->aux[ctx->pool[i].id] && has_room(ix, ctx->pool[i].id))
                    r = ctx->pool[i].id;
            while (r < 0 && cursor < ix->n) { /* every good candidate is full: any with room */
                if (ctx->aux[cursor] && has_room(ix, cursor))
                    r = (int32_t)cursor;
                else
                    cursor++;
            }
            if (r < 0) /* no room anywhere: the weakest edge of the best reached key goes */
                r = m > 0 ? ctx->pool[0].id : ix->entry[0];
            int32_t *lst = g->adj + g->adj_off[r];
            int capr = (int)(g->adj_off[r + 1] - g->adj_off[r]), e = ann_graph_degree(ix, r);
            if (capr == 0)
                continue; /* never: every region has the slack */
            if (e == capr)
                indeg_dec(g, lst[capr - 1]);
            lst[e < capr ? e : capr - 1] = (int32_t)u;
            indeg_inc(g, (int32_t)u);
            added++;
            ctx->aux[u] = 1;
            ctx->nbuf[0] = (int32_t)u;
            bfs(ix, ctx, 1);
        }
    }
    return added;
}

static void graph_add(ann_index *ix, const float *qs, int64_t nq, ann_search_ctx *ctx,
                      int64_t n_old, int64_t n_new)
{
    ann_grow *g = ix->grow;
    int K = g->K < ctx->max_beam ? g->K : ctx->max_beam;
    if (K > n_new)
        K = (int)n_new;
    int ef = K; /* a wider beam (2K) costs a third more for ~0.005 of recall */
    int self = nq == 0 || ix->type == ANN_KEYGRAPH;
    linker lk = {ix, g, ctx, ix->keys, ix->dim, K, ef, n_old, n_new};
    int64_t scanned = ctx->scanned, unlinked = 0;
    ix->n = n_new;
    memset(ctx->aux, 0, (size_t)n_new * sizeof *ctx->aux);
    if (self) {
        for (int64_t w = n_old; w < n_new; w++) {
            ann_keys_row(lk.keys, w, g->qrow);
            int l = top_k(&lk, g->qrow);
            merge(&lk, (int32_t)w, g->list, l, 1);
        }
    } else {
        for (int64_t i = 0; i < nq; i++)
            link_query(&lk, qs + i * lk.d, ix->gp.pivot_cap);
        /* New keys no query ranked: their best query's list, and its pivot's edge to them. */
        for (int64_t w = n_old; w < n_new; w++) {
            if (ctx->aux[w] & ANN_LISTED)
                continue;
            unlinked++;
            ctx->aux[w] |= ANN_LISTED;
            int l = top_k(&lk, best_query(&lk, qs, nq, w));
            merge(&lk, (int32_t)w, g->list, l, 1);
            int32_t w32 = (int32_t)w;
            if (l > 0 && g->list[0] != w32)
                merge(&lk, g->list[0], &w32, 1, 1);
        }
    }
    int64_t repaired = repair(&lk, self ? NULL : qs, self ? 0 : nq);
    int64_t reached = reach_from_entries(ix, ctx), edges = 0;
    for (int64_t u = 0; u < n_new; u++)
        edges += ann_graph_degree(ix, u);
    ix->stats.n_untouched += unlinked;
    ix->stats.n_repaired += repaired;
    ix->stats.n_unreachable = n_new - reached;
    ix->stats.n_edges = edges;
    ctx->scanned = scanned; /* the caller's count of keys scanned is for its searches */
}

loupe_status ann_index_add(ann_index *ix, const float *queries, int64_t nq, ann_search_ctx *ctx,
                           loupe_err *err)
{
    int64_t n_old = ix->n, n_new = ix->keys->n, cap = ix->cap > ix->n ? ix->cap : ix->n;
    if (n_new < n_old)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "index add: the keys shrank to %lld rows below the %lld indexed",
                          (long long)n_new, (long long)n_old);
    if (n_new > cap)
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "index add: %lld keys exceed the capacity of %lld (ann_index_reserve)",
                          (long long)n_new, (long long)cap);
    if (nq < 0 || (nq > 0 && !queries))
        return loupe_fail(err, LOUPE_ERR_INVALID, "index add: %lld queries without rows",
                          (long long)nq);
    if (ix->type != ANN_FLAT && (!ctx || ctx->max_keys < cap))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "index add: needs a search context over at least the %lld keys "
                          "reserved (has %lld)",
                          (long long)cap, ctx ? (long long)ctx->max_keys : 0LL);
    if (ix->skeys && ix->skeys->n < n_new) /* a graph's walk scores its search copy */
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "index add: the search copy holds %lld of the %lld keys "
                          "(ann_keys_search_copy_sync first)",
                          (long long)ix->skeys->n, (long long)n_new);
    if (n_new == n_old)
        return LOUPE_OK;
    switch (ix->type) {
    case ANN_FLAT: ix->n = n_new; break;
    case ANN_IVF:
        ann_ivf_add(ix, ix->grow, n_old, n_new, ctx->nbuf);
        ix->n = n_new;
        break;
    default: graph_add(ix, queries, nq, ctx, n_old, n_new); break;
    }
    return LOUPE_OK;
}
