/*
 * anns — vector indexes over one attention head's keys, and the status codes every loupe module
 * returns.
 *
 * The status enum and the error context live here, at the bottom of the dependency graph
 * (app → ui → sessions → runtime → anns), because every module returns them. Rules:
 *   - every fallible function returns a loupe_status (LOUPE_OK = 0) and, on failure, writes one
 *     human sentence into the caller's loupe_err with loupe_fail();
 *   - nothing below app/ prints, exits or aborts; the caller decides how to show the sentence;
 *   - values are never renumbered (they may be logged or stored).
 */
#ifndef LOUPE_ANNS_H
#define LOUPE_ANNS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Status codes ------------------------------------------------------------------------ */

/* X(name, value, message): the one table of statuses; loupe_status_str() reads the messages. */
#define LOUPE_STATUS_TABLE(X)                                                       \
    X(LOUPE_OK,              0,  "success")                                         \
    X(LOUPE_ERR_NOMEM,       1,  "out of memory")                                   \
    X(LOUPE_ERR_IO,          2,  "input/output error")                              \
    X(LOUPE_ERR_FORMAT,      3,  "malformed file")                                  \
    X(LOUPE_ERR_UNSUPPORTED, 4,  "not supported")                                   \
    X(LOUPE_ERR_INVALID,     5,  "invalid argument")                                \
    X(LOUPE_ERR_RANGE,       6,  "value out of range")                              \
    X(LOUPE_ERR_NOT_FOUND,   7,  "not found")                                       \
    X(LOUPE_ERR_NETWORK,     8,  "network error")                                   \
    X(LOUPE_ERR_TIMEOUT,     9,  "timed out")                                       \
    X(LOUPE_ERR_TOO_LONG,    10, "input longer than the context allows")            \
    X(LOUPE_ERR_GPU,         11, "GPU error")                                       \
    X(LOUPE_ERR_GPU_MEMORY,  12, "not enough GPU memory")                           \
    X(LOUPE_ERR_CANCELLED,   13, "cancelled")                                       \
    X(LOUPE_ERR_INTERNAL,    14, "internal error")

typedef enum {
#define LOUPE_STATUS_ENUM(name, value, msg) name = value,
    LOUPE_STATUS_TABLE(LOUPE_STATUS_ENUM)
#undef LOUPE_STATUS_ENUM
} loupe_status;

/* The fixed message of a status ("malformed file"); never NULL. */
const char *loupe_status_str(loupe_status st);

/* ---- Error context ----------------------------------------------------------------------- */

#define LOUPE_ERR_MSG_MAX 512

/* Caller-owned. Zero-initialise (or loupe_err_clear) before use; on failure `msg` holds the
 * sentence for the user, e.g. "model.gguf: tensor 'blk.0.attn_q.weight' ends past the end of the
 * file (offset 123 + 4096 bytes > 2048)". */
typedef struct {
    loupe_status status;
    char msg[LOUPE_ERR_MSG_MAX];
} loupe_err;

void loupe_err_clear(loupe_err *err);

/* Records `st` and a printf-formatted sentence in `err` (which may be NULL) and returns `st`, so a
 * failure reads `return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: bad magic", path);`. */
loupe_status loupe_fail(loupe_err *err, loupe_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the sentence already in `err` with printf-formatted context ("loading x.gguf: ..."). */
void loupe_err_prefix(loupe_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The sentence in `err`, or the status's fixed message when none was written. */
const char *loupe_err_message(const loupe_err *err);

/* ==== Vector indexes over one attention head's keys ======================================= *
 *
 * Metric: inner product (the attention score q·k); "top-k" means the k largest scores.
 *
 * Objects and who owns what:
 *   ann_keys        one head's keys in a storage type (f32, bf16, int8 + per-row scale); owns its
 *                   rows or views rows owned by the caller (e.g. the host KV cache).
 *   ann_index       a search structure (flat, IVF lists, graph) that REFERENCES an ann_keys and
 *                   never copies it: under GQA the indexes of a KV group's query heads all point at
 *                   that group's one ann_keys, which must outlive them.
 *   ann_search_ctx  one thread's scratch (visited epochs, beam pool); created once, reused for
 *                   every search with no allocation; one per thread, never shared concurrently.
 *
 * Exactness: every returned score is q·k computed in f32 from the STORED representation of k (bf16
 * widened exactly; int8 × scale). Scores are not approximations of the search, only of the storage.
 * With ann_search_params.rerank_keys (the original f32 keys) the final beam is re-scored against
 * those and the top-k returned by f32 score.
 */

/* ---- Key storage ------------------------------------------------------------------------ */

typedef enum {
    ANN_KEYS_F32 = 0,
    ANN_KEYS_BF16 = 1,  /* default: round-to-nearest-even, |error| <= 2^-9 |k_i| per element */
    ANN_KEYS_INT8 = 2,  /* k_i ~ scale_row * q_i, scale_row = max|k_row| / 127, |error| <= scale/2 */
    ANN_KEYS_INT8C = 3  /* k_i ~ scale_i * c_i, one scale per channel (max|k_i| over the rows /
                           127, |error| <= scale_i/2): a row is its int8 lanes alone, half a bf16
                           row's lines and no scale to fetch; the form of a search copy
                           (ann_keys_search_copy) */
} ann_key_type;

typedef struct ann_keys ann_keys;

/* Quantises `keys` (n, dim) row-major into a new ann_keys that owns its rows. Caller destroys. */
loupe_status ann_keys_create(const float *keys, int64_t n, int dim, ann_key_type type,
                             ann_keys **out, loupe_err *err);
/* A view over rows the caller owns and keeps alive: `data` is (n, row_stride) elements of `type`
 * (f32, bf16 as uint16, int8); `scales` (n) for int8, (dim) for int8c, else NULL. Nothing is
 * copied. */
loupe_status ann_keys_view(ann_key_type type, const void *data, const float *scales, int64_t n,
                           int dim, int64_t row_stride, ann_keys **out, loupe_err *err);
void ann_keys_destroy(ann_keys *keys);

int64_t ann_keys_count(const ann_keys *keys);
int ann_keys_dim(const ann_keys *keys);
ann_key_type ann_keys_type(const ann_keys *keys);
const char *ann_key_type_name(ann_key_type type); /* "f32", "bf16", "int8", "int8c" */
/* Bytes of one stored element (4, 2, 1). */
static inline size_t ann_key_type_bytes(ann_key_type type)
{
    return type == ANN_KEYS_F32 ? 4u : type == ANN_KEYS_BF16 ? 2u : 1u;
}
/* Asks for transparent huge pages over a large array (from 4 MiB; advice only: ignored where
 * the kernel has no THP). Key rows and graph lists are read at random, one TLB miss per row
 * on 4 KiB pages; the key copies and graph lists here are advised, and the runtime advises its
 * KV caches (a long context's first touch would otherwise fault every 4 KiB). Call before the
 * array is first written. */
void ann_advise_huge_pages(void *p, size_t bytes);
/* Zeroed memory for arrays of key or value rows, advised huge pages as above; NULL when out of
 * memory. Page-aligned, so a row of 64·j bytes at a multiple of its size fills exactly j cache
 * lines: at malloc's 16-byte offset every 256-byte bf16 row straddled five. Pages are committed
 * on first touch, as calloc's are. Free with ann_rows_free (NULL is accepted). */
void *ann_rows_alloc(size_t bytes);
void ann_rows_free(void *p);
/* Raw access for plug-ins (a GPU kNN): rows, row stride in elements, int8 scales or NULL. */
const void *ann_keys_data(const ann_keys *keys, int64_t *row_stride, const float **scales);
/* Bytes held by the key rows (+ scales). */
size_t ann_keys_bytes(const ann_keys *keys);
/* A copy of src's rows in int8c (ANN_KEYS_INT8C), its channel scales from those rows, with room
 * for `cap` rows (>= src's count; committed as they are written): what a graph can walk instead
 * of src where a search's time is the bytes of the rows it reads (ann_index_set_search_keys; on
 * the GPU machine's host at 128K it was not: docs/BENCHMARKS.md). Caller destroys. */
loupe_status ann_keys_search_copy(const ann_keys *src, int64_t cap, ann_keys **out,
                                  loupe_err *err);
/* Encodes src's rows from the copy's count up to src's count into the copy and sets its count to
 * src's; where a new row exceeds a channel's range, that channel's scale widens and every row is
 * encoded again (never saturated). src must have the copy's dimension and no more rows than its
 * room. */
loupe_status ann_keys_search_copy_sync(ann_keys *copy, const ann_keys *src, loupe_err *err);
/* q·k_id from the stored representation; q is (dim). */
float ann_keys_score(const ann_keys *keys, const float *q, int64_t id);
/* Widens row `id` to f32 into out (dim). */
void ann_keys_row(const ann_keys *keys, int64_t id, float *out);
/* One row (dim) of f32 into `type`'s stored form at dst (dim elements of f32, bf16 as uint16 or
 * int8): exactly what ann_keys_create stores; int8 also writes the row's scale (else `scale` is
 * unused and may be NULL). For storage that keys are viewed over later (a host KV cache). Not for
 * int8c, whose scales belong to all the rows (ann_keys_search_copy). */
void ann_keys_encode_row(ann_key_type type, const float *src, int dim, void *dst, float *scale);

/* ---- Exact query→key top-k (the build's kNN step; pluggable) ---------------------------- */

/* For each of nq queries (nq, dim) the k best keys by score, best first: ids (nq, k), scores
 * (nq, k) unless scores is NULL (the graph build needs only the ids; a GPU then downloads half
 * as much). When key_best_query (n_keys) is non-NULL it also receives, for every key, the query
 * giving it its highest score (-1 when nq = 0). Must not materialise an nq × n score matrix.
 * runtime/ may plug a GPU implementation into ann_build_opts.knn. */
typedef loupe_status (*ann_knn_fn)(void *user, const ann_keys *keys, const float *queries,
                                   int64_t nq, int k, int threads, int32_t *ids, float *scores,
                                   int32_t *key_best_query, loupe_err *err);

/* The CPU implementation: blocked (tiles of queries × keys in cache), OpenMP over query blocks,
 * a bounded heap per query. threads <= 0: OpenMP's default. */
loupe_status ann_knn_cpu(void *user, const ann_keys *keys, const float *queries, int64_t nq,
                         int k, int threads, int32_t *ids, float *scores, int32_t *key_best_query,
                         loupe_err *err);

/* ---- Index types, build --------------------------------------------------------------------- */

typedef enum {
    ANN_FLAT = 0,     /* exact scan of every key */
    ANN_IVF = 1,      /* k-means lists over keys, probe the nprobe best centroids */
    ANN_GRAPH = 2,    /* attention-aware graph built from queries' exact top-k (RoarGraph-style) */
    ANN_KEYGRAPH = 3  /* the same graph built from the keys themselves as queries: the baseline */
} ann_type;

const char *ann_type_name(ann_type type); /* "flat", "ivf", "graph", "keygraph" */
/* Parses a name above; returns LOUPE_ERR_INVALID with a sentence when unknown. */
loupe_status ann_type_parse(const char *name, ann_type *out, loupe_err *err);

typedef enum {
    ANN_PRUNE_L2 = 0, /* drop c if some kept r has |r-c| < |p-c| (RoarGraph/HNSW rule, keys' L2) */
    ANN_PRUNE_IP = 1  /* drop c if some kept r has r·c > p·c (the rule with inner products) */
} ann_prune_rule;

/* ---- Pruning many candidate lists at once (the graph build's projection; pluggable) -------- */

/* A batch of lists to prune, each for its owner key own[i]: candidates sorted by distance to the
 * owner (L2², or -q·k under ANN_PRUNE_IP; ties by id), then the greedy rule above keeps at most
 * `keep` of them, then the list is topped up to `fill` with the dropped ones in order. A list's
 * candidates are either explicit, cid[start[i] .. start[i] + len[i]) (distinct ids, never the
 * owner; cdist, when non-NULL, holds their distances to the owner beside cid), or, when `shared`
 * is non-NULL, the shared list shared[lst[i]·K .. +K) less -1 entries, repeats and the owner
 * itself (lists of one shared list are adjacent, so their pair distances can be computed once).
 * Owners are distinct. Results land at the owner's row: out[own·stride ..] (ids), outd (their
 * distances to the owner; may be NULL) and outn[own]; the rest of a row is left as it was. */
typedef struct {
    const ann_keys *keys;  /* the keys as stored (a GPU uploads these) */
    const float *F;        /* (n, dim) the same rows widened to f32 (ann_keys_row) */
    int64_t n;
    int dim;
    ann_prune_rule rule;
    float alpha;           /* the L2 rule's relaxation (1: none) */
    int keep, fill, stride;
    int nearest;           /* > 0: prune only each list's `nearest` candidates nearest its owner
                              (ann_build_opts.prune_nearest); 0: all */
    int64_t n_lists;
    const int32_t *own;    /* (n_lists) */
    const int64_t *start;  /* (n_lists) explicit lists */
    const int32_t *len;    /* (n_lists) */
    const int32_t *cid;
    const float *cdist;
    const int32_t *shared; /* (nq, K) shared lists, or NULL */
    int K;
    const int32_t *lst;    /* (n_lists) */
    int threads;           /* host threads (<= 0: OpenMP's default) */
    int32_t *out;          /* (n, stride) */
    float *outd;           /* (n, stride) or NULL */
    int *outn;             /* (n) */
} ann_prune_job;

typedef loupe_status (*ann_prune_fn)(void *user, const ann_prune_job *job, loupe_err *err);

/* The CPU implementation (the reference): OpenMP over lists; a shared list's pair distances are
 * cached per run of its lists. Bit-identical to pruning each list alone. */
loupe_status ann_prune_cpu(void *user, const ann_prune_job *job, loupe_err *err);

typedef struct {
    int threads;             /* OpenMP threads for the build, <= 0: default */
    uint64_t seed;           /* sampling and k-means seeds */
    /* IVF */
    int nlist;               /* lists; 0: 2·sqrt(n) */
    int kmeans_iters;        /* Lloyd iterations (8) */
    int64_t kmeans_sample;   /* keys sampled for training (0: min(n, 64·nlist)) */
    int kmeans_knn;          /* 1: the k-means assignments go through `knn` (below) as top-1
                                searches over the centroids (a GPU's, where the runtime plugs
                                one in); 0: on the build's threads */
    /* graph / keygraph */
    int degree;              /* M, the out-degree cap (32) */
    int build_k;             /* exact top-k per build query (64) */
    int64_t max_build_queries; /* queries sampled for the build, 0: all given */
    ann_prune_rule prune;    /* (ANN_PRUNE_L2) */
    float prune_alpha;       /* relaxation: drop c only if alpha·d(r,c) < d(p,c) (L2 only; 1.0) */
    int fill;                /* top up each list to this degree with pruned candidates (16) */
    int prune_nearest;       /* > 0: each list is cut to its N candidates nearest the owner
                                before the rule runs (0: all). With a large build_k the kept
                                edges are as good (the bundled model's 128K vectors: top-1024
                                lists cut to 128 stayed on the same recall curve) for a fraction
                                of the sorting and the greedy pass (docs/BENCHMARKS.md) */
    int pivot_cap;           /* lists one key may own as pivot before the query's next best key
                                takes over (hubs such as attention sinks); 0: no cap (8) */
    int n_entry;             /* entry points (4): the best key for the mean query + random pivots */
    int repair;              /* 1: make every key reachable from the entry points (1) */
    ann_knn_fn knn;          /* NULL: ann_knn_cpu */
    void *knn_user;
    ann_prune_fn prune_lists; /* NULL: ann_prune_cpu; one that answers LOUPE_ERR_UNSUPPORTED
                                 hands the batch to ann_prune_cpu */
    void *prune_user;
    /* graph: the exact top-keep_k keys of the build queries keep_row[0 .. n_keep) (rows of the
     * given queries), best first, copied out of the kNN step into kept (n_keep, keep_k); the
     * rest of a row -1 where the build's lists are shorter or the row was not sampled. A
     * decoder starts its first search from the last prompt position's lists, an exact answer
     * the build computed anyway. n_keep 0: nothing kept. */
    int n_keep, keep_k;
    const int64_t *keep_row;
    int32_t *kept;
} ann_build_opts;

void ann_build_opts_init(ann_build_opts *opts);

/* Build time split; first-class metric (the method's reviewers asked for it). */
typedef struct {
    double knn_s;            /* exact query→key top-k (graph), k-means (ivf) */
    double projection_s;     /* candidate lists, pruning, reverse edges */
    double repair_s;         /* entry points, reachability repair */
    double total_s;
    int64_t n_build_queries; /* queries actually used */
    int64_t n_untouched;     /* keys in no build query's top-k (linked via their best query) */
    int64_t n_repaired;      /* edges added by the repair */
    int64_t n_unreachable;   /* keys still unreachable from the entry points after the build */
    int64_t n_edges;
} ann_build_stats;

typedef struct ann_index ann_index;

/* Builds an index of `type` over `keys` (referenced, not copied; must outlive the index).
 * build_queries (nq, dim) are the prefill queries for ANN_GRAPH (ignored by the others; may be
 * NULL then). stats may be NULL. Caller destroys the index. */
loupe_status ann_index_build(ann_type type, const ann_keys *keys, const float *build_queries,
                             int64_t nq, const ann_build_opts *opts, ann_index **out,
                             ann_build_stats *stats, loupe_err *err);
void ann_index_destroy(ann_index *index);

ann_type ann_index_type(const ann_index *index);
const ann_keys *ann_index_keys(const ann_index *index);
/* Graph searches (graph, keygraph) walk by the scores of `search` (referenced; must outlive its
 * use) instead of the index's keys: a copy of the same rows in a narrower form
 * (ann_keys_search_copy), for when a search's time is the bytes of the rows it reads. The beam's
 * final candidates are then re-scored against the keys, and the top-k chosen and returned by
 * those scores (exact, as always; the rows of a beam of ef are read once more). It must hold as
 * many rows as the index (ann_index_add checks). NULL: back to the keys. Flat and IVF indexes,
 * which always score the keys, refuse one (LOUPE_ERR_INVALID). */
loupe_status ann_index_set_search_keys(ann_index *index, const ann_keys *search, loupe_err *err);
/* Bytes of the index's own arrays (not the keys): graph ids, offsets, lists, centroids; after
 * ann_index_reserve, at capacity and including growth's scratch. */
size_t ann_index_bytes(const ann_index *index);
const ann_build_stats *ann_index_build_stats(const ann_index *index);

/* ---- Search ------------------------------------------------------------------------------- */

typedef struct ann_search_ctx ann_search_ctx;

/* Scratch for searches over indexes of at most max_keys keys with beam/pool <= max_beam (also
 * bounds k and nprobe). Caller destroys. */
loupe_status ann_search_ctx_create(int64_t max_keys, int max_beam, ann_search_ctx **out,
                                   loupe_err *err);
void ann_search_ctx_destroy(ann_search_ctx *ctx);
/* Distance computations (key rows scored) since creation or the last reset: "keys scanned". */
int64_t ann_search_ctx_scanned(const ann_search_ctx *ctx);
void ann_search_ctx_reset_scanned(ann_search_ctx *ctx);

/* How a group search (ann_search_group) shares one traversal among its queries. On the bundled
 * model's vectors (4 query heads on one KV head) EACH gives every head a higher recall than its
 * own search at the same ef for 40-60% of the rows per head; SHARED_*, one pool of ef for the
 * whole group, starve the heads whose scores run lower (recall 0.2-0.4 for one head). */
typedef enum {
    ANN_GROUP_EACH = 0, /* each query its own pool of ef, the queries taking turns to expand; a
                           row is loaded and scored once for all, and a key expanded for one
                           query is not expanded again for another */
    ANN_GROUP_SHARED_MAX = 1, /* one shared pool of ef, ranked by the best of the queries'
                                 scores, and per query a bounded top-k of every key scored */
    ANN_GROUP_SHARED_MEAN = 2 /* the same ranked by their mean */
} ann_group_mode;

typedef struct {
    int k;                    /* results wanted */
    int ef;                   /* graph beam (pool size), >= k; 0: max(k, 2k) */
    int nprobe;               /* IVF: lists probed at least (more until k keys are found) */
    const int32_t *seeds;     /* extra start keys (e.g. the previous token's results), or NULL */
    int n_seeds;
    const float *rerank_keys; /* (n, dim) f32 keys to re-score the final pool with, or NULL */
    int expand;               /* graph: stop once the best `expand` pool entries are expanded
                                 (0: all ef). Below k it trades the tail of the top-k (keys of
                                 little attention weight) for fewer keys scanned; the pool still
                                 holds max(ef, k) */
    ann_group_mode group_mode; /* ann_search_group: how the queries share the traversal (0:
                                  each its own pool) */
    int expand_batch;         /* graph: pool entries expanded at a time (0 or 1: one, the
                                 classic order; at most ANN_BATCH_MAX). The next `batch` best
                                 unexpanded entries' neighbours are gathered and their rows
                                 fetched together before any is scored: more memory requests in
                                 flight for a slightly less greedy order. On the GPU machine's
                                 host it did not pay (±5% at 128K, docs/BENCHMARKS.md): a row
                                 costs ~100 ns whatever is in flight, so 1 stays the default */
    float margin;             /* graph: stop at the first unexpanded pool entry scoring below
                                 the pool's best by more than this (q·k units; 0: no such stop).
                                 Attention weights fall as exp(q·k / sqrt(dim)): with margin
                                 m·sqrt(dim) the entries left unexpanded weigh under e^-m of
                                 the best key each, so a head whose attention is peaked stops
                                 early and a diffuse one searches on */
} ann_search_params;

enum { ANN_BATCH_MAX = 8 };

/* Searches `index` for q (dim). Writes up to k results best first into ids (k) and scores (k)
 * and their count into *n_found (< k only when the index has fewer reachable keys). Allocates
 * nothing; fails (sentence) only on parameters beyond what ctx was created for. */
loupe_status ann_search(const ann_index *index, ann_search_ctx *ctx, const float *q,
                        const ann_search_params *params, int32_t *ids, float *scores,
                        int *n_found, loupe_err *err);

/* Queries a group search serves at once; every search context has scratch for this many. */
enum { ANN_GROUP_MAX = 8 };

/* Searches `index` for nq (1..ANN_GROUP_MAX) queries qs (nq, dim) that share it, e.g. the
 * query heads of one KV group over that group's index, with ONE traversal (params->group_mode
 * says how the queries share it): every key the traversal visits is loaded once and scored for
 * every query, and each query gets the k best of ALL keys scored for it. `ef` and `expand` are
 * per query for ANN_GROUP_EACH, of the one shared pool for ANN_GROUP_SHARED_*.
 * The memory cost of a search is its key rows, so "keys scanned" (ann_search_ctx_scanned)
 * counts each visited row ONCE per traversal, not once per query: a group's rows per query are
 * scanned / nq. params->seeds start the shared traversal (e.g. the union of the queries'
 * previous results; repeats are skipped). Flat and IVF indexes simply run ann_search per query
 * (their scans counted per query). nq == 1 is exactly ann_search. Writes ids (nq, k), scores
 * (nq, k) best first per query (slots past a query's n_found[j] hold -1 / -INFINITY) and
 * n_found (nq). Allocates nothing; fails (sentence) only on parameters beyond what ctx was
 * created for or nq out of range. */
loupe_status ann_search_group(const ann_index *index, ann_search_ctx *ctx, const float *qs,
                              int nq, const ann_search_params *params, int32_t *ids,
                              float *scores, int *n_found, loupe_err *err);

/* Searches that one thread runs at once, interleaved (ann_search_many). */
enum { ANN_INTERLEAVE_MAX = 4 };

/* n (1..ANN_INTERLEAVE_MAX) independent searches on one thread, interleaved: search j of
 * queries[j] (dim) over indexes[j] with params[j] (its own seeds), using ctxs[j] (distinct
 * contexts). Each gives exactly what ann_search would give it, and scans the same rows; graph
 * searches take turns a step at a time (score the rows fetched, pick the next entry and ask for
 * its list; then read the list and ask for its rows), so the memory latency of one search's
 * rows and lists overlaps the others' scoring: a graph search's cost is waiting for random key
 * rows, one search alone rarely has enough of them in flight. Other index types, a re-rank, or
 * expand_batch > 1 run one after another. params[j].k must all be equal (k); writes ids (n, k),
 * scores (n, k) and n_found (n) as ann_search does. Allocates nothing. On the development
 * machine it was no faster than one search at a time (docs/BENCHMARKS.md): there the loads of
 * random rows are limited by how many can be in flight, which interleaving does not raise. */
loupe_status ann_search_many(const ann_index *const *indexes, ann_search_ctx *const *ctxs,
                             const float *const *queries, const ann_search_params *params, int n,
                             int32_t *ids, float *scores, int *n_found, loupe_err *err);

/* Many queries (nq, dim) in parallel, OpenMP thread t using ctxs[t] (n_ctx of them; threads =
 * n_ctx). ids/scores (nq, k); slots past a query's n_found hold -1 / -INFINITY. */
loupe_status ann_search_batch(const ann_index *index, ann_search_ctx **ctxs, int n_ctx,
                              const float *queries, int64_t nq, const ann_search_params *params,
                              int32_t *ids, float *scores, loupe_err *err);

/* ---- Growth: keys appended after the build --------------------------------------------- *
 *
 * Retrieval attention moves the oldest tokens of its static set to host memory as a conversation
 * grows; their keys join the indexes without a rebuild. The key storage grows in place: a view
 * over caller rows with room for more (ann_keys_view + ann_keys_set_count), and the index is told
 * about the new rows with ann_index_add. Reserve first: adding never allocates. */

/* Changes the row count of a VIEW (ann_keys_view) to n; the caller guarantees rows 0..n-1 exist
 * and stay alive. Fails with LOUPE_ERR_INVALID for keys that own their rows. */
loupe_status ann_keys_set_count(ann_keys *keys, int64_t n, loupe_err *err);

/* Makes room in `index` for up to max_keys keys in total, allocating once; a mapped index is
 * copied into owned arrays. After this, ann_index_add does not allocate. */
loupe_status ann_index_reserve(ann_index *index, int64_t max_keys, loupe_err *err);

/* Adds the keys the index does not have yet — rows index_n .. ann_keys_count(keys)-1 of its keys
 * (the same ann_keys object, grown with ann_keys_set_count) — to the index. queries (nq, dim),
 * may be NULL with nq = 0: queries that attended to the new keys (the decode queries of the tokens
 * being moved); a graph links the new keys from them the way its build does, so queries like them
 * find the new keys later. IVF puts each new key in its nearest list; flat just counts them. `ctx`
 * is a search context created for at least the reserved key count and a beam of at least 64
 * (linking takes each query's top build_k). Fails with LOUPE_ERR_RANGE beyond the reserved
 * capacity. An index must not be searched while keys are added to it; different indexes, also
 * ones sharing an ann_keys, may be grown in parallel, each with its own ctx. */
loupe_status ann_index_add(ann_index *index, const float *queries, int64_t nq,
                           ann_search_ctx *ctx, loupe_err *err);
/* Keys the index holds (grows with ann_index_add). */
int64_t ann_index_count(const ann_index *index);

/* ---- Serialisation: versioned flat arrays, memory-mapped back ---------------------------- */

/* Writes the index's arrays with a magic, version, and a checksum to `path` (via path.tmp and a
 * rename). The keys are not written (they live in the session's KV). */
loupe_status ann_index_save(const ann_index *index, const char *path, loupe_err *err);
/* Maps `path` read-only and returns an index whose arrays point into the mapping (no rebuild),
 * over `keys` (whose count and dim must match). Every field is range-checked; a truncated or
 * corrupt file fails with a sentence naming the file and the problem. */
loupe_status ann_index_map(const char *path, const ann_keys *keys, ann_index **out,
                           loupe_err *err);
/* The same over a caller-owned buffer (e.g. a section of a mapped session) that must outlive the
 * index; `what` names it in error sentences. Size in bytes of ann_index_serialize's output: */
size_t ann_index_serialized_size(const ann_index *index);
loupe_status ann_index_serialize(const ann_index *index, void *buf, size_t size, loupe_err *err);
loupe_status ann_index_from_buffer(const void *buf, size_t size, const char *what,
                                   const ann_keys *keys, ann_index **out, loupe_err *err);

/* ---- Vector files: big-ann-benchmarks .fbin / .ibin (u32 n, u32 d, row-major data) -------- */

/* Reads a whole file into a new malloc'd array (caller frees) after checking that its size is
 * exactly 8 + n·d·4 and that n, d are sane (0 < d <= 65536, 0 < n < 2^31). */
loupe_status ann_fbin_read(const char *path, float **data, int64_t *n, int *d, loupe_err *err);
loupe_status ann_ibin_read(const char *path, int32_t **data, int64_t *n, int *d, loupe_err *err);
loupe_status ann_fbin_write(const char *path, const float *data, int64_t n, int d,
                            loupe_err *err);
loupe_status ann_ibin_write(const char *path, const int32_t *data, int64_t n, int d,
                            loupe_err *err);

/* ---- Synthetic attention-like data for tests and benchmarks ------------------------------- */

/* Out-of-distribution query/key sets shaped like one attention head's: hidden states with topic
 * structure → separate query and key projections (+ a large key bias and outlier channels) →
 * RoPE by position; a few "sink" keys that score high for every query. Keys and build queries
 * come from positions 0..n_keys-1 (prefill); test queries from later positions, each recalling
 * an earlier token's content (test_src_lo..test_src_hi) or a topic. */
typedef struct {
    int64_t n_keys;
    int64_t n_test;
    int dim;                  /* even */
    uint64_t seed;
    int rope;                 /* apply RoPE (1) */
    int64_t test_src_lo, test_src_hi; /* positions test queries recall; 0,0: all keys */
} ann_synth_opts;

/* Allocates keys (n_keys, dim), build_queries (n_keys, dim), test_queries (n_test, dim);
 * caller frees all three. */
loupe_status ann_synth_generate(const ann_synth_opts *opts, float **keys, float **build_queries,
                                float **test_queries, loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_ANNS_H */
