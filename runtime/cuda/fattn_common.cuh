/*
 * Device code shared by flash_attn.cu (prefill) and flash_decode.cu: one tiled kernel with an
 * online softmax over blocks of 32 keys (fp32 on the CUDA cores; correctness first, tensor cores
 * later).
 *
 * Work split: a block takes one KV head, 16 "rows" and one split of the keys. Rows are the
 * (token, query head of the group) pairs of the chunk, row r = t·group + g, so all query heads
 * that share a KV head share its key/value tiles (GQA). Warp w owns rows w, w+4, w+8, w+12 (so a
 * group of 4 heads in decode uses all four warps). Per tile of 32 keys, lane j scores key j
 * against the row's query (query in shared memory, broadcast; keys padded to head_dim+1 floats,
 * so lanes hit different banks), the warp takes max and sum with shuffles, and lane l accumulates
 * output dims l, l+32, ... over the 32 values, each probability broadcast by a shuffle.
 *
 * Causality: row r (token t at position pos0 + t) sees keys [lo, min(hi, pos0 + t + 1)). A row
 * with no key gets out = 0 and lse = -inf (an empty partial, as rt_attn_partial defines it).
 */
#ifndef LOUPE_CUDA_FATTN_COMMON_CUH
#define LOUPE_CUDA_FATTN_COMMON_CUH

#include "runtime/cuda/common.cuh"

namespace rtc {
namespace {

constexpr int FA_WARPS = 4, FA_RPW = 4, FA_ROWS = FA_WARPS * FA_RPW, FA_KEYS = 32;

/* Flash-decoding's split rule: about FD_TARGET_BLOCKS blocks in flight (an H100's 132 SMs twice
 * over), never under FD_MIN_SPLIT keys a split, at most max_splits splits, whole tiles. `want`
 * is the number of splits the target asks for (>= 1). Shared by the host launcher and by the
 * kernel when the key count lives in device memory (a replayed CUDA graph), so both paths split
 * a given key range identically. Keys per split; 1 when there are no keys. */
constexpr uint32_t FD_TARGET_BLOCKS = 264, FD_MIN_SPLIT = 128;

__host__ __device__ inline uint32_t fd_split_len(uint32_t n_keys, uint32_t want,
                                                 uint32_t max_splits)
{
    if (n_keys == 0)
        return 1;
    uint32_t len = (uint32_t)(((uint64_t)n_keys + want - 1) / want);
    len = len < FD_MIN_SPLIT ? FD_MIN_SPLIT : len;
    if (((uint64_t)n_keys + len - 1) / len > max_splits)
        len = (uint32_t)(((uint64_t)n_keys + max_splits - 1) / max_splits);
    return (len + FA_KEYS - 1) / FA_KEYS * FA_KEYS;
}

struct fa_params {
    const float *q; /* (n_tok, n_head, head_dim); token t at q + t·q_ld */
    size_t q_ld;
    const void *k, *v; /* one layer: (n_head_kv, n_ctx, head_dim) */
    uint32_t n_ctx, group, n_head;
    uint32_t n_tok, pos0;
    uint32_t k0, k1;    /* keys considered (before the causal limit) */
    uint32_t split_len; /* keys per grid.z slice */
    /* Decode graphs: when set, k1 is read from here at run time (pos0 = k1 - 1, n_tok = 1) and
     * split_len = fd_split_len(k1 - k0, fd_want, fd_max_splits); slices past k1 are empty. */
    const uint32_t *k1_dev;
    uint32_t fd_want, fd_max_splits;
    float scale;
    void *out; /* (n_tok, n_head·head_dim), out_type; when part_o is NULL */
    rt_cuda_dtype out_type;
    size_t out_ld;
    float *lse;    /* (n_tok, n_head) or NULL */
    float *part_o; /* split partials for one token: (n_split, n_head, head_dim) */
    float *part_l; /* (n_split, n_head) */
};

template <int D32> constexpr size_t fa_smem_bytes()
{
    return sizeof(float) * ((size_t)FA_ROWS * D32 * 32 + (size_t)FA_KEYS * (D32 * 32 + 1) +
                            (size_t)FA_KEYS * D32 * 32);
}

template <int D32, typename KV>
__global__ void __launch_bounds__(FA_WARPS *WARP) fa_kernel(fa_params p)
{
    constexpr int HD = D32 * WARP;
    extern __shared__ float smem[];
    float *Qs = smem;                    /* (FA_ROWS, HD), pre-scaled */
    float *Ks = Qs + FA_ROWS * HD;       /* (FA_KEYS, HD + 1) */
    float *Vs = Ks + FA_KEYS * (HD + 1); /* (FA_KEYS, HD) */

    const uint32_t kvh = blockIdx.y, split = blockIdx.z;
    const uint32_t n_rows = p.n_tok * p.group, r0 = blockIdx.x * FA_ROWS;
    const uint32_t lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;

    for (uint32_t idx = threadIdx.x; idx < FA_ROWS * HD; idx += blockDim.x) {
        const uint32_t row = idx / HD, d = idx % HD, r = r0 + row;
        float val = 0.0f;
        if (r < n_rows) {
            const uint32_t t = r / p.group, h = kvh * p.group + r % p.group;
            val = p.q[(size_t)t * p.q_ld + (size_t)h * HD + d] * p.scale;
        }
        Qs[idx] = val;
    }

    uint32_t k1 = p.k1, pos0 = p.pos0, split_len = p.split_len;
    if (p.k1_dev) {
        k1 = *p.k1_dev;
        pos0 = k1 > 0 ? k1 - 1 : 0;
        split_len = fd_split_len(k1 > p.k0 ? k1 - p.k0 : 0, p.fd_want, p.fd_max_splits);
    }
    /* 64-bit so a slice far past k1 cannot wrap around; such a slice has lo >= hi: empty. */
    const uint64_t lo64 = (uint64_t)p.k0 + (uint64_t)split * split_len;
    const uint32_t lo = lo64 < k1 ? (uint32_t)lo64 : k1;
    uint32_t hi = min(k1, lo + split_len);
    const uint32_t r_last = min(r0 + FA_ROWS, n_rows) - 1;
    hi = min(hi, pos0 + r_last / p.group + 1);

    float m[FA_RPW], l[FA_RPW], acc[FA_RPW][D32];
    uint32_t lim[FA_RPW];
#pragma unroll
    for (int i = 0; i < FA_RPW; i++) {
        const uint32_t r = r0 + warp + FA_WARPS * i;
        lim[i] = r < n_rows ? min(hi, pos0 + r / p.group + 1) : 0;
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int dd = 0; dd < D32; dd++)
            acc[i][dd] = 0.0f;
    }

    const KV *Kg = static_cast<const KV *>(p.k) + (size_t)kvh * p.n_ctx * HD;
    const KV *Vg = static_cast<const KV *>(p.v) + (size_t)kvh * p.n_ctx * HD;
    for (uint32_t j0 = lo; j0 < hi; j0 += FA_KEYS) {
        __syncthreads(); /* the previous tile (and, first time, Qs) is done with */
        for (uint32_t idx = threadIdx.x; idx < FA_KEYS * HD; idx += blockDim.x) {
            const uint32_t j = idx / HD, d = idx % HD, pos = j0 + j;
            float kv = 0.0f, vv = 0.0f;
            if (pos < hi) {
                kv = to_f32(Kg[(size_t)pos * HD + d]);
                vv = to_f32(Vg[(size_t)pos * HD + d]);
            }
            Ks[j * (HD + 1) + d] = kv;
            Vs[j * HD + d] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < FA_RPW; i++) {
            if (lim[i] <= j0) /* warp-uniform: no key of this tile for this row */
                continue;
            const float *qr = Qs + (warp + FA_WARPS * i) * HD;
            const float *kr = Ks + lane * (HD + 1);
            const bool valid = j0 + lane < lim[i];
            float s = -INFINITY;
            if (valid) {
                float a0 = 0.0f, a1 = 0.0f;
#pragma unroll 8
                for (int d = 0; d < HD; d += 2) {
                    a0 += qr[d] * kr[d];
                    a1 += qr[d + 1] * kr[d + 1];
                }
                s = a0 + a1;
            }
            const float m_new = fmaxf(m[i], warp_max(s));
            const float corr = expf(m[i] - m_new); /* 0 while m is -inf */
            const float pj = valid ? expf(s - m_new) : 0.0f;
            l[i] = l[i] * corr + warp_sum(pj);
            m[i] = m_new;
#pragma unroll
            for (int dd = 0; dd < D32; dd++)
                acc[i][dd] *= corr;
            for (int jj = 0; jj < FA_KEYS; jj++) {
                const float pb = __shfl_sync(0xffffffffu, pj, jj);
                const float *vr = Vs + jj * HD + lane;
#pragma unroll
                for (int dd = 0; dd < D32; dd++)
                    acc[i][dd] += pb * vr[WARP * dd];
            }
        }
    }

#pragma unroll
    for (int i = 0; i < FA_RPW; i++) {
        const uint32_t r = r0 + warp + FA_WARPS * i;
        if (r >= n_rows)
            continue;
        const uint32_t t = r / p.group, h = kvh * p.group + r % p.group;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        const float lse = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
        if (p.part_o) {
            float *o = p.part_o + ((size_t)split * p.n_head + h) * HD;
#pragma unroll
            for (int dd = 0; dd < D32; dd++)
                o[lane + WARP * dd] = acc[i][dd] * inv;
            if (lane == 0)
                p.part_l[(size_t)split * p.n_head + h] = lse;
        } else {
            const size_t base = (size_t)t * p.out_ld + (size_t)h * HD;
#pragma unroll
            for (int dd = 0; dd < D32; dd++)
                store_act(p.out, base + lane + WARP * dd, acc[i][dd] * inv, p.out_type);
            if (p.lse && lane == 0)
                p.lse[(size_t)t * p.n_head + h] = lse;
        }
    }
}

template <int D32, typename KV> static loupe_status fa_launch(const fa_params &p, dim3 grid,
                                                               cudaStream_t stream)
{
    constexpr size_t smem = fa_smem_bytes<D32>();
    if (smem > 48 * 1024 &&
        cudaFuncSetAttribute(fa_kernel<D32, KV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)smem) != cudaSuccess)
        return LOUPE_ERR_GPU;
    fa_kernel<D32, KV><<<grid, FA_WARPS * WARP, smem, stream>>>(p);
    return launch_status();
}

/* Head dims with a compiled kernel: 32, 64, 96, 128, 256. */
static inline bool fa_head_dim_ok(uint32_t hd)
{
    return hd == 32 || hd == 64 || hd == 96 || hd == 128 || hd == 256;
}

template <typename KV> static loupe_status fa_dispatch_hd(const fa_params &p, uint32_t head_dim,
                                                          dim3 grid, cudaStream_t stream)
{
    switch (head_dim) {
    case 32: return fa_launch<1, KV>(p, grid, stream);
    case 64: return fa_launch<2, KV>(p, grid, stream);
    case 96: return fa_launch<3, KV>(p, grid, stream);
    case 128: return fa_launch<4, KV>(p, grid, stream);
    case 256: return fa_launch<8, KV>(p, grid, stream);
    default: return LOUPE_ERR_UNSUPPORTED;
    }
}

static inline loupe_status fa_dispatch(const fa_params &p, rt_cuda_dtype kv_type,
                                       uint32_t head_dim, dim3 grid, cudaStream_t stream)
{
    if (kv_type == RT_CUDA_BF16)
        return fa_dispatch_hd<__nv_bfloat16>(p, head_dim, grid, stream);
    return fa_dispatch_hd<float>(p, head_dim, grid, stream);
}

} // namespace
} // namespace rtc

#endif /* LOUPE_CUDA_FATTN_COMMON_CUH */
