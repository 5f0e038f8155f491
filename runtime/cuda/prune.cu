/*
 * rt_cuda_prune — anns' batch pruning (ann_prune_fn, anns.h) on the GPU: the graph build's
 * projection, which on CPU threads took ~2 thread-s per 128K-key index and made the index build
 * longer than the prefill it rides on (docs/BENCHMARKS.md).
 *
 * One call, on its own stream with stream-ordered allocations (host threads may call at once):
 * the keys are uploaded as stored (f32, bf16, int8 codes and scales) and widened where they are
 * read, exactly as ann_keys_row widens them, so every row is the CPU's F row. Then one of:
 *
 *   shared lists   a block per run of at most RUN lists over one shared list (keys with one best
 *                  query): the list's rows go to shared memory, the distances between all its
 *                  members are computed once (a K × K matrix in shared memory), and each warp
 *                  prunes one list of the run: its owner's distances (from the matrix when the
 *                  owner is a member, else against its row), the candidates ranked by
 *                  (distance, id) — each one's rank counted against all, a permutation since ids
 *                  are distinct — and the greedy rule checked by as many lanes as there are kept
 *                  edges, reading the matrix.
 *   explicit lists a warp per list of at most EXPL_MAX candidates (pivots' lists, reverse-edge
 *                  merges): owner distances computed (or taken from the job), ranked as above,
 *                  and the greedy rule with each candidate's row in shared memory and each kept
 *                  row there too, lane t computing the distance to kept row t.
 *   long lists     a warp per list of up to LONGEST candidates, explicit or a shared list longer
 *                  than SHARED_K_MAX (large build k: top-1024 lists found 0.54 → 0.78 of the
 *                  top-100 at the same keys scanned on the bundled model's 128K vectors,
 *                  docs/BENCHMARKS.md): owner distances a lane per candidate, a bitonic sort of
 *                  (distance, id) keys in shared memory (repeats land side by side and count
 *                  once), the greedy rule with lanes splitting the kept rows' dimensions. Lists
 *                  longer still are pruned by ann_prune_cpu on the calling thread meanwhile.
 *                  A cut shared list (the runtime's top-1,024 cut to 128) is not sorted whole:
 *                  a radix selection finds its cut and only the candidates within it are sorted
 *                  (warp_select_sort); and at the runtime's degree 16 and head dim 128 the kept
 *                  rows live in registers (greedy_regs).
 *
 * A cut job (ann_prune_job.nearest: each list cut to its N candidates nearest the owner) runs
 * the same kernels: the candidates are in (distance, id) order before the greedy pass, so the
 * cut is the pass stopping after N of them (the owner distances and the order are still of the
 * whole list).
 *
 * The rule is the CPU's to the letter (prune.c): sorted by (distance, id), c dropped when some
 * kept r has alpha·d(r, c) < d(p, c) (alpha 1 for inner products), at most `keep`, then topped up
 * to `fill` with the first dropped ones. Only the distances' rounding differs (the CPU sums in
 * 16 lanes, the GPU one lane in order or a warp's tree), so a list can differ where two
 * candidates' distances are within a few ulp: tests/cuda/test_cuda_prune.c counts such lists.
 *
 * Shapes without a GPU path — dim > DIM_MAX, keep > KEEP_MAX, shared lists longer than
 * LONGEST, too little shared memory, int8c keys, no device — answer LOUPE_ERR_UNSUPPORTED, and
 * the build prunes on the CPU instead.
 *
 * Checked on an H100 (2026-12-07): test_cuda_prune's five cases (at most 0.10% of a batch's
 * lists differ from the CPU's), a graph built either way has the same edges' count and recall.
 * Cost at 131,072 keys (bench_anns_build, 4 builds at once, 2026-12-07): top-64 lists ~21 ms
 * of kernels per index; top-1024 cut to 128 (the runtime's default from 16K on) ~96 ms, uncut
 * ~540 ms, almost all prune_long; with prune_long's owner distances read as 16-byte words and
 * four candidates' rows ahead in its greedy pass, 81 ms against 92 in the same run (the
 * kernels' time summed over calls that overlap). ncu (2026-12-07, one build alone, 6,144
 * queries' top-1,024 cut to 128): prune_long was issue-bound at 12 warps an SM; the
 * selection and the registers' greedy pass took its main launch 43.0 → 25.9 ms (119K
 * instructions a list), the distance form as a template argument and 32 elements a lane in
 * owner_dists to 14.7 ms (69K); an index's pruning kernels 54 → 22 ms.
 * The host copies go through page-locked staging (staging.cuh).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "runtime/cuda/common.cuh"
#include "runtime/cuda/prune.cuh"
#include "runtime/rt_cuda.h"

namespace rtc_prune {

constexpr int NW = 4;             /* warps per block */
constexpr int RUN = 64;           /* lists of one shared list per block */
constexpr int EXPL_MAX = 512;     /* longest explicit list of prune_explicit */
constexpr int LONGEST = 8192;     /* longest list of prune_long (explicit or shared) */
constexpr int KEEP_MAX = 64;
constexpr int SHARED_K_MAX = 128; /* longest shared list of prune_shared; longer: prune_long */
constexpr int DIM_MAX = 256;
constexpr unsigned FULL = 0xffffffffu;

/* The stored keys, dense (n, dim), and int8 scales. */
struct Keys {
    const void *rows;
    const float *scale;
    int dim;
};

/* Element i of row r widened as ann_keys_row does. */
template <int KT> __device__ __forceinline__ float key_at(const Keys &k, int64_t r, int i)
{
    if (KT == ANN_KEYS_F32)
        return static_cast<const float *>(k.rows)[r * k.dim + i];
    if (KT == ANN_KEYS_BF16)
        return __bfloat162float(static_cast<const __nv_bfloat16 *>(k.rows)[r * k.dim + i]);
    return k.scale[r] * (float)static_cast<const int8_t *>(k.rows)[r * k.dim + i];
}

/* A warp copies row r (widened) to dst (dim floats). */
template <int KT> __device__ __forceinline__ void load_row(const Keys &k, int64_t r, float *dst)
{
    for (int i = threadIdx.x & 31; i < k.dim; i += 32)
        dst[i] = key_at<KT>(k, r, i);
}

/* The prune distance between two rows in shared memory, summed in order by one thread. */
__device__ __forceinline__ float dist_rows(const float *a, const float *b, int dim, bool ip)
{
    float s = 0.0f;
    if (ip) {
        for (int i = 0; i < dim; i++)
            s = fmaf(a[i], b[i], s);
        return -s;
    }
    for (int i = 0; i < dim; i++) {
        const float t = a[i] - b[i];
        s = fmaf(t, t, s);
    }
    return s;
}

/* (distance, id) as one integer with the CPU's order (prune.c cand_key): -0 as +0. */
__device__ __forceinline__ unsigned long long order_key(float s, int32_t id)
{
    if (s == 0.0f)
        s = 0.0f;
    unsigned u = __float_as_uint(s);
    u = (u >> 31) ? ~u : (u | 0x80000000u);
    return (unsigned long long)u << 32 | (unsigned)id;
}

struct Args {
    Keys keys;
    bool ip;
    float alpha;
    int keep, fill;
    int nearest;            /* lists cut to their `nearest` candidates nearest the owner (all:
                               INT_MAX), as ann_prune_job.nearest */
    int n_lists;
    const int32_t *own;     /* (n_lists) */
    /* shared */
    const int32_t *shared;  /* (rows, K) */
    int K;
    const int32_t *lst;     /* (n_lists) */
    const int32_t *item;    /* (n_items + 1) first list of each run */
    /* explicit */
    const int64_t *start;   /* (n_lists) */
    const int32_t *len;
    const int32_t *cid;
    const float *cdist;     /* or null */
    int emax;               /* longest list of this launch (<= EXPL_MAX) */
    int i0;                 /* explicit and long kernels: lists i0 .. n_lists - 1 */
    int pmax;               /* prune_long: candidate slots per warp, a power of two */
    int nw;                 /* prune_long: warps per block */
    /* out */
    int32_t *out_id;        /* (n_lists, keep) */
    float *out_s;
    int32_t *out_n;         /* (n_lists) */
};

/* Byte offsets are kept 16-aligned so every array of a layout starts aligned for its type. */
__host__ __device__ constexpr size_t al16(size_t b) { return (b + 15) / 16 * 16; }

/* Ranks m candidates (key[x], x < m) and writes the sorted order into spos (candidate index). */
__device__ __forceinline__ void rank_sort(const unsigned long long *key, int m, int32_t *spos)
{
    for (int x = threadIdx.x & 31; x < m; x += 32) {
        const unsigned long long kx = key[x];
        int r = 0;
        for (int y = 0; y < m; y++)
            r += key[y] < kx;
        spos[r] = x;
    }
    __syncwarp();
}

/* The greedy pass and the top-up over m candidates in sorted order, by one warp: for each
 * candidate r, prepare(r) (the whole warp), then pruned_by(r, t) for every kept edge t (lanes
 * take kept edges in parallel); a candidate no kept edge prunes is kept (on_keep(r, k), the
 * whole warp), a pruned one is remembered while fewer than `keep` are; then the list is topped
 * up to `fill` with the remembered ones in order. Returns the count; kidx receives the kept
 * candidates' sorted indices. */
template <typename Prepare, typename Pruned, typename OnKeep>
__device__ __forceinline__ int greedy(int m, int keep, int fill, int32_t *kidx, int32_t *drop,
                                      Prepare prepare, Pruned pruned_by, OnKeep on_keep)
{
    const int lane = threadIdx.x & 31;
    int kept = 0, nd = 0;
    for (int r = 0; r < m && kept < keep; r++) {
        prepare(r);
        bool pr = false;
        for (int t = lane; t < kept; t += 32)
            pr |= pruned_by(r, t);
        if (__any_sync(FULL, pr)) {
            if (nd < keep) {
                if (lane == 0)
                    drop[nd] = r;
                nd++;
            }
        } else {
            if (lane == 0)
                kidx[kept] = r;
            on_keep(r, kept);
            kept++;
        }
        __syncwarp();
    }
    for (int x = 0; x < nd && kept < fill; x++) {
        if (lane == 0)
            kidx[kept] = drop[x];
        kept++;
    }
    __syncwarp();
    return kept;
}

/* ---- Shared lists -------------------------------------------------------------------------- */

/* Shared memory of prune_shared: for the block, the list's rows (K, dim + 1: the pad spreads a
 * column over the banks), the pair matrix (K, K), ids and first-occurrence flags (K each); per
 * warp, the owner's row (dim), sort keys (K), and the candidates' sorted order, list positions
 * and distances (K each), kept and dropped (keep each). */
struct SharedLayout {
    size_t rows, pd, ids, valid, warp0, wbytes, total;
    size_t w_orow, w_key, w_spos, w_cpos, w_cs, w_kidx, w_drop;
    __host__ __device__ SharedLayout(int K, int dim, int keep)
    {
        rows = 0;
        pd = rows + al16((size_t)K * (dim + 1) * 4);
        ids = pd + al16((size_t)K * K * 4);
        valid = ids + al16((size_t)K * 4);
        warp0 = valid + al16((size_t)K * 4);
        w_orow = 0;
        w_key = w_orow + al16((size_t)dim * 4);
        w_spos = w_key + al16((size_t)K * 8);
        w_cpos = w_spos + al16((size_t)K * 4);
        w_cs = w_cpos + al16((size_t)K * 4);
        w_kidx = w_cs + al16((size_t)K * 4);
        w_drop = w_kidx + al16((size_t)keep * 4);
        wbytes = w_drop + al16((size_t)keep * 4);
        total = warp0 + NW * wbytes;
    }
};

template <int KT> __global__ void __launch_bounds__(NW * 32) prune_shared(Args a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    const int K = a.K, dim = a.keys.dim, ld = dim + 1;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const SharedLayout L(K, dim, a.keep);
    float *rows = reinterpret_cast<float *>(smem + L.rows);
    float *pd = reinterpret_cast<float *>(smem + L.pd);
    int32_t *ids = reinterpret_cast<int32_t *>(smem + L.ids);
    int32_t *valid = reinterpret_cast<int32_t *>(smem + L.valid);
    unsigned char *w = smem + L.warp0 + warp * L.wbytes;
    float *orow = reinterpret_cast<float *>(w + L.w_orow);
    unsigned long long *key = reinterpret_cast<unsigned long long *>(w + L.w_key);
    int32_t *spos = reinterpret_cast<int32_t *>(w + L.w_spos);
    int32_t *cpos = reinterpret_cast<int32_t *>(w + L.w_cpos);
    float *cs = reinterpret_cast<float *>(w + L.w_cs);
    int32_t *kidx = reinterpret_cast<int32_t *>(w + L.w_kidx);
    int32_t *drop = reinterpret_cast<int32_t *>(w + L.w_drop);

    const int i0 = a.item[blockIdx.x], i1 = a.item[blockIdx.x + 1];
    const int32_t *l = a.shared + (int64_t)a.lst[i0] * K;
    for (int x = threadIdx.x; x < K; x += blockDim.x) { /* a repeat counts once */
        const int32_t v = l[x];
        bool first = v >= 0;
        for (int y = 0; y < x && first; y++)
            first = l[y] != v;
        ids[x] = v;
        valid[x] = first;
    }
    for (int x = warp; x < K; x += NW) {
        if (l[x] >= 0)
            load_row<KT>(a.keys, l[x], rows + (size_t)x * ld);
        else
            for (int t = lane; t < dim; t += 32)
                rows[(size_t)x * ld + t] = 0.0f;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < K * K; e += blockDim.x) {
        const int x = e / K, y = e % K;
        if (x < y) {
            const float d = dist_rows(rows + (size_t)x * ld, rows + (size_t)y * ld, dim, a.ip);
            pd[x * K + y] = d;
            pd[y * K + x] = d;
        }
    }
    __syncthreads();

    const float al = a.ip ? 1.0f : a.alpha;
    for (int i = i0 + warp; i < i1; i += NW) {
        const int32_t u = a.own[i];
        int opos = -1; /* the owner's position in the list when it is a member */
        for (int x = lane; x < K; x += 32)
            if (ids[x] == u && valid[x])
                opos = x;
        for (int o = 16; o > 0; o >>= 1)
            opos = max(opos, __shfl_xor_sync(FULL, opos, o));
        if (opos < 0) {
            load_row<KT>(a.keys, u, orow);
            __syncwarp();
        }
        /* Candidates in list order: first occurrences other than the owner. */
        int m = 0;
        for (int x0 = 0; x0 < K; x0 += 32) {
            const int x = x0 + lane;
            const bool c = x < K && valid[x] && ids[x] != u;
            const unsigned bal = __ballot_sync(FULL, c);
            if (c) {
                const int at = m + __popc(bal & ((1u << lane) - 1));
                const float s = opos >= 0 ? pd[opos * K + x]
                                          : dist_rows(orow, rows + (size_t)x * ld, dim, a.ip);
                cpos[at] = x;
                cs[at] = s;
                key[at] = order_key(s, ids[x]);
            }
            m += __popc(bal);
        }
        __syncwarp();
        rank_sort(key, m, spos); /* spos[r]: the candidate (index into cpos, cs) of rank r */
        const int kept = greedy(
            min(m, a.nearest), a.keep, a.fill, kidx, drop, [](int) {},
            [&](int r, int t) {
                const int c = spos[r], k = spos[kidx[t]];
                return al * pd[cpos[k] * K + cpos[c]] < cs[c];
            },
            [](int, int) {});
        for (int t = lane; t < kept; t += 32) {
            const int c = spos[kidx[t]];
            a.out_id[(int64_t)i * a.keep + t] = ids[cpos[c]];
            a.out_s[(int64_t)i * a.keep + t] = cs[c];
        }
        if (lane == 0)
            a.out_n[i] = kept;
        __syncwarp();
    }
}

/* ---- Explicit lists ------------------------------------------------------------------------ */

/* Shared memory of prune_explicit, per warp: sort keys (emax), the owner's and the current
 * candidate's rows (dim each), the kept rows (keep, dim + 1), the sorted order and the distances
 * (emax each), kept and dropped (keep each). */
struct ExplicitLayout {
    size_t key, orow, crow, krows, spos, cs, kidx, drop, wbytes;
    __host__ __device__ ExplicitLayout(int emax, int dim, int keep)
    {
        key = 0;
        orow = key + al16((size_t)emax * 8);
        crow = orow + al16((size_t)dim * 4);
        krows = crow + al16((size_t)dim * 4);
        spos = krows + al16((size_t)keep * (dim + 1) * 4);
        cs = spos + al16((size_t)emax * 4);
        kidx = cs + al16((size_t)emax * 4);
        drop = kidx + al16((size_t)keep * 4);
        wbytes = drop + al16((size_t)keep * 4);
    }
};

template <int KT> __global__ void __launch_bounds__(NW * 32) prune_explicit(Args a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    const int dim = a.keys.dim, ld = dim + 1;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const ExplicitLayout L(a.emax, dim, a.keep);
    unsigned char *w = smem + warp * L.wbytes;
    unsigned long long *key = reinterpret_cast<unsigned long long *>(w + L.key);
    float *orow = reinterpret_cast<float *>(w + L.orow);
    float *crow = reinterpret_cast<float *>(w + L.crow);
    float *krows = reinterpret_cast<float *>(w + L.krows);
    int32_t *spos = reinterpret_cast<int32_t *>(w + L.spos);
    float *cs = reinterpret_cast<float *>(w + L.cs);
    int32_t *kidx = reinterpret_cast<int32_t *>(w + L.kidx);
    int32_t *drop = reinterpret_cast<int32_t *>(w + L.drop);

    const int i = a.i0 + blockIdx.x * NW + warp;
    if (i >= a.n_lists)
        return;
    const int32_t u = a.own[i];
    const int m = a.len[i];
    const int32_t *c = a.cid + a.start[i];
    if (!a.cdist) {
        load_row<KT>(a.keys, u, orow);
        __syncwarp();
    }
    for (int x = 0; x < m; x++) { /* owner distances: a warp per candidate, dims over lanes */
        float s;
        if (a.cdist) {
            s = a.cdist[a.start[i] + x];
        } else {
            const int32_t cx = c[x];
            float p = 0.0f;
            for (int t = lane; t < dim; t += 32) {
                const float kv = key_at<KT>(a.keys, cx, t);
                p = a.ip ? fmaf(orow[t], kv, p) : fmaf(orow[t] - kv, orow[t] - kv, p);
            }
            for (int o = 16; o > 0; o >>= 1)
                p += __shfl_xor_sync(FULL, p, o);
            s = a.ip ? -p : p;
        }
        if (lane == 0) {
            cs[x] = s;
            key[x] = order_key(s, c[x]);
        }
    }
    __syncwarp();
    rank_sort(key, m, spos);
    const float al = a.ip ? 1.0f : a.alpha;
    const int kept = greedy(
        min(m, a.nearest), a.keep, a.fill, kidx, drop,
        [&](int r) {
            load_row<KT>(a.keys, c[spos[r]], crow);
            __syncwarp();
        },
        [&](int r, int t) {
            return al * dist_rows(krows + (size_t)t * ld, crow, dim, a.ip) < cs[spos[r]];
        },
        [&](int, int k) {
            for (int t = lane; t < dim; t += 32)
                krows[(size_t)k * ld + t] = crow[t];
        });
    for (int t = lane; t < kept; t += 32) {
        const int x = spos[kidx[t]];
        a.out_id[(int64_t)i * a.keep + t] = c[x];
        a.out_s[(int64_t)i * a.keep + t] = cs[x];
    }
    if (lane == 0)
        a.out_n[i] = kept;
}

/* ---- Long lists ---------------------------------------------------------------------------- */

/* Shared memory of prune_long, per warp: sort keys (pmax), the owner's and the current
 * candidate's rows (dim each), the kept rows (keep, dim + 1), kept and dropped (keep each, as
 * positions in the sorted keys). */
struct LongLayout {
    size_t key, orow, crow, krows, kidx, drop, wbytes;
    __host__ __device__ LongLayout(int pmax, int dim, int keep)
    {
        key = 0;
        orow = key + al16((size_t)pmax * 8);
        crow = orow + al16((size_t)dim * 4);
        krows = crow + al16((size_t)dim * 4);
        kidx = krows + al16((size_t)keep * (dim + 1) * 4);
        drop = kidx + al16((size_t)keep * 4);
        wbytes = drop + al16((size_t)keep * 4);
    }
};

/* The distance an order_key carries (-0 comes back as +0, which compares the same). */
__device__ __forceinline__ float key_dist(unsigned long long k)
{
    const unsigned u = (unsigned)(k >> 32);
    return __uint_as_float((u >> 31) ? (u & 0x7fffffffu) : ~u);
}

/* Sorts n keys (a power of two) ascending in shared memory, by one warp: bitonic, each lane
 * taking pairs (lo, lo + stride) of one stage. */
__device__ void warp_bitonic(unsigned long long *key, int n)
{
    for (int size = 2; size <= n; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x & 31; t < n / 2; t += 32) {
                const int lo = 2 * t - (t & (stride - 1)), hi = lo + stride;
                const bool up = (lo & size) == 0;
                const unsigned long long x = key[lo], y = key[hi];
                if ((x > y) == up) {
                    key[lo] = y;
                    key[hi] = x;
                }
            }
            __syncwarp();
        }
}

/* Is the candidate crow (distance s to the owner) pruned by one of the `kept` rows? By the whole
 * warp: while kept <= 32, each kept row gets 32 / kp lanes (kp: kept rounded up to a power of
 * two) that split its dimensions and add up by shuffles; beyond, a lane per kept row. */
__device__ __forceinline__ bool pruned_by_kept(const float *krows, int ld, int kept,
                                               const float *crow, int dim, bool ip, float al,
                                               float s)
{
    const int lane = threadIdx.x & 31;
    bool pr = false;
    if (kept > 32) {
        for (int t = lane; t < kept; t += 32)
            pr |= al * dist_rows(krows + (size_t)t * ld, crow, dim, ip) < s;
    } else if (kept > 0) {
        int kp = 1;
        while (kp < kept)
            kp <<= 1;
        const int g = 32 / kp, t = lane / g, part = lane % g;
        float d = 0.0f;
        if (t < kept) {
            const float *kr = krows + (size_t)t * ld;
            for (int e = part; e < dim; e += g) {
                const float x = kr[e], y = crow[e];
                d = ip ? fmaf(x, y, d) : fmaf(x - y, x - y, d);
            }
        }
        for (int o = g >> 1; o > 0; o >>= 1) /* within aligned groups of g lanes */
            d += __shfl_xor_sync(FULL, d, o);
        if (t < kept && part == 0)
            pr = al * (ip ? -d : d) < s;
    }
    return __any_sync(FULL, pr);
}

/* owner_dists' loop over 16-byte words: `lpr` lanes to a row, each lane WPL consecutive words
 * of it (its WPL · EPV elements' products summed in order, then the row's lanes by shuffles),
 * UNROLL rows per lane requested before any is used: the rows are random, so the time is their
 * memory latency. */
template <int KT, bool IP, int WPL, int UNROLL>
__device__ __forceinline__ void owner_dists_words(const Keys &k, const int32_t *c, int m,
                                                  int p2, int32_t u, const float *orow,
                                                  int lpr, unsigned long long *key)
{
    constexpr unsigned long long NONE = ~0ull;
    constexpr int ESZ = KT == ANN_KEYS_F32 ? 4 : KT == ANN_KEYS_BF16 ? 2 : 1;
    constexpr int EPV = 16 / ESZ; /* elements per 16-byte word */
    const int lane = threadIdx.x & 31, dim = k.dim;
    const int rpp = 32 / lpr, grp = lane / lpr, part = lane % lpr;
    float o[WPL * EPV]; /* in registers: the keys' stores would make the compiler read them again */
#pragma unroll
    for (int e = 0; e < WPL * EPV; e++)
        o[e] = orow[part * WPL * EPV + e];
    for (int x0 = 0; x0 < p2; x0 += rpp * UNROLL) {
        uint4 w[UNROLL][WPL];
        int32_t cx[UNROLL];
#pragma unroll
        for (int j = 0; j < UNROLL; j++) {
            const int x = x0 + j * rpp + grp;
            cx[j] = x < m ? c[x] : -1;
            const uint4 *row = reinterpret_cast<const uint4 *>(
                static_cast<const unsigned char *>(k.rows) + (int64_t)cx[j] * dim * ESZ);
#pragma unroll
            for (int q = 0; q < WPL; q++)
                w[j][q] = cx[j] >= 0 && cx[j] != u ? row[part * WPL + q] : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j < UNROLL; j++) {
            const float sc = KT == ANN_KEYS_INT8 && cx[j] >= 0 ? k.scale[cx[j]] : 0.0f;
            float p = 0.0f;
#pragma unroll
            for (int q = 0; q < WPL; q++) {
                const unsigned ws[4] = {w[j][q].x, w[j][q].y, w[j][q].z, w[j][q].w};
                float v[EPV];
                if constexpr (KT == ANN_KEYS_F32) {
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        v[e] = __uint_as_float(ws[e]);
                } else if constexpr (KT == ANN_KEYS_BF16) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        v[2 * e] = __uint_as_float(ws[e] << 16);
                        v[2 * e + 1] = __uint_as_float(ws[e] & 0xffff0000u);
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < 16; e++)
                        v[e] = sc * (float)(int8_t)(ws[e / 4] >> (8 * (e % 4)));
                }
#pragma unroll
                for (int e = 0; e < EPV; e++) {
                    const float ov = o[q * EPV + e];
                    p = IP ? fmaf(ov, v[e], p) : fmaf(ov - v[e], ov - v[e], p);
                }
            }
            for (int s = lpr >> 1; s > 0; s >>= 1) /* within the row's aligned lanes */
                p += __shfl_xor_sync(FULL, p, s);
            const int x = x0 + j * rpp + grp;
            const bool valid = cx[j] >= 0 && cx[j] != u;
            if (part == 0 && x < p2)
                key[x] = valid ? order_key(IP ? -p : p, cx[j]) : NONE;
        }
    }
}

/* The owner's distances to list c's m candidates as sort keys key[0 .. p2) (NONE for -1, the
 * owner and padding), by one warp; cd: the distances given, or null. Rows are read as 16-byte
 * words (owner_dists_words): 32 elements a lane where the head dimension is a multiple of 32
 * (4 lanes to a row at 128: a quarter of the shuffles and loop work of one word a lane), else
 * one word a lane. (The loop for shapes the words do not fit reads four rows at a time, an
 * element per load, as the kernel once did.) IP is a template argument: as a run-time flag
 * both forms of every product were computed (ncu, 2026-12-07). */
template <int KT, bool IP>
__device__ __forceinline__ void owner_dists(const Keys &k, const int32_t *c, int m, int p2,
                                            int32_t u, const float *orow, const float *cd,
                                            unsigned long long *key)
{
    constexpr unsigned long long NONE = ~0ull;
    constexpr int ESZ = KT == ANN_KEYS_F32 ? 4 : KT == ANN_KEYS_BF16 ? 2 : 1;
    constexpr int EPV = 16 / ESZ;
    const int lane = threadIdx.x & 31, dim = k.dim, words = dim / EPV;
    const int lanes32 = dim / 32; /* lanes to a row at 32 elements a lane: a power of two */
    if (!cd && dim % 32 == 0 && lanes32 <= 32 && (lanes32 & (lanes32 - 1)) == 0) {
        owner_dists_words<KT, IP, 32 / EPV, 2>(k, c, m, p2, u, orow, lanes32, key);
        return;
    }
    if (!cd && dim % EPV == 0 && words <= 32 && (words & (words - 1)) == 0) {
        owner_dists_words<KT, IP, 1, 4>(k, c, m, p2, u, orow, words, key);
        return;
    }
    /* eight lanes per candidate, each taking every eighth element */
    const int grp = lane >> 3, part = lane & 7;
    for (int x0 = 0; x0 < p2; x0 += 4) {
        const int x = x0 + grp;
        const int32_t cx = x < m ? c[x] : -1;
        const bool valid = cx >= 0 && cx != u;
        float p = 0.0f;
        if (valid && !cd)
            for (int t = part; t < dim; t += 8) {
                const float kv = key_at<KT>(k, cx, t);
                p = IP ? fmaf(orow[t], kv, p) : fmaf(orow[t] - kv, orow[t] - kv, p);
            }
        for (int o = 4; o > 0; o >>= 1) /* within the group of eight */
            p += __shfl_xor_sync(FULL, p, o);
        if (part == 0)
            key[x] = valid ? order_key(cd ? cd[x] : IP ? -p : p, cx) : NONE;
    }
}

/* A shared list cut to its `want` candidates nearest the owner needs those in order, not all
 * p2 keys: a radix selection of the want-th smallest distance T (four 8-bit digits of the
 * key's upper word, counted in hist: 256 words), then the keys whose distance is at most T
 * moved to the front in place and sorted there: a prefix of the whole sort, ties at T
 * included. The pass wants `want` distinct candidates; a list with repeats (two entries of one
 * key sort side by side and count once) may have fewer in the prefix. Returns the prefix's
 * length (a power of two, its tail NONE); 0 when more than `cap` keys are at most T (key
 * untouched: the caller sorts all); -1 when the prefix has fewer than `want` distinct keys
 * (key overwritten: the caller computes it again and sorts all). By one warp; ~2K
 * instructions against the whole bitonic sort's ~13K at p2 1,024. */
__device__ int warp_select_sort(unsigned long long *key, int p2, int want, int cap,
                                unsigned *hist)
{
    constexpr unsigned long long NONE = ~0ull;
    const int lane = threadIdx.x & 31;
    unsigned prefix = 0, mask = 0, rem = (unsigned)want, ties = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = lane; b < 256; b += 32)
            hist[b] = 0;
        __syncwarp();
        for (int x = lane; x < p2; x += 32) {
            const unsigned h = (unsigned)(key[x] >> 32);
            if ((h & mask) == prefix)
                atomicAdd(&hist[(h >> shift) & 255u], 1u);
        }
        __syncwarp();
        unsigned c[8], sum = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            c[j] = hist[8 * lane + j];
            sum += c[j];
        }
        unsigned inc = sum;
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned t = __shfl_up_sync(FULL, inc, o);
            if (lane >= o)
                inc += t;
        }
        const unsigned exc = inc - sum;
        const unsigned hit = __ballot_sync(FULL, exc < rem && rem <= inc);
        const int src = hit ? __ffs(hit) - 1 : 31;
        unsigned digit = 0, below = exc, here = 0;
#pragma unroll
        for (int j = 0; j < 8; j++)
            if (here == 0 && below + c[j] >= rem) {
                digit = 8 * lane + j;
                here = c[j];
            } else if (here == 0) {
                below += c[j];
            }
        digit = __shfl_sync(FULL, digit, src);
        below = __shfl_sync(FULL, below, src);
        ties = __shfl_sync(FULL, here, src);
        prefix |= digit << shift;
        mask |= 255u << shift;
        rem -= below;
        __syncwarp();
    }
    /* want − rem keys lie below T (every round's `below`), `ties` keys at T. */
    const int count = (int)((unsigned)want - rem + ties);
    if (count > cap)
        return 0;
    int at = 0;
    for (int x0 = 0; x0 < p2; x0 += 32) {
        const unsigned long long kx = key[x0 + lane];
        const bool in = (unsigned)(kx >> 32) <= prefix;
        const unsigned b = __ballot_sync(FULL, in);
        __syncwarp(); /* every lane has read its key before any is overwritten */
        if (in)
            key[at + __popc(b & ((1u << lane) - 1u))] = kx;
        at += __popc(b);
        __syncwarp();
    }
    int c2 = 32;
    while (c2 < at)
        c2 <<= 1;
    for (int x = at + lane; x < c2; x += 32)
        key[x] = NONE;
    __syncwarp();
    warp_bitonic(key, c2);
    int distinct = 0;
    for (int x0 = 0; x0 < at; x0 += 32) {
        const int x = x0 + lane;
        const bool first = x < at && key[x] != NONE &&
                           (x == 0 || (uint32_t)key[x - 1] != (uint32_t)key[x]);
        distinct += __popc(__ballot_sync(FULL, first));
    }
    return distinct >= want ? c2 : -1;
}

/* prune_long's greedy pass for keep <= GR_KEEP and dim <= 32 * GR_PER, the kept rows in
 * registers: lane l holds elements l, l + 32, l + 64, l + 96 of the current candidate and of
 * every kept row, so a candidate's distances to all kept rows are GR_PER FMAs a row and one
 * butterfly that leaves row (l >> 1) & 15's sum in lanes l and l ^ 1 (~130 instructions a
 * candidate, where the shared-memory form took ~600 at 16 kept rows: ncu found prune_long
 * issue-bound, 2026-12-07). The order, the rule, the cut (`nearest`) and the top-up are
 * those of the general pass in prune_long. Returns the count; kidx gets the kept keys'
 * positions. */
constexpr int GR_KEEP = 16, GR_PER = 4;

template <int KT, bool IP>
__device__ int greedy_regs(const Args &a, const unsigned long long *key, int p2, int32_t *kidx,
                           int32_t *drop)
{
    constexpr unsigned long long NONE = ~0ull;
    constexpr int AHEAD = 4;
    const int lane = threadIdx.x & 31, dim = a.keys.dim;
    const float al = IP ? 1.0f : a.alpha;
    auto next_at = [&](int r) {
        for (; r < p2; r++) {
            const unsigned long long kr = key[r];
            if (kr == NONE)
                return p2;
            if (r == 0 || (int32_t)(key[r - 1] & 0xffffffffu) != (int32_t)(kr & 0xffffffffu))
                return r;
        }
        return p2;
    };
    auto load = [&](int r, float *dst) {
#pragma unroll
        for (int j = 0; j < GR_PER; j++) {
            const int t = lane + 32 * j;
            dst[j] = r < p2 && t < dim ? key_at<KT>(a.keys, (int32_t)(key[r] & 0xffffffffu), t)
                                       : 0.0f;
        }
    };
    float kr[GR_KEEP][GR_PER];
#pragma unroll
    for (int t = 0; t < GR_KEEP; t++)
#pragma unroll
        for (int j = 0; j < GR_PER; j++)
            kr[t][j] = 0.0f;
    float nx[AHEAD][GR_PER];
    int at[AHEAD];
#pragma unroll
    for (int d = 0; d < AHEAD; d++) {
        at[d] = d == 0 ? next_at(0) : at[d - 1] < p2 ? next_at(at[d - 1] + 1) : p2;
        load(at[d], nx[d]);
    }
    const int row = (lane >> 1) & 15;
    int kept = 0, nd = 0, seen = 0;
    while (at[0] < p2 && kept < a.keep && seen++ < a.nearest) {
        const int r = at[0];
        float c[GR_PER];
#pragma unroll
        for (int j = 0; j < GR_PER; j++)
            c[j] = nx[0][j];
#pragma unroll
        for (int d = 0; d + 1 < AHEAD; d++) {
            at[d] = at[d + 1];
#pragma unroll
            for (int j = 0; j < GR_PER; j++)
                nx[d][j] = nx[d + 1][j];
        }
        at[AHEAD - 1] = at[AHEAD - 2] < p2 ? next_at(at[AHEAD - 2] + 1) : p2;
        load(at[AHEAD - 1], nx[AHEAD - 1]);
        bool pr = false;
        if (kept > 0) {
            float p[GR_KEEP];
#pragma unroll
            for (int t = 0; t < GR_KEEP; t++) {
                p[t] = 0.0f;
                if (IP) {
#pragma unroll
                    for (int j = 0; j < GR_PER; j++)
                        p[t] = fmaf(kr[t][j], c[j], p[t]);
                } else {
#pragma unroll
                    for (int j = 0; j < GR_PER; j++)
                        p[t] = fmaf(kr[t][j] - c[j], kr[t][j] - c[j], p[t]);
                }
            }
            /* Reduce-scatter: each step keeps the half of the rows this lane's bit picks and
             * adds the partner's partial sums of the same rows. */
            float q8[8], q4[4], q2[2];
            const bool b4 = lane & 16, b3 = lane & 8, b2 = lane & 4, b1 = lane & 2;
#pragma unroll
            for (int i = 0; i < 8; i++)
                q8[i] = (b4 ? p[i + 8] : p[i]) + __shfl_xor_sync(FULL, b4 ? p[i] : p[i + 8], 16);
#pragma unroll
            for (int i = 0; i < 4; i++)
                q4[i] = (b3 ? q8[i + 4] : q8[i]) + __shfl_xor_sync(FULL, b3 ? q8[i] : q8[i + 4], 8);
#pragma unroll
            for (int i = 0; i < 2; i++)
                q2[i] = (b2 ? q4[i + 2] : q4[i]) + __shfl_xor_sync(FULL, b2 ? q4[i] : q4[i + 2], 4);
            float q = (b1 ? q2[1] : q2[0]) + __shfl_xor_sync(FULL, b1 ? q2[0] : q2[1], 2);
            q += __shfl_xor_sync(FULL, q, 1);
            pr = row < kept && al * (IP ? -q : q) < key_dist(key[r]);
        }
        if (__any_sync(FULL, pr)) {
            if (nd < a.keep) {
                if (lane == 0)
                    drop[nd] = r;
                nd++;
            }
        } else {
            if (lane == 0)
                kidx[kept] = r;
#pragma unroll
            for (int t = 0; t < GR_KEEP; t++)
                if (t == kept)
#pragma unroll
                    for (int j = 0; j < GR_PER; j++)
                        kr[t][j] = c[j];
            kept++;
        }
    }
    for (int x = 0; x < nd && kept < a.fill; x++) {
        if (lane == 0)
            kidx[kept] = drop[x];
        kept++;
    }
    __syncwarp();
    return kept;
}

/* A warp per list of up to pmax candidates, explicit (cid) or a shared list's K entries (when
 * a.shared is set): the owner distances (owner_dists, or from cdist), sorted as order
 * keys by a bitonic sort (-1, the owner and padding as the largest key; a repeat lands next to
 * its first occurrence and is skipped), then the greedy rule with each kept row in shared
 * memory. */
/* Three blocks an SM: what its shared memory allows at 1,024 slots a warp; the registers that
 * leaves (~170 a thread) keep greedy_regs' rows without spilling. */
template <int KT> __global__ void __launch_bounds__(NW * 32, 3) prune_long(Args a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    const int dim = a.keys.dim, ld = dim + 1;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const LongLayout L(a.pmax, dim, a.keep);
    unsigned char *w = smem + warp * L.wbytes;
    unsigned long long *key = reinterpret_cast<unsigned long long *>(w + L.key);
    float *orow = reinterpret_cast<float *>(w + L.orow);
    float *crow = reinterpret_cast<float *>(w + L.crow);
    float *krows = reinterpret_cast<float *>(w + L.krows);
    int32_t *kidx = reinterpret_cast<int32_t *>(w + L.kidx);
    int32_t *drop = reinterpret_cast<int32_t *>(w + L.drop);
    constexpr unsigned long long NONE = ~0ull;

    const int i = a.i0 + blockIdx.x * a.nw + warp;
    if (i >= a.n_lists)
        return;
    const int32_t u = a.own[i];
    const int32_t *c;
    const float *cd = nullptr;
    int m;
    if (a.shared) {
        c = a.shared + (int64_t)a.lst[i] * a.K;
        m = a.K;
    } else {
        c = a.cid + a.start[i];
        m = a.len[i];
        if (a.cdist)
            cd = a.cdist + a.start[i];
    }
    if (!cd) {
        load_row<KT>(a.keys, u, orow);
        __syncwarp();
    }
    int p2 = 32;
    while (p2 < m)
        p2 <<= 1;
    auto dists = [&] {
        if (a.ip)
            owner_dists<KT, true>(a.keys, c, m, p2, u, orow, cd, key);
        else
            owner_dists<KT, false>(a.keys, c, m, p2, u, orow, cd, key);
        __syncwarp();
    };
    dists();
    /* A cut shared list: only its nearest candidates in order (the histogram in krows, unused until
     * the greedy pass); where repeats leave too few, the whole sort after all. */
    int sorted = 0;
    if (a.shared && a.nearest <= p2 / 4 && (size_t)a.keep * ld >= 256)
        sorted = warp_select_sort(key, p2, a.nearest, p2 / 2, reinterpret_cast<unsigned *>(krows));
    if (sorted < 0) {
        dists();
        sorted = 0;
    }
    if (sorted == 0)
        warp_bitonic(key, p2);
    else
        p2 = sorted;

    if (a.keep <= GR_KEEP && dim <= 32 * GR_PER) {
        const int kept = a.ip ? greedy_regs<KT, true>(a, key, p2, kidx, drop)
                              : greedy_regs<KT, false>(a, key, p2, kidx, drop);
        for (int t = lane; t < kept; t += 32) {
            const unsigned long long k = key[kidx[t]];
            a.out_id[(int64_t)i * a.keep + t] = (int32_t)(k & 0xffffffffu);
            a.out_s[(int64_t)i * a.keep + t] = key_dist(k);
        }
        if (lane == 0)
            a.out_n[i] = kept;
        return;
    }

    /* The greedy pass. The rows of the next AHEAD candidates are in registers while the current
     * one is checked: the order is known before the pass, whatever it keeps, and each step's
     * check is too short to hide more than a fraction of one row's memory latency. */
    constexpr int PER = DIM_MAX / 32, AHEAD = 4;
    const float al = a.ip ? 1.0f : a.alpha;
    int kept = 0, nd = 0, seen = 0; /* seen: candidates read, at most a.nearest */
    /* The first candidate at or after r: not padding, not a repeat of the one before it. */
    auto next_at = [&](int r) {
        for (; r < p2; r++) {
            const unsigned long long kr = key[r];
            if (kr == NONE)
                return p2;
            if (r == 0 || (int32_t)(key[r - 1] & 0xffffffffu) != (int32_t)(kr & 0xffffffffu))
                return r;
        }
        return p2;
    };
    auto load = [&](int r, float *dst) {
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int t = lane + 32 * j;
            dst[j] = r < p2 && t < dim ? key_at<KT>(a.keys, (int32_t)(key[r] & 0xffffffffu), t)
                                       : 0.0f;
        }
    };
    float nx[AHEAD][PER];
    int at[AHEAD];
#pragma unroll
    for (int d = 0; d < AHEAD; d++) {
        at[d] = d == 0 ? next_at(0) : at[d - 1] < p2 ? next_at(at[d - 1] + 1) : p2;
        load(at[d], nx[d]);
    }
    while (at[0] < p2 && kept < a.keep && seen++ < a.nearest) {
        const int r = at[0];
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int t = lane + 32 * j;
            if (t < dim)
                crow[t] = nx[0][j];
        }
        __syncwarp();
#pragma unroll
        for (int d = 0; d + 1 < AHEAD; d++) {
            at[d] = at[d + 1];
#pragma unroll
            for (int j = 0; j < PER; j++)
                nx[d][j] = nx[d + 1][j];
        }
        at[AHEAD - 1] = at[AHEAD - 2] < p2 ? next_at(at[AHEAD - 2] + 1) : p2;
        load(at[AHEAD - 1], nx[AHEAD - 1]);
        if (pruned_by_kept(krows, ld, kept, crow, dim, a.ip, al, key_dist(key[r]))) {
            if (nd < a.keep) {
                if (lane == 0)
                    drop[nd] = r;
                nd++;
            }
        } else {
            if (lane == 0)
                kidx[kept] = r;
            for (int t = lane; t < dim; t += 32)
                krows[(size_t)kept * ld + t] = crow[t];
            kept++;
        }
        __syncwarp();
    }
    for (int x = 0; x < nd && kept < a.fill; x++) {
        if (lane == 0)
            kidx[kept] = drop[x];
        kept++;
    }
    __syncwarp();
    for (int t = lane; t < kept; t += 32) {
        const unsigned long long k = key[kidx[t]];
        a.out_id[(int64_t)i * a.keep + t] = (int32_t)(k & 0xffffffffu);
        a.out_s[(int64_t)i * a.keep + t] = key_dist(k);
    }
    if (lane == 0)
        a.out_n[i] = kept;
}

} // namespace rtc_prune

/* ==== Host side =============================================================================== */

using namespace rtc_prune;

namespace {

#define PRUNE_CUDA(call, what)                                                                 \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess)                                                                 \
            return rtc::cuda_fail(err, e_, "GPU pruning", what);                               \
    } while (0)

using Call = rtc::CallBufs;

/* The keys as stored, dense on the device. */
loupe_status upload_keys(Call &c, const ann_keys *keys, Keys *out, loupe_err *err)
{
    void *rows = nullptr;
    float *scale = nullptr;
    loupe_status st = c.upload_keys(keys, &rows, &scale, err);
    out->rows = rows;
    out->scale = scale;
    out->dim = ann_keys_dim(keys);
    return st;
}

enum Kernel { K_SHARED, K_EXPLICIT, K_LONG };

template <int KT> cudaError_t launch(Kernel which, unsigned blocks, unsigned threads, size_t smem,
                                     const Args &a, cudaStream_t st)
{
    auto kern = which == K_SHARED ? prune_shared<KT>
                : which == K_EXPLICIT ? prune_explicit<KT> : prune_long<KT>;
    cudaError_t e = rtc::allow_max_dyn_smem(kern);
    if (e != cudaSuccess)
        return e;
    kern<<<blocks, threads, smem, st>>>(a);
    return cudaGetLastError();
}

cudaError_t launch_any(ann_key_type kt, Kernel which, unsigned blocks, unsigned threads,
                       size_t smem, const Args &a, cudaStream_t st)
{
    if (kt == ANN_KEYS_F32)
        return launch<ANN_KEYS_F32>(which, blocks, threads, smem, a, st);
    if (kt == ANN_KEYS_BF16)
        return launch<ANN_KEYS_BF16>(which, blocks, threads, smem, a, st);
    return launch<ANN_KEYS_INT8>(which, blocks, threads, smem, a, st);
}

/* The long kernel's candidate slots for lists of up to m (a power of two, at least 32) and the
 * warps per block that fit in smem_max (0: none does). */
void long_shape(int m, int dim, int keep, int smem_max, int *pmax, int *nw)
{
    int p = 32;
    while (p < m)
        p <<= 1;
    *pmax = p;
    const size_t wb = LongLayout(p, dim, keep).wbytes;
    const int fit = (int)((size_t)smem_max / wb);
    *nw = fit < NW ? fit : NW;
}

/* Copies list i's results (in keep-strided device order, already downloaded) to the job's rows. */
void scatter(const ann_prune_job *j, int64_t n_lists, const int32_t *own, const int32_t *ids,
             const float *s, const int32_t *cnt)
{
    for (int64_t i = 0; i < n_lists; i++) {
        const int64_t u = own[i];
        memcpy(j->out + u * j->stride, ids + i * j->keep, (size_t)cnt[i] * sizeof(int32_t));
        if (j->outd)
            memcpy(j->outd + u * j->stride, s + i * j->keep, (size_t)cnt[i] * sizeof(float));
        j->outn[u] = cnt[i];
    }
}

/* Host copies of a launch's inputs and outputs. */
struct Host {
    int32_t *own = nullptr, *len = nullptr, *item = nullptr, *ids = nullptr, *cnt = nullptr;
    int64_t *start = nullptr, *cpu_start = nullptr;
    int32_t *cpu_own = nullptr, *cpu_len = nullptr;
    float *s = nullptr;
    ~Host()
    {
        free(own);
        free(len);
        free(item);
        free(ids);
        free(cnt);
        free(start);
        free(cpu_start);
        free(cpu_own);
        free(cpu_len);
        free(s);
    }
};

loupe_status run(Call &c, const ann_prune_job *j, int smem_max, rt_cuda_prune_info *info,
                 loupe_err *err)
{
    const int keep = j->keep, dim = j->dim;
    const bool shared = j->shared != nullptr;
    const ann_key_type kt = ann_keys_type(j->keys);
    Host h;
    Args a;
    memset(&a, 0, sizeof a);
    a.ip = j->rule == ANN_PRUNE_IP;
    a.alpha = j->alpha;
    a.keep = keep;
    a.fill = j->fill < keep ? j->fill : keep;
    a.nearest = j->nearest > 0 ? j->nearest : INT_MAX;
    /* Lists [0, n_short) go to prune_shared or prune_explicit, [n_short, n_gpu) to prune_long,
     * n_cpu more to ann_prune_cpu on this thread. */
    int64_t n_gpu = 0, n_short = 0, n_cpu = 0, n_items = 0;
    size_t smem = 0, lsmem = 0;
    int lnw = 0;
    loupe_status st;
    if (kt == ANN_KEYS_INT8C)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "GPU pruning: int8c keys (a search copy) are not read on the GPU");
    PRUNE_CUDA(cudaEventRecord(c.ev[0], c.stream), "event record");
    if (shared && j->K > SHARED_K_MAX) {
        long_shape(j->K, dim, keep, smem_max, &a.pmax, &lnw);
        if (lnw == 0)
            return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "GPU pruning: shared lists of %d do "
                              "not fit the device's %d bytes of shared memory", j->K, smem_max);
        lsmem = (size_t)lnw * LongLayout(a.pmax, dim, keep).wbytes;
        int32_t rows = 0;
        for (int64_t i = 0; i < j->n_lists; i++)
            rows = j->lst[i] + 1 > rows ? j->lst[i] + 1 : rows;
        n_gpu = j->n_lists;
        int32_t *d_shared = nullptr, *d_own = nullptr, *d_lst = nullptr;
        if ((st = c.upload(&d_shared, j->shared, (size_t)rows * j->K, err)) ||
            (st = c.upload(&d_own, j->own, (size_t)n_gpu, err)) ||
            (st = c.upload(&d_lst, j->lst, (size_t)n_gpu, err)))
            return st;
        a.shared = d_shared;
        a.own = d_own;
        a.lst = d_lst;
        a.K = j->K;
    } else if (shared) {
        /* Runs of at most RUN lists over one shared list, a block each. */
        h.item = static_cast<int32_t *>(malloc(((size_t)j->n_lists + 1) * sizeof(int32_t)));
        if (!h.item)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "GPU pruning: no host memory");
        int32_t rows = 0;
        for (int64_t i = 0; i < j->n_lists; i++) {
            if (i == 0 || j->lst[i] != j->lst[i - 1] || i - h.item[n_items - 1] == RUN)
                h.item[n_items++] = (int32_t)i;
            rows = j->lst[i] + 1 > rows ? j->lst[i] + 1 : rows;
        }
        h.item[n_items] = (int32_t)j->n_lists;
        n_gpu = n_short = j->n_lists;
        smem = SharedLayout(j->K, dim, keep).total;
        if (smem > (size_t)smem_max)
            return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "GPU pruning: lists of %d need %zu "
                              "bytes of shared memory, the device has %d", j->K, smem, smem_max);
        int32_t *d_item = nullptr, *d_shared = nullptr, *d_own = nullptr, *d_lst = nullptr;
        if ((st = c.upload(&d_item, h.item, (size_t)n_items + 1, err)) ||
            (st = c.upload(&d_shared, j->shared, (size_t)rows * j->K, err)) ||
            (st = c.upload(&d_own, j->own, (size_t)n_gpu, err)) ||
            (st = c.upload(&d_lst, j->lst, (size_t)n_gpu, err)))
            return st;
        a.item = d_item;
        a.shared = d_shared;
        a.own = d_own;
        a.lst = d_lst;
        a.K = j->K;
    } else {
        /* Short lists first, then long ones (while the long kernel fits), the rest on the CPU. */
        const size_t nl = (size_t)j->n_lists;
        h.own = static_cast<int32_t *>(malloc(nl * sizeof(int32_t)));
        h.len = static_cast<int32_t *>(malloc(nl * sizeof(int32_t)));
        h.start = static_cast<int64_t *>(malloc(nl * sizeof(int64_t)));
        h.cpu_own = static_cast<int32_t *>(malloc(nl * sizeof(int32_t)));
        h.cpu_len = static_cast<int32_t *>(malloc(nl * sizeof(int32_t)));
        h.cpu_start = static_cast<int64_t *>(malloc(nl * sizeof(int64_t)));
        if (!h.own || !h.len || !h.start || !h.cpu_own || !h.cpu_len || !h.cpu_start)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "GPU pruning: no host memory");
        int emax = 1, lmax = 0;
        for (int64_t i = 0; i < j->n_lists; i++) {
            const int m = j->len[i];
            if (m <= EXPL_MAX)
                emax = m > emax ? m : emax;
            else if (m <= LONGEST)
                lmax = m > lmax ? m : lmax;
        }
        if (lmax > 0) {
            long_shape(lmax, dim, keep, smem_max, &a.pmax, &lnw);
            lsmem = (size_t)lnw * LongLayout(a.pmax, dim, keep).wbytes;
        }
        for (int pass = 0; pass < 3; pass++) /* short, long, CPU */
            for (int64_t i = 0; i < j->n_lists; i++) {
                const int m = j->len[i];
                const int kind = m <= EXPL_MAX ? 0 : m <= LONGEST && lnw > 0 ? 1 : 2;
                if (kind != pass)
                    continue;
                int32_t *o = kind < 2 ? h.own : h.cpu_own, *l = kind < 2 ? h.len : h.cpu_len;
                int64_t *s0 = kind < 2 ? h.start : h.cpu_start, &at = kind < 2 ? n_gpu : n_cpu;
                o[at] = j->own[i];
                l[at] = m;
                s0[at++] = j->start[i];
                if (kind == 0)
                    n_short++;
            }
        int64_t end = 0;
        for (int64_t i = 0; i < n_gpu; i++)
            end = h.start[i] + h.len[i] > end ? h.start[i] + h.len[i] : end;
        smem = NW * ExplicitLayout(emax, dim, keep).wbytes;
        if (n_short > 0 && smem > (size_t)smem_max)
            return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "GPU pruning: lists of %d need %zu "
                              "bytes of shared memory, the device has %d", emax, smem, smem_max);
        int32_t *d_own = nullptr, *d_len = nullptr, *d_cid = nullptr;
        int64_t *d_start = nullptr;
        float *d_cdist = nullptr;
        if (n_gpu > 0 &&
            ((st = c.upload(&d_own, h.own, (size_t)n_gpu, err)) ||
             (st = c.upload(&d_len, h.len, (size_t)n_gpu, err)) ||
             (st = c.upload(&d_start, h.start, (size_t)n_gpu, err)) ||
             (st = c.upload(&d_cid, j->cid, (size_t)end, err)) ||
             (j->cdist && (st = c.upload(&d_cdist, j->cdist, (size_t)end, err)))))
            return st;
        a.own = d_own;
        a.len = d_len;
        a.start = d_start;
        a.cid = d_cid;
        a.cdist = d_cdist;
        a.emax = emax;
    }
    int32_t *d_ids = nullptr, *d_cnt = nullptr;
    float *d_s = nullptr;
    if (n_gpu > 0) {
        if ((st = upload_keys(c, j->keys, &a.keys, err)) ||
            (st = c.alloc(&d_ids, (size_t)n_gpu * keep, err)) ||
            (st = c.alloc(&d_s, (size_t)n_gpu * keep, err)) ||
            (st = c.alloc(&d_cnt, (size_t)n_gpu, err)))
            return st;
        a.out_id = d_ids;
        a.out_s = d_s;
        a.out_n = d_cnt;
        PRUNE_CUDA(cudaEventRecord(c.ev[1], c.stream), "event record");
        if (n_short > 0) {
            a.i0 = 0;
            a.n_lists = (int)n_short;
            const unsigned blocks = shared ? (unsigned)n_items : (unsigned)((n_short + NW - 1) / NW);
            PRUNE_CUDA(launch_any(kt, shared ? K_SHARED : K_EXPLICIT, blocks, NW * 32, smem, a,
                                  c.stream),
                       "pruning kernel");
        }
        if (n_gpu > n_short) {
            a.i0 = (int)n_short;
            a.n_lists = (int)n_gpu;
            a.nw = lnw;
            const unsigned blocks = (unsigned)((n_gpu - n_short + lnw - 1) / lnw);
            PRUNE_CUDA(launch_any(kt, K_LONG, blocks, (unsigned)lnw * 32, lsmem, a, c.stream),
                       "long-list pruning kernel");
        }
        PRUNE_CUDA(cudaEventRecord(c.ev[2], c.stream), "event record");
    }
    if (info) {
        info->n_gpu = n_gpu;
        info->n_long = n_gpu - n_short;
        info->n_cpu = n_cpu;
    }
    if (n_cpu > 0) { /* the longest lists on this thread while the GPU works */
        ann_prune_job sub = *j;
        sub.n_lists = n_cpu;
        sub.own = h.cpu_own;
        sub.len = h.cpu_len;
        sub.start = h.cpu_start;
        if ((st = ann_prune_cpu(nullptr, &sub, err)))
            return st;
    }
    if (n_gpu == 0)
        return LOUPE_OK;
    h.ids = static_cast<int32_t *>(malloc((size_t)n_gpu * keep * sizeof(int32_t)));
    h.s = static_cast<float *>(malloc((size_t)n_gpu * keep * sizeof(float)));
    h.cnt = static_cast<int32_t *>(malloc((size_t)n_gpu * sizeof(int32_t)));
    if (!h.ids || !h.s || !h.cnt)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "GPU pruning: no host memory");
    if ((st = c.download(h.ids, d_ids, (size_t)n_gpu * keep, "download", err)) ||
        (st = c.download(h.s, d_s, (size_t)n_gpu * keep, "download", err)) ||
        (st = c.download(h.cnt, d_cnt, (size_t)n_gpu, "download", err)))
        return st;
    PRUNE_CUDA(cudaEventRecord(c.ev[3], c.stream), "event record");
    if ((st = c.sync("pruning", err)))
        return st;
    if (info) {
        float ms[3] = {0, 0, 0};
        for (int e = 0; e < 3; e++)
            PRUNE_CUDA(cudaEventElapsedTime(&ms[e], c.ev[e], c.ev[e + 1]), "event timing");
        info->upload_s = 1e-3 * ms[0];
        info->kernel_s = 1e-3 * ms[1];
        info->download_s = 1e-3 * ms[2];
    }
    scatter(j, n_gpu, shared ? j->own : h.own, h.ids, h.s, h.cnt);
    return LOUPE_OK;
}

} // namespace

extern "C" loupe_status rt_cuda_prune_run(int device, const ann_prune_job *j,
                                          rt_cuda_prune_info *info, loupe_err *err)
{
    if (info)
        memset(info, 0, sizeof *info);
    if (j->n_lists <= 0)
        return LOUPE_OK;
    const double t0 = rtc::wall_s();
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "GPU pruning: no CUDA device is available");
    }
    if (device < 0 || device >= n_dev)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "GPU pruning: CUDA device %d does not exist (%d found)", device, n_dev);
    PRUNE_CUDA(cudaSetDevice(device), "cudaSetDevice");
    int smem_max = 0, pools = 0;
    PRUNE_CUDA(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
               "device query");
    PRUNE_CUDA(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device),
               "device query");
    if (!pools || j->dim <= 0 || j->dim > DIM_MAX || j->keep <= 0 || j->keep > KEEP_MAX ||
        (j->shared && (j->K <= 0 || j->K > LONGEST)))
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "GPU pruning: no GPU path for dimension %d, %d kept, lists of %d",
                          j->dim, j->keep, j->shared ? j->K : 0);
    Call c("GPU pruning");
    PRUNE_CUDA(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking), "stream creation");
    loupe_status st = LOUPE_OK;
    for (cudaEvent_t &e : c.ev)
        if (st == LOUPE_OK && cudaEventCreate(&e) != cudaSuccess)
            st = rtc::cuda_fail(err, cudaGetLastError(), "GPU pruning", "event creation");
    if (st == LOUPE_OK)
        st = run(c, j, smem_max, info, err);
    c.release();
    if (info)
        info->wall_s = rtc::wall_s() - t0;
    return st;
}

extern "C" loupe_status rt_cuda_prune(void *user, const ann_prune_job *j, loupe_err *err)
{
    return rt_cuda_prune_run(user ? *static_cast<const int *>(user) : 0, j, nullptr, err);
}
