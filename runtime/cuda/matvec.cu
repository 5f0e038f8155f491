/*
 * rt_cuda_matvec: one warp per output row; lane l decodes units l, l+32, ... of the row (32
 * elements each, common.cuh) and dots them with x, then the warp sums. A warp's lanes read
 * adjacent units, so a warp streams a contiguous stretch of the row per step.
 *
 * Correctness first: no shared-memory staging of x, no multi-row reuse of x loads, no split-K
 * for short rows (a 256-wide row uses 8 lanes). Tuning is issue 4's next step.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/matvec.cuh"

namespace rtc {

constexpr int MV_WARPS = 4; /* rows per block */

template <int T>
__global__ void __launch_bounds__(MV_WARPS *WARP)
    matvec_kernel(const uint8_t *w, size_t pitch, uint32_t n_out, uint32_t n_in,
                  const float *__restrict__ x, float *__restrict__ y, bool accumulate)
{
    const uint32_t lane = threadIdx.x % WARP;
    const uint32_t r = blockIdx.x * MV_WARPS + threadIdx.x / WARP;
    if (r >= n_out)
        return;
    const uint8_t *row = w + (size_t)r * pitch;
    const uint32_t full = n_in / UNIT;
    float acc = 0.0f;
    for (uint32_t u = lane; u < full; u += WARP) {
        float v[UNIT];
        decode_unit<T>(row, u, v);
        const float4 *xv = reinterpret_cast<const float4 *>(x + (size_t)u * UNIT);
#pragma unroll
        for (int i = 0; i < UNIT / 4; i++) {
            float4 xx = xv[i];
            acc += v[4 * i] * xx.x + v[4 * i + 1] * xx.y + v[4 * i + 2] * xx.z +
                   v[4 * i + 3] * xx.w;
        }
    }
    if (T == RT_TYPE_F32 || T == RT_TYPE_F16 || T == RT_TYPE_BF16)
        for (uint32_t i = full * UNIT + lane; i < n_in; i += WARP)
            acc += decode_elem<T>(row, i) * x[i];
    acc = warp_sum(acc);
    if (lane == 0)
        y[r] = accumulate ? y[r] + acc : acc;
}

struct matvec_launch {
    const void *w;
    size_t pitch;
    uint32_t n_out, n_in;
    const float *x;
    float *y;
    bool accumulate;
    cudaStream_t stream;

    template <int T> void run() const
    {
        matvec_kernel<T><<<ceil_div(n_out, MV_WARPS), MV_WARPS * WARP, 0, stream>>>(
            static_cast<const uint8_t *>(w), pitch, n_out, n_in, x, y, accumulate);
    }
};

} // namespace rtc

extern "C" loupe_status rt_cuda_matvec(rt_type type, const void *w, size_t pitch, uint32_t n_out,
                                       uint32_t n_in, const float *x, float *y, bool accumulate,
                                       cudaStream_t stream)
{
    if (n_out == 0)
        return LOUPE_OK;
    return rtc::dispatch_type(type,
                              rtc::matvec_launch{w, pitch, n_out, n_in, x, y, accumulate, stream});
}
