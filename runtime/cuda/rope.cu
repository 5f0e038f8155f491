/*
 * rt_cuda_rope: one block per token, one thread per rotation pair. The thread computes its pair's
 * angle in double exactly as rt_rope_angles() does, then rotates that pair in every query and key
 * head of the token, so the angle is computed once per (token, pair).
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/rope.cuh"

namespace rtc {

__global__ void rope_kernel(rt_cuda_rope_desc r, uint32_t pos0, const uint32_t *pos0_dev,
                            float *q, uint32_t n_head, float *k, uint32_t n_head_kv,
                            uint32_t head_dim)
{
    const uint32_t t = blockIdx.x;
    if (pos0_dev)
        pos0 = *pos0_dev;
    for (uint32_t i = threadIdx.x; i < r.n_pairs; i += blockDim.x) {
        const double extrap = (double)(pos0 + t) * r.inv_freq[i];
        double theta = extrap * r.freq_scale;
        if (r.ext_factor != 0) {
            const double span = r.corr_hi - r.corr_lo;
            const double y = ((double)i - r.corr_lo) / (span > 0.001 ? span : 0.001);
            const double ramp = (1.0 - fmin(1.0, fmax(0.0, y))) * r.ext_factor;
            theta = theta * (1 - ramp) + extrap * ramp;
        }
        const float c = (float)(cos(theta) * r.mscale), s = (float)(sin(theta) * r.mscale);
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

} // namespace rtc

extern "C" loupe_status rt_cuda_rope(const rt_cuda_rope_desc *r, uint32_t pos0, uint32_t n_tok,
                                     float *q, uint32_t n_head, float *k, uint32_t n_head_kv,
                                     uint32_t head_dim, cudaStream_t stream)
{
    if (n_tok == 0 || r->n_pairs == 0)
        return LOUPE_OK;
    const unsigned threads = r->n_pairs < 128 ? 64 : 128;
    rtc::rope_kernel<<<n_tok, threads, 0, stream>>>(*r, pos0, nullptr, q, n_head, k, n_head_kv,
                                                    head_dim);
    return rtc::launch_status();
}

extern "C" loupe_status rt_cuda_rope_dev(const rt_cuda_rope_desc *r, const uint32_t *pos_dev,
                                         float *q, uint32_t n_head, float *k, uint32_t n_head_kv,
                                         uint32_t head_dim, cudaStream_t stream)
{
    if (r->n_pairs == 0)
        return LOUPE_OK;
    const unsigned threads = r->n_pairs < 128 ? 64 : 128;
    rtc::rope_kernel<<<1, threads, 0, stream>>>(*r, 0, pos_dev, q, n_head, k, n_head_kv,
                                                head_dim);
    return rtc::launch_status();
}
