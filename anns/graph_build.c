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
 *               Keys that share a best query share its list: they are pruned together, with the
 *               distances between the list's members computed once (a pair cache), which gives
 *               bit-identical lists at a fraction of the distance computations.
 *   3. repair   entry points (the best key for the mean build query, plus pivots of random build
 *               queries); a BFS from them; each unreached key is linked from the first reached
 *               member with a free slot of its best query's exact top-K (no search), and the BFS
 *               resumes from it; only keys whose list has no room are searched for (in
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

/* ANN_GROUP_ITEM: keys per work item of the projection's shared lists; ANN_PAIR_CACHE_K: the
 * largest build k whose (k, k) pair-distance cache is kept per thread. */
enum { ANN_CAND_CAP = 4096, ANN_REPAIR_SLOTS = 4, ANN_GROUP_ITEM = 64, ANN_PAIR_CACHE_K = 512 };

typedef struct {
    int64_t n;
    int d, M, S, fill; /* S: list stride, M + repair slots */
    ann_prune_rule rule;
    float alpha;
    const float *F;  /* (n, d) keys widened to f32 */
} build_cfg;

/* Candidate order of a prune: nearer the owner first, ties by id (a strict total order over
 * distinct ids, so any correct sort gives the order qsort gave). */
static inline int cand_before(const ann_prune_cand *a, const ann_prune_cand *b)
{
    return a->s < b->s || (a->s == b->s && a->id < b->id);
}

static inline void cand_swap(ann_prune_cand *x, ann_prune_cand *y)
{
    ann_prune_cand t = *x;
    *x = *y;
    *y = t;
}

/* Sorts candidates by cand_before: quicksort (median of three, the smaller side recursed so the
 * depth stays logarithmic), insertion sort below 16. Typed, unlike qsort, so the comparison
 * inlines: this sort was a third of a prune's time through qsort. */
static void cand_sort(ann_prune_cand *a, int n)
{
    while (n > 16) {
        int mid = n / 2;
        if (cand_before(&a[mid], &a[0]))
            cand_swap(&a[mid], &a[0]);
        if (cand_before(&a[n - 1], &a[mid])) {
            cand_swap(&a[n - 1], &a[mid]);
            if (cand_before(&a[mid], &a[0]))
                cand_swap(&a[mid], &a[0]);
        }
        ann_prune_cand p = a[mid];
        int i = 0, j = n - 1;
        for (;;) { /* Hoare partition: a[0] <= p <= a[n-1], then each swap, bound the scans */
            while (cand_before(&a[i], &p))
                i++;
            while (cand_before(&p, &a[j]))
                j--;
            if (i >= j)
                break;
            cand_swap(&a[i], &a[j]);
            i++;
            j--;
        }
        /* a[0..j] <= p <= a[j+1..n-1] */
        int nl = j + 1;
        if (nl < n - nl) {
            cand_sort(a, nl);
            a += nl;
            n -= nl;
        } else {
            cand_sort(a + nl, n - nl);
            n = nl;
        }
    }
    for (int i = 1; i < n; i++) {
        ann_prune_cand c = a[i];
        int j = i;
        for (; j > 0 && cand_before(&c, &a[j - 1]); j--)
            a[j] = a[j - 1];
        a[j] = c;
    }
}

static float prune_dist(ann_prune_rule rule, const float *a, const float *b, int d)
{
    return rule == ANN_PRUNE_IP ? -ann_dot_f32(a, b, d) : ann_l2sq_f32(a, b, d);
}

/* Where a prune's candidate rows are, and an optional cache of distances between them. Keys that
 * share a best query are pruned over the same list (project()), so the distances between its
 * members are computed once per list, not once per key. Both distances are symmetric in exact
 * arithmetic as computed (a-b = -(b-a), a·b = b·a, same summation order), so a cached d(c,r)
 * is bit-identical to the d(r,c) the prune would compute. */
typedef struct {
    ann_prune_rule rule;
    int d;
    const float *F;
    const int32_t *row_of; /* NULL: a candidate's `row` is its row in F; else its position in a
                              list of K and row_of (K) maps positions to rows */
    float *pd;             /* (K, K) distances between positions, valid where pd_ep == ep */
    uint32_t *pd_ep;       /* (K, K) */
    uint32_t ep;
    int K;
} prune_src;

static inline const float *src_row(const prune_src *ps, int32_t row)
{
    return ps->F + (int64_t)(ps->row_of ? ps->row_of[row] : row) * ps->d;
}

static inline float src_pair(const prune_src *ps, int32_t r, int32_t c)
{
    if (!ps->pd)
        return prune_dist(ps->rule, src_row(ps, r), src_row(ps, c), ps->d);
    int64_t rc = (int64_t)r * ps->K + c, cr = (int64_t)c * ps->K + r;
    if (ps->pd_ep[rc] != ps->ep) {
        ps->pd[rc] = ps->pd[cr] = prune_dist(ps->rule, src_row(ps, r), src_row(ps, c), ps->d);
        ps->pd_ep[rc] = ps->pd_ep[cr] = ps->ep;
    }
    return ps->pd[rc];
}

/* ann_prune_list over the rows ps describes. */
static int prune_core(const prune_src *ps, float alpha, int keep, int fill, const float *owner,
                      const int32_t *ids, const int32_t *rows, int m, ann_prune_cand *tmp,
                      int32_t *work, int32_t *out)
{
    for (int i = 0; i < m; i++) {
        tmp[i].id = ids[i];
        tmp[i].row = rows[i];
        tmp[i].s = prune_dist(ps->rule, owner, src_row(ps, rows[i]), ps->d);
    }
    cand_sort(tmp, m);
    int32_t *kept_row = work, *dropped = work + keep;
    int kept = 0, nd = 0;
    float a = ps->rule == ANN_PRUNE_L2 ? alpha : 1.0f;
    for (int i = 0; i < m && kept < keep; i++) {
        ann_prune_cand c = tmp[i];
        int ok = 1;
        for (int j = 0; j < kept && ok; j++)
            if (a * src_pair(ps, kept_row[j], c.row) < c.s)
                ok = 0;
        if (ok) {
            kept_row[kept] = c.row;
            out[kept++] = c.id;
        } else if (nd < keep) {
            dropped[nd++] = c.id;
        }
    }
    for (int j = 0; j < nd && kept < fill; j++)
        out[kept++] = dropped[j];
    return kept;
}

int ann_prune_list(ann_prune_rule rule, float alpha, int keep, int fill, int d,
                   const float *owner, const float *F, const int32_t *ids, const int32_t *rows,
                   int m, ann_prune_cand *tmp, int32_t *work, int32_t *out)
{
    prune_src ps = {rule, d, F, NULL, NULL, NULL, 0, 0};
    return prune_core(&ps, alpha, keep, fill, owner, ids, rows, m, tmp, work, out);
}

/* Prunes candidate ids c (m) for owner u into outl (<= M), the build's rows being F by key id. */
static int prune_list(const build_cfg *b, int32_t u, const int32_t *c, int m, ann_prune_cand *tmp,
                      int32_t *work, int32_t *outl)
{
    return ann_prune_list(b->rule, b->alpha, b->M, b->fill, b->d, b->F + (int64_t)u * b->d, b->F,
                          c, c, m, tmp, work, outl);
}

/* Keys lo..hi-1 of gkeys whose best query is q: one work item of the projection. */
typedef struct {
    int64_t q, lo, hi;
} group_item;

/* Per-thread scratch of the projection. */
typedef struct {
    uint32_t *mark;       /* (n) dedupe epochs */
    int32_t *ids;         /* (cap) */
    ann_prune_cand *tmp;  /* (cap) */
    int32_t *work;        /* (2M) kept rows and dropped ids of a prune */
} scratch;

/* ---- Step 2: projection and reverse edges ------------------------------------------------- */

static loupe_status project(const build_cfg *b, const int32_t *L, int64_t nq, int K,
                            const int32_t *owner, const int32_t *best_q, int32_t *out,
                            int *outn, int nth, uint64_t seed, int64_t *n_untouched,
                            loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    int64_t n = b->n;
    int M = b->M;
    uint32_t *cnt = calloc((size_t)n + 1, sizeof *cnt);
    uint32_t *off = calloc((size_t)n + 1, sizeof *off);
    uint8_t *is_owner = calloc((size_t)n, 1), *touched = calloc((size_t)n, 1);
    int64_t *order = malloc((size_t)(nq > 0 ? nq : 1) * sizeof *order);
    int32_t *cand = NULL, *rev = NULL, *gkeys = NULL;
    uint32_t *roff = NULL;
    int64_t *goff = NULL, *gfill = NULL;
    group_item *items = NULL;
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
    for (int64_t q = 0; q < nq; q++) {
        if (owner[q] >= 0)
            is_owner[owner[q]] = 1;
        for (int j = 0; j < K; j++)
            if (L[q * K + j] >= 0)
                touched[L[q * K + j]] = 1;
    }
    *n_untouched = 0;
    for (int64_t u = 0; u < n; u++)
        *n_untouched += !touched[u];
    /* Owners: the union of their queries' lists. Counting pass, then the fill pass in the same
     * order (the caps agree). */
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < nq; i++) {
            int64_t q = order[i];
            int32_t o = owner[q];
            if (o < 0)
                continue;
            for (int j = 0; j < K; j++) {
                int32_t v = L[q * K + j];
                if (v < 0 || v == o || cnt[o] >= ANN_CAND_CAP)
                    continue;
                if (pass)
                    cand[off[o] + cnt[o]] = v;
                cnt[o]++;
            }
        }
        if (pass == 0) {
            for (int64_t u = 0; u < n; u++)
                off[u + 1] = off[u] + cnt[u];
            cand = malloc((size_t)(off[n] ? off[n] : 1) * sizeof *cand);
            if (!cand)
                goto nomem;
            memset(cnt, 0, (size_t)n * sizeof *cnt);
        }
    }
    /* Every other key: its best query's list, grouped by that query, in work items of at most
     * ANN_GROUP_ITEM keys (a query can be the best of thousands of keys). */
    goff = calloc((size_t)nq + 1, sizeof *goff);
    gfill = malloc((size_t)(nq > 0 ? nq : 1) * sizeof *gfill);
    gkeys = malloc((size_t)n * sizeof *gkeys);
    if (!goff || !gfill || !gkeys)
        goto nomem;
    for (int64_t u = 0; u < n; u++)
        if (!is_owner[u] && best_q[u] >= 0)
            goff[best_q[u] + 1]++;
    int64_t n_items = 0;
    for (int64_t q = 0; q < nq; q++) {
        n_items += (goff[q + 1] + ANN_GROUP_ITEM - 1) / ANN_GROUP_ITEM;
        goff[q + 1] += goff[q];
    }
    items = malloc((size_t)(n_items ? n_items : 1) * sizeof *items);
    if (!items)
        goto nomem;
    memcpy(gfill, goff, (size_t)nq * sizeof *gfill);
    for (int64_t u = 0; u < n; u++)
        if (!is_owner[u] && best_q[u] >= 0)
            gkeys[gfill[best_q[u]]++] = (int32_t)u;
    n_items = 0;
    for (int64_t q = 0; q < nq; q++)
        for (int64_t a = goff[q]; a < goff[q + 1]; a += ANN_GROUP_ITEM)
            items[n_items++] = (group_item){q, a, a + ANN_GROUP_ITEM < goff[q + 1]
                                                        ? a + ANN_GROUP_ITEM
                                                        : goff[q + 1]};

    int cache = K <= ANN_PAIR_CACHE_K;
#pragma omp parallel num_threads(nth)
    {
        scratch s = {calloc((size_t)n, sizeof(uint32_t)), malloc(ANN_CAND_CAP * 4 + 4 * M),
                     malloc((ANN_CAND_CAP + (size_t)M) * sizeof(ann_prune_cand)),
                     malloc(2 * (size_t)M * sizeof(int32_t))};
        int32_t *rows = malloc((size_t)K * sizeof *rows);
        uint8_t *first = malloc((size_t)K);
        prune_src ps = {b->rule, b->d, b->F, NULL, NULL, NULL, 0, K};
        if (cache) {
            ps.pd = malloc((size_t)K * (size_t)K * sizeof *ps.pd);
            ps.pd_ep = calloc((size_t)K * (size_t)K, sizeof *ps.pd_ep);
        }
        int ok = s.mark && s.ids && s.tmp && s.work && rows && first &&
                 (!cache || (ps.pd && ps.pd_ep));
#pragma omp for schedule(dynamic, 64) nowait
        for (int64_t u = 0; u < n; u++) {
            if (!ok || !is_owner[u])
                continue;
            int m = 0;
            for (uint32_t j = off[u]; j < off[u + 1]; j++) {
                int32_t v = cand[j];
                if (s.mark[v] != (uint32_t)u + 1) {
                    s.mark[v] = (uint32_t)u + 1;
                    s.ids[m++] = v;
                }
            }
            outn[u] = prune_list(b, (int32_t)u, s.ids, m, s.tmp, s.work, out + u * b->S);
        }
        /* Dedupe marks: epochs n + 1 + item, after the key epochs 1..n of the loop above. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < n_items; it++) {
            if (!ok)
                continue;
            const group_item *gi = &items[it];
            const int32_t *l = L + gi->q * K;
            uint32_t ep = (uint32_t)(n + 1 + it);
            for (int j = 0; j < K; j++) { /* a repeated id counts once, as in the owners' lists */
                first[j] = l[j] >= 0 && s.mark[l[j]] != ep;
                if (l[j] >= 0)
                    s.mark[l[j]] = ep;
            }
            ps.row_of = l;
            if (++ps.ep == 0) { /* wrapped: stale entries would read as current */
                if (cache)
                    memset(ps.pd_ep, 0, (size_t)K * (size_t)K * sizeof *ps.pd_ep);
                ps.ep = 1;
            }
            for (int64_t a = gi->lo; a < gi->hi; a++) {
                int32_t u = gkeys[a];
                int m = 0, raw = 0;
                for (int j = 0; j < K && raw < ANN_CAND_CAP; j++) {
                    if (l[j] < 0 || l[j] == u)
                        continue;
                    raw++;
                    if (first[j]) {
                        s.ids[m] = l[j];
                        rows[m++] = j;
                    }
                }
                outn[u] = prune_core(&ps, b->alpha, M, b->fill, b->F + (int64_t)u * b->d, s.ids,
                                     rows, m, s.tmp, s.work, out + (int64_t)u * b->S);
            }
        }
        if (!ok)
#pragma omp atomic write
            rc = LOUPE_ERR_NOMEM;
        free(s.mark);
        free(s.ids);
        free(s.tmp);
        free(s.work);
        free(rows);
        free(first);
        free(ps.pd);
        free(ps.pd_ep);
    }
    if (rc != LOUPE_OK)
        goto nomem;
    /* Reverse edges from a snapshot of the forward lists. */
    free(cand);
    cand = NULL;
    roff = calloc((size_t)n + 1, sizeof *roff);
    if (!roff)
        goto nomem;
    for (int64_t u = 0; u < n; u++)
        for (int j = 0; j < outn[u]; j++)
            roff[out[u * b->S + j] + 1]++;
    for (int64_t u = 0; u < n; u++)
        roff[u + 1] += roff[u];
    rev = malloc((size_t)(roff[n] ? roff[n] : 1) * sizeof *rev);
    if (!rev)
        goto nomem;
    memcpy(cnt, roff, (size_t)n * sizeof *cnt);
    for (int64_t u = 0; u < n; u++)
        for (int j = 0; j < outn[u]; j++)
            rev[cnt[out[u * b->S + j]]++] = (int32_t)u;

#pragma omp parallel num_threads(nth)
    {
        scratch s = {calloc((size_t)n, sizeof(uint32_t)), malloc(ANN_CAND_CAP * 4 + 4 * M),
                     malloc((ANN_CAND_CAP + (size_t)M) * sizeof(ann_prune_cand)),
                     malloc(2 * (size_t)M * sizeof(int32_t))};
        int ok = s.mark && s.ids && s.tmp && s.work;
#pragma omp for schedule(dynamic, 64)
        for (int64_t v = 0; v < n; v++) {
            if (!ok)
                continue;
            int m = 0;
            uint32_t ep = (uint32_t)v + 1;
            int32_t *ol = out + v * b->S;
            for (int j = 0; j < outn[v]; j++) {
                s.mark[ol[j]] = ep;
                s.ids[m++] = ol[j];
            }
            for (uint32_t j = roff[v]; j < roff[v + 1] && m < ANN_CAND_CAP + M; j++) {
                int32_t u = rev[j];
                if (s.mark[u] != ep && u != v) {
                    s.mark[u] = ep;
                    s.ids[m++] = u;
                }
            }
            if (m <= M) {
                memcpy(ol, s.ids, (size_t)m * sizeof *ol);
                outn[v] = m;
            } else {
                outn[v] = prune_list(b, (int32_t)v, s.ids, m, s.tmp, s.work, ol);
            }
            for (int j = outn[v]; j < b->S; j++)
                ol[j] = -1;
        }
        if (!ok)
#pragma omp atomic write
            rc = LOUPE_ERR_NOMEM;
        free(s.mark);
        free(s.ids);
        free(s.tmp);
        free(s.work);
    }
    if (rc != LOUPE_OK)
        goto nomem;
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
    free(roff);
    free(goff);
    free(gfill);
    free(gkeys);
    free(items);
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

/* seen[u] = 1 iff u is reachable from an entry point. */
static void reach_from_entries(const ann_index *ix, const int32_t *out, const int *outn, int M,
                               uint8_t *seen, int32_t *queue)
{
    int64_t qn = 0;
    memset(seen, 0, (size_t)ix->n);
    for (int i = 0; i < ix->n_entry; i++)
        if (!seen[ix->entry[i]]) {
            seen[ix->entry[i]] = 1;
            queue[qn++] = ix->entry[i];
        }
    bfs(out, outn, M, seen, queue, qn);
}

/* Adds the edge r→u, into a free slot of r's list, else over r's last (weakest) edge. */
static void link_edge(int32_t *out, int *outn, int S, int32_t r, int32_t u)
{
    if (outn[r] < S)
        out[(int64_t)r * S + outn[r]++] = u;
    else
        out[(int64_t)r * S + S - 1] = u;
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
    for (int round = 0; round < 3; round++) {
        reach_from_entries(ix, out, outn, S, seen, queue);
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
                int32_t r = best_q[u] >= 0 ? list_source(L + (int64_t)best_q[u] * K, K, seen,
                                                         outn, S)
                                           : -1;
                if (r < 0) {
                    left[keep++] = u;
                    continue;
                }
                link_edge(out, outn, S, r, u);
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
                    int m = ann_graph_search_pool(ix, ctx, q, ANN_REPAIR_EF, ANN_REPAIR_EF,
                                                  NULL, 0);
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
            link_edge(out, outn, S, r, u);
            (*n_repaired)++;
            seen[u] = 1;
            queue[0] = u;
            bfs(out, outn, S, seen, queue, 1);
        }
    }
    /* Final count (an overwritten edge may have cut something off again). */
    reach_from_entries(ix, out, outn, S, seen, queue);
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
                          int K, int want, uint64_t seed, int32_t *entry)
{
    int d = ix->dim, ne = 0;
    float *mean = calloc((size_t)d, sizeof *mean);
    if (!mean)
        return 0;
    for (int64_t q = 0; q < nq; q++)
        for (int c = 0; c < d; c++)
            mean[c] += Q[q * d + c] / (float)nq;
    float bs = -INFINITY;
    int32_t best = 0;
    for (int64_t u = 0; u < ix->n; u++) {
        float s = ann_score(ix->keys, mean, u);
        if (s > bs) {
            bs = s;
            best = (int32_t)u;
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
    float *F = NULL, *Q = NULL, *scores = NULL;
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
    F = malloc((size_t)n * (size_t)d * sizeof *F);
    if (!F)
        goto nomem;
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t u = 0; u < n; u++)
        ann_keys_row(ix->keys, u, F + u * d);

    /* Build queries: the given ones (graph) or the keys (keygraph), sampled without
     * replacement down to max_build_queries. */
    int64_t total = keygraph ? n : nq;
    int64_t use = opts->max_build_queries > 0 && opts->max_build_queries < total
                      ? opts->max_build_queries
                      : total;
    pick = malloc((size_t)total * sizeof *pick);
    Q = malloc((size_t)use * (size_t)d * sizeof *Q);
    if (!pick || !Q)
        goto nomem;
    for (int64_t i = 0; i < total; i++)
        pick[i] = i;
    if (use < total)
        for (int64_t i = 0; i < use; i++) {
            int64_t j = i + (int64_t)(ann_rng_next(&rng) % (uint64_t)(total - i)), t = pick[i];
            pick[i] = pick[j];
            pick[j] = t;
        }
    for (int64_t i = 0; i < use; i++)
        memcpy(Q + i * d, (keygraph ? F : queries) + pick[i] * d, (size_t)d * sizeof *Q);
    ix->stats.n_build_queries = use;

    /* 1. kNN (the key graph asks for one more: a key is often its own best match). */
    int Kq = keygraph && K < n ? K + 1 : K;
    L = malloc((size_t)use * (size_t)Kq * sizeof *L);
    scores = malloc((size_t)use * (size_t)Kq * sizeof *scores);
    best_q = malloc((size_t)n * sizeof *best_q);
    owner = malloc((size_t)use * sizeof *owner);
    if (!L || !scores || !best_q || !owner)
        goto nomem;
    ann_knn_fn knn = opts->knn ? opts->knn : ann_knn_cpu;
    if ((rc = knn(opts->knn_user, ix->keys, Q, use, Kq, nth, L, scores, best_q, err)) != LOUPE_OK)
        goto done;
    if ((rc = choose_owners(L, use, Kq, keygraph ? pick : NULL, n, opts->pivot_cap, opts->seed,
                            owner, err)) != LOUPE_OK)
        goto done;
    ix->stats.knn_s = ann_now() - t0;

    /* 2. Projection and reverse edges. */
    double t1 = ann_now();
    build_cfg b = {n, d, M, M + ANN_REPAIR_SLOTS, fill, opts->prune, opts->prune_alpha > 0 ? opts->prune_alpha : 1.0f, F};
    out = malloc((size_t)n * (size_t)b.S * sizeof *out);
    outn = calloc((size_t)n, sizeof *outn);
    if (!out || !outn)
        goto nomem;
    if ((rc = project(&b, L, use, Kq, owner, best_q, out, outn, nth, opts->seed,
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
    ix->n_entry = choose_entries(ix, Q, use, L, Kq, want, opts->seed, entry);
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
    free(F);
    free(Q);
    free(scores);
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
