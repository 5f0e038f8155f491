/*
 * CPU matrix-vector and matrix-matrix products over weights in their stored type.
 *
 * Two implementations of the same contract (model_impl.h), chosen at run time (simd_cpu.h):
 *
 *   portable  plain C, the fallback on CPUs without AVX2/FMA and on other architectures;
 *   AVX2+FMA  decode (one token): fused dequantise-and-dot kernels that turn each 32-element unit
 *             of the stored row into four float vectors in registers and multiply-add them with
 *             the activation, one row at a time (one sequential stream for the prefetchers);
 *             prefill (a chunk of tokens): each block of RT_MM_ROWS rows is dequantised once into
 *             the thread's buffer (rt_mm_pool) with the same block decoders, F32 rows are read in
 *             place, and a register-blocked micro-kernel (4 rows x 3 tokens, 12 vector
 *             accumulators) multiplies them with every token of the chunk.
 *
 * Invariant (the forward test relies on it): within one implementation, every output element is
 * computed in one fixed order whatever the number of tokens or threads, so decode equals chunked
 * prefill bit for bit. In the AVX2 path that order is: four 8-lane accumulators, chunk c (elements
 * 8c..8c+7) added to acc[c % 4] by fma in increasing c; then (acc0 + acc1) + (acc2 + acc3), a
 * fixed horizontal-sum tree (hsum8), and the tail (n % 8 elements, F32/F16/BF16 rows only) added
 * one by one with fmaf. A weight has the same float value on both paths because both use the same
 * block decoders. Threads split the row blocks statically: each element is computed by one thread,
 * and every thread streams a contiguous slice of the matrix.
 *
 * Activations stay float32: quantising them to int8 blocks (ggml's q8_0 x q8_0 dot) would be
 * faster for Q8_0, but rounding each activation to 1/254 of its block's largest puts errors of
 * order 1e-3 into every product, far outside the backend's 1e-4 bound against the reference.
 */
#include "runtime/model_impl.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "runtime/simd_cpu.h"

#ifdef RT_HAVE_X86_SIMD
#include <immintrin.h>
#endif

/* ==== Portable path ======================================================================== */

static float dot_f32_portable(const float *a, const float *b, size_t n)
{
    /* Eight independent sums: the compiler keeps them in vector registers, and the fixed order
     * makes the result independent of thread count. */
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++)
        r += a[i] * b[i];
    return r;
}

/* Four rows against one vector at once: each x element is loaded once for four rows. */
static void dot4(const float *w0, const float *w1, const float *w2, const float *w3,
                 const float *x, size_t n, float out[4])
{
    float s0[4] = {0, 0, 0, 0}, s1[4] = {0, 0, 0, 0}, s2[4] = {0, 0, 0, 0},
          s3[4] = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) {
            float xv = x[i + j];
            s0[j] += w0[i + j] * xv;
            s1[j] += w1[i + j] * xv;
            s2[j] += w2[i + j] * xv;
            s3[j] += w3[i + j] * xv;
        }
    float r0 = (s0[0] + s0[2]) + (s0[1] + s0[3]);
    float r1 = (s1[0] + s1[2]) + (s1[1] + s1[3]);
    float r2 = (s2[0] + s2[2]) + (s2[1] + s2[3]);
    float r3 = (s3[0] + s3[2]) + (s3[1] + s3[3]);
    for (; i < n; i++) {
        r0 += w0[i] * x[i];
        r1 += w1[i] * x[i];
        r2 += w2[i] * x[i];
        r3 += w3[i] * x[i];
    }
    out[0] = r0;
    out[1] = r1;
    out[2] = r2;
    out[3] = r3;
}

/* One block of up to RT_MM_ROWS rows times every token: rows dequantised once into buf. */
static void block_portable(const rt_mat *w, size_t r0, size_t nr, const float *x, size_t ld_x,
                           size_t n_tok, float *out, size_t ld_out, float *buf)
{
    const size_t n_in = w->n_in;
    const float *rows[RT_MM_ROWS];
    for (size_t r = 0; r < nr; r++) {
        const unsigned char *src = (const unsigned char *)w->data + (r0 + r) * w->row_bytes;
        if (w->type == RT_TYPE_F32) {
            rows[r] = (const float *)(const void *)src; /* GGUF aligns tensor data */
        } else {
            rt_dequantize(w->type, src, buf + r * n_in, n_in);
            rows[r] = buf + r * n_in;
        }
    }
    for (size_t t = 0; t < n_tok; t++) {
        const float *xt = x + t * ld_x;
        float *ot = out + t * ld_out + r0;
        size_t r = 0;
        for (; r + 4 <= nr; r += 4)
            dot4(rows[r], rows[r + 1], rows[r + 2], rows[r + 3], xt, n_in, ot + r);
        for (; r < nr; r++)
            ot[r] = dot_f32_portable(rows[r], xt, n_in);
    }
}

/* ==== AVX2 + FMA path: block decoders ====================================================== */

#ifdef RT_HAVE_X86_SIMD

#define RT_INLINE RT_SIMD_AVX2 static inline __attribute__((always_inline))

static uint16_t rd_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* The fixed horizontal-sum tree of the AVX2 path: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)). */
RT_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

RT_INLINE __m256 i8x8_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

/* Q8_0 block b (32 elements): w = d * q, as rt_dequantize computes it. Each group of 8 bytes is
 * sign-extended straight from memory (one instruction with its load, no shuffles). */
RT_INLINE void q8_0_unit(const unsigned char *row, size_t b, __m256 w[4])
{
    const unsigned char *p = row + 34 * b;
    __m256 d = _mm256_set1_ps(_cvtsh_ss(rd_u16(p)));
    for (int j = 0; j < 4; j++)
        w[j] = _mm256_mul_ps(
            d, i8x8_ps(_mm_loadl_epi64((const __m128i *)(const void *)(p + 2 + 8 * j))));
}

/* Per-super-block constants of Q4_K: the scale and the negated offset of each sub-block of 32. */
typedef struct {
    float d[8];  /* d * sc_j */
    float nm[8]; /* -(dmin * m_j) */
} q4k_consts;

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The twelve scale bytes as words A, B, C: bytes of A hold sc0..3 in their low 6 bits and the top
 * 2 bits of sc4..7 above them; B likewise for the mins; C holds the low 4 bits of sc4..7 (low
 * nibbles) and m4..7 (high nibbles). Four words of word-wise masks give all sixteen 6-bit values
 * at once, converted and scaled eight at a time. */
RT_SIMD_AVX2 static void q4k_prepare(const unsigned char *blk, q4k_consts *k)
{
    const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, lo2 = 0x03030303u;
    uint32_t A = rd_u32(blk + 4), B = rd_u32(blk + 8), C = rd_u32(blk + 12);
    uint32_t sc03 = A & lo6, m03 = B & lo6;
    uint32_t sc47 = (C & lo4) | ((A >> 6) & lo2) << 4;
    uint32_t m47 = ((C >> 4) & lo4) | ((B >> 6) & lo2) << 4;
    __m256 d = _mm256_set1_ps(_cvtsh_ss(rd_u16(blk)));
    __m256 dmin = _mm256_set1_ps(_cvtsh_ss(rd_u16(blk + 2)));
    __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)sc47, (int)sc03)));
    __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)m47, (int)m03)));
    _mm256_storeu_ps(k->d, _mm256_mul_ps(d, sc));
    /* -(dmin * m): negation is exact, so w = fma(d, q, nm) is d * q - dmin * m rounded once */
    _mm256_storeu_ps(k->nm, _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(dmin, m)));
}

/* Q4_K sub-block u (0..7) of a super-block: bytes qs[32c..32c+32) hold sub-block 2c in their low
 * nibbles and 2c+1 in their high nibbles. w = d_u * q - m_u (one rounding, by fma). */
RT_INLINE void q4_k_unit(const unsigned char *blk, const q4k_consts *k, int u, __m256 w[4])
{
    const unsigned char *qs = blk + 16 + 32 * (u >> 1);
    __m256 d = _mm256_broadcast_ss(&k->d[u]), nm = _mm256_broadcast_ss(&k->nm[u]);
    for (int j = 0; j < 4; j++) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(qs + 8 * j)));
        v = (u & 1) ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, _mm256_set1_epi32(0x0f));
        w[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(v), nm);
    }
}

/* Q6_K: the sixteen sub-block scales d * sc_j of a super-block, as rt_dequantize rounds them. */
RT_SIMD_AVX2 static void q6k_prepare(const unsigned char *blk, float ds[16])
{
    __m256 d = _mm256_set1_ps(_cvtsh_ss(rd_u16(blk + 208)));
    __m128i sc = _mm_loadu_si128((const __m128i *)(const void *)(blk + 192));
    _mm256_storeu_ps(ds, _mm256_mul_ps(d, i8x8_ps(sc)));
    _mm256_storeu_ps(ds + 8, _mm256_mul_ps(d, i8x8_ps(_mm_srli_si128(sc, 8))));
}

/* Q6_K elements 32u..32u+32 of a super-block (u = 4 * half + quarter g): low nibbles from
 * ql[64 half + 32 (g & 1)..] (low for g < 2, high for g >= 2), top 2 bits from qh[32 half..]
 * bits 2g..2g+1; sub-blocks of 16. w = (d * sc) * (q - 32), as rt_dequantize computes it. */
RT_INLINE void q6_k_unit(const unsigned char *blk, const float ds[16], int u, __m256 w[4])
{
    int h = u >> 2, g = u & 3;
    const unsigned char *ql = blk + 64 * h + 32 * (g & 1), *qh = blk + 128 + 32 * h;
    __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)ql);
    __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)qh);
    /* 16-bit shifts by a count in a register (u need not be a constant); the masks drop the
     * bits that cross from the neighbouring byte. */
    lo = _mm256_and_si256(_mm256_srl_epi16(lo, _mm_cvtsi32_si128(4 * (g >> 1))),
                          _mm256_set1_epi8(0x0f));
    __m256i top = _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * g)),
                                   _mm256_set1_epi8(0x03));
    __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(top, 4));
    q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
    __m128i q_lo = _mm256_castsi256_si128(q), q_hi = _mm256_extracti128_si256(q, 1);
    __m256 d0 = _mm256_broadcast_ss(&ds[8 * h + 2 * g]);
    __m256 d1 = _mm256_broadcast_ss(&ds[8 * h + 2 * g + 1]);
    w[0] = _mm256_mul_ps(d0, i8x8_ps(q_lo));
    w[1] = _mm256_mul_ps(d0, i8x8_ps(_mm_srli_si128(q_lo, 8)));
    w[2] = _mm256_mul_ps(d1, i8x8_ps(q_hi));
    w[3] = _mm256_mul_ps(d1, i8x8_ps(_mm_srli_si128(q_hi, 8)));
}

RT_INLINE __m256 f16x8(const unsigned char *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

RT_INLINE __m256 bf16x8(const unsigned char *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* Element i of an F32/F16/BF16 row, for the tails that do not fill a vector. */
RT_SIMD_AVX2 static float elem_scalar(rt_type type, const unsigned char *row, size_t i)
{
    if (type == RT_TYPE_F16)
        return _cvtsh_ss(rd_u16(row + 2 * i));
    if (type == RT_TYPE_BF16)
        return rt_bf16_to_f32(rd_u16(row + 2 * i));
    float f;
    memcpy(&f, row + 4 * i, sizeof f);
    return f;
}

/* Dequantises one row into dst with the same block decoders the fused kernels use. */
RT_SIMD_AVX2 static void decode_row_avx2(rt_type type, const unsigned char *row, float *dst,
                                         size_t n)
{
    __m256 w[4];
    size_t i = 0;
    switch (type) {
    case RT_TYPE_Q8_0:
        for (size_t b = 0; b < n / 32; b++) {
            q8_0_unit(row, b, w);
            for (int c = 0; c < 4; c++)
                _mm256_storeu_ps(dst + 32 * b + 8 * c, w[c]);
        }
        return;
    case RT_TYPE_Q4_K:
        for (size_t b = 0; b < n / 256; b++) {
            const unsigned char *blk = row + 144 * b;
            q4k_consts k;
            q4k_prepare(blk, &k);
            for (int u = 0; u < 8; u++) {
                q4_k_unit(blk, &k, u, w);
                for (int c = 0; c < 4; c++)
                    _mm256_storeu_ps(dst + 256 * b + 32 * u + 8 * c, w[c]);
            }
        }
        return;
    case RT_TYPE_Q6_K:
        for (size_t b = 0; b < n / 256; b++) {
            const unsigned char *blk = row + 210 * b;
            float ds[16];
            q6k_prepare(blk, ds);
            for (int u = 0; u < 8; u++) {
                q6_k_unit(blk, ds, u, w);
                for (int c = 0; c < 4; c++)
                    _mm256_storeu_ps(dst + 256 * b + 32 * u + 8 * c, w[c]);
            }
        }
        return;
    case RT_TYPE_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, f16x8(row + 2 * i));
        break;
    case RT_TYPE_BF16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, bf16x8(row + 2 * i));
        break;
    default:
        rt_dequantize(type, row, dst, n);
        return;
    }
    for (; i < n; i++)
        dst[i] = elem_scalar(type, row, i);
}

/* ==== AVX2 + FMA path: decode (one token), fused dequantise-and-dot ======================= */

/* The canonical end of every dot product of the AVX2 path: the four accumulators (chunk c of 8
 * elements went to acc[c % 4]) summed in a fixed tree. */
RT_INLINE float reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    return hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

/* One row at a time: decode is bound by reading the matrix, and on the machines measured the
 * hardware prefetchers follow one sequential stream at full speed but not four rows read side by
 * side (5-8 GB/s instead of 13-18 on a 1 KiB-row F16 matrix). Four accumulators per row keep
 * four FMA chains in flight. */
RT_INLINE float gemv_q8_0(const unsigned char *row, const float *x, size_t n)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (size_t b = 0; b < n / 32; b++) {
        __m256 w[4];
        q8_0_unit(row, b, w);
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + 32 * b + 8 * j), acc[j]);
    }
    return reduce4(acc[0], acc[1], acc[2], acc[3]);
}

RT_INLINE float gemv_q4_k(const unsigned char *row, const float *x, size_t n)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (size_t b = 0; b < n / 256; b++) {
        const unsigned char *blk = row + 144 * b;
        q4k_consts k;
        q4k_prepare(blk, &k);
        for (int u = 0; u < 8; u++) {
            __m256 w[4];
            q4_k_unit(blk, &k, u, w);
            for (int j = 0; j < 4; j++)
                acc[j] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + 256 * b + 32 * u + 8 * j),
                                         acc[j]);
        }
    }
    return reduce4(acc[0], acc[1], acc[2], acc[3]);
}

RT_INLINE float gemv_q6_k(const unsigned char *row, const float *x, size_t n)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (size_t b = 0; b < n / 256; b++) {
        const unsigned char *blk = row + 210 * b;
        float ds[16];
        q6k_prepare(blk, ds);
        for (int u = 0; u < 8; u++) {
            __m256 w[4];
            q6_k_unit(blk, ds, u, w);
            for (int j = 0; j < 4; j++)
                acc[j] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + 256 * b + 32 * u + 8 * j),
                                         acc[j]);
        }
    }
    return reduce4(acc[0], acc[1], acc[2], acc[3]);
}

RT_INLINE __m256 plain8(rt_type type, const unsigned char *row, size_t i)
{
    return type == RT_TYPE_F32   ? _mm256_loadu_ps((const float *)(const void *)(row + 4 * i))
           : type == RT_TYPE_F16 ? f16x8(row + 2 * i)
                                 : bf16x8(row + 2 * i);
}

/* F32 / F16 / BF16 rows (type a constant after inlining): whole groups of four chunks, the
 * chunks left over (still to acc[c % 4]), then the scalar tail. */
RT_INLINE float gemv_plain(rt_type type, const unsigned char *row, const float *x, size_t n)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_fmadd_ps(plain8(type, row, i + 8 * j), _mm256_loadu_ps(x + i + 8 * j),
                                     acc[j]);
    for (int j = 0; i + 8 <= n; i += 8, j++)
        acc[j] = _mm256_fmadd_ps(plain8(type, row, i), _mm256_loadu_ps(x + i), acc[j]);
    float s = reduce4(acc[0], acc[1], acc[2], acc[3]);
    for (; i < n; i++)
        s = fmaf(elem_scalar(type, row, i), x[i], s);
    return s;
}

/* out[r] = row r · x for the nr rows starting at `row`, row_bytes apart. */
RT_SIMD_AVX2 static void gemv_rows(rt_type type, const unsigned char *row, size_t row_bytes,
                                   size_t nr, const float *x, size_t n, float *out)
{
    for (size_t r = 0; r < nr; r++, row += row_bytes) {
        switch (type) {
        case RT_TYPE_Q8_0: out[r] = gemv_q8_0(row, x, n); break;
        case RT_TYPE_Q4_K: out[r] = gemv_q4_k(row, x, n); break;
        case RT_TYPE_Q6_K: out[r] = gemv_q6_k(row, x, n); break;
        case RT_TYPE_F16: out[r] = gemv_plain(RT_TYPE_F16, row, x, n); break;
        case RT_TYPE_BF16: out[r] = gemv_plain(RT_TYPE_BF16, row, x, n); break;
        default: out[r] = gemv_plain(RT_TYPE_F32, row, x, n); break;
        }
    }
}

/* ==== AVX2 + FMA path: prefill (a chunk of tokens), register-blocked micro-kernel ========== */

enum { MK_ROWS = 4, MK_TOK = 3 };

/* R rows × T tokens (constants after inlining) of float rows, in the canonical order. The k
 * range is cut into spans of MK_SPAN chunks (R + T rows of 2 KiB: they stay in L1); within a span,
 * pass a takes the chunks c ≡ a (mod 4) into R·T accumulators (12 at 4 × 3: each row vector
 * serves T tokens, each token vector R rows), which carry over to the next span through the
 * stack. Each accumulator so sees exactly the chunk sequence of acc[a] in the gemv kernels. */
enum { MK_SPAN = 64 };

RT_INLINE void micro_kernel(const float *const *w, int R, const float *x, size_t ld_x, int T,
                            size_t n, float *out, size_t ld_out)
{
    __m256 part[4][MK_ROWS][MK_TOK];
    const size_t nc = n / 8;
    for (int a = 0; a < 4; a++)
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++)
                part[a][r][t] = _mm256_setzero_ps();
    for (size_t c0 = 0; c0 < nc; c0 += MK_SPAN) {
        size_t c1 = nc - c0 < MK_SPAN ? nc : c0 + MK_SPAN;
        for (int a = 0; a < 4; a++) {
            __m256 acc[MK_ROWS][MK_TOK];
            for (int r = 0; r < R; r++)
                for (int t = 0; t < T; t++)
                    acc[r][t] = part[a][r][t];
            for (size_t c = c0 + (size_t)a; c < c1; c += 4) {
                size_t i = 8 * c;
                __m256 xv[MK_TOK];
                for (int t = 0; t < T; t++)
                    xv[t] = _mm256_loadu_ps(x + t * ld_x + i);
                for (int r = 0; r < R; r++) {
                    __m256 wv = _mm256_loadu_ps(w[r] + i);
                    for (int t = 0; t < T; t++)
                        acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
                }
            }
            for (int r = 0; r < R; r++)
                for (int t = 0; t < T; t++)
                    part[a][r][t] = acc[r][t];
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float s = reduce4(part[0][r][t], part[1][r][t], part[2][r][t], part[3][r][t]);
            for (size_t j = 8 * nc; j < n; j++)
                s = fmaf(w[r][j], x[t * ld_x + j], s);
            out[t * ld_out + r] = s;
        }
}

RT_SIMD_AVX2 static void gemm_rows(const float *const *w, size_t nr, const float *x, size_t ld_x,
                                   size_t n_tok, size_t n, float *out, size_t ld_out)
{
    size_t t = 0;
    for (; t + MK_TOK <= n_tok; t += MK_TOK) {
        size_t r = 0;
        for (; r + MK_ROWS <= nr; r += MK_ROWS)
            micro_kernel(w + r, MK_ROWS, x + t * ld_x, ld_x, MK_TOK, n, out + t * ld_out + r,
                         ld_out);
        for (; r < nr; r++)
            micro_kernel(w + r, 1, x + t * ld_x, ld_x, MK_TOK, n, out + t * ld_out + r, ld_out);
    }
    for (; t < n_tok; t++) {
        size_t r = 0;
        for (; r + MK_ROWS <= nr; r += MK_ROWS)
            micro_kernel(w + r, MK_ROWS, x + t * ld_x, ld_x, 1, n, out + t * ld_out + r, ld_out);
        for (; r < nr; r++)
            micro_kernel(w + r, 1, x + t * ld_x, ld_x, 1, n, out + t * ld_out + r, ld_out);
    }
}

/* One block of up to RT_MM_ROWS rows: fused kernels for one token, else decode + micro-kernel. */
static void block_avx2(const rt_mat *w, size_t r0, size_t nr, const float *x, size_t ld_x,
                       size_t n_tok, float *out, size_t ld_out, float *buf)
{
    const size_t n_in = w->n_in;
    const unsigned char *base = (const unsigned char *)w->data + r0 * w->row_bytes;
    if (n_tok == 1) {
        gemv_rows(w->type, base, w->row_bytes, nr, x, n_in, out + r0);
        return;
    }
    const float *rows[RT_MM_ROWS];
    for (size_t r = 0; r < nr; r++) {
        const unsigned char *src = base + r * w->row_bytes;
        if (w->type == RT_TYPE_F32) {
            rows[r] = (const float *)(const void *)src;
        } else {
            decode_row_avx2(w->type, src, buf + r * n_in, n_in);
            rows[r] = buf + r * n_in;
        }
    }
    gemm_rows(rows, nr, x, ld_x, n_tok, n_in, out + r0, ld_out);
}

RT_SIMD_AVX2 static float dot_f32_avx2(const float *a, const float *b, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    if (i + 8 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        i += 8;
    }
    float s = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        s = fmaf(a[i], b[i], s);
    return s;
}

#endif /* RT_HAVE_X86_SIMD */

/* ==== Entry points ========================================================================= */

float rt_dot_f32(const float *a, const float *b, size_t n)
{
#ifdef RT_HAVE_X86_SIMD
    if (rt_cpu_simd())
        return dot_f32_avx2(a, b, n);
#endif
    return dot_f32_portable(a, b, n);
}

void rt_matmul_cpu(const rt_mat *w, const float *x, size_t ld_x, size_t n_tok, float *out,
                   size_t ld_out, const rt_mm_pool *pool)
{
    const size_t n_out = w->n_out;
    const long n_blocks = (long)((n_out + RT_MM_ROWS - 1) / RT_MM_ROWS);
    bool simd = rt_cpu_simd();
    int nt = pool->n_threads;
    if (n_blocks < nt)
        nt = (int)n_blocks;

#pragma omp parallel for schedule(static) num_threads(nt)
    for (long b = 0; b < n_blocks; b++) {
        size_t r0 = (size_t)b * RT_MM_ROWS;
        size_t nr = n_out - r0 < RT_MM_ROWS ? n_out - r0 : RT_MM_ROWS;
        float *buf = pool->buf + (size_t)omp_get_thread_num() * pool->stride;
#ifdef RT_HAVE_X86_SIMD
        if (simd) {
            block_avx2(w, r0, nr, x, ld_x, n_tok, out, ld_out, buf);
            continue;
        }
#endif
        (void)simd;
        block_portable(w, r0, nr, x, ld_x, n_tok, out, ld_out, buf);
    }
}
