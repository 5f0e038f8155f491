/*
 * Pruning candidate lists: the rule that turns a key's candidates into its out-edges (the graph
 * build's projection, graph_build.c, and growth's inserts, grow.c), one list at a time
 * (ann_prune_list) or a batch of them (ann_prune_cpu, the CPU implementation of ann_prune_fn).
 *
 * A prune sorts the candidates by distance to the owner p and keeps them greedily: candidate c
 * is dropped when an already kept r is closer to c than p is (L2 between keys, or the
 * inner-product form r·c > p·c), at most `keep` kept, then the list is topped up to `fill` with
 * the dropped ones in order (more edges per expansion; fewer dead ends).
 *
 * In a batch, lists over one shared list (keys that share a best query, graph_build.c) are
 * pruned together, with the distances between the shared list's members computed once (a pair
 * cache), which gives bit-identical lists at a fraction of the distance computations. Distances
 * are computed several at a time (dist_kernel), bit-identical to keystore.c's one-pair kernels.
 */
#include "anns/ann_impl.h"

#include <omp.h>
#include <stdlib.h>

/* ANN_GROUP_ITEM: lists of one shared list per work item; ANN_PAIR_CACHE_K: the largest shared
 * list length whose (K, K) pair-distance cache is kept per thread. */
enum { ANN_GROUP_ITEM = 64, ANN_PAIR_CACHE_K = 512 };

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

/* One Hoare partition of a[0 .. n) (n > 16) around the median of a[0], a[n/2], a[n-1]; returns
 * nl with a[0 .. nl) <= the pivot <= a[nl .. n), both sides non-empty (ids are distinct). */
static int cand_partition(ann_prune_cand *a, int n)
{
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
    for (;;) { /* a[0] <= p <= a[n-1], then each swap, bound the scans */
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
    return j + 1; /* a[0..j] <= p <= a[j+1..n-1] */
}

/* Sorts candidates by cand_before: quicksort (median of three, the smaller side recursed so the
 * depth stays logarithmic), insertion sort below 16. Typed, unlike qsort, so the comparison
 * inlines: this sort was a third of a prune's time through qsort. */
static void cand_sort(ann_prune_cand *a, int n)
{
    while (n > 16) {
        int nl = cand_partition(a, n);
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

/* The candidate order as one integer: s mapped so that unsigned order is float order
 * (ann_float_order), then the id, so key order is exactly cand_before's order. */
static inline uint64_t cand_key(const ann_prune_cand *c)
{
    return (uint64_t)ann_float_order(c->s) << 32 | (uint32_t)c->id;
}

/* Moves the k candidates first by cand_before into a[0 .. k), in no order (quickselect: median
 * of three, the side holding the k-th kept). */
static void cand_select(ann_prune_cand *a, int n, int k)
{
    while (n > 16 && k > 0 && k < n) {
        int nl = cand_partition(a, n);
        if (k <= nl) {
            n = nl;
        } else {
            a += nl;
            n -= nl;
            k -= nl;
        }
    }
    if (k > 0 && k < n)
        cand_sort(a, n); /* short: sorting is selecting */
}

enum { ANN_RANK_SORT_MAX = 128 };

/* cand_sort for short lists (most prunes: a build query's top-64): each candidate's place is the
 * number of keys below its own, counted without branches (vector compares), instead of a
 * quicksort whose compares the branch predictor cannot guess. Keys are distinct, so the places
 * are a permutation and the order is cand_sort's. n <= ANN_RANK_SORT_MAX. */
ANN_CLONES static void cand_rank_sort(ann_prune_cand *a, int n)
{
    uint64_t key[ANN_RANK_SORT_MAX];
    ann_prune_cand copy[ANN_RANK_SORT_MAX];
    for (int i = 0; i < n; i++) {
        key[i] = cand_key(&a[i]);
        copy[i] = a[i];
    }
    for (int i = 0; i < n; i++) {
        uint64_t k = key[i];
        int r = 0;
        for (int j = 0; j < n; j++)
            r += key[j] < k;
        a[r] = copy[i];
    }
}

/* ---- Distances, several at once --------------------------------------------------------- */

/* DIST_LANES is keystore.c's ANN_LANES: the batched kernel below repeats its order. */
enum { DIST_LANES = ANN_LANES, DIST_BATCH = 8 };
typedef float dist_vec __attribute__((vector_size(DIST_LANES * sizeof(float))));

/* out[p] = the prune distance (L2², or -a·b for ANN_PRUNE_IP) between a and b[p], p < P,
 * bit-identical to keystore.c's ann_l2sq_f32 / ann_dot_f32: each pair takes the same operations
 * in the same order (16 lane sums, then the tail, then ann_lanes_sum; -std=c11 fuses no
 * multiply-add), but P pairs are in flight, so the loop is bound by throughput instead of by one
 * pair's chain of dependent additions. */
static inline __attribute__((always_inline)) void dist_kernel(int P, int ip, const float *a,
                                                              const float *const *b, int d,
                                                              float *out)
{
    dist_vec acc[DIST_BATCH];
    float s[DIST_BATCH];
    int i = 0;
    for (int p = 0; p < P; p++) {
        acc[p] = (dist_vec){0};
        s[p] = 0;
    }
    for (; i + DIST_LANES <= d; i += DIST_LANES) {
        dist_vec va, vb;
        memcpy(&va, a + i, sizeof va);
        if (ip)
            for (int p = 0; p < P; p++) {
                memcpy(&vb, b[p] + i, sizeof vb);
                acc[p] += va * vb;
            }
        else
            for (int p = 0; p < P; p++) {
                memcpy(&vb, b[p] + i, sizeof vb);
                dist_vec t = va - vb;
                acc[p] += t * t;
            }
    }
    for (; i < d; i++)
        for (int p = 0; p < P; p++)
            s[p] += ip ? a[i] * b[p][i] : (a[i] - b[p][i]) * (a[i] - b[p][i]);
    for (int p = 0; p < P; p++) {
        ann_lanes8 lo, hi;
        memcpy(&lo, &acc[p], sizeof lo);
        memcpy(&hi, (const char *)&acc[p] + sizeof lo, sizeof hi);
        float t = ann_lanes_sum(&lo, &hi, s[p]);
        out[p] = ip ? -t : t;
    }
}

ANN_CLONES static void dist_8(int ip, const float *a, const float *const *b, int d, float *out)
{
    dist_kernel(8, ip, a, b, d, out);
}

ANN_CLONES static void dist_4(int ip, const float *a, const float *const *b, int d, float *out)
{
    dist_kernel(4, ip, a, b, d, out);
}

ANN_CLONES static void dist_2(int ip, const float *a, const float *const *b, int d, float *out)
{
    dist_kernel(2, ip, a, b, d, out);
}

ANN_CLONES static void dist_1(int ip, const float *a, const float *const *b, int d, float *out)
{
    dist_kernel(1, ip, a, b, d, out);
}

/* The distances from a to b[0..nb), nb <= DIST_BATCH, in the narrowest kernel that holds them
 * (a block often has only one or two candidates left to check). */
static void dist_rows(ann_prune_rule rule, const float *a, const float *const *b, int nb, int d,
                      float *out)
{
    int ip = rule == ANN_PRUNE_IP;
    if (nb == 1)
        dist_1(ip, a, b, d, out);
    else if (nb == 2)
        dist_2(ip, a, b, d, out);
    else if (nb <= 4)
        dist_4(ip, a, b, d, out);
    else
        dist_8(ip, a, b, d, out);
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
    int32_t owner_row;     /* the owner's position in the list when it is a member (its
                              distances to the others are then pair distances too), else -1 */
} prune_src;

static inline const float *src_row(const prune_src *ps, int32_t row)
{
    return ps->F + (int64_t)(ps->row_of ? ps->row_of[row] : row) * ps->d;
}

/* d(r, c) for the candidates tmp[blk[0..nb)] into dv: from the pair cache where it holds them,
 * the rest computed DIST_BATCH at a time. */
static void pair_dists(const prune_src *ps, int32_t r, const ann_prune_cand *tmp,
                       const int *blk, int nb, float *dv)
{
    const float *rr = src_row(ps, r), *b[DIST_BATCH];
    float o[DIST_BATCH];
    int miss[DIST_BATCH], nm = 0;
    for (int p = 0; p < nb; p++) {
        int32_t c = tmp[blk[p]].row;
        if (ps->pd && ps->pd_ep[(int64_t)r * ps->K + c] == ps->ep)
            dv[p] = ps->pd[(int64_t)r * ps->K + c];
        else
            miss[nm++] = p;
    }
    if (nm == 0)
        return;
    for (int p = 0; p < DIST_BATCH; p++) /* pad with a real row: the extra results are unused */
        b[p] = src_row(ps, tmp[blk[miss[p < nm ? p : 0]]].row);
    dist_rows(ps->rule, rr, b, nm, ps->d, o);
    for (int p = 0; p < nm; p++) {
        int32_t c = tmp[blk[miss[p]]].row;
        dv[miss[p]] = o[p];
        if (ps->pd) {
            int64_t rc = (int64_t)r * ps->K + c, cr = (int64_t)c * ps->K + r;
            ps->pd[rc] = ps->pd[cr] = o[p];
            ps->pd_ep[rc] = ps->pd_ep[cr] = ps->ep;
        }
    }
}

/* tmp[i].s = d(owner, candidate i) for i < m, DIST_BATCH at a time. */
static void owner_dists(const prune_src *ps, const float *owner, ann_prune_cand *tmp, int m)
{
    const float *b[DIST_BATCH];
    float o[DIST_BATCH];
    for (int i = 0; i < m; i += DIST_BATCH) {
        int nb = m - i < DIST_BATCH ? m - i : DIST_BATCH;
        for (int p = 0; p < DIST_BATCH; p++)
            b[p] = src_row(ps, tmp[i + (p < nb ? p : 0)].row);
        dist_rows(ps->rule, owner, b, nb, ps->d, o);
        for (int p = 0; p < nb; p++)
            tmp[i + p].s = o[p];
    }
}

/* ann_prune_list over the rows ps describes; dist (m), when given, holds the candidates'
 * distances to the owner (computed by an earlier prune), and out_s (<= keep), when given,
 * receives those of the kept ids.
 *
 * The greedy scan goes DIST_BATCH candidates at a time: the block's live candidates are checked
 * against one kept row after another (one batched call per row), each leaving the block at the
 * first row that prunes it; then the first live one in order is kept and the rest are checked
 * against it too. Each candidate meets the same kept rows in the same order as in a one-by-one
 * scan, so the lists are the same; only the distances are computed several at once. */
static int prune_core(const prune_src *ps, float alpha, int keep, int fill, int nearest,
                      const float *owner, const int32_t *ids, const int32_t *rows,
                      const float *dist, int m, ann_prune_cand *tmp, int32_t *work, int32_t *out,
                      float *out_s)
{
    for (int i = 0; i < m; i++) {
        tmp[i].id = ids[i];
        tmp[i].row = rows[i];
        if (dist)
            tmp[i].s = dist[i];
    }
    if (!dist && ps->pd && ps->owner_row >= 0) { /* through the pair cache */
        for (int i = 0; i < m; i += DIST_BATCH) {
            int blk[DIST_BATCH], nb = m - i < DIST_BATCH ? m - i : DIST_BATCH;
            float dv[DIST_BATCH];
            for (int p = 0; p < nb; p++)
                blk[p] = i + p;
            pair_dists(ps, ps->owner_row, tmp, blk, nb, dv);
            for (int p = 0; p < nb; p++)
                tmp[i + p].s = dv[p];
        }
    } else if (!dist) {
        owner_dists(ps, owner, tmp, m);
    }
    if (nearest > 0 && m > nearest) { /* only the nearest go on: the rest are never read */
        cand_select(tmp, m, nearest);
        m = nearest;
    }
    if (m <= ANN_RANK_SORT_MAX)
        cand_rank_sort(tmp, m);
    else
        cand_sort(tmp, m);
    int32_t *kept_row = work, *dropped = work + keep; /* dropped: indices into tmp */
    int kept = 0, nd = 0;
    float a = ps->rule == ANN_PRUNE_L2 ? alpha : 1.0f;
    for (int i0 = 0; i0 < m && kept < keep; i0 += DIST_BATCH) {
        int nb = m - i0 < DIST_BATCH ? m - i0 : DIST_BATCH;
        int live[DIST_BATCH], nl = 0, checked = 0, pos = 0;
        uint8_t pruned[DIST_BATCH] = {0};
        float dv[DIST_BATCH];
        for (int p = 0; p < nb; p++)
            live[nl++] = i0 + p;
        while (pos < nb && kept < keep) {
            for (; checked < kept && nl > 0; checked++) {
                pair_dists(ps, kept_row[checked], tmp, live, nl, dv);
                int w = 0;
                for (int p = 0; p < nl; p++) {
                    if (a * dv[p] < tmp[live[p]].s)
                        pruned[live[p] - i0] = 1;
                    else
                        live[w++] = live[p];
                }
                nl = w;
            }
            checked = kept;
            for (; pos < nb; pos++) { /* decide in order up to the next kept one */
                int i = i0 + pos;
                if (pruned[pos]) {
                    if (nd < keep)
                        dropped[nd++] = i;
                    continue;
                }
                if (out_s)
                    out_s[kept] = tmp[i].s;
                kept_row[kept] = tmp[i].row;
                out[kept++] = tmp[i].id;
                nl--; /* i is live[0]: the first live candidate in order */
                memmove(live, live + 1, (size_t)nl * sizeof *live);
                pos++;
                break;
            }
        }
    }
    for (int j = 0; j < nd && kept < fill; j++) {
        if (out_s)
            out_s[kept] = tmp[dropped[j]].s;
        out[kept++] = tmp[dropped[j]].id;
    }
    return kept;
}

int ann_prune_list(ann_prune_rule rule, float alpha, int keep, int fill, int d,
                   const float *owner, const float *F, const int32_t *ids, const int32_t *rows,
                   int m, ann_prune_cand *tmp, int32_t *work, int32_t *out)
{
    prune_src ps = {rule, d, F, NULL, NULL, NULL, 0, 0, -1};
    return prune_core(&ps, alpha, keep, fill, 0, owner, ids, rows, NULL, m, tmp, work, out, NULL);
}


/* ---- Batches ------------------------------------------------------------------------------ */

/* Per-thread scratch of a batch. */
typedef struct {
    uint32_t *mark;      /* (n) dedupe epochs of shared lists */
    int32_t *ids, *rows; /* (cap) */
    ann_prune_cand *tmp; /* (cap) */
    int32_t *work;       /* (2 keep) kept rows and dropped candidates of a prune */
    uint8_t *first;      /* (K) shared list entries that are not repeats */
    float *pd;           /* (K, K) pair cache, or NULL */
    uint32_t *pd_ep;
} batch_scratch;

static void batch_scratch_free(batch_scratch *s)
{
    free(s->mark);
    free(s->ids);
    free(s->rows);
    free(s->tmp);
    free(s->work);
    free(s->first);
    free(s->pd);
    free(s->pd_ep);
}

/* Explicit lists: each alone, its candidates' rows by key id. */
static void prune_explicit(const ann_prune_job *j, int64_t i, batch_scratch *s)
{
    const int32_t u = j->own[i];
    const int32_t *c = j->cid + j->start[i];
    prune_src ps = {j->rule, j->dim, j->F, NULL, NULL, NULL, 0, 0, -1};
    j->outn[u] = prune_core(&ps, j->alpha, j->keep, j->fill, j->nearest,
                            j->F + (int64_t)u * j->dim, c, c,
                            j->cdist ? j->cdist + j->start[i] : NULL, j->len[i], s->tmp, s->work,
                            j->out + (int64_t)u * j->stride,
                            j->outd ? j->outd + (int64_t)u * j->stride : NULL);
}

/* Lists lo..hi-1, all over shared list q: the pair cache is valid for the run (one epoch). */
static void prune_shared_run(const ann_prune_job *j, int64_t lo, int64_t hi, uint32_t ep,
                             batch_scratch *s, prune_src *ps)
{
    const int K = j->K;
    const int32_t *l = j->shared + (int64_t)j->lst[lo] * K;
    for (int x = 0; x < K; x++) { /* a repeated id counts once */
        s->first[x] = l[x] >= 0 && s->mark[l[x]] != ep;
        if (l[x] >= 0)
            s->mark[l[x]] = ep;
    }
    ps->row_of = l;
    if (++ps->ep == 0) { /* wrapped: stale entries would read as current */
        if (ps->pd)
            memset(ps->pd_ep, 0, (size_t)K * (size_t)K * sizeof *ps->pd_ep);
        ps->ep = 1;
    }
    for (int64_t i = lo; i < hi; i++) {
        const int32_t u = j->own[i];
        int m = 0;
        ps->owner_row = -1;
        for (int x = 0; x < K; x++) {
            if (l[x] == u && s->first[x])
                ps->owner_row = x;
            if (l[x] < 0 || l[x] == u || !s->first[x])
                continue;
            s->ids[m] = l[x];
            s->rows[m++] = x;
        }
        j->outn[u] = prune_core(ps, j->alpha, j->keep, j->fill, j->nearest,
                                j->F + (int64_t)u * j->dim,
                                s->ids, s->rows, NULL, m, s->tmp, s->work,
                                j->out + (int64_t)u * j->stride,
                                j->outd ? j->outd + (int64_t)u * j->stride : NULL);
    }
}

loupe_status ann_prune_cpu(void *user, const ann_prune_job *j, loupe_err *err)
{
    (void)user;
    if (j->n_lists <= 0)
        return LOUPE_OK;
    const int nth = j->threads > 0 ? j->threads : omp_get_max_threads();
    const int shared = j->shared != NULL;
    int64_t cap = shared ? j->K : 0;
    if (!shared)
        for (int64_t i = 0; i < j->n_lists; i++)
            cap = j->len[i] > cap ? j->len[i] : cap;
    /* Work items: one explicit list, or a run of at most ANN_GROUP_ITEM lists over one shared
     * list (a shared list can be the best query of thousands of keys). */
    int64_t n_items = j->n_lists, *item = NULL;
    if (shared) {
        item = malloc(((size_t)j->n_lists + 1) * sizeof *item);
        if (!item)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "pruning %lld lists: no memory",
                              (long long)j->n_lists);
        n_items = 0;
        for (int64_t i = 0; i < j->n_lists; i++)
            if (i == 0 || j->lst[i] != j->lst[i - 1] || i - item[n_items - 1] == ANN_GROUP_ITEM)
                item[n_items++] = i;
        item[n_items] = j->n_lists;
    }
    const int cache = shared && j->K <= ANN_PAIR_CACHE_K;
    const int chunk = shared ? 1 : 16; /* a run of lists, or one short list */
    int failed = 0;
#pragma omp parallel num_threads(nth)
    {
        batch_scratch s = {shared ? calloc((size_t)j->n, sizeof(uint32_t)) : NULL,
                           malloc((size_t)(cap + 1) * sizeof(int32_t)),
                           malloc((size_t)(cap + 1) * sizeof(int32_t)),
                           malloc((size_t)(cap + j->keep + 1) * sizeof(ann_prune_cand)),
                           malloc(2 * (size_t)j->keep * sizeof(int32_t) + 1),
                           shared ? malloc((size_t)j->K) : NULL,
                           cache ? malloc((size_t)j->K * (size_t)j->K * sizeof(float)) : NULL,
                           cache ? calloc((size_t)j->K * (size_t)j->K, sizeof(uint32_t)) : NULL};
        prune_src ps = {j->rule, j->dim, j->F, NULL, s.pd, s.pd_ep, 0, j->K, -1};
        int ok = s.ids && s.rows && s.tmp && s.work && (!shared || (s.mark && s.first)) &&
                 (!cache || (s.pd && s.pd_ep));
#pragma omp for schedule(dynamic, chunk) nowait
        for (int64_t it = 0; it < n_items; it++) {
            if (!ok)
                continue;
            if (shared) /* dedupe epochs 1, 2, ...: one per item */
                prune_shared_run(j, item[it], item[it + 1], (uint32_t)it + 1, &s, &ps);
            else
                prune_explicit(j, it, &s);
        }
        if (!ok)
#pragma omp atomic write
            failed = 1;
        batch_scratch_free(&s);
    }
    free(item);
    if (failed)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "pruning %lld lists: no memory for scratch",
                          (long long)j->n_lists);
    return LOUPE_OK;
}
