/*
 * rt_cuda_rmsnorm: one block per row; threads sum squares over strided elements, the block sums
 * the partials through shared memory, then every thread scales its elements.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/rmsnorm.cuh"

namespace rtc {

constexpr int RMS_THREADS = 256;

template <typename O>
__global__ void __launch_bounds__(RMS_THREADS)
    rmsnorm_kernel(const float *x, size_t ld_x, const float *w, uint32_t n, float eps, O *out,
                   size_t ld_out)
{
    __shared__ float part[RMS_THREADS / WARP];
    const float *xr = x + (size_t)blockIdx.x * ld_x;
    O *orow = out + (size_t)blockIdx.x * ld_out;
    float ss = 0.0f;
    for (uint32_t i = threadIdx.x; i < n; i += RMS_THREADS)
        ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    if (threadIdx.x % WARP == 0)
        part[threadIdx.x / WARP] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < RMS_THREADS / WARP; i++)
        tot += part[i];
    const float inv = rsqrtf(tot / (float)n + eps);
    for (uint32_t i = threadIdx.x; i < n; i += RMS_THREADS)
        orow[i] = from_f32<O>(xr[i] * inv * w[i]);
}

} // namespace rtc

extern "C" loupe_status rt_cuda_rmsnorm(const float *x, size_t ld_x, const float *w, uint32_t n,
                                        uint32_t n_rows, float eps, rt_cuda_dtype out_type,
                                        void *out, size_t ld_out, cudaStream_t stream)
{
    if (n_rows == 0)
        return LOUPE_OK;
    if (out_type == RT_CUDA_BF16)
        rtc::rmsnorm_kernel<<<n_rows, rtc::RMS_THREADS, 0, stream>>>(
            x, ld_x, w, n, eps, static_cast<__nv_bfloat16 *>(out), ld_out);
    else
        rtc::rmsnorm_kernel<<<n_rows, rtc::RMS_THREADS, 0, stream>>>(
            x, ld_x, w, n, eps, static_cast<float *>(out), ld_out);
    return rtc::launch_status();
}
