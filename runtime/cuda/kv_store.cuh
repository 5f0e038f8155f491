/*
 * Writes a chunk's keys (after RoPE) and values into one layer of the KV cache (the decode step
 * stores its one token with its RoPE: rt_cuda_rope_store_dev).
 */
#ifndef LOUPE_CUDA_KV_STORE_CUH
#define LOUPE_CUDA_KV_STORE_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For t < n_tok, h < n_head_kv: K[h][pos0 + t][:] = k[t][h][:], V likewise, converting fp32 to the
 * cache's type. k, v: (n_tok, n_head_kv, head_dim) fp32; k_cache, v_cache: one layer,
 * (n_head_kv, n_ctx, head_dim) of kv_type. pos0 + n_tok <= n_ctx (callers check). */
loupe_status rt_cuda_kv_store(const float *k, const float *v, uint32_t n_tok, uint32_t n_head_kv,
                              uint32_t head_dim, uint32_t pos0, uint32_t n_ctx,
                              rt_cuda_dtype kv_type, void *k_cache, void *v_cache,
                              cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_KV_STORE_CUH */
