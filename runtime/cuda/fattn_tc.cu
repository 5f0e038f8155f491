/*
 * rt_cuda_flash_attn_tc: causal flash attention on tensor cores (mma.sync m16n8k16 with fp16
 * operands, fp32 accumulation), FlashAttention-2's work split.
 *
 * Rows and blocks: as in the CUDA-core kernel, a "row" is a (token, query head of the group)
 * pair, r = t·group + g, so the query heads of one KV head share its K/V tiles (GQA). Grid
 * (row blocks, KV heads); a block takes BM = 16·MT·NW consecutive rows, warp w the 16·MT rows
 * from 16·MT·w (MT m16 tiles), so a warp's rows are a narrow range of positions. Row blocks run
 * last-first: in a long causal call the late rows have the most keys, and they start first.
 *
 * Why fp16 and not the cache's bf16: Q comes from the projection in fp32, and rounding it to bf16
 * (2^-8) moved scores by up to ~0.03 with large keys (attention sinks), row errors near 2e-2;
 * fp16 (2^-11) is 8x tighter. bf16 K/V convert to fp16 exactly (8 significant bits fit in 11)
 * for 6e-5 <= |x| <= 65504; smaller values lose relative precision (subnormals, absolute error
 * <= 3e-8), larger ones saturate at 65504, as do Q elements past it after scaling.
 *
 * Per block: the Q tile is converted once (fp32 · scale · log2 e → fp16) into shared memory and
 * read from there with ldmatrix (into registers once when QREG). K/V tiles of BN keys stream
 * through an ST-deep ring of shared-memory stages filled by cp.async (16-byte copies, zero-fill
 * past the block's last key, so no uninitialised cache row ever reaches an mma). Each thread
 * converts the chunks it copied from bf16 to fp16 in place once its copies have landed; then one
 * barrier per tile publishes the tile, and the copy issued after it overwrites the stage every
 * warp finished before it.
 *
 * Shared-memory rows are HD 16-bit elements (HD/8 chunks of 16 bytes); chunk c of row r is at
 * c ^ (r & 7), so the 8 rows an ldmatrix reads at one logical chunk hit 8 different bank groups.
 *
 * Per tile and warp: S = Q·Kᵀ (ldmatrix of K rows is Kᵀ's column-major fragment), causal mask
 * only on tiles that cross a row's limit (key j is visible to row r iff j <= pos0 + t(r)); tiles
 * past every row of the warp are skipped; online softmax in base 2 (m = running max, l = the
 * thread's part of the row sum, reduced over the row's 4 lanes at the end); P is repacked from
 * the S accumulators into A fragments in registers (fp16) and O += P·V (ldmatrix.trans of V).
 * A masked score is -inf; while a row's max is still -inf its reference is 0, so exp2 gives 0,
 * never NaN. Every row of a prefill sees at least key 0, so its sum is > 0 at the end.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/fattn_tc.cuh"

namespace rtc {
namespace {

typedef __nv_bfloat16 bf16;
typedef uint16_t h16; /* an fp16 (or, before conversion, a bf16) element in shared memory */

struct tc_params {
    const float *q; /* (n_tok, n_head, head_dim) fp32; token t at q + t·q_ld */
    size_t q_ld;
    const bf16 *k, *v; /* one layer: (n_head_kv, n_ctx, head_dim) */
    uint32_t n_ctx, group, n_head, n_tok, pos0;
    float qscale; /* scale · log2 e */
    void *out;    /* row t, head h at t·out_ld + h·head_dim, out_type */
    rt_cuda_dtype out_type;
    size_t out_ld;
    float *lse; /* (n_tok, n_head) natural log, or NULL */
};

/* ==== PTX wrappers (sm_80+) ================================================================ */

/* Device code only for sm_80 and newer (mma.sync m16n8k16, cp.async); the host launcher never
 * picks this kernel on an older GPU, where the body compiles to nothing. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define LOUPE_FATTN_TC_DEVICE 1
#endif

#ifdef LOUPE_FATTN_TC_DEVICE

__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global → shared, asynchronously; the bytes past `src_bytes` (0 or 16) are zeros. */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, uint32_t src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Four 8x8 b16 matrices; lane i gives the row address of matrix i/8, row i%8; the thread gets
 * row lane/4, columns 2(lane%4), +1 of each (with .trans: column lane/4, rows 2(lane%4), +1). */
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t r[4])
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t r[4])
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* d += a·b, m16n8k16, fp16 operands, fp32 accumulators (row g = lane/4: d[0], d[1] at columns
 * 2(lane%4), +1; row g + 8: d[2], d[3]). */
__device__ __forceinline__ void mma_f16(float d[4], const uint32_t a[4], uint32_t b0,
                                        uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float exp2_approx(float x) /* exp2(-inf) = +0 */
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* Two floats → fp16x2, lo in the low half (the lower column of a fragment pair), rounded to
 * nearest, saturating at ±65504 instead of overflowing to infinity. */
__device__ __forceinline__ uint32_t pack_f16(float lo, float hi)
{
    uint32_t r;
    asm("cvt.rn.satfinite.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* bf16x2 → fp16x2 (exact in fp16's normal range). */
__device__ __forceinline__ uint32_t bf16x2_to_f16x2(uint32_t w)
{
    return pack_f16(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

#endif /* LOUPE_FATTN_TC_DEVICE */

/* ==== The kernel =========================================================================== */

template <int HD, int MT, int NW, int BN, int ST, bool QREG> struct tc_shape {
    static constexpr int BM = 16 * MT * NW; /* rows per block */
    static constexpr int THREADS = 32 * NW;
    static constexpr int CH = HD / 8; /* 16-byte chunks per shared-memory row */
    static constexpr size_t smem = sizeof(h16) * ((size_t)BM * HD + 2 * (size_t)ST * BN * HD);
    static_assert((HD == 64 || HD == 128) && BN % 16 == 0 && ST >= 2, "tile shape (the swizzle "
                  "needs at least 8 chunks a row)");
    static_assert((BN * CH) % THREADS == 0, "whole K/V chunks per thread");
};

/* Offset (in elements) of logical chunk ch of shared-memory row `row`. */
template <int HD> __device__ __forceinline__ uint32_t swz(uint32_t row, uint32_t ch)
{
    return row * HD + ((ch ^ (row & 7)) << 3);
}

template <int HD, int MT, int NW, int BN, int ST, bool QREG>
__global__ void __launch_bounds__(32 * NW, 1) fa_tc_kernel(tc_params p)
{
#ifdef LOUPE_FATTN_TC_DEVICE
    typedef tc_shape<HD, MT, NW, BN, ST, QREG> S;
    constexpr int BM = S::BM, NT = S::THREADS, CH = S::CH;
    constexpr int KS = HD / 16; /* k-steps of Q·Kᵀ */
    constexpr int NS = BN / 8;  /* n8 tiles of S */
    constexpr int NO = HD / 8;  /* n8 tiles of O */
    extern __shared__ uint4 fa_tc_smem[];
    h16 *Qs = reinterpret_cast<h16 *>(fa_tc_smem); /* (BM, HD) fp16, swizzled */
    h16 *Ks = Qs + BM * HD;                         /* (ST, BN, HD), swizzled */
    h16 *Vs = Ks + ST * BN * HD;

    const uint32_t tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const uint32_t g = lane / 4, c = lane % 4;
    const uint32_t kvh = blockIdx.y;
    const uint32_t n_rows = p.n_tok * p.group, r0 = (gridDim.x - 1 - blockIdx.x) * BM;
    const uint32_t r_end = min(r0 + BM, n_rows);
    const uint32_t kv_hi = p.pos0 + (r_end - 1) / p.group + 1; /* keys this block may see */
    const uint32_t n_tiles = (kv_hi + BN - 1) / BN;
    const bf16 *Kg = p.k + (size_t)kvh * p.n_ctx * HD;
    const bf16 *Vg = p.v + (size_t)kvh * p.n_ctx * HD;

    /* Q tile → shared memory, rows past the chunk zero. */
    for (uint32_t idx = tid; idx < (uint32_t)(BM * CH); idx += NT) {
        const uint32_t row = idx / CH, ch = idx % CH, r = r0 + row;
        float f[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        if (r < n_rows) {
            const uint32_t t = r / p.group, h = kvh * p.group + r % p.group;
            const float *src = p.q + (size_t)t * p.q_ld + (size_t)h * HD + ch * 8;
#pragma unroll
            for (int e = 0; e < 8; e++)
                f[e] = src[e] * p.qscale;
        }
        uint4 w;
        w.x = pack_f16(f[0], f[1]);
        w.y = pack_f16(f[2], f[3]);
        w.z = pack_f16(f[4], f[5]);
        w.w = pack_f16(f[6], f[7]);
        *reinterpret_cast<uint4 *>(Qs + swz<HD>(row, ch)) = w;
    }

    /* Thread tid copies (and later converts) chunks tid, tid + NT, ... of each K/V tile. */
    auto load_tile = [&](uint32_t tile, uint32_t stage) {
        const uint32_t j0 = tile * BN;
        h16 *ks = Ks + stage * BN * HD, *vs = Vs + stage * BN * HD;
#pragma unroll
        for (int i = 0; i < BN * CH / NT; i++) {
            const uint32_t idx = tid + i * NT, row = idx / CH, ch = idx % CH, key = j0 + row;
            const bool ok = key < kv_hi;
            const size_t off = (size_t)(ok ? key : 0) * HD + ch * 8;
            cp_async16(smem_addr(ks + swz<HD>(row, ch)), Kg + off, ok ? 16 : 0);
            cp_async16(smem_addr(vs + swz<HD>(row, ch)), Vg + off, ok ? 16 : 0);
        }
    };
    auto convert_tile = [&](uint32_t stage) {
#pragma unroll
        for (int i = 0; i < BN * CH / NT; i++) {
            const uint32_t idx = tid + i * NT, row = idx / CH, ch = idx % CH;
            uint4 *kp = reinterpret_cast<uint4 *>(Ks + stage * BN * HD + swz<HD>(row, ch));
            uint4 *vp = reinterpret_cast<uint4 *>(Vs + stage * BN * HD + swz<HD>(row, ch));
            uint4 kw = *kp, vw = *vp;
            kw.x = bf16x2_to_f16x2(kw.x);
            kw.y = bf16x2_to_f16x2(kw.y);
            kw.z = bf16x2_to_f16x2(kw.z);
            kw.w = bf16x2_to_f16x2(kw.w);
            vw.x = bf16x2_to_f16x2(vw.x);
            vw.y = bf16x2_to_f16x2(vw.y);
            vw.z = bf16x2_to_f16x2(vw.z);
            vw.w = bf16x2_to_f16x2(vw.w);
            *kp = kw;
            *vp = vw;
        }
    };
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if ((uint32_t)s < n_tiles)
            load_tile(s, s);
        cp_async_commit(); /* empty groups keep the count uniform */
    }

    /* This warp's rows and their exclusive key limits (0 for rows past the chunk: all masked,
     * never stored). */
    const uint32_t wr0 = r0 + warp * 16 * MT;
    const bool w_active = wr0 < n_rows;
    const uint32_t w_lim_lo = p.pos0 + wr0 / p.group + 1;                       /* all rows see */
    const uint32_t w_lim_hi = p.pos0 + (min(wr0 + 16 * MT, n_rows) - 1) / p.group + 1; /* some */
    uint32_t lim[MT][2];
#pragma unroll
    for (int mi = 0; mi < MT; mi++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const uint32_t r = wr0 + 16 * mi + 8 * hf + g;
            lim[mi][hf] = r < n_rows ? p.pos0 + r / p.group + 1 : 0;
        }

    float o[MT][NO][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mi = 0; mi < MT; mi++) {
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            m[mi][hf] = -INFINITY;
            l[mi][hf] = 0.0f;
        }
#pragma unroll
        for (int n = 0; n < NO; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                o[mi][n][e] = 0.0f;
    }

    /* ldmatrix row addresses. Q (A fragment, x4 = rows 0-7|8-15 × k 0-7|8-15): lane → row
     * (lane & 7) + 8·bit 3, chunk 2·kk + bit 4. K (x4 = one n8 tile × four k-chunks): lane →
     * key (lane & 7), chunk + (lane >> 3). V (.trans, x4 = keys 0-7|8-15 × two n8 tiles):
     * lane → key (lane & 7) + 8·bit 3, chunk n + bit 4. Every row here is ≡ lane (mod 8). */
    const uint32_t q_row = warp * 16 * MT + (lane & 7) + 8 * ((lane >> 3) & 1);
    const uint32_t v_key = (lane & 7) + 8 * ((lane >> 3) & 1);

    __syncthreads(); /* Q tile written */
    uint32_t qf[QREG ? MT : 1][QREG ? KS : 1][4];
    if constexpr (QREG) {
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
                ldsm_x4(smem_addr(Qs + swz<HD>(q_row + 16 * mi, 2 * kk + (lane >> 4))),
                        qf[mi][kk]);
    }

    for (uint32_t it = 0; it < n_tiles; it++) {
        cp_async_wait<ST - 2>(); /* this thread's copies of tile `it` have landed */
        convert_tile(it % ST);
        __syncthreads(); /* tile `it` is fp16 everywhere; stage (it - 1) % ST is free */
        {
            const uint32_t nt = it + ST - 1;
            if (nt < n_tiles)
                load_tile(nt, nt % ST);
            cp_async_commit();
        }
        const uint32_t j0 = it * BN;
        if (!w_active || j0 >= w_lim_hi)
            continue; /* warp-uniform: no row of this warp sees this tile */
        const h16 *ks = Ks + (it % ST) * BN * HD, *vs = Vs + (it % ST) * BN * HD;

        /* S = Q·Kᵀ */
        float s[MT][NS][4];
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int j = 0; j < NS; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[mi][j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk += 2) {
            uint32_t a[MT][2][4];
#pragma unroll
            for (int mi = 0; mi < MT; mi++)
#pragma unroll
                for (int q2 = 0; q2 < 2; q2++) {
                    if constexpr (QREG) {
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            a[mi][q2][e] = qf[mi][kk + q2][e];
                    } else {
                        ldsm_x4(smem_addr(Qs + swz<HD>(q_row + 16 * mi,
                                                       2 * (kk + q2) + (lane >> 4))),
                                a[mi][q2]);
                    }
                }
#pragma unroll
            for (int j = 0; j < NS; j++) {
                uint32_t b[4];
                ldsm_x4(smem_addr(ks + swz<HD>(8 * j + (lane & 7), 2 * kk + (lane >> 3))), b);
#pragma unroll
                for (int mi = 0; mi < MT; mi++) {
                    mma_f16(s[mi][j], a[mi][0], b[0], b[1]);
                    mma_f16(s[mi][j], a[mi][1], b[2], b[3]);
                }
            }
        }

        if (j0 + BN > w_lim_lo) { /* the tile crosses some row's limit */
#pragma unroll
            for (int mi = 0; mi < MT; mi++)
#pragma unroll
                for (int j = 0; j < NS; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const uint32_t key = j0 + 8 * j + 2 * c + (e & 1);
                        if (key >= lim[mi][e >> 1])
                            s[mi][j][e] = -INFINITY;
                    }
        }

        /* Online softmax, base 2; s becomes P (fp32). */
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                float mx = -INFINITY;
#pragma unroll
                for (int j = 0; j < NS; j++)
                    mx = fmaxf(mx, fmaxf(s[mi][j][2 * hf], s[mi][j][2 * hf + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m[mi][hf], mx);
                const float ref = m_new == -INFINITY ? 0.0f : m_new;
                /* exactly 1 when the max did not move, so skipping a tile (or meeting it fully
                 * masked) leaves a row bit for bit the same */
                const float corr = m_new == m[mi][hf] ? 1.0f : exp2_approx(m[mi][hf] - ref);
                m[mi][hf] = m_new;
                l[mi][hf] *= corr;
#pragma unroll
                for (int n = 0; n < NO; n++) {
                    o[mi][n][2 * hf] *= corr;
                    o[mi][n][2 * hf + 1] *= corr;
                }
#pragma unroll
                for (int j = 0; j < NS; j++) {
                    s[mi][j][2 * hf] = exp2_approx(s[mi][j][2 * hf] - ref);
                    s[mi][j][2 * hf + 1] = exp2_approx(s[mi][j][2 * hf + 1] - ref);
                }
            }

        /* O += P·V, 16 keys per k-step; P's A fragment is S's accumulators of n8 tiles 2kk and
         * 2kk + 1, repacked. The row sums add the fp32 P (its fp16 rounding, 2^-11, is noise
         * here). */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mi = 0; mi < MT; mi++) {
                const float(*sa)[4] = s[mi] + 2 * kk;
                pa[mi][0] = pack_f16(sa[0][0], sa[0][1]);
                pa[mi][1] = pack_f16(sa[0][2], sa[0][3]);
                pa[mi][2] = pack_f16(sa[1][0], sa[1][1]);
                pa[mi][3] = pack_f16(sa[1][2], sa[1][3]);
                l[mi][0] += (sa[0][0] + sa[0][1]) + (sa[1][0] + sa[1][1]);
                l[mi][1] += (sa[0][2] + sa[0][3]) + (sa[1][2] + sa[1][3]);
            }
#pragma unroll
            for (int n = 0; n < NO; n += 2) {
                uint32_t b[4];
                ldsm_x4_trans(smem_addr(vs + swz<HD>(16 * kk + v_key, n + (lane >> 4))), b);
#pragma unroll
                for (int mi = 0; mi < MT; mi++) {
                    mma_f16(o[mi][n], pa[mi], b[0], b[1]);
                    mma_f16(o[mi][n + 1], pa[mi], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>(); /* no copy may outlive the block (the trailing groups are empty) */

    /* Row sums over the row's 4 lanes, then out = O / l and lse = (m + log2 l) · ln 2. */
#pragma unroll
    for (int mi = 0; mi < MT; mi++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            float lt = l[mi][hf];
            lt += __shfl_xor_sync(0xffffffffu, lt, 1);
            lt += __shfl_xor_sync(0xffffffffu, lt, 2);
            const uint32_t r = wr0 + 16 * mi + 8 * hf + g;
            if (r >= n_rows)
                continue;
            const uint32_t t = r / p.group, h = kvh * p.group + r % p.group;
            const float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
            const size_t base = (size_t)t * p.out_ld + (size_t)h * HD + 2 * c;
#pragma unroll
            for (int n = 0; n < NO; n++) {
                store_act(p.out, base + 8 * n, o[mi][n][2 * hf] * inv, p.out_type);
                store_act(p.out, base + 8 * n + 1, o[mi][n][2 * hf + 1] * inv, p.out_type);
            }
            if (p.lse && c == 0)
                p.lse[(size_t)t * p.n_head + h] =
                    lt > 0.0f ? (m[mi][hf] + log2f(lt)) * 0.69314718055994531f : -INFINITY;
        }
#endif
}

/* ==== Variants and launch ================================================================== */

template <int HD, int MT, int NW, int BN, int ST, bool QREG>
loupe_status tc_launch(const tc_params &p, uint32_t n_head_kv, cudaStream_t stream)
{
    typedef tc_shape<HD, MT, NW, BN, ST, QREG> S;
    const auto kern = fa_tc_kernel<HD, MT, NW, BN, ST, QREG>;
    if (S::smem > 48 * 1024 &&
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)S::smem) !=
            cudaSuccess)
        return LOUPE_ERR_GPU;
    const dim3 grid(ceil_div((size_t)p.n_tok * p.group, S::BM), n_head_kv, 1);
    kern<<<grid, S::THREADS, S::smem, stream>>>(p);
    return launch_status();
}

/* The variants; rt_cuda_flash_attn_tc_name says what each is. */
template <int HD> loupe_status tc_dispatch(const tc_params &p, uint32_t n_head_kv, int variant,
                                           cudaStream_t stream)
{
    switch (variant) {
    case 0: return tc_launch<HD, 1, 8, 64, 2, true>(p, n_head_kv, stream);
    case 1: return tc_launch<HD, 1, 8, 64, 3, true>(p, n_head_kv, stream);
    case 2: return tc_launch<HD, 2, 4, 32, 3, false>(p, n_head_kv, stream);
    case 3: return tc_launch<HD, 1, 4, 64, 2, true>(p, n_head_kv, stream);
    default: return LOUPE_ERR_UNSUPPORTED;
    }
}

bool aligned16(const void *ptr) { return ((uintptr_t)ptr & 15) == 0; }

} // namespace
} // namespace rtc

extern "C" const char *rt_cuda_flash_attn_tc_name(int variant)
{
    static const char *const names[RT_CUDA_FATTN_TC_VARIANTS] = {
        "128 rows (8 warps x 16, Q in registers), 64-key tiles, 2 stages",
        "128 rows (8 warps x 16, Q in registers), 64-key tiles, 3 stages",
        "128 rows (4 warps x 32, Q in shared memory), 32-key tiles, 3 stages",
        "64 rows (4 warps x 16, Q in registers; 2 blocks an SM), 64-key tiles, 2 stages",
    };
    return variant >= 0 && variant < RT_CUDA_FATTN_TC_VARIANTS ? names[variant] : "?";
}

extern "C" bool rt_cuda_flash_attn_tc_ok(const rt_cuda_attn_desc *a)
{
    if (a->kv_type != RT_CUDA_BF16 || (a->head_dim != 64 && a->head_dim != 128) ||
        !rtc::aligned16(a->k) || !rtc::aligned16(a->v))
        return false;
    int dev = 0, major = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ==
               cudaSuccess &&
           major >= 8;
}

extern "C" loupe_status rt_cuda_flash_attn_tc(const rt_cuda_attn_desc *a, uint32_t n_tok,
                                              uint32_t pos0, rt_cuda_dtype out_type, void *out,
                                              size_t out_ld, float *lse, int variant,
                                              cudaStream_t stream)
{
    if (variant < 0 || variant >= RT_CUDA_FATTN_TC_VARIANTS || !rt_cuda_flash_attn_tc_ok(a))
        return LOUPE_ERR_UNSUPPORTED;
    if (n_tok == 0)
        return LOUPE_OK;
    if (a->n_head_kv == 0 || a->n_head % a->n_head_kv != 0 ||
        (uint64_t)pos0 + n_tok > a->n_ctx ||
        (uint64_t)n_tok * (a->n_head / a->n_head_kv) > UINT32_MAX / 2)
        return LOUPE_ERR_INVALID;
    rtc::tc_params p = {};
    p.q = a->q;
    p.q_ld = a->q_ld;
    p.k = static_cast<const __nv_bfloat16 *>(a->k);
    p.v = static_cast<const __nv_bfloat16 *>(a->v);
    p.n_ctx = a->n_ctx;
    p.group = a->n_head / a->n_head_kv;
    p.n_head = a->n_head;
    p.n_tok = n_tok;
    p.pos0 = pos0;
    p.qscale = a->scale * 1.4426950408889634f;
    p.out = out;
    p.out_type = out_type;
    p.out_ld = out_ld;
    p.lse = lse;
    return a->head_dim == 128 ? rtc::tc_dispatch<128>(p, a->n_head_kv, variant, stream)
                              : rtc::tc_dispatch<64>(p, a->n_head_kv, variant, stream);
}
