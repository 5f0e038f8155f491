/*
 * The CUDA engine's life cycle: device queries, the memory plan, the budget check with its
 * "what would fit" sentence, the one allocation, and the upload of the weights.
 *
 * Invariant: layout() is the single description of device memory. rt_cuda_plan() runs it with no
 * base pointer to count bytes; rt_cuda_engine_create() runs it again over the real allocation to
 * place every buffer. Nothing else allocates device memory (cuBLAS's workspace is carved too).
 *
 * Decision (issue 4): quantised weights are kept on the GPU in their stored type only; prefill
 * dequantises a layer's matrices to bf16 into one scratch buffer (`dense`, the largest layer's
 * matrices) once per layer per prefill call — layer-major prefill makes that once per call, not
 * once per chunk — rather than keeping a second, bf16 copy of the model, which would double the
 * weights' memory. BF16 weights with bf16 precision (and F32 with fp32) are used in place.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda/common.cuh"
#include "runtime/cuda/engine.cuh"
#include "runtime/cuda/flash_attn.cuh"
#include "runtime/cuda/flash_decode.cuh"
#include "runtime/cuda/repack.cuh"

static const size_t BLAS_WS_BYTES = 32u << 20;
static const uint64_t FREE_HEADROOM = 512ull << 20;

/* ==== Device queries ======================================================================= */

extern "C" bool rt_cuda_available(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* "no device" is not an error to keep around */
        return false;
    }
    return n > 0;
}

extern "C" loupe_status rt_cuda_device_info_get(int device, rt_cuda_device_info *out,
                                                loupe_err *err)
{
    memset(out, 0, sizeof *out);
    cudaDeviceProp prop;
    cudaError_t ce = cudaGetDeviceProperties(&prop, device);
    if (ce != cudaSuccess) {
        cudaGetLastError();
        return loupe_fail(err, LOUPE_ERR_GPU, "CUDA device %d cannot be queried: %s", device,
                          cudaGetErrorString(ce));
    }
    snprintf(out->name, sizeof out->name, "%.127s", prop.name);
    out->device = device;
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    out->n_sm = prop.multiProcessorCount;
    out->total_mem = prop.totalGlobalMem;
    int prev = 0;
    size_t free_b = 0, total_b = 0;
    if (cudaGetDevice(&prev) == cudaSuccess && cudaSetDevice(device) == cudaSuccess &&
        cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
        out->free_mem = free_b;
    cudaSetDevice(prev);
    cudaGetLastError();
    return LOUPE_OK;
}

extern "C" void rt_cuda_params_init(rt_cuda_params *p)
{
    memset(p, 0, sizeof *p);
    p->precision = RT_CUDA_BF16;
}

loupe_status rt_cuda_op_fail(loupe_err *err, loupe_status st, const char *op)
{
    cudaError_t ce = cudaGetLastError();
    if (st == LOUPE_ERR_GPU)
        return loupe_fail(err, st, "CUDA %s failed: %s", op,
                          ce != cudaSuccess ? cudaGetErrorString(ce) : "cuBLAS error");
    return loupe_fail(err, st, "CUDA %s: %s", op, loupe_status_str(st));
}

/* ==== Layout ================================================================================ */

namespace {

enum { CAT_WEIGHTS, CAT_KV, CAT_SCRATCH };

/* Hands out 256-byte-aligned pieces of the arena (or only counts them when base is NULL). */
struct carver {
    uint8_t *base;
    uint64_t off;
    uint64_t cat[3];

    void *take(uint64_t bytes, int category)
    {
        const uint64_t sz = (bytes + 255) / 256 * 256;
        void *p = base ? base + off : nullptr;
        off += sz;
        cat[category] += sz;
        return p;
    }
};

size_t pitch_of(const rt_mat *w) { return (w->row_bytes + 15) / 16 * 16; }

void place_mat(carver &c, const rt_mat *w, rt_cuda_mat *out)
{
    out->type = w->type;
    out->n_in = w->n_in;
    out->n_out = w->n_out;
    out->pitch = pitch_of(w);
    out->data = static_cast<const uint8_t *>(c.take((uint64_t)out->pitch * w->n_out, CAT_WEIGHTS));
}

float *place_vec(carver &c, const float *v, uint32_t n)
{
    return v ? static_cast<float *>(c.take((uint64_t)n * sizeof(float), CAT_WEIGHTS)) : nullptr;
}

/* Elements of a layer's matrices that prefill must dequantise for activations of type act. */
size_t layer_dense_elems(const rt_layer *L, rt_cuda_dtype act)
{
    const rt_mat *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    size_t n = 0;
    for (const rt_mat *w : mats)
        if (!rt_cuda_direct(w->type, act))
            n += (size_t)w->n_in * w->n_out;
    return n;
}

/* Places (or counts) every device buffer of an engine whose m, p and act are set. */
void layout(rt_cuda_engine *e, carver &c)
{
    const rt_model *m = e->m;
    const rt_hparams *hp = &m->hp;
    const uint64_t E = hp->n_embd, hd = hp->head_dim, F = hp->n_ff, V = hp->n_vocab;
    const uint64_t nq = (uint64_t)hp->n_head * hd, nkv = (uint64_t)hp->n_head_kv * hd;
    const uint64_t B = e->p.n_batch, S = e->p.n_seg;
    const uint64_t act_bytes = e->act == RT_CUDA_BF16 ? 2 : 4;

    place_mat(c, &m->tok_embd, &e->tok_embd);
    if (m->output.data == m->tok_embd.data)
        e->output = e->tok_embd;
    else
        place_mat(c, &m->output, &e->output);
    e->output_norm = place_vec(c, m->output_norm, hp->n_embd);
    size_t dense = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const rt_layer *L = &m->layers[il];
        rt_cuda_layer *D = &e->layers[il];
        D->attn_norm = place_vec(c, L->attn_norm, hp->n_embd);
        D->ffn_norm = place_vec(c, L->ffn_norm, hp->n_embd);
        D->bq = place_vec(c, L->bq, (uint32_t)nq);
        D->bk = place_vec(c, L->bk, (uint32_t)nkv);
        D->bv = place_vec(c, L->bv, (uint32_t)nkv);
        place_mat(c, &L->wq, &D->wq);
        place_mat(c, &L->wk, &D->wk);
        place_mat(c, &L->wv, &D->wv);
        place_mat(c, &L->wo, &D->wo);
        place_mat(c, &L->w_gate, &D->w_gate);
        place_mat(c, &L->w_up, &D->w_up);
        place_mat(c, &L->w_down, &D->w_down);
        size_t d = layer_dense_elems(L, e->act);
        dense = d > dense ? d : dense;
    }
    const uint32_t n_pairs = (hp->rope_dim ? hp->rope_dim : hp->head_dim) / 2;
    e->inv_freq = static_cast<double *>(c.take((uint64_t)(n_pairs ? n_pairs : 1) * 8, CAT_WEIGHTS));

    e->kv_slots = e->p.static_slots ? e->p.static_slots : e->p.n_ctx;
    const uint64_t kv = (uint64_t)hp->n_layer * hp->n_head_kv * e->kv_slots * hd * act_bytes;
    e->k_cache = c.take(kv, CAT_KV);
    e->v_cache = c.take(kv, CAT_KV);
    if (e->p.static_slots) { /* the retrieval layout's one-layer prefill K/V */
        const uint64_t one = (uint64_t)hp->n_head_kv * e->p.n_ctx * hd * act_bytes;
        e->k_layer = c.take(one, CAT_KV);
        e->v_layer = c.take(one, CAT_KV);
        e->hpart = static_cast<float *>(c.take((nq + hp->n_head) * 4, CAT_SCRATCH));
    }

    /* The all-logits output GEMM dequantises the output matrix in slabs through `dense`. */
    if (!rt_cuda_direct(m->output.type, e->act)) {
        const size_t slab = (size_t)(V < 1024 ? V : 1024) * E;
        dense = slab > dense ? slab : dense;
    }
    e->dense_elems = dense;
    e->dense = dense ? c.take(dense * act_bytes, CAT_SCRATCH) : nullptr;
    e->x = static_cast<float *>(c.take(S * E * 4, CAT_SCRATCH));
    e->xb = c.take(B * E * 4, CAT_SCRATCH);
    e->q = static_cast<float *>(c.take(B * nq * 4, CAT_SCRATCH));
    e->k = static_cast<float *>(c.take(B * nkv * 4, CAT_SCRATCH));
    e->v = static_cast<float *>(c.take(B * nkv * 4, CAT_SCRATCH));
    e->att = c.take(B * nq * 4, CAT_SCRATCH);
    e->hb = static_cast<float *>(c.take(B * F * 4, CAT_SCRATCH));
    e->hb2 = static_cast<float *>(c.take(B * F * 4, CAT_SCRATCH));
    e->hg = c.take(B * F * 4, CAT_SCRATCH);
    e->part = static_cast<float *>(c.take(
        rt_cuda_flash_decode_part_floats(hp->n_head, hp->head_dim, RT_CUDA_MAX_SPLITS) * 4,
        CAT_SCRATCH));
    e->lse = static_cast<float *>(c.take((uint64_t)hp->n_head * 4, CAT_SCRATCH));
    e->logits = static_cast<float *>(c.take((uint64_t)RT_CUDA_LOGIT_ROWS * V * 4, CAT_SCRATCH));
    e->ids = static_cast<int32_t *>(c.take(S * 4, CAT_SCRATCH));
    e->best = static_cast<int32_t *>(c.take(4, CAT_SCRATCH));
    e->step = static_cast<rt_cuda_decode_step *>(c.take(sizeof(rt_cuda_decode_step), CAT_SCRATCH));
    e->blas_ws_bytes = BLAS_WS_BYTES;
    e->blas_ws = c.take(BLAS_WS_BYTES, CAT_SCRATCH);
}

/* Resolves the parameters' defaults against the model (n_ctx, n_batch, n_seg). */
loupe_status resolve_params(const rt_model *m, const rt_cuda_params *in, rt_cuda_params *p,
                            loupe_err *err)
{
    const rt_hparams *hp = &m->hp;
    *p = *in;
    p->n_ctx = p->n_ctx ? p->n_ctx : hp->n_ctx_train;
    if (p->n_ctx == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "the model states no training context; give a context length");
    if (hp->n_ctx_train && p->n_ctx > hp->n_ctx_train && !p->beyond_train)
        return loupe_fail(err, LOUPE_ERR_TOO_LONG,
                          "a context of %u tokens is longer than the model's %u", p->n_ctx,
                          hp->n_ctx_train);
    if (p->precision != RT_CUDA_BF16 && p->precision != RT_CUDA_F32)
        return loupe_fail(err, LOUPE_ERR_INVALID, "unknown CUDA precision %d", (int)p->precision);
    if (p->static_slots) {
        /* The static set never holds more than the context: a short context needs no more. */
        if (p->static_slots > p->n_ctx)
            p->static_slots = p->n_ctx;
        if (p->static_slots < p->n_ctx && p->static_slots <= (uint64_t)p->sinks + p->window)
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "the GPU's static set of %u slots must exceed sinks + window (%u + "
                              "%u tokens)",
                              p->static_slots, p->sinks, p->window);
        if (p->n_seg && p->n_seg < p->n_ctx)
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "the retrieval layout prefills the context in one segment: n_seg "
                              "(%u) must cover n_ctx (%u)",
                              p->n_seg, p->n_ctx);
    }
    p->n_seg = p->n_seg && p->n_seg < p->n_ctx ? p->n_seg : p->n_ctx;
    p->n_batch = p->n_batch ? p->n_batch : 512;
    p->n_batch = p->n_batch < p->n_seg ? p->n_batch : p->n_seg;
    return LOUPE_OK;
}

loupe_status plan_for(const rt_model *m, const rt_cuda_params *p, rt_cuda_mem_plan *out,
                      loupe_err *err)
{
    memset(out, 0, sizeof *out);
    rt_cuda_engine tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.m = m;
    loupe_status st = resolve_params(m, p, &tmp.p, err);
    if (st)
        return st;
    tmp.act = tmp.p.precision;
    tmp.layers = static_cast<rt_cuda_layer *>(calloc(m->hp.n_layer, sizeof(rt_cuda_layer)));
    if (!tmp.layers)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory planning GPU memory");
    carver c = {};
    layout(&tmp, c);
    free(tmp.layers);
    out->weights = c.cat[CAT_WEIGHTS];
    out->kv = c.cat[CAT_KV];
    out->scratch = c.cat[CAT_SCRATCH];
    out->total = c.off;
    out->n_ctx = tmp.p.n_ctx;
    out->n_batch = tmp.p.n_batch;
    out->n_seg = tmp.p.n_seg;
    return LOUPE_OK;
}

double gib(uint64_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

/* The sentence for a plan that does not fit `budget` (of which `what` says where it comes from). */
loupe_status no_fit(const rt_model *m, const rt_cuda_params *p, const rt_cuda_mem_plan *plan,
                    uint64_t budget, const char *what, loupe_err *err)
{
    /* Longest context that fits, by bisection on the plan (it grows with n_ctx). */
    uint32_t lo = 0, hi = plan->n_ctx;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        rt_cuda_params q = *p;
        q.n_ctx = mid;
        rt_cuda_mem_plan pl;
        if (plan_for(m, &q, &pl, NULL) == LOUPE_OK && pl.total <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    char head[256];
    snprintf(head, sizeof head,
             "the model needs %.2f GiB of GPU memory for a %u-token context (weights %.2f GiB, "
             "KV cache %.2f GiB, scratch %.2f GiB) but %s is %.2f GiB",
             gib(plan->total), plan->n_ctx, gib(plan->weights), gib(plan->kv), gib(plan->scratch),
             what, gib(budget));
    if (lo > 0 && p->static_slots)
        return loupe_fail(err, LOUPE_ERR_GPU_MEMORY,
                          "%s: a context of up to %u tokens would fit (retrieval attention still "
                          "holds one layer's K/V and the residual stream of the whole context "
                          "during the prefill), or a quantised model",
                          head, lo);
    if (lo > 0)
        return loupe_fail(err, LOUPE_ERR_GPU_MEMORY,
                          "%s: a context of up to %u tokens would fit, or use --attention "
                          "retrieval to keep most of the KV cache in host memory%s",
                          head, lo,
                          p->precision == RT_CUDA_F32 ? ", or bf16 precision (half the KV cache)"
                                                      : "");
    const double n = (double)m->n_params;
    return loupe_fail(err, LOUPE_ERR_GPU_MEMORY,
                      "%s: no context fits; a quantised model might "
                      "(weights of about %.2f GiB as Q8_0, %.2f GiB as Q4_K), or a smaller one",
                      head, gib((uint64_t)(n * 34 / 32)), gib((uint64_t)(n * 144 / 256)));
}

/* In the GPU layout (repack.cuh: Q8_0 rows are repacked so the kernels read them aligned). */
loupe_status upload_mat(const rt_cuda_mat *d, const rt_mat *w)
{
    return rt_cuda_upload_rows(w->type, w->n_in, w->data, w->row_bytes, (void *)d->data, d->pitch,
                               w->n_out);
}

loupe_status upload_vec(float *d, const float *v, uint32_t n)
{
    if (!v)
        return LOUPE_OK;
    return cudaMemcpy(d, v, (size_t)n * 4, cudaMemcpyHostToDevice) == cudaSuccess ? LOUPE_OK
                                                                                  : LOUPE_ERR_GPU;
}

loupe_status upload_weights(rt_cuda_engine *e)
{
    const rt_model *m = e->m;
    const rt_hparams *hp = &m->hp;
    const uint32_t nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
    loupe_status st = upload_mat(&e->tok_embd, &m->tok_embd);
    if (!st && e->output.data != e->tok_embd.data)
        st = upload_mat(&e->output, &m->output);
    if (!st)
        st = upload_vec(e->output_norm, m->output_norm, hp->n_embd);
    for (uint32_t il = 0; !st && il < hp->n_layer; il++) {
        const rt_layer *L = &m->layers[il];
        const rt_cuda_layer *D = &e->layers[il];
        if ((st = upload_vec(D->attn_norm, L->attn_norm, hp->n_embd)) ||
            (st = upload_vec(D->ffn_norm, L->ffn_norm, hp->n_embd)) ||
            (st = upload_vec(D->bq, L->bq, nq)) || (st = upload_vec(D->bk, L->bk, nkv)) ||
            (st = upload_vec(D->bv, L->bv, nkv)) || (st = upload_mat(&D->wq, &L->wq)) ||
            (st = upload_mat(&D->wk, &L->wk)) || (st = upload_mat(&D->wv, &L->wv)) ||
            (st = upload_mat(&D->wo, &L->wo)) || (st = upload_mat(&D->w_gate, &L->w_gate)) ||
            (st = upload_mat(&D->w_up, &L->w_up)) || (st = upload_mat(&D->w_down, &L->w_down)))
            break;
    }
    if (!st && e->rope.n_pairs &&
        cudaMemcpy(e->inv_freq, e->rope.inv_freq, e->rope.n_pairs * sizeof(double),
                   cudaMemcpyHostToDevice) != cudaSuccess)
        st = LOUPE_ERR_GPU;
    return st;
}

} // namespace

/* ==== Public: plan, create, destroy ======================================================== */

extern "C" loupe_status rt_cuda_plan(const rt_model *m, const rt_cuda_params *p,
                                     rt_cuda_mem_plan *out, loupe_err *err)
{
    return plan_for(m, p, out, err);
}

extern "C" loupe_status rt_cuda_engine_create(const rt_model *m, const rt_cuda_params *p,
                                              rt_cuda_engine **out, loupe_err *err)
{
    *out = nullptr;
    const rt_hparams *hp = &m->hp;
    if (!rt_cuda_attn_head_dim_ok(hp->head_dim))
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "the CUDA backend has attention kernels for head dims 32, 64, 96, 128 "
                          "and 256; this model's is %u (use --backend cpu)",
                          hp->head_dim);
    rt_cuda_mem_plan plan;
    loupe_status st = plan_for(m, p, &plan, err);
    if (st)
        return st;
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        return loupe_fail(err, LOUPE_ERR_GPU, "no CUDA device is available");
    }
    if (p->device < 0 || p->device >= n_dev)
        return loupe_fail(err, LOUPE_ERR_INVALID, "CUDA device %d does not exist (%d found)",
                          p->device, n_dev);
    if (cudaSetDevice(p->device) != cudaSuccess)
        return rt_cuda_op_fail(err, LOUPE_ERR_GPU, "cudaSetDevice");
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
        return rt_cuda_op_fail(err, LOUPE_ERR_GPU, "cudaMemGetInfo");
    uint64_t avail = free_b > FREE_HEADROOM ? free_b - FREE_HEADROOM : 0;
    if (p->gpu_mem && plan.total > p->gpu_mem)
        return no_fit(m, p, &plan, p->gpu_mem, "the --gpu-mem budget", err);
    if (plan.total > avail)
        return no_fit(m, p, &plan, avail, "the GPU's free memory (less 512 MiB)", err);

    rt_cuda_engine *e = static_cast<rt_cuda_engine *>(calloc(1, sizeof *e));
    if (!e)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory creating a CUDA engine");
    e->m = m;
    e->plan = plan;
    e->device = p->device;
    if ((st = resolve_params(m, p, &e->p, err)))
        goto fail;
    e->act = e->p.precision;
    e->layers = static_cast<rt_cuda_layer *>(calloc(hp->n_layer, sizeof(rt_cuda_layer)));
    e->logits_host = static_cast<float *>(malloc((size_t)hp->n_vocab * sizeof(float)));
    if (!e->layers || !e->logits_host) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory creating a CUDA engine");
        goto fail;
    }
    if ((st = rt_rope_init(&e->rope, hp, m->rope_freqs, err)))
        goto fail;
    if (cudaMalloc(&e->arena, plan.total) != cudaSuccess) {
        cudaGetLastError();
        e->arena = nullptr;
        st = no_fit(m, p, &plan, free_b, "what cudaMalloc could get", err);
        goto fail;
    }
    {
        carver c = {};
        c.base = e->arena;
        layout(e, c);
        if (c.off != plan.total) {
            st = loupe_fail(err, LOUPE_ERR_INTERNAL, "CUDA engine layout changed after planning");
            goto fail;
        }
    }
    e->rd.inv_freq = e->inv_freq;
    e->rd.n_pairs = e->rope.n_pairs;
    e->rd.neox = e->rope.style == RT_ROPE_NEOX;
    e->rd.freq_scale = e->rope.freq_scale;
    e->rd.ext_factor = e->rope.ext_factor;
    e->rd.corr_lo = e->rope.corr_lo;
    e->rd.corr_hi = e->rope.corr_hi;
    e->rd.mscale = e->rope.mscale;
    if (cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking) != cudaSuccess) {
        st = rt_cuda_op_fail(err, LOUPE_ERR_GPU, "cudaStreamCreate");
        goto fail;
    }
    if (cublasCreate(&e->blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(e->blas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(e->blas, e->stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(e->blas, e->blas_ws, e->blas_ws_bytes) != CUBLAS_STATUS_SUCCESS) {
        st = rt_cuda_op_fail(err, LOUPE_ERR_GPU, "cuBLAS set-up");
        goto fail;
    }
    if ((st = upload_weights(e))) {
        st = rt_cuda_op_fail(err, st, "weight upload");
        goto fail;
    }
    if (e->p.static_slots) {
        /* Pinned, so the per-layer copies of the co-executed decode are real asynchronous DMA;
         * host memory outside the --gpu-mem plan, a few KiB. */
        const size_t nq = (size_t)hp->n_head * hp->head_dim, nkv = (size_t)hp->n_head_kv * hp->head_dim;
        e->coexec = true;
        e->graph_state = RT_CUDA_GRAPH_OFF; /* the host half sits between the launches */
        if (cudaMallocHost(&e->qkv_host, (nq + 2 * nkv) * sizeof(float)) != cudaSuccess ||
            cudaMallocHost(&e->hpart_host, (nq + hp->n_head) * sizeof(float)) != cudaSuccess ||
            cudaEventCreateWithFlags(&e->qkv_ready, cudaEventDisableTiming) != cudaSuccess) {
            st = rt_cuda_op_fail(err, LOUPE_ERR_GPU, "pinned buffers for the retrieval layout");
            goto fail;
        }
    }
    *out = e;
    return LOUPE_OK;
fail:
    rt_cuda_engine_destroy(e);
    return st;
}

extern "C" void rt_cuda_engine_destroy(rt_cuda_engine *e)
{
    if (!e)
        return;
    if (e->graph_exec)
        cudaGraphExecDestroy(e->graph_exec);
    if (e->graph)
        cudaGraphDestroy(e->graph);
    if (e->q_ready)
        cudaEventDestroy(e->q_ready);
    if (e->q_host)
        cudaFreeHost(e->q_host);
    if (e->qkv_ready)
        cudaEventDestroy(e->qkv_ready);
    if (e->qkv_host)
        cudaFreeHost(e->qkv_host);
    if (e->hpart_host)
        cudaFreeHost(e->hpart_host);
    if (e->blas)
        cublasDestroy(e->blas);
    if (e->stream)
        cudaStreamDestroy(e->stream);
    if (e->arena)
        cudaFree(e->arena);
    cudaGetLastError();
    rt_rope_free(&e->rope);
    free(e->layers);
    free(e->logits_host);
    free(e);
}

extern "C" const rt_cuda_mem_plan *rt_cuda_engine_plan(const rt_cuda_engine *e)
{
    return &e->plan;
}

extern "C" uint32_t rt_cuda_n_past(const rt_cuda_engine *e) { return e->n_past; }

extern "C" void rt_cuda_reset(rt_cuda_engine *e)
{
    e->n_past = 0;
    e->have_logits = false;
    e->logits_copied = false;
    e->n_static = e->sinks_kept = e->host_end = 0;
    memset(&e->cx, 0, sizeof e->cx);
}

/* ==== Public: query capture ================================================================ */

/* The staging buffer is pinned so the per-chunk copy is a real asynchronous DMA that the host
 * waits for with an event while the GPU runs the rest of the chunk (forward.cu). It is host
 * memory, outside the --gpu-mem plan, made once on the first set that turns capture on. The
 * callback runs mid-prefill and must not call the engine (rt_cuda_kv_read refuses). */
extern "C" loupe_status rt_cuda_set_q_capture(rt_cuda_engine *e, rt_cuda_q_fn fn, void *user,
                                              uint32_t stride, loupe_err *err)
{
    if (!fn) {
        e->q_fn = nullptr;
        e->q_user = nullptr;
        return LOUPE_OK;
    }
    if (stride == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "query capture needs a stride of at least 1");
    if (!e->q_host) {
        const rt_hparams *hp = &e->m->hp;
        const size_t bytes = (size_t)e->p.n_batch * hp->n_head * hp->head_dim * sizeof(float);
        void *h = nullptr;
        if (cudaMallocHost(&h, bytes) != cudaSuccess) {
            cudaGetLastError();
            return loupe_fail(err, LOUPE_ERR_NOMEM,
                              "cannot allocate %zu bytes of pinned host memory for query capture",
                              bytes);
        }
        if (cudaEventCreateWithFlags(&e->q_ready, cudaEventDisableTiming) != cudaSuccess) {
            cudaFreeHost(h);
            e->q_ready = nullptr;
            return rt_cuda_op_fail(err, LOUPE_ERR_GPU, "query capture event");
        }
        e->q_host = static_cast<float *>(h);
    }
    e->q_fn = fn;
    e->q_user = user;
    e->q_stride = stride;
    e->q_from = UINT32_MAX;
    return LOUPE_OK;
}

extern "C" void rt_cuda_set_q_capture_from(rt_cuda_engine *e, uint32_t from)
{
    e->q_from = from;
}
