/*
 * rt_cuda_flash_decode: grid (row tiles of the group's heads, KV heads, splits) of the shared
 * tiled kernel writing partials, then fd_combine_kernel per head:
 *   L = max_s l_s,  w_s = e^{l_s - L},  out = Σ w_s o_s / Σ w_s,  lse = L + log Σ w_s.
 * The split length (fd_split_len in fattn_common.cuh) aims at about FD_TARGET_BLOCKS blocks in
 * flight (enough to fill an H100's 132 SMs twice over), never under 128 keys a split.
 *
 * rt_cuda_flash_decode_dev (decode graphs): the key count is read from device memory, so the
 * grid is sized for the largest count (n_ctx) and the kernel computes the same split length as
 * the host would for the current count; slices past the keys are empty partials (lse = -inf,
 * out = 0). The combine gives empty partials weight exactly 0 (e^{-inf} = 0, and their outputs
 * are skipped), so the result is bit for bit the host launcher's: trailing +0.0f terms leave
 * Σ w_s unchanged, and one non-empty split among empties merges to (o·1)/1 = o, lse L + log 1.
 * The combine always runs when the grid has more than one slice, even if only one is in use.
 */
#include "runtime/cuda/fattn_common.cuh"
#include "runtime/cuda/flash_decode.cuh"

namespace rtc {

__global__ void fd_combine_kernel(const float *part_o, const float *part_l, uint32_t n_split,
                                  uint32_t n_head, uint32_t head_dim, float *out, float *lse)
{
    const uint32_t h = blockIdx.x;
    float L = -INFINITY;
    for (uint32_t s = 0; s < n_split; s++)
        L = fmaxf(L, part_l[(size_t)s * n_head + h]);
    if (L == -INFINITY) {
        for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x)
            out[(size_t)h * head_dim + d] = 0.0f;
        if (threadIdx.x == 0)
            lse[h] = -INFINITY;
        return;
    }
    float wsum = 0.0f;
    for (uint32_t s = 0; s < n_split; s++)
        wsum += expf(part_l[(size_t)s * n_head + h] - L);
    const float inv = 1.0f / wsum;
    for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (uint32_t s = 0; s < n_split; s++) {
            const float w = expf(part_l[(size_t)s * n_head + h] - L);
            if (w > 0.0f)
                acc += w * part_o[((size_t)s * n_head + h) * head_dim + d];
        }
        out[(size_t)h * head_dim + d] = acc * inv;
    }
    if (threadIdx.x == 0)
        lse[h] = L + logf(wsum);
}

} // namespace rtc

extern "C" size_t rt_cuda_flash_decode_part_floats(uint32_t n_head, uint32_t head_dim,
                                                   uint32_t max_splits)
{
    return (size_t)max_splits * n_head * ((size_t)head_dim + 1);
}

extern "C" loupe_status rt_cuda_flash_decode(const rt_cuda_attn_desc *a, uint32_t k0,
                                             uint32_t k1, float *part, uint32_t max_splits,
                                             float *out, float *lse, cudaStream_t stream)
{
    if (a->n_head_kv == 0 || a->n_head % a->n_head_kv != 0 || k1 < k0 || max_splits == 0)
        return LOUPE_ERR_INVALID;
    rtc::fa_params p = {};
    p.q = a->q;
    p.q_ld = (size_t)a->n_head * a->head_dim;
    p.k = a->k;
    p.v = a->v;
    p.n_ctx = a->n_ctx;
    p.group = a->n_head / a->n_head_kv;
    p.n_head = a->n_head;
    p.n_tok = 1;
    p.pos0 = k1 > 0 ? k1 - 1 : 0; /* the causal limit pos0 + 1 = k1 masks nothing */
    p.k0 = k0;
    p.k1 = k1;
    p.scale = a->scale;
    p.out = out;
    p.out_type = RT_CUDA_F32;
    p.out_ld = p.q_ld;
    p.lse = lse;
    const uint32_t n_keys = k1 - k0;
    const uint32_t tiles = rtc::ceil_div(p.group, rtc::FA_ROWS);
    uint32_t want = rtc::FD_TARGET_BLOCKS / (tiles * a->n_head_kv);
    want = want ? want : 1;
    const uint32_t len = rtc::fd_split_len(n_keys, want, max_splits);
    const uint32_t n_split = n_keys ? rtc::ceil_div(n_keys, len) : 1;
    p.split_len = len;
    if (n_split > 1) {
        p.part_o = part;
        p.part_l = part + (size_t)n_split * a->n_head * a->head_dim;
    }
    const dim3 grid(tiles, a->n_head_kv, n_split);
    loupe_status st = rtc::fa_dispatch(p, a->kv_type, a->head_dim, grid, stream);
    if (st || n_split == 1)
        return st;
    rtc::fd_combine_kernel<<<a->n_head, 128, 0, stream>>>(p.part_o, p.part_l, n_split, a->n_head,
                                                          a->head_dim, out, lse);
    return rtc::launch_status();
}

extern "C" loupe_status rt_cuda_flash_decode_dev(const rt_cuda_attn_desc *a,
                                                 const uint32_t *n_keys_dev, float *part,
                                                 uint32_t max_splits, float *out, float *lse,
                                                 cudaStream_t stream)
{
    if (a->n_head_kv == 0 || a->n_head % a->n_head_kv != 0 || max_splits == 0 || a->n_ctx == 0)
        return LOUPE_ERR_INVALID;
    rtc::fa_params p = {};
    p.q = a->q;
    p.q_ld = (size_t)a->n_head * a->head_dim;
    p.k = a->k;
    p.v = a->v;
    p.n_ctx = a->n_ctx;
    p.group = a->n_head / a->n_head_kv;
    p.n_head = a->n_head;
    p.n_tok = 1;
    p.k0 = 0;
    p.k1_dev = n_keys_dev;
    p.scale = a->scale;
    p.out = out;
    p.out_type = RT_CUDA_F32;
    p.out_ld = p.q_ld;
    p.lse = lse;
    const uint32_t tiles = rtc::ceil_div(p.group, rtc::FA_ROWS);
    uint32_t want = rtc::FD_TARGET_BLOCKS / (tiles * a->n_head_kv);
    want = want ? want : 1;
    p.fd_want = want;
    p.fd_max_splits = max_splits;
    /* The host rule's split count for any n <= n_ctx keys is at most want, max_splits and
     * ceil(n / FD_MIN_SPLIT) (a split is never shorter than FD_MIN_SPLIT keys): that bounds the
     * grid, so every split the rule can ask for has a slice. */
    uint32_t n_split = rtc::ceil_div(a->n_ctx, rtc::FD_MIN_SPLIT);
    n_split = n_split < want ? n_split : want;
    n_split = n_split < max_splits ? n_split : max_splits;
    n_split = n_split ? n_split : 1;
    if (n_split > 1) {
        p.part_o = part;
        p.part_l = part + (size_t)n_split * a->n_head * a->head_dim;
    }
    const dim3 grid(tiles, a->n_head_kv, n_split);
    loupe_status st = rtc::fa_dispatch(p, a->kv_type, a->head_dim, grid, stream);
    if (st || n_split == 1)
        return st;
    rtc::fd_combine_kernel<<<a->n_head, 128, 0, stream>>>(p.part_o, p.part_l, n_split, a->n_head,
                                                          a->head_dim, out, lse);
    return rtc::launch_status();
}
