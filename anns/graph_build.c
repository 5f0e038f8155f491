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
 *               No owner distance is computed twice: each kept edge keeps its distance, which
 *               the reverse-edge merge reuses, and a key that is a member of its shared list
 *               reads its own distances from the pair cache. Distances are computed several at a
 *               time (dist_kernel), bit-identical to keystore.c's one-pair kernels, so all of
 *               this leaves the graph exactly as it was.
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

/* The candidate order as one integer: s mapped so that unsigned order is float order (-0 as +0,
 * which compare equal), then the id, so key order is exactly cand_before's order. */
static inline uint64_t cand_key(const ann_prune_cand *c)
{
    float s = c->s == 0 ? 0.0f : c->s;
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    u = u >> 31 ? ~u : u | 0x80000000u;
    return (uint64_t)u << 32 | (uint32_t)c->id;
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
static int prune_core(const prune_src *ps, float alpha, int keep, int fill, const float *owner,
                      const int32_t *ids, const int32_t *rows, const float *dist, int m,
                      ann_prune_cand *tmp, int32_t *work, int32_t *out, float *out_s)
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
    return prune_core(&ps, alpha, keep, fill, owner, ids, rows, NULL, m, tmp, work, out, NULL);
}

/* Prunes candidate ids c (m) for owner u into outl (<= M) and their distances to u into outs,
 * the build's rows being F by key id; dist (m): the candidates' distances to u, or NULL. */
static int prune_list(const build_cfg *b, int32_t u, const int32_t *c, const float *dist, int m,
                      ann_prune_cand *tmp, int32_t *work, int32_t *outl, float *outs)
{
    prune_src ps = {b->rule, b->d, b->F, NULL, NULL, NULL, 0, 0, -1};
    return prune_core(&ps, b->alpha, b->M, b->fill, b->F + (int64_t)u * b->d, c, c, dist, m, tmp,
                      work, outl, outs);
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
    int32_t *work;        /* (2M) kept rows and dropped candidates of a prune */
    float *dist;          /* (cap) the candidates' distances to the owner, when known */
} scratch;

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
    int32_t *cand = NULL, *gkeys = NULL;
    uint64_t *rev = NULL;  /* (roff[n]) reverse edges: source and distance (rev_pack) */
    float *outd = NULL;    /* (n, S) the distance of each of out's edges */
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
    /* Owners: the union of their queries' lists, the queries taken in the seeded order (a hub's
     * list is capped). Here each owner's queries are bucketed in that order (cand: off[o] ..
     * off[o+1]); the lists themselves are read in the parallel loop below. */
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

    /* Every kept edge's distance is kept with it: the reverse-edge merge re-prunes over the same
     * pairs (d(u,v) is bit-identical to d(v,u)) and need not compute them again. */
    outd = malloc((size_t)n * (size_t)b->S * sizeof *outd);
    if (!outd)
        goto nomem;
    int cache = K <= ANN_PAIR_CACHE_K;
#pragma omp parallel num_threads(nth)
    {
        scratch s = {calloc((size_t)n, sizeof(uint32_t)), malloc(ANN_CAND_CAP * 4 + 4 * M),
                     malloc((ANN_CAND_CAP + (size_t)M) * sizeof(ann_prune_cand)),
                     malloc(2 * (size_t)M * sizeof(int32_t)), NULL};
        int32_t *rows = malloc((size_t)K * sizeof *rows);
        uint8_t *first = malloc((size_t)K);
        prune_src ps = {b->rule, b->d, b->F, NULL, NULL, NULL, 0, K, -1};
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
            int m = 0, raw = 0; /* the cap counts repeats, as a hub's appended lists would */
            for (uint32_t t = off[u]; t < off[u + 1]; t++) {
                const int32_t *l = L + (int64_t)cand[t] * K;
                for (int j = 0; j < K && raw < ANN_CAND_CAP; j++) {
                    int32_t v = l[j];
                    if (v < 0 || v == (int32_t)u)
                        continue;
                    raw++;
                    if (s.mark[v] != (uint32_t)u + 1) {
                        s.mark[v] = (uint32_t)u + 1;
                        s.ids[m++] = v;
                    }
                }
            }
            outn[u] = prune_list(b, (int32_t)u, s.ids, NULL, m, s.tmp, s.work, out + u * b->S,
                                 outd + u * b->S);
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
                ps.owner_row = -1;
                for (int j = 0; j < K && raw < ANN_CAND_CAP; j++) {
                    if (l[j] == u && first[j])
                        ps.owner_row = j;
                    if (l[j] < 0 || l[j] == u)
                        continue;
                    raw++;
                    if (first[j]) {
                        s.ids[m] = l[j];
                        rows[m++] = j;
                    }
                }
                outn[u] = prune_core(&ps, b->alpha, M, b->fill, b->F + (int64_t)u * b->d, s.ids,
                                     rows, NULL, m, s.tmp, s.work, out + (int64_t)u * b->S,
                                     outd + (int64_t)u * b->S);
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
    /* Filled in parallel, then each list sorted by source: the order a serial fill in key order
     * gives, which the merge keeps (short lists are copied as they are, long ones capped). */
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t u = 0; u < n; u++)
        for (int j = 0; j < outn[u]; j++)
#pragma omp atomic update
            roff[out[u * b->S + j] + 1]++;
    for (int64_t u = 0; u < n; u++)
        roff[u + 1] += roff[u];
    rev = malloc((size_t)(roff[n] ? roff[n] : 1) * sizeof *rev);
    if (!rev)
        goto nomem;
    memcpy(cnt, roff, (size_t)n * sizeof *cnt);
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

#pragma omp parallel num_threads(nth)
    {
        scratch s = {calloc((size_t)n, sizeof(uint32_t)), malloc(ANN_CAND_CAP * 4 + 4 * M),
                     malloc((ANN_CAND_CAP + (size_t)M) * sizeof(ann_prune_cand)),
                     malloc(2 * (size_t)M * sizeof(int32_t)),
                     malloc((ANN_CAND_CAP + (size_t)M) * sizeof(float))};
        int ok = s.mark && s.ids && s.tmp && s.work && s.dist;
#pragma omp for schedule(dynamic, 64)
        for (int64_t v = 0; v < n; v++) {
            if (!ok)
                continue;
            int m = 0;
            uint32_t ep = (uint32_t)v + 1;
            int32_t *ol = out + v * b->S;
            for (int j = 0; j < outn[v]; j++) {
                s.mark[ol[j]] = ep;
                s.dist[m] = outd[v * b->S + j];
                s.ids[m++] = ol[j];
            }
            for (uint32_t j = roff[v]; j < roff[v + 1] && m < ANN_CAND_CAP + M; j++) {
                int32_t u = (int32_t)(rev[j] >> 32);
                if (s.mark[u] != ep && u != v) {
                    s.mark[u] = ep;
                    s.dist[m] = rev_dist(rev[j]);
                    s.ids[m++] = u;
                }
            }
            if (m <= M) {
                memcpy(ol, s.ids, (size_t)m * sizeof *ol);
                outn[v] = m;
            } else {
                outn[v] = prune_list(b, (int32_t)v, s.ids, s.dist, m, s.tmp, s.work, ol, NULL);
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
        free(s.dist);
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
    free(outd);
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
    float *Fown = NULL, *Qown = NULL, *scores = NULL;
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
