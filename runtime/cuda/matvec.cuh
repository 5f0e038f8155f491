/*
 * Matrix-vector product for decode over weights in their stored type (F32, F16, BF16, Q8_0,
 * Q4_K, Q6_K), dequantised in registers: every weight byte is read once, activations are fp32.
 */
#ifndef LOUPE_CUDA_MATVEC_CUH
#define LOUPE_CUDA_MATVEC_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[r] = (accumulate ? y[r] : 0) + Σ_i W[r][i] · x[i] for r < n_out. W: n_out rows of n_in
 * elements of `type`, `pitch` bytes apart (a multiple of 16); x (n_in), y (n_out) fp32 in device
 * memory, not aliasing. accumulate fuses the residual add of the output projections. */
loupe_status rt_cuda_matvec(rt_type type, const void *w, size_t pitch, uint32_t n_out,
                            uint32_t n_in, const float *x, float *y, bool accumulate,
                            cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_MATVEC_CUH */
