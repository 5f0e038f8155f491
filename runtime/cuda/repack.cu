/*
 * rt_cuda_repack_rows and rt_cuda_upload_rows (layout in repack.cuh). Q8_0 rows are repacked on
 * the host, a few MiB of rows at a time, so the upload needs no device scratch outside the plan.
 */
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda/repack.cuh"
#include "runtime/rt_gguf.h"

namespace {

constexpr size_t Q8_BB = 34, Q8_BE = 32;
constexpr size_t STAGE_BYTES = (size_t)8 << 20; /* host staging per copy */

void repack_q8_row(const uint8_t *src, uint8_t *dst, size_t nb)
{
    uint8_t *scales = dst + Q8_BE * nb;
    for (size_t b = 0; b < nb; b++) {
        memcpy(scales + 2 * b, src + Q8_BB * b, 2);
        memcpy(dst + Q8_BE * b, src + Q8_BB * b + 2, Q8_BE);
    }
}

} // namespace

extern "C" void rt_cuda_repack_rows(rt_type type, uint32_t n_in, const void *src,
                                    size_t src_pitch, void *dst, size_t dst_pitch,
                                    uint32_t n_rows)
{
    const uint8_t *s = static_cast<const uint8_t *>(src);
    uint8_t *d = static_cast<uint8_t *>(dst);
    const size_t row_bytes = rt_type_row_bytes(type, n_in);
    for (uint32_t r = 0; r < n_rows; r++) {
        if (type == RT_TYPE_Q8_0)
            repack_q8_row(s + r * src_pitch, d + r * dst_pitch, n_in / Q8_BE);
        else
            memcpy(d + r * dst_pitch, s + r * src_pitch, row_bytes);
    }
}

extern "C" loupe_status rt_cuda_upload_rows(rt_type type, uint32_t n_in, const void *src,
                                            size_t row_bytes, void *dst, size_t pitch,
                                            uint32_t n_rows)
{
    if (n_rows == 0)
        return LOUPE_OK;
    if (type != RT_TYPE_Q8_0) { /* stored bytes as they are */
        const cudaError_t ce =
            pitch == row_bytes
                ? cudaMemcpy(dst, src, row_bytes * n_rows, cudaMemcpyHostToDevice)
                : cudaMemcpy2D(dst, pitch, src, row_bytes, row_bytes, n_rows,
                               cudaMemcpyHostToDevice);
        return ce == cudaSuccess ? LOUPE_OK : LOUPE_ERR_GPU;
    }
    size_t chunk = STAGE_BYTES / row_bytes;
    chunk = chunk < 1 ? 1 : chunk > n_rows ? n_rows : chunk;
    uint8_t *stage = static_cast<uint8_t *>(malloc(chunk * row_bytes));
    if (!stage)
        return LOUPE_ERR_NOMEM;
    const uint8_t *s = static_cast<const uint8_t *>(src);
    uint8_t *d = static_cast<uint8_t *>(dst);
    loupe_status st = LOUPE_OK;
    for (size_t r0 = 0; r0 < n_rows && st == LOUPE_OK; r0 += chunk) {
        const size_t n = n_rows - r0 < chunk ? n_rows - r0 : chunk;
        rt_cuda_repack_rows(type, n_in, s + r0 * row_bytes, row_bytes, stage, row_bytes,
                            (uint32_t)n);
        if (cudaMemcpy2D(d + r0 * pitch, pitch, stage, row_bytes, row_bytes, n,
                         cudaMemcpyHostToDevice) != cudaSuccess)
            st = LOUPE_ERR_GPU;
    }
    free(stage);
    return st;
}
