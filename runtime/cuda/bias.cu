/* rt_cuda_add_bias: one block row per matrix row, threads over the row. */
#include "runtime/cuda/bias.cuh"
#include "runtime/cuda/common.cuh"

namespace rtc {

__global__ void bias_kernel(float *x, size_t ld, const float *b, uint32_t n)
{
    float *row = x + (size_t)blockIdx.x * ld;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
        row[i] += b[i];
}

} // namespace rtc

extern "C" loupe_status rt_cuda_add_bias(float *x, size_t ld, const float *b, uint32_t n,
                                         uint32_t n_rows, cudaStream_t stream)
{
    if (n_rows == 0 || n == 0)
        return LOUPE_OK;
    rtc::bias_kernel<<<n_rows, 256, 0, stream>>>(x, ld, b, n);
    return rtc::launch_status();
}
