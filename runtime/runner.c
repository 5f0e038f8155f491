/*
 * The runner (rt_runner.h): one sequence on the CPU context or the CUDA engine, with full or
 * retrieval attention. Only dispatch and mode resolution live here; the work is in forward_cpu.c,
 * retrieval_cpu.c and runtime/cuda.
 *
 * Co-execution (CUDA backend, retrieval mode; rt_runner.h): the engine runs in its retrieval
 * layout. The context's prefill runs on it with query capture on, each layer's K/V landing in the
 * CPU context's cache (the host memory); the indexes are built; every later token is an engine
 * decode step whose host half is rt_retr_host_attend on that context. The CPU context never runs
 * the model then: it is the host KV, the query log and the n_past the retrieval state reads.
 */
#include "runtime/retrieval_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct rt_runner {
    const rt_model *m;
    rt_runner_params p;   /* backend and attention resolved */
    rt_ctx *ctx;          /* CPU backend */
    rt_cuda_engine *cuda; /* CUDA backend */
    rt_retr *retr;        /* retrieval modes (with cuda: co-execution) */
    bool coexec;          /* cuda && retr */
    rt_progress_fn progress; /* co-execution's prefill reports it per layer */
    void *progress_user;
};

const char *rt_backend_name(rt_backend b)
{
    static const char *const names[] = {"auto", "cpu", "cuda"};
    return (unsigned)b < 3 ? names[b] : "?";
}

const char *rt_attn_mode_name(rt_attn_mode m)
{
    static const char *const names[] = {"auto", "full", "retrieval", "flat", "ivf"};
    return (unsigned)m < 5 ? names[m] : "?";
}

void rt_runner_params_init(rt_runner_params *p)
{
    memset(p, 0, sizeof *p);
    p->backend = RT_BACKEND_AUTO;
    p->attention = RT_ATTN_AUTO;
    p->precision = RT_CUDA_BF16;
    p->retrieval.topk = 100;
    p->retrieval.sinks = 128;
    p->retrieval.window = 512;
    p->retrieval.static_max = 2048;
    p->retrieval.build_queries = 0; /* rt_retrieval_params.build_queries: by where it builds */
    /* One degree-16 graph per KV head: on the bundled model's vectors it finds as many of each
     * query head's top-100 at equal keys scanned as a graph per query head, for a quarter of
     * the graphs and 68 instead of ~350 bytes per key and KV group (docs/BENCHMARKS.md), which
     * is what lets the indexes of 1M tokens fit beside their K/V. */
    p->retrieval.index_per_kv = true;
    p->retrieval.search_group = 1; /* rt_runner.h says why */
    p->retrieval.degree = 16;
    p->retrieval.cpu_prune = false; /* rt_retrieval_params.cpu_prune */
    p->retrieval.host_kv = -1; /* f32 in the CPU context's cache; bf16 co-executed */
    p->retrieval.search_copy = 0; /* measured no faster at 128K (rt_retrieval_params) */
}

static loupe_status host_attn(void *user, uint32_t layer, uint32_t pos, const float *q,
                              const float *k, const float *v, float *out, float *lse,
                              loupe_err *err);

static bool is_retrieval(rt_attn_mode m)
{
    return m == RT_ATTN_RETRIEVAL || m == RT_ATTN_FLAT || m == RT_ATTN_IVF;
}

static void cuda_params(const rt_runner_params *p, rt_cuda_params *cp)
{
    rt_cuda_params_init(cp);
    cp->n_ctx = p->n_ctx;
    cp->n_batch = p->n_batch;
    cp->local_prefill = p->local_prefill;
    cp->gpu_mem = p->gpu_mem;
    cp->device = p->device;
    cp->precision = p->precision;
    if (is_retrieval(p->attention)) { /* the retrieval layout: the static set on the GPU */
        cp->sinks = p->retrieval.sinks;
        cp->window = p->retrieval.window;
        /* the tail grows to static_max + 1 before settle() moves it */
        cp->static_slots = p->retrieval.sinks + p->retrieval.static_max + 1;
    }
}

/* AUTO → a concrete backend and attention. */
static loupe_status resolve(const rt_model *m, rt_runner_params *p, loupe_err *err)
{
    bool cuda_ok = rt_cuda_available();
    if (p->backend == RT_BACKEND_CUDA && !cuda_ok) {
        loupe_err e;
        loupe_err_clear(&e);
        rt_cuda_device_info info;
        rt_cuda_device_info_get(p->device, &info, &e); /* says why: no build, no device */
        const char *why = loupe_err_message(&e);
        if (strstr(why, "built without CUDA"))
            return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "--backend cuda: %s", why);
        return loupe_fail(err, LOUPE_ERR_GPU, "--backend cuda: no CUDA device is usable (%s)",
                          why);
    }
    if (p->backend == RT_BACKEND_AUTO)
        p->backend = cuda_ok ? RT_BACKEND_CUDA : RT_BACKEND_CPU;
    if (p->local_prefill && p->backend != RT_BACKEND_CUDA)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "the local (timing-only) prefill exists on the CUDA backend only");
    if (p->attention == RT_ATTN_AUTO) {
        p->attention = RT_ATTN_FULL;
        if (p->backend == RT_BACKEND_CUDA) {
            rt_cuda_params cp;
            rt_cuda_mem_plan plan;
            rt_cuda_device_info info;
            cuda_params(p, &cp);
            uint64_t budget = p->gpu_mem;
            if (!budget && !rt_cuda_device_info_get(p->device, &info, NULL))
                budget = info.free_mem > (512ull << 20) ? info.free_mem - (512ull << 20) : 0;
            if (rt_cuda_plan(m, &cp, &plan, NULL) == LOUPE_OK && plan.total > budget)
                p->attention = RT_ATTN_RETRIEVAL; /* the whole KV does not fit */
        }
    }
    return LOUPE_OK;
}

loupe_status rt_runner_create(const rt_model *m, const rt_runner_params *params, rt_runner **out,
                              loupe_err *err)
{
    *out = NULL;
    rt_runner *r = calloc(1, sizeof *r);
    if (!r)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory");
    r->m = m;
    r->p = *params;
    loupe_status st = resolve(m, &r->p, err);
    if (!st && r->p.backend == RT_BACKEND_CUDA) {
        rt_cuda_params cp;
        cuda_params(&r->p, &cp);
        st = rt_cuda_engine_create(m, &cp, &r->cuda, err);
    }
    if (!st && (r->p.backend == RT_BACKEND_CPU || is_retrieval(r->p.attention))) {
        rt_ctx_params cp;
        rt_ctx_params_init(&cp);
        cp.n_ctx = r->p.n_ctx;
        cp.n_batch = r->p.n_batch;
        cp.n_threads = r->p.n_threads;
        /* co-executed, the context only counts positions: the K/V live on the GPU (static
         * set) and in the retrieval state's host K/V */
        cp.no_kv_cache = r->cuda != NULL;
        st = rt_ctx_create(m, &cp, &r->ctx, err);
        if (!st && is_retrieval(r->p.attention))
            st = rt_retr_create(r->ctx, r->p.attention, &r->p.retrieval, &r->retr, err);
    }
    if (!st && r->cuda && r->retr) {
        r->coexec = true;
        st = rt_cuda_set_host_attn(r->cuda, host_attn, r, err);
        const rt_host_kv *h = rt_retr_host_kv(r->retr);
        rt_cuda_host_kv hk = {h->type, h->k, h->v, h->k_scale, h->v_scale, h->n_ctx};
        if (!st)
            st = rt_cuda_set_host_kv(r->cuda, &hk, err);
    }
    if (st) {
        rt_runner_destroy(r);
        return st;
    }
    *out = r;
    return LOUPE_OK;
}

void rt_runner_destroy(rt_runner *r)
{
    if (!r)
        return;
    rt_retr_destroy(r->retr);
    rt_ctx_destroy(r->ctx);
    rt_cuda_engine_destroy(r->cuda);
    free(r);
}

rt_backend rt_runner_backend(const rt_runner *r) { return r->p.backend; }
rt_attn_mode rt_runner_attention(const rt_runner *r) { return r->p.attention; }

uint32_t rt_runner_n_ctx(const rt_runner *r)
{
    return r->ctx ? rt_ctx_n_ctx(r->ctx) : rt_cuda_engine_plan(r->cuda)->n_ctx;
}

uint32_t rt_runner_n_past(const rt_runner *r)
{
    return r->ctx ? rt_ctx_n_past(r->ctx) : rt_cuda_n_past(r->cuda);
}

void rt_runner_reset(rt_runner *r)
{
    if (r->cuda)
        rt_cuda_reset(r->cuda);
    if (r->retr)
        rt_retr_reset(r->retr);
    if (r->ctx)
        rt_ctx_reset(r->ctx);
}

void rt_runner_set_progress(rt_runner *r, rt_progress_fn fn, void *user)
{
    r->progress = fn;
    r->progress_user = user;
    if (r->ctx)
        rt_ctx_set_progress(r->ctx, fn, user);
}

static void capture_from_cuda(void *user, uint32_t layer, uint32_t pos0, uint32_t stride,
                              size_t n, const float *q)
{
    rt_retr_capture(user, layer, pos0, stride, n, q);
}

static loupe_status host_attn(void *user, uint32_t layer, uint32_t pos, const float *q,
                              const float *k, const float *v, float *out, float *lse,
                              loupe_err *err)
{
    rt_runner *r = user;
    return rt_retr_host_attend(r->retr, layer, pos, q, k, v, out, lse, err);
}

/* Index building behind the prefill: the engine reports each finished layer (its queries
 * captured, its K/V in the host cache); one builder thread builds the ready layers while the
 * GPU runs the later ones. LOUPE_BUILD_OVERLAP=0 leaves all building to seal(), after the
 * prefill (to measure what the overlap saves). */
typedef struct {
    rt_retr *retr;
    bool threaded;   /* a builder thread runs (else seal() builds everything) */
    rt_runner *runner;
    size_t n;        /* tokens of the prefill, for progress */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t ready;  /* layers [0, ready) can be built */
    bool closing;    /* no more layers will be reported */
    bool abandon;    /* the prefill failed: stop */
    loupe_status st; /* the builder's first failure */
    loupe_err err;
} layer_builder;

/* After each layer of the engine's prefill: hands the layer to the builder and reports progress
 * as the share of the layers done (in tokens; a cancel cannot stop the engine mid-prefill, so the
 * progress function's answer is ignored here). */
static void layer_ready(void *user, uint32_t layer)
{
    layer_builder *b = user;
    if (b->threaded) {
        pthread_mutex_lock(&b->mu);
        b->ready = layer + 1;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
    }
    rt_runner *r = b->runner;
    if (r->progress) {
        uint32_t n_layer = rt_model_hparams(r->m)->n_layer;
        (void)r->progress(r->progress_user, b->n * (layer + 1) / n_layer, b->n);
    }
}

/* Builds every layer reported ready and not built, all of them at once: when the building
 * falls behind the prefill, the next round takes several layers and more indexes build side by
 * side. */
static void *builder_main(void *arg)
{
    layer_builder *b = arg;
    for (uint32_t built = 0;;) {
        pthread_mutex_lock(&b->mu);
        while (built == b->ready && !b->closing && !b->abandon)
            pthread_cond_wait(&b->cv, &b->mu);
        bool stop = b->abandon || built == b->ready;
        uint32_t ready = b->ready;
        pthread_mutex_unlock(&b->mu);
        if (stop)
            return NULL;
        b->st = rt_retr_build_layers(b->retr, built, ready, &b->err);
        if (b->st)
            return NULL;
        built = ready;
    }
}

static bool build_overlap_enabled(void)
{
    const char *v = getenv("LOUPE_BUILD_OVERLAP");
    return !(v && !strcmp(v, "0"));
}

/* Co-execution, the context's prefill: on the engine, queries captured, each layer's K/V
 * written into the CPU context's cache by the engine, each finished layer's indexes built on a
 * builder thread meanwhile; the context then holds n tokens (seal() builds what is left). */
static loupe_status prefill_on_gpu(rt_runner *r, const int32_t *ids, size_t n, float *all_logits,
                                   loupe_err *err)
{
    rt_ctx *c = r->ctx;
    if (n > (size_t)(c->n_ctx - c->n_past))
        return loupe_fail(err, LOUPE_ERR_TOO_LONG,
                          "%zu tokens do not fit in the context of %u", n, c->n_ctx);
    rt_cuda_reset(r->cuda);
    layer_builder b;
    memset(&b, 0, sizeof b);
    b.retr = r->retr;
    b.runner = r;
    b.n = n;
    pthread_t th;
    bool overlap = build_overlap_enabled() && !pthread_mutex_init(&b.mu, NULL);
    if (overlap && pthread_cond_init(&b.cv, NULL)) {
        pthread_mutex_destroy(&b.mu);
        overlap = false;
    }
    if (overlap && pthread_create(&th, NULL, builder_main, &b)) {
        pthread_cond_destroy(&b.cv);
        pthread_mutex_destroy(&b.mu);
        overlap = false; /* no thread: seal() builds everything */
    }
    b.threaded = overlap;
    rt_cuda_set_layer_done(r->cuda, layer_ready, &b);
    uint32_t stride, from;
    rt_retr_capture_plan(r->retr, &stride, &from);
    loupe_status st = rt_cuda_set_q_capture(r->cuda, capture_from_cuda, r->retr, stride, err);
    rt_cuda_set_q_capture_from(r->cuda, from); /* copy only the rows the capture keeps */
    if (!st)
        st = rt_cuda_prefill(r->cuda, ids, n, all_logits, err);
    rt_cuda_set_q_capture(r->cuda, NULL, NULL, 1, NULL);
    rt_cuda_set_layer_done(r->cuda, NULL, NULL);
    if (overlap) {
        pthread_mutex_lock(&b.mu);
        b.closing = true;
        b.abandon = st != LOUPE_OK;
        pthread_cond_signal(&b.cv);
        pthread_mutex_unlock(&b.mu);
        pthread_join(th, NULL);
        pthread_cond_destroy(&b.cv);
        pthread_mutex_destroy(&b.mu);
        if (!st && b.st) {
            st = b.st;
            if (err)
                *err = b.err;
        }
    }
    if (!st)
        c->n_past = (uint32_t)n;
    return st;
}

/* Co-execution, one token after the context: the engine's decode step (its host half runs the
 * retrieval), then the context's bookkeeping and, when the static tail is full, the move of its
 * oldest tokens into the host set and out of the GPU's slots. */
static loupe_status coexec_token(rt_runner *r, int32_t id, loupe_err *err)
{
    loupe_status st = rt_cuda_decode(r->cuda, id, err);
    if (st)
        return st;
    r->ctx->n_past++;
    uint32_t before = rt_retr_host_end(r->retr);
    st = rt_retr_settle(r->retr, err);
    uint32_t moved = rt_retr_host_end(r->retr) - before;
    if (!st && moved)
        st = rt_cuda_static_drop(r->cuda, moved, err);
    return st;
}

static loupe_status coexec_extend(rt_runner *r, const int32_t *ids, size_t n, float *all_logits,
                                  loupe_err *err)
{
    const uint32_t V = rt_model_hparams(r->m)->n_vocab;
    if (n > (size_t)(r->ctx->n_ctx - r->ctx->n_past))
        return loupe_fail(err, LOUPE_ERR_TOO_LONG,
                          "%zu tokens do not fit in the context: %u of %u already used", n,
                          r->ctx->n_past, r->ctx->n_ctx);
    for (size_t i = 0; i < n; i++) {
        loupe_status st = coexec_token(r, ids[i], err);
        if (st)
            return st;
        if (all_logits) {
            const float *l = rt_cuda_logits(r->cuda, err);
            if (!l)
                return LOUPE_ERR_GPU;
            memcpy(all_logits + i * V, l, V * sizeof *l);
        }
    }
    return LOUPE_OK;
}

loupe_status rt_runner_prefill(rt_runner *r, const int32_t *ids, size_t n, float *all_logits,
                               loupe_err *err)
{
    if (r->cuda && !r->retr)
        return rt_cuda_prefill(r->cuda, ids, n, all_logits, err);
    if (!r->retr)
        return rt_ctx_prefill(r->ctx, ids, n, all_logits, err);
    if (rt_retr_sealed(r->retr) && r->coexec)
        return coexec_extend(r, ids, n, all_logits, err);
    if (rt_retr_sealed(r->retr)) {
        loupe_status st = rt_ctx_prefill(r->ctx, ids, n, all_logits, err);
        loupe_status st2 = rt_retr_settle(r->retr, st ? NULL : err);
        return st ? st : st2;
    }
    if (rt_ctx_n_past(r->ctx) != 0) /* a failed earlier prefill: its queries are gone */
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "the context's prefill did not complete; reset the runner first");
    rt_retr_begin(r->retr, n);
    loupe_status st = r->cuda ? prefill_on_gpu(r, ids, n, all_logits, err)
                              : rt_ctx_prefill(r->ctx, ids, n, all_logits, err);
    if (!st)
        st = rt_retr_seal(r->retr, err);
    if (st) { /* leave nothing half-built: an empty context */
        rt_retr_reset(r->retr);
        rt_ctx_reset(r->ctx);
        if (r->cuda)
            rt_cuda_reset(r->cuda);
    }
    return st;
}

loupe_status rt_runner_decode(rt_runner *r, int32_t id, loupe_err *err)
{
    if (r->cuda && !r->retr)
        return rt_cuda_decode(r->cuda, id, err);
    if (r->retr) /* the first token of a context is its prefill */
        return rt_runner_prefill(r, &id, 1, NULL, err);
    return rt_ctx_decode(r->ctx, id, err);
}

loupe_status rt_runner_set_search(rt_runner *r, int ef, int expand, int expand_batch, float margin,
                                  uint32_t search_group, uint32_t interleave, loupe_err *err)
{
    if (!r->retr)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "search settings need a retrieval mode (--attention retrieval, flat or "
                          "ivf); this runner attends fully");
    return rt_retr_set_search(r->retr, ef, expand, expand_batch, margin, search_group, interleave,
                              err);
}

const float *rt_runner_logits(rt_runner *r, loupe_err *err)
{
    return r->cuda ? rt_cuda_logits(r->cuda, err) : rt_ctx_logits(r->ctx);
}

void rt_runner_stats_get(const rt_runner *r, rt_runner_stats *out)
{
    memset(out, 0, sizeof *out);
    if (r->retr) {
        rt_retr_stats(r->retr, out);
    } else {
        out->n_static = rt_runner_n_past(r);
    }
    if (r->cuda) {
        rt_cuda_coexec_stats cx;
        rt_cuda_coexec_stats_get(r->cuda, &cx);
        out->coexec_tokens = cx.tokens;
        out->coexec_step_s = cx.step_s;
        out->coexec_gpu_wait_s = cx.gpu_wait_s;
        out->coexec_host_s = cx.host_s;
        out->coexec_tail_s = cx.merge_wait_s;
        out->gpu_bytes = rt_cuda_engine_plan(r->cuda)->total;
    }
    if (r->ctx) { /* the context's own cache (none co-executed) and the host set's rows */
        const rt_hparams *hp = rt_model_hparams(r->m);
        out->host_kv_bytes = r->ctx->k_cache ? 2ull * hp->n_layer * hp->n_head_kv *
                                                   r->ctx->n_ctx * hp->head_dim * sizeof(float)
                                             : 0;
        if (r->retr && rt_retr_host_kv(r->retr)->owned)
            out->host_kv_bytes += rt_host_kv_bytes(rt_retr_host_kv(r->retr));
    }
}
