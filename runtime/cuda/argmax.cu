/*
 * rt_cuda_argmax: one block of 1024 threads; each keeps the best (value, index) of a strided
 * slice, then warps and the block reduce pairs. "Better" is a larger value, or an equal value
 * at a lower index, so the result does not depend on the reduction order.
 */
#include "runtime/cuda/argmax.cuh"
#include "runtime/cuda/common.cuh"

namespace rtc {

constexpr int AM_THREADS = 1024;

__device__ __forceinline__ void better(float &v, int32_t &i, float v2, int32_t i2)
{
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) {
        v = v2;
        i = i2;
    }
}

__global__ void __launch_bounds__(AM_THREADS) argmax_kernel(const float *x, uint32_t n,
                                                            int32_t *out)
{
    __shared__ float sv[AM_THREADS / WARP];
    __shared__ int32_t si[AM_THREADS / WARP];
    float v = 0.0f;
    int32_t idx = -1;
    for (uint32_t i = threadIdx.x; i < n; i += AM_THREADS)
        if (!isnan(x[i]))
            better(v, idx, x[i], (int32_t)i);
    for (int o = WARP / 2; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int32_t i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        better(v, idx, v2, i2);
    }
    if (threadIdx.x % WARP == 0) {
        sv[threadIdx.x / WARP] = v;
        si[threadIdx.x / WARP] = idx;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < AM_THREADS / WARP; w++)
            better(v, idx, sv[w], si[w]);
        *out = idx < 0 ? 0 : idx;
    }
}

} // namespace rtc

extern "C" loupe_status rt_cuda_argmax(const float *x, uint32_t n, int32_t *out,
                                       cudaStream_t stream)
{
    if (n == 0)
        return LOUPE_ERR_INVALID;
    rtc::argmax_kernel<<<1, rtc::AM_THREADS, 0, stream>>>(x, n, out);
    return rtc::launch_status();
}
