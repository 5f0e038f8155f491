/* rt_cuda_swiglu: elementwise, a grid-stride loop (expf, not __expf: the CPU uses expf). */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/swiglu.cuh"

namespace rtc {

template <typename O>
__global__ void swiglu_kernel(const float *gate, const float *up, size_t n, O *out)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = from_f32<O>(g / (1.0f + expf(-g)) * up[i]);
    }
}

} // namespace rtc

extern "C" loupe_status rt_cuda_swiglu(const float *gate, const float *up, size_t n,
                                       rt_cuda_dtype out_type, void *out, cudaStream_t stream)
{
    if (n == 0)
        return LOUPE_OK;
    unsigned blocks = rtc::ceil_div(n, 256);
    if (blocks > 65535)
        blocks = 65535;
    if (out_type == RT_CUDA_BF16)
        rtc::swiglu_kernel<<<blocks, 256, 0, stream>>>(gate, up, n,
                                                       static_cast<__nv_bfloat16 *>(out));
    else
        rtc::swiglu_kernel<<<blocks, 256, 0, stream>>>(gate, up, n, static_cast<float *>(out));
    return rtc::launch_status();
}
