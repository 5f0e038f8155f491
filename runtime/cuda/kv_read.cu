/*
 * rt_cuda_kv_read: cached keys and values of a layer, positions [p0, p1), to host memory as
 * float32 in the caller's (n_head_kv, ld, head_dim) layout.
 *
 * One head's rows [p0, p1) are contiguous in the cache and in the output, so each head is one
 * run of (p1 − p0) · head_dim elements. An fp32 cache is copied straight into the caller's
 * memory, one device→host copy per head. A bf16 cache is converted on the GPU (rt_cuda_kv_to_f32)
 * into a device staging buffer and copied from there: the staging buffer is BORROWED from the
 * engine's prefill scratch (the residual stream x or the FFN buffer hb, whichever is larger),
 * which holds nothing between evaluations (every prefill and decode step starts from the
 * embedding; the logits have their own buffer) — so reading K/V adds no device memory to the
 * --gpu-mem plan. Runs of several heads share one conversion when they fit the buffer; a head
 * longer than the buffer is converted and copied in pieces.
 *
 * Everything runs in order on the engine's stream (a conversion that reuses the staging buffer
 * starts after the copy out of it); the caller's memory is ordinary pageable host memory, and the
 * call ends with a stream sync. k_out or v_out may be NULL to read only the other.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/engine.cuh"
#include "runtime/cuda/kv_read.cuh"

namespace rtc {

template <typename KV>
__global__ void kv_to_f32_kernel(const KV *src, size_t head_pitch, size_t len, float *out)
{
    const KV *s = src + (size_t)blockIdx.y * head_pitch;
    float *o = out + (size_t)blockIdx.y * len;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < len;
         j += (size_t)gridDim.x * blockDim.x)
        o[j] = to_f32<KV>(s[j]);
}

/* A run of `len` elements (whole rows of hd) of each head, as bf16: exact for a bf16 cache
 * (a copy), round to nearest even from fp32 (anns' f32_to_bf16). out: (n_head, len). */
__global__ void kv_f32_to_bf16_kernel(const float *src, size_t head_pitch, size_t len,
                                      __nv_bfloat16 *out)
{
    const float *s = src + (size_t)blockIdx.y * head_pitch;
    __nv_bfloat16 *o = out + (size_t)blockIdx.y * len;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < len;
         j += (size_t)gridDim.x * blockDim.x)
        o[j] = __float2bfloat16_rn(s[j]);
}

/* The same run as int8 rows with a scale each, ann_keys_encode_row's formula bit for bit
 * (scale = max|x| / 127, code = round-half-even(x · 127 / max|x|)): a warp per row of hd.
 * codes: (n_head, len); scales: (n_head, len / hd). */
template <typename KV>
__global__ void kv_to_i8_kernel(const KV *src, size_t head_pitch, size_t len, uint32_t hd,
                                int8_t *codes, float *scales)
{
    const size_t rows = len / hd;
    const size_t row = (size_t)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const uint32_t lane = threadIdx.x % WARP;
    if (row >= rows)
        return;
    const KV *s = src + (size_t)blockIdx.y * head_pitch + row * hd;
    float amax = 0.0f;
    for (uint32_t i = lane; i < hd; i += WARP)
        amax = fmaxf(amax, fabsf(to_f32<KV>(s[i])));
    amax = warp_max(amax);
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int8_t *c = codes + (size_t)blockIdx.y * len + row * hd;
    for (uint32_t i = lane; i < hd; i += WARP) {
        const float v = rintf(to_f32<KV>(s[i]) * inv);
        c[i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
    if (lane == 0)
        scales[(size_t)blockIdx.y * rows + row] = amax / 127.0f;
}

} // namespace rtc

extern "C" loupe_status rt_cuda_kv_to_f32(const void *src, size_t head_pitch, uint32_t n_head,
                                          size_t len, rt_cuda_dtype kv_type, float *out,
                                          cudaStream_t stream)
{
    if (n_head == 0 || len == 0)
        return LOUPE_OK;
    if (n_head > 65535) /* grid.y */
        return LOUPE_ERR_UNSUPPORTED;
    const unsigned threads = 256;
    const unsigned bx = rtc::ceil_div(len, threads) < 1024 ? rtc::ceil_div(len, threads) : 1024;
    const dim3 grid(bx, n_head, 1);
    if (kv_type == RT_CUDA_BF16)
        rtc::kv_to_f32_kernel<<<grid, threads, 0, stream>>>(
            static_cast<const __nv_bfloat16 *>(src), head_pitch, len, out);
    else
        rtc::kv_to_f32_kernel<<<grid, threads, 0, stream>>>(static_cast<const float *>(src),
                                                            head_pitch, len, out);
    return rtc::launch_status();
}

namespace {

/* The borrowed device staging buffer (see the file comment) and its size in floats. Between
 * the layers of a retrieval-layout prefill the residual stream x is live: only hb is free. */
float *staging(const rt_cuda_engine *e, size_t *floats)
{
    const rt_hparams *hp = &e->m->hp;
    const size_t nx = (size_t)e->p.n_seg * hp->n_embd, nh = (size_t)e->p.n_batch * hp->n_ff;
    const bool use_x = !e->coexec && nx >= nh;
    *floats = use_x ? nx : nh;
    return use_x ? e->x : e->hb;
}

/* Heads [0, n_head_kv) of one cache layer (heads head_pitch elements apart), elements [e0, e0 +
 * L) of each head (hd-row-aligned run of the positions wanted), into out + h · out_pitch (host,
 * floats). */
loupe_status read_one(rt_cuda_engine *e, const void *layer_base, size_t head_pitch, size_t e0,
                      size_t L, float *out, size_t out_pitch, const char **op)
{
    const rt_hparams *hp = &e->m->hp;
    const uint32_t H = hp->n_head_kv;
    cudaStream_t s = e->stream;
    loupe_status st = LOUPE_OK;
    if (e->act == RT_CUDA_F32) {
        *op = "K/V copy";
        const float *base = static_cast<const float *>(layer_base) + e0;
        for (uint32_t h = 0; h < H && !st; h++)
            st = rt_cuda_status(cudaMemcpyAsync(out + h * out_pitch, base + h * head_pitch,
                                         L * sizeof(float), cudaMemcpyDeviceToHost, s));
        return st;
    }
    size_t cap = 0;
    float *buf = staging(e, &cap);
    const __nv_bfloat16 *base = static_cast<const __nv_bfloat16 *>(layer_base) + e0;
    /* Whole heads per conversion when they fit; else one head in pieces of `cap` elements. */
    const size_t per = L <= cap ? L : cap;
    const uint32_t heads = L <= cap ? (uint32_t)(cap / L < H ? cap / L : H) : 1;
    for (uint32_t h0 = 0; h0 < H && !st; h0 += heads) {
        const uint32_t nh = H - h0 < heads ? H - h0 : heads;
        for (size_t j0 = 0; j0 < L && !st; j0 += per) {
            const size_t len = L - j0 < per ? L - j0 : per;
            *op = "K/V conversion";
            st = rt_cuda_kv_to_f32(base + h0 * head_pitch + j0, head_pitch, nh, len,
                                   RT_CUDA_BF16, buf, s);
            *op = "K/V copy";
            for (uint32_t i = 0; i < nh && !st; i++)
                st = rt_cuda_status(cudaMemcpyAsync(out + (h0 + i) * out_pitch + j0, buf + i * len,
                                             len * sizeof(float), cudaMemcpyDeviceToHost, s));
        }
    }
    return st;
}

} // namespace

extern "C" loupe_status rt_cuda_kv_read(rt_cuda_engine *e, uint32_t layer, uint32_t p0,
                                        uint32_t p1, float *k_out, float *v_out, size_t ld,
                                        size_t off, loupe_err *err)
{
    const rt_hparams *hp = &e->m->hp;
    if (e->coexec)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "the retrieval layout keeps only the static set on the GPU; its "
                          "prefill writes every layer's K/V to the host (rt_cuda_set_host_kv)");
    if (e->in_q_fn) /* mid-prefill: the staging buffer is the live residual stream */
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "the K/V cannot be read from inside the query-capture callback");
    if (layer >= hp->n_layer)
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "cannot read the K/V of layer %u: the model has %u layers", layer,
                          hp->n_layer);
    if (p0 > p1 || p1 > e->n_past)
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "cannot read the K/V of positions [%u, %u): the cache holds %u", p0, p1,
                          e->n_past);
    const size_t n = p1 - p0;
    if (off > ld || n > ld - off)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%zu K/V rows from row %zu do not fit in %zu rows per head", n, off, ld);
    if (n == 0)
        return LOUPE_OK;
    const size_t hd = hp->head_dim;
    const size_t head_pitch = (size_t)e->kv_slots * hd;
    const size_t per_layer = (size_t)hp->n_head_kv * head_pitch * (e->act == RT_CUDA_BF16 ? 2 : 4);
    const char *op = "K/V read";
    loupe_status st = LOUPE_OK;
    if (k_out)
        st = read_one(e, static_cast<uint8_t *>(e->k_cache) + layer * per_layer, head_pitch,
                      p0 * hd, n * hd, k_out + off * hd, ld * hd, &op);
    if (!st && v_out)
        st = read_one(e, static_cast<uint8_t *>(e->v_cache) + layer * per_layer, head_pitch,
                      p0 * hd, n * hd, v_out + off * hd, ld * hd, &op);
    if (!st) {
        op = "synchronize";
        st = rt_cuda_status(cudaStreamSynchronize(e->stream));
    }
    return st ? rt_cuda_op_fail(err, st, op) : LOUPE_OK;
}

/* ==== The retrieval layout's spill ======================================================== */

namespace {

/* bf16 rows of heads [0, n_head_kv) of one layer buffer (elements [0, L) of each head) into the
 * host at out + h · out_pitch (elements): a bf16 engine copies its rows as they are, an fp32 one
 * converts them in the staging buffer first. */
loupe_status spill_bf16(rt_cuda_engine *e, const void *layer_base, size_t head_pitch, size_t L,
                        uint16_t *out, size_t out_pitch, const char **op)
{
    const uint32_t H = e->m->hp.n_head_kv;
    cudaStream_t s = e->stream;
    loupe_status st = LOUPE_OK;
    *op = "K/V copy";
    if (e->act == RT_CUDA_BF16) {
        const uint16_t *base = static_cast<const uint16_t *>(layer_base);
        for (uint32_t h = 0; h < H && !st; h++)
            st = rt_cuda_status(cudaMemcpyAsync(out + h * out_pitch, base + h * head_pitch,
                                                L * 2, cudaMemcpyDeviceToHost, s));
        return st;
    }
    size_t cap = 0;
    __nv_bfloat16 *buf = reinterpret_cast<__nv_bfloat16 *>(staging(e, &cap));
    cap *= 2; /* bf16 elements in the float buffer */
    const float *base = static_cast<const float *>(layer_base);
    for (uint32_t h = 0; h < H && !st; h++)
        for (size_t j0 = 0; j0 < L && !st; j0 += cap) {
            const size_t len = L - j0 < cap ? L - j0 : cap;
            const unsigned bx = rtc::ceil_div(len, 256) < 1024 ? rtc::ceil_div(len, 256) : 1024;
            *op = "K/V conversion";
            rtc::kv_f32_to_bf16_kernel<<<dim3(bx, 1, 1), 256, 0, s>>>(base + h * head_pitch + j0,
                                                                      head_pitch, len, buf);
            st = rtc::launch_status();
            *op = "K/V copy";
            if (!st)
                st = rt_cuda_status(cudaMemcpyAsync(out + h * out_pitch + j0, buf, len * 2,
                                                    cudaMemcpyDeviceToHost, s));
        }
    return st;
}

/* int8 rows and their scales, the same heads and elements: quantised in the staging buffer
 * (codes, then scales), in pieces of whole rows that fit it. */
loupe_status spill_i8(rt_cuda_engine *e, const void *layer_base, size_t head_pitch, size_t L,
                      int8_t *out, size_t out_pitch, float *scale, size_t scale_pitch,
                      const char **op)
{
    const uint32_t H = e->m->hp.n_head_kv, hd = e->m->hp.head_dim;
    cudaStream_t s = e->stream;
    size_t cap = 0;
    float *buf = staging(e, &cap);
    /* rows per piece: hd code bytes + one float each, within cap floats */
    const size_t rows_cap = cap * 4 / (hd + 4), per = rows_cap * hd;
    if (rows_cap == 0)
        return LOUPE_ERR_INTERNAL;
    loupe_status st = LOUPE_OK;
    for (uint32_t h = 0; h < H && !st; h++)
        for (size_t j0 = 0; j0 < L && !st; j0 += per) {
            const size_t len = L - j0 < per ? L - j0 : per, rows = len / hd;
            int8_t *codes = reinterpret_cast<int8_t *>(buf);
            float *sc = buf + (rows * hd + 3) / 4;
            const unsigned bx = rtc::ceil_div(rows, 256 / rtc::WARP);
            *op = "K/V quantisation";
            if (e->act == RT_CUDA_BF16)
                rtc::kv_to_i8_kernel<<<dim3(bx, 1, 1), 256, 0, s>>>(
                    static_cast<const __nv_bfloat16 *>(layer_base) + h * head_pitch + j0,
                    head_pitch, len, hd, codes, sc);
            else
                rtc::kv_to_i8_kernel<<<dim3(bx, 1, 1), 256, 0, s>>>(
                    static_cast<const float *>(layer_base) + h * head_pitch + j0, head_pitch,
                    len, hd, codes, sc);
            st = rtc::launch_status();
            *op = "K/V copy";
            if (!st)
                st = rt_cuda_status(cudaMemcpyAsync(out + h * out_pitch + j0, codes, len,
                                                    cudaMemcpyDeviceToHost, s));
            if (!st)
                st = rt_cuda_status(cudaMemcpyAsync(scale + h * scale_pitch + j0 / hd, sc,
                                                    rows * 4, cudaMemcpyDeviceToHost, s));
        }
    return st;
}

/* One array (K or V) of layer il: the layer buffer's positions [0, n) into the host arrays. */
loupe_status spill_one(rt_cuda_engine *e, const void *layer_buf, void *host, float *host_scale,
                       uint32_t il, uint32_t n, const char **op)
{
    const rt_hparams *hp = &e->m->hp;
    const rt_cuda_host_kv &kv = e->host_kv;
    const size_t hd = hp->head_dim, head_pitch = (size_t)e->p.n_ctx * hd, L = (size_t)n * hd;
    const size_t layer_rows = (size_t)hp->n_head_kv * kv.ld, out_pitch = kv.ld * hd;
    switch (kv.type) {
    case ANN_KEYS_F32:
        return read_one(e, layer_buf, head_pitch, 0, L,
                        static_cast<float *>(host) + il * layer_rows * hd, out_pitch, op);
    case ANN_KEYS_BF16:
        return spill_bf16(e, layer_buf, head_pitch, L,
                          static_cast<uint16_t *>(host) + il * layer_rows * hd, out_pitch, op);
    default:
        return spill_i8(e, layer_buf, head_pitch, L,
                        static_cast<int8_t *>(host) + il * layer_rows * hd, out_pitch,
                        host_scale + il * layer_rows, kv.ld, op);
    }
}

} // namespace

/* The retrieval layout's prefill, after layer il has seen positions [0, n) (static_set.cuh). */
loupe_status rt_cuda_layer_spill(rt_cuda_engine *e, uint32_t il, uint32_t n, const char **op)
{
    const rt_cuda_host_kv &kv = e->host_kv;
    loupe_status st = LOUPE_OK;
    if (kv.k)
        st = spill_one(e, e->k_layer, kv.k, kv.k_scale, il, n, op);
    if (!st && kv.v)
        st = spill_one(e, e->v_layer, kv.v, kv.v_scale, il, n, op);
    return st;
}
