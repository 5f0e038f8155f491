/*
 * rt_cuda_matvec and its fused forms. Decode's mat-vecs stream every weight byte once, so the
 * only goal is HBM bandwidth: many bytes in flight per SM, every warp-wide load touching as few
 * 128-byte lines as possible, x (fp32, a few KiB, read by every block) from L1.
 *
 * A block (MV_THREADS threads) computes MV_ROWS "row slots" at once, so each x element it loads
 * serves MV_ROWS rows; the threads split the row's length between them (a row of 4096 BF16 is
 * 512 16-byte pieces: two per thread), then the block sums each slot in a fixed order. A slot is
 * (matrix, row): consecutive rows of up to three matrices concatenated (q, k, v), or for SwiGLU
 * slots 0-1 are gate rows and 2-3 the same up rows. Empty slots past the end load a valid row and
 * drop the result.
 *
 * Two ways to read a row:
 *   F32/F16/BF16/Q8_0  16-byte loads straight into registers (lane l reads piece l of the
 *                 warp's stretch: each warp-wide load is 512 contiguous bytes), 2 (F32: 4)
 *                 pieces per row issued before the first is used, L1 bypassed (used once).
 *                 Q8_0 rows are repacked at upload (repack.cuh: quants, then the block
 *                 scales), so a piece is 16 quants of one block and its scale is 2 bytes.
 *   Q4_K/Q6_K     blocks of 144/210 bytes are not 16-byte aligned, and per-lane block
 *                 reads would touch a line per lane. Instead the block copies a segment of
 *                 each slot's row (qfmt<T>::SB quant blocks, a multiple of 16 bytes) into
 *                 shared memory with 16-byte cp.async, MV_STAGES segments deep, and decodes from
 *                 there, a quant block per 32 threads so that x reads are contiguous.
 *                 Quant bytes become floats exactly through the 2^23 trick (no I2F, a
 *                 quarter-rate instruction), and block scales multiply per-block partial sums
 *                 (Q4_K: Σ (d·sc·q - dmin·m)·x = d·sc·Σ q·x - dmin·m·Σ x).
 *
 * RMSNorm fused in (q/k/v, gate/up): every element of x is loaded by exactly one thread of a
 * block, which multiplies it by the norm weight and adds x² to its ss; the block's reduction sums
 * ss with the dot products and scales them by 1/rms(x) (rt_cuda_rmsnorm's rsqrtf formula).
 *
 * Results are deterministic: fixed thread-to-element mapping and fixed reduction order; a row's
 * value does not depend on which launcher, block or slot computed it.
 */
#include <cuda_pipeline.h>

#include "runtime/cuda/common.cuh"
#include "runtime/cuda/matvec.cuh"

namespace rtc {
namespace {

constexpr int MV_THREADS = 256;
/* Q8_0 rows of 4096 are 256 16-byte pieces: with 128 threads each takes 2 per row (U below)
 * instead of 1, and the smaller block fits 5 per SM instead of 2 (96 registers): ~2.5× the bytes
 * in flight per SM. */
constexpr int Q8_THREADS = 128;
constexpr int MV_ROWS = 4;   /* row slots per block */
constexpr int MV_STAGES = 3; /* segments in flight per block (quantised types) */

enum mv_mode { MV_SET = 0, MV_ADD = 1, MV_SWIGLU = 2 };

struct mv_params {
    const uint8_t *w[RT_CUDA_MV_MAX_MATS];
    float *y[RT_CUDA_MV_MAX_MATS];
    uint32_t rows[RT_CUDA_MV_MAX_MATS];
    uint32_t n_mat;
    size_t pitch;
    uint32_t n_in;
    const float *x;
    const float *nw; /* RMSNorm weight (n_in) when x is to be normalised first, else NULL */
    float eps;
    int mode;
};

/* ==== Slots and the block's reduction ====================================================== */

struct slot {
    const uint8_t *row;
    float *y;      /* where the result goes (SET/ADD) */
    uint32_t r;    /* row within its matrix */
    bool valid;
};

/* Written with constant indices only: a run-time index into p's arrays or into a slot array
 * would put them in local memory. */
__device__ __forceinline__ slot slot_of(const mv_params &p, int i)
{
    const uint8_t *w = p.w[0];
    float *y = p.y[0];
    uint32_t n = p.rows[0], r;
    if (p.mode == MV_SWIGLU) {
        r = blockIdx.x * (MV_ROWS / 2) + (uint32_t)(i % (MV_ROWS / 2));
        if (i >= MV_ROWS / 2)
            w = p.w[1];
    } else {
        r = blockIdx.x * MV_ROWS + (uint32_t)i;
        if (r >= n && p.n_mat > 1) {
            r -= n;
            w = p.w[1];
            y = p.y[1];
            n = p.rows[1];
            if (r >= n && p.n_mat > 2) {
                r -= n;
                w = p.w[2];
                y = p.y[2];
                n = p.rows[2];
            }
        }
    }
    slot s;
    s.valid = r < n;
    s.r = s.valid ? r : 0;
    s.row = (s.valid ? w : p.w[0]) + (size_t)s.r * p.pitch;
    s.y = y;
    return s;
}

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/* Sums every thread's acc[i] per slot and its ss (warp shuffles, then warps in order), applies
 * the RMSNorm scale when there is one and stores. THREADS: the block's size. */
template <int THREADS = MV_THREADS>
__device__ __forceinline__ void mv_finish(const mv_params &p, const slot (&s)[MV_ROWS],
                                          float (&acc)[MV_ROWS], float ss)
{
    constexpr int MV_WARPS = THREADS / WARP;
    __shared__ float red[MV_WARPS][MV_ROWS + 1];
    __shared__ float tot[MV_ROWS + 1];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
#pragma unroll
    for (int i = 0; i <= MV_ROWS; i++) {
        const float v = warp_sum(i < MV_ROWS ? acc[i] : ss);
        if (lane == 0)
            red[warp][i] = v;
    }
    __syncthreads();
    if (threadIdx.x <= MV_ROWS) {
        float t = 0.0f;
#pragma unroll
        for (int w = 0; w < MV_WARPS; w++)
            t += red[w][threadIdx.x];
        tot[threadIdx.x] = t;
    }
    __syncthreads();
    /* rt_cuda_rmsnorm's scale: x_i · inv · w_i summed as inv · Σ W_ri · (x_i · w_i) */
    const float inv = p.nw ? rsqrtf(tot[MV_ROWS] / (float)p.n_in + p.eps) : 1.0f;
#pragma unroll
    for (int i = 0; i < MV_ROWS; i++) {
        if ((int)threadIdx.x != i || !s[i].valid)
            continue;
        if (p.mode == MV_SWIGLU) {
            if (i < MV_ROWS / 2)
                p.y[0][s[i].r] = silu_mul(tot[i] * inv, tot[i + MV_ROWS / 2] * inv);
        } else {
            float *y = s[i].y + s[i].r;
            *y = p.mode == MV_ADD ? *y + tot[i] * inv : tot[i] * inv;
        }
    }
}

/* n (4 or 8) elements of x from e0 on, times the RMSNorm weight when there is one (ss += x²
 * before). Every element of x is loaded by exactly one thread of a block, so ss sums each x_i²
 * once. 16-byte loads; e0 a multiple of 4. */
template <int N>
__device__ __forceinline__ void load_x(const mv_params &p, size_t e0, float (&xs)[N], float &ss)
{
    static_assert(N % 4 == 0, "whole float4s");
#pragma unroll
    for (int k = 0; k < N / 4; k++) {
        const float4 a = __ldg(reinterpret_cast<const float4 *>(p.x + e0) + k);
        xs[4 * k] = a.x;
        xs[4 * k + 1] = a.y;
        xs[4 * k + 2] = a.z;
        xs[4 * k + 3] = a.w;
    }
    if (p.nw) {
#pragma unroll
        for (int k = 0; k < N / 4; k++) {
            const float4 g = __ldg(reinterpret_cast<const float4 *>(p.nw + e0) + k);
            const float gs[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                ss = fmaf(xs[4 * k + j], xs[4 * k + j], ss);
                xs[4 * k + j] *= gs[j];
            }
        }
    }
}

/* ==== Float types: 16-byte loads into registers ============================================ */

/* 16 bytes of weights, read once: skip L1 so x stays there. */
__device__ __forceinline__ uint4 ld_stream(const uint8_t *p)
{
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}

__device__ __forceinline__ float bf_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float hf_lo(uint32_t w) { return f16_bits((uint16_t)(w & 0xffff)); }
__device__ __forceinline__ float hf_hi(uint32_t w) { return f16_bits((uint16_t)(w >> 16)); }

/* acc + the 16 bytes w (4 or 8 elements of T) · xs. */
template <int T, int N>
__device__ __forceinline__ float dot_piece(uint4 w, const float (&xs)[N], float acc)
{
    const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
    if constexpr (T == RT_TYPE_F32) {
#pragma unroll
        for (int k = 0; k < 4; k++)
            acc = fmaf(__uint_as_float(ws[k]), xs[k], acc);
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            acc = fmaf(T == RT_TYPE_BF16 ? bf_lo(ws[k]) : hf_lo(ws[k]), xs[2 * k], acc);
            acc = fmaf(T == RT_TYPE_BF16 ? bf_hi(ws[k]) : hf_hi(ws[k]), xs[2 * k + 1], acc);
        }
    }
    return acc;
}

template <int T>
__global__ void __launch_bounds__(MV_THREADS) mv_float_kernel(mv_params p)
{
    constexpr int EPP = T == RT_TYPE_F32 ? 4 : 8; /* elements per 16-byte piece */
    constexpr int U = T == RT_TYPE_F32 ? 4 : 2;        /* pieces per row in flight */
    slot s[MV_ROWS];
#pragma unroll
    for (int i = 0; i < MV_ROWS; i++)
        s[i] = slot_of(p, i);
    float acc[MV_ROWS] = {}, ss = 0.0f;
    const uint32_t n_piece = p.n_in / EPP;
    for (uint32_t c0 = threadIdx.x; c0 < n_piece; c0 += U * MV_THREADS) {
        uint4 w[U][MV_ROWS];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint32_t c = c0 + u * MV_THREADS;
#pragma unroll
            for (int i = 0; i < MV_ROWS; i++)
                w[u][i] = c < n_piece ? ld_stream(s[i].row + 16 * (size_t)c)
                                      : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint32_t c = c0 + u * MV_THREADS;
            if (c < n_piece) {
                float xs[EPP];
                load_x(p, (size_t)c * EPP, xs, ss);
#pragma unroll
                for (int i = 0; i < MV_ROWS; i++)
                    acc[i] = dot_piece<T>(w[u][i], xs, acc[i]);
            }
        }
    }
    /* Elements past the last whole piece (rows of any length are allowed for float types). */
    for (uint32_t e = n_piece * EPP + threadIdx.x; e < p.n_in; e += MV_THREADS) {
        float xe = p.x[e];
        if (p.nw) {
            ss = fmaf(xe, xe, ss);
            xe *= p.nw[e];
        }
#pragma unroll
        for (int i = 0; i < MV_ROWS; i++)
            acc[i] = fmaf(decode_elem<T>(s[i].row, e), xe, acc[i]);
    }
    mv_finish(p, s, acc, ss);
}

/* ==== Quantised types: segments through shared memory ===================================== */

template <int T> struct qfmt;
/* BB bytes and BE elements per quant block; SB blocks per segment (SB·BB a multiple of 16);
 * TPB threads per quant block when decoding (SB·TPB = MV_THREADS). */
template <> struct qfmt<RT_TYPE_Q4_K> {
    static constexpr int BB = 144, BE = 256, SB = 8, TPB = 32;
};
template <> struct qfmt<RT_TYPE_Q6_K> {
    static constexpr int BB = 210, BE = 256, SB = 8, TPB = 32;
};

__device__ __forceinline__ uint32_t sh_u16(const uint8_t *p)
{
    return *reinterpret_cast<const uint16_t *>(p);
}
__device__ __forceinline__ uint32_t sh_u32(const uint8_t *p)
{
    return *reinterpret_cast<const uint32_t *>(p);
}

/* Byte j of v (0..255) as an exact float: 2^23 + v_j read as a float, less 2^23 + bias. */
__device__ __forceinline__ float byte_f(uint32_t v, int j, float bias)
{
    const uint32_t f = __byte_perm(v, 0x4B000000u, 0x7440u + (uint32_t)j); /* 0x4B0000vv */
    return __uint_as_float(f) - (8388608.0f + bias);
}

/* acc[i] += this thread's part of quant block `gb` (global block index in the row) of every
 * slot; b[i] points at the block in shared memory; `sub` = thread index within the block. The
 * elements of x a thread takes are its own (load_x: ss counts each once). */
template <int T>
__device__ __forceinline__ void q_block_dot(const uint8_t *const (&b)[MV_ROWS],
                                            const mv_params &p, uint32_t gb, uint32_t sub,
                                            float (&acc)[MV_ROWS], float &ss);

/* Q4_K: thread sub = 8c + k (c = 0..3, k = 0..7) takes qs bytes 32c + 4k .. +3: their low
 * nibbles are elements 4k.. of sub-block 2c, their high nibbles the same of sub-block 2c+1.
 * w = d·sc·q - dmin·m, so Σ w·x = d·sc·Σ q·x - dmin·m·Σ x. */
template <>
__device__ __forceinline__ void q_block_dot<RT_TYPE_Q4_K>(const uint8_t *const (&b)[MV_ROWS],
                                                          const mv_params &p, uint32_t gb,
                                                          uint32_t sub, float (&acc)[MV_ROWS],
                                                          float &ss)
{
    const uint32_t c = sub / 8, k = sub % 8;
    const size_t e0 = 256 * (size_t)gb + 64 * c + 4 * k;
    float xl[4], xh[4];
    load_x(p, e0, xl, ss);
    load_x(p, e0 + 32, xh, ss);
    const float sl = (xl[0] + xl[1]) + (xl[2] + xl[3]), sh = (xh[0] + xh[1]) + (xh[2] + xh[3]);
#pragma unroll
    for (int i = 0; i < MV_ROWS; i++) {
        const uint32_t dd = sh_u32(b[i]);
        const float d = f16_bits((uint16_t)(dd & 0xffff)), dmin = f16_bits((uint16_t)(dd >> 16));
        int sc0, m0, sc1, m1;
        q4k_scale_min(b[i] + 4, (int)(2 * c), sc0, m0);
        q4k_scale_min(b[i] + 4, (int)(2 * c + 1), sc1, m1);
        const uint32_t q = sh_u32(b[i] + 16 + 32 * c + 4 * k);
        const uint32_t lo = q & 0x0f0f0f0fu, hi = (q >> 4) & 0x0f0f0f0fu;
        float tl = byte_f(lo, 0, 0.0f) * xl[0], th = byte_f(hi, 0, 0.0f) * xh[0];
#pragma unroll
        for (int j = 1; j < 4; j++) {
            tl = fmaf(byte_f(lo, j, 0.0f), xl[j], tl);
            th = fmaf(byte_f(hi, j, 0.0f), xh[j], th);
        }
        float a = acc[i];
        a = fmaf(d * (float)sc0, tl, a);
        a = fmaf(-dmin * (float)m0, sl, a);
        a = fmaf(d * (float)sc1, th, a);
        acc[i] = fmaf(-dmin * (float)m1, sh, a);
    }
}

/* Q6_K: thread sub = 16h + j (half h, j = 0..15) takes l = 2j, 2j+1 of the half: for k = 0..3
 * the elements 128h + 32k + l, low nibble from ql[64h + l (+32 for odd k)] (high nibble for
 * k >= 2), top bits from qh[32h + l] bits 2k, 2k+1; scale sc[8h + 2k + l/16]. */
template <>
__device__ __forceinline__ void q_block_dot<RT_TYPE_Q6_K>(const uint8_t *const (&b)[MV_ROWS],
                                                          const mv_params &p, uint32_t gb,
                                                          uint32_t sub, float (&acc)[MV_ROWS],
                                                          float &ss)
{
    const uint32_t h = sub / 16, j = sub % 16, hs = j / 8; /* hs: l >= 16 */
    const size_t e0 = 256 * (size_t)gb + 128 * h + 2 * j;
    float2 xv[4];
#pragma unroll
    for (int k = 0; k < 4; k++) { /* 8-byte pieces: 16 threads read 128 contiguous bytes */
        xv[k] = __ldg(reinterpret_cast<const float2 *>(p.x + e0 + 32 * k));
        if (p.nw) {
            const float2 g = __ldg(reinterpret_cast<const float2 *>(p.nw + e0 + 32 * k));
            ss = fmaf(xv[k].x, xv[k].x, fmaf(xv[k].y, xv[k].y, ss));
            xv[k].x *= g.x;
            xv[k].y *= g.y;
        }
    }
#pragma unroll
    for (int i = 0; i < MV_ROWS; i++) {
        const uint8_t *blk = b[i];
        const float d = f16_bits((uint16_t)sh_u16(blk + 208));
        const uint32_t ql0 = sh_u16(blk + 64 * h + 2 * j), ql1 = sh_u16(blk + 64 * h + 32 + 2 * j);
        const uint32_t qh = sh_u16(blk + 128 + 32 * h + 2 * j);
        float a = acc[i];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            /* two 6-bit values q + 32 in bytes 0, 1 */
            const uint32_t lo = ((k & 1 ? ql1 : ql0) >> (4 * (k >> 1))) & 0x0f0fu;
            const uint32_t q = lo | ((qh >> (2 * k)) & 0x0303u) << 4;
            const uint32_t scw = sh_u16(blk + 192 + 8 * h + 2 * k) ^ 0x8080u; /* int8 + 128 */
            const float sc = byte_f(scw, (int)hs, 128.0f);
            const float t = fmaf(byte_f(q, 1, 32.0f), xv[k].y, byte_f(q, 0, 32.0f) * xv[k].x);
            a = fmaf(d * sc, t, a);
        }
        acc[i] = a;
    }
}

template <int T>
__global__ void __launch_bounds__(MV_THREADS) mv_quant_kernel(mv_params p)
{
    using F = qfmt<T>;
    constexpr uint32_t SEGB = F::BB * F::SB, PPR = SEGB / 16; /* bytes, 16-byte pieces */
    static_assert(SEGB % 16 == 0 && F::SB * F::TPB == MV_THREADS, "segment shape");
    __shared__ __align__(16) uint8_t seg_buf[MV_STAGES][MV_ROWS][SEGB];

    slot s[MV_ROWS];
#pragma unroll
    for (int i = 0; i < MV_ROWS; i++)
        s[i] = slot_of(p, i);
    const uint32_t n_blk = p.n_in / F::BE, row_bytes = n_blk * F::BB;
    const uint32_t n_seg = (n_blk + F::SB - 1) / F::SB;

    /* Copies segment g of every slot's row into stage g % MV_STAGES (pieces past the row's last
     * byte are skipped; a piece that straddles it stays inside the 16-byte-padded pitch). */
    auto issue = [&](uint32_t g) {
        if (g < n_seg) {
            uint8_t(*dst)[SEGB] = seg_buf[g % MV_STAGES];
            for (uint32_t pc = threadIdx.x; pc < MV_ROWS * PPR; pc += MV_THREADS) {
                const uint32_t i = pc / PPR, off = (pc % PPR) * 16, src = g * SEGB + off;
                const uint8_t *row = s[0].row;
#pragma unroll
                for (int k = 1; k < MV_ROWS; k++) /* constant indices: s stays in registers */
                    row = i == (uint32_t)k ? s[k].row : row;
                if (src < row_bytes)
                    __pipeline_memcpy_async(dst[i] + off, row + src, 16);
            }
        }
        __pipeline_commit();
    };

    float acc[MV_ROWS] = {}, ss = 0.0f;
#pragma unroll
    for (int g = 0; g < MV_STAGES - 1; g++)
        issue((uint32_t)g);
    const uint32_t bl = threadIdx.x / F::TPB, sub = threadIdx.x % F::TPB;
    for (uint32_t g = 0; g < n_seg; g++) {
        __pipeline_wait_prior(MV_STAGES - 2); /* this thread's copies of segment g landed */
        __syncthreads(); /* everyone's did, and everyone is done with segment g - 1's stage */
        issue(g + MV_STAGES - 1);
        const uint32_t gb = g * F::SB + bl;
        if (gb < n_blk) {
            const uint8_t *b[MV_ROWS];
#pragma unroll
            for (int i = 0; i < MV_ROWS; i++)
                b[i] = seg_buf[g % MV_STAGES][i] + bl * F::BB;
            q_block_dot<T>(b, p, gb, sub, acc, ss);
        }
    }
    mv_finish(p, s, acc, ss);
}

/* ==== Q8_0: repacked rows, 16-byte loads into registers ==================================== */

/* The fp16 scale of block b of a repacked Q8_0 row (repack.cuh): after the row's quants, read
 * once per 16-byte piece; the 32 lanes of a warp read 32 contiguous bytes. */
__device__ __forceinline__ uint32_t ld_scale(const uint8_t *p)
{
    unsigned short r;
    asm("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(r) : "l"(p));
    return r;
}

/* Like mv_float_kernel: piece c (16 quants, half of block c/2) of every slot's row per thread,
 * U pieces in flight, each warp-wide load 512 contiguous bytes; the quants become floats
 * exactly through byte_f, and the block scale multiplies the piece's partial sum. */
__global__ void __launch_bounds__(Q8_THREADS, 5) mv_q8_kernel(mv_params p)
{
    constexpr int EPP = 16, U = 2;
    slot s[MV_ROWS];
#pragma unroll
    for (int i = 0; i < MV_ROWS; i++)
        s[i] = slot_of(p, i);
    float acc[MV_ROWS] = {}, ss = 0.0f;
    const uint32_t n_piece = p.n_in / EPP, sc_off = p.n_in; /* scales after n_in quant bytes */
    for (uint32_t c0 = threadIdx.x; c0 < n_piece; c0 += U * Q8_THREADS) {
        uint4 w[U][MV_ROWS];
        uint32_t d[U][MV_ROWS];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint32_t c = c0 + u * Q8_THREADS;
#pragma unroll
            for (int i = 0; i < MV_ROWS; i++) {
                w[u][i] = c < n_piece ? ld_stream(s[i].row + 16 * (size_t)c)
                                      : make_uint4(0, 0, 0, 0);
                d[u][i] = c < n_piece ? ld_scale(s[i].row + sc_off + 2 * (size_t)(c / 2)) : 0;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint32_t c = c0 + u * Q8_THREADS;
            if (c < n_piece) {
                float xs[EPP];
                load_x(p, (size_t)c * EPP, xs, ss);
#pragma unroll
                for (int i = 0; i < MV_ROWS; i++) {
                    /* int8 q + 128 as unsigned bytes */
                    const uint32_t ws[4] = {w[u][i].x ^ 0x80808080u, w[u][i].y ^ 0x80808080u,
                                            w[u][i].z ^ 0x80808080u, w[u][i].w ^ 0x80808080u};
                    float t = byte_f(ws[0], 0, 128.0f) * xs[0];
#pragma unroll
                    for (int e = 1; e < EPP; e++)
                        t = fmaf(byte_f(ws[e / 4], e % 4, 128.0f), xs[e], t);
                    acc[i] = fmaf(f16_bits((uint16_t)d[u][i]), t, acc[i]);
                }
            }
        }
    }
    mv_finish<Q8_THREADS>(p, s, acc, ss);
}

/* ==== Launch =============================================================================== */

struct mv_launch {
    mv_params p;
    uint32_t blocks;
    cudaStream_t stream;

    template <int T> void run() const
    {
        if constexpr (T == RT_TYPE_Q8_0)
            mv_q8_kernel<<<blocks, Q8_THREADS, 0, stream>>>(p);
        else if constexpr (T == RT_TYPE_Q4_K || T == RT_TYPE_Q6_K)
            mv_quant_kernel<T><<<blocks, MV_THREADS, 0, stream>>>(p);
        else
            mv_float_kernel<T><<<blocks, MV_THREADS, 0, stream>>>(p);
    }
};

loupe_status mv_run(rt_type type, const mv_params &p, uint32_t blocks, cudaStream_t stream)
{
    if (blocks == 0)
        return LOUPE_OK;
    return dispatch_type(type, mv_launch{p, blocks, stream});
}

} // namespace
} // namespace rtc

extern "C" loupe_status rt_cuda_matvec(rt_type type, const void *w, size_t pitch, uint32_t n_out,
                                       uint32_t n_in, const float *x, float *y, bool accumulate,
                                       cudaStream_t stream)
{
    rtc::mv_params p = {};
    p.w[0] = static_cast<const uint8_t *>(w);
    p.y[0] = y;
    p.rows[0] = n_out;
    p.n_mat = 1;
    p.pitch = pitch;
    p.n_in = n_in;
    p.x = x;
    p.mode = accumulate ? rtc::MV_ADD : rtc::MV_SET;
    return rtc::mv_run(type, p, rtc::ceil_div(n_out, rtc::MV_ROWS), stream);
}

extern "C" loupe_status rt_cuda_matvec_multi(rt_type type, size_t pitch, uint32_t n_in,
                                             const rt_cuda_mv_out *mats, uint32_t n_mats,
                                             const float *x, const float *norm_w, float norm_eps,
                                             cudaStream_t stream)
{
    if (n_mats == 0 || n_mats > RT_CUDA_MV_MAX_MATS)
        return LOUPE_ERR_INVALID;
    rtc::mv_params p = {};
    uint64_t total = 0;
    for (uint32_t m = 0; m < n_mats; m++) {
        if (mats[m].n_out == 0) /* the kernel's slots need every matrix to have a row */
            continue;
        p.w[p.n_mat] = static_cast<const uint8_t *>(mats[m].w);
        p.y[p.n_mat] = mats[m].y;
        p.rows[p.n_mat++] = mats[m].n_out;
        total += mats[m].n_out;
    }
    if (total > UINT32_MAX)
        return LOUPE_ERR_INVALID;
    p.pitch = pitch;
    p.n_in = n_in;
    p.x = x;
    p.nw = norm_w;
    p.eps = norm_eps;
    p.mode = rtc::MV_SET;
    return rtc::mv_run(type, p, rtc::ceil_div(total, rtc::MV_ROWS), stream);
}

extern "C" loupe_status rt_cuda_matvec_swiglu(rt_type type, const void *w_gate, const void *w_up,
                                              size_t pitch, uint32_t n_out, uint32_t n_in,
                                              const float *x, const float *norm_w,
                                              float norm_eps, float *y, cudaStream_t stream)
{
    rtc::mv_params p = {};
    p.w[0] = static_cast<const uint8_t *>(w_gate);
    p.w[1] = static_cast<const uint8_t *>(w_up);
    p.y[0] = p.y[1] = y;
    p.rows[0] = p.rows[1] = n_out;
    p.n_mat = 2;
    p.pitch = pitch;
    p.n_in = n_in;
    p.x = x;
    p.nw = norm_w;
    p.eps = norm_eps;
    p.mode = rtc::MV_SWIGLU;
    return rtc::mv_run(type, p, rtc::ceil_div(n_out, rtc::MV_ROWS / 2), stream);
}
