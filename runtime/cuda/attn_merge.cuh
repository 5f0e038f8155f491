/*
 * Exact merge of two attention partials over disjoint key sets (rt_attn_merge on the GPU):
 *   out = (e^{l1} o1 + e^{l2} o2) / (e^{l1} + e^{l2}),  lse = log(e^{l1} + e^{l2}),
 * relative to max(l1, l2) so it never overflows; two empty partials (-inf) give 0 and -inf.
 */
#ifndef LOUPE_CUDA_ATTN_MERGE_CUH
#define LOUPE_CUDA_ATTN_MERGE_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per head h < n_head: o1, o2, out (n_head, head_dim), l1, l2, lse (n_head), all fp32 in device
 * memory. out may alias o1 or o2, lse may alias l1 or l2. */
loupe_status rt_cuda_attn_merge(const float *o1, const float *l1, const float *o2,
                                const float *l2, uint32_t n_head, uint32_t head_dim, float *out,
                                float *lse, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_ATTN_MERGE_CUH */
