/* rt_cuda_kv_store: one block per (token, KV head), threads over the head's dims. */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/kv_store.cuh"

namespace rtc {

template <typename KV>
__global__ void kv_store_kernel(const float *k, const float *v, uint32_t n_head_kv,
                                uint32_t head_dim, uint32_t pos0, uint32_t n_ctx, KV *kc, KV *vc)
{
    const uint32_t t = blockIdx.x / n_head_kv, h = blockIdx.x % n_head_kv;
    const size_t src = ((size_t)t * n_head_kv + h) * head_dim;
    const size_t dst = ((size_t)h * n_ctx + pos0 + t) * head_dim;
    for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        kc[dst + d] = from_f32<KV>(k[src + d]);
        vc[dst + d] = from_f32<KV>(v[src + d]);
    }
}

} // namespace rtc

extern "C" loupe_status rt_cuda_kv_store(const float *k, const float *v, uint32_t n_tok,
                                         uint32_t n_head_kv, uint32_t head_dim, uint32_t pos0,
                                         uint32_t n_ctx, rt_cuda_dtype kv_type, void *k_cache,
                                         void *v_cache, cudaStream_t stream)
{
    if (n_tok == 0)
        return LOUPE_OK;
    const unsigned blocks = n_tok * n_head_kv, threads = head_dim < 128 ? 64 : 128;
    if (kv_type == RT_CUDA_BF16)
        rtc::kv_store_kernel<<<blocks, threads, 0, stream>>>(
            k, v, n_head_kv, head_dim, pos0, n_ctx, static_cast<__nv_bfloat16 *>(k_cache),
            static_cast<__nv_bfloat16 *>(v_cache));
    else
        rtc::kv_store_kernel<<<blocks, threads, 0, stream>>>(
            k, v, n_head_kv, head_dim, pos0, n_ctx, static_cast<float *>(k_cache),
            static_cast<float *>(v_cache));
    return rtc::launch_status();
}
