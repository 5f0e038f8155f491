/*
 * rt_cuda_flash_decode(_dev): one query token over a key range of one layer's cache, split over
 * the keys (flash-decoding), then an exact merge of the splits. Its own kernel, not the prefill
 * one: decode has a single query row per head, so the work is streaming K and V at HBM speed.
 *
 * Grid: (splits, KV heads × head groups). A block (FD_WARPS warps) takes one KV head, up to GB
 * (1, 2 or 4) of the query heads that share it (GQA: the K/V bytes are read once for all of them;
 * groups of more than 4 heads take several head groups), and one split of the keys. Its warps
 * take tiles of FD_TILE keys in turn. Per tile a warp
 *   1. scores: each key row is read with 16-byte loads by LK lanes (a lane holds DPL dims of
 *      every head's query in registers, pre-scaled by scale·log2 e), partial dots are summed over
 *      the LK lanes by shuffles; one warp-wide load covers 32/LK whole keys (512 contiguous bytes
 *      for a bf16 head dim of 128), several loads in flight before the first use;
 *   2. online softmax in base 2, one key per lane (scores through shared memory);
 *   3. values: the same lane layout, each lane accumulating its DPL output dims for every head
 *      with the key's probability taken from the key's lane by a shuffle.
 * Where a tile's K (and V) fit 8 KiB per warp (bf16 up to head dim 128, fp32 up to 64: the
 * fd_shape::ASYNC case), a warp does not load K and V into registers when it needs them: each
 * lane copies its own pieces of the tile's K and V into its own slots of a per-warp
 * shared-memory buffer with cp.async, one phase ahead (K of the next tile while this tile's
 * softmax and values run, V of the next tile while its scores run), so each warp keeps about
 * 8 KiB in flight all the time instead of 4 KiB in bursts. A lane only reads the slots it wrote
 * itself: its own cp.async.wait_group (and a __syncwarp before a slot is overwritten) orders
 * everything. Other shapes load directly into registers.
 * At the end the warps' partials (m, l, o) merge in shared memory in a fixed order, and the
 * block writes one partial per head (or the final output when the grid has one split). A second
 * kernel merges the splits:
 *   L = max_s l_s,  w_s = e^{l_s - L},  out = Σ w_s o_s / Σ w_s,  lse = L + log Σ w_s.
 *
 * Split rule (fd_split_len): about FD_TARGET_BLOCKS blocks (132 SMs × 3 resident), at least
 * FD_MIN_SPLIT keys (one tile per warp), at most max_splits splits, whole tiles. It depends only
 * on the key count, so the decode-graph launcher (count read from device memory, grid sized for
 * n_ctx keys; splits past the keys are empty partials, out 0 and lse -inf) and the host one
 * split a given range identically. The merge gives empty partials weight exactly 0 and sums the
 * weights over a fixed 256-wide tree, so the two launchers agree bit for bit.
 *
 * Deterministic: no atomics; every sum has a fixed order.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/flash_decode.cuh"

namespace rtc {
namespace {

/* Registers are capped for FD_MIN_BLOCKS resident blocks per SM (12 warps, each with 8 KiB of
 * loads in flight on the bf16 head-dim-128 kernel), and the split rule aims at one wave of
 * them on an H100: 132 SMs × 3. */
constexpr int FD_WARPS = 4, FD_THREADS = FD_WARPS * WARP, FD_TILE = 32, FD_MIN_BLOCKS = 3;
constexpr uint32_t FD_TARGET_BLOCKS = 132 * FD_MIN_BLOCKS, FD_MIN_SPLIT = 128,
                   FD_MAX_SPLITS = 256;
constexpr int FD_COMBINE_THREADS = 256; /* >= FD_MAX_SPLITS and >= the largest head dim */
constexpr float FD_LOG2E = 1.44269504088896340736f, FD_LN2 = 0.69314718055994530942f;

/* Keys per split for n_keys keys: ceil(n / want), at least FD_MIN_SPLIT, at most max_splits
 * splits, rounded up to whole tiles; 1 when there are no keys. */
__host__ __device__ inline uint32_t fd_split_len(uint32_t n_keys, uint32_t want,
                                                 uint32_t max_splits)
{
    if (n_keys == 0)
        return 1;
    uint64_t len = ((uint64_t)n_keys + want - 1) / want;
    len = len < FD_MIN_SPLIT ? FD_MIN_SPLIT : len;
    if (((uint64_t)n_keys + len - 1) / len > max_splits)
        len = ((uint64_t)n_keys + max_splits - 1) / max_splits;
    return (uint32_t)((len + FD_TILE - 1) / FD_TILE * FD_TILE);
}

struct fd_params {
    const float *q;    /* (n_head, head_dim) */
    const void *k, *v; /* one layer: (n_head_kv, n_ctx, head_dim) */
    uint32_t n_ctx, group, n_head, n_hg; /* n_hg: head groups per KV head */
    uint32_t k0, k1;                     /* keys [k0, k1); k1 from *k1_dev when set */
    const uint32_t *k1_dev;
    uint32_t want, max_splits; /* the split rule's inputs */
    float scale2;              /* scale · log2 e */
    float *out, *lse;          /* when the grid has one split */
    float *part_o, *part_l;    /* (n_split, n_head, head_dim), (n_split, n_head) */
};

/* 16 bytes of K or V (8 bf16 or 4 floats) as floats. */
template <typename KV> __device__ __forceinline__ void unpack(uint4 w, float *f);
template <> __device__ __forceinline__ void unpack<__nv_bfloat16>(uint4 w, float *f)
{
    const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(ws[i] << 16);
        f[2 * i + 1] = __uint_as_float(ws[i] & 0xffff0000u);
    }
}
template <> __device__ __forceinline__ void unpack<float>(uint4 w, float *f)
{
    f[0] = __uint_as_float(w.x);
    f[1] = __uint_as_float(w.y);
    f[2] = __uint_as_float(w.z);
    f[3] = __uint_as_float(w.w);
}

/* cp.async of 16 bytes into shared memory, bypassing L1 (the cache is read once per token). */
__device__ __forceinline__ void fd_cp_async16(void *dst, const void *src)
{
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void fd_cp_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
/* Wait until at most N of this thread's committed groups are still pending. */
template <int N> __device__ __forceinline__ void fd_cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* The per-lane layout of a head dim and cache type (see the file comment). */
template <int D, typename KV> struct fd_shape {
    static constexpr int VE = 16 / (int)sizeof(KV);        /* elements per 16-byte piece */
    static constexpr int NVEC = D / VE;                     /* pieces per key row */
    static constexpr int NV = NVEC > WARP ? NVEC / WARP : 1; /* pieces per lane per key */
    static constexpr int LU = NVEC / NV;                    /* lanes holding dims of a key */
    static constexpr int LK = LU <= 4 ? 4 : LU <= 8 ? 8 : LU <= 16 ? 16 : 32; /* lanes per key */
    static constexpr int KPI = WARP / LK;                   /* keys per warp-wide load */
    static constexpr int STEPS = FD_TILE / KPI;             /* loads per lane per tile */
    static constexpr int PIECES = STEPS * NV;               /* 16-byte pieces per lane per tile */
    /* K and V of a tile through shared memory when a tile is at most 8 KiB per warp: 64 KiB a
     * block (4 warps × K and V), three blocks still fit an SM's 228 KiB. */
    static constexpr bool ASYNC = PIECES * WARP * 16 <= 8192;
    static constexpr size_t SMEM = ASYNC ? (size_t)FD_WARPS * 2 * PIECES * WARP * 16 : 0;
};

/* Sums of the GB partial dot products in v over the LK lanes of a key (LK >= 4 >= GB), with
 * fewer shuffles than GB butterflies: while a lane holds several heads' values it keeps half
 * of them and swaps the other half with its partner (lane ^ o), so the first log2(GB) levels
 * move GB/2, GB/4, ... values instead of GB each (5 shuffles instead of 16 for GB 4, LK 16).
 * Returns head dv / (LK / GB)'s full sum, dv = lane % LK; the same in all LK / GB lanes that
 * hold that head. */
template <int GB, int LK>
__device__ __forceinline__ float reduce_heads(float (&v)[GB], uint32_t lane)
{
    static_assert(GB <= LK && (GB & (GB - 1)) == 0, "head group of 1, 2 or 4");
    int o = LK / 2;
#pragma unroll
    for (int n = GB; n > 1; n /= 2, o /= 2) {
        const bool hi_half = (lane & (uint32_t)o) != 0; /* keeps the upper half of its heads */
#pragma unroll
        for (int j = 0; j < n / 2; j++) {
            const float send = hi_half ? v[j] : v[n / 2 + j];
            const float keep = hi_half ? v[n / 2 + j] : v[j];
            v[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
    }
    float r = v[0];
#pragma unroll
    for (; o > 0; o /= 2)
        r += __shfl_xor_sync(0xffffffffu, r, o);
    return r;
}

/* The cache is read once per token: keep it out of L1. */
__device__ __forceinline__ uint4 ld_kv(const void *p)
{
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}

template <int D, int GB, typename KV>
__global__ void __launch_bounds__(FD_THREADS, FD_MIN_BLOCKS) fd_kernel(fd_params p)
{
    using S = fd_shape<D, KV>;
    constexpr int VE = S::VE, NVEC = S::NVEC, NV = S::NV, LU = S::LU, LK = S::LK, KPI = S::KPI;
    constexpr int DPL = NV * VE;                    /* dims per lane */
    constexpr int STEPS = S::STEPS;
    constexpr int CH = STEPS < 8 / NV ? STEPS : 8 / NV; /* loads in flight together */
    constexpr bool ASYNC = S::ASYNC;
    static_assert(NVEC % NV == 0 && LU <= WARP && STEPS % CH == 0, "head dim layout");

    __shared__ float s_sc[FD_WARPS][GB][FD_TILE];
    __shared__ float s_m[FD_WARPS][GB], s_l[FD_WARPS][GB];
    __shared__ float s_o[FD_WARPS][GB][D];
    /* fd_shape::ASYNC: (warp, K|V, piece st·NV + v, lane) 16-byte slots; lanes adjacent, so a
     * warp-wide read or copy of one piece is conflict-free. */
    extern __shared__ uint4 s_ring[];

    const uint32_t lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const uint32_t ks = lane / LK, dv = lane % LK;
    const bool act = dv < (uint32_t)LU;
    const uint32_t split = blockIdx.x, kvh = blockIdx.y / p.n_hg, hg = blockIdx.y % p.n_hg;
    const uint32_t g0 = hg * GB; /* first head of the group handled here, within the KV group */

    const uint32_t k1 = p.k1_dev ? *p.k1_dev : p.k1;
    const uint32_t len = fd_split_len(k1 > p.k0 ? k1 - p.k0 : 0, p.want, p.max_splits);
    const uint64_t lo64 = (uint64_t)p.k0 + (uint64_t)split * len;
    const uint32_t lo = lo64 < k1 ? (uint32_t)lo64 : k1;
    const uint32_t hi = (uint64_t)lo + len < k1 ? lo + len : k1;

    /* This lane's dims: pieces dv + LU·v. */
    float qr[GB][DPL];
#pragma unroll
    for (int i = 0; i < GB; i++) {
        const bool hv = act && g0 + i < p.group;
        const float *qh = p.q + (size_t)(kvh * p.group + g0 + i) * D;
#pragma unroll
        for (int v = 0; v < NV; v++)
#pragma unroll
            for (int e = 0; e < VE; e++)
                qr[i][v * VE + e] = hv ? qh[(dv + LU * v) * VE + e] * p.scale2 : 0.0f;
    }
    float m[GB], l[GB], acc[GB][DPL];
#pragma unroll
    for (int i = 0; i < GB; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < DPL; e++)
            acc[i][e] = 0.0f;
    }

    const KV *Kg = static_cast<const KV *>(p.k) + (size_t)kvh * p.n_ctx * D;
    const KV *Vg = static_cast<const KV *>(p.v) + (size_t)kvh * p.n_ctx * D;
    /* This lane's slot of piece (st, v) in buffer b (0 K, 1 V). */
    auto slot = [&](int b, int st, int v) -> uint4 * {
        return s_ring + ((size_t)(warp * 2 + b) * S::PIECES + st * NV + v) * WARP + lane;
    };
    /* Copy this lane's pieces of the tile at j0 of G into buffer b, as one commit group (empty
     * when the tile is past hi, so every lane commits the same number of groups). Keys past hi
     * are not copied: the reads below give 0 for them without looking at the slot. */
    auto prefetch = [&](int b, const KV *G, uint32_t j0) {
        if (act && j0 < hi)
#pragma unroll
            for (int st = 0; st < STEPS; st++) {
                const uint32_t key = j0 + st * KPI + ks;
#pragma unroll
                for (int v = 0; v < NV; v++)
                    if (key < hi)
                        fd_cp_async16(slot(b, st, v), G + (size_t)key * D + (dv + LU * v) * VE);
            }
        fd_cp_commit();
    };
    const uint32_t first = lo + warp * FD_TILE;
    if constexpr (ASYNC) {
        prefetch(0, Kg, first);
        prefetch(1, Vg, first);
    }
    for (uint32_t j0 = first; j0 < hi; j0 += FD_WARPS * FD_TILE) {
        const uint32_t jn = j0 + FD_WARPS * FD_TILE; /* this warp's next tile */
        if constexpr (ASYNC)
            fd_cp_wait<1>(); /* pending: K(j0), V(j0) in that order; K(j0) is now here */
        /* 1. scores of the tile's keys */
#pragma unroll
        for (int c0 = 0; c0 < STEPS; c0 += CH) {
            uint4 kb[CH][NV];
#pragma unroll
            for (int st = 0; st < CH; st++) {
                const uint32_t key = j0 + (c0 + st) * KPI + ks;
#pragma unroll
                for (int v = 0; v < NV; v++)
                    kb[st][v] = !(act && key < hi) ? make_uint4(0, 0, 0, 0)
                                : ASYNC ? *slot(0, c0 + st, v)
                                        : ld_kv(Kg + (size_t)key * D + (dv + LU * v) * VE);
            }
#pragma unroll
            for (int st = 0; st < CH; st++) {
                float part[GB];
#pragma unroll
                for (int i = 0; i < GB; i++)
                    part[i] = 0.0f;
#pragma unroll
                for (int v = 0; v < NV; v++) {
                    float kf[VE];
                    unpack<KV>(kb[st][v], kf);
#pragma unroll
                    for (int i = 0; i < GB; i++)
#pragma unroll
                        for (int e = 0; e < VE; e++)
                            part[i] = fmaf(qr[i][v * VE + e], kf[e], part[i]);
                }
                const uint32_t kk = (c0 + st) * KPI + ks;
                if constexpr (ASYNC) {
                    const float sc = reduce_heads<GB, LK>(part, lane);
                    if (dv % (LK / GB) == 0) /* the lanes holding a head's whole dot product */
                        s_sc[warp][dv / (LK / GB)][kk] = j0 + kk < hi ? sc : -INFINITY;
                } else { /* the register-loading shapes: plain butterflies spill less there */
#pragma unroll
                    for (int o = LK / 2; o > 0; o /= 2)
#pragma unroll
                        for (int i = 0; i < GB; i++)
                            part[i] += __shfl_xor_sync(0xffffffffu, part[i], o);
                    if (dv == 0)
#pragma unroll
                        for (int i = 0; i < GB; i++)
                            s_sc[warp][i][kk] = j0 + kk < hi ? part[i] : -INFINITY;
                }
            }
        }
        __syncwarp(); /* also orders this lane's reads of its K slots before the copy below */
        if constexpr (ASYNC)
            prefetch(0, Kg, jn); /* the next tile's K, in flight during softmax and values */
        /* 2. online softmax, key `lane` of the tile (the tile has at least one key: m_new is
         * finite, so corr = 2^(-inf) = 0 on the first tile and empty keys get p = 0) */
        float pj[GB];
#pragma unroll
        for (int i = 0; i < GB; i++) {
            const float s = s_sc[warp][i][lane];
            const float m_new = fmaxf(m[i], warp_max(s));
            const float corr = exp2f(m[i] - m_new);
            pj[i] = exp2f(s - m_new);
            l[i] = l[i] * corr + warp_sum(pj[i]);
            m[i] = m_new;
#pragma unroll
            for (int e = 0; e < DPL; e++)
                acc[i][e] *= corr;
        }
        __syncwarp(); /* s_sc is read before the next tile writes it */
        if constexpr (ASYNC)
            fd_cp_wait<1>(); /* pending: V(j0), K(jn); V(j0) is now here */
        /* 3. values */
#pragma unroll
        for (int c0 = 0; c0 < STEPS; c0 += CH) {
            uint4 vb[CH][NV];
#pragma unroll
            for (int st = 0; st < CH; st++) {
                const uint32_t key = j0 + (c0 + st) * KPI + ks;
#pragma unroll
                for (int v = 0; v < NV; v++)
                    vb[st][v] = !(act && key < hi) ? make_uint4(0, 0, 0, 0)
                                : ASYNC ? *slot(1, c0 + st, v)
                                        : ld_kv(Vg + (size_t)key * D + (dv + LU * v) * VE);
            }
#pragma unroll
            for (int st = 0; st < CH; st++) {
                const int src = (c0 + st) * KPI + (int)ks; /* the key's lane in step 2 */
                float pk[GB];
#pragma unroll
                for (int i = 0; i < GB; i++)
                    pk[i] = __shfl_sync(0xffffffffu, pj[i], src);
#pragma unroll
                for (int v = 0; v < NV; v++) {
                    float vf[VE];
                    unpack<KV>(vb[st][v], vf);
#pragma unroll
                    for (int i = 0; i < GB; i++)
#pragma unroll
                        for (int e = 0; e < VE; e++)
                            acc[i][v * VE + e] = fmaf(pk[i], vf[e], acc[i][v * VE + e]);
                }
            }
        }
        if constexpr (ASYNC) {
            __syncwarp(); /* this lane's reads of its V slots come before the copy below */
            prefetch(1, Vg, jn); /* the next tile's V, in flight during its scores */
        }
    }
    if constexpr (ASYNC)
        fd_cp_wait<0>(); /* nothing real is pending here; leave no copy behind regardless */

    /* Lanes of different key slots hold the same dims: sum them (same value in every slot). */
#pragma unroll
    for (int o = LK; o < WARP; o *= 2)
#pragma unroll
        for (int i = 0; i < GB; i++)
#pragma unroll
            for (int e = 0; e < DPL; e++)
                acc[i][e] += __shfl_xor_sync(0xffffffffu, acc[i][e], o);
    if (ks == 0 && act)
#pragma unroll
        for (int i = 0; i < GB; i++)
#pragma unroll
            for (int v = 0; v < NV; v++)
#pragma unroll
                for (int e = 0; e < VE; e++)
                    s_o[warp][i][(dv + LU * v) * VE + e] = acc[i][v * VE + e];
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < GB; i++) {
            s_m[warp][i] = m[i];
            s_l[warp][i] = l[i];
        }
    __syncthreads();

    /* Merge the warps (a warp without keys has m = -inf: weight 0). */
    for (uint32_t idx = threadIdx.x; idx < (uint32_t)(GB * D); idx += FD_THREADS) {
        const uint32_t i = idx / D, d = idx % D;
        if (g0 + i >= p.group)
            continue;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < FD_WARPS; w++)
            M = fmaxf(M, s_m[w][i]);
        float o = 0.0f, lse = -INFINITY;
        if (M != -INFINITY) {
            float den = 0.0f, num = 0.0f;
#pragma unroll
            for (int w = 0; w < FD_WARPS; w++) {
                const float e = s_m[w][i] == -INFINITY ? 0.0f : exp2f(s_m[w][i] - M);
                den = fmaf(e, s_l[w][i], den);
                num = fmaf(e, s_o[w][i][d], num);
            }
            o = num / den;
            lse = M * FD_LN2 + logf(den);
        }
        const uint32_t h = kvh * p.group + g0 + i;
        if (gridDim.x == 1) {
            p.out[(size_t)h * D + d] = o;
            if (d == 0)
                p.lse[h] = lse;
        } else {
            p.part_o[((size_t)split * p.n_head + h) * D + d] = o;
            if (d == 0)
                p.part_l[(size_t)split * p.n_head + h] = lse;
        }
    }
}

/* One block per head: weights of the splits once (thread s takes split s), their sum over a
 * fixed 256-wide tree (threads past n_split add 0), then out[d] by thread d. */
__global__ void __launch_bounds__(FD_COMBINE_THREADS)
    fd_combine_kernel(const float *part_o, const float *part_l, uint32_t n_split, uint32_t n_head,
                      uint32_t head_dim, float *out, float *lse)
{
    __shared__ float s_w[FD_COMBINE_THREADS];
    __shared__ float s_red[FD_COMBINE_THREADS / WARP];
    const uint32_t h = blockIdx.x, t = threadIdx.x, lane = t % WARP, warp = t / WARP;
    const float ls = t < n_split ? part_l[(size_t)t * n_head + h] : -INFINITY;
    float L = warp_max(ls);
    if (lane == 0)
        s_red[warp] = L;
    __syncthreads();
    L = -INFINITY;
#pragma unroll
    for (int w = 0; w < FD_COMBINE_THREADS / WARP; w++)
        L = fmaxf(L, s_red[w]);
    const float w_t = ls == -INFINITY ? 0.0f : expf(ls - L);
    s_w[t] = w_t;
    const float ws = warp_sum(w_t);
    __syncthreads(); /* everyone has read s_red's maxima */
    if (lane == 0)
        s_red[warp] = ws;
    __syncthreads();
    float wsum = 0.0f;
#pragma unroll
    for (int w = 0; w < FD_COMBINE_THREADS / WARP; w++)
        wsum += s_red[w];
    if (L == -INFINITY) { /* every split empty */
        for (uint32_t d = t; d < head_dim; d += FD_COMBINE_THREADS)
            out[(size_t)h * head_dim + d] = 0.0f;
        if (t == 0)
            lse[h] = -INFINITY;
        return;
    }
    for (uint32_t d = t; d < head_dim; d += FD_COMBINE_THREADS) {
        float acc = 0.0f;
        for (uint32_t s = 0; s < n_split; s++)
            if (s_w[s] > 0.0f)
                acc = fmaf(s_w[s], part_o[((size_t)s * n_head + h) * head_dim + d], acc);
        out[(size_t)h * head_dim + d] = acc / wsum;
    }
    if (t == 0)
        lse[h] = L + logf(wsum);
}

/* Launch with the shared-memory ring of fd_shape: more than the default 48 KiB of dynamic
 * shared memory needs the kernel's attribute raised, and the carveout set to the most shared
 * memory so that FD_MIN_BLOCKS blocks fit an SM. The attributes are set on every launch (cheap,
 * host side; a captured graph keeps the launch, not the call) in relaxed capture mode, so that
 * this is allowed while a decode graph is being captured. */
template <int D, int GB, typename KV>
loupe_status fd_launch_one(const fd_params &p, dim3 grid, cudaStream_t stream)
{
    constexpr size_t smem = fd_shape<D, KV>::SMEM;
    if (smem > 48 * 1024) {
        cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
        if (cudaThreadExchangeStreamCaptureMode(&mode) != cudaSuccess)
            return LOUPE_ERR_GPU;
        cudaError_t e = cudaFuncSetAttribute(fd_kernel<D, GB, KV>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute(fd_kernel<D, GB, KV>,
                                     cudaFuncAttributePreferredSharedMemoryCarveout,
                                     (int)cudaSharedmemCarveoutMaxShared);
        cudaThreadExchangeStreamCaptureMode(&mode);
        if (e != cudaSuccess)
            return LOUPE_ERR_GPU;
    }
    fd_kernel<D, GB, KV><<<grid, FD_THREADS, smem, stream>>>(p);
    return launch_status();
}

template <int D, int GB>
loupe_status fd_launch_kv(const fd_params &p, rt_cuda_dtype kv_type, dim3 grid,
                          cudaStream_t stream)
{
    if (kv_type == RT_CUDA_BF16)
        return fd_launch_one<D, GB, __nv_bfloat16>(p, grid, stream);
    return fd_launch_one<D, GB, float>(p, grid, stream);
}

template <int GB>
loupe_status fd_launch_hd(const fd_params &p, rt_cuda_dtype kv_type, uint32_t head_dim,
                          dim3 grid, cudaStream_t stream)
{
    switch (head_dim) {
    case 32: return fd_launch_kv<32, GB>(p, kv_type, grid, stream);
    case 64: return fd_launch_kv<64, GB>(p, kv_type, grid, stream);
    case 96: return fd_launch_kv<96, GB>(p, kv_type, grid, stream);
    case 128: return fd_launch_kv<128, GB>(p, kv_type, grid, stream);
    case 256: return fd_launch_kv<256, GB>(p, kv_type, grid, stream);
    default: return LOUPE_ERR_UNSUPPORTED;
    }
}

/* Both launchers: keys [k0, k1) (k1 from k1_dev when set), the grid sized for grid_keys keys
 * (the count itself, or n_ctx for the device-count form). */
loupe_status fd_run(const rt_cuda_attn_desc *a, uint32_t k0, uint32_t k1, const uint32_t *k1_dev,
                    uint32_t grid_keys, float *part, uint32_t max_splits, float *out, float *lse,
                    cudaStream_t stream)
{
    if (a->n_head_kv == 0 || a->n_head % a->n_head_kv != 0 || max_splits == 0)
        return LOUPE_ERR_INVALID;
    const uint32_t group = a->n_head / a->n_head_kv, D = a->head_dim;
    const int gb = group == 1 ? 1 : group == 2 ? 2 : 4;
    fd_params p = {};
    p.q = a->q;
    p.k = a->k;
    p.v = a->v;
    p.n_ctx = a->n_ctx;
    p.group = group;
    p.n_head = a->n_head;
    p.n_hg = ceil_div(group, (uint32_t)gb);
    p.k0 = k0;
    p.k1 = k1;
    p.k1_dev = k1_dev;
    p.max_splits = max_splits < FD_MAX_SPLITS ? max_splits : FD_MAX_SPLITS;
    const uint32_t blocks_per_split = a->n_head_kv * p.n_hg;
    p.want = FD_TARGET_BLOCKS / blocks_per_split ? FD_TARGET_BLOCKS / blocks_per_split : 1;
    p.scale2 = a->scale * FD_LOG2E;
    p.out = out;
    p.lse = lse;
    uint32_t n_split = 1;
    if (!k1_dev) {
        n_split = grid_keys ? ceil_div(grid_keys, fd_split_len(grid_keys, p.want, p.max_splits))
                            : 1;
    } else {
        /* The rule's split count for any n <= grid_keys keys is at most want, max_splits and
         * ceil(n / FD_MIN_SPLIT) (a split is never shorter): that bounds the grid. */
        n_split = ceil_div(grid_keys, FD_MIN_SPLIT);
        n_split = n_split < p.want ? n_split : p.want;
        n_split = n_split < p.max_splits ? n_split : p.max_splits;
        n_split = n_split ? n_split : 1;
    }
    if (n_split > 1) {
        p.part_o = part;
        p.part_l = part + (size_t)n_split * a->n_head * D;
    }
    const dim3 grid(n_split, blocks_per_split, 1);
    loupe_status st = gb == 1   ? fd_launch_hd<1>(p, a->kv_type, D, grid, stream)
                      : gb == 2 ? fd_launch_hd<2>(p, a->kv_type, D, grid, stream)
                                : fd_launch_hd<4>(p, a->kv_type, D, grid, stream);
    if (st || n_split == 1)
        return st;
    fd_combine_kernel<<<a->n_head, FD_COMBINE_THREADS, 0, stream>>>(p.part_o, p.part_l, n_split,
                                                                    a->n_head, D, out, lse);
    return launch_status();
}

} // namespace
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
    if (k1 < k0)
        return LOUPE_ERR_INVALID;
    return rtc::fd_run(a, k0, k1, nullptr, k1 - k0, part, max_splits, out, lse, stream);
}

extern "C" loupe_status rt_cuda_flash_decode_dev(const rt_cuda_attn_desc *a,
                                                 const uint32_t *n_keys_dev, float *part,
                                                 uint32_t max_splits, float *out, float *lse,
                                                 cudaStream_t stream)
{
    if (a->n_ctx == 0)
        return LOUPE_ERR_INVALID;
    return rtc::fd_run(a, 0, 0, n_keys_dev, a->n_ctx, part, max_splits, out, lse, stream);
}
