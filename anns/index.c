/*
 * The one interface over every index type: build dispatch, destroy, search contexts, search and
 * batched search, and the flat (exact) index.
 *
 * Search contract: the pool/heap a search returns is scored with the stored keys only; an
 * optional f32 re-rank re-scores the final candidates (the graph's whole beam, the top-ef of flat
 * and IVF) and keeps the k best by f32 score. Nothing here allocates per search.
 */
#include "anns/ann_impl.h"

#include <stdbool.h>

#include <omp.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/mman.h>

/* ---- Names and options -------------------------------------------------------------------- */

static const char *const type_names[] = {"flat", "ivf", "graph", "keygraph"};

const char *ann_type_name(ann_type type)
{
    return (unsigned)type < 4 ? type_names[type] : "?";
}

loupe_status ann_type_parse(const char *name, ann_type *out, loupe_err *err)
{
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(name, type_names[i])) {
            *out = (ann_type)i;
            return LOUPE_OK;
        }
    return loupe_fail(err, LOUPE_ERR_INVALID,
                      "unknown index type '%s' (expected flat, ivf, graph or keygraph)", name);
}

void ann_build_opts_init(ann_build_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 0x5eed;
    o->kmeans_iters = 8;
    o->degree = 32;
    o->build_k = 64;
    o->prune = ANN_PRUNE_L2;
    o->prune_alpha = 1.0f;
    o->fill = 16;
    o->pivot_cap = 8;
    o->n_entry = 4;
    o->repair = 1;
}

/* ---- Index lifetime ------------------------------------------------------------------------ */

int ann_index_own(ann_index *ix, void *p)
{
    for (int i = 0; i < ANN_MAX_OWNED; i++)
        if (!ix->owned[i]) {
            ix->owned[i] = p;
            return 0;
        }
    return -1;
}

void ann_index_disown(ann_index *ix, const void *p)
{
    for (int i = 0; i < ANN_MAX_OWNED && p; i++)
        if (ix->owned[i] == p) {
            free(ix->owned[i]);
            ix->owned[i] = NULL;
        }
}

loupe_status ann_index_build(ann_type type, const ann_keys *keys, const float *build_queries,
                             int64_t nq, const ann_build_opts *opts, ann_index **out,
                             ann_build_stats *stats, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    ann_build_opts def;
    ann_index *ix = NULL;
    double t0 = ann_now();
    *out = NULL;
    if (!opts) {
        ann_build_opts_init(&def);
        opts = &def;
    }
    if ((unsigned)type > ANN_KEYGRAPH)
        return loupe_fail(err, LOUPE_ERR_INVALID, "unknown index type %d", (int)type);
    if (type == ANN_GRAPH && (!build_queries || nq <= 0))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "the attention-aware graph needs build queries (got %lld)",
                          (long long)nq);
    ix = calloc(1, sizeof *ix);
    if (!ix)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "no memory for an index");
    ix->type = type;
    ix->keys = keys;
    ix->n = keys->n;
    ix->dim = keys->dim;
    ann_graph_params_init(&ix->gp, opts);
    switch (type) {
    case ANN_FLAT: break;
    case ANN_IVF: rc = ann_ivf_build(ix, opts, err); break;
    case ANN_GRAPH: rc = ann_graph_build(ix, build_queries, nq, opts, err); break;
    case ANN_KEYGRAPH: rc = ann_graph_build(ix, NULL, 0, opts, err); break;
    }
    if (rc != LOUPE_OK)
        goto done;
    ix->stats.total_s = ann_now() - t0;
    if (stats)
        *stats = ix->stats;
    *out = ix;
    ix = NULL;
done:
    ann_index_destroy(ix);
    return rc;
}

void ann_index_destroy(ann_index *ix)
{
    if (!ix)
        return;
    ann_grow_free(ix);
    for (int i = 0; i < ANN_MAX_OWNED; i++)
        free(ix->owned[i]);
    if (ix->map_base)
        munmap(ix->map_base, ix->map_size);
    free(ix);
}

ann_type ann_index_type(const ann_index *ix) { return ix->type; }
const ann_keys *ann_index_keys(const ann_index *ix) { return ix->keys; }

loupe_status ann_index_set_search_keys(ann_index *ix, const ann_keys *search, loupe_err *err)
{
    if (search && (ix->type == ANN_FLAT || ix->type == ANN_IVF))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "search keys for a %s index: only graphs walk a search copy",
                          ann_type_name(ix->type));
    if (search && (search->dim != ix->dim || search->n < ix->n))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "search keys of %lld rows × %d for an index of %lld keys × %d",
                          (long long)search->n, search->dim, (long long)ix->n, ix->dim);
    ix->skeys = search;
    return LOUPE_OK;
}
const ann_build_stats *ann_index_build_stats(const ann_index *ix) { return &ix->stats; }

size_t ann_index_bytes(const ann_index *ix)
{
    size_t b = 0;
    if (ix->grow)
        return ann_grow_bytes(ix);
    if (ix->adj_off)
        b += (size_t)(ix->n + 1) * 4 + (size_t)ix->adj_off[ix->n] * 4 + (size_t)ix->n_entry * 4;
    if (ix->list_off)
        b += (size_t)ix->nlist * ((size_t)ix->dim * 4 + 4) + 4 + (size_t)ix->n * 4;
    return b;
}

/* ---- Search contexts ---------------------------------------------------------------------- */

loupe_status ann_search_ctx_create(int64_t max_keys, int max_beam, ann_search_ctx **out,
                                   loupe_err *err)
{
    *out = NULL;
    if (max_keys <= 0 || max_keys > INT32_MAX || max_beam <= 0 || max_beam > (1 << 20))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "search context: %lld keys and a beam of %d are out of range",
                          (long long)max_keys, max_beam);
    ann_search_ctx *c = calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->max_keys = max_keys;
    c->max_beam = max_beam;
    c->visited = calloc((size_t)max_keys, sizeof *c->visited);
    c->pool = malloc((size_t)(max_beam + 1) * sizeof *c->pool);
    c->expanded = malloc((size_t)(max_beam + 1));
    c->heap = malloc((size_t)(max_beam + 1) * sizeof *c->heap);
    c->aux = malloc((size_t)max_keys * sizeof *c->aux);
    c->nbuf = malloc((size_t)max_keys * sizeof *c->nbuf);
    c->cscore = malloc((size_t)max_keys * sizeof *c->cscore);
    c->gheap = malloc((size_t)ANN_GROUP_MAX * (size_t)(max_beam + 1) * sizeof *c->gheap);
    c->gexpanded = malloc((size_t)ANN_GROUP_MAX * (size_t)(max_beam + 1));
    c->xmark = calloc((size_t)max_keys, sizeof *c->xmark);
    if (!c->visited || !c->pool || !c->expanded || !c->heap || !c->aux || !c->nbuf ||
        !c->cscore || !c->gheap || !c->gexpanded || !c->xmark)
        goto nomem;
    *out = c;
    return LOUPE_OK;
nomem:
    ann_search_ctx_destroy(c);
    return loupe_fail(err, LOUPE_ERR_NOMEM, "no memory for a search context over %lld keys",
                      (long long)max_keys);
}

void ann_search_ctx_destroy(ann_search_ctx *c)
{
    if (!c)
        return;
    free(c->visited);
    free(c->pool);
    free(c->expanded);
    free(c->heap);
    free(c->aux);
    free(c->nbuf);
    free(c->cscore);
    free(c->gheap);
    free(c->gexpanded);
    free(c->xmark);
    free(c);
}

int64_t ann_search_ctx_scanned(const ann_search_ctx *c) { return c->scanned; }
void ann_search_ctx_reset_scanned(ann_search_ctx *c) { c->scanned = 0; }

/* ---- Flat ------------------------------------------------------------------------------------ */

int ann_flat_search(const ann_index *ix, ann_search_ctx *ctx, const float *q, int k,
                    ann_cand *out)
{
    const ann_keys *keys = ix->keys;
    int hn = 0;
    for (int64_t i = 0; i < ix->n; i++)
        ann_heap_push(out, &hn, k, ann_score(keys, q, i), (int32_t)i);
    ctx->scanned += ix->n;
    ann_heap_sort_desc(out, hn);
    return hn;
}

/* ---- Search dispatch ---------------------------------------------------------------------- */

/* Best first in ann_ranks_below's order (score, then the lower id). */
static int cmp_cand_desc(const void *a, const void *b)
{
    const ann_cand *x = a, *y = b;
    return ann_ranks_below(y->s, y->id, x->s, x->id) ? -1
         : ann_ranks_below(x->s, x->id, y->s, y->id) ? 1 : 0;
}

/* The beam a search keeps (ef, at least k), after checking p against what ctx was made for. */
static loupe_status check_params(const ann_index *ix, const ann_search_ctx *ctx,
                                 const ann_search_params *p, int *ef_out, loupe_err *err)
{
    int k = p->k, ef = p->ef > 0 ? p->ef : 2 * p->k;
    if (ef < k)
        ef = k;
    if (k <= 0 || ef > ctx->max_beam || ix->n > ctx->max_keys ||
        (ix->type == ANN_IVF && (p->nprobe <= 0 || p->nprobe > ctx->max_beam)))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "search: k %d, beam %d, nprobe %d over %lld keys exceed the context "
                          "(beam %d, %lld keys) or are not positive",
                          k, ef, p->nprobe, (long long)ix->n, ctx->max_beam,
                          (long long)ctx->max_keys);
    *ef_out = ef;
    return LOUPE_OK;
}

/* A graph search's walk for p with beam ef (check_params'). */
static ann_walk walk_of(const ann_search_params *p, int ef)
{
    return (ann_walk){.ef = ef, .expand = p->expand, .batch = p->expand_batch,
                      .margin = p->margin > 0 ? p->margin : 0, .seeds = p->seeds,
                      .n_seeds = p->n_seeds};
}

/* res (m) by score, best first, where it is nearly so already (insertion sort). */
static void sort_nearly_sorted(ann_cand *res, int m)
{
    for (int i = 1; i < m; i++) {
        ann_cand c = res[i];
        int j = i;
        for (; j > 0 && cmp_cand_desc(&res[j - 1], &c) > 0; j--)
            res[j] = res[j - 1];
        res[j] = c;
    }
}

/* Writes a query's m candidates res (best first by the search's score) as its result:
 * re-scored against p->rerank_keys and re-sorted first when given, or, where a graph searched a
 * copy of its keys (ix->skeys), against the keys as stored — the copy steered the walk; what a
 * search returns is chosen and scored by the keys (the rows are asked for together first: the
 * caller of a search usually reads the same rows next, the runtime's attention does) — then
 * the best k, padded. */
static void emit(const ann_index *ix, const ann_search_params *p, const float *q, ann_cand *res,
                 int m, int32_t *ids, float *scores, int *n_found)
{
    int k = p->k;
    if (p->rerank_keys) {
        for (int i = 0; i < m; i++)
            res[i].s = ann_dot_f32(q, p->rerank_keys + (int64_t)res[i].id * ix->dim, ix->dim);
        qsort(res, (size_t)m, sizeof *res, cmp_cand_desc);
    } else if (ix->skeys) { /* a graph's (ann_index_set_search_keys) */
        for (int i = 0; i < m; i++)
            ann_prefetch_row(ix->keys, res[i].id);
        for (int i = 0; i < m; i++)
            res[i].s = ann_score(ix->keys, q, res[i].id);
        sort_nearly_sorted(res, m);
    }
    if (m > k)
        m = k;
    for (int i = 0; i < k; i++) {
        ids[i] = i < m ? res[i].id : -1;
        scores[i] = i < m ? res[i].s : -INFINITY;
    }
    *n_found = m;
}

loupe_status ann_search(const ann_index *ix, ann_search_ctx *ctx, const float *q,
                        const ann_search_params *p, int32_t *ids, float *scores, int *n_found,
                        loupe_err *err)
{
    int ef = 0;
    loupe_status st = check_params(ix, ctx, p, &ef, err);
    if (st)
        return st;
    ann_cand *res = ctx->heap;
    int m = 0, kk = p->rerank_keys ? ef : p->k; /* a re-rank looks at a wider pool */
    switch (ix->type) {
    case ANN_FLAT: m = ann_flat_search(ix, ctx, q, kk, res); break;
    case ANN_IVF: m = ann_ivf_search(ix, ctx, q, kk, p->nprobe, res); break;
    default: {
        const ann_walk w = walk_of(p, ef);
        m = ann_graph_search_pool(ix, ctx, q, &w);
        res = ctx->pool;
        break;
    }
    }
    emit(ix, p, q, res, m, ids, scores, n_found);
    return LOUPE_OK;
}

loupe_status ann_search_group(const ann_index *ix, ann_search_ctx *ctx, const float *qs, int nq,
                              const ann_search_params *p, int32_t *ids, float *scores,
                              int *n_found, loupe_err *err)
{
    if (nq < 1 || nq > ANN_GROUP_MAX)
        return loupe_fail(err, LOUPE_ERR_INVALID, "group search of %d queries (1..%d)", nq,
                          ANN_GROUP_MAX);
    /* One query, or an index without a traversal to share: one search per query. */
    if (nq == 1 || ix->type == ANN_FLAT || ix->type == ANN_IVF) {
        for (int j = 0; j < nq; j++) {
            loupe_status st = ann_search(ix, ctx, qs + (int64_t)j * ix->dim, p,
                                         ids + (int64_t)j * p->k, scores + (int64_t)j * p->k,
                                         &n_found[j], err);
            if (st)
                return st;
        }
        return LOUPE_OK;
    }
    int ef = 0, hn[ANN_GROUP_MAX];
    loupe_status st = check_params(ix, ctx, p, &ef, err);
    if (st)
        return st;
    int kk = p->rerank_keys ? ef : p->k; /* a re-rank looks at a wider pool */
    const ann_walk w = walk_of(p, ef);
    ann_graph_search_group(ix, ctx, qs, nq, &w, kk, p->group_mode, hn);
    for (int j = 0; j < nq; j++) {
        ann_cand *h = ctx->gheap + (int64_t)j * (ctx->max_beam + 1);
        if (p->group_mode != ANN_GROUP_EACH) /* a heap; EACH leaves sorted pools */
            ann_heap_sort_desc(h, hn[j]);
        emit(ix, p, qs + (int64_t)j * ix->dim, h, hn[j], ids + (int64_t)j * p->k,
             scores + (int64_t)j * p->k, &n_found[j]);
    }
    return LOUPE_OK;
}

loupe_status ann_search_many(const ann_index *const *ix, ann_search_ctx *const *ctx,
                             const float *const *q, const ann_search_params *p, int n,
                             int32_t *ids, float *scores, int *n_found, loupe_err *err)
{
    if (n < 1 || n > ANN_INTERLEAVE_MAX)
        return loupe_fail(err, LOUPE_ERR_INVALID, "interleaved search of %d queries (1..%d)", n,
                          ANN_INTERLEAVE_MAX);
    const int k = p[0].k;
    bool walk = true; /* every search a plain graph walk */
    ann_walk w[ANN_INTERLEAVE_MAX];
    for (int j = 0; j < n; j++) {
        int ef = 0;
        if (p[j].k != k)
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "interleaved searches want %d and %d results: one k for all", k,
                              p[j].k);
        loupe_status st = check_params(ix[j], ctx[j], &p[j], &ef, err);
        if (st)
            return st;
        for (int i = 0; i < j; i++)
            if (ctx[i] == ctx[j])
                return loupe_fail(err, LOUPE_ERR_INVALID,
                                  "interleaved searches %d and %d share a search context", i, j);
        w[j] = walk_of(&p[j], ef);
        walk = walk && ix[j]->type != ANN_FLAT && ix[j]->type != ANN_IVF && !p[j].rerank_keys &&
               p[j].expand_batch <= 1;
    }
    if (!walk) {
        for (int j = 0; j < n; j++) {
            loupe_status st = ann_search(ix[j], ctx[j], q[j], &p[j], ids + (int64_t)j * k,
                                         scores + (int64_t)j * k, &n_found[j], err);
            if (st)
                return st;
        }
        return LOUPE_OK;
    }
    int m[ANN_INTERLEAVE_MAX];
    ann_graph_search_many(ix, ctx, q, w, n, m);
    for (int j = 0; j < n; j++)
        emit(ix[j], &p[j], q[j], ctx[j]->pool, m[j], ids + (int64_t)j * k,
             scores + (int64_t)j * k, &n_found[j]);
    return LOUPE_OK;
}

loupe_status ann_search_batch(const ann_index *ix, ann_search_ctx **ctxs, int n_ctx,
                              const float *queries, int64_t nq, const ann_search_params *p,
                              int32_t *ids, float *scores, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    if (n_ctx <= 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "batch search needs at least one context");
#pragma omp parallel num_threads(n_ctx)
    {
        ann_search_ctx *ctx = ctxs[omp_get_thread_num()];
        loupe_err e;
        loupe_err_clear(&e);
#pragma omp for schedule(dynamic, 16)
        for (int64_t i = 0; i < nq; i++) {
            int nf;
            loupe_status st = ann_search(ix, ctx, queries + i * ix->dim, p, ids + i * p->k,
                                         scores + i * p->k, &nf, &e);
            if (st != LOUPE_OK) {
#pragma omp critical(ann_batch_err)
                if (rc == LOUPE_OK) {
                    rc = st;
                    if (err)
                        *err = e;
                }
            }
        }
    }
    return rc;
}
