/*
 * Decode attention for one token, split across the keys (flash-decoding): each split of the key
 * range yields a partial (output, log-sum-exp) per head, and a second kernel merges the splits
 * exactly. Returns the output AND the log-sum-exp, so the result can be merged further with
 * another partial (rt_cuda_attn_merge), as retrieval attention does with the CPU's part.
 * The query heads that share a KV head read its K/V once (GQA); head dims 32, 64, 96, 128, 256;
 * bf16 or fp32 cache.
 */
#ifndef LOUPE_CUDA_FLASH_DECODE_CUH
#define LOUPE_CUDA_FLASH_DECODE_CUH

#include <cuda_runtime_api.h>

#include "runtime/cuda/flash_attn.cuh"
#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Floats of `part` rt_cuda_flash_decode needs for up to max_splits splits. */
size_t rt_cuda_flash_decode_part_floats(uint32_t n_head, uint32_t head_dim, uint32_t max_splits);

/* Attention of the single query a->q (n_head, head_dim, contiguous; a->q_ld is not used) over
 * keys [k0, k1) of the cache (no causal mask: the caller chooses the range). out (n_head,
 * head_dim) fp32, lse (n_head) fp32; heads with no keys (k0 == k1) get 0 and -inf. part:
 * scratch of rt_cuda_flash_decode_part_floats() floats. Splits are at least 128 keys and at most
 * min(max_splits, 256); a single split writes out/lse directly. Deterministic. */
loupe_status rt_cuda_flash_decode(const rt_cuda_attn_desc *a, uint32_t k0, uint32_t k1,
                                  float *part, uint32_t max_splits, float *out, float *lse,
                                  cudaStream_t stream);

/* The same attention over keys [0, *n_keys_dev) with the count read from device memory when
 * the kernels run (so a captured CUDA graph can be replayed at every position); 1 <= *n_keys_dev
 * <= a->n_ctx. The grid is sized for n_ctx keys; the result is bit for bit what
 * rt_cuda_flash_decode(a, 0, *n_keys_dev, ...) gives. */
loupe_status rt_cuda_flash_decode_dev(const rt_cuda_attn_desc *a, const uint32_t *n_keys_dev,
                                      float *part, uint32_t max_splits, float *out, float *lse,
                                      cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_FLASH_DECODE_CUH */
