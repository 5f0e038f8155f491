/*
 * Building the key→key graph: the attention-aware one (RetrievalAttention's use of RoarGraph) and
 * the key-only baseline, which is the same pipeline with the keys themselves as queries.
 *
 * Steps (timed separately, see ann_build_stats):
 *   1. kNN      exact top-K keys of each sampled build query, and for every key the build query
 *               that scores it highest (its "best query"), by the pluggable ann_knn_fn.
 *   2. project  candidate lists: each query's top-K list goes to its OWNER (the attention graph:
 *               the pivot, the query's best key; the key graph: the key that is the query);
 *               every key that owns no list takes its best query's list instead, so keys that no
 *               query ranked in its top-K still get out-edges into the region that query scores
 *               highly. Each list is sorted by distance to its owner p and pruned: candidate c is
 *               dropped when an already kept r is closer to c than p is (L2 between keys, or the
 *               inner-product form r·c > p·c), at most M kept, then topped up to `fill` with the
 *               dropped ones in order (more edges per expansion; fewer dead ends).
 *               Reverse edges: v gets u for every kept u→v; a list over M is re-pruned.
 *               The pruning itself (prune.c) goes in three batches — the pivots' lists, the
 *               lists shared by keys with one best query (their pair distances computed once
 *               per list), the re-pruned merges — through the pluggable ann_prune_fn (a GPU in
 *               the runtime), else the CPU reference. No owner distance is computed twice: each
 *               kept edge keeps its distance, which the reverse-edge merge reuses.
 *   3. repair   entry points (the best key for the mean build query, plus pivots of random build
 *               queries); a BFS from them; each unreached key is linked from the first reached
 *               member with a free slot of its best query's exact top-K (no search), else from
 *               the first reached out-neighbour with a free slot of those members, and the BFS
 *               resumes from it; only keys for which neither has room are searched for (in
 *               parallel, read-only) and linked from the best reached key with room found.
 *   Finally the fixed-stride lists are compacted into CSR (adj_off, adj).
 *
 * Lists with many candidates (hubs: a key that is the pivot of most queries, such as an attention
 * sink) are capped at ANN_CAND_CAP candidates taken in a seeded random query order.
 * During the build, lists are fixed-stride (n, M + ANN_REPAIR_SLOTS) padded with -1 (the slots let
 * the repair add edges without cutting kept ones); the beam search stops a list at
 * the first -1, which never occurs in the final CSR.
 */
#include "anns/ann_impl.h"

#include <omp.h>
#include <stdlib.h>

enum { ANN_CAND_CAP = 4096, ANN_REPAIR_SLOTS = 4 };

typedef struct {
    int64_t n;
    int d, M, S, fill; /* S: list stride, M + repair slots */
    int nearest;       /* ann_build_opts.prune_nearest */
    ann_prune_rule rule;
    float alpha;
    const float *F;  /* (n, d) keys widened to f32 */
    const ann_keys *keys;
    int nth;
    ann_prune_fn prune; /* the build's plug, or NULL */
    void *prune_user;
} build_cfg;

/* ---- Step 2: projection and reverse edges ------------------------------------------------- */

/* A reverse edge: its source u in the high half (so integer order is source order) and the
 * edge's distance in the low half. */
static inline uint64_t rev_pack(int32_t u, float dist)
{
    uint32_t bits;
    memcpy(&bits, &dist, sizeof bits);
    return (uint64_t)(uint32_t)u << 32 | bits;
}

static inline float rev_dist(uint64_t e)
{
    uint32_t bits = (uint32_t)e;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts one list of reverse edges by source: insertion for the usual short list, qsort for a
 * hub's. */
static void rev_sort(uint64_t *a, int n)
{
    if (n > 32) {
        qsort(a, (size_t)n, sizeof *a, cmp_u64);
        return;
    }
    for (int i = 1; i < n; i++) {
        uint64_t x = a[i];
        int j = i;
        for (; j > 0 && a[j - 1] > x; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

/* The pruning of a batch of lists: the build's plug (a GPU), else the CPU reference, which also
 * takes a batch the plug declines. */
static loupe_status prune_batch(const build_cfg *b, ann_prune_job *j, loupe_err *err)
{
    if (j->n_lists == 0)
        return LOUPE_OK;
    j->keys = b->keys;
    j->F = b->F;
    j->n = b->n;
    j->dim = b->d;
    j->rule = b->rule;
    j->alpha = b->alpha;
    j->keep = b->M;
    j->fill = b->fill;
    j->nearest = b->nearest;
    j->stride = b->S;
    j->threads = b->nth;
    if (b->prune) {
        loupe_status st = b->prune(b->prune_user, j, err);
        if (st != LOUPE_ERR_UNSUPPORTED)
            return st;
    }
    return ann_prune_cpu(NULL, j, err);
}

/* Every owner's list: the union of its queries' top-K lists, the queries taken in the seeded
 * order in cand (off[u] .. off[u+1]), repeats once, the owner itself left out, at most
 * ANN_CAND_CAP entries counted with repeats (as a hub's appended lists would be). */
static loupe_status owner_lists(const build_cfg *b, const int32_t *L, int K, const uint32_t *off,
                                const int32_t *cand, const uint8_t *is_owner, int32_t *out,
                                int *outn, float *outd, loupe_err *err)
{
    const int64_t n = b->n;
    int64_t n_own = 0;
    for (int64_t u = 0; u < n; u++)
        n_own += is_owner[u];
    int32_t *own = malloc((size_t)(n_own ? n_own : 1) * sizeof *own);
    int32_t *len = malloc((size_t)(n_own ? n_own : 1) * sizeof *len);
    int64_t *start = malloc((size_t)(n_own + 1) * sizeof *start);
    int32_t *cid = NULL;
    loupe_status rc = LOUPE_OK;
    int failed = 0;
    if (!own || !len || !start)
        goto nomem;
    start[0] = 0;
    for (int64_t u = 0, i = 0; u < n; u++)
        if (is_owner[u]) {
            int64_t raw = (int64_t)(off[u + 1] - off[u]) * K;
            own[i] = (int32_t)u;
            start[i + 1] = start[i] + (raw < ANN_CAND_CAP ? raw : ANN_CAND_CAP);
            i++;
        }
    cid = malloc((size_t)(start[n_own] ? start[n_own] : 1) * sizeof *cid);
    if (!cid)
        goto nomem;
#pragma omp parallel num_threads(b->nth)
    {
        uint32_t *mark = calloc((size_t)n, sizeof *mark);
        if (!mark)
#pragma omp atomic write
            failed = 1;
#pragma omp for schedule(dynamic, 64)
        for (int64_t i = 0; i < n_own; i++) {
            if (!mark)
                continue;
            const int32_t u = own[i];
            int32_t *ids = cid + start[i];
            int m = 0, raw = 0;
            for (uint32_t t = off[u]; t < off[u + 1]; t++) {
                const int32_t *l = L + (int64_t)cand[t] * K;
                for (int x = 0; x < K && raw < ANN_CAND_CAP; x++) {
                    int32_t v = l[x];
                    if (v < 0 || v == u)
                        continue;
                    raw++;
                    if (mark[v] != (uint32_t)i + 1) {
                        mark[v] = (uint32_t)i + 1;
                        ids[m++] = v;
                    }
                }
            }
            len[i] = m;
        }
        free(mark);
    }
    if (failed)
        goto nomem;
    ann_prune_job j = {0};
    j.n_lists = n_own;
    j.own = own;
    j.start = start;
    j.len = len;
    j.cid = cid;
    j.out = out;
    j.outd = outd;
    j.outn = outn;
    rc = prune_batch(b, &j, err);
    goto done;
nomem:
    rc = loupe_fail(err, LOUPE_ERR_NOMEM, "graph build: no memory for the lists of %lld pivots",
                    (long long)n_own);
done:
    free(own);
    free(len);
    free(start);
    free(cid);
    return rc;
}

/* Every other key's list: its best query's top-K, over which the keys sharing that best query
 * are pruned together. */
static loupe_status shared_lists(const build_cfg *b, const int32_t *L, int64_t nq, int K,
                                 const uint8_t *is_owner, const int32_t *best_q, int32_t *out,
                                 int *outn, float *outd, loupe_err *err)
{
    const int64_t n = b->n;
    int64_t *at = calloc((size_t)nq + 1, sizeof *at);
    int32_t *own = malloc((size_t)(n ? n : 1) * sizeof *own);
    int32_t *lst = malloc((size_t)(n ? n : 1) * sizeof *lst);
    if (!at || !own || !lst) {
        free(at);
        free(own);
        free(lst);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "graph build: no memory for %lld shared lists",
                          (long long)n);
    }
    for (int64_t u = 0; u < n; u++) /* bucketed by best query, in key order within one */
        if (!is_owner[u] && best_q[u] >= 0)
            at[best_q[u] + 1]++;
    for (int64_t q = 0; q < nq; q++)
        at[q + 1] += at[q];
    const int64_t n_lists = at[nq];
    for (int64_t u = 0; u < n; u++)
        if (!is_owner[u] && best_q[u] >= 0) {
            own[at[best_q[u]]] = (int32_t)u;
            lst[at[best_q[u]]++] = best_q[u];
        }
    ann_prune_job j = {0};
    j.n_lists = n_lists;
    j.own = own;
    j.shared = L;
    j.K = K;
    j.lst = lst;
    j.out = out;
    j.outd = outd;
    j.outn = outn;
    loupe_status rc = prune_batch(b, &j, err);
    free(at);
    free(own);
    free(lst);
    return rc;
}

/* Merges each key's forward list with its reverse edges (rev, roff: sources and distances,
 * sorted by source), repeats once, at most ANN_CAND_CAP + M candidates; a merged list of at most
 * M stays as it is, a longer one is re-pruned with the distances it carries. Then every list is
 * padded with -1 to the stride. */
static loupe_status merge_reverse(const build_cfg *b, const uint64_t *rev, const uint32_t *roff,
                                  int32_t *out, int *outn, const float *outd, loupe_err *err)
{
    const int64_t n = b->n;
    const int M = b->M, S = b->S, cap = ANN_CAND_CAP + M;
    int64_t *start = malloc(((size_t)n + 1) * sizeof *start);
    int32_t *len = malloc((size_t)(n ? n : 1) * sizeof *len), *cid = NULL, *own = NULL;
    int64_t *lstart = NULL;
    float *cdist = NULL;
    loupe_status rc = LOUPE_OK;
    int failed = 0;
    if (!start || !len)
        goto nomem;
    /* Room only for lists that may exceed M. */
    start[0] = 0;
    for (int64_t v = 0; v < n; v++) {
        int64_t ub = (int64_t)outn[v] + (roff[v + 1] - roff[v]);
        ub = ub < cap ? ub : cap;
        start[v + 1] = start[v] + (ub > M ? ub : 0);
    }
    cid = malloc((size_t)(start[n] ? start[n] : 1) * sizeof *cid);
    cdist = malloc((size_t)(start[n] ? start[n] : 1) * sizeof *cdist);
    if (!cid || !cdist)
        goto nomem;
#pragma omp parallel num_threads(b->nth)
    {
        uint32_t *mark = calloc((size_t)n, sizeof *mark);
        int32_t *small = malloc((size_t)M * sizeof *small);
        if (!mark || !small)
#pragma omp atomic write
            failed = 1;
#pragma omp for schedule(dynamic, 64)
        for (int64_t v = 0; v < n; v++) {
            len[v] = 0;
            if (!mark || !small)
                continue;
            const uint32_t ep = (uint32_t)v + 1;
            const int roomy = start[v + 1] > start[v];
            int32_t *ids = roomy ? cid + start[v] : small;
            float *dist = roomy ? cdist + start[v] : NULL;
            int32_t *ol = out + v * S;
            int m = 0;
            for (int x = 0; x < outn[v]; x++) {
                mark[ol[x]] = ep;
                if (dist)
                    dist[m] = outd[v * S + x];
                ids[m++] = ol[x];
            }
            for (uint32_t x = roff[v]; x < roff[v + 1] && m < cap; x++) {
                int32_t u = (int32_t)(rev[x] >> 32);
                if (mark[u] != ep && u != v) {
                    mark[u] = ep;
                    if (dist)
                        dist[m] = rev_dist(rev[x]);
                    ids[m++] = u;
                }
            }
            if (m <= M) {
                memcpy(ol, ids, (size_t)m * sizeof *ol);
                outn[v] = m;
            } else {
                len[v] = m; /* re-pruned below */
            }
        }
        free(mark);
        free(small);
    }
    if (failed)
        goto nomem;
    int64_t n_lists = 0;
    for (int64_t v = 0; v < n; v++)
        n_lists += len[v] > 0;
    own = malloc((size_t)(n_lists ? n_lists : 1) * sizeof *own);
    lstart = malloc((size_t)(n_lists ? n_lists : 1) * sizeof *lstart);
    if (!own || !lstart)
        goto nomem;
    for (int64_t v = 0, i = 0; v < n; v++)
        if (len[v] > 0) {
            own[i] = (int32_t)v;
            lstart[i] = start[v];
            len[i++] = len[v]; /* i <= v: compacted in place */
        }
    ann_prune_job j = {0};
    j.n_lists = n_lists;
    j.own = own;
    j.start = lstart;
    j.len = len;
    j.cid = cid;
    j.cdist = cdist;
    j.out = out;
    j.outn = outn;
    if ((rc = prune_batch(b, &j, err)) != LOUPE_OK)
        goto done;
#pragma omp parallel for num_threads(b->nth) schedule(static)
    for (int64_t v = 0; v < n; v++)
        for (int x = outn[v]; x < S; x++)
            out[v * S + x] = -1;
    goto done;
nomem:
    rc = loupe_fail(err, LOUPE_ERR_NOMEM, "graph build: no memory for the reverse edges of %lld "
                    "keys", (long long)n);
done:
    free(start);
    free(len);
    free(cid);
    free(cdist);
    free(own);
    free(lstart);
    return rc;
}

static loupe_status project(const build_cfg *b, const int32_t *L, int64_t nq, int K,
                            const int32_t *owner, const int32_t *best_q, int32_t *out,
                            int *outn, uint64_t seed, int64_t *n_untouched, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    const int64_t n = b->n;
    const int nth = b->nth;
    uint32_t *cnt = calloc((size_t)n + 1, sizeof *cnt);
    uint32_t *off = calloc((size_t)n + 1, sizeof *off);
    uint8_t *is_owner = calloc((size_t)n, 1), *touched = calloc((size_t)n, 1);
    int64_t *order = malloc((size_t)(nq > 0 ? nq : 1) * sizeof *order);
    int32_t *cand = NULL;
    uint64_t *rev = NULL;  /* (roff[n]) reverse edges: source and distance (rev_pack) */
    float *outd = NULL;    /* (n, S) the distance of each of out's edges */
    uint32_t *roff = NULL;
    if (!cnt || !off || !is_owner || !touched || !order)
        goto nomem;
    /* Seeded random query order, so a capped hub's candidates are not all from early text. */
    uint64_t rng = seed ^ 0xabcdefull;
    for (int64_t i = 0; i < nq; i++)
        order[i] = i;
    for (int64_t i = nq - 1; i > 0; i--) {
        int64_t j = (int64_t)(ann_rng_next(&rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t q = 0; q < nq; q++)
        for (int j = 0; j < K; j++)
            if (L[q * K + j] >= 0)
#pragma omp atomic write
                touched[L[q * K + j]] = 1;
    int64_t untouched = 0;
#pragma omp parallel for num_threads(nth) schedule(static) reduction(+ : untouched)
    for (int64_t u = 0; u < n; u++)
        untouched += !touched[u];
    *n_untouched = untouched;
    /* Owners: each owner's queries bucketed in the seeded order (cand: off[o] .. off[o+1]). */
    for (int64_t q = 0; q < nq; q++)
        if (owner[q] >= 0) {
            is_owner[owner[q]] = 1;
            cnt[owner[q]]++;
        }
    for (int64_t u = 0; u < n; u++)
        off[u + 1] = off[u] + cnt[u];
    cand = malloc((size_t)(nq > 0 ? nq : 1) * sizeof *cand);
    if (!cand)
        goto nomem;
    memset(cnt, 0, (size_t)n * sizeof *cnt);
    for (int64_t i = 0; i < nq; i++) {
        int32_t o = owner[order[i]];
        if (o >= 0)
            cand[off[o] + cnt[o]++] = (int32_t)order[i];
    }
    /* Every kept edge's distance is kept with it: the reverse-edge merge re-prunes over the same
     * pairs (d(u,v) is bit-identical to d(v,u)) and need not compute them again. */
    outd = malloc((size_t)n * (size_t)b->S * sizeof *outd);
    if (!outd)
        goto nomem;
    if ((rc = owner_lists(b, L, K, off, cand, is_owner, out, outn, outd, err)) != LOUPE_OK ||
        (rc = shared_lists(b, L, nq, K, is_owner, best_q, out, outn, outd, err)) != LOUPE_OK)
        goto done;
    /* Reverse edges from a snapshot of the forward lists. */
    free(cand);
    cand = NULL;
    roff = calloc((size_t)n + 1, sizeof *roff);
    if (!roff)
        goto nomem;
    /* Each list in source order, which the merge keeps (short lists are copied as they are,
     * long ones capped): a serial fill in key order gives it; a parallel one is sorted after.
     * One thread is the runtime's case (a layer's indexes build side by side, a thread each). */
    if (nth == 1) {
        for (int64_t u = 0; u < n; u++)
            for (int j = 0; j < outn[u]; j++)
                roff[out[u * b->S + j] + 1]++;
    } else {
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t u = 0; u < n; u++)
            for (int j = 0; j < outn[u]; j++)
#pragma omp atomic update
                roff[out[u * b->S + j] + 1]++;
    }
    for (int64_t u = 0; u < n; u++)
        roff[u + 1] += roff[u];
    rev = malloc((size_t)(roff[n] ? roff[n] : 1) * sizeof *rev);
    if (!rev)
        goto nomem;
    memcpy(cnt, roff, (size_t)n * sizeof *cnt);
    if (nth == 1) {
        for (int64_t u = 0; u < n; u++)
            for (int j = 0; j < outn[u]; j++)
                rev[cnt[out[u * b->S + j]]++] = rev_pack((int32_t)u, outd[u * b->S + j]);
    } else {
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t u = 0; u < n; u++)
            for (int j = 0; j < outn[u]; j++) {
                uint32_t at, *c = &cnt[out[u * b->S + j]];
#pragma omp atomic capture
                at = (*c)++;
                rev[at] = rev_pack((int32_t)u, outd[u * b->S + j]);
            }
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1024)
        for (int64_t v = 0; v < n; v++)
            rev_sort(rev + roff[v], (int)(roff[v + 1] - roff[v]));
    }
    rc = merge_reverse(b, rev, roff, out, outn, outd, err);
    goto done;
nomem:
    rc = loupe_fail(err, LOUPE_ERR_NOMEM, "graph build: no memory for the projection of %lld keys",
                    (long long)n);
done:
    free(cnt);
    free(off);
    free(is_owner);
    free(touched);
    free(order);
    free(cand);
    free(rev);
    free(outd);
    free(roff);
    return rc;
}

/* ---- Step 3: entry points and reachability repair ------------------------------------------ */

/* Marks everything reachable from the queued nodes; queue holds *qn entries. */
static void bfs(const int32_t *out, const int *outn, int M, uint8_t *seen, int32_t *queue,
                int64_t qn)
{
    for (int64_t h = 0; h < qn; h++) {
        int32_t u = queue[h];
        for (int j = 0; j < outn[u]; j++) {
            int32_t v = out[(int64_t)u * M + j];
            if (!seen[v]) {
                seen[v] = 1;
                queue[qn++] = v;
            }
        }
    }
}

enum { ANN_BFS_PAR_MIN = 8192 }; /* frontiers smaller than this are expanded serially */

/* seen[u] = 1 iff u is reachable from an entry point. Level by level, a large frontier expanded
 * in parallel (a key is claimed by whichever thread flips its byte first): the reached set does
 * not depend on the order, and this BFS is the repair's largest serial step at 128K keys. */
static void reach_from_entries(const ann_index *ix, const int32_t *out, const int *outn, int M,
                               uint8_t *seen, int32_t *queue, int nth)
{
    int64_t head = 0, tail = 0;
    memset(seen, 0, (size_t)ix->n);
    for (int i = 0; i < ix->n_entry; i++)
        if (!seen[ix->entry[i]]) {
            seen[ix->entry[i]] = 1;
            queue[tail++] = ix->entry[i];
        }
    while (head < tail) {
        int64_t lo = head, hi = tail;
        if (hi - lo < ANN_BFS_PAR_MIN || nth <= 1) { /* one level, serially */
            for (int64_t h = lo; h < hi; h++)
                for (int j = 0; j < outn[queue[h]]; j++) {
                    int32_t v = out[(int64_t)queue[h] * M + j];
                    if (!seen[v]) {
                        seen[v] = 1;
                        queue[tail++] = v;
                    }
                }
        } else {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 256)
            for (int64_t h = lo; h < hi; h++)
                for (int j = 0; j < outn[queue[h]]; j++) {
                    int32_t v = out[(int64_t)queue[h] * M + j];
                    if (!__atomic_load_n(&seen[v], __ATOMIC_RELAXED) &&
                        !__atomic_exchange_n(&seen[v], 1, __ATOMIC_RELAXED))
                        queue[__atomic_fetch_add(&tail, 1, __ATOMIC_RELAXED)] = v;
                }
        }
        head = hi;
    }
}

/* Adds the edge r→u, into a free slot of r's list, else over r's last (weakest) edge; returns 1
 * when an edge was overwritten (which may cut keys off). */
static int link_edge(int32_t *out, int *outn, int S, int32_t r, int32_t u)
{
    if (outn[r] < S) {
        out[(int64_t)r * S + outn[r]++] = u;
        return 0;
    }
    out[(int64_t)r * S + S - 1] = u;
    return 1;
}

/* The source of a repair edge to unreached key u without a search: the first member of the exact
 * top-K list l of u's best query (best first, so the query's pivot first) that is reached and
 * has a free slot; -1 if there is none. A search for that query from the entry points would end
 * among the same keys, so the new edge lies where queries that score u highly pass. */
static int32_t list_source(const int32_t *l, int K, const uint8_t *seen, const int *outn, int S)
{
    for (int j = 0; j < K; j++)
        if (l[j] >= 0 && seen[l[j]] && outn[l[j]] < S)
            return l[j];
    return -1;
}

/* Failing that, an out-neighbour of those members (in list order, then edge order) that is
 * reached and has a free slot: a search for that query scores the neighbours of its top keys as
 * it expands them, so the edge is met about where a repair search would have put it, without
 * the search (most of the repair's time when many keys share a full list). */
static int32_t hop_source(const int32_t *l, int K, const uint8_t *seen, const int32_t *out,
                          const int *outn, int S)
{
    for (int j = 0; j < K; j++) {
        int32_t r = l[j];
        if (r < 0 || !seen[r])
            continue;
        for (int e = 0; e < outn[r]; e++) {
            int32_t w = out[(int64_t)r * S + e];
            if (seen[w] && outn[w] < S)
                return w;
        }
    }
    return -1;
}

enum { ANN_REPAIR_EF = 64, ANN_REPAIR_CAND = 8 };

/* Makes every key reachable from the entry points. Most unreached keys are linked without any
 * search (list_source), serially, the BFS resuming from each newly linked key so the keys behind
 * it need no edge of their own. The few left (no reached member of their best query's list has
 * room) are searched for in parallel on the graph as it stands — read-only, so the result does
 * not depend on the thread count — each keeping its best ANN_REPAIR_CAND pool entries with room;
 * then linked serially in key order from the first that still has room, else from any reached
 * key with room. Reached keys never become unreached, except when no slot is free anywhere and
 * an edge is overwritten; hence a few rounds and a final count. */
static loupe_status repair(ann_index *ix, const build_cfg *b, const float *Q, const int32_t *L,
                           int K, const int32_t *best_q, int32_t *out, int *outn,
                           uint32_t *tmp_off, int nth, int64_t *n_repaired,
                           int64_t *n_unreachable, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    int64_t n = b->n;
    int S = b->S, d = b->d; /* repair may use the slack slots */
    uint8_t *seen = calloc((size_t)n, 1);
    int32_t *queue = malloc((size_t)n * sizeof *queue);
    int32_t *left = malloc((size_t)n * sizeof *left);
    int32_t *cand = NULL;
    *n_repaired = 0;
    if (!seen || !queue || !left)
        goto nomem;
    /* The search walks the fixed-stride lists: offsets u·S, -1 ends a list. */
    for (int64_t u = 0; u <= n; u++)
        tmp_off[u] = (uint32_t)(u * S);
    ix->adj_off = tmp_off;
    ix->adj = out;
    /* `seen` stays exact while edges are only added (each link is followed by a BFS from the
     * linked key), so a fresh BFS is needed only after an overwrite. */
    int cut = 1;
    for (int round = 0; round < 3 && cut; round++) {
        cut = 0;
        reach_from_entries(ix, out, outn, S, seen, queue, nth);
        /* 1. Links from the best query's list, repeated while it makes progress (a key whose
         *    list was unreached may be reached through keys linked after it). */
        int64_t nleft = 0;
        for (int64_t u = 0; u < n; u++)
            if (!seen[u])
                left[nleft++] = (int32_t)u;
        if (nleft == 0)
            break;
        for (int64_t progress = 1; progress && nleft;) {
            int64_t keep = 0;
            progress = 0;
            for (int64_t i = 0; i < nleft; i++) {
                int32_t u = left[i];
                if (seen[u])
                    continue;
                const int32_t *l = best_q[u] >= 0 ? L + (int64_t)best_q[u] * K : NULL;
                int32_t r = l ? list_source(l, K, seen, outn, S) : -1;
                if (r < 0 && l)
                    r = hop_source(l, K, seen, out, outn, S);
                if (r < 0) {
                    left[keep++] = u;
                    continue;
                }
                cut |= link_edge(out, outn, S, r, u);
                (*n_repaired)++;
                progress++;
                seen[u] = 1;
                queue[0] = u;
                bfs(out, outn, S, seen, queue, 1);
            }
            nleft = keep;
        }
        if (nleft == 0)
            continue;
        /* 2. Searches for the rest, in parallel. */
        free(cand);
        cand = malloc((size_t)nleft * ANN_REPAIR_CAND * sizeof *cand);
        if (!cand)
            goto nomem;
#pragma omp parallel num_threads(nth)
        {
            ann_search_ctx *ctx = NULL;
            loupe_err terr;
            loupe_err_clear(&terr);
            int ok = ann_search_ctx_create(n, ANN_REPAIR_EF, &ctx, &terr) == LOUPE_OK;
#pragma omp for schedule(dynamic, 16)
            for (int64_t i = 0; i < nleft; i++) {
                int32_t u = left[i], *c = cand + i * ANN_REPAIR_CAND;
                int nc = 0;
                if (ok) {
                    const float *q = best_q[u] >= 0 ? Q + (int64_t)best_q[u] * d : b->F + u * d;
                    int m = ann_graph_search_pool(ix, ctx, q,
                                                  &(ann_walk){.ef = ANN_REPAIR_EF});
                    for (int j = 0; j < m && nc < ANN_REPAIR_CAND; j++)
                        if (outn[ctx->pool[j].id] < S)
                            c[nc++] = ctx->pool[j].id;
                    if (nc < ANN_REPAIR_CAND && m > 0) /* all full: the best one, overwritten */
                        c[nc++] = ctx->pool[0].id;
                }
                for (; nc < ANN_REPAIR_CAND; nc++)
                    c[nc] = -1;
            }
            if (!ok)
#pragma omp atomic write
                rc = LOUPE_ERR_NOMEM;
            ann_search_ctx_destroy(ctx);
        }
        if (rc != LOUPE_OK)
            goto nomem;
        /* 3. Their links, serially in key order. */
        int64_t cursor = 0;
        for (int64_t i = 0; i < nleft; i++) {
            int32_t u = left[i], r = -1;
            const int32_t *c = cand + i * ANN_REPAIR_CAND;
            if (seen[u])
                continue;
            for (int j = 0; j < ANN_REPAIR_CAND && r < 0; j++)
                if (c[j] >= 0 && outn[c[j]] < S)
                    r = c[j];
            if (r < 0) { /* every candidate is full: any reached key with a free slot */
                while (cursor < n && (!seen[cursor] || outn[cursor] >= S))
                    cursor++;
                if (cursor < n)
                    r = (int32_t)cursor;
                else /* no free slot anywhere: overwrite the weakest edge of the best */
                    r = c[0] >= 0 ? c[0] : ix->entry[0];
            }
            cut |= link_edge(out, outn, S, r, u);
            (*n_repaired)++;
            seen[u] = 1;
            queue[0] = u;
            bfs(out, outn, S, seen, queue, 1);
        }
    }
    /* Final count (an overwritten edge may have cut something off again). */
    if (cut)
        reach_from_entries(ix, out, outn, S, seen, queue, nth);
    *n_unreachable = 0;
    for (int64_t u = 0; u < n; u++)
        *n_unreachable += !seen[u];
    goto done;
nomem:
    rc = loupe_fail(err, LOUPE_ERR_NOMEM, "graph repair: no memory for %lld keys", (long long)n);
done:
    ix->adj_off = NULL;
    ix->adj = NULL;
    free(seen);
    free(queue);
    free(left);
    free(cand);
    return rc;
}

/* Entry points: the key with the highest score for the mean build query, then the pivots of
 * random build queries (distinct). */
static int choose_entries(const ann_index *ix, const float *Q, int64_t nq, const int32_t *L,
                          int K, int want, uint64_t seed, int nth, int32_t *entry)
{
    int d = ix->dim, ne = 0;
    float *mean = calloc((size_t)d, sizeof *mean);
    if (!mean)
        return 0;
    for (int64_t q = 0; q < nq; q++)
        for (int c = 0; c < d; c++)
            mean[c] += Q[q * d + c] / (float)nq;
    /* The scores in parallel; the best key is still the first one with the top score. */
    float bs = -INFINITY;
    int32_t best = 0;
#pragma omp parallel num_threads(nth)
    {
        float tbs = -INFINITY;
        int32_t tbest = -1;
#pragma omp for schedule(static) nowait
        for (int64_t u = 0; u < ix->n; u++) {
            float s = ann_score(ix->keys, mean, u);
            if (s > tbs) {
                tbs = s;
                tbest = (int32_t)u;
            }
        }
#pragma omp critical(ann_entry_best)
        if (tbest >= 0 && (tbs > bs || (tbs == bs && tbest < best))) {
            bs = tbs;
            best = tbest;
        }
    }
    free(mean);
    entry[ne++] = best;
    uint64_t rng = seed ^ 0xe7e7ull;
    for (int tries = 0; ne < want && tries < 16 * want; tries++) {
        int32_t p = L[(int64_t)(ann_rng_next(&rng) % (uint64_t)nq) * K];
        int dup = p < 0;
        for (int i = 0; i < ne && !dup; i++)
            dup = entry[i] == p;
        if (!dup)
            entry[ne++] = p;
    }
    return ne;
}

/* ann_build_opts' kept lists out of the kNN lists L (use, K) of the build queries; pick
 * (non-NULL when sampled) maps a used query to its row among the given ones. */
static void keep_lists(const ann_build_opts *o, const int32_t *L, int64_t use, int K,
                       const int64_t *pick)
{
    for (int r = 0; r < o->n_keep; r++) {
        int32_t *dst = o->kept + (size_t)r * (size_t)o->keep_k;
        int64_t at = pick ? -1 : o->keep_row[r] < use ? o->keep_row[r] : -1;
        for (int64_t i = 0; pick && i < use && at < 0; i++)
            if (pick[i] == o->keep_row[r])
                at = i;
        int c = 0;
        if (at >= 0)
            for (; c < o->keep_k && c < K; c++)
                dst[c] = L[at * K + c];
        for (; c < o->keep_k; c++)
            dst[c] = -1;
    }
}

/* Owner of each query's list: the key graph's own key; else the pivot, the query's best key,
 * unless that key already owns `cap` lists (a hub: every query's best key may be the same sink),
 * then the next best key that has room; queries taken in a seeded random order. */
static loupe_status choose_owners(const int32_t *L, int64_t nq, int K, const int64_t *self,
                                  int64_t n, int cap, uint64_t seed, int32_t *owner,
                                  loupe_err *err)
{
    if (self) {
        for (int64_t q = 0; q < nq; q++)
            owner[q] = (int32_t)self[q];
        return LOUPE_OK;
    }
    if (cap <= 0) {
        for (int64_t q = 0; q < nq; q++)
            owner[q] = L[q * K];
        return LOUPE_OK;
    }
    uint32_t *owned = calloc((size_t)n, sizeof *owned);
    int64_t *order = malloc((size_t)nq * sizeof *order);
    if (!owned || !order) {
        free(owned);
        free(order);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "graph build: no memory for pivots");
    }
    uint64_t rng = seed ^ 0x51ed5eedull;
    for (int64_t i = 0; i < nq; i++)
        order[i] = i;
    for (int64_t i = nq - 1; i > 0; i--) {
        int64_t j = (int64_t)(ann_rng_next(&rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int64_t i = 0; i < nq; i++) {
        int64_t q = order[i];
        int32_t o = -1;
        for (int j = 0; j < K && o < 0; j++) {
            int32_t v = L[q * K + j];
            if (v >= 0 && owned[v] < (uint32_t)cap)
                o = v;
        }
        owner[q] = o; /* -1: every key of the list is saturated; the list is not projected */
        if (o >= 0)
            owned[o]++;
    }
    free(owned);
    free(order);
    return LOUPE_OK;
}

/* ---- The build ------------------------------------------------------------------------------ */

loupe_status ann_graph_build(ann_index *ix, const float *queries, int64_t nq,
                             const ann_build_opts *opts, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    int64_t n = ix->n;
    int d = ix->dim;
    int nth = opts->threads > 0 ? opts->threads : omp_get_max_threads();
    int M = opts->degree > 0 ? opts->degree : 32;
    if (M > n - 1)
        M = (int)(n > 1 ? n - 1 : 1);
    int K = opts->build_k > 0 ? opts->build_k : 64;
    if (K > n)
        K = (int)n;
    int fill = opts->fill < 0 ? 0 : opts->fill > M ? M : opts->fill;
    int keygraph = queries == NULL;
    uint64_t rng = opts->seed ^ 0x9a9a9aull;
    const float *F = NULL, *Q = NULL;
    float *Fown = NULL, *Qown = NULL;
    int32_t *L = NULL, *best_q = NULL, *owner = NULL, *out = NULL, *entry = NULL, *adj = NULL;
    int *outn = NULL;
    uint32_t *off = NULL;
    int64_t *pick = NULL;
    double t0 = ann_now();
    if ((uint64_t)n * (uint64_t)(M + ANN_REPAIR_SLOTS) >= UINT32_MAX) {
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "graph build: %lld keys × degree %d exceed 32-bit edge offsets",
                          (long long)n, M);
    }
    /* Rows in f32: f32 keys stored densely are used in place (the runtime's case: no 64 MB copy
     * and its page faults per 128K-key build); others are widened once. */
    if (ix->keys->type == ANN_KEYS_F32 && ix->keys->stride == d) {
        F = ix->keys->data;
    } else {
        Fown = malloc((size_t)n * (size_t)d * sizeof *Fown);
        if (!Fown)
            goto nomem;
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t u = 0; u < n; u++)
            ann_keys_row(ix->keys, u, Fown + u * d);
        F = Fown;
    }

    /* Build queries: the given ones (graph) or the keys (keygraph), sampled without
     * replacement down to max_build_queries. */
    int64_t total = keygraph ? n : nq;
    int64_t use = opts->max_build_queries > 0 && opts->max_build_queries < total
                      ? opts->max_build_queries
                      : total;
    pick = malloc((size_t)total * sizeof *pick);
    if (!pick)
        goto nomem;
    for (int64_t i = 0; i < total; i++)
        pick[i] = i;
    if (use < total)
        for (int64_t i = 0; i < use; i++) {
            int64_t j = i + (int64_t)(ann_rng_next(&rng) % (uint64_t)(total - i)), t = pick[i];
            pick[i] = pick[j];
            pick[j] = t;
        }
    if (use < total) { /* the sample, gathered; all of them are used in place */
        Qown = malloc((size_t)use * (size_t)d * sizeof *Qown);
        if (!Qown)
            goto nomem;
        for (int64_t i = 0; i < use; i++)
            memcpy(Qown + i * d, (keygraph ? F : queries) + pick[i] * d, (size_t)d * sizeof *Qown);
        Q = Qown;
    } else {
        Q = keygraph ? F : queries;
    }
    ix->stats.n_build_queries = use;

    /* 1. kNN (the key graph asks for one more: a key is often its own best match). */
    int Kq = keygraph && K < n ? K + 1 : K;
    L = malloc((size_t)use * (size_t)Kq * sizeof *L);
    best_q = malloc((size_t)n * sizeof *best_q);
    owner = malloc((size_t)use * sizeof *owner);
    if (!L || !best_q || !owner)
        goto nomem;
    ann_knn_fn knn = opts->knn ? opts->knn : ann_knn_cpu;
    /* Only the ids: no scores (a GPU kNN then downloads half as much). */
    if ((rc = knn(opts->knn_user, ix->keys, Q, use, Kq, nth, L, NULL, best_q, err)) != LOUPE_OK)
        goto done;
    if (!keygraph)
        keep_lists(opts, L, use, Kq, use < total ? pick : NULL);
    if ((rc = choose_owners(L, use, Kq, keygraph ? pick : NULL, n, opts->pivot_cap, opts->seed,
                            owner, err)) != LOUPE_OK)
        goto done;
    ix->stats.knn_s = ann_now() - t0;

    /* 2. Projection and reverse edges. */
    double t1 = ann_now();
    build_cfg b = {n,
                   d,
                   M,
                   M + ANN_REPAIR_SLOTS,
                   fill,
                   opts->prune_nearest > 0 ? opts->prune_nearest : 0,
                   opts->prune,
                   opts->prune_alpha > 0 ? opts->prune_alpha : 1.0f,
                   F,
                   ix->keys,
                   nth,
                   opts->prune_lists,
                   opts->prune_user};
    out = malloc((size_t)n * (size_t)b.S * sizeof *out);
    outn = calloc((size_t)n, sizeof *outn);
    if (!out || !outn)
        goto nomem;
    if ((rc = project(&b, L, use, Kq, owner, best_q, out, outn, opts->seed,
                      &ix->stats.n_untouched, err)) != LOUPE_OK)
        goto done;
    ix->stats.projection_s = ann_now() - t1;

    /* 3. Entry points, repair, CSR. */
    double t2 = ann_now();
    int want = opts->n_entry > 0 ? opts->n_entry : 1;
    entry = malloc((size_t)want * sizeof *entry);
    off = malloc(((size_t)n + 1) * sizeof *off);
    if (!entry || !off)
        goto nomem;
    ix->n_entry = choose_entries(ix, Q, use, L, Kq, want, opts->seed, nth, entry);
    if (ix->n_entry == 0)
        goto nomem;
    ix->entry = entry;
    ix->degree = M;
    if (opts->repair &&
        (rc = repair(ix, &b, Q, L, Kq, best_q, out, outn, off, nth, &ix->stats.n_repaired,
                     &ix->stats.n_unreachable, err)) != LOUPE_OK)
        goto done;
    off[0] = 0;
    for (int64_t u = 0; u < n; u++)
        off[u + 1] = off[u] + (uint32_t)outn[u];
    adj = malloc((size_t)(off[n] ? off[n] : 1) * sizeof *adj);
    if (!adj)
        goto nomem;
    ann_advise_huge_pages(adj, (size_t)off[n] * sizeof *adj); /* searched at random */
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t u = 0; u < n; u++)
        memcpy(adj + off[u], out + u * b.S, (size_t)outn[u] * sizeof *adj);
    ix->stats.n_edges = off[n];
    ix->stats.repair_s = ann_now() - t2;
    ix->adj_off = off;
    ix->adj = adj;
    if (ann_index_own(ix, off) == 0)
        off = NULL;
    if (ann_index_own(ix, adj) == 0)
        adj = NULL;
    if (ann_index_own(ix, entry) == 0)
        entry = NULL;
    if (off || adj || entry) {
        ix->adj_off = NULL;
        ix->adj = NULL;
        ix->entry = NULL;
        rc = loupe_fail(err, LOUPE_ERR_INTERNAL, "graph build: index ownership table full");
    }
    goto done;
nomem:
    rc = loupe_fail(err, LOUPE_ERR_NOMEM, "graph build: no memory for %lld keys of dimension %d",
                    (long long)n, d);
done:
    if (rc != LOUPE_OK) {
        ix->entry = NULL;
        ix->n_entry = 0;
    }
    free(Fown);
    free(Qown);
    free(L);
    free(best_q);
    free(owner);
    free(out);
    free(outn);
    free(entry);
    free(off);
    free(adj);
    free(pick);
    return rc;
}
