/*
 * Bias add for the Q/K/V projections of qwen2-style models.
 */
#ifndef LOUPE_CUDA_BIAS_CUH
#define LOUPE_CUDA_BIAS_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x[r*ld + i] += b[i] for r < n_rows, i < n (fp32). */
loupe_status rt_cuda_add_bias(float *x, size_t ld, const float *b, uint32_t n, uint32_t n_rows,
                              cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_BIAS_CUH */
