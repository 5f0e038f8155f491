/*
 * Attention partials on the CPU: softmax attention of one query over a subset of keys, returning
 * the output and the log-sum-exp of the scores, and the exact merge of two such partials.
 *
 * A partial is computed with an online softmax over blocks of RT_ATTN_BLOCK keys: the block's
 * scores go to a stack array, the running maximum is raised once per block (rescaling the
 * accumulator), then the block's values are added. No heap memory, one pass over K and V, and the
 * result equals the two-pass softmax up to float rounding.
 *
 * Two implementations, chosen at run time (simd_cpu.h): the portable one, and an AVX2 + FMA one
 * that scores four keys at a time, takes the block's exponentials eight at a time (a polynomial
 * exp, within 2 ulp of expf) and adds the values to the output in slices of 64 floats held in
 * registers. Each is deterministic: a query's result depends only on its keys, never on threads.
 *
 * Tiled prefill attention (rt_attn_tile): up to RT_ATTN_TILE_MAX queries over prefixes of the
 * same keys (the query heads of one KV head × a few consecutive tokens, each with its causal
 * length) walk the blocks together, so each block of K/V rows is loaded once per tile instead of
 * once per query. Invariant: per query it performs exactly the single-query kernel's operations
 * in the same order (same block boundaries from key 0, same per-pair score accumulators, same
 * per-element value sums), so its results are bit-identical to rt_attn_partial; decode and
 * prefill therefore agree whichever of the two they use.
 */
#include "runtime/model_impl.h"

#include <math.h>
#include <string.h>

#include "runtime/simd_cpu.h"

#ifdef RT_HAVE_X86_SIMD
#include <immintrin.h>
#endif

enum { RT_ATTN_BLOCK = 64 };

/* ==== Portable path ======================================================================== */

/* One block of keys j0 .. j0+nb of the online softmax: state (out, *m, *sum) of one query.
 * Shared by the single-query and the tiled kernel so both do the same arithmetic. */
static inline void portable_block(const float *q, const float *k, const float *v,
                                  uint32_t head_dim, const int32_t *idx, size_t j0, size_t nb,
                                  float scale, float *out, float *m_io, float *sum_io)
{
    float s[RT_ATTN_BLOCK];
    float m = *m_io, sum = *sum_io;
    float bm = -INFINITY;
    for (size_t j = 0; j < nb; j++) {
        size_t row = idx ? (size_t)idx[j0 + j] : j0 + j;
        s[j] = scale * rt_dot_f32(q, k + row * head_dim, head_dim);
        if (s[j] > bm)
            bm = s[j];
    }
    if (bm > m) {
        float r = expf(m - bm); /* 0 on the first block (m = -inf) */
        sum *= r;
        for (uint32_t d = 0; d < head_dim; d++)
            out[d] *= r;
        m = bm;
    }
    for (size_t j = 0; j < nb; j++) {
        size_t row = idx ? (size_t)idx[j0 + j] : j0 + j;
        float p = expf(s[j] - m);
        const float *vr = v + row * head_dim;
        sum += p;
        for (uint32_t d = 0; d < head_dim; d++)
            out[d] += p * vr[d];
    }
    *m_io = m;
    *sum_io = sum;
}

static void portable_finish(uint32_t head_dim, size_t n, float m, float sum, float *out,
                            float *lse)
{
    if (n == 0 || !(sum > 0)) {
        *lse = -INFINITY;
        return;
    }
    float inv = 1.0f / sum;
    for (uint32_t d = 0; d < head_dim; d++)
        out[d] *= inv;
    *lse = m + logf(sum);
}

static void attn_partial_portable(const float *q, const float *k, const float *v,
                                  uint32_t head_dim, const int32_t *idx, size_t n, float scale,
                                  float *out, float *lse)
{
    memset(out, 0, head_dim * sizeof *out);
    float m = -INFINITY, sum = 0.0f;
    for (size_t j0 = 0; j0 < n; j0 += RT_ATTN_BLOCK) {
        size_t nb = n - j0 < RT_ATTN_BLOCK ? n - j0 : RT_ATTN_BLOCK;
        portable_block(q, k, v, head_dim, idx, j0, nb, scale, out, &m, &sum);
    }
    portable_finish(head_dim, n, m, sum, out, lse);
}

/* The tile block by block, every query of it in turn: the block's K and V rows stay in cache
 * while the tile's queries read them. */
static void attn_tile_portable(const float *const *q, const float *k, const float *v,
                               uint32_t head_dim, const size_t *n, size_t nq, float scale,
                               float *const *out, float *lse)
{
    float m[RT_ATTN_TILE_MAX], sum[RT_ATTN_TILE_MAX];
    size_t nmax = 0;
    for (size_t i = 0; i < nq; i++) {
        memset(out[i], 0, head_dim * sizeof *out[i]);
        m[i] = -INFINITY;
        sum[i] = 0.0f;
        if (n[i] > nmax)
            nmax = n[i];
    }
    for (size_t j0 = 0; j0 < nmax; j0 += RT_ATTN_BLOCK)
        for (size_t i = 0; i < nq; i++) {
            if (n[i] <= j0)
                continue;
            size_t nb = n[i] - j0 < RT_ATTN_BLOCK ? n[i] - j0 : RT_ATTN_BLOCK;
            portable_block(q[i], k, v, head_dim, NULL, j0, nb, scale, out[i], &m[i], &sum[i]);
        }
    for (size_t i = 0; i < nq; i++)
        portable_finish(head_dim, n[i], m[i], sum[i], out[i], &lse[i]);
}

/* ==== AVX2 + FMA path ====================================================================== */

#ifdef RT_HAVE_X86_SIMD

#define RT_INLINE RT_SIMD_AVX2 static inline __attribute__((always_inline))

/* e^x, eight at a time: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n ln2),
 * e^r by the Cephes minimax polynomial, times 2^n built in the exponent bits. x below -87.33 (the
 * result would be subnormal) gives 0, so padding lanes of -inf contribute nothing. */
RT_INLINE __m256 exp8(__m256 x)
{
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                                  23);
    return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

RT_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* q · k_j for R keys (R = 4 or 1 after inlining), one accumulator each, so a key's score is the
 * same whichever group it falls in. */
RT_INLINE void scores(const float *q, const float *const *kr, int R, uint32_t hd, float scale,
                      float *s)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    uint32_t d = 0;
    for (; d + 8 <= hd; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        for (int r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(kr[r] + d), qv, acc[r]);
    }
    for (int r = 0; r < R; r++) {
        float x = hsum8(acc[r]);
        for (uint32_t i = d; i < hd; i++)
            x = fmaf(q[i], kr[r][i], x);
        s[r] = scale * x;
    }
}

/* out[d0 .. d0 + 8V) += Σ_j p[j] · v_j[d0 ..]: V vectors (8 or 1) of the output in registers
 * while the block's keys stream past. */
RT_INLINE void add_values(float *out, uint32_t d0, int V, const float *const *vr, const float *p,
                          size_t nb)
{
    __m256 acc[8];
    for (int i = 0; i < V; i++)
        acc[i] = _mm256_loadu_ps(out + d0 + 8 * i);
    for (size_t j = 0; j < nb; j++) {
        __m256 pj = _mm256_broadcast_ss(&p[j]);
        const float *row = vr[j] + d0;
        for (int i = 0; i < V; i++)
            acc[i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(row + 8 * i), acc[i]);
    }
    for (int i = 0; i < V; i++)
        _mm256_storeu_ps(out + d0 + 8 * i, acc[i]);
}

RT_SIMD_AVX2 static void attn_partial_avx2(const float *q, const float *k, const float *v,
                                           uint32_t hd, const int32_t *idx, size_t n,
                                           float scale, float *out, float *lse)
{
    memset(out, 0, hd * sizeof *out);
    float m = -INFINITY;
    __m256 vsum = _mm256_setzero_ps();
    float s[RT_ATTN_BLOCK] __attribute__((aligned(32)));
    const float *kr[RT_ATTN_BLOCK], *vr[RT_ATTN_BLOCK];
    for (size_t j0 = 0; j0 < n; j0 += RT_ATTN_BLOCK) {
        size_t nb = n - j0 < RT_ATTN_BLOCK ? n - j0 : RT_ATTN_BLOCK;
        for (size_t j = 0; j < nb; j++) {
            size_t row = idx ? (size_t)idx[j0 + j] : j0 + j;
            kr[j] = k + row * hd;
            vr[j] = v + row * hd;
        }
        size_t j = 0;
        for (; j + 4 <= nb; j += 4)
            scores(q, kr + j, 4, hd, scale, s + j);
        for (; j < nb; j++)
            scores(q, kr + j, 1, hd, scale, s + j);
        size_t nv = (nb + 7) / 8; /* vectors of scores; the padding is -inf */
        for (; j < 8 * nv; j++)
            s[j] = -INFINITY;
        __m256 bmv = _mm256_load_ps(s);
        for (size_t i = 1; i < nv; i++)
            bmv = _mm256_max_ps(bmv, _mm256_load_ps(s + 8 * i));
        __m128 b4 = _mm_max_ps(_mm256_castps256_ps128(bmv), _mm256_extractf128_ps(bmv, 1));
        b4 = _mm_max_ps(b4, _mm_movehl_ps(b4, b4));
        float bm = _mm_cvtss_f32(_mm_max_ss(b4, _mm_shuffle_ps(b4, b4, 1)));
        if (bm > m) {
            float r = expf(m - bm); /* 0 on the first block (m = -inf) */
            __m256 rv = _mm256_set1_ps(r);
            vsum = _mm256_mul_ps(vsum, rv);
            uint32_t d = 0;
            for (; d + 8 <= hd; d += 8)
                _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_loadu_ps(out + d), rv));
            for (; d < hd; d++)
                out[d] *= r;
            m = bm;
        }
        __m256 mv = _mm256_set1_ps(m);
        for (size_t i = 0; i < nv; i++) {
            __m256 p = exp8(_mm256_sub_ps(_mm256_load_ps(s + 8 * i), mv));
            _mm256_store_ps(s + 8 * i, p); /* s now holds the probabilities */
            vsum = _mm256_add_ps(vsum, p);
        }
        uint32_t d = 0;
        for (; d + 64 <= hd; d += 64)
            add_values(out, d, 8, vr, s, nb);
        for (; d + 8 <= hd; d += 8)
            add_values(out, d, 1, vr, s, nb);
        for (; d < hd; d++)
            for (size_t jj = 0; jj < nb; jj++)
                out[d] = fmaf(s[jj], vr[jj][d], out[d]);
    }
    float sum = hsum8(vsum);
    if (n == 0 || !(sum > 0)) {
        *lse = -INFINITY;
        return;
    }
    float inv = 1.0f / sum;
    for (uint32_t d = 0; d < hd; d++)
        out[d] *= inv;
    *lse = m + logf(sum);
}

/* ---- Tiled: several queries against the same keys ------------------------------------------ */

/* scores() for Q queries (3 or 1) × R keys (4 or 1) at once: each key row and each query slice
 * is loaded once for all pairs, and each pair keeps its own accumulator in scores()' order, so
 * s[a][j + r] is bit-identical to what scores() gives. 12 accumulators + 3 queries + 1 key = 16
 * registers. */
RT_INLINE void scores_tile(const float *const *qp, int Q, const float *const *kr, int R,
                           uint32_t hd, float scale, float *const *s, size_t j)
{
    __m256 acc[3][4];
    for (int a = 0; a < Q; a++)
        for (int r = 0; r < R; r++)
            acc[a][r] = _mm256_setzero_ps();
    uint32_t d = 0;
    for (; d + 8 <= hd; d += 8) {
        __m256 qv[3];
        for (int a = 0; a < Q; a++)
            qv[a] = _mm256_loadu_ps(qp[a] + d);
        for (int r = 0; r < R; r++) {
            __m256 kv = _mm256_loadu_ps(kr[r] + d);
            for (int a = 0; a < Q; a++)
                acc[a][r] = _mm256_fmadd_ps(kv, qv[a], acc[a][r]);
        }
    }
    for (int a = 0; a < Q; a++)
        for (int r = 0; r < R; r++) {
            float x = hsum8(acc[a][r]);
            for (uint32_t i = d; i < hd; i++)
                x = fmaf(qp[a][i], kr[r][i], x);
            s[a][j + r] = scale * x;
        }
}

/* add_values() for Q queries (3 or 1) over keys 0 .. nb, V vectors (4 or 1) of each output:
 * a value slice is loaded once for all Q queries; each output element adds its terms in key
 * order with one FMA each, as add_values() does. */
RT_INLINE void add_values_tile(float *const *out, int Q, uint32_t d0, int V,
                               const float *const *vr, const float *const *p, size_t nb)
{
    __m256 acc[3][4];
    for (int a = 0; a < Q; a++)
        for (int i = 0; i < V; i++)
            acc[a][i] = _mm256_loadu_ps(out[a] + d0 + 8 * i);
    for (size_t j = 0; j < nb; j++) {
        __m256 pj[3];
        for (int a = 0; a < Q; a++)
            pj[a] = _mm256_broadcast_ss(&p[a][j]);
        const float *row = vr[j] + d0;
        for (int i = 0; i < V; i++) {
            __m256 x = _mm256_loadu_ps(row + 8 * i);
            for (int a = 0; a < Q; a++)
                acc[a][i] = _mm256_fmadd_ps(pj[a], x, acc[a][i]);
        }
    }
    for (int a = 0; a < Q; a++)
        for (int i = 0; i < V; i++)
            _mm256_storeu_ps(out[a] + d0 + 8 * i, acc[a][i]);
}

/* The middle of attn_partial_avx2's block loop for one query whose scores s[0 .. nb) are in
 * place: pad to whole vectors with -inf, raise the running max (rescaling out and vsum), and
 * turn the scores into probabilities. Same operations in the same order. */
RT_INLINE void softmax_block(float *s, size_t nb, uint32_t hd, float *m_io, __m256 *vsum,
                             float *out)
{
    size_t nv = (nb + 7) / 8;
    for (size_t j = nb; j < 8 * nv; j++)
        s[j] = -INFINITY;
    __m256 bmv = _mm256_load_ps(s);
    for (size_t i = 1; i < nv; i++)
        bmv = _mm256_max_ps(bmv, _mm256_load_ps(s + 8 * i));
    __m128 b4 = _mm_max_ps(_mm256_castps256_ps128(bmv), _mm256_extractf128_ps(bmv, 1));
    b4 = _mm_max_ps(b4, _mm_movehl_ps(b4, b4));
    float bm = _mm_cvtss_f32(_mm_max_ss(b4, _mm_shuffle_ps(b4, b4, 1)));
    float m = *m_io;
    if (bm > m) {
        float r = expf(m - bm); /* 0 on the first block (m = -inf) */
        __m256 rv = _mm256_set1_ps(r);
        *vsum = _mm256_mul_ps(*vsum, rv);
        uint32_t d = 0;
        for (; d + 8 <= hd; d += 8)
            _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_loadu_ps(out + d), rv));
        for (; d < hd; d++)
            out[d] *= r;
        m = bm;
    }
    __m256 mv = _mm256_set1_ps(m);
    for (size_t i = 0; i < nv; i++) {
        __m256 p = exp8(_mm256_sub_ps(_mm256_load_ps(s + 8 * i), mv));
        _mm256_store_ps(s + 8 * i, p);
        *vsum = _mm256_add_ps(*vsum, p);
    }
    *m_io = m;
}

/* Per block of keys: scores of every active query (3 queries × 4 keys per register tile), the
 * softmax update per query, then the values added for all active queries over the keys they
 * all see (3 queries × 32 dims per register tile), and the keys only some of them see (the
 * causal edge) query by query. Each query's arithmetic is attn_partial_avx2's, term for term. */
RT_SIMD_AVX2 static void attn_tile_avx2(const float *const *q, const float *k, const float *v,
                                        uint32_t hd, const size_t *n, size_t nq, float scale,
                                        float *const *out, float *lse)
{
    float s[RT_ATTN_TILE_MAX][RT_ATTN_BLOCK] __attribute__((aligned(32)));
    float m[RT_ATTN_TILE_MAX];
    __m256 vsum[RT_ATTN_TILE_MAX];
    const float *kr[RT_ATTN_BLOCK], *vr[RT_ATTN_BLOCK];
    /* the active queries of a block: their query, output and score rows */
    const float *aq[RT_ATTN_TILE_MAX];
    float *ao[RT_ATTN_TILE_MAX], *as[RT_ATTN_TILE_MAX];
    size_t anb[RT_ATTN_TILE_MAX];
    size_t nmax = 0;
    for (size_t i = 0; i < nq; i++) {
        memset(out[i], 0, hd * sizeof *out[i]);
        m[i] = -INFINITY;
        vsum[i] = _mm256_setzero_ps();
        if (n[i] > nmax)
            nmax = n[i];
    }
    for (size_t j0 = 0; j0 < nmax; j0 += RT_ATTN_BLOCK) {
        size_t bmax = nmax - j0 < RT_ATTN_BLOCK ? nmax - j0 : RT_ATTN_BLOCK;
        for (size_t j = 0; j < bmax; j++) {
            kr[j] = k + (j0 + j) * hd;
            vr[j] = v + (j0 + j) * hd;
        }
        size_t na = 0, nbmin = RT_ATTN_BLOCK;
        for (size_t i = 0; i < nq; i++) {
            if (n[i] <= j0)
                continue;
            aq[na] = q[i];
            ao[na] = out[i];
            as[na] = s[i];
            anb[na] = n[i] - j0 < RT_ATTN_BLOCK ? n[i] - j0 : RT_ATTN_BLOCK;
            if (anb[na] < nbmin)
                nbmin = anb[na];
            na++;
        }
        /* Scores for all bmax keys (rows < nmax exist); a query's keys past its own limit are
         * overwritten with -inf padding or never read. */
        size_t a = 0;
        for (; a + 3 <= na; a += 3) {
            size_t j = 0;
            for (; j + 4 <= bmax; j += 4)
                scores_tile(aq + a, 3, kr + j, 4, hd, scale, as + a, j);
            for (; j < bmax; j++)
                scores_tile(aq + a, 3, kr + j, 1, hd, scale, as + a, j);
        }
        for (; a < na; a++) {
            size_t j = 0;
            for (; j + 4 <= bmax; j += 4)
                scores_tile(aq + a, 1, kr + j, 4, hd, scale, as + a, j);
            for (; j < bmax; j++)
                scores_tile(aq + a, 1, kr + j, 1, hd, scale, as + a, j);
        }
        for (size_t i = 0, b = 0; i < nq; i++)
            if (n[i] > j0) {
                softmax_block(s[i], anb[b], hd, &m[i], &vsum[i], out[i]);
                b++;
            }
        /* Keys 0 .. nbmin: every active query sees them. */
        uint32_t d = 0;
        for (; d + 32 <= hd; d += 32) {
            for (a = 0; a + 3 <= na; a += 3)
                add_values_tile(ao + a, 3, d, 4, vr, (const float *const *)(as + a), nbmin);
            for (; a < na; a++)
                add_values_tile(ao + a, 1, d, 4, vr, (const float *const *)(as + a), nbmin);
        }
        for (; d + 8 <= hd; d += 8)
            for (a = 0; a < na; a++)
                add_values_tile(ao + a, 1, d, 1, vr, (const float *const *)(as + a), nbmin);
        for (; d < hd; d++)
            for (a = 0; a < na; a++)
                for (size_t jj = 0; jj < nbmin; jj++)
                    ao[a][d] = fmaf(as[a][jj], vr[jj][d], ao[a][d]);
        /* Keys nbmin .. nb of the queries that see more: continue each element's sum. */
        for (a = 0; a < na; a++) {
            if (anb[a] == nbmin)
                continue;
            size_t extra = anb[a] - nbmin;
            const float *pe = as[a] + nbmin;
            for (d = 0; d + 64 <= hd; d += 64)
                add_values(ao[a], d, 8, vr + nbmin, pe, extra);
            for (; d + 8 <= hd; d += 8)
                add_values(ao[a], d, 1, vr + nbmin, pe, extra);
            for (; d < hd; d++)
                for (size_t jj = 0; jj < extra; jj++)
                    ao[a][d] = fmaf(pe[jj], vr[nbmin + jj][d], ao[a][d]);
        }
    }
    for (size_t i = 0; i < nq; i++) {
        float sum = hsum8(vsum[i]);
        if (n[i] == 0 || !(sum > 0)) {
            lse[i] = -INFINITY;
            continue;
        }
        float inv = 1.0f / sum;
        for (uint32_t d = 0; d < hd; d++)
            out[i][d] *= inv;
        lse[i] = m[i] + logf(sum);
    }
}

#endif /* RT_HAVE_X86_SIMD */

/* ==== Entry points ========================================================================= */

void rt_attn_partial(const float *q, const float *k, const float *v, uint32_t head_dim,
                     const int32_t *idx, size_t n, float scale, float *out, float *lse)
{
#ifdef RT_HAVE_X86_SIMD
    if (rt_cpu_simd()) {
        attn_partial_avx2(q, k, v, head_dim, idx, n, scale, out, lse);
        return;
    }
#endif
    attn_partial_portable(q, k, v, head_dim, idx, n, scale, out, lse);
}

void rt_attn_tile(const float *const *q, const float *k, const float *v, uint32_t head_dim,
                  const size_t *n, size_t nq, float scale, float *const *out, float *lse)
{
#ifdef RT_HAVE_X86_SIMD
    if (rt_cpu_simd()) {
        attn_tile_avx2(q, k, v, head_dim, n, nq, scale, out, lse);
        return;
    }
#endif
    attn_tile_portable(q, k, v, head_dim, n, nq, scale, out, lse);
}

void rt_attn_merge(const float *o1, float l1, const float *o2, float l2, uint32_t head_dim,
                   float *out, float *lse)
{
    if (l1 == -INFINITY && l2 == -INFINITY) {
        for (uint32_t d = 0; d < head_dim; d++)
            out[d] = 0.0f;
        *lse = -INFINITY;
        return;
    }
    float m = l1 > l2 ? l1 : l2;
    float w1 = expf(l1 - m), w2 = expf(l2 - m); /* the larger is exactly 1 */
    float inv = 1.0f / (w1 + w2);
    float a = w1 * inv, b = w2 * inv;
    for (uint32_t d = 0; d < head_dim; d++)
        out[d] = a * o1[d] + b * o2[d];
    *lse = m + logf(w1 + w2);
}
