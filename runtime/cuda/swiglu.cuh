/*
 * The SwiGLU gate of the feed-forward block: silu(gate) ⊙ up.
 */
#ifndef LOUPE_CUDA_SWIGLU_CUH
#define LOUPE_CUDA_SWIGLU_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = gate[i] / (1 + e^{-gate[i]}) · up[i] for i < n (fp32 in, out_type out). */
loupe_status rt_cuda_swiglu(const float *gate, const float *up, size_t n, rt_cuda_dtype out_type,
                            void *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_SWIGLU_CUH */
