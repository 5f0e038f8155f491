/*
 * Dequantisation of weight rows on the GPU, and the embedding lookup (the same thing with a row
 * map): rows of a matrix in its stored type → dense fp32 or bf16 rows.
 *
 * Used by prefill to turn a layer's quantised matrices into the bf16 (or fp32) operands of the
 * cuBLAS GEMMs, and by both paths to look up token embeddings.
 */
#ifndef LOUPE_CUDA_DEQUANT_CUH
#define LOUPE_CUDA_DEQUANT_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[r*ld_out + i] = W[row(r)][i] for r < n_rows, i < n_in, where row(r) = row_ids ? row_ids[r]
 * : r (row_ids in device memory, each in 0..rows of W; callers check). W: stored type `type`,
 * rows `pitch` bytes apart (a multiple of 16). out: out_type. Fails with LOUPE_ERR_UNSUPPORTED
 * for types the kernels do not decode, LOUPE_ERR_GPU when the launch fails. */
loupe_status rt_cuda_dequant(rt_type type, const void *w, size_t pitch, const int32_t *row_ids,
                             uint32_t n_rows, uint32_t n_in, rt_cuda_dtype out_type, void *out,
                             size_t ld_out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_DEQUANT_CUH */
