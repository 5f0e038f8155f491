/*
 * rt_cuda_rope: one block per token, one thread per rotation pair. The thread computes its pair's
 * angle in double exactly as rt_rope_angles() does, then rotates that pair in every query and key
 * head of the token, so the angle is computed once per (token, pair).
 *
 * rt_cuda_rope_store_dev, the decode form: one token, so one block per head instead, and a thread
 * per pair of dims of that head. A single block looping over the heads (the prefill kernel with
 * one token) costs a dependent L2 round trip per head, ~10 µs a layer for 40 heads; spread over
 * the heads the angle is recomputed per head (cheap) and the kernel takes one round trip. The
 * key heads' blocks also write the rotated key and the value into the cache slot, which saves
 * the separate K/V store launch of every layer.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/rope.cuh"

namespace rtc {

/* cos and sin (times mscale) of pair i's angle at position pos, as rt_rope_angles(). */
__device__ inline void rope_cos_sin(const rt_cuda_rope_desc &r, uint32_t pos, uint32_t i, float *c,
                                    float *s)
{
    const double extrap = (double)pos * r.inv_freq[i];
    double theta = extrap * r.freq_scale;
    if (r.ext_factor != 0) {
        const double span = r.corr_hi - r.corr_lo;
        const double y = ((double)i - r.corr_lo) / (span > 0.001 ? span : 0.001);
        const double ramp = (1.0 - fmin(1.0, fmax(0.0, y))) * r.ext_factor;
        theta = theta * (1 - ramp) + extrap * ramp;
    }
    *c = (float)(cos(theta) * r.mscale);
    *s = (float)(sin(theta) * r.mscale);
}

__global__ void rope_kernel(rt_cuda_rope_desc r, uint32_t pos0, float *q, uint32_t n_head,
                            float *k, uint32_t n_head_kv, uint32_t head_dim)
{
    const uint32_t t = blockIdx.x;
    for (uint32_t i = threadIdx.x; i < r.n_pairs; i += blockDim.x) {
        float c, s;
        rope_cos_sin(r, pos0 + t, i, &c, &s);
        const uint32_t a = r.neox ? i : 2 * i, off = r.neox ? r.n_pairs : 1;
        for (uint32_t h = 0; h < n_head + (k ? n_head_kv : 0); h++) {
            float *x = h < n_head ? q + ((size_t)t * n_head + h) * head_dim
                                  : k + ((size_t)t * n_head_kv + (h - n_head)) * head_dim;
            const float x0 = x[a], x1 = x[a + off];
            x[a] = x0 * c - x1 * s;
            x[a + off] = x0 * s + x1 * c;
        }
    }
}

/* Block h < n_head: query head h; block n_head + j: key head j, whose rotated key and value also
 * go to the cache at *slot_dev. Thread i takes rotation pair i (i < n_pairs) or, past the
 * rotated dims (partial rotary: dims 2·n_pairs and up in both styles), the plain dims 2i, 2i+1;
 * the V copy takes dims 2i, 2i+1 too, so head_dim / 2 threads cover a head. */
template <typename KV>
__global__ void rope_store_kernel(rt_cuda_rope_desc r, const uint32_t *pos_dev,
                                  const uint32_t *slot_dev, float *q, uint32_t n_head, float *k,
                                  const float *v, uint32_t head_dim, uint32_t n_ctx, KV *kc,
                                  KV *vc)
{
    const uint32_t h = blockIdx.x, pos = *pos_dev;
    const bool is_k = h >= n_head;
    float *x = is_k ? k + (size_t)(h - n_head) * head_dim : q + (size_t)h * head_dim;
    KV *kd = nullptr, *vd = nullptr;
    if (is_k) {
        const size_t row = ((size_t)(h - n_head) * n_ctx + *slot_dev) * head_dim;
        kd = kc + row;
        vd = vc + row;
    }
    for (uint32_t i = threadIdx.x; 2 * i < head_dim; i += blockDim.x) {
        const bool rot = i < r.n_pairs;
        const uint32_t a = rot && r.neox ? i : 2 * i, b = rot && r.neox ? i + r.n_pairs : 2 * i + 1;
        const bool has_b = b < head_dim; /* an odd head_dim's last dim is never rotated */
        float x0 = x[a], x1 = has_b ? x[b] : 0.0f;
        if (rot) {
            float c, s;
            rope_cos_sin(r, pos, i, &c, &s);
            const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
            x0 = y0;
            x1 = y1;
            x[a] = x0;
            x[b] = x1;
        }
        if (is_k) {
            const float *vh = v + (size_t)(h - n_head) * head_dim;
            kd[a] = from_f32<KV>(x0);
            vd[2 * i] = from_f32<KV>(vh[2 * i]);
            if (has_b)
                kd[b] = from_f32<KV>(x1);
            if (2 * i + 1 < head_dim)
                vd[2 * i + 1] = from_f32<KV>(vh[2 * i + 1]);
        }
    }
}

} // namespace rtc

extern "C" loupe_status rt_cuda_rope(const rt_cuda_rope_desc *r, uint32_t pos0, uint32_t n_tok,
                                     float *q, uint32_t n_head, float *k, uint32_t n_head_kv,
                                     uint32_t head_dim, cudaStream_t stream)
{
    if (n_tok == 0 || r->n_pairs == 0)
        return LOUPE_OK;
    const unsigned threads = r->n_pairs < 128 ? 64 : 128;
    rtc::rope_kernel<<<n_tok, threads, 0, stream>>>(*r, pos0, q, n_head, k, n_head_kv, head_dim);
    return rtc::launch_status();
}

extern "C" loupe_status rt_cuda_rope_store_dev(const rt_cuda_rope_desc *r,
                                               const uint32_t *pos_dev, const uint32_t *slot_dev,
                                               float *q, uint32_t n_head, float *k,
                                               const float *v, uint32_t n_head_kv,
                                               uint32_t head_dim, uint32_t n_ctx,
                                               rt_cuda_dtype kv_type, void *k_cache,
                                               void *v_cache, cudaStream_t stream)
{
    const unsigned blocks = n_head + n_head_kv, threads = head_dim < 128 ? 32 : 64;
    if (kv_type == RT_CUDA_BF16)
        rtc::rope_store_kernel<<<blocks, threads, 0, stream>>>(
            *r, pos_dev, slot_dev, q, n_head, k, v, head_dim, n_ctx,
            static_cast<__nv_bfloat16 *>(k_cache), static_cast<__nv_bfloat16 *>(v_cache));
    else
        rtc::rope_store_kernel<<<blocks, threads, 0, stream>>>(
            *r, pos_dev, slot_dev, q, n_head, k, v, head_dim, n_ctx,
            static_cast<float *>(k_cache), static_cast<float *>(v_cache));
    return rtc::launch_status();
}
