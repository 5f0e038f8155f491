/*
 * RMSNorm of rows, as the CPU backend computes it: out = x / sqrt(mean(x²) + eps) · w.
 */
#ifndef LOUPE_CUDA_RMSNORM_CUH
#define LOUPE_CUDA_RMSNORM_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[r*ld_out + i] = x[r*ld_x + i] · w[i] / sqrt(Σ_i x² / n + eps) for r < n_rows, i < n; x, w
 * fp32, out in out_type (bf16 feeds the prefill GEMMs). x and out may be the same buffer only when
 * out_type is fp32 and the strides match. */
loupe_status rt_cuda_rmsnorm(const float *x, size_t ld_x, const float *w, uint32_t n,
                             uint32_t n_rows, float eps, rt_cuda_dtype out_type, void *out,
                             size_t ld_out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_RMSNORM_CUH */
