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

/* One token (n_tok = 1) at the position read from device memory when the kernel runs, so a
 * captured CUDA graph can be replayed at every position; otherwise rt_cuda_rope exactly. */
loupe_status rt_cuda_rope_dev(const rt_cuda_rope_desc *r, const uint32_t *pos_dev, float *q,
                              uint32_t n_head, float *k, uint32_t n_head_kv, uint32_t head_dim,
                              cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_ROPE_CUH */
