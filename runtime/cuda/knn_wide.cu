/*
 * The wide path of rt_cuda_knn: exact query→key top-k for k up to WIDE_K_MAX, where the fused
 * scan (knn.cu) cannot keep k + margin candidates per query in shared memory. The graph build
 * asks for it with a large build k: on the bundled model's 128K vectors, top-1024 lists raised
 * the graph's recall@100 at equal keys scanned from 0.54 to 0.78 (docs/BENCHMARKS.md).
 *
 * Per chunk of queries (as many as keep the chunk's score rows within BUDGET bytes and the
 * device's free memory):
 *   1. scores  S = Q · Kᵀ in fp32 by a tiled SIMT matrix product, each score one chain of fused
 *              multiply-adds over the dimensions in order. A score matrix of the chunk exists,
 *              never one of all queries.
 *   2. best    each key's best query over the chunk, merged into a running (score, query) word
 *              per key; ties go to the lower query.
 *   3. select  a block per query finds the k-th largest of the row's (score, position) words —
 *              unique, so the selection is exact and ties of score go to the lower key id — by
 *              radix passes of DIGIT bits from the top, each a pass over the row that counts the
 *              words still matching the chosen prefix; it stops at the first digit whose bucket
 *              is taken whole. Then the k words at or above the prefix are collected and sorted
 *              (bitonic, shared memory), best first. Where a row is long against k (at least
 *              32 k and SAMPLE scores) a sampled threshold decides it first, from one read of
 *              the row (select_sampled); the rows it cannot decide go to the radix passes.
 * Scores are fp32 dot products summed in another order than ann_knn_cpu's, so a result differs
 * from the CPU's only where two keys' scores tie within a few ulp (as on the fused path). A row
 * with a NaN score (NaN or Inf in the inputs) is flagged, and then ann_knn_cpu redoes the whole
 * call, best queries included.
 *
 * Device memory: the keys as stored (freed once widened), n·dim·4 widened, 8n (best), and per
 * query of a chunk dim·4 + n·4 + k·8 + 2. At 131,072 keys a chunk is 1,024 queries (512 MiB
 * of scores); at 1M keys 128.
 *
 * Checked on an H100 (2026-12-07): test_cuda_knn wide (the sampled selection, and its
 * fallback on tied keys), shapes and edges; 131,072 bf16 keys × 512 queries × top-1024 took
 * 1.34 ms of kernels (1.5–2.7 ms with the radix selection alone). In the graph build a call
 * still takes several times its kernels (docs/BENCHMARKS.md).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "runtime/cuda/common.cuh"
#include "runtime/cuda/knn_wide.cuh"

namespace rtc_knn {
namespace {

constexpr int BM = 64, BN = 128, BK = 16;      /* score tile: queries × keys × dims per stage */
constexpr int ST = 256;                        /* threads of the score and select blocks */
constexpr int DIGIT = 11, BINS = 1 << DIGIT;   /* radix digit of the selection */
constexpr int64_t BUDGET = (int64_t)512 << 20; /* bytes of score rows per chunk at most */
constexpr unsigned FULL = 0xffffffffu;

/* float → uint32 with the same order (-0 below +0); and back. */
__device__ __forceinline__ uint32_t ord32(float f)
{
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float val32(uint32_t u)
{
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

/* The selection's word of score f at position x: larger is better, ties to the lower x. */
__device__ __forceinline__ unsigned long long word(float f, int64_t x)
{
    return (unsigned long long)ord32(f) << 32 | (FULL - (uint32_t)x);
}

/* kf (n, dim) = the stored rows widened as ann_keys_row widens them. */
template <int KT>
__global__ void widen(const void *rows, const float *scale, int64_t n, int dim, float *kf)
{
    const int64_t total = n * dim;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        float v;
        if (KT == ANN_KEYS_F32)
            v = static_cast<const float *>(rows)[e];
        else if (KT == ANN_KEYS_BF16)
            v = __bfloat162float(static_cast<const __nv_bfloat16 *>(rows)[e]);
        else
            v = scale[e / dim] * (float)static_cast<const int8_t *>(rows)[e];
        kf[e] = v;
    }
}

/* S (nq, n) = Q (nq, dim) · Kᵀ (K: (n, dim)). A block computes BM × BN scores, thread (ty, tx)
 * the 4 queries ty·4.. and the keys tx·4.. and 64 + tx·4.. (so a quarter warp reads consecutive
 * 16-byte words of the key tile); dimensions pass through shared memory BK at a time,
 * zero-padded past dim and past the last query or key. */
__global__ void __launch_bounds__(ST) scores(const float *Q, const float *K, int64_t nq,
                                             int64_t n, int dim, float *S)
{
    __shared__ __align__(16) float As[BK][BM + 4];
    __shared__ __align__(16) float Bs[BK][BN + 4];
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int64_t q0 = (int64_t)blockIdx.y * BM, k0 = (int64_t)blockIdx.x * BN;
    float acc[4][8];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            acc[i][j] = 0.0f;
    for (int d0 = 0; d0 < dim; d0 += BK) {
        for (int e = t; e < BM * BK; e += ST) {
            const int r = e / BK, c = e % BK;
            const int64_t q = q0 + r;
            As[c][r] = q < nq && d0 + c < dim ? Q[q * dim + d0 + c] : 0.0f;
        }
        for (int e = t; e < BN * BK; e += ST) {
            const int r = e / BK, c = e % BK;
            const int64_t k = k0 + r;
            Bs[c][r] = k < n && d0 + c < dim ? K[k * dim + d0 + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            const float4 a = *reinterpret_cast<const float4 *>(&As[kk][ty * 4]);
            const float4 b0 = *reinterpret_cast<const float4 *>(&Bs[kk][tx * 4]);
            const float4 b1 = *reinterpret_cast<const float4 *>(&Bs[kk][64 + tx * 4]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 8; j++)
                    acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        const int64_t q = q0 + ty * 4 + i;
        if (q >= nq)
            continue;
        for (int j = 0; j < 8; j++) {
            const int64_t k = k0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
            if (k < n)
                S[q * n + k] = acc[i][j];
        }
    }
}

/* best[key] = max(best[key], the best (score, ~query) word over the chunk's rows). */
__global__ void best_of_chunk(const float *S, int64_t nqc, int64_t n, int64_t q_base,
                              unsigned long long *best)
{
    for (int64_t key = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; key < n;
         key += (int64_t)gridDim.x * blockDim.x) {
        unsigned long long b = best[key];
        for (int64_t q = 0; q < nqc; q++) {
            const unsigned long long w = word(S[q * n + key], q_base + q);
            b = w > b ? w : b;
        }
        best[key] = b;
    }
}

/* By the whole block, for this block's row: the `filled` words of buf (zeros up to p2, a power
 * of two), sorted best first, give the row's keff best ids and scores in its k_out slots of ids
 * and sc (the rest -1 / -inf). */
__device__ void rank_out(unsigned long long *buf, int filled, int p2, int keff, int k_out,
                         int32_t *ids, float *sc)
{
    const int t = threadIdx.x;
    for (int x = filled + t; x < p2; x += ST)
        buf[x] = 0;
    __syncthreads();
    for (int size = 2; size <= p2; size <<= 1) /* descending */
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int e = t; e < p2 / 2; e += ST) {
                const int a = 2 * e - (e & (stride - 1)), b = a + stride;
                const bool down = (a & size) == 0;
                const unsigned long long x = buf[a], y = buf[b];
                if ((x < y) == down) {
                    buf[a] = y;
                    buf[b] = x;
                }
            }
            __syncthreads();
        }
    int32_t *oi = ids + (int64_t)blockIdx.x * k_out;
    float *os = sc + (int64_t)blockIdx.x * k_out;
    for (int x = t; x < k_out; x += ST) {
        if (x < keff) {
            oi[x] = (int32_t)(FULL - (uint32_t)(buf[x] & FULL));
            os[x] = val32((uint32_t)(buf[x] >> 32));
        } else {
            oi[x] = -1;
            os[x] = -INFINITY;
        }
    }
}

/* A block per query row of n scores: its top k (k_out slots; keff = min(k_out, n) filled, the
 * rest -1 / -inf), best first, into ids and sc; flag = 1 when the row holds a NaN. buf: p2
 * words of dynamic shared memory, p2 a power of two >= keff. only: when not null, the rows it
 * marks alone (those select_sampled left undecided). */
__global__ void __launch_bounds__(ST) select_topk(const float *S, int64_t n, int k_out, int p2,
                                                  int32_t *ids, float *sc, uint8_t *flag,
                                                  const uint8_t *only)
{
    if (only && !only[blockIdx.x])
        return;
    extern __shared__ __align__(16) unsigned long long buf[];
    __shared__ unsigned hist[BINS];
    __shared__ unsigned long long s_prefix, s_mask;
    __shared__ int s_rem, s_done, s_cnt, s_nan;
    const int t = threadIdx.x, lane = t & 31;
    const float *row = S + (int64_t)blockIdx.x * n;
    const int keff = (int64_t)k_out < n ? k_out : (int)n;
    if (t == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_rem = keff;
        s_done = keff == 0;
        s_cnt = 0;
        s_nan = 0;
    }
    __syncthreads();
    for (int hi = 63; !s_done && hi >= 0;) {
        const int lo = hi - DIGIT + 1 > 0 ? hi - DIGIT + 1 : 0;
        const unsigned long long dmask = ((2ull << (hi - lo)) - 1) << lo;
        for (int b = t; b < BINS; b += ST)
            hist[b] = 0;
        __syncthreads();
        const unsigned long long pre = s_prefix, msk = s_mask;
        /* The lanes of a warp whose words fall in one bin add to it once: a row's scores share a
         * few exponents, so the first digits put most of a row in a handful of bins, and one
         * atomic per word serialised there. The loop runs whole warps (x0) for the shuffles. */
        for (int64_t x0 = t - lane; x0 < n; x0 += ST) {
            const int64_t x = x0 + lane;
            bool in = false;
            unsigned bin = ~0u;
            if (x < n) {
                const float f = row[x];
                if (hi == 63 && f != f)
                    s_nan = 1;
                const unsigned long long w = word(f, x);
                in = (w & msk) == pre;
                if (in)
                    bin = (unsigned)((w & dmask) >> lo);
            }
            const unsigned peers = __match_any_sync(FULL, bin);
            if (in && lane == __ffs(peers) - 1)
                atomicAdd(&hist[bin], (unsigned)__popc(peers));
        }
        __syncthreads();
        if (t < 32) { /* the digit whose bucket holds the rem-th largest: lane l owns 64 bins */
            constexpr int PER = BINS / 32;
            const int rem = s_rem;
            unsigned mine = 0;
            for (int b = 0; b < PER; b++)
                mine += hist[lane * PER + b];
            unsigned incl = mine; /* sum over lanes >= lane */
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned v = __shfl_down_sync(FULL, incl, o);
                if (lane + o < 32)
                    incl += v;
            }
            const unsigned above = incl - mine;
            if (above < (unsigned)rem && (unsigned)rem <= incl) {
                unsigned acc = above;
                for (int b = PER - 1; b >= 0; b--) {
                    const unsigned h = hist[lane * PER + b];
                    if (acc + h >= (unsigned)rem) {
                        const unsigned long long d = (unsigned long long)(lane * PER + b);
                        s_prefix = pre | d << lo;
                        s_mask = msk | dmask;
                        s_rem = rem - (int)acc;
                        s_done = h == (unsigned)(rem - (int)acc);
                        break;
                    }
                    acc += h;
                }
            }
        }
        __syncthreads();
        hi = lo - 1;
    }
    const unsigned long long pre = s_prefix, msk = s_mask;
    for (int64_t x = t; x < n && keff > 0; x += ST) {
        const unsigned long long w = word(row[x], x);
        if ((w & msk) >= pre) {
            const int at = atomicAdd(&s_cnt, 1);
            if (at < p2)
                buf[at] = w;
        }
    }
    __syncthreads();
    rank_out(buf, s_cnt < p2 ? s_cnt : p2, p2, keff, k_out, ids, sc);
    if (t == 0)
        flag[blockIdx.x] = (uint8_t)(s_nan || s_cnt != keff);
}

/* The sampled selection, for rows much longer than k: select_topk reads the whole row once per
 * radix digit (4-5 times at 131,072 keys and top-1,024); here the row is read once and a
 * sample of it once more:
 *   1. threshold  SAMPLE scores in SAMPLE / 128 evenly spaced runs of 128 (whole sectors), and
 *                 the r-th largest of them, thr (r: the sample's share of about 1.5 keff);
 *   2. filter     every word whose score is at least thr goes to shared memory (at most CAP);
 *   3. rank       if at least keff and at most CAP did, they hold the row's top keff words (there
 *                 are keff scores >= thr, so the keff-th best score is >= thr): a bitonic sort
 *                 of them, best first, and the same output as select_topk. Otherwise the row is
 *                 marked in redo and select_topk decides it; a NaN flags the row as there.
 * The same words and order as select_topk, so the same result. Dynamic shared memory: CAP words
 * (the sample's SAMPLE scores live in the same bytes first). */
constexpr int SAMPLE = 8192, SRUN = 128, CAP = 4096;

__global__ void __launch_bounds__(ST) select_sampled(const float *S, int64_t n, int k_out, int r,
                                                     int32_t *ids, float *sc, uint8_t *flag,
                                                     uint8_t *redo)
{
    extern __shared__ __align__(16) unsigned long long buf[];
    uint32_t *smp = reinterpret_cast<uint32_t *>(buf);
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ int s_rem, s_cnt, s_nan;
    const int t = threadIdx.x, lane = t & 31;
    const float *row = S + (int64_t)blockIdx.x * n;
    const int keff = (int64_t)k_out < n ? k_out : (int)n;
    for (int x = t; x < SAMPLE; x += ST) {
        const int run = x / SRUN;
        const int64_t at = (int64_t)run * (n - SRUN) / (SAMPLE / SRUN - 1) + x % SRUN;
        smp[x] = ord32(row[at]);
    }
    if (t == 0) {
        s_prefix = 0;
        s_rem = r;
        s_cnt = 0;
        s_nan = 0;
    }
    __syncthreads();
    for (int shift = 24; shift >= 0; shift -= 8) { /* the r-th largest sample, 8 bits a pass */
        for (int b = t; b < 256; b += ST)
            hist[b] = 0;
        __syncthreads();
        const uint32_t pre = s_prefix, hmask = shift == 24 ? 0u : ~0u << (shift + 8);
        for (int x = t; x < SAMPLE; x += ST)
            if ((smp[x] & hmask) == pre)
                atomicAdd(&hist[(smp[x] >> shift) & 255u], 1u);
        __syncthreads();
        if (t == 0) {
            int rem = s_rem, b = 255;
            while (b > 0 && (int)hist[b] < rem)
                rem -= (int)hist[b--];
            s_prefix = pre | (uint32_t)b << shift;
            s_rem = rem;
        }
        __syncthreads();
    }
    const uint32_t thr = s_prefix;
    __syncthreads(); /* the sample's bytes become buf */
    for (int64_t x0 = t - lane; x0 < n; x0 += ST) {
        const int64_t x = x0 + lane;
        bool in = false;
        unsigned long long w = 0;
        if (x < n) {
            const float f = row[x];
            if (f != f)
                s_nan = 1;
            w = word(f, x);
            in = (uint32_t)(w >> 32) >= thr;
        }
        const unsigned m = __ballot_sync(FULL, in);
        if (m) {
            int base = 0;
            if (lane == 0)
                base = atomicAdd(&s_cnt, __popc(m));
            base = __shfl_sync(FULL, base, 0);
            const int at = base + __popc(m & ((1u << lane) - 1u));
            if (in && at < CAP)
                buf[at] = w;
        }
    }
    __syncthreads();
    const int cnt = s_cnt;
    if (s_nan || cnt < keff || cnt > CAP) {
        if (t == 0) {
            flag[blockIdx.x] = (uint8_t)(s_nan != 0);
            redo[blockIdx.x] = (uint8_t)!s_nan;
        }
        return;
    }
    int p2 = 2;
    while (p2 < cnt)
        p2 <<= 1;
    rank_out(buf, cnt, p2, keff, k_out, ids, sc);
    if (t == 0) {
        flag[blockIdx.x] = 0;
        redo[blockIdx.x] = 0;
    }
}

#define WIDE_CUDA(call, what)                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess)                                                                 \
            return rtc::cuda_fail(err, e_, "GPU kNN (wide)", what);                            \
    } while (0)

using Call = rtc::CallBufs;

/* The GPU part; *any_flag tells whether a row held a NaN (the caller then redoes it all). */
loupe_status run(Call &c, const ann_keys *keys, const float *queries, int64_t nq, int k,
                 int32_t *ids, float *scores_h, unsigned long long *best_h, int *any_flag,
                 rt_cuda_knn_info *info, loupe_err *err)
{
    const int64_t n = ann_keys_count(keys);
    const int dim = ann_keys_dim(keys);
    const ann_key_type kt = ann_keys_type(keys);
    const size_t esz = ann_key_type_bytes(kt);
    const int keff = (int64_t)k < n ? k : (int)n;
    int p2 = 2;
    while (p2 < keff)
        p2 <<= 1;
    /* The sampled selection where a row is long against k (its filter then keeps ~1.5 keff of
     * CAP words); sample_r: the sample's rank whose score about 1.5 keff of the row reach. */
    const bool sampled = n >= SAMPLE && n >= 32 * (int64_t)keff && keff > 0 && 2 * keff <= CAP;
    const int sample_r = sampled ? (int)((3 * (int64_t)keff * SAMPLE + 2 * n - 1) / (2 * n)) : 0;

    /* The chunk: within BUDGET and within what is free after the keys. */
    size_t free_b = 0, total_b = 0;
    WIDE_CUDA(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
    const uint64_t fixed = (uint64_t)n * dim * (esz + 4) + 8 * (uint64_t)n + 4 * (uint64_t)n;
    const uint64_t per_q = 4 * (uint64_t)dim + 4 * (uint64_t)n + 8 * (uint64_t)k + 2;
    int64_t chunk = BUDGET / (4 * (n > 0 ? n : 1));
    if (free_b > fixed + (64u << 20)) {
        const int64_t fit = (int64_t)((free_b - fixed - (64u << 20)) / per_q);
        chunk = fit < chunk ? fit : chunk;
    } else {
        chunk = 0;
    }
    chunk = chunk < nq ? chunk : nq;
    chunk = chunk < ((int64_t)1 << 20) ? chunk : ((int64_t)1 << 20); /* the grid's y extent */
    if (chunk < 1)
        return loupe_fail(err, LOUPE_ERR_GPU_MEMORY,
                          "GPU kNN (wide): %lld keys of dimension %d and one query's %lld "
                          "scores need %.1f MiB of device memory, %.1f MiB are free",
                          (long long)n, dim, (long long)n,
                          (double)(fixed + per_q) / 1048576.0, free_b / 1048576.0);

    WIDE_CUDA(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking), "stream creation");
    WIDE_CUDA(cudaEventCreate(&c.ev[0]), "event creation");
    WIDE_CUDA(cudaEventCreate(&c.ev[1]), "event creation");
    WIDE_CUDA(cudaEventCreate(&c.ev[2]), "event creation");
    WIDE_CUDA(cudaEventRecord(c.ev[2], c.stream), "event record");
    void *stage = nullptr;
    float *kscale = nullptr, *kf = nullptr, *qf = nullptr, *S = nullptr, *d_sc = nullptr;
    int32_t *d_ids = nullptr;
    uint8_t *d_flag = nullptr, *d_redo = nullptr;
    unsigned long long *d_best = nullptr;
    loupe_status st;
    if ((st = c.upload_keys(keys, &stage, &kscale, err)) ||
        (st = c.alloc(&kf, (size_t)n * dim, err)) ||
        (best_h && (st = c.alloc(&d_best, (size_t)n, err))))
        return st;
    if (d_best)
        WIDE_CUDA(cudaMemsetAsync(d_best, 0, (size_t)n * sizeof *d_best, c.stream), "memset");
    const unsigned wblocks = (unsigned)((n * dim + 255) / 256 < 4096 ? (n * dim + 255) / 256 : 4096);
    if (n > 0) {
        if (kt == ANN_KEYS_F32)
            widen<ANN_KEYS_F32><<<wblocks, 256, 0, c.stream>>>(stage, kscale, n, dim, kf);
        else if (kt == ANN_KEYS_BF16)
            widen<ANN_KEYS_BF16><<<wblocks, 256, 0, c.stream>>>(stage, kscale, n, dim, kf);
        else
            widen<ANN_KEYS_INT8><<<wblocks, 256, 0, c.stream>>>(stage, kscale, n, dim, kf);
        WIDE_CUDA(cudaGetLastError(), "key widening kernel");
    }
    c.free_now(stage);
    if ((st = c.alloc(&qf, (size_t)chunk * dim, err)) ||
        (st = c.alloc(&S, (size_t)chunk * n, err)) ||
        (st = c.alloc(&d_ids, (size_t)chunk * k, err)) ||
        (st = c.alloc(&d_sc, (size_t)chunk * k, err)) ||
        (st = c.alloc(&d_flag, (size_t)chunk, err)) ||
        (sampled && (st = c.alloc(&d_redo, (size_t)chunk, err))))
        return st;
    info->device_bytes = c.bytes;
    const size_t sel_smem = (size_t)p2 * sizeof(unsigned long long);
    WIDE_CUDA(rtc::allow_max_dyn_smem(select_topk), "select kernel attribute");
    const size_t smp_smem = (size_t)CAP * sizeof(unsigned long long);
    if (sampled)
        WIDE_CUDA(rtc::allow_max_dyn_smem(select_sampled), "select kernel attribute");
    uint8_t *flags_h = static_cast<uint8_t *>(malloc(2 * (size_t)chunk)); /* flags, then redo */
    if (!flags_h)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "GPU kNN (wide): no host memory");
    uint8_t *redo_h = flags_h + chunk;
    info->wide_sampled = sampled;
    double kernel_s = 0.0;
    int64_t n_chunks = 0;
    for (int64_t q0 = 0; q0 < nq; q0 += chunk, n_chunks++) {
        const int64_t nqc = nq - q0 < chunk ? nq - q0 : chunk;
        cudaError_t e = c.stage.upload(qf, queries + q0 * dim, (size_t)nqc * dim * sizeof(float),
                                       c.stream);
        if (e == cudaSuccess)
            e = cudaEventRecord(c.ev[0], c.stream);
        if (e == cudaSuccess && n > 0) {
            scores<<<dim3((unsigned)((n + BN - 1) / BN), (unsigned)((nqc + BM - 1) / BM)), ST, 0,
                     c.stream>>>(qf, kf, nqc, n, dim, S);
            e = cudaGetLastError();
            if (e == cudaSuccess && d_best) {
                const int64_t bb = (n + 255) / 256;
                best_of_chunk<<<(unsigned)(bb < 65535 ? bb : 65535), 256, 0, c.stream>>>(
                    S, nqc, n, q0, d_best);
                e = cudaGetLastError();
            }
        }
        if (e == cudaSuccess) {
            if (sampled) {
                select_sampled<<<(unsigned)nqc, ST, smp_smem, c.stream>>>(S, n, k, sample_r,
                                                                        d_ids, d_sc, d_flag,
                                                                        d_redo);
                e = cudaGetLastError();
            }
            if (e == cudaSuccess) {
                select_topk<<<(unsigned)nqc, ST, sel_smem, c.stream>>>(S, n, k, p2, d_ids, d_sc,
                                                                     d_flag, d_redo);
                e = cudaGetLastError();
            }
        }
        if (e == cudaSuccess)
            e = cudaEventRecord(c.ev[1], c.stream);
        if (e == cudaSuccess)
            e = c.stage.download(ids + q0 * k, d_ids, (size_t)nqc * k * sizeof(int32_t), c.stream);
        if (e == cudaSuccess && scores_h)
            e = c.stage.download(scores_h + q0 * k, d_sc, (size_t)nqc * k * sizeof(float),
                                 c.stream);
        if (e == cudaSuccess)
            e = c.stage.download(flags_h, d_flag, (size_t)nqc, c.stream);
        if (e == cudaSuccess && sampled)
            e = c.stage.download(redo_h, d_redo, (size_t)nqc, c.stream);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(c.stream);
        if (e == cudaSuccess)
            c.stage.complete();
        float ms = 0.0f, prep_ms = 0.0f;
        if (e == cudaSuccess)
            e = cudaEventElapsedTime(&ms, c.ev[0], c.ev[1]);
        if (e == cudaSuccess && n_chunks == 0) {
            e = cudaEventElapsedTime(&prep_ms, c.ev[2], c.ev[0]);
            info->prep_s = 1e-3 * prep_ms;
        }
        if (e != cudaSuccess) {
            free(flags_h);
            return rtc::cuda_fail(err, e, "GPU kNN (wide)", "chunk of queries");
        }
        kernel_s += 1e-3 * ms;
        for (int64_t i = 0; i < nqc; i++) {
            *any_flag |= flags_h[i];
            info->wide_redo += sampled && redo_h[i];
        }
    }
    free(flags_h);
    if (best_h) {
        if ((st = c.download(best_h, d_best, (size_t)n, "best-query download", err)) ||
            (st = c.sync("best-query download", err)))
            return st;
    }
    info->kernel_s = kernel_s;
    info->n_chunks = n_chunks;
    return LOUPE_OK;
}

} // namespace

loupe_status knn_wide(int device, const ann_keys *keys, const float *queries, int64_t nq, int k,
                      int threads, int32_t *ids, float *scores, int32_t *key_best_query,
                      rt_cuda_knn_info *info, loupe_err *err)
{
    (void)device;
    const int64_t n = ann_keys_count(keys);
    info->wide = 1;
    unsigned long long *best =
        key_best_query
            ? static_cast<unsigned long long *>(malloc((size_t)(n ? n : 1) * sizeof *best))
            : nullptr;
    if (key_best_query && !best)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "GPU kNN (wide): no host memory for %lld keys",
                          (long long)n);
    Call c("GPU kNN (wide)");
    int any_flag = 0;
    const double t0 = rtc::wall_s();
    loupe_status st = run(c, keys, queries, nq, k, ids, scores, best, &any_flag, info, err);
    c.release();
    info->gpu_s = rtc::wall_s() - t0;
    if (st == LOUPE_OK && any_flag) { /* NaN somewhere: the CPU decides everything */
        info->n_fallback = nq;
        st = ann_knn_cpu(nullptr, keys, queries, nq, k, threads, ids, scores, key_best_query,
                         err);
    } else if (st == LOUPE_OK && best) {
        for (int64_t i = 0; i < n; i++)
            key_best_query[i] =
                best[i] ? (int32_t)(0xffffffffu - (uint32_t)(best[i] & 0xffffffffu)) : -1;
    }
    free(best);
    return st;
}

} // namespace rtc_knn
