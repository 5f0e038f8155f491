/*
 * rt_cuda_dequant: one thread per 32-element unit of a row (common.cuh decodes it; Q8_0 rows are
 * in repack.cuh's layout and decoded here), writing the unit's 32 values; the tail of a
 * float-typed row that is not a whole unit is done per element.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/dequant.cuh"

namespace rtc {

/* Block u of a repacked Q8_0 row of nb blocks: quants at 32u (two 16-byte loads), the fp16
 * scale at 32·nb + 2u. */
__device__ __forceinline__ void q8_unit(const uint8_t *row, uint32_t u, uint32_t nb,
                                        float v[UNIT])
{
    const uint4 *q = reinterpret_cast<const uint4 *>(row + 32 * (size_t)u);
    const float d = f16_bits(ld_u16(row + 32 * (size_t)nb + 2 * (size_t)u));
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const uint4 w = q[i];
        const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++)
#pragma unroll
            for (int by = 0; by < 4; by++)
                v[16 * i + 4 * k + by] = d * (float)(int8_t)(uint8_t)(ws[k] >> (8 * by));
    }
}

template <int T, typename O>
__global__ void dequant_kernel(const uint8_t *w, size_t pitch, const int32_t *row_ids,
                               uint32_t n_rows, uint32_t n_in, O *out, size_t ld_out)
{
    const uint32_t per_row = (n_in + UNIT - 1) / UNIT;
    const size_t id = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (size_t)n_rows * per_row)
        return;
    const uint32_t r = (uint32_t)(id / per_row), u = (uint32_t)(id % per_row);
    const uint8_t *row = w + (size_t)(row_ids ? row_ids[r] : (int32_t)r) * pitch;
    O *o = out + (size_t)r * ld_out + (size_t)u * UNIT;
    if ((u + 1) * UNIT <= n_in) {
        float v[UNIT];
        if constexpr (T == RT_TYPE_Q8_0)
            q8_unit(row, u, n_in / UNIT, v);
        else
            decode_unit<T>(row, u, v);
#pragma unroll
        for (int i = 0; i < UNIT; i++)
            o[i] = from_f32<O>(v[i]);
    } else { /* float types only: quantised rows are whole blocks */
        for (uint32_t i = u * UNIT; i < n_in; i++)
            o[i - u * UNIT] = from_f32<O>(decode_elem<T>(row, i));
    }
}

struct dequant_launch {
    const void *w;
    size_t pitch;
    const int32_t *row_ids;
    uint32_t n_rows, n_in;
    rt_cuda_dtype out_type;
    void *out;
    size_t ld_out;
    cudaStream_t stream;

    template <int T> void run() const
    {
        const size_t n = (size_t)n_rows * ceil_div(n_in, UNIT);
        const unsigned threads = 128, blocks = ceil_div(n, threads);
        const uint8_t *wb = static_cast<const uint8_t *>(w);
        if (out_type == RT_CUDA_BF16)
            dequant_kernel<T><<<blocks, threads, 0, stream>>>(
                wb, pitch, row_ids, n_rows, n_in, static_cast<__nv_bfloat16 *>(out), ld_out);
        else
            dequant_kernel<T><<<blocks, threads, 0, stream>>>(
                wb, pitch, row_ids, n_rows, n_in, static_cast<float *>(out), ld_out);
    }
};

} // namespace rtc

extern "C" loupe_status rt_cuda_dequant(rt_type type, const void *w, size_t pitch,
                                        const int32_t *row_ids, uint32_t n_rows, uint32_t n_in,
                                        rt_cuda_dtype out_type, void *out, size_t ld_out,
                                        cudaStream_t stream)
{
    if (n_rows == 0 || n_in == 0)
        return LOUPE_OK;
    return rtc::dispatch_type(type, rtc::dequant_launch{w, pitch, row_ids, n_rows, n_in, out_type,
                                                        out, ld_out, stream});
}
