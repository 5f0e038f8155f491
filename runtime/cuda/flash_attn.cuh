/*
 * Causal attention of a prefill chunk over one layer's KV cache (flash attention: tiles of keys,
 * online softmax, GQA heads sharing K/V tiles). The same function as the CPU backend's
 * attend_full: query t (position pos0 + t) of head h attends to keys 0..pos0+t of KV head
 * h / (n_head / n_head_kv), scores scaled by `scale`.
 *
 * Two kernels: a bf16 cache of head dim 64 or 128 on an sm_80+ GPU runs on tensor cores
 * (fattn_tc.cu: fp16 operands, fp32 accumulation and softmax, ~1e-3 relative error); everything
 * else (fp32 cache, head dims 32/96/256) on the fp32 CUDA-core kernel of fattn_common.cuh (fp32
 * throughout, ~1e-6).
 */
#ifndef LOUPE_CUDA_FLASH_ATTN_CUH
#define LOUPE_CUDA_FLASH_ATTN_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The queries and one layer's cache, shared by the prefill and decode attention launchers. */
typedef struct {
    const float *q;   /* (n_tok, n_head, head_dim) fp32, token rows q_ld floats apart */
    size_t q_ld;
    const void *k, *v; /* one layer of the cache: (n_head_kv, n_ctx, head_dim) of kv_type */
    rt_cuda_dtype kv_type;
    uint32_t n_ctx, head_dim, n_head, n_head_kv;
    float scale;      /* 1/sqrt(head_dim), times whatever the model adds */
} rt_cuda_attn_desc;

/* True when a kernel exists for this head dim (32, 64, 96, 128, 256). */
bool rt_cuda_attn_head_dim_ok(uint32_t head_dim);

/* out (n_tok rows, out_ld elements apart, out_type): row t, head h at t·out_ld + h·head_dim;
 * lse (n_tok, n_head) fp32 or NULL. Keys 0..pos0+n_tok-1 must be in the cache. */
loupe_status rt_cuda_flash_attn(const rt_cuda_attn_desc *a, uint32_t n_tok, uint32_t pos0,
                                rt_cuda_dtype out_type, void *out, size_t out_ld, float *lse,
                                cudaStream_t stream);

/* The same on the fp32 CUDA-core kernel whatever the cache type (rt_cuda_flash_attn's fallback;
 * tests and benchmarks call it to compare). */
loupe_status rt_cuda_flash_attn_simt(const rt_cuda_attn_desc *a, uint32_t n_tok, uint32_t pos0,
                                     rt_cuda_dtype out_type, void *out, size_t out_ld, float *lse,
                                     cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_FLASH_ATTN_CUH */
