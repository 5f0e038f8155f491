/*
 * test_cuda_kernels OP: one CUDA op of runtime/cuda against its CPU reference (the CPU backend's
 * functions, or a double-precision loop), on fresh random inputs (seed printed), outputs poisoned
 * with NaN before each launch so unwritten elements fail. OP is one of dequant, matvec, gemm,
 * rmsnorm, rope, rope_store, swiglu, kv_store, flash_attn, flash_decode, attn_merge, argmax.
 * Exits 77 when no CUDA device is usable.
 *
 * Tolerances (relative to the scale of the reference):
 *   dequant/embedding  1e-6 fp32 (an FMA may round differently), one bf16 rounding for bf16 out
 *   matvec, gemm       1e-5 · Σ|w·x| (fp32 accumulation in another order; gemm's bf16 operands
 *                      are rounded to bf16 on the host first, so only accumulation differs)
 *   rmsnorm, swiglu    1e-5 relative (fp32), 2^-8 relative (bf16 out)
 *   rope               2e-5 absolute on unit-scale vectors (same double angles, float rotation)
 *   attention          8e-5 on outputs (2e-5 · max|v|; plus one bf16 rounding for bf16 out),
 *                      2e-5 relative on log-sum-exp
 *   kv_store, argmax   exact (rope_store: its cache rows exactly its rotated k and v, converted)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_test.h"
#include "runtime/cuda/argmax.cuh"
#include "runtime/cuda/attn_merge.cuh"
#include "runtime/cuda/dequant.cuh"
#include "runtime/cuda/flash_attn.cuh"
#include "runtime/cuda/flash_decode.cuh"
#include "runtime/cuda/gemm.cuh"
#include "runtime/cuda/kv_store.cuh"
#include "runtime/cuda/matvec.cuh"
#include "runtime/cuda/repack.cuh"
#include "runtime/cuda/rmsnorm.cuh"
#include "runtime/cuda/rope.cuh"
#include "runtime/cuda/swiglu.cuh"
#include "runtime/model_impl.h"

static test_rng rng;

static const rt_type TYPES[] = {RT_TYPE_F32, RT_TYPE_F16, RT_TYPE_BF16,
                                RT_TYPE_Q8_0, RT_TYPE_Q4_K, RT_TYPE_Q6_K};
enum { N_TYPES = sizeof TYPES / sizeof TYPES[0] };

static uint32_t rnd(uint32_t lo, uint32_t hi) /* in [lo, hi] */
{
    return lo + (uint32_t)(test_rng_u64(&rng) % (uint64_t)(hi - lo + 1));
}

static float *rand_vec(size_t n, float scale) { return cuda_test_rand_vec(&rng, n, scale); }

static float bf16_round(float x) { return rt_bf16_to_f32(rt_f32_to_bf16(x)); }

/* A random matrix quantised to `t`, rows row_bytes apart as in a GGUF file; *pitch is the
 * 16-byte-padded pitch the engine uploads them with (dev_weights); `deq` receives the
 * dequantised values (n_out, n_in). Returns the host bytes. */
static unsigned char *make_matrix(rt_type t, uint32_t n_out, uint32_t n_in, size_t *pitch,
                                  float *deq)
{
    size_t rb = rt_type_row_bytes(t, n_in);
    *pitch = (rb + 15) / 16 * 16;
    unsigned char *w = calloc(n_out, rb);
    float *row = rand_vec(n_in, 0.5f);
    for (uint32_t r = 0; r < n_out; r++) {
        for (uint32_t i = 0; i < n_in; i++)
            row[i] = 0.5f * test_rng_normal(&rng);
        CHECK(rt_quantize(t, row, w + r * rb, n_in) == LOUPE_OK);
        rt_dequantize(t, w + r * rb, deq + (size_t)r * n_in, n_in);
    }
    free(row);
    return w;
}

/* make_matrix's rows on the device as the engine uploads them (rt_cuda_upload_rows: padded to
 * `pitch`, Q8_0 repacked); the padding is poisoned. */
static void *dev_weights(rt_type t, uint32_t n_out, uint32_t n_in, const unsigned char *w,
                         size_t pitch)
{
    void *d = dev_from(NULL, (size_t)n_out * pitch);
    CHECK(rt_cuda_upload_rows(t, n_in, w, rt_type_row_bytes(t, n_in), d, pitch, n_out) ==
          LOUPE_OK);
    return d;
}

/* A row length that is whole blocks of t; float types also get lengths with a tail past the
 * last 32-element unit. */
static uint32_t row_len(rt_type t)
{
    size_t be = rt_type_block_elems(t);
    if (be == 1)
        return rnd(0, 1) ? 32 * rnd(1, 40) : rnd(1, 1200) * 4 + 2 * rnd(0, 1);
    return (uint32_t)be * rnd(1, 1024 / (uint32_t)be + 2);
}

/* ==== dequant / embedding ================================================================= */

static void test_dequant(void)
{
    for (int ti = 0; ti < N_TYPES; ti++) {
        rt_type t = TYPES[ti];
        uint32_t n_in = row_len(t), n_rows = rnd(1, 40), n_ids = rnd(1, 30);
        size_t pitch;
        float *deq = malloc((size_t)n_rows * n_in * sizeof *deq);
        unsigned char *w = make_matrix(t, n_rows, n_in, &pitch, deq);
        int32_t *ids = malloc(n_ids * sizeof *ids);
        for (uint32_t i = 0; i < n_ids; i++)
            ids[i] = (int32_t)rnd(0, n_rows - 1);
        void *dw = dev_weights(t, n_rows, n_in, w, pitch);
        int32_t *dids = dev_from(ids, n_ids * sizeof *ids);
        for (int out_bf16 = 0; out_bf16 < 2; out_bf16++)
            for (int gather = 0; gather < 2; gather++) {
                uint32_t n = gather ? n_ids : n_rows;
                size_t ld = n_in + rnd(0, 3);
                size_t esz = out_bf16 ? 2 : 4;
                void *dout = dev_from(NULL, n * ld * esz);
                CHECK(rt_cuda_dequant(t, dw, pitch, gather ? dids : NULL, n, n_in,
                                      out_bf16 ? RT_CUDA_BF16 : RT_CUDA_F32, dout, ld,
                                      0) == LOUPE_OK);
                unsigned char *got = malloc(n * ld * esz);
                dev_to(got, dout, n * ld * esz);
                int bad = 0;
                for (uint32_t r = 0; r < n; r++)
                    for (uint32_t i = 0; i < n_in; i++) {
                        float ref = deq[(size_t)(gather ? ids[r] : (int32_t)r) * n_in + i];
                        float g;
                        if (out_bf16) {
                            uint16_t h;
                            memcpy(&h, got + ((size_t)r * ld + i) * 2, 2);
                            g = rt_bf16_to_f32(h);
                        } else {
                            memcpy(&g, got + ((size_t)r * ld + i) * 4, 4);
                        }
                        float tol = out_bf16 ? fabsf(ref) / 128.0f + 1e-6f
                                             : fabsf(ref) * 1e-6f + 1e-7f;
                        if (!(fabsf(g - ref) <= tol) && bad++ < 3)
                            fprintf(stderr, "dequant %s %s%s: [%u][%u] %g vs %g\n",
                                    rt_type_name(t), out_bf16 ? "bf16" : "f32",
                                    gather ? " gather" : "", r, i, g, ref);
                    }
                CHECK(bad == 0);
                free(got);
                cudaFree(dout);
            }
        cudaFree(dw);
        cudaFree(dids);
        free(w);
        free(deq);
        free(ids);
    }
}

/* ==== matvec ================================================================================ */

static void test_matvec(void)
{
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int acc = 0; acc < 2; acc++) {
            rt_type t = TYPES[ti];
            uint32_t n_in = row_len(t), n_out = rnd(1, 300);
            size_t pitch;
            float *deq = malloc((size_t)n_out * n_in * sizeof *deq);
            unsigned char *w = make_matrix(t, n_out, n_in, &pitch, deq);
            float *x = rand_vec(n_in, 1.0f), *y0 = rand_vec(n_out, 1.0f);
            void *dw = dev_weights(t, n_out, n_in, w, pitch);
            float *dx = dev_from(x, n_in * 4), *dy = dev_from(y0, n_out * 4);
            CHECK(rt_cuda_matvec(t, dw, pitch, n_out, n_in, dx, dy, acc, 0) == LOUPE_OK);
            float *y = malloc(n_out * 4);
            dev_to(y, dy, n_out * 4);
            int bad = 0;
            for (uint32_t r = 0; r < n_out; r++) {
                double ref = acc ? y0[r] : 0, mag = acc ? fabs(y0[r]) : 0;
                for (uint32_t i = 0; i < n_in; i++) {
                    ref += (double)deq[(size_t)r * n_in + i] * x[i];
                    mag += fabs((double)deq[(size_t)r * n_in + i] * x[i]);
                }
                if (!(fabs(y[r] - ref) <= 1e-5 * mag + 1e-6) && bad++ < 3)
                    fprintf(stderr, "matvec %s n_in %u row %u: %g vs %g\n", rt_type_name(t),
                            n_in, r, y[r], ref);
            }
            CHECK(bad == 0);
            cudaFree(dw);
            cudaFree(dx);
            cudaFree(dy);
            free(w);
            free(deq);
            free(x);
            free(y0);
            free(y);
        }
}

/* ==== gemm ================================================================================== */

static void test_gemm(void)
{
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        CHECK(!"cublasCreate");
        return;
    }
    for (int bf = 0; bf < 2; bf++)
        for (int beta = 0; beta < 2; beta++) {
            uint32_t n_out = rnd(1, 700), n_in = 8 * rnd(1, 200), n_tok = rnd(1, 300);
            size_t ldw = n_in + 8 * rnd(0, 2), ldx = n_in + 8 * rnd(0, 2),
                   ldo = n_out + rnd(0, 3);
            size_t esz = bf ? 2 : 4;
            float *W = rand_vec(n_out * ldw, 1.0f), *X = rand_vec(n_tok * ldx, 1.0f);
            float *O0 = rand_vec(n_tok * ldo, 1.0f);
            unsigned char *hw = malloc(n_out * ldw * esz), *hx = malloc(n_tok * ldx * esz);
            for (size_t i = 0; i < n_out * ldw; i++) {
                if (bf) {
                    uint16_t b = rt_f32_to_bf16(W[i]);
                    memcpy(hw + 2 * i, &b, 2);
                    W[i] = rt_bf16_to_f32(b);
                } else {
                    memcpy(hw + 4 * i, &W[i], 4);
                }
            }
            for (size_t i = 0; i < n_tok * ldx; i++) {
                if (bf) {
                    uint16_t b = rt_f32_to_bf16(X[i]);
                    memcpy(hx + 2 * i, &b, 2);
                    X[i] = rt_bf16_to_f32(b);
                } else {
                    memcpy(hx + 4 * i, &X[i], 4);
                }
            }
            void *dw = dev_from(hw, n_out * ldw * esz), *dx = dev_from(hx, n_tok * ldx * esz);
            float *dout = dev_from(O0, n_tok * ldo * 4);
            CHECK(rt_cuda_gemm(h, bf ? RT_CUDA_BF16 : RT_CUDA_F32, dw, ldw, n_out, n_in, dx, ldx,
                               n_tok, (float)beta, dout, ldo, 0) == LOUPE_OK);
            float *out = malloc(n_tok * ldo * 4);
            dev_to(out, dout, n_tok * ldo * 4);
            int bad = 0;
            for (uint32_t t = 0; t < n_tok; t++)
                for (uint32_t r = 0; r < n_out; r++) {
                    double ref = beta ? O0[t * ldo + r] : 0, mag = fabs(ref);
                    for (uint32_t i = 0; i < n_in; i++) {
                        double p = (double)W[r * ldw + i] * X[t * ldx + i];
                        ref += p;
                        mag += fabs(p);
                    }
                    if (!(fabs(out[t * ldo + r] - ref) <= 1e-5 * mag + 1e-6) && bad++ < 3)
                        fprintf(stderr, "gemm %s: [%u][%u] %g vs %g\n", bf ? "bf16" : "f32", t,
                                r, out[t * ldo + r], ref);
                }
            CHECK(bad == 0);
            cudaFree(dw);
            cudaFree(dx);
            cudaFree(dout);
            free(W);
            free(X);
            free(O0);
            free(hw);
            free(hx);
            free(out);
        }
    cublasDestroy(h);
}

/* ==== rmsnorm, swiglu ======================================================================= */

static float get_act(const void *buf, size_t i, int bf)
{
    if (bf) {
        uint16_t h;
        memcpy(&h, (const unsigned char *)buf + 2 * i, 2);
        return rt_bf16_to_f32(h);
    }
    float f;
    memcpy(&f, (const unsigned char *)buf + 4 * i, 4);
    return f;
}

static void test_rmsnorm(void)
{
    for (int bf = 0; bf < 2; bf++) {
        uint32_t n = rnd(1, 5000), rows = rnd(1, 20);
        size_t ldx = n + rnd(0, 5), ldo = n + rnd(0, 5);
        float eps = 1e-5f, *x = rand_vec(rows * ldx, 3.0f), *w = rand_vec(n, 1.0f);
        float *dx = dev_from(x, rows * ldx * 4), *dw = dev_from(w, n * 4);
        void *dout = dev_from(NULL, rows * ldo * 4);
        CHECK(rt_cuda_rmsnorm(dx, ldx, dw, n, rows, eps, bf ? RT_CUDA_BF16 : RT_CUDA_F32, dout,
                              ldo, 0) == LOUPE_OK);
        float *out = malloc(rows * ldo * 4);
        dev_to(out, dout, rows * ldo * 4);
        int bad = 0;
        for (uint32_t r = 0; r < rows; r++) {
            double ss = 0;
            for (uint32_t i = 0; i < n; i++)
                ss += (double)x[r * ldx + i] * x[r * ldx + i];
            double inv = 1.0 / sqrt(ss / n + eps);
            for (uint32_t i = 0; i < n; i++) {
                double ref = x[r * ldx + i] * inv * w[i];
                float g = get_act(out, r * ldo + i, bf);
                double tol = bf ? fabs(ref) / 256 + 1e-6 : fabs(ref) * 1e-5 + 1e-6;
                if (!(fabs(g - ref) <= tol) && bad++ < 3)
                    fprintf(stderr, "rmsnorm [%u][%u] %g vs %g\n", r, i, g, ref);
            }
        }
        CHECK(bad == 0);
        cudaFree(dx);
        cudaFree(dw);
        cudaFree(dout);
        free(x);
        free(w);
        free(out);
    }
}

static void test_swiglu(void)
{
    for (int bf = 0; bf < 2; bf++) {
        size_t n = rnd(1, 300000);
        float *g = rand_vec(n, 4.0f), *u = rand_vec(n, 1.0f);
        float *dg = dev_from(g, n * 4), *du = dev_from(u, n * 4);
        void *dout = dev_from(NULL, n * 4);
        CHECK(rt_cuda_swiglu(dg, du, n, bf ? RT_CUDA_BF16 : RT_CUDA_F32, dout, 0) == LOUPE_OK);
        float *out = malloc(n * 4);
        dev_to(out, dout, n * 4);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            double tol = bf ? fabs(ref) / 256 + 1e-7 : fabs(ref) * 1e-5 + 1e-7;
            float v = get_act(out, i, bf);
            if (!(fabs(v - ref) <= tol) && bad++ < 3)
                fprintf(stderr, "swiglu [%zu] %g vs %g\n", i, v, ref);
        }
        CHECK(bad == 0);
        cudaFree(dg);
        cudaFree(du);
        cudaFree(dout);
        free(g);
        free(u);
        free(out);
    }
}

/* ==== rope ================================================================================== */

/* RoPE variant 0..4 (normal, NeoX with another base, rope_freqs divisors with linear scaling,
 * YaRN, partial rotary NeoX) of a random head dim (returned), initialised into r; *freqs (or
 * NULL) is the caller's to free. */
static uint32_t rope_variant(int variant, rt_rope *r, float **freqs)
{
    rt_hparams hp;
    memset(&hp, 0, sizeof hp);
    uint32_t hds[] = {64, 128, 96};
    hp.head_dim = hds[rnd(0, 2)];
    hp.rope_dim = variant == 4 ? hp.head_dim / 2 : hp.head_dim; /* partial rotary */
    hp.rope_freq_base = variant == 1 ? 1000000.0f : 500000.0f;
    hp.rope_style = variant == 1 || variant == 4 ? RT_ROPE_NEOX : RT_ROPE_NORM;
    hp.n_ctx_train = 131072;
    hp.rope_scale_factor = 1;
    *freqs = NULL;
    if (variant == 2) { /* Llama-3.1 style divisors, and linear scaling */
        *freqs = rand_vec(hp.rope_dim / 2, 0.0f);
        for (uint32_t i = 0; i < hp.rope_dim / 2; i++)
            (*freqs)[i] = 1.0f + 7.0f * test_rng_uniform(&rng);
        hp.rope_scaling = RT_ROPE_SCALING_LINEAR;
        hp.rope_scale_factor = 2.5f;
    }
    if (variant == 3) {
        hp.rope_scaling = RT_ROPE_SCALING_YARN;
        hp.rope_scale_factor = 4.0f;
        hp.rope_orig_ctx = 8192;
        hp.yarn_ext_factor = -1; /* "absent": rope.c picks its default */
    }
    loupe_err err = {0};
    CHECK(rt_rope_init(r, &hp, *freqs, &err) == LOUPE_OK);
    return hp.head_dim;
}

static rt_cuda_rope_desc rope_desc(const rt_rope *r, const double *dfreq)
{
    rt_cuda_rope_desc d = {dfreq,        r->n_pairs,  r->style == RT_ROPE_NEOX, r->freq_scale,
                           r->ext_factor, r->corr_lo, r->corr_hi,               r->mscale};
    return d;
}

/* Heads h < n_head of q, then n_kv of k (each (n_tok, heads, hd)), of token t rotated on the CPU
 * at position pos0 + t, against the GPU's; returns the elements off by more than 2e-5. */
static int rope_check(const rt_rope *r, uint32_t pos0, uint32_t n_tok, uint32_t n_head,
                      uint32_t n_kv, uint32_t hd, float *q, float *k, const float *gq,
                      const float *gk, const char *what)
{
    float *cs = malloc(r->n_pairs * 2 * 4 + 4);
    int bad = 0;
    for (uint32_t t = 0; t < n_tok; t++) {
        rt_rope_angles(r, pos0 + t, cs);
        for (uint32_t h = 0; h < n_head + n_kv; h++) {
            float *ref = h < n_head ? q + ((size_t)t * n_head + h) * hd
                                    : k + ((size_t)t * n_kv + h - n_head) * hd;
            const float *got = h < n_head ? gq + ((size_t)t * n_head + h) * hd
                                          : gk + ((size_t)t * n_kv + h - n_head) * hd;
            rt_rope_apply(r, cs, ref, hd);
            for (uint32_t i = 0; i < hd; i++)
                if (!(fabsf(got[i] - ref[i]) <= 2e-5f) && bad++ < 3)
                    fprintf(stderr, "%s t %u h %u dim %u: %g vs %g\n", what, t, h, i, got[i],
                            ref[i]);
        }
    }
    free(cs);
    return bad;
}

static void test_rope(void)
{
    for (int variant = 0; variant < 5; variant++) {
        rt_rope r;
        float *freqs;
        const uint32_t hd = rope_variant(variant, &r, &freqs);
        uint32_t n_tok = rnd(1, 40), n_head = rnd(1, 8), n_kv = rnd(1, 4), pos0 = rnd(0, 120000);
        size_t nq = (size_t)n_tok * n_head * hd, nk = (size_t)n_tok * n_kv * hd;
        float *q = rand_vec(nq, 1.0f), *k = rand_vec(nk, 1.0f);
        double *dfreq = dev_from(r.inv_freq, r.n_pairs * sizeof(double));
        float *dq = dev_from(q, nq * 4), *dk = dev_from(k, nk * 4);
        rt_cuda_rope_desc d = rope_desc(&r, dfreq);
        CHECK(rt_cuda_rope(&d, pos0, n_tok, dq, n_head, dk, n_kv, hd, 0) == LOUPE_OK);
        float *gq = malloc(nq * 4), *gk = malloc(nk * 4);
        dev_to(gq, dq, nq * 4);
        dev_to(gk, dk, nk * 4);
        char what[32];
        snprintf(what, sizeof what, "rope variant %d", variant);
        CHECK(rope_check(&r, pos0, n_tok, n_head, n_kv, hd, q, k, gq, gk, what) == 0);
        rt_rope_free(&r);
        cudaFree(dfreq);
        cudaFree(dq);
        cudaFree(dk);
        free(freqs);
        free(q);
        free(k);
        free(gq);
        free(gk);
    }
}

/* The decode form: one token's RoPE at a position read from device memory, and its rotated key
 * and value stored at a slot (another number than the position, as in the retrieval layout) of
 * a poisoned cache; every other cache row stays poisoned. */
static void test_rope_store(void)
{
    for (int variant = 0; variant < 10; variant++) {
        const int bf = variant >= 5;
        rt_rope r;
        float *freqs;
        const uint32_t hd = rope_variant(variant % 5, &r, &freqs);
        uint32_t n_head = rnd(1, 8) * 4, n_kv = n_head / 4;
        uint32_t n_ctx = rnd(1, 300), step[2] = {rnd(0, 120000), rnd(0, n_ctx - 1)};
        size_t nq = (size_t)n_head * hd, nk = (size_t)n_kv * hd, esz = bf ? 2 : 4;
        size_t cache = (size_t)n_kv * n_ctx * hd * esz;
        float *q = rand_vec(nq, 1.0f), *k = rand_vec(nk, 1.0f), *v = rand_vec(nk, 1.0f);
        double *dfreq = dev_from(r.inv_freq, r.n_pairs * sizeof(double));
        float *dq = dev_from(q, nq * 4), *dk = dev_from(k, nk * 4), *dv = dev_from(v, nk * 4);
        uint32_t *dstep = dev_from(step, sizeof step);
        void *kc = dev_from(NULL, cache), *vc = dev_from(NULL, cache);
        rt_cuda_rope_desc d = rope_desc(&r, dfreq);
        CHECK(rt_cuda_rope_store_dev(&d, &dstep[0], &dstep[1], dq, n_head, dk, dv, n_kv, hd,
                                     n_ctx, bf ? RT_CUDA_BF16 : RT_CUDA_F32, kc, vc, 0) ==
              LOUPE_OK);
        float *gq = malloc(nq * 4), *gk = malloc(nk * 4);
        unsigned char *hk = malloc(cache), *hv = malloc(cache);
        dev_to(gq, dq, nq * 4);
        dev_to(gk, dk, nk * 4);
        dev_to(hk, kc, cache);
        dev_to(hv, vc, cache);
        char what[32];
        snprintf(what, sizeof what, "rope_store variant %d", variant);
        CHECK(rope_check(&r, step[0], 1, n_head, n_kv, hd, q, k, gq, gk, what) == 0);
        int bad = 0;
        for (uint32_t h = 0; h < n_kv; h++)
            for (uint32_t p = 0; p < n_ctx; p++)
                for (uint32_t i = 0; i < hd; i++) {
                    size_t ci = ((size_t)h * n_ctx + p) * hd + i, si = (size_t)h * hd + i;
                    float ck = get_act(hk, ci, bf), cv = get_act(hv, ci, bf);
                    if (p != step[1]) { /* untouched: still the 0xff poison */
                        bad += !isnan(ck) || !isnan(cv);
                        continue;
                    }
                    float rk = bf ? bf16_round(gk[si]) : gk[si];
                    float rv = bf ? bf16_round(v[si]) : v[si];
                    bad += ck != rk || cv != rv;
                }
        CHECK_MSG(bad == 0, "rope_store variant %d: %d cache elements wrong", variant, bad);
        rt_rope_free(&r);
        cudaFree(dfreq);
        cudaFree(dq);
        cudaFree(dk);
        cudaFree(dv);
        cudaFree(dstep);
        cudaFree(kc);
        cudaFree(vc);
        free(freqs);
        free(q);
        free(k);
        free(v);
        free(gq);
        free(gk);
        free(hk);
        free(hv);
    }
}

/* ==== kv_store ============================================================================== */

static void test_kv_store(void)
{
    for (int bf = 0; bf < 2; bf++) {
        uint32_t n_kv = rnd(1, 8), hd = 32 * rnd(1, 4), n_ctx = rnd(1, 500);
        uint32_t n_tok = rnd(1, n_ctx), pos0 = rnd(0, n_ctx - n_tok);
        size_t esz = bf ? 2 : 4, cache = (size_t)n_kv * n_ctx * hd * esz;
        float *k = rand_vec((size_t)n_tok * n_kv * hd, 1.0f);
        float *v = rand_vec((size_t)n_tok * n_kv * hd, 1.0f);
        float *dk = dev_from(k, (size_t)n_tok * n_kv * hd * 4);
        float *dv = dev_from(v, (size_t)n_tok * n_kv * hd * 4);
        void *kc = dev_from(NULL, cache), *vc = dev_from(NULL, cache);
        CHECK(rt_cuda_kv_store(dk, dv, n_tok, n_kv, hd, pos0, n_ctx,
                               bf ? RT_CUDA_BF16 : RT_CUDA_F32, kc, vc, 0) == LOUPE_OK);
        unsigned char *hk = malloc(cache), *hv = malloc(cache);
        dev_to(hk, kc, cache);
        dev_to(hv, vc, cache);
        int bad = 0;
        for (uint32_t h = 0; h < n_kv; h++)
            for (uint32_t p = 0; p < n_ctx; p++)
                for (uint32_t d = 0; d < hd; d++) {
                    size_t ci = ((size_t)h * n_ctx + p) * hd + d;
                    float gk = get_act(hk, ci, bf), gv = get_act(hv, ci, bf);
                    if (p < pos0 || p >= pos0 + n_tok) { /* untouched: still the 0xff poison */
                        if (!isnan(gk) || !isnan(gv))
                            bad++;
                        continue;
                    }
                    size_t si = ((size_t)(p - pos0) * n_kv + h) * hd + d;
                    float rk = bf ? bf16_round(k[si]) : k[si], rv = bf ? bf16_round(v[si]) : v[si];
                    if (gk != rk || gv != rv)
                        bad++;
                }
        CHECK_MSG(bad == 0, "%d cache elements wrong", bad);
        cudaFree(dk);
        cudaFree(dv);
        cudaFree(kc);
        cudaFree(vc);
        free(k);
        free(v);
        free(hk);
        free(hv);
    }
}

/* ==== attention ============================================================================= */

typedef cuda_test_cache cache_t;

static uint32_t rand_head_dim(void)
{
    static const uint32_t hds[] = {32, 64, 96, 128, 256};
    return hds[rnd(0, 4)];
}

/* Outputs within 8e-5 (values are averages of unit normals, |v| < ~4: 2e-5 · max|v|), plus one
 * bf16 rounding when the output is bf16; lse within 2e-5 relative. */
static int cmp_partial(const char *what, const float *out, float lse, const float *ref,
                       float ref_lse, uint32_t hd, int out_bf16)
{
    int bad = 0;
    for (uint32_t d = 0; d < hd; d++)
        if (!(fabsf(out[d] - ref[d]) <= 8e-5f + (out_bf16 ? fabsf(ref[d]) / 128.0f : 0.0f)) &&
            bad++ < 2)
            fprintf(stderr, "%s dim %u: %g vs %g\n", what, d, out[d], ref[d]);
    if (!(lse == ref_lse || fabsf(lse - ref_lse) <= 2e-5f * fmaxf(1.0f, fabsf(ref_lse)))) {
        fprintf(stderr, "%s lse %g vs %g\n", what, lse, ref_lse);
        bad++;
    }
    return bad;
}

static void test_flash_attn(void)
{
    for (int iter = 0; iter < 6; iter++) {
        int bf = iter % 2, out_bf = iter == 5;
        uint32_t hd = rand_head_dim(), n_kv = rnd(1, 4), group = rnd(1, 6);
        uint32_t n_head = n_kv * group, n_tok = rnd(1, 150), pos0 = rnd(0, 300);
        uint32_t n_ctx = pos0 + n_tok + rnd(0, 10);
        cache_t c;
        cuda_test_cache_make(&rng, &c, n_kv, n_ctx, hd, bf);
        size_t q_ld = (size_t)n_head * hd + 4 * rnd(0, 3);
        float *q = rand_vec(n_tok * q_ld, 1.0f);
        float *dq = dev_from(q, n_tok * q_ld * 4);
        size_t out_ld = (size_t)n_head * hd + rnd(0, 5);
        void *dout = dev_from(NULL, n_tok * out_ld * 4);
        float *dlse = dev_from(NULL, (size_t)n_tok * n_head * 4);
        float scale = 1.5f / sqrtf((float)hd);
        rt_cuda_attn_desc a = {dq, q_ld, c.dk, c.dv, c.type, n_ctx, hd, n_head, n_kv, scale};
        CHECK(rt_cuda_flash_attn_simt(&a, n_tok, pos0, out_bf ? RT_CUDA_BF16 : RT_CUDA_F32, dout,
                                 out_ld, dlse, 0) == LOUPE_OK);
        float *out = malloc(n_tok * out_ld * 4), *lse = malloc((size_t)n_tok * n_head * 4);
        float *ref = malloc(hd * 4), *got = malloc(hd * 4);
        dev_to(out, dout, n_tok * out_ld * 4);
        dev_to(lse, dlse, (size_t)n_tok * n_head * 4);
        int bad = 0;
        for (uint32_t t = 0; t < n_tok; t++)
            for (uint32_t h = 0; h < n_head; h++) {
                uint32_t kvh = h / group;
                float rl;
                rt_attn_partial(q + t * q_ld + (size_t)h * hd, c.k + (size_t)kvh * n_ctx * hd,
                                c.v + (size_t)kvh * n_ctx * hd, hd, NULL, pos0 + t + 1, scale,
                                ref, &rl);
                for (uint32_t d = 0; d < hd; d++) {
                    got[d] = get_act(out, t * out_ld + (size_t)h * hd + d, out_bf);
                    if (out_bf)
                        ref[d] = bf16_round(ref[d]);
                }
                char what[96];
                snprintf(what, sizeof what, "flash_attn hd %u group %u t %u h %u", hd, group, t,
                         h);
                if (bad < 4)
                    bad += cmp_partial(what, got, lse[(size_t)t * n_head + h], ref, rl, hd, out_bf);
            }
        CHECK(bad == 0);
        cuda_test_cache_free(&c);
        cudaFree(dq);
        cudaFree(dout);
        cudaFree(dlse);
        free(q);
        free(out);
        free(lse);
        free(ref);
        free(got);
    }
}

static void test_flash_decode(void)
{
    for (int iter = 0; iter < 8; iter++) {
        int bf = iter % 2;
        uint32_t hd = rand_head_dim(), n_kv = rnd(1, 8), group = rnd(1, 8);
        uint32_t n_head = n_kv * group, n_ctx = iter < 2 ? rnd(3000, 9000) : rnd(1, 700);
        uint32_t k0 = rnd(0, n_ctx), k1 = rnd(k0, n_ctx);
        if (iter == 2)
            k1 = k0; /* empty range: out 0, lse -inf */
        uint32_t max_splits = iter == 1 ? 3 : 64;
        cache_t c;
        cuda_test_cache_make(&rng, &c, n_kv, n_ctx, hd, bf);
        float *q = rand_vec((size_t)n_head * hd, 1.0f);
        float *dq = dev_from(q, (size_t)n_head * hd * 4);
        float *dpart = dev_from(NULL, rt_cuda_flash_decode_part_floats(n_head, hd, max_splits) * 4);
        float *dout = dev_from(NULL, (size_t)n_head * hd * 4), *dlse = dev_from(NULL, n_head * 4);
        float scale = 1.0f / sqrtf((float)hd);
        rt_cuda_attn_desc a = {dq, 0, c.dk, c.dv, c.type, n_ctx, hd, n_head, n_kv, scale};
        CHECK(rt_cuda_flash_decode(&a, k0, k1, dpart, max_splits, dout, dlse, 0) == LOUPE_OK);
        float *out = malloc((size_t)n_head * hd * 4), *lse = malloc(n_head * 4);
        float *ref = malloc(hd * 4);
        dev_to(out, dout, (size_t)n_head * hd * 4);
        dev_to(lse, dlse, n_head * 4);
        int bad = 0;
        for (uint32_t h = 0; h < n_head && bad < 4; h++) {
            uint32_t kvh = h / group;
            float rl;
            rt_attn_partial(q + (size_t)h * hd, c.k + ((size_t)kvh * n_ctx + k0) * hd,
                            c.v + ((size_t)kvh * n_ctx + k0) * hd, hd, NULL, k1 - k0, scale, ref,
                            &rl);
            char what[96];
            snprintf(what, sizeof what, "flash_decode keys [%u,%u) hd %u h %u", k0, k1, hd, h);
            bad += cmp_partial(what, out + (size_t)h * hd, lse[h], ref, rl, hd, 0);
        }
        CHECK(bad == 0);
        cuda_test_cache_free(&c);
        cudaFree(dq);
        cudaFree(dpart);
        cudaFree(dout);
        cudaFree(dlse);
        free(q);
        free(out);
        free(lse);
        free(ref);
    }
}

static void test_attn_merge(void)
{
    uint32_t n_head = rnd(1, 64), hd = rnd(1, 300);
    size_t n = (size_t)n_head * hd;
    float *o1 = rand_vec(n, 1.0f), *o2 = rand_vec(n, 1.0f);
    float *l1 = rand_vec(n_head, 30.0f), *l2 = rand_vec(n_head, 30.0f);
    l1[0] = -INFINITY;                 /* one side empty */
    if (n_head > 1)
        l1[1] = l2[1] = -INFINITY;     /* both empty */
    if (n_head > 2)
        l2[2] = l1[2] + 200.0f;        /* far apart: no overflow */
    float *d1 = dev_from(o1, n * 4), *d2 = dev_from(o2, n * 4);
    float *dl1 = dev_from(l1, n_head * 4), *dl2 = dev_from(l2, n_head * 4);
    float *dlse = dev_from(NULL, n_head * 4);
    /* out aliases o1, as the engine may use it */
    CHECK(rt_cuda_attn_merge(d1, dl1, d2, dl2, n_head, hd, d1, dlse, 0) == LOUPE_OK);
    float *out = malloc(n * 4), *lse = malloc(n_head * 4), *ref = malloc(hd * 4);
    dev_to(out, d1, n * 4);
    dev_to(lse, dlse, n_head * 4);
    int bad = 0;
    for (uint32_t h = 0; h < n_head; h++) {
        float rl;
        rt_attn_merge(o1 + (size_t)h * hd, l1[h], o2 + (size_t)h * hd, l2[h], hd, ref, &rl);
        bad += cmp_partial("attn_merge", out + (size_t)h * hd, lse[h], ref, rl, hd, 0);
    }
    CHECK(bad == 0);
    cudaFree(d1);
    cudaFree(d2);
    cudaFree(dl1);
    cudaFree(dl2);
    cudaFree(dlse);
    free(o1);
    free(o2);
    free(l1);
    free(l2);
    free(out);
    free(lse);
    free(ref);
}

/* ==== argmax ================================================================================ */

static void test_argmax(void)
{
    for (int iter = 0; iter < 5; iter++) {
        uint32_t n = rnd(1, 200000);
        float *x = rand_vec(n, 2.0f);
        uint32_t a = rnd(0, n - 1), b = rnd(0, n - 1);
        x[a] = x[b] = 50.0f; /* a tie: the lower index wins */
        if (n > 2)
            x[rnd(0, n - 1)] = NAN;
        if (isnan(x[a]) || isnan(x[b]))
            x[a] = x[b] = 50.0f;
        uint32_t want = a < b ? a : b;
        float *dx = dev_from(x, n * 4);
        int32_t *dout = dev_from(NULL, 4), got = -1;
        CHECK(rt_cuda_argmax(dx, n, dout, 0) == LOUPE_OK);
        dev_to(&got, dout, 4);
        CHECK_MSG(got == (int32_t)want, "argmax of %u: got %d, want %u", n, got, want);
        cudaFree(dx);
        cudaFree(dout);
        free(x);
    }
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } ops[] = {{"dequant", test_dequant},       {"matvec", test_matvec},
               {"gemm", test_gemm},             {"rmsnorm", test_rmsnorm},
               {"rope", test_rope},             {"rope_store", test_rope_store},
               {"swiglu", test_swiglu},
               {"kv_store", test_kv_store},     {"flash_attn", test_flash_attn},
               {"flash_decode", test_flash_decode}, {"attn_merge", test_attn_merge},
               {"argmax", test_argmax}};
    if (argc != 2) {
        fprintf(stderr, "usage: test_cuda_kernels OP\n");
        return 2;
    }
    size_t i = 0, n = sizeof ops / sizeof ops[0];
    while (i < n && strcmp(ops[i].name, argv[1]))
        i++;
    if (i == n) {
        fprintf(stderr, "test_cuda_kernels: unknown op '%s'\n", argv[1]);
        return 2;
    }
    cuda_test_require_device();
    test_rng_seed(&rng, test_seed());
    ops[i].fn();
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaGetLastError());
    char name[64];
    snprintf(name, sizeof name, "test_cuda_kernels %s", argv[1]);
    return test_summary(name);
}
