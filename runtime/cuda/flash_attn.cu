/* rt_cuda_flash_attn: the tensor-core kernel (fattn_tc.cu) where it applies, else
 * rt_cuda_flash_attn_simt: grid (row tiles of 16 (token, head) rows, KV heads), one split. */
#include "runtime/cuda/fattn_common.cuh"
#include "runtime/cuda/fattn_tc.cuh"
#include "runtime/cuda/flash_attn.cuh"

extern "C" bool rt_cuda_attn_head_dim_ok(uint32_t head_dim)
{
    return rtc::fa_head_dim_ok(head_dim);
}

extern "C" loupe_status rt_cuda_flash_attn(const rt_cuda_attn_desc *a, uint32_t n_tok,
                                           uint32_t pos0, rt_cuda_dtype out_type, void *out,
                                           size_t out_ld, float *lse, cudaStream_t stream)
{
    if (rt_cuda_flash_attn_tc_ok(a))
        return rt_cuda_flash_attn_tc(a, n_tok, pos0, out_type, out, out_ld, lse,
                                     RT_CUDA_FATTN_TC_DEFAULT, stream);
    return rt_cuda_flash_attn_simt(a, n_tok, pos0, out_type, out, out_ld, lse, stream);
}

extern "C" loupe_status rt_cuda_flash_attn_simt(const rt_cuda_attn_desc *a, uint32_t n_tok,
                                                uint32_t pos0, rt_cuda_dtype out_type, void *out,
                                                size_t out_ld, float *lse, cudaStream_t stream)
{
    if (n_tok == 0)
        return LOUPE_OK;
    if (a->n_head_kv == 0 || a->n_head % a->n_head_kv != 0)
        return LOUPE_ERR_INVALID;
    rtc::fa_params p = {};
    p.q = a->q;
    p.q_ld = a->q_ld;
    p.k = a->k;
    p.v = a->v;
    p.n_ctx = a->n_ctx;
    p.group = a->n_head / a->n_head_kv;
    p.n_head = a->n_head;
    p.n_tok = n_tok;
    p.pos0 = pos0;
    p.k0 = 0;
    p.k1 = pos0 + n_tok;
    p.split_len = p.k1;
    p.scale = a->scale;
    p.out = out;
    p.out_type = out_type;
    p.out_ld = out_ld;
    p.lse = lse;
    const dim3 grid(rtc::ceil_div((size_t)n_tok * p.group, rtc::FA_ROWS), a->n_head_kv, 1);
    return rtc::fa_dispatch(p, a->kv_type, a->head_dim, grid, stream);
}
