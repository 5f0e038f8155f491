/* rt_cuda_attn_merge: one block per head; weights computed once per thread from (l1, l2). */
#include "runtime/cuda/attn_merge.cuh"
#include "runtime/cuda/common.cuh"

namespace rtc {

__global__ void attn_merge_kernel(const float *o1, const float *l1, const float *o2,
                                  const float *l2, uint32_t head_dim, float *out, float *lse)
{
    const uint32_t h = blockIdx.x;
    const float a = l1[h], b = l2[h];
    const size_t base = (size_t)h * head_dim;
    float wa = 0.0f, wb = 0.0f, l = -INFINITY;
    if (a != -INFINITY || b != -INFINITY) {
        const float m = fmaxf(a, b);
        const float ea = expf(a - m), eb = expf(b - m); /* the larger is exactly 1 */
        const float inv = 1.0f / (ea + eb);
        wa = ea * inv;
        wb = eb * inv;
        l = m + logf(ea + eb);
    }
    for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float x = a == -INFINITY ? 0.0f : wa * o1[base + d];
        float y = b == -INFINITY ? 0.0f : wb * o2[base + d];
        out[base + d] = x + y;
    }
    __syncthreads(); /* every thread has read l1[h]/l2[h] before lse (which may alias) is written */
    if (threadIdx.x == 0)
        lse[h] = l;
}

} // namespace rtc

extern "C" loupe_status rt_cuda_attn_merge(const float *o1, const float *l1, const float *o2,
                                           const float *l2, uint32_t n_head, uint32_t head_dim,
                                           float *out, float *lse, cudaStream_t stream)
{
    if (n_head == 0)
        return LOUPE_OK;
    rtc::attn_merge_kernel<<<n_head, 128, 0, stream>>>(o1, l1, o2, l2, head_dim, out, lse);
    return rtc::launch_status();
}
