/*
 * anns private header: the layouts behind the opaque handles of anns.h and small helpers shared
 * by the index files (top-k heap, timer, SIMD-friendly dot products).
 *
 * Invariants:
 *   - an ann_index never owns its keys; `keys` outlives it.
 *   - every array of an index is either in `owned` (built here, freed on destroy) or points into
 *     a mapping/buffer (`map_base` non-NULL when the mapping is ours to unmap).
 *   - graph: out-neighbours of key u are adj[adj_off[u] .. adj_off[u+1]), all in [0, n).
 *   - ivf: list l holds list_ids[list_off[l] .. list_off[l+1]); list_off[nlist] == n.
 */
#ifndef LOUPE_ANN_IMPL_H
#define LOUPE_ANN_IMPL_H

#include "anns/anns.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

struct ann_keys {
    ann_key_type type;
    int64_t n;
    int dim;
    int64_t stride;       /* elements between rows */
    const void *data;     /* (n, stride) of f32 / uint16 bf16 / int8 */
    const float *scales;  /* (n) int8 only */
    void *owned_data;     /* non-NULL when we allocated data (and scales) */
    float *owned_scales;
};

#define ANN_MAX_OWNED 8

struct ann_index {
    ann_type type;
    const ann_keys *keys;
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
    void *owned[ANN_MAX_OWNED];
    void *map_base;             /* munmap on destroy when non-NULL */
    size_t map_size;
};

/* Beam pool entry; `flag` marks a node already expanded. */
typedef struct {
    float s;
    int32_t id;
} ann_cand;

struct ann_search_ctx {
    int64_t max_keys;
    int max_beam;
    uint32_t *visited;       /* (max_keys) epoch of the search that last saw the key */
    uint32_t epoch;
    ann_cand *pool;          /* (max_beam + 1) sorted best first */
    uint8_t *expanded;       /* (max_beam + 1) parallel to pool */
    ann_cand *heap;          /* (max_beam + 1) min-heap scratch (flat, ivf) */
    float *scratch;          /* (max_keys) centroid scores, rerank */
    int32_t *nbuf;           /* (max_keys) unvisited neighbours of one expansion */
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

/* Min-heap of candidates on score: heap[0] is the worst kept. */
static inline void ann_heap_sift_down(ann_cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, m = i;
        if (l < n && h[l].s < h[m].s)
            m = l;
        if (l + 1 < n && h[l + 1].s < h[m].s)
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
            if (h[p].s <= h[i].s)
                break;
            ann_cand t = h[p];
            h[p] = h[i];
            h[i] = t;
            i = p;
        }
    } else if (s > h[0].s) {
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

float ann_dot_f32(const float *a, const float *b, int d);
float ann_dot_bf16(const float *q, const uint16_t *k, int d);
float ann_dot_i8(const float *q, const int8_t *k, int d);
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
    default:
        return k->scales[id] * ann_dot_i8(q, (const int8_t *)k->data + id * k->stride, k->dim);
    }
}

static inline void ann_prefetch_row(const ann_keys *k, int64_t id)
{
    const char *p = (const char *)ann_keys_rowptr(k, id);
    size_t esz = k->type == ANN_KEYS_F32 ? 4u : k->type == ANN_KEYS_BF16 ? 2u : 1u;
    size_t bytes = (size_t)k->dim * esz;
    for (size_t o = 0; o < bytes; o += 64)
        __builtin_prefetch(p + o, 0, 3);
}

/* ---- Per-type parts --------------------------------------------------------------------- */

loupe_status ann_ivf_build(ann_index *ix, const ann_build_opts *opts, loupe_err *err);
loupe_status ann_graph_build(ann_index *ix, const float *queries, int64_t nq,
                             const ann_build_opts *opts, loupe_err *err);
int ann_flat_search(const ann_index *ix, ann_search_ctx *ctx, const float *q, int k,
                    ann_cand *out);
int ann_ivf_search(const ann_index *ix, ann_search_ctx *ctx, const float *q, int k, int nprobe,
                   ann_cand *out);
/* Beam search over the graph with a pool of `ef` candidates, stopping once its best `expand`
 * (<= ef) are expanded; leaves the pool (best first) in ctx->pool and returns its size. */
int ann_graph_search_pool(const ann_index *ix, ann_search_ctx *ctx, const float *q, int ef,
                          int expand, const int32_t *seeds, int n_seeds);
/* Stores p in ix->owned so destroy frees it; returns 0, or -1 when the table is full. */
int ann_index_own(ann_index *ix, void *p);

#endif /* LOUPE_ANN_IMPL_H */
