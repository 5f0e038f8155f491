/*
 * anns private header: the layouts behind the opaque handles of anns.h and small helpers shared
 * by the index files (top-k heap, timer, SIMD-friendly dot products).
 *
 * Invariants:
 *   - an ann_index never owns its keys; `keys` outlives it.
 *   - every array of an index is either in `owned` (built here, freed on destroy) or points into
 *     a mapping/buffer (`map_base` non-NULL when the mapping is ours to unmap).
 *   - graph: out-neighbours of key u are adj[adj_off[u] .. adj_off[u+1]) up to the first -1,
 *     all in [0, n). Built and mapped indexes are CSR (no -1); a reserved one (grow.c) gives
 *     every list a fixed region with room to grow, padded with -1, and serialises back to CSR.
 *   - ivf: list l holds list_ids[list_off[l] .. list_off[l+1]); list_off[nlist] == n.
 *   - n <= capacity: cap after ann_index_reserve (grow.c), else n itself.
 */
#ifndef LOUPE_ANN_IMPL_H
#define LOUPE_ANN_IMPL_H

#include "anns/anns.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

struct ann_keys {
    ann_key_type type;
    int64_t n;
    int dim;
    int64_t stride;       /* elements between rows */
    const void *data;     /* (n, stride) of f32 / uint16 bf16 / int8 */
    const float *scales;  /* (n) int8: the rows'; (dim) int8c: the channels' */
    int64_t room;         /* rows owned_data holds (a search copy's room to grow); else n */
    void *owned_data;     /* non-NULL when we allocated data (and scales) */
    float *owned_scales;
};

#define ANN_MAX_OWNED 8

/* The graph build's options that growth reuses, so ann_index_add links new keys the way the
 * build linked the old ones (kept in the index and its file; defaults for files without them). */
typedef struct {
    int build_k;          /* top-k per linking query */
    int degree;           /* M asked for (ann_index.degree may be clamped to a small n - 1) */
    int fill;             /* top-up of pruned lists, <= degree */
    int pivot_cap;        /* lists one key may own as pivot per add; 0: no cap */
    ann_prune_rule prune;
    float alpha;
} ann_graph_params;

/* A candidate of one list's pruning (ann_prune_list). */
typedef struct {
    float s;     /* distance to the owner */
    int32_t id;  /* key id */
    int32_t row; /* row of the candidate in F */
} ann_prune_cand;

/* Growth's arrays and scratch (grow.c), allocated once by ann_index_reserve. */
typedef struct {
    /* graph / keygraph */
    uint32_t *adj_off;          /* (cap + 1) list regions */
    int32_t *adj;               /* (adj_off[cap]) lists padded with -1 */
    int K, M, max_list;         /* linking top-k, degree cap, largest list region */
    float *rows;                /* (max_list + K, dim) one prune's candidate rows in f32 */
    float *orow;                /* (dim) the owner's row; IVF: a new key's row */
    float *qrow;                /* (dim) a key as its own query */
    int32_t *cand;              /* (max_list + K) one merge's candidates */
    int32_t *rowix;             /* (max_list + K) 0, 1, 2, ...: candidate i is rows[i] */
    ann_prune_cand *tmp;        /* (max_list + K) */
    int32_t *work;              /* (2 M) */
    int32_t *kept;              /* (max_list) a prune's output, then kept orphans */
    uint8_t *indeg;             /* (cap) in-edges per key, saturating at 255 */
    int32_t *added;             /* (max_list) keys a merge added (their reverse edges) */
    int32_t *list;              /* (K) one query's top-K */
    int32_t *sel;               /* (K) the new keys among them */
    /* ivf */
    uint32_t *list_off;         /* (nlist + 1) */
    int32_t *list_ids;          /* (cap) */
    uint32_t *cnt;              /* (nlist) */
    float *half_norm;           /* (nlist) |c|^2 / 2 */
} ann_grow;

struct ann_index {
    ann_type type;
    const ann_keys *keys;
    const ann_keys *skeys;      /* graph / keygraph: what searches score, when not NULL: a
                                   narrower copy of keys (ann_index_set_search_keys) */
    int64_t n;
    int dim;
    /* graph / keygraph */
    int degree;                 /* build cap M */
    const uint32_t *adj_off;    /* (n + 1) */
    const int32_t *adj;         /* (adj_off[n]) */
    int n_entry;
    const int32_t *entry;       /* (n_entry) */
    /* ivf */
    int nlist;
    const float *centroids;     /* (nlist, dim) */
    const uint32_t *list_off;   /* (nlist + 1) */
    const int32_t *list_ids;    /* (n) */
    ann_build_stats stats;
    ann_graph_params gp;        /* graph / keygraph */
    int64_t cap;                /* keys reserved; 0 until ann_index_reserve */
    ann_grow *grow;             /* growth's arrays and scratch (grow.c), NULL until reserved */
    void *owned[ANN_MAX_OWNED];
    void *map_base;             /* munmap on destroy when non-NULL */
    size_t map_size;
};

/* The keys a graph search scores: the search copy when the index has one. */
static inline const ann_keys *ann_search_keys(const ann_index *ix)
{
    return ix->skeys ? ix->skeys : ix->keys;
}

/* Beam pool entry; `flag` marks a node already expanded. */
typedef struct {
    float s;
    int32_t id;
} ann_cand;

enum { ANN_EPOCH_MAX = 255 }; /* search epochs are bytes (ann_search_ctx.visited) */

struct ann_search_ctx {
    int64_t max_keys;
    int max_beam;
    uint8_t *visited;        /* (max_keys) epoch of the search that last saw the key: a byte, so
                                the marks of 1M keys take 1 MiB of cache, not 4 (every scored
                                row checks one at random) */
    uint32_t epoch;          /* 1..ANN_EPOCH_MAX */
    ann_cand *pool;          /* (max_beam + 1) sorted best first */
    uint8_t *expanded;       /* (max_beam + 1) parallel to pool */
    ann_cand *heap;          /* (max_beam + 1) min-heap scratch (flat, ivf, growth's top-k) */
    uint32_t *aux;           /* (max_keys) ann_index_add: pivot counts and flags, then
                                reachability marks */
    int32_t *nbuf;           /* (max_keys) unvisited neighbours of one expansion; ann_index_add's
                                BFS queue and new-key assignments */
    float *cscore;           /* (max_keys) IVF: every centroid's score for the query (nlist <= n) */
    ann_cand *gheap;         /* (ANN_GROUP_MAX, max_beam + 1) ann_search_group: per query its
                                pool (ANN_GROUP_EACH) or bounded top-k min-heap (shared modes) */
    uint8_t *gexpanded;      /* (ANN_GROUP_MAX, max_beam + 1) parallel to the pools in gheap */
    uint8_t *xmark;          /* (max_keys) epoch of the group search that expanded the key */
    int64_t scanned;
};

/* ---- Helpers ------------------------------------------------------------------------------ */

static inline double ann_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline float ann_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A float as a word whose unsigned order is the floats' order, -0 as +0 (they compare equal):
 * the sort keys of the pruning's candidates and of the kNN's score rows. */
static inline uint32_t ann_float_order(float s)
{
    if (s == 0)
        s = 0.0f;
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    return u >> 31 ? ~u : u | 0x80000000u;
}

/* Whether candidate (s, id) ranks below (ts, tid): a lower score, or the same score and a
 * higher id. Every result is the top k in this order — heaps, pools and sorts alike — so that
 * scores tied at the k-th (repeated tokens make exactly equal keys) resolve the same way in
 * every index type: an exhaustive graph search returns flat's keys, not the tied key it happened
 * to reach first. */
static inline bool ann_ranks_below(float s, int32_t id, float ts, int32_t tid)
{
    return s < ts || (s == ts && id > tid);
}

/* Min-heap of candidates in ann_ranks_below's order: heap[0] is the worst kept. */
static inline void ann_heap_sift_down(ann_cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, m = i;
        if (l < n && ann_ranks_below(h[l].s, h[l].id, h[m].s, h[m].id))
            m = l;
        if (l + 1 < n && ann_ranks_below(h[l + 1].s, h[l + 1].id, h[m].s, h[m].id))
            m = l + 1;
        if (m == i)
            return;
        ann_cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Offers (s, id) to a bounded min-heap of capacity cap holding *n entries. */
static inline void ann_heap_push(ann_cand *h, int *n, int cap, float s, int32_t id)
{
    if (*n < cap) {
        int i = (*n)++;
        h[i].s = s;
        h[i].id = id;
        while (i > 0) {
            int p = (i - 1) / 2;
            if (!ann_ranks_below(h[i].s, h[i].id, h[p].s, h[p].id))
                break;
            ann_cand t = h[p];
            h[p] = h[i];
            h[i] = t;
            i = p;
        }
    } else if (s > h[0].s || (s == h[0].s && id < h[0].id)) {
        h[0].s = s;
        h[0].id = id;
        ann_heap_sift_down(h, *n, 0);
    }
}

/* Sorts a heap of n entries best first, in place. */
static inline void ann_heap_sort_desc(ann_cand *h, int n)
{
    for (int m = n - 1; m > 0; m--) {
        ann_cand t = h[0];
        h[0] = h[m];
        h[m] = t;
        ann_heap_sift_down(h, m, 0);
    }
}

/* SplitMix64: seeded, reproducible sampling. */
static inline uint64_t ann_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Hot loops are compiled per ISA and dispatched at load time (ifunc): the project's flags target
 * baseline x86-64, and search and kNN are bound by these loops. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define ANN_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define ANN_CLONES
#endif

/* ---- Kernels (keystore.c) ----------------------------------------------------------------- */

/* The dot products keep ANN_LANES (16) partial sums, as two vectors of 8 (lanes 0-7, 8-15: in
 * registers, never stored), and end with ann_lanes_sum. */
enum { ANN_LANES = 16 };
typedef float ann_lanes8 __attribute__((vector_size(8 * sizeof(float))));
typedef float ann_lanes4 __attribute__((vector_size(4 * sizeof(float))));

/* tail + the 16 partial sums added as a tree (j + j+8, then j + j+4, j + j+2, 0 + 1): four
 * dependent additions where adding them one by one took sixteen, the better part of a 128-d
 * score's time in a search (which waits for each score). One order on every ISA: each step is
 * an IEEE addition of the same operands. graph_build.c's batched distances end with it too. */
static inline float ann_lanes_sum(const ann_lanes8 *lo, const ann_lanes8 *hi, float tail)
{
    ann_lanes8 a = *lo + *hi; /* (by pointer: 32-byte vector arguments draw an ABI note) */
    ann_lanes4 c = {a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]};
    return tail + ((c[0] + c[2]) + (c[1] + c[3]));
}

float ann_dot_f32(const float *a, const float *b, int d);
float ann_dot_bf16(const float *q, const uint16_t *k, int d);
float ann_dot_i8(const float *q, const int8_t *k, int d);
float ann_dot_i8c(const float *q, const float *scale, const int8_t *k, int d);
float ann_l2sq_f32(const float *a, const float *b, int d);

static inline const void *ann_keys_rowptr(const ann_keys *k, int64_t id)
{
    switch (k->type) {
    case ANN_KEYS_F32: return (const float *)k->data + id * k->stride;
    case ANN_KEYS_BF16: return (const uint16_t *)k->data + id * k->stride;
    default: return (const int8_t *)k->data + id * k->stride;
    }
}

static inline float ann_score(const ann_keys *k, const float *q, int64_t id)
{
    switch (k->type) {
    case ANN_KEYS_F32: return ann_dot_f32(q, (const float *)k->data + id * k->stride, k->dim);
    case ANN_KEYS_BF16:
        return ann_dot_bf16(q, (const uint16_t *)k->data + id * k->stride, k->dim);
    case ANN_KEYS_INT8C:
        return ann_dot_i8c(q, k->scales, (const int8_t *)k->data + id * k->stride, k->dim);
    default:
        return k->scales[id] * ann_dot_i8(q, (const int8_t *)k->data + id * k->stride, k->dim);
    }
}

/* Asks for every cache line of key id's row (and its int8 scale). Every line: a row that
 * straddles one line more than its size needs (rows off a line boundary) and left the last
 * unrequested waited a full memory latency for it in every dot product. */
static inline void ann_prefetch_row(const ann_keys *k, int64_t id)
{
    const char *p = (const char *)ann_keys_rowptr(k, id);
    const uintptr_t first = (uintptr_t)p & ~(uintptr_t)63,
                    last = (uintptr_t)p + (size_t)k->dim * ann_key_type_bytes(k->type) - 1;
    for (uintptr_t a = first; a <= last; a += 64)
        __builtin_prefetch((const void *)a, 0, 3);
    if (k->type == ANN_KEYS_INT8) /* its scale: one more line ann_score reads */
        __builtin_prefetch(k->scales + id, 0, 3);
}

/* ---- Per-type parts --------------------------------------------------------------------- */

/* IVF growth (ivf.c): |c|^2 / 2 per centroid; and appending keys n_old .. n_new-1 of ix->keys to
 * their nearest lists in the grown arrays of g, `assign` (n_new - n_old) being scratch. */
void ann_ivf_half_norms(const float *cent, int nlist, int d, float *out);
void ann_ivf_add(ann_index *ix, ann_grow *g, int64_t n_old, int64_t n_new, int32_t *assign);

loupe_status ann_ivf_build(ann_index *ix, const ann_build_opts *opts, loupe_err *err);
loupe_status ann_graph_build(ann_index *ix, const float *queries, int64_t nq,
                             const ann_build_opts *opts, loupe_err *err);
int ann_flat_search(const ann_index *ix, ann_search_ctx *ctx, const float *q, int k,
                    ann_cand *out);
int ann_ivf_search(const ann_index *ix, ann_search_ctx *ctx, const float *q, int k, int nprobe,
                   ann_cand *out);
/* How a beam search walks the graph (anns.h's ann_search_params says what each does). */
typedef struct {
    int ef;                /* the pool's capacity, >= 1 */
    int expand;            /* stop once the best `expand` are expanded; 0 or > ef: ef */
    int batch;             /* entries expanded at a time; 0: 1; at most ANN_BATCH_MAX */
    float margin;          /* stop at an entry scoring below the pool's best by more; 0: none */
    const int32_t *seeds;  /* extra start keys, or NULL */
    int n_seeds;
} ann_walk;

/* Beam search over the graph as w says; leaves the pool (best first) in ctx->pool and returns
 * its size. */
int ann_graph_search_pool(const ann_index *ix, ann_search_ctx *ctx, const float *q,
                          const ann_walk *w);
/* n (<= ANN_INTERLEAVE_MAX) beam searches with batch 1, search j of q[j] over ix[j] with
 * w[j] in ctx[j], interleaved a step at a time (anns.h's ann_search_many); each leaves its pool
 * in its ctx->pool as ann_graph_search_pool would, its size in n_pool[j]. */
void ann_graph_search_many(const ann_index *const *ix, ann_search_ctx *const *ctx,
                           const float *const *q, const ann_walk *w, int n, int *n_pool);
/* The traversal for a group of nq (<= ANN_GROUP_MAX) queries (nq, dim) sharing one index
 * (anns.h's ann_group_mode; graph_search.c). Every scanned key is scored for every query.
 * ANN_GROUP_EACH leaves query j's pool of ef, best first, at gheap + j·(max_beam + 1); the
 * shared modes leave there query j's bounded min-heap of kk. hn (nq): their sizes. */
void ann_graph_search_group(const ann_index *ix, ann_search_ctx *ctx, const float *qs, int nq,
                            const ann_walk *w, int kk, ann_group_mode mix, int *hn);
/* Stores p in ix->owned so destroy frees it; returns 0, or -1 when the table is full. */
int ann_index_own(ann_index *ix, void *p);
/* Frees p if ix->owned holds it (an array a reserve replaced); mapped arrays are left alone. */
void ann_index_disown(ann_index *ix, const void *p);

/* ---- Projection pruning (graph_build.c), shared by the build and growth ------------------- */

/* Prunes candidate keys ids (m, distinct, not the owner) of the list of the key whose f32 row is
 * `owner`; candidate i's f32 row is F + rows[i]·d. Sorted by distance to the owner (ties by id),
 * c is dropped when an already kept r is closer to it than the owner is (rule: L2 between keys
 * with alpha·d(r,c) < d(p,c), or inner products r·c > p·c); at most `keep` are kept, then topped
 * up to `fill` (<= keep) with dropped ones in order. tmp (m) and work (2·keep) are scratch.
 * Writes the kept ids into out (<= keep) and returns their count. */
int ann_prune_list(ann_prune_rule rule, float alpha, int keep, int fill, int d,
                   const float *owner, const float *F, const int32_t *ids, const int32_t *rows,
                   int m, ann_prune_cand *tmp, int32_t *work, int32_t *out);

/* ---- Growth (grow.c) ------------------------------------------------------------------------ */

void ann_graph_params_init(ann_graph_params *gp, const ann_build_opts *opts);
/* Frees what ann_index_reserve allocated (ann_index_destroy calls it). */
void ann_grow_free(ann_index *ix);
/* ann_index_bytes of a reserved index: its arrays at capacity and its growth scratch. */
size_t ann_grow_bytes(const ann_index *ix);
/* The number of out-edges of u: its region up to the first -1. */
static inline int ann_graph_degree(const ann_index *ix, int64_t u)
{
    const int32_t *l = ix->adj + ix->adj_off[u];
    int c = (int)(ix->adj_off[u + 1] - ix->adj_off[u]), i = 0;
    while (i < c && l[i] >= 0)
        i++;
    return i;
}

#endif /* LOUPE_ANN_IMPL_H */
