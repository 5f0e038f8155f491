/*
 * The CUDA forward pass: the same function as runtime/forward_cpu.c, on one stream.
 *
 *   decode (one token):  embed → per layer: rmsnorm + matvec q/k/v in one launch (+bias),
 *                        rope + store K/V in one launch, flash-decoding over the cache,
 *                        matvec o (+= x), rmsnorm + matvec gate/up + SwiGLU in one launch,
 *                        matvec down (+= x) → rmsnorm, matvec output. fp32 activations;
 *                        weights read once in their stored type (gate and up of different
 *                        types, as a Q4_K_M file may have, fall back to separate launches).
 *   prefill (n tokens):  segments of up to n_seg tokens; per segment, layer-major: for each
 *                        layer, dequantise its matrices once (unless usable in place), then run
 *                        the segment through it in chunks of n_batch with cuBLAS GEMMs (bf16 or
 *                        fp32 operands, fp32 accumulation), causal flash attention over the cache
 *                        written so far. The residual stream of the segment stays on the GPU.
 *                        The last token's logits use the decode path's fp32 matvec.
 *                        With query capture on, each chunk's captured post-RoPE queries go to
 *                        pinned host memory and the callback (overlapping the chunk's FFN).
 *
 *   decode graph:        the decode step reads its token and position from e->step (device),
 *                        written by one host copy per step, so the whole step is captured once
 *                        (second decode call) and replayed with cudaGraphLaunch; eager launches
 *                        of the same kernels when LOUPE_CUDA_GRAPHS=0 or the capture fails.
 *
 * Invariants: token checks happen before any work, so a failed call leaves n_past as it was
 * (except for a CUDA error, after which the engine's cache is undefined); nothing allocates
 * device memory after creation (the graph's own bookkeeping is the driver's); decode logits are
 * bit for bit the same with and without the graph.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/cuda/argmax.cuh"
#include "runtime/cuda/attn_merge.cuh"
#include "runtime/cuda/bias.cuh"
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/decode_graph.cuh"
#include "runtime/cuda/dequant.cuh"
#include "runtime/cuda/engine.cuh"
#include "runtime/cuda/flash_attn.cuh"
#include "runtime/cuda/flash_decode.cuh"
#include "runtime/cuda/gemm.cuh"
#include "runtime/cuda/kv_store.cuh"
#include "runtime/cuda/matvec.cuh"
#include "runtime/cuda/rmsnorm.cuh"
#include "runtime/cuda/static_set.cuh"
#include "runtime/cuda/swiglu.cuh"

namespace {

/* One layer's K or V cache: (n_head_kv, kv_slots, head_dim). */
void *cache_layer(const rt_cuda_engine *e, void *cache, uint32_t il)
{
    const rt_hparams *hp = &e->m->hp;
    const size_t per = (size_t)hp->n_head_kv * e->kv_slots * hp->head_dim * rt_cuda_act_bytes(e->act);
    return static_cast<uint8_t *>(cache) + (size_t)il * per;
}

/* Attention over layer il's cache; in the retrieval layout a prefill attends over the one-layer
 * buffer of positions, a decode step over the static slots. */
rt_cuda_attn_desc attn_desc(const rt_cuda_engine *e, uint32_t il, size_t q_ld, bool prefill)
{
    const rt_hparams *hp = &e->m->hp;
    const bool layer_buf = prefill && e->coexec;
    rt_cuda_attn_desc a;
    a.q = e->q;
    a.q_ld = q_ld;
    a.k = layer_buf ? e->k_layer : cache_layer(e, e->k_cache, il);
    a.v = layer_buf ? e->v_layer : cache_layer(e, e->v_cache, il);
    a.kv_type = e->act;
    a.n_ctx = layer_buf ? e->p.n_ctx : e->kv_slots;
    a.head_dim = hp->head_dim;
    a.n_head = hp->n_head;
    a.n_head_kv = hp->n_head_kv;
    a.scale = 1.0f / sqrtf((float)hp->head_dim);
    return a;
}

/* A prefill chunk's attention: over the cache up to its last token, or with local_prefill over
 * its own tokens alone (the cache seen from the chunk's first position: positions stay those
 * RoPE gave the rows). */
static loupe_status prefill_attn(const rt_cuda_engine *e, const rt_cuda_attn_desc *a, uint32_t B,
                                 uint32_t pos, cudaStream_t s)
{
    const size_t nq = (size_t)e->m->hp.n_head * e->m->hp.head_dim;
    if (!e->p.local_prefill)
        return rt_cuda_flash_attn(a, B, pos, e->act, e->att, nq, nullptr, s);
    rt_cuda_attn_desc l = *a;
    const size_t skip = (size_t)pos * a->head_dim * rt_cuda_act_bytes(e->act);
    l.k = static_cast<const uint8_t *>(a->k) + skip;
    l.v = static_cast<const uint8_t *>(a->v) + skip;
    /* n_ctx stays: it is also the stride between KV heads; rows past pos + B are never read */
    return rt_cuda_flash_attn(&l, B, 0, e->act, e->att, nq, nullptr, s);
}

loupe_status check_tokens(const rt_cuda_engine *e, const int32_t *ids, size_t n, loupe_err *err)
{
    if (n > (size_t)(e->p.n_ctx - e->n_past))
        return loupe_fail(err, LOUPE_ERR_TOO_LONG,
                          "%zu tokens do not fit in the context: %u of %u already used", n,
                          e->n_past, e->p.n_ctx);
    const uint32_t n_vocab = e->m->hp.n_vocab;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= n_vocab)
            return loupe_fail(err, LOUPE_ERR_RANGE,
                              "token id %d at position %zu is outside the vocabulary (0..%u)",
                              (int)ids[i], i, n_vocab - 1);
    return LOUPE_OK;
}

/* Threads `st` through a sequence of launches: `run(op, status)` records the first failure
 * with the op's name. */
struct step {
    loupe_err *err;
    loupe_status st = LOUPE_OK;

    bool operator()(const char *op, loupe_status s)
    {
        if (st == LOUPE_OK && s != LOUPE_OK)
            st = rt_cuda_op_fail(err, s, op);
        return st == LOUPE_OK;
    }
};

/* The last row of x → final norm → fp32 matvec with the output matrix → logits row 0: one
 * launch with the norm fused in when the row is 16-byte aligned (always in decode; a prefill's
 * last row is unless n_embd is odd-sized), else rmsnorm then matvec. */
bool last_logits(rt_cuda_engine *e, const float *x_row, step &ok)
{
    const rt_hparams *hp = &e->m->hp;
    const rt_cuda_mat &W = e->output;
    if ((uintptr_t)x_row % 16 == 0) {
        const rt_cuda_mv_out out = {W.data, e->logits, W.n_out};
        return ok("output matvec", rt_cuda_matvec_multi(W.type, W.pitch, W.n_in, &out, 1, x_row,
                                                        e->output_norm, hp->norm_eps,
                                                        e->stream));
    }
    float *xb = static_cast<float *>(e->xb);
    return ok("rmsnorm", rt_cuda_rmsnorm(x_row, hp->n_embd, e->output_norm, hp->n_embd, 1,
                                         hp->norm_eps, RT_CUDA_F32, xb, hp->n_embd, e->stream)) &&
           ok("output matvec", rt_cuda_matvec(W.type, W.data, W.pitch, W.n_out, W.n_in, xb,
                                              e->logits, false, e->stream));
}

/* ==== Decode =============================================================================== */

/* q, k and v of a layer from the residual x, with the attention RMSNorm fused in, in as few
 * launches as their stored types allow: one when the three share a type (a Q4_K_M file may
 * store v as Q6_K). */
bool qkv_matvec(rt_cuda_engine *e, const rt_cuda_layer *L, step &ok)
{
    const float eps = e->m->hp.norm_eps;
    const rt_cuda_mat *w[3] = {&L->wq, &L->wk, &L->wv};
    float *y[3] = {e->q, e->k, e->v};
    for (int i = 0; i < 3;) {
        rt_cuda_mv_out outs[3];
        uint32_t n = 0;
        int j = i;
        for (; j < 3 && w[j]->type == w[i]->type && w[j]->pitch == w[i]->pitch &&
               w[j]->n_in == w[i]->n_in;
             j++)
            outs[n++] = rt_cuda_mv_out{w[j]->data, y[j], w[j]->n_out};
        if (!ok("qkv matvec", rt_cuda_matvec_multi(w[i]->type, w[i]->pitch, w[i]->n_in, outs, n,
                                                   e->x, L->attn_norm, eps, e->stream)))
            return false;
        i = j;
    }
    return true;
}

/* silu(gate · n) · (up · n) into hg, n = the FFN RMSNorm of the residual x: one launch (norm
 * fused) when gate and up share a type, else rmsnorm, two mat-vecs and swiglu. */
bool ffn_gate_up(rt_cuda_engine *e, const rt_cuda_layer *L, float *hg, step &ok)
{
    const rt_cuda_mat &g = L->w_gate, &u = L->w_up;
    const rt_hparams *hp = &e->m->hp;
    cudaStream_t s = e->stream;
    float *xb = static_cast<float *>(e->xb);
    if (g.type == u.type && g.pitch == u.pitch && g.n_in == u.n_in)
        return ok("gate/up matvec",
                  rt_cuda_matvec_swiglu(g.type, g.data, u.data, g.pitch, g.n_out, g.n_in, e->x,
                                        L->ffn_norm, hp->norm_eps, hg, s));
    return ok("rmsnorm", rt_cuda_rmsnorm(e->x, hp->n_embd, L->ffn_norm, hp->n_embd, 1,
                                         hp->norm_eps, RT_CUDA_F32, xb, hp->n_embd, s)) &&
           ok("gate matvec",
              rt_cuda_matvec(g.type, g.data, g.pitch, g.n_out, g.n_in, xb, e->hb, false, s)) &&
           ok("up matvec",
              rt_cuda_matvec(u.type, u.data, u.pitch, u.n_out, u.n_in, xb, e->hb2, false, s)) &&
           ok("swiglu", rt_cuda_swiglu(e->hb, e->hb2, g.n_out, RT_CUDA_F32, hg, s));
}

double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool cuda_ok(step &ok, const char *op, cudaError_t ce)
{
    return ok(op, rt_cuda_status(ce));
}

/* Co-execution, first half (after RoPE): the token's q, k, v to pinned host memory, then an
 * event the host waits on while the GPU attends to the static set. */
bool coexec_send(rt_cuda_engine *e, step &ok)
{
    const rt_hparams *hp = &e->m->hp;
    const size_t nq = (size_t)hp->n_head * hp->head_dim, nkv = (size_t)hp->n_head_kv * hp->head_dim;
    cudaStream_t s = e->stream;
    return cuda_ok(ok, "q/k/v copy", cudaMemcpyAsync(e->qkv_host, e->q, nq * 4,
                                                     cudaMemcpyDeviceToHost, s)) &&
           cuda_ok(ok, "q/k/v copy", cudaMemcpyAsync(e->qkv_host + nq, e->k, nkv * 4,
                                                     cudaMemcpyDeviceToHost, s)) &&
           cuda_ok(ok, "q/k/v copy", cudaMemcpyAsync(e->qkv_host + nq + nkv, e->v, nkv * 4,
                                                     cudaMemcpyDeviceToHost, s)) &&
           cuda_ok(ok, "q/k/v event", cudaEventRecord(e->qkv_ready, s));
}

/* Co-execution, second half (the static partial is queued in att/lse): waits for q, k, v,
 * runs the host callback, sends its partial back and merges it into att/lse on the GPU. */
bool coexec_merge(rt_cuda_engine *e, uint32_t il, float *att, step &ok)
{
    const rt_hparams *hp = &e->m->hp;
    const size_t nq = (size_t)hp->n_head * hp->head_dim, nkv = (size_t)hp->n_head_kv * hp->head_dim;
    double t0 = now_s();
    if (!cuda_ok(ok, "q/k/v wait", cudaEventSynchronize(e->qkv_ready)))
        return false;
    double t1 = now_s();
    const float *qkv = e->qkv_host;
    loupe_status st = e->host_fn(e->host_user, il, e->step_host.pos, qkv, qkv + nq,
                                 qkv + nq + nkv, e->hpart_host, e->hpart_host + nq, ok.err);
    double t2 = now_s();
    e->cx.gpu_wait_s += t1 - t0;
    e->cx.host_s += t2 - t1;
    if (st) {
        if (ok.st == LOUPE_OK)
            ok.st = st; /* err already holds the callback's sentence */
        return false;
    }
    return cuda_ok(ok, "host partial copy",
                   cudaMemcpyAsync(e->hpart, e->hpart_host, (nq + hp->n_head) * 4,
                                   cudaMemcpyHostToDevice, e->stream)) &&
           ok("attention merge", rt_cuda_attn_merge(att, e->lse, e->hpart, e->hpart + nq,
                                                    hp->n_head, hp->head_dim, att, e->lse,
                                                    e->stream));
}

bool decode_layer(rt_cuda_engine *e, uint32_t il, step &ok)
{
    const rt_hparams *hp = &e->m->hp;
    const rt_cuda_layer *L = &e->layers[il];
    const uint32_t hd = hp->head_dim;
    const uint32_t nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
    cudaStream_t s = e->stream;
    float *att = static_cast<float *>(e->att), *hg = static_cast<float *>(e->hg);
    const rt_cuda_attn_desc a = attn_desc(e, il, nq, false);
    const uint32_t *pos = &e->step->pos, *n_keys = &e->step->n_keys, *slot = &e->step->slot;
    auto mv = [&](const rt_cuda_mat &w, const float *in, float *out, bool acc) {
        return rt_cuda_matvec(w.type, w.data, w.pitch, w.n_out, w.n_in, in, out, acc, s);
    };
    return qkv_matvec(e, L, ok) &&
           (!L->bq || (ok("bias", rt_cuda_add_bias(e->q, nq, L->bq, nq, 1, s)) &&
                       ok("bias", rt_cuda_add_bias(e->k, nkv, L->bk, nkv, 1, s)) &&
                       ok("bias", rt_cuda_add_bias(e->v, nkv, L->bv, nkv, 1, s)))) &&
           ok("rope + kv store",
              rt_cuda_rope_store_dev(&e->rd, pos, slot, e->q, hp->n_head, e->k, e->v,
                                     hp->n_head_kv, hd, a.n_ctx, e->act, const_cast<void *>(a.k),
                                     const_cast<void *>(a.v), s)) &&
           (!e->coexec || coexec_send(e, ok)) &&
           ok("flash decode", rt_cuda_flash_decode_dev(&a, n_keys, e->part, RT_CUDA_MAX_SPLITS,
                                                       att, e->lse, s)) &&
           (!e->coexec || coexec_merge(e, il, att, ok)) &&
           ok("o matvec", mv(L->wo, att, e->x, true)) && ffn_gate_up(e, L, hg, ok) &&
           ok("down matvec", mv(L->w_down, hg, e->x, true));
}

/* The whole decode step after the step copy: embedding of step->id, the layers, the logits.
 * Every launch reads the position from e->step, so this sequence can be captured once and
 * replayed at any position; run eagerly it is the fallback, with the very same kernels. */
bool decode_launches(rt_cuda_engine *e, step &ok)
{
    const rt_hparams *hp = &e->m->hp;
    bool good = ok("embedding", rt_cuda_dequant(e->tok_embd.type, e->tok_embd.data,
                                                e->tok_embd.pitch, &e->step->id, 1, hp->n_embd,
                                                RT_CUDA_F32, e->x, hp->n_embd, e->stream));
    for (uint32_t il = 0; good && il < hp->n_layer; il++)
        good = decode_layer(e, il, ok);
    return good && last_logits(e, e->x, ok);
}

/* Captures decode_launches into e->graph_exec. A failure of any kind (an op refused inside a
 * capture, instantiation) is not an error: the capture is ended, CUDA's error state cleared,
 * and the caller falls back to eager launches for good. */
bool capture_decode(rt_cuda_engine *e)
{
    loupe_err cap_err = {};
    step ok{&cap_err};
    if (cudaStreamBeginCapture(e->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    const bool good = decode_launches(e, ok);
    cudaGraph_t g = nullptr;
    const cudaError_t ce = cudaStreamEndCapture(e->stream, &g);
    cudaGraphExec_t x = nullptr;
    if (!good || ce != cudaSuccess || !g ||
        cudaGraphInstantiateWithFlags(&x, g, 0) != cudaSuccess) {
        if (g)
            cudaGraphDestroy(g);
        cudaGetLastError();
        return false;
    }
    e->graph = g;
    e->graph_exec = x;
    return true;
}

/* ==== Prefill ============================================================================== */

/* A matrix as a dense GEMM operand of the engine's act type: in place when its stored type is
 * that type, else dequantised into `dense` at element offset *off (advanced). */
struct dense_mat {
    const void *w;
    size_t ld;
};

bool densify(rt_cuda_engine *e, const rt_cuda_mat &m, size_t *off, dense_mat *out, step &ok)
{
    if (rt_cuda_direct(m.type, e->act)) {
        out->w = m.data;
        out->ld = m.pitch / rt_cuda_act_bytes(e->act);
        return true;
    }
    void *dst = static_cast<uint8_t *>(e->dense) + *off * rt_cuda_act_bytes(e->act);
    *off += (size_t)m.n_in * m.n_out;
    out->w = dst;
    out->ld = m.n_in;
    return ok("dequantise", rt_cuda_dequant(m.type, m.data, m.pitch, nullptr, m.n_out, m.n_in,
                                            e->act, dst, m.n_in, e->stream));
}

/* Query capture, first half: the chunk's captured rows (positions pos .. pos + B − 1 with
 * p % stride == 0 below q_from, then every one from q_from on) copied after RoPE from e->q (fp32
 * in both precisions: the GEMMs accumulate and write fp32) into the pinned staging buffer, then
 * the event recorded. cap->n[0] strided rows from cap->first[0], then cap->n[1] consecutive ones
 * from cap->first[1]; none when capture is off or the chunk holds none. */
struct q_cap {
    size_t n[2];
    uint32_t first[2];
};

bool q_capture_queue(rt_cuda_engine *e, uint32_t pos, uint32_t B, q_cap *cap, step &ok)
{
    *cap = q_cap{};
    if (!e->q_fn)
        return true;
    const size_t row_floats = (size_t)e->m->hp.n_head * e->m->hp.head_dim;
    const size_t row_bytes = row_floats * sizeof(float);
    const uint64_t end = (uint64_t)pos + B, from = e->q_from < end ? e->q_from : end;
    const uint64_t st = e->q_stride, f = ((uint64_t)pos + st - 1) / st * st;
    cudaError_t ce = cudaSuccess;
    if (f < from) { /* strided rows below q_from */
        const size_t rows = (size_t)((from - 1 - f) / st + 1);
        const float *src = e->q + (size_t)(f - pos) * row_floats;
        /* One row needs no pitch (a large stride's would exceed cudaMemcpy2D's limit); several
         * rows mean stride < B, so the source pitch stays within the q buffer. */
        ce = rows == 1 ? cudaMemcpyAsync(e->q_host, src, row_bytes, cudaMemcpyDeviceToHost,
                                         e->stream)
                       : cudaMemcpy2DAsync(e->q_host, row_bytes, src, (size_t)st * row_bytes,
                                           row_bytes, rows, cudaMemcpyDeviceToHost, e->stream);
        cap->n[0] = rows;
        cap->first[0] = (uint32_t)f;
    }
    const uint64_t t0 = from > pos ? from : pos;
    if (ce == cudaSuccess && t0 < end) { /* every row from q_from on */
        cap->n[1] = (size_t)(end - t0);
        cap->first[1] = (uint32_t)t0;
        ce = cudaMemcpyAsync(e->q_host + cap->n[0] * row_floats,
                             e->q + (size_t)(t0 - pos) * row_floats, cap->n[1] * row_bytes,
                             cudaMemcpyDeviceToHost, e->stream);
    }
    if (cap->n[0] + cap->n[1] == 0)
        return true;
    return ok("query capture copy", rt_cuda_status(ce)) &&
           ok("query capture event", rt_cuda_status(cudaEventRecord(e->q_ready, e->stream)));
}

/* Query capture, second half, after the rest of the chunk is queued: waits for the copy alone
 * (the GPU goes on with attention and the FFN meanwhile) and hands the rows to the callback,
 * which returns before the next chunk's copy can overwrite them. */
bool q_capture_deliver(rt_cuda_engine *e, uint32_t il, const q_cap &cap, step &ok)
{
    if (cap.n[0] + cap.n[1] == 0)
        return true;
    if (!ok("query capture wait", rt_cuda_status(cudaEventSynchronize(e->q_ready))))
        return false;
    const size_t row_floats = (size_t)e->m->hp.n_head * e->m->hp.head_dim;
    e->in_q_fn = true;
    if (cap.n[0])
        e->q_fn(e->q_user, il, cap.first[0], e->q_stride, cap.n[0], e->q_host);
    if (cap.n[1])
        e->q_fn(e->q_user, il, cap.first[1], 1, cap.n[1], e->q_host + cap.n[0] * row_floats);
    e->in_q_fn = false;
    return true;
}

/* Runs tokens [0, S) of the segment (positions pos0..) through layer il, chunk by chunk. */
bool prefill_layer(rt_cuda_engine *e, uint32_t il, uint32_t S, uint32_t pos0, step &ok)
{
    const rt_hparams *hp = &e->m->hp;
    const rt_cuda_layer *L = &e->layers[il];
    const uint32_t E = hp->n_embd, hd = hp->head_dim, F = hp->n_ff;
    const uint32_t nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
    const rt_cuda_dtype act = e->act;
    cudaStream_t s = e->stream;
    dense_mat wq, wk, wv, wo, wg, wu, wd;
    size_t off = 0;
    if (!densify(e, L->wq, &off, &wq, ok) || !densify(e, L->wk, &off, &wk, ok) ||
        !densify(e, L->wv, &off, &wv, ok) || !densify(e, L->wo, &off, &wo, ok) ||
        !densify(e, L->w_gate, &off, &wg, ok) || !densify(e, L->w_up, &off, &wu, ok) ||
        !densify(e, L->w_down, &off, &wd, ok))
        return false;
    const rt_cuda_attn_desc a = attn_desc(e, il, nq, true);
    auto gemm = [&](const dense_mat &w, const rt_cuda_mat &m, const void *x, size_t ld_x,
                    uint32_t B, float beta, float *out, size_t ld_out) {
        return rt_cuda_gemm(e->blas, act, w.w, w.ld, m.n_out, m.n_in, x, ld_x, B, beta, out,
                            ld_out, s);
    };
    for (uint32_t c0 = 0; c0 < S; c0 += e->p.n_batch) {
        const uint32_t B = S - c0 < e->p.n_batch ? S - c0 : e->p.n_batch;
        float *xr = e->x + (size_t)c0 * E;
        const uint32_t pos = pos0 + c0;
        q_cap cap;
        if (!(ok("rmsnorm", rt_cuda_rmsnorm(xr, E, L->attn_norm, E, B, hp->norm_eps, act, e->xb,
                                            E, s)) &&
              ok("q gemm", gemm(wq, L->wq, e->xb, E, B, 0.0f, e->q, nq)) &&
              ok("k gemm", gemm(wk, L->wk, e->xb, E, B, 0.0f, e->k, nkv)) &&
              ok("v gemm", gemm(wv, L->wv, e->xb, E, B, 0.0f, e->v, nkv)) &&
              (!L->bq || (ok("bias", rt_cuda_add_bias(e->q, nq, L->bq, nq, B, s)) &&
                          ok("bias", rt_cuda_add_bias(e->k, nkv, L->bk, nkv, B, s)) &&
                          ok("bias", rt_cuda_add_bias(e->v, nkv, L->bv, nkv, B, s)))) &&
              ok("rope",
                 rt_cuda_rope(&e->rd, pos, B, e->q, hp->n_head, e->k, hp->n_head_kv, hd, s)) &&
              q_capture_queue(e, pos, B, &cap, ok) &&
              ok("kv store", rt_cuda_kv_store(e->k, e->v, B, hp->n_head_kv, hd, pos, a.n_ctx,
                                              act, const_cast<void *>(a.k),
                                              const_cast<void *>(a.v), s)) &&
              ok("flash attention", prefill_attn(e, &a, B, pos, s)) &&
              ok("o gemm", gemm(wo, L->wo, e->att, nq, B, 1.0f, xr, E)) &&
              ok("rmsnorm", rt_cuda_rmsnorm(xr, E, L->ffn_norm, E, B, hp->norm_eps, act, e->xb,
                                            E, s)) &&
              ok("gate gemm", gemm(wg, L->w_gate, e->xb, E, B, 0.0f, e->hb, F)) &&
              ok("up gemm", gemm(wu, L->w_up, e->xb, E, B, 0.0f, e->hb2, F)) &&
              ok("swiglu", rt_cuda_swiglu(e->hb, e->hb2, (size_t)B * F, act, e->hg, s)) &&
              ok("down gemm", gemm(wd, L->w_down, e->hg, F, B, 1.0f, xr, E)) &&
              q_capture_deliver(e, il, cap, ok)))
            return false;
    }
    if (e->coexec) { /* the layer's K/V to the host, its static positions into the slots */
        const char *op = "K/V spill";
        loupe_status st = rt_cuda_layer_spill(e, il, pos0 + S, &op);
        if (!st)
            st = rt_cuda_static_fill(e, il, pos0 + S, &op);
        if (!ok(op, st))
            return false;
        if (e->layer_fn) { /* once the layer's rows are in host memory (pinned or not) */
            if (!cuda_ok(ok, "K/V spill", cudaStreamSynchronize(e->stream)))
                return false;
            e->layer_fn(e->layer_user, il);
        }
        return true;
    }
    return true;
}

/* Every position's logits of the segment (rows [0, S) of x) into host rows out (S, n_vocab):
 * final norm in act, then the output GEMM RT_CUDA_LOGIT_ROWS tokens at a time, the output
 * matrix dequantised in slabs of rows through `dense` when it is not usable in place. */
bool segment_logits(rt_cuda_engine *e, uint32_t S, float *out, step &ok)
{
    const rt_hparams *hp = &e->m->hp;
    const uint32_t E = hp->n_embd, V = hp->n_vocab;
    const rt_cuda_mat &W = e->output;
    const bool direct = rt_cuda_direct(W.type, e->act);
    const uint32_t slab = direct ? V : (uint32_t)(e->dense_elems / E);
    for (uint32_t t0 = 0; t0 < S; t0 += RT_CUDA_LOGIT_ROWS) {
        const uint32_t B = S - t0 < RT_CUDA_LOGIT_ROWS ? S - t0 : RT_CUDA_LOGIT_ROWS;
        if (!ok("rmsnorm", rt_cuda_rmsnorm(e->x + (size_t)t0 * E, E, e->output_norm, E, B,
                                           hp->norm_eps, e->act, e->xb, E, e->stream)))
            return false;
        for (uint32_t r0 = 0; r0 < V; r0 += slab) {
            const uint32_t R = V - r0 < slab ? V - r0 : slab;
            const void *w = W.data + (size_t)r0 * W.pitch;
            size_t ld = W.pitch / rt_cuda_act_bytes(e->act);
            if (!direct) {
                if (!ok("dequantise", rt_cuda_dequant(W.type, w, W.pitch, nullptr, R, E, e->act,
                                                      e->dense, E, e->stream)))
                    return false;
                w = e->dense;
                ld = E;
            }
            if (!ok("output gemm", rt_cuda_gemm(e->blas, e->act, w, ld, R, E, e->xb, E, B, 0.0f,
                                                e->logits + r0, V, e->stream)))
                return false;
        }
        if (!ok("logits copy",
                cudaMemcpyAsync(out + (size_t)t0 * V, e->logits, (size_t)B * V * sizeof(float),
                                cudaMemcpyDeviceToHost, e->stream) == cudaSuccess
                    ? LOUPE_OK
                    : LOUPE_ERR_GPU) ||
            !ok("synchronize",
                rt_cuda_status(cudaStreamSynchronize(e->stream))))
            return false;
    }
    return true;
}

loupe_status finish(rt_cuda_engine *e, step &ok)
{
    ok("synchronize", rt_cuda_status(cudaStreamSynchronize(e->stream)));
    if (ok.st == LOUPE_OK) {
        e->have_logits = true;
        e->logits_copied = false;
    }
    return ok.st;
}

} // namespace

/* ==== Public =============================================================================== */

extern "C" loupe_status rt_cuda_prefill(rt_cuda_engine *e, const int32_t *ids, size_t n,
                                        float *all_logits, loupe_err *err)
{
    loupe_status st = check_tokens(e, ids, n, err);
    if (st)
        return st;
    if (n == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "nothing to evaluate: no tokens given");
    const rt_hparams *hp = &e->m->hp;
    const uint32_t E = hp->n_embd;
    if (e->coexec) {
        /* One call from empty: each layer's buffer is reused by the next layer, so a second
         * call could not attend to the first one's keys. Later tokens go through decode. */
        if (e->n_past != 0)
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "the retrieval layout prefills only an empty context (%u tokens "
                              "are there); later tokens are decode steps",
                              e->n_past);
        if (n > e->p.n_seg)
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "the retrieval layout prefills in one segment of at most %u tokens",
                              e->p.n_seg);
        e->sinks_kept = e->p.sinks < n ? e->p.sinks : (uint32_t)n;
        e->host_end = n > e->p.window ? (uint32_t)n - e->p.window : 0;
        if (e->host_end < e->sinks_kept)
            e->host_end = e->sinks_kept;
        e->n_static = e->sinks_kept + ((uint32_t)n - e->host_end);
    }
    step ok{err};
    for (size_t done = 0; done < n;) {
        const uint32_t S = (uint32_t)(n - done < e->p.n_seg ? n - done : e->p.n_seg);
        if (!ok("ids copy", cudaMemcpyAsync(e->ids, ids + done, (size_t)S * sizeof(int32_t),
                                            cudaMemcpyHostToDevice, e->stream) == cudaSuccess
                                ? LOUPE_OK
                                : LOUPE_ERR_GPU) ||
            !ok("embedding", rt_cuda_dequant(e->tok_embd.type, e->tok_embd.data,
                                             e->tok_embd.pitch, e->ids, S, E, RT_CUDA_F32, e->x,
                                             E, e->stream)))
            break;
        bool good = true;
        for (uint32_t il = 0; good && il < hp->n_layer; il++)
            good = prefill_layer(e, il, S, e->n_past, ok);
        if (!good)
            break;
        if (all_logits && !segment_logits(e, S, all_logits + done * hp->n_vocab, ok))
            break;
        if (done + S == n && !last_logits(e, e->x + (size_t)(S - 1) * E, ok))
            break;
        /* The ids copy reads host memory asynchronously: finish before the next segment reuses
         * the device buffer (and before the caller may free `ids`). */
        if (!ok("synchronize",
                rt_cuda_status(cudaStreamSynchronize(e->stream))))
            break;
        e->n_past += S;
        done += S;
    }
    return finish(e, ok);
}

extern "C" loupe_status rt_cuda_decode(rt_cuda_engine *e, int32_t id, loupe_err *err)
{
    loupe_status st = check_tokens(e, &id, 1, err);
    if (st)
        return st;
    if (e->coexec) {
        if (!e->host_fn)
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "a retrieval-layout decode needs the host attention callback");
        if (e->n_past == 0)
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "the retrieval layout starts with the context's prefill");
        if (e->n_static >= e->kv_slots)
            return loupe_fail(err, LOUPE_ERR_TOO_LONG,
                              "the GPU's static set is full (%u slots): move its oldest tokens "
                              "to the host set first",
                              e->kv_slots);
    }
    step ok{err};
    const double t0 = e->coexec ? now_s() : 0;
    e->step_host.id = id;
    e->step_host.pos = e->n_past;
    e->step_host.slot = e->coexec ? e->n_static : e->n_past;
    e->step_host.n_keys = e->step_host.slot + 1;
    /* Ordered before the launches (or the graph) on the stream; the source lives in the engine
     * and finish() waits for it anyway. */
    if (!ok("step copy", cudaMemcpyAsync(e->step, &e->step_host, sizeof e->step_host,
                                         cudaMemcpyHostToDevice, e->stream) == cudaSuccess
                             ? LOUPE_OK
                             : LOUPE_ERR_GPU))
        return finish(e, ok);
    if (e->graph_state == RT_CUDA_GRAPH_WARM)
        e->graph_state = capture_decode(e) ? RT_CUDA_GRAPH_READY : RT_CUDA_GRAPH_OFF;
    if (e->graph_state == RT_CUDA_GRAPH_READY) {
        ok("decode graph launch",
           rt_cuda_status(cudaGraphLaunch(e->graph_exec, e->stream)));
    } else if (decode_launches(e, ok) && e->graph_state == RT_CUDA_GRAPH_UNTRIED) {
        /* The first eager step loaded and configured every kernel; capture on the next one. */
        const char *env = getenv("LOUPE_CUDA_GRAPHS");
        e->graph_state = env && !strcmp(env, "0") ? RT_CUDA_GRAPH_OFF : RT_CUDA_GRAPH_WARM;
    }
    const double t1 = e->coexec ? now_s() : 0;
    st = finish(e, ok);
    if (st == LOUPE_OK) {
        e->n_past++;
        if (e->coexec) {
            const double t2 = now_s();
            e->n_static++;
            e->cx.tokens++;
            e->cx.step_s += t2 - t0;
            e->cx.merge_wait_s += t2 - t1;
        }
    }
    return st;
}

extern "C" int rt_cuda_decode_graph_active(const rt_cuda_engine *e)
{
    return e->graph_state == RT_CUDA_GRAPH_READY;
}

extern "C" const float *rt_cuda_logits(rt_cuda_engine *e, loupe_err *err)
{
    if (!e->have_logits) {
        loupe_fail(err, LOUPE_ERR_INVALID, "no logits yet: nothing has been evaluated");
        return nullptr;
    }
    if (!e->logits_copied) {
        if (cudaMemcpy(e->logits_host, e->logits, (size_t)e->m->hp.n_vocab * sizeof(float),
                       cudaMemcpyDeviceToHost) != cudaSuccess) {
            rt_cuda_op_fail(err, LOUPE_ERR_GPU, "logits copy");
            return nullptr;
        }
        e->logits_copied = true;
    }
    return e->logits_host;
}

extern "C" loupe_status rt_cuda_greedy(rt_cuda_engine *e, int32_t *id, loupe_err *err)
{
    *id = -1;
    if (!e->have_logits)
        return loupe_fail(err, LOUPE_ERR_INVALID, "no logits yet: nothing has been evaluated");
    step ok{err};
    if (ok("argmax", rt_cuda_argmax(e->logits, e->m->hp.n_vocab, e->best, e->stream)) &&
        ok("argmax copy", cudaMemcpyAsync(id, e->best, sizeof *id, cudaMemcpyDeviceToHost,
                                          e->stream) == cudaSuccess
                              ? LOUPE_OK
                              : LOUPE_ERR_GPU))
        ok("synchronize",
           rt_cuda_status(cudaStreamSynchronize(e->stream)));
    return ok.st;
}
