/*
 * Rotary position embedding on the GPU, the same function as runtime/rope.c: pair i of a head
 * rotates by θ_i(p) = p · inv_freq[i] (scaled linearly or by YaRN's ramp), cos/sin times mscale;
 * pairs are (2i, 2i+1) for llama's normal style and (i, i + n_pairs) for NeoX. Angles are
 * computed in double, as on the CPU, so long positions keep their precision.
 */
#ifndef LOUPE_CUDA_ROPE_CUH
#define LOUPE_CUDA_ROPE_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The constants of an rt_rope, inv_freq copied to device memory. */
typedef struct {
    const double *inv_freq; /* (n_pairs), device */
    uint32_t n_pairs;
    int neox;               /* 1 = RT_ROPE_NEOX */
    double freq_scale, ext_factor, corr_lo, corr_hi, mscale;
} rt_cuda_rope_desc;

/* Rotates, in place, q (n_tok, n_head, head_dim) and k (n_tok, n_head_kv, head_dim) of tokens at
 * positions pos0 + t. k may be NULL (n_head_kv ignored). */
loupe_status rt_cuda_rope(const rt_cuda_rope_desc *r, uint32_t pos0, uint32_t n_tok, float *q,
                          uint32_t n_head, float *k, uint32_t n_head_kv, uint32_t head_dim,
                          cudaStream_t stream);

/* The decode step's RoPE and K/V store in one launch: one token (q (n_head, head_dim), k and v
 * (n_head_kv, head_dim), fp32) at the position read from *pos_dev when the kernel runs, so a
 * captured CUDA graph can be replayed at every position. q and k are rotated in place exactly as
 * rt_cuda_rope rotates them; then, as rt_cuda_kv_store would, the rotated k and v are converted
 * to kv_type and written to row *slot_dev of each KV head in k_cache and v_cache (one layer,
 * (n_head_kv, n_ctx, head_dim)); *slot_dev < n_ctx (callers check). */
loupe_status rt_cuda_rope_store_dev(const rt_cuda_rope_desc *r, const uint32_t *pos_dev,
                                    const uint32_t *slot_dev, float *q, uint32_t n_head, float *k,
                                    const float *v, uint32_t n_head_kv, uint32_t head_dim,
                                    uint32_t n_ctx, rt_cuda_dtype kv_type, void *k_cache,
                                    void *v_cache, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_ROPE_CUH */
