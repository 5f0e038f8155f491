/*
 * Weight rows in the GPU's layout, and their upload. Rows keep their stored bytes except Q8_0:
 * GGUF's 34-byte blocks (fp16 scale + 32 int8) are only 2-byte aligned, so the decode mat-vec
 * could not read them with 16-byte loads. A Q8_0 row of nb blocks is stored on the GPU as
 *
 *   bytes [0, 32·nb)        the quants of block 0, 1, ... (block b at 32·b: 16-byte aligned)
 *   bytes [32·nb, 34·nb)    the fp16 scales of block 0, 1, ...
 *
 * The same row_bytes as GGUF's (so the pitch, row_bytes rounded up to 16, and every byte count
 * of the memory plan are unchanged). Every GPU reader of weight rows (matvec.cu, dequant.cu)
 * reads this layout.
 */
#ifndef LOUPE_CUDA_REPACK_CUH
#define LOUPE_CUDA_REPACK_CUH

#include <stddef.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Host: n_rows rows of n_in elements of `type` from src (rows src_pitch bytes apart, GGUF
 * layout) to dst (dst_pitch apart, the GPU layout above); src and dst do not overlap. Bytes of
 * dst past each row's row_bytes are left alone. */
void rt_cuda_repack_rows(rt_type type, uint32_t n_in, const void *src, size_t src_pitch,
                         void *dst, size_t dst_pitch, uint32_t n_rows);

/* Uploads n_rows rows (GGUF layout, row_bytes apart at host src) to device dst, `pitch` bytes
 * apart (a multiple of 16, >= row_bytes), in the GPU layout. Synchronous. Fails with
 * LOUPE_ERR_NOMEM when the host staging buffer cannot be had, LOUPE_ERR_GPU when a copy fails
 * (the CUDA error is left for the caller to read). */
loupe_status rt_cuda_upload_rows(rt_type type, uint32_t n_in, const void *src, size_t row_bytes,
                                 void *dst, size_t pitch, uint32_t n_rows);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_REPACK_CUH */
