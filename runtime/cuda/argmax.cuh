/*
 * Greedy sampling on the GPU: the index of the largest logit, lowest index on ties (the CPU
 * sampler's rule at temperature 0).
 */
#ifndef LOUPE_CUDA_ARGMAX_CUH
#define LOUPE_CUDA_ARGMAX_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* *out (device) = argmax_i x[i] over i < n (n >= 1); NaNs never win. One block. */
loupe_status rt_cuda_argmax(const float *x, uint32_t n, int32_t *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_ARGMAX_CUH */
