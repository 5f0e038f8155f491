/*
 * Tensor-core flash-attention prefill (bf16 K/V cache, head dim 64 or 128): the same function
 * as rt_cuda_flash_attn (flash_attn.cuh), which calls it for the shapes it covers and keeps the
 * fp32 CUDA-core kernel for the rest (fp32 cache, other head dims, GPUs before sm_80).
 *
 * Numerics: Q (scaled by scale · log2 e) is rounded to fp16, the bf16 K/V tiles are converted
 * to fp16 (exact for 6e-5 <= |x| <= 65504; larger values saturate), S = Q·Kᵀ and O = P·V run as
 * fp16 mma.sync with fp32 accumulation, the online softmax (max, exp2, sums) is fp32 and P is
 * rounded to fp16 for P·V. Expect row errors around 1e-3 (up to ~4e-3 with large keys) against
 * an exact reference; tests/cuda/test_cuda_fattn.c holds them to 2e-2. A row's result depends
 * only on its own query and the keys it sees, not on how the queries are chunked.
 */
#ifndef LOUPE_CUDA_FATTN_TC_CUH
#define LOUPE_CUDA_FATTN_TC_CUH

#include <cuda_runtime_api.h>

#include "runtime/cuda/flash_attn.cuh"

#ifdef __cplusplus
extern "C" {
#endif

/* Kernel shapes (rows per block, warps, keys per tile, pipeline depth), all tested alike.
 * rt_cuda_flash_attn uses RT_CUDA_FATTN_TC_DEFAULT; the others are there for the benchmark
 * (tests/cuda/bench_fattn.c) to compare on the GPU. */
enum { RT_CUDA_FATTN_TC_VARIANTS = 4, RT_CUDA_FATTN_TC_DEFAULT = 0 };

/* A sentence naming variant v's shape ("128 rows, 8 warps x 16, 64 keys, 2 stages"); "?" for an
 * unknown variant. Never fails otherwise. */
const char *rt_cuda_flash_attn_tc_name(int variant);

/* True when the tensor-core kernel covers this call: bf16 cache, head dim 64 or 128, K and V
 * 16-byte aligned, current device sm_80 or newer. */
bool rt_cuda_flash_attn_tc_ok(const rt_cuda_attn_desc *a);

/* rt_cuda_flash_attn's contract (same arguments, same outputs) on tensor cores with kernel
 * shape `variant`. LOUPE_ERR_UNSUPPORTED when !rt_cuda_flash_attn_tc_ok(a) or for an unknown
 * variant, LOUPE_ERR_INVALID for inconsistent shapes (nothing launched), LOUPE_ERR_GPU when the
 * launch fails. */
loupe_status rt_cuda_flash_attn_tc(const rt_cuda_attn_desc *a, uint32_t n_tok, uint32_t pos0,
                                   rt_cuda_dtype out_type, void *out, size_t out_ld, float *lse,
                                   int variant, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_FATTN_TC_CUH */
