/*
 * rt_cuda_knn — exact query→key top-k on the GPU, the kNN step of anns' graph build.
 *
 * One call, on its own stream with stream-ordered allocations (so host threads may call at once):
 *   1. prep   the stored keys (f32, bf16 or int8 rows, uploaded as stored) become a bf16 matrix
 *             of DP = 64, 128 or 256 columns (zero-padded) and a multiple of 64 rows; int8 rows
 *             keep their integer codes (exact in bf16) and their scale multiplies the scores.
 *             Queries likewise, a chunk (<= 131072) at a time. Norms for the bound E are taken.
 *   2. scan   fused: no score matrix exists. A block holds 64 or 128 queries, a warp 16 or 32
 *             whose bf16 fragments stay in registers for the whole kernel; key tiles of 64 stream
 *             through shared memory (cp.async, 3 stages) and each warp multiplies 32 keys at a
 *             time on the tensor cores (mma.sync m16n8k16, bf16 → fp32). Every query keeps in
 *             shared memory an unordered buffer of candidates (approximate score, key) and a
 *             threshold; a score enters only above the threshold. When a buffer might overflow
 *             in the next chunk, the warp finds its K'-th best exactly (bitwise radix select on
 *             order-preserving integer keys, counted with warp reductions), keeps the best
 *             K' = k + margin and raises the threshold to that score. When there are too few
 *             query blocks to fill the GPU, the keys are split over blocks (grid.y).
 *             key_best_query: each 32-key chunk's best query per key is reduced across the warp
 *             and merged into one 64-bit (score, ~query) word per key by check-then-atomicMax.
 *   3. merge  a warp per query gathers its splits' candidates, finds A_k (the k-th best
 *             approximate score), re-scores in fp32 every candidate within 2E(q) of it from the
 *             stored keys (f32; bf16 widened; int8 code × scale, as ann_keys_row widens them),
 *             ranks them, writes the top k and checks the certificate below.
 *   4. the queries whose certificate failed are recomputed by ann_knn_cpu.
 *
 * Exactness. E(q) (rt_cuda_knn_bound) bounds |approximate − fp32 score| for every key: bf16
 * rounding of q (||q − bf16 q||·max||k||) and of f32 keys (||bf16 q||·max||k − bf16 k||), fp32
 * accumulation in any order (DP·2^-21·||bf16 q||·max||k||), 1 % slack. A key a split left out
 * scored at most that split's final threshold `cut`; a candidate not re-scored lies more than
 * 2E below A_k, so its fp32 score is below the k-th re-scored score S_k. Hence when
 * max(cut) + E <= S_k, no key outside the re-scored set beats S_k and the result is the fp32
 * top-k: it can differ from ann_knn_cpu's only where a key's fp32 score ties S_k within fp32
 * rounding (the two sum in different orders: a few ulp of Σ|q_i k_i|), where the CPU's answer
 * is arbitrary too. Scores returned are the fp32 re-scores. A query whose certificate fails (a
 * near-tie wider than E around rank k + margin, NaN or Inf inputs) is recomputed on the CPU, so
 * every result is exact in that sense. key_best_query is the argmax of the APPROXIMATE score:
 * the chosen query's fp32 score is within E(chosen) + E(best) of the best query's (ties → the
 * lower query index).
 *
 * Device memory (all freed before return): keys n·(2·DP + row bytes as stored + 8), plus per
 * query of a chunk 4·dim + 2·DP + 12 + 8·k + 1 + nsplit·(8·K' + 8). For 131072 keys and as many
 * queries, dim 128, k 64: about 0.35 GB; 1M f32 keys: about 1.3 GB. When the device has less
 * free, the call fails with LOUPE_ERR_GPU_MEMORY and nothing stays allocated.
 *
 * Edges, as ann_knn_cpu: k > n fills the first n slots and leaves -1 / -inf in the rest; nq = 0
 * sets every key's best query to -1; k <= 0 is LOUPE_ERR_INVALID.
 *
 * Shapes the fused scan cannot take — dim > 256, k so large that K' + 32 candidates per query
 * do not fit in shared memory (k above ~200–350 by dim), devices before sm_80 — take the wide
 * path (knn_wide.cu: an fp32 score matrix per chunk of queries and a radix selection, k up to
 * WIDE_K_MAX; rt_cuda_knn_info.wide); without stream-ordered allocation or beyond that k they
 * run ann_knn_cpu (rt_cuda_knn_info.cpu_only).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "runtime/cuda/common.cuh"
#include "runtime/cuda/knn.cuh"
#include "runtime/cuda/knn_wide.cuh"

namespace rtc_knn {

typedef __nv_bfloat16 bf16;

constexpr int TK = 64;       /* keys per shared-memory stage */
constexpr int CH = 32;       /* keys per accumulator chunk (a warp's mma block is rows × 32) */
constexpr int STAGES = 3;    /* cp.async pipeline depth */
constexpr int NW = 4;        /* warps per scan block */
constexpr int BMAX = 512;    /* most candidate slots per query */
constexpr int NE = BMAX / 32;
constexpr int MW = 4;        /* warps (queries) per merge block */
constexpr int MERGE_MAX = 2048; /* most candidates per query in the merge (nsplit · K') */
constexpr int64_t DEFAULT_CHUNK = 131072;
constexpr unsigned FULL = 0xffffffffu;

/* ==== Small device helpers ================================================================ */

/* float → uint32 with the same order (for finite values and ±inf); and back. */
__device__ __forceinline__ uint32_t ord_key(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float ord_val(uint32_t u)
{
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL, v, o);
    return v;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define LOUPE_KNN_DEVICE 1
#endif

#ifdef LOUPE_KNN_DEVICE
__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Four 8×8 b16 matrices; lane i gives the row address of matrix i/8, row i%8; every thread gets
 * row lane/4, columns 2(lane%4), +1 of each. */
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2,
                                        uint32_t &r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/* d += a·b, m16n8k16, bf16 operands, fp32 accumulators: row g = lane/4 holds d[0], d[1] at
 * columns 2(lane%4), +1; row g + 8 holds d[2], d[3]. */
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

/* The target-th largest of the first c order keys of `key` (c >= target >= 1), exactly: the
 * largest v with #{key >= v} >= target, found bit by bit from the top. Whole warp. */
__device__ uint32_t warp_select(const uint32_t *key, int c, int target, int lane)
{
    uint32_t v = 0;
    for (int bit = 31; bit >= 0; bit--) {
        uint32_t cand = v | (1u << bit);
        unsigned m = 0;
        for (int i = lane; i < c; i += 32)
            m += key[i] >= cand;
#ifdef LOUPE_KNN_DEVICE
        m = __reduce_add_sync(FULL, m);
#endif
        if (m >= (unsigned)target)
            v = cand;
    }
    return v;
}

/* ==== Prep: stored rows → padded bf16 matrix, norms ======================================= */

/* One warp per row r < n_pad: out (n_pad, dp) bf16; max over rows of ||widened key|| and (f32)
 * ||key − bf16(key)|| into wr[0], wr[1] as float bits (non-negative floats order as integers;
 * a NaN row makes the maximum NaN, which fails every certificate: the CPU then decides). */
template <int T>
__global__ void key_prep(const void *stage, const float *scales, int64_t n, int64_t n_pad,
                         int dim, int dp, bf16 *out, unsigned *wr)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    float wmax = 0.0f, rmax = 0.0f;
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < n_pad;
         r += warps) {
        float ww = 0.0f, rr = 0.0f;
        for (int d = lane; d < dp; d += 32) {
            bf16 b = __float2bfloat16_rn(0.0f);
            if (r < n && d < dim) {
                int64_t i = r * dim + d;
                float w;
                if (T == ANN_KEYS_F32) {
                    w = static_cast<const float *>(stage)[i];
                    b = __float2bfloat16_rn(w);
                    float e = w - __bfloat162float(b);
                    rr += e * e;
                } else if (T == ANN_KEYS_BF16) {
                    b = __ushort_as_bfloat16(static_cast<const unsigned short *>(stage)[i]);
                    w = __bfloat162float(b);
                } else {
                    float c = (float)static_cast<const int8_t *>(stage)[i];
                    b = __float2bfloat16_rn(c); /* |c| <= 127: exact */
                    w = __fmul_rn(scales[r], c);
                }
                ww += w * w;
            }
            out[r * dp + d] = b;
        }
        const float wn = sqrtf(warp_sum(ww)), rn = sqrtf(warp_sum(rr));
        wmax = wn != wn || wmax != wmax ? NAN : fmaxf(wmax, wn); /* fmaxf would drop a NaN */
        rmax = rn != rn || rmax != rmax ? NAN : fmaxf(rmax, rn);
    }
    if (lane == 0) {
        atomicMax(wr, __float_as_uint(wmax));
        atomicMax(wr + 1, __float_as_uint(rmax));
    }
}

/* One warp per query row r < nq_pad of the chunk: qb (nq_pad, dp) bf16 (rows >= nq zero) and
 * qn (nq, 3) = ||q||, ||q − bf16 q||, ||bf16 q||. */
__global__ void query_prep(const float *qf, int64_t nq, int64_t nq_pad, int dim, int dp, bf16 *qb,
                           float *qn)
{
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= nq_pad)
        return;
    float s_q = 0.0f, s_e = 0.0f, s_t = 0.0f;
    for (int d = lane; d < dp; d += 32) {
        float v = r < nq && d < dim ? qf[r * dim + d] : 0.0f;
        bf16 b = __float2bfloat16_rn(v);
        float t = __bfloat162float(b), e = v - t;
        qb[r * dp + d] = b;
        s_q += v * v;
        s_e += e * e;
        s_t += t * t;
    }
    s_q = warp_sum(s_q);
    s_e = warp_sum(s_e);
    s_t = warp_sum(s_t);
    if (lane == 0 && r < nq) {
        qn[3 * r] = sqrtf(s_q);
        qn[3 * r + 1] = sqrtf(s_e);
        qn[3 * r + 2] = sqrtf(s_t);
    }
}

/* ==== Scan: tensor-core scores, per-query candidate buffers =============================== */

struct ScanArgs {
    const bf16 *q;           /* (nq_pad, DP) chunk's queries */
    const bf16 *kb;          /* (n_pad, DP) keys */
    const float *kscale;     /* (n) int8 scales, or NULL */
    int64_t nq;              /* valid queries in the chunk */
    int64_t n;               /* keys */
    int64_t split_len;       /* keys per split, a multiple of TK */
    int64_t q_base;          /* index of the chunk's first query in the call */
    int kkeep, bcap, nsplit;
    uint32_t *c_key;         /* (nq, nsplit, kkeep) order keys of the kept candidates */
    int32_t *c_id;           /* (nq, nsplit, kkeep) */
    int32_t *c_cnt;          /* (nq, nsplit) */
    float *c_cut;            /* (nq, nsplit) highest score a left-out key can have */
    unsigned long long *best; /* (n) packed (order key << 32 | ~query), or NULL */
};

/* Keeps the best `target` candidates of row buffer (bk, bi) holding *cnt > target entries and
 * raises *thr to the target-th score. Whole warp; the warp's other rows are untouched. */
__device__ void compact_row(uint32_t *bk, int32_t *bi, int *cnt, float *thr, int target,
                            int lane)
{
    const int c = *cnt;
    if (c <= target)
        return;
    uint32_t kv[NE];
    int32_t iv[NE];
    /* Loops stop at the first all-empty group of 32 (c is the same in every lane). */
#pragma unroll
    for (int i = 0; i < NE; i++) {
        const int idx = i * 32 + lane;
        kv[i] = idx < c ? bk[idx] : 0u;
        iv[i] = idx < c ? bi[idx] : -1;
    }
    __syncwarp();
    uint32_t v = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const uint32_t cand = v | (1u << bit);
        unsigned m = 0;
#pragma unroll
        for (int i = 0; i < NE; i++) {
            if (i * 32 >= c)
                break;
            m += (i * 32 + lane < c) && kv[i] >= cand;
        }
#ifdef LOUPE_KNN_DEVICE
        m = __reduce_add_sync(FULL, m);
#endif
        if (m >= (unsigned)target)
            v = cand;
    }
    unsigned gt = 0;
#pragma unroll
    for (int i = 0; i < NE; i++) {
        if (i * 32 >= c)
            break;
        gt += (i * 32 + lane < c) && kv[i] > v;
    }
#ifdef LOUPE_KNN_DEVICE
    gt = __reduce_add_sync(FULL, gt);
#endif
    /* All of the > v entries, then the first (target − gt) of the == v ones. */
    const int need_eq = target - (int)gt;
    const unsigned lt = (1u << lane) - 1u;
    int base = 0, eq_base = 0;
#pragma unroll
    for (int i = 0; i < NE; i++) {
        if (i * 32 >= c)
            break;
        const bool valid = i * 32 + lane < c;
        const bool eq = valid && kv[i] == v;
        const unsigned eqm = __ballot_sync(FULL, eq);
        const bool keep = (valid && kv[i] > v) || (eq && eq_base + __popc(eqm & lt) < need_eq);
        const unsigned km = __ballot_sync(FULL, keep);
        if (keep) {
            const int pos = base + __popc(km & lt);
            bk[pos] = kv[i];
            bi[pos] = iv[i];
        }
        base += __popc(km);
        eq_base += __popc(eqm);
    }
    __syncwarp();
    if (lane == 0) {
        *cnt = target;
        *thr = ord_val(v);
    }
    __syncwarp();
}

template <int KS, int MT>
__global__ void __launch_bounds__(NW * 32, 1) knn_scan(const ScanArgs a)
{
#ifdef LOUPE_KNN_DEVICE
    constexpr int DP = KS * 16, ROWS = 16 * MT, LDK = DP + 8;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sk = reinterpret_cast<bf16 *>(smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tg = lane & 3;
    unsigned char *wb = smem + (size_t)STAGES * TK * LDK * sizeof(bf16) +
                        (size_t)warp * ROWS * (8 + 8 * (size_t)a.bcap);
    int *cnt = reinterpret_cast<int *>(wb);                    /* (ROWS) */
    float *thr = reinterpret_cast<float *>(wb + 4 * ROWS);     /* (ROWS) */
    uint32_t *bkey = reinterpret_cast<uint32_t *>(wb + 8 * ROWS); /* (ROWS, bcap) */
    int32_t *bid = reinterpret_cast<int32_t *>(bkey + (size_t)ROWS * a.bcap);

    const int64_t qrow0 = (int64_t)blockIdx.x * (NW * ROWS) + warp * ROWS;
    const int split = blockIdx.y;
    const int64_t k0 = (int64_t)split * a.split_len;
    const int64_t k1 = a.n < k0 + a.split_len ? a.n : k0 + a.split_len;
    const int ntiles = (int)((k1 - k0 + TK - 1) / TK);

    /* This warp's queries as A fragments, for the whole kernel (rows past nq are zeros). */
    uint32_t af[MT][KS][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            const bf16 *r0 = a.q + (qrow0 + mt * 16 + g) * DP + ks * 16 + 2 * tg;
            const bf16 *r1 = r0 + 8 * DP;
            af[mt][ks][0] = *reinterpret_cast<const uint32_t *>(r0);
            af[mt][ks][1] = *reinterpret_cast<const uint32_t *>(r1);
            af[mt][ks][2] = *reinterpret_cast<const uint32_t *>(r0 + 8);
            af[mt][ks][3] = *reinterpret_cast<const uint32_t *>(r1 + 8);
        }
    bool rv[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            rv[mt][h] = qrow0 + mt * 16 + h * 8 + g < a.nq;
    if (lane < ROWS) {
        cnt[lane] = 0;
        thr[lane] = -INFINITY;
    }
    __syncwarp();

    auto load_tile = [&](int t, int stage) {
        const bf16 *src = a.kb + (k0 + (int64_t)t * TK) * DP;
        bf16 *dst = sk + (size_t)stage * TK * LDK;
        for (int i = threadIdx.x; i < TK * (DP / 8); i += NW * 32) {
            const int r = i / (DP / 8), c8 = i % (DP / 8);
            cp_async16(smem_u32(dst + r * LDK + c8 * 8), src + (int64_t)r * DP + c8 * 8);
        }
    };
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntiles)
            load_tile(s, s);
        cp_async_commit();
    }

    for (int t = 0; t < ntiles; t++) {
        cp_async_wait<STAGES - 2>(); /* tile t landed (this thread's copies) */
        __syncthreads();             /* ... everyone's; stage (t − 1) % STAGES is free again */
        {
            const int tn = t + STAGES - 1;
            if (tn < ntiles)
                load_tile(tn, tn % STAGES);
            cp_async_commit();
        }
        const bf16 *tile = sk + (size_t)(t % STAGES) * TK * LDK;
#pragma unroll 1
        for (int c = 0; c < TK / CH; c++) {
            const int64_t key0 = k0 + (int64_t)t * TK + c * CH;
            if (key0 >= k1)
                break; /* uniform: the split's last tile is partial */

            /* Room for a whole chunk in every row's buffer. */
            unsigned need = __ballot_sync(FULL, lane < ROWS && cnt[lane] > a.bcap - CH);
            while (need) {
                const int r = __ffs(need) - 1;
                need &= need - 1;
                compact_row(bkey + (size_t)r * a.bcap, bid + (size_t)r * a.bcap, cnt + r, thr + r,
                            a.kkeep, lane);
            }

            float acc[MT][4][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[mt][j][e] = 0.0f;
#pragma unroll
            for (int kp = 0; kp < KS / 2; kp++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4(smem_u32(tile + (c * CH + j * 8 + (lane & 7)) * LDK + kp * 32 +
                                     (lane >> 3) * 8),
                            b0, b1, b2, b3);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_bf16(acc[mt][j], af[mt][2 * kp], b0, b1);
                        mma_bf16(acc[mt][j], af[mt][2 * kp + 1], b2, b3);
                    }
                }

            /* acc[mt][j][e]: query row mt·16 + g + 8·(e >> 1), key key0 + 8j + 2tg + (e & 1).
             * Keys past the split and rows past nq score −inf: never kept, never best. */
            bool any = false;
            float th[MT][2];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    th[mt][h] = thr[mt * 16 + h * 8 + g];
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e1 = 0; e1 < 2; e1++) {
                    const int64_t key = key0 + j * 8 + 2 * tg + e1;
                    const bool kv = key < k1;
                    const float sc = kv && a.kscale ? a.kscale[key] : 1.0f;
#pragma unroll
                    for (int mt = 0; mt < MT; mt++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            float &v = acc[mt][j][2 * h + e1];
                            v = kv && rv[mt][h] ? v * sc : -INFINITY;
                            any |= v > th[mt][h];
                        }
                }
            if (__any_sync(FULL, any)) {
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
#pragma unroll
                        for (int mt = 0; mt < MT; mt++) {
                            const float v = acc[mt][j][e];
                            if (v > th[mt][e >> 1]) {
                                const int row = mt * 16 + (e >> 1) * 8 + g;
                                const int pos = atomicAdd(cnt + row, 1);
                                bkey[(size_t)row * a.bcap + pos] = ord_key(v);
                                bid[(size_t)row * a.bcap + pos] =
                                    (int32_t)(key0 + j * 8 + 2 * tg + (e & 1));
                            }
                        }
            }
            __syncwarp();

            if (a.best) {
                /* Per key column: best (score, query) of this warp's rows. */
                unsigned long long cm[4][2];
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int e1 = 0; e1 < 2; e1++) {
                        unsigned long long m = 0;
#pragma unroll
                        for (int mt = 0; mt < MT; mt++)
#pragma unroll
                            for (int h = 0; h < 2; h++) {
                                const float v = acc[mt][j][2 * h + e1];
                                const uint32_t qg =
                                    (uint32_t)(a.q_base + qrow0 + mt * 16 + h * 8 + g);
                                const unsigned long long p =
                                    v > -INFINITY ? ((unsigned long long)ord_key(v) << 32) |
                                                        (unsigned long long)(0xffffffffu - qg)
                                                  : 0ull;
                                m = p > m ? p : m;
                            }
#pragma unroll
                        for (int o = 4; o < 32; o <<= 1) {
                            const unsigned long long x = __shfl_xor_sync(FULL, m, o);
                            m = x > m ? x : m;
                        }
                        cm[j][e1] = m;
                    }
                /* Lane L takes key column L (held by lanes with tg = (L & 7) >> 1). */
                unsigned long long mine = 0;
                const int src = (lane & 7) >> 1;
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int e1 = 0; e1 < 2; e1++) {
                        const unsigned long long x = __shfl_sync(FULL, cm[j][e1], src);
                        if (j == (lane >> 3) && e1 == (lane & 1))
                            mine = x;
                    }
                const int64_t key = key0 + lane;
                if (key < k1 && mine != 0 && mine > __ldcg(a.best + key))
                    atomicMax(a.best + key, mine);
            }
        }
    }
    cp_async_wait<0>();

    /* Down to K' per row, then out. */
    unsigned need = __ballot_sync(FULL, lane < ROWS && cnt[lane] > a.kkeep);
    while (need) {
        const int r = __ffs(need) - 1;
        need &= need - 1;
        compact_row(bkey + (size_t)r * a.bcap, bid + (size_t)r * a.bcap, cnt + r, thr + r, a.kkeep,
                    lane);
    }
    __syncwarp();
    for (int r = 0; r < ROWS; r++) {
        const int64_t ql = qrow0 + r;
        if (ql >= a.nq)
            break;
        const int64_t slot = ql * a.nsplit + split;
        const int c = cnt[r];
        for (int i = lane; i < c; i += 32) {
            a.c_key[slot * a.kkeep + i] = bkey[(size_t)r * a.bcap + i];
            a.c_id[slot * a.kkeep + i] = bid[(size_t)r * a.bcap + i];
        }
        if (lane == 0) {
            a.c_cnt[slot] = c;
            a.c_cut[slot] = thr[r];
        }
    }
#endif
}

/* ==== Merge: splits → re-score in fp32 → top k, certificate =============================== */

struct MergeArgs {
    const uint32_t *c_key;
    const int32_t *c_id;
    const int32_t *c_cnt;
    const float *c_cut;
    int nsplit, kkeep, k, keff;
    int64_t nq;
    const float *qf;      /* (nq, dim) chunk's queries */
    const float *qn;      /* (nq, 3) */
    const unsigned *wr;   /* max key norm, max f32→bf16 key residual norm (float bits) */
    float gamma;          /* accumulation term of E */
    int dim, dp;
    int ktype;            /* ann_key_type */
    const float *kf;      /* (n, dim) f32 keys, for ANN_KEYS_F32 */
    const bf16 *kb;       /* (n_pad, dp) bf16 keys or int8 codes */
    const float *kscale;  /* (n) int8 scales */
    int32_t *ids;         /* (nq, k) */
    float *scores;        /* (nq, k) */
    uint8_t *flag;        /* (nq) 1: not certified, recompute on the CPU */
};

__global__ void __launch_bounds__(MW * 32) knn_merge(const MergeArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t qi = (int64_t)blockIdx.x * MW + warp;
    if (qi >= a.nq)
        return; /* whole warp; no block-wide barrier below */
    const int M = a.nsplit * a.kkeep;
    uint32_t *key = reinterpret_cast<uint32_t *>(smem) + (size_t)warp * 3 * M;
    int32_t *id = reinterpret_cast<int32_t *>(key + M);
    float *ex = reinterpret_cast<float *>(key + 2 * M);

    int m = 0;
    float cut = -INFINITY;
    for (int s = 0; s < a.nsplit; s++) {
        const int64_t slot = qi * a.nsplit + s;
        const int c = a.c_cnt[slot];
        cut = fmaxf(cut, a.c_cut[slot]);
        for (int i = lane; i < c; i += 32) {
            key[m + i] = a.c_key[slot * a.kkeep + i];
            id[m + i] = a.c_id[slot * a.kkeep + i];
        }
        m += c;
    }
    __syncwarp();

    float qr[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int d = lane + 32 * i;
        qr[i] = d < a.dim ? a.qf[qi * a.dim + d] : 0.0f;
    }
    const float W = __uint_as_float(a.wr[0]), R = __uint_as_float(a.wr[1]);
    const float E = 1.01f * ((a.qn[3 * qi + 1] + a.gamma * a.qn[3 * qi + 2]) * W +
                             a.qn[3 * qi + 2] * R);
    float lo = -INFINITY;
    if (m > a.keff)
        lo = ord_val(warp_select(key, m, a.keff, lane)) - 2.0f * E;

    /* Re-score the candidates within 2E of A_k; mark the others with id −1. */
    for (int base = 0; base < m; base += 32) {
        const int i = base + lane;
        const bool cand = i < m && ord_val(key[i]) >= lo;
        unsigned bal = __ballot_sync(FULL, cand);
        __syncwarp();
        if (i < m && !cand)
            id[i] = -1;
        while (bal) {
            const int b = __ffs(bal) - 1;
            bal &= bal - 1;
            const int32_t kid = id[base + b];
            float part = 0.0f;
#pragma unroll
            for (int t = 0; t < 8; t++) {
                const int d = lane + 32 * t;
                if (d < a.dim) {
                    float w;
                    if (a.ktype == ANN_KEYS_F32)
                        w = a.kf[(int64_t)kid * a.dim + d];
                    else if (a.ktype == ANN_KEYS_BF16)
                        w = __bfloat162float(a.kb[(int64_t)kid * a.dp + d]);
                    else
                        w = __fmul_rn(a.kscale[kid], __bfloat162float(a.kb[(int64_t)kid * a.dp + d]));
                    part = fmaf(qr[t], w, part);
                }
            }
            const float dot = warp_sum(part);
            if (lane == b)
                ex[base + b] = dot;
        }
    }
    __syncwarp();

    /* Rank among the re-scored (ties → earlier slot); the top k out, S_k = rank keff − 1. */
    const int64_t ob = qi * a.k;
    for (int s = lane; s < a.k; s += 32) {
        a.ids[ob + s] = -1;
        a.scores[ob + s] = -INFINITY;
    }
    __syncwarp();
    bool bad = false, has_sk = false;
    float sk = 0.0f;
    for (int i = lane; i < m; i += 32) {
        if (id[i] < 0)
            continue;
        const float xi = ex[i];
        if (!(xi == xi)) {
            bad = true;
            continue;
        }
        int rank = 0;
        for (int j = 0; j < m; j++) {
            if (id[j] < 0)
                continue;
            const float xj = ex[j];
            rank += xj > xi || (xj == xi && j < i);
        }
        if (rank < a.keff) {
            a.ids[ob + rank] = id[i];
            a.scores[ob + rank] = xi;
        }
        if (rank == a.keff - 1) {
            has_sk = true;
            sk = xi;
        }
    }
    const unsigned fm = __ballot_sync(FULL, has_sk);
    sk = __shfl_sync(FULL, sk, fm ? __ffs(fm) - 1 : 0);
    const bool anybad = __any_sync(FULL, bad);
    if (lane == 0) {
        const bool ok = !anybad && fm != 0 && (cut == -INFINITY || cut + E <= sk);
        a.flag[qi] = ok ? 0 : 1;
    }
}

/* ==== Host ================================================================================= */

static double gamma_for(int dp) { return (double)dp * ldexp(1.0, -21); }

static int dp_for(int dim) { return dim <= 64 ? 64 : dim <= 128 ? 128 : dim <= 256 ? 256 : 0; }

#define KNN_CUDA(call, what)                                                                   \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess)                                                                 \
            return rtc::cuda_fail(err, e_, "GPU kNN", what);                                   \
    } while (0)

/* Launch configuration: everything that follows from the shape and the device. */
struct Plan {
    int dp = 0, mt = 0, kkeep = 0, bcap = 0, nsplit = 1, keff = 0;
    int64_t split_len = 0, chunk = 0, n_pad = 0;
    size_t scan_smem = 0, merge_smem = 0;
};

static size_t scan_smem_bytes(int dp, int mt, int bcap)
{
    return (size_t)STAGES * TK * (dp + 8) * sizeof(bf16) +
           (size_t)NW * 16 * mt * (8 + 8 * (size_t)bcap);
}

/* False when the shape has no GPU path (then the CPU computes it). */
static bool make_plan(const rt_cuda_knn_opts *o, int64_t n, int dim, int64_t nq, int k, int n_sm,
                      int smem_max, Plan *p)
{
    p->dp = dp_for(dim);
    if (p->dp == 0)
        return false;
    p->keff = k < n ? k : (int)n;
    const int want = o->margin >= 0 ? o->margin : (p->keff / 4 > 32 ? p->keff / 4 : 32);
    const int least = want < 16 ? want : 16; /* a smaller margin only to fit */
    for (int mt = p->dp == 256 ? 1 : 2; mt >= 1; mt--) {
        const size_t fixed = scan_smem_bytes(p->dp, mt, 0);
        if ((size_t)smem_max <= fixed)
            continue;
        int64_t fit = ((int64_t)smem_max - (int64_t)fixed) / (NW * 16 * mt * 8);
        int bcap = (int)(fit < BMAX ? fit : BMAX);
        int kkeep = p->keff + want;
        if (kkeep + CH > bcap)
            kkeep = bcap - CH;
        if (kkeep < p->keff + least)
            continue;
        p->mt = mt;
        p->bcap = bcap;
        p->kkeep = kkeep;
        p->scan_smem = scan_smem_bytes(p->dp, mt, bcap);
        break;
    }
    if (p->mt == 0)
        return false;
    const int bq = NW * 16 * p->mt;
    p->n_pad = (n + TK - 1) / TK * TK;
    p->chunk = o->max_chunk > 0 ? o->max_chunk : DEFAULT_CHUNK;
    if (p->chunk > nq)
        p->chunk = nq;
    /* Splits: enough blocks for two per SM (one fits at a time), each split at least 4 tiles,
     * and the merge's candidates per query bounded. */
    const int64_t qblocks = (p->chunk + bq - 1) / bq;
    int64_t ns = o->nsplit > 0 ? o->nsplit : (2 * (int64_t)n_sm + qblocks - 1) / qblocks;
    const int64_t by_keys = (n + 4 * TK - 1) / (4 * TK);
    const int64_t by_merge = MERGE_MAX / p->kkeep;
    if (o->nsplit <= 0 && ns > by_keys)
        ns = by_keys;
    if (ns > by_merge)
        ns = by_merge;
    if (ns < 1)
        ns = 1;
    p->split_len = ((n + ns - 1) / ns + TK - 1) / TK * TK;
    p->nsplit = (int)((n + p->split_len - 1) / p->split_len);
    p->merge_smem = (size_t)MW * 3 * (size_t)p->nsplit * p->kkeep * 4;
    return (size_t)smem_max >= p->merge_smem;
}

/* Device buffers of one call, allocated stream-ordered and freed the same way. */
struct Call {
    cudaStream_t stream = nullptr;
    cudaEvent_t ev0 = nullptr, ev1 = nullptr;
    void *stage = nullptr;         /* stored key rows (n, dim); f32 keys stay for re-scoring */
    float *kscale = nullptr;       /* (n) */
    bf16 *kb = nullptr;            /* (n_pad, dp) */
    unsigned *wr = nullptr;        /* (2) */
    unsigned long long *best = nullptr; /* (n) */
    float *qf = nullptr;           /* (chunk, dim) */
    bf16 *qb = nullptr;            /* (chunk_pad, dp) */
    float *qn = nullptr;           /* (chunk, 3) */
    uint32_t *c_key = nullptr;
    int32_t *c_id = nullptr, *c_cnt = nullptr;
    float *c_cut = nullptr;
    int32_t *ids = nullptr;        /* (chunk, k) */
    float *scores = nullptr;
    uint8_t *flag = nullptr;       /* (chunk) */
    uint64_t bytes = 0;
    rtc::HostStage hs;             /* the queries' and results' copies (staging.cuh) */

    template <typename T> loupe_status alloc(T **p, size_t count, loupe_err *err)
    {
        size_t b = (count ? count : 1) * sizeof(T);
        KNN_CUDA(cudaMallocAsync(reinterpret_cast<void **>(p), b, stream), "device allocation");
        bytes += b;
        return LOUPE_OK;
    }

    /* Frees everything; errors here are not reported (the first error already was). */
    void release()
    {
        void *bufs[] = {stage, kscale, kb, wr, best, qf, qb, qn, c_key, c_id, c_cnt, c_cut,
                        ids, scores, flag};
        if (stream) {
            for (void *b : bufs)
                if (b)
                    cudaFreeAsync(b, stream);
            cudaStreamSynchronize(stream);
            cudaStreamDestroy(stream);
        }
        hs.give_back(); /* nothing in flight: the stream is finished or never was */
        if (ev0)
            cudaEventDestroy(ev0);
        if (ev1)
            cudaEventDestroy(ev1);
        cudaGetLastError();
    }
};

template <int KS, int MT> static cudaError_t launch_scan(const ScanArgs &a, dim3 grid, size_t smem,
                                                         cudaStream_t st)
{
    cudaError_t e = rtc::allow_max_dyn_smem(knn_scan<KS, MT>);
    if (e != cudaSuccess)
        return e;
    knn_scan<KS, MT><<<grid, NW * 32, smem, st>>>(a);
    return cudaGetLastError();
}

static cudaError_t scan(const Plan &p, const ScanArgs &a, dim3 grid, cudaStream_t st)
{
    if (p.dp == 64)
        return p.mt == 2 ? launch_scan<4, 2>(a, grid, p.scan_smem, st)
                         : launch_scan<4, 1>(a, grid, p.scan_smem, st);
    if (p.dp == 128)
        return p.mt == 2 ? launch_scan<8, 2>(a, grid, p.scan_smem, st)
                         : launch_scan<8, 1>(a, grid, p.scan_smem, st);
    return launch_scan<16, 1>(a, grid, p.scan_smem, st);
}

static cudaError_t key_prep_launch(ann_key_type t, const Call &c, const Plan &p, int64_t n,
                                   int dim, int n_sm)
{
    const int64_t blocks64 = (p.n_pad + 7) / 8;
    const unsigned blocks = (unsigned)(blocks64 < 16 * (int64_t)n_sm ? blocks64 : 16 * n_sm);
    if (t == ANN_KEYS_F32)
        key_prep<ANN_KEYS_F32><<<blocks, 256, 0, c.stream>>>(c.stage, c.kscale, n, p.n_pad, dim,
                                                            p.dp, c.kb, c.wr);
    else if (t == ANN_KEYS_BF16)
        key_prep<ANN_KEYS_BF16><<<blocks, 256, 0, c.stream>>>(c.stage, c.kscale, n, p.n_pad, dim,
                                                             p.dp, c.kb, c.wr);
    else
        key_prep<ANN_KEYS_INT8><<<blocks, 256, 0, c.stream>>>(c.stage, c.kscale, n, p.n_pad, dim,
                                                             p.dp, c.kb, c.wr);
    return cudaGetLastError();
}

/* The GPU part: fills ids/scores for every query, flags (nq) the uncertified ones, and the
 * packed best words (n) when best_host is non-NULL. */
static loupe_status run_gpu(Call &c, const Plan &p, int n_sm, const ann_keys *keys,
                            const float *queries, int64_t nq, int k, int32_t *ids, float *scores,
                            uint8_t *flags, unsigned long long *best_host, rt_cuda_knn_info *info,
                            loupe_err *err)
{
    const int64_t n = ann_keys_count(keys);
    const int dim = ann_keys_dim(keys);
    const ann_key_type kt = ann_keys_type(keys);
    int64_t stride = 0;
    const float *scales_h = nullptr;
    const void *rows = ann_keys_data(keys, &stride, &scales_h);
    const size_t esz = kt == ANN_KEYS_F32 ? 4 : kt == ANN_KEYS_BF16 ? 2 : 1;
    const int bq = NW * 16 * p.mt;
    const int64_t chunk_pad = (p.chunk + bq - 1) / bq * bq;

    KNN_CUDA(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking), "stream creation");
    KNN_CUDA(cudaEventCreate(&c.ev0), "event creation");
    KNN_CUDA(cudaEventCreate(&c.ev1), "event creation");
    loupe_status st;
    if ((st = c.alloc(reinterpret_cast<unsigned char **>(&c.stage), (size_t)n * dim * esz, err)) ||
        (kt == ANN_KEYS_INT8 && (st = c.alloc(&c.kscale, (size_t)n, err))) ||
        (st = c.alloc(&c.kb, (size_t)p.n_pad * p.dp, err)) || (st = c.alloc(&c.wr, 2, err)) ||
        (best_host && (st = c.alloc(&c.best, (size_t)n, err))) ||
        (st = c.alloc(&c.qf, (size_t)p.chunk * dim, err)) ||
        (st = c.alloc(&c.qb, (size_t)chunk_pad * p.dp, err)) ||
        (st = c.alloc(&c.qn, (size_t)p.chunk * 3, err)) ||
        (st = c.alloc(&c.c_key, (size_t)p.chunk * p.nsplit * p.kkeep, err)) ||
        (st = c.alloc(&c.c_id, (size_t)p.chunk * p.nsplit * p.kkeep, err)) ||
        (st = c.alloc(&c.c_cnt, (size_t)p.chunk * p.nsplit, err)) ||
        (st = c.alloc(&c.c_cut, (size_t)p.chunk * p.nsplit, err)) ||
        (st = c.alloc(&c.ids, (size_t)p.chunk * k, err)) ||
        (st = c.alloc(&c.scores, (size_t)p.chunk * k, err)) ||
        (st = c.alloc(&c.flag, (size_t)p.chunk, err)))
        return st;
    if (info)
        info->device_bytes = c.bytes;

    KNN_CUDA(cudaMemcpy2DAsync(c.stage, (size_t)dim * esz, rows, (size_t)stride * esz,
                               (size_t)dim * esz, (size_t)n, cudaMemcpyHostToDevice, c.stream),
             "key upload");
    if (kt == ANN_KEYS_INT8)
        KNN_CUDA(cudaMemcpyAsync(c.kscale, scales_h, (size_t)n * sizeof(float),
                                 cudaMemcpyHostToDevice, c.stream),
                 "key scale upload");
    KNN_CUDA(cudaMemsetAsync(c.wr, 0, 2 * sizeof(unsigned), c.stream), "memset");
    if (c.best)
        KNN_CUDA(cudaMemsetAsync(c.best, 0, (size_t)n * sizeof(unsigned long long), c.stream),
                 "memset");
    KNN_CUDA(key_prep_launch(kt, c, p, n, dim, n_sm), "key preparation kernel");
    if (kt != ANN_KEYS_F32) { /* only f32 keys are re-scored from the staged rows */
        KNN_CUDA(cudaFreeAsync(c.stage, c.stream), "device free");
        c.stage = nullptr;
    }

    double kernel_s = 0.0;
    int64_t n_chunks = 0;
    for (int64_t q0 = 0; q0 < nq; q0 += p.chunk, n_chunks++) {
        const int64_t nqc = nq - q0 < p.chunk ? nq - q0 : p.chunk;
        const int64_t nqc_pad = (nqc + bq - 1) / bq * bq;
        KNN_CUDA(c.hs.upload(c.qf, queries + q0 * dim, (size_t)nqc * dim * sizeof(float),
                             c.stream),
                 "query upload");
        KNN_CUDA(cudaEventRecord(c.ev0, c.stream), "event record");
        query_prep<<<(unsigned)((nqc_pad + 7) / 8), 256, 0, c.stream>>>(c.qf, nqc, nqc_pad, dim,
                                                                        p.dp, c.qb, c.qn);
        KNN_CUDA(cudaGetLastError(), "query preparation kernel");

        ScanArgs sa;
        sa.q = c.qb;
        sa.kb = c.kb;
        sa.kscale = c.kscale;
        sa.nq = nqc;
        sa.n = n;
        sa.split_len = p.split_len;
        sa.q_base = q0;
        sa.kkeep = p.kkeep;
        sa.bcap = p.bcap;
        sa.nsplit = p.nsplit;
        sa.c_key = c.c_key;
        sa.c_id = c.c_id;
        sa.c_cnt = c.c_cnt;
        sa.c_cut = c.c_cut;
        sa.best = c.best;
        KNN_CUDA(scan(p, sa, dim3((unsigned)(nqc_pad / bq), (unsigned)p.nsplit), c.stream),
                 "scan kernel");

        MergeArgs ma;
        ma.c_key = c.c_key;
        ma.c_id = c.c_id;
        ma.c_cnt = c.c_cnt;
        ma.c_cut = c.c_cut;
        ma.nsplit = p.nsplit;
        ma.kkeep = p.kkeep;
        ma.k = k;
        ma.keff = p.keff;
        ma.nq = nqc;
        ma.qf = c.qf;
        ma.qn = c.qn;
        ma.wr = c.wr;
        ma.gamma = (float)gamma_for(p.dp);
        ma.dim = dim;
        ma.dp = p.dp;
        ma.ktype = (int)kt;
        ma.kf = static_cast<const float *>(c.stage);
        ma.kb = c.kb;
        ma.kscale = c.kscale;
        ma.ids = c.ids;
        ma.scores = c.scores;
        ma.flag = c.flag;
        KNN_CUDA(rtc::allow_max_dyn_smem(knn_merge), "merge kernel attribute");
        knn_merge<<<(unsigned)((nqc + MW - 1) / MW), MW * 32, p.merge_smem, c.stream>>>(ma);
        KNN_CUDA(cudaGetLastError(), "merge kernel");
        KNN_CUDA(cudaEventRecord(c.ev1, c.stream), "event record");

        KNN_CUDA(c.hs.download(ids + q0 * k, c.ids, (size_t)nqc * k * sizeof(int32_t), c.stream),
                 "result download");
        if (scores)
            KNN_CUDA(c.hs.download(scores + q0 * k, c.scores, (size_t)nqc * k * sizeof(float),
                                   c.stream),
                     "result download");
        KNN_CUDA(c.hs.download(flags + q0, c.flag, (size_t)nqc, c.stream), "result download");
        KNN_CUDA(cudaStreamSynchronize(c.stream), "kNN kernels");
        c.hs.complete();
        float ms = 0.0f;
        KNN_CUDA(cudaEventElapsedTime(&ms, c.ev0, c.ev1), "event timing");
        kernel_s += 1e-3 * ms;
    }
    if (best_host) {
        KNN_CUDA(c.hs.download(best_host, c.best, (size_t)n * sizeof(unsigned long long),
                               c.stream),
                 "best-query download");
        KNN_CUDA(cudaStreamSynchronize(c.stream), "kNN kernels");
        c.hs.complete();
    }
    if (info) {
        info->kernel_s = kernel_s;
        info->n_chunks = n_chunks;
    }
    return LOUPE_OK;
}

/* Queries flagged by the GPU, recomputed (ids, scores) by ann_knn_cpu. */
static loupe_status cpu_redo(const ann_keys *keys, const float *queries, int64_t nq, int k,
                             int threads, const uint8_t *flags, int32_t *ids, float *scores,
                             int64_t *n_redo, loupe_err *err)
{
    const int dim = ann_keys_dim(keys);
    int64_t m = 0;
    for (int64_t i = 0; i < nq; i++)
        m += flags[i] != 0;
    *n_redo = m;
    if (m == 0)
        return LOUPE_OK;
    float *q = static_cast<float *>(malloc((size_t)m * dim * sizeof(float)));
    int32_t *ri = static_cast<int32_t *>(malloc((size_t)m * k * sizeof(int32_t)));
    float *rs = static_cast<float *>(malloc((size_t)m * k * sizeof(float)));
    loupe_status st = LOUPE_OK;
    if (!q || !ri || !rs) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "GPU kNN: no memory to redo %lld queries",
                        (long long)m);
    } else {
        for (int64_t i = 0, j = 0; i < nq; i++)
            if (flags[i])
                memcpy(q + dim * j++, queries + i * dim, (size_t)dim * sizeof(float));
        st = ann_knn_cpu(nullptr, keys, q, m, k, threads, ri, rs, nullptr, err);
        if (st == LOUPE_OK)
            for (int64_t i = 0, j = 0; i < nq; i++)
                if (flags[i]) {
                    memcpy(ids + i * k, ri + j * k, (size_t)k * sizeof(int32_t));
                    if (scores)
                        memcpy(scores + i * k, rs + j * k, (size_t)k * sizeof(float));
                    j++;
                }
    }
    free(q);
    free(ri);
    free(rs);
    return st;
}

static uint64_t need_bytes(const Plan &p, int64_t n, int dim, ann_key_type kt, int k, bool best)
{
    const uint64_t esz = kt == ANN_KEYS_F32 ? 4 : kt == ANN_KEYS_BF16 ? 2 : 1;
    uint64_t b = (uint64_t)n * dim * esz + (uint64_t)p.n_pad * p.dp * 2 + 8 +
                 (kt == ANN_KEYS_INT8 ? 4 * (uint64_t)n : 0) + (best ? 8 * (uint64_t)n : 0);
    const uint64_t per_q = 4 * (uint64_t)dim + 2 * (uint64_t)p.dp + 12 + 8 * (uint64_t)k + 1 +
                           (uint64_t)p.nsplit * (8 * (uint64_t)p.kkeep + 8);
    return b + per_q * (uint64_t)(p.chunk + 128);
}

} // namespace rtc_knn

using namespace rtc_knn;

extern "C" void rt_cuda_knn_opts_init(rt_cuda_knn_opts *o)
{
    memset(o, 0, sizeof *o);
    o->margin = -1;
}

extern "C" double rt_cuda_knn_bound(const float *q, int dim, double w_max, double r_max)
{
    const int dp = dp_for(dim) ? dp_for(dim) : dim;
    double e2 = 0.0, t2 = 0.0;
    for (int i = 0; i < dim; i++) {
        const double t = (double)__bfloat162float(__float2bfloat16_rn(q[i]));
        e2 += ((double)q[i] - t) * ((double)q[i] - t);
        t2 += t * t;
    }
    return 1.01 * ((sqrt(e2) + gamma_for(dp) * sqrt(t2)) * w_max + sqrt(t2) * r_max);
}

extern "C" loupe_status rt_cuda_knn_run(const rt_cuda_knn_opts *opts, const ann_keys *keys,
                                        const float *queries, int64_t nq, int k, int threads,
                                        int32_t *ids, float *scores, int32_t *key_best_query,
                                        rt_cuda_knn_info *info, loupe_err *err)
{
    rt_cuda_knn_opts defaults;
    rt_cuda_knn_opts_init(&defaults);
    const rt_cuda_knn_opts *o = opts ? opts : &defaults;
    rt_cuda_knn_info scratch;
    rt_cuda_knn_info *inf = info ? info : &scratch;
    memset(inf, 0, sizeof *inf);
    if (k <= 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "GPU kNN: k must be positive, got %d", k);
    if (nq < 0 || (nq > 0 && !queries))
        return loupe_fail(err, LOUPE_ERR_INVALID, "GPU kNN: %lld queries", (long long)nq);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "GPU kNN: no CUDA device is available");
    }
    if (o->device < 0 || o->device >= n_dev)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "GPU kNN: CUDA device %d does not exist "
                          "(%d found)", o->device, n_dev);
    KNN_CUDA(cudaSetDevice(o->device), "cudaSetDevice");
    const int64_t n = ann_keys_count(keys);
    const int dim = ann_keys_dim(keys);
    if (nq == 0) {
        if (key_best_query)
            for (int64_t i = 0; i < n; i++)
                key_best_query[i] = -1;
        return LOUPE_OK;
    }
    int n_sm = 0, smem_max = 0, cc = 0, pools = 0;
    KNN_CUDA(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, o->device),
             "device query");
    KNN_CUDA(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                    o->device),
             "device query");
    KNN_CUDA(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, o->device),
             "device query");
    KNN_CUDA(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, o->device),
             "device query");
    if (ann_keys_type(keys) == ANN_KEYS_INT8C) { /* a search copy: no kernel reads its form */
        inf->cpu_only = 1;
        return ann_knn_cpu(nullptr, keys, queries, nq, k, threads, ids, scores, key_best_query,
                           err);
    }
    Plan p;
    if (cc < 8 || !pools || !make_plan(o, n, dim, nq, k, n_sm, smem_max, &p)) {
        if (pools && k <= WIDE_K_MAX) /* k or dim beyond the fused scan's buffers */
            return knn_wide(o->device, keys, queries, nq, k, threads, ids, scores,
                            key_best_query, inf, err);
        inf->cpu_only = 1;
        return ann_knn_cpu(nullptr, keys, queries, nq, k, threads, ids, scores, key_best_query,
                           err);
    }
    inf->nsplit = p.nsplit;
    inf->kkeep = p.kkeep;
    inf->bcap = p.bcap;
    inf->rows_per_warp = 16 * p.mt;

    const uint64_t need = need_bytes(p, n, dim, ann_keys_type(keys), k, key_best_query != nullptr);
    size_t free_b = 0, total_b = 0;
    KNN_CUDA(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
    if (need > free_b)
        return loupe_fail(err, LOUPE_ERR_GPU_MEMORY,
                          "GPU kNN: needs %.1f MiB of device memory for %lld keys and %lld "
                          "queries, %.1f MiB are free",
                          need / 1048576.0, (long long)n, (long long)(p.chunk), free_b / 1048576.0);

    uint8_t *flags = static_cast<uint8_t *>(malloc((size_t)nq));
    unsigned long long *best =
        key_best_query
            ? static_cast<unsigned long long *>(malloc((size_t)n * sizeof(unsigned long long)))
            : nullptr;
    if (!flags || (key_best_query && !best)) {
        free(flags);
        free(best);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "GPU kNN: no host memory for %lld flags",
                          (long long)nq);
    }
    Call c;
    const double t0 = rtc::wall_s();
    loupe_status st =
        run_gpu(c, p, n_sm, keys, queries, nq, k, ids, scores, flags, best, inf, err);
    c.release();
    inf->gpu_s = rtc::wall_s() - t0;
    if (st == LOUPE_OK && best)
        for (int64_t i = 0; i < n; i++)
            key_best_query[i] =
                best[i] ? (int32_t)(0xffffffffu - (uint32_t)(best[i] & 0xffffffffu)) : -1;
    if (st == LOUPE_OK)
        st = cpu_redo(keys, queries, nq, k, threads, flags, ids, scores, &inf->n_fallback, err);
    free(flags);
    free(best);
    return st;
}

extern "C" loupe_status rt_cuda_knn(void *user, const ann_keys *keys, const float *queries,
                                    int64_t nq, int k, int threads, int32_t *ids, float *scores,
                                    int32_t *key_best_query, loupe_err *err)
{
    rt_cuda_knn_opts o;
    rt_cuda_knn_opts_init(&o);
    if (user)
        o.device = *static_cast<const int *>(user);
    return rt_cuda_knn_run(&o, keys, queries, nq, k, threads, ids, scores, key_best_query,
                           nullptr, err);
}
