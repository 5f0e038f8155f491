/*
 * CPU matrix-vector and matrix-matrix products over weights in their stored type.
 *
 * Rows are processed in blocks of RT_MM_ROWS: a block is dequantised once into the calling
 * thread's buffer (rt_mm_pool) and then multiplied with every token of the batch, so a prefill
 * chunk of 256 tokens decodes each weight row once, not 256 times. F32 weights are read in place.
 * Threads split the row blocks statically: every thread streams a contiguous slice of the matrix.
 */
#include "runtime/model_impl.h"

#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define RT_HAVE_F16C_PATH 1
#endif

/* ==== Row decoding ========================================================================= */

#ifdef RT_HAVE_F16C_PATH
/* F16 rows with the F16C conversion instruction (8 halves per instruction): the generic
 * bit-twiddling conversion costs more than reading the row, and F16 is the common stored type. */
__attribute__((target("avx,f16c"))) static void f16_row_f16c(const void *src, float *dst,
                                                             size_t n)
{
    const unsigned char *p = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    if (i < n)
        rt_dequantize(RT_TYPE_F16, p + 2 * i, dst + i, n - i);
}
#endif

static void decode_row(rt_type type, const void *src, float *dst, size_t n, bool f16c)
{
#ifdef RT_HAVE_F16C_PATH
    if (type == RT_TYPE_F16 && f16c) {
        f16_row_f16c(src, dst, n);
        return;
    }
#endif
    (void)f16c;
    rt_dequantize(type, src, dst, n);
}

static bool cpu_has_f16c(void)
{
#ifdef RT_HAVE_F16C_PATH
    /* cpuid rather than __builtin_cpu_supports("f16c"), which clang 14 does not know. */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    return (c & bit_F16C) && __builtin_cpu_supports("avx");
#else
    return false;
#endif
}

/* ==== Products ============================================================================= */

float rt_dot_f32(const float *a, const float *b, size_t n)
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

void rt_matmul_cpu(const rt_mat *w, const float *x, size_t ld_x, size_t n_tok, float *out,
                   size_t ld_out, const rt_mm_pool *pool)
{
    const size_t n_in = w->n_in, n_out = w->n_out;
    const long n_blocks = (long)((n_out + RT_MM_ROWS - 1) / RT_MM_ROWS);
    const unsigned char *base = w->data;
    const bool is_f32 = w->type == RT_TYPE_F32;
    const bool f16c = cpu_has_f16c();
    int nt = pool->n_threads;
    if (n_blocks < nt)
        nt = (int)n_blocks;

#pragma omp parallel for schedule(static) num_threads(nt)
    for (long b = 0; b < n_blocks; b++) {
        size_t r0 = (size_t)b * RT_MM_ROWS;
        size_t nr = n_out - r0 < RT_MM_ROWS ? n_out - r0 : RT_MM_ROWS;
        const float *rows[RT_MM_ROWS];
        float *buf = pool->buf + (size_t)omp_get_thread_num() * pool->stride;
        for (size_t r = 0; r < nr; r++) {
            const void *src = base + (r0 + r) * w->row_bytes;
            if (is_f32) {
                rows[r] = src; /* GGUF aligns tensor data to >= 32 bytes */
            } else {
                decode_row(w->type, src, buf + r * n_in, n_in, f16c);
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
                ot[r] = rt_dot_f32(rows[r], xt, n_in);
        }
    }
}
