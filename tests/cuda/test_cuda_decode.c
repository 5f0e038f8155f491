/*
 * test_cuda_decode OP: the decode kernels (matvec.cu, flash_decode.cu) against CPU references on
 * the shapes they are tuned for, fresh random inputs (seed printed), outputs poisoned with NaN
 * (0xff bytes) before every launch. Exits 77 when no CUDA device is usable. OP:
 *
 *   matvec        every stored type: short rows, rows of 4096 and 14336 (Llama-3-8B's widths),
 *                 float rows with a tail past the last 16-byte piece, row counts that are not a
 *                 multiple of the block's 4 slots, `+=`; vs a double loop over the dequantised
 *                 rows within 1e-5 · Σ|w·x| (fp32 accumulation in another order).
 *   matvec_fused  rt_cuda_matvec_multi (q, k, v shapes; a matrix with no rows) bit for bit equal
 *                 to one rt_cuda_matvec per matrix; rt_cuda_matvec_swiglu equal to silu(g)·u of
 *                 those g and u within 2 ulp-ish (1e-6 relative: the GPU's and libm's expf) and
 *                 to the double reference within 1e-5 · Σ|w·x|; both again with the RMSNorm
 *                 fused in, against the double reference on rmsnorm(x) ⊙ g.
 *   flash_decode  rt_cuda_flash_decode vs rt_attn_partial: GQA groups 1..8 (group 4 with head
 *                 dim 128 as Llama-3), head dims 32..256, bf16 and fp32 caches, key ranges not
 *                 a multiple of the split or the tile, one key, no key, a range not starting at
 *                 0, a small max_splits, ~40K keys (many splits), the 8-KV-head group-4 shape
 *                 in 5 long splits (dozens of tiles per warp); outputs within 8e-5,
 *                 log-sum-exp within 2e-5 relative.
 *   flash_decode_dev  rt_cuda_flash_decode_dev (key count in device memory, grid sized for
 *                 n_ctx) bit for bit equal to rt_cuda_flash_decode over [0, n) for counts from
 *                 1 to n_ctx, and within tolerance of the reference.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_test.h"
#include "runtime/cuda/flash_decode.cuh"
#include "runtime/cuda/matvec.cuh"
#include "runtime/cuda/repack.cuh"
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

/* ==== matvec ================================================================================ */

/* A random matrix quantised to t, uploaded as the engine uploads it (rt_cuda_upload_rows: rows
 * padded to a 16-byte pitch, Q8_0 repacked), so the device copy is exactly n_out · pitch bytes
 * (a kernel reading past it is a bug) and the padding is poisoned; deq (n_out, n_in) receives
 * the dequantised values. Returns the device copy. */
static void *make_matrix(rt_type t, uint32_t n_out, uint32_t n_in, size_t *pitch, float *deq)
{
    size_t rb = rt_type_row_bytes(t, n_in);
    *pitch = (rb + 15) / 16 * 16;
    unsigned char *w = calloc(n_out, rb);
    float *row = malloc(n_in * sizeof *row);
    for (uint32_t r = 0; r < n_out; r++) {
        for (uint32_t i = 0; i < n_in; i++)
            row[i] = 0.5f * test_rng_normal(&rng);
        CHECK(rt_quantize(t, row, w + r * rb, n_in) == LOUPE_OK);
        rt_dequantize(t, w + r * rb, deq + (size_t)r * n_in, n_in);
    }
    void *d = dev_from(NULL, (size_t)n_out * *pitch);
    CHECK(rt_cuda_upload_rows(t, n_in, w, rb, d, *pitch, n_out) == LOUPE_OK);
    free(row);
    free(w);
    return d;
}

/* Rows r of y against Σ deq·x (+ y0 when given); returns the number of bad rows. */
static int check_rows(const char *what, rt_type t, const float *y, const float *deq,
                      const float *x, const float *y0, uint32_t n_out, uint32_t n_in)
{
    int bad = 0;
    for (uint32_t r = 0; r < n_out; r++) {
        double ref = y0 ? y0[r] : 0, mag = y0 ? fabs(y0[r]) : 0;
        for (uint32_t i = 0; i < n_in; i++) {
            ref += (double)deq[(size_t)r * n_in + i] * x[i];
            mag += fabs((double)deq[(size_t)r * n_in + i] * x[i]);
        }
        if (!(fabs(y[r] - ref) <= 1e-5 * mag + 1e-6) && bad++ < 3)
            fprintf(stderr, "%s %s %u x %u row %u: %.9g vs %.9g\n", what, rt_type_name(t), n_out,
                    n_in, r, y[r], ref);
    }
    return bad;
}

/* A row length for type t: whole blocks for the quantised types; float types get tails. */
static uint32_t row_len(rt_type t, int shape)
{
    const uint32_t be = (uint32_t)rt_type_block_elems(t);
    switch (shape) {
    case 0: return 4096;
    case 1: return 14336;
    case 2: return be == 1 ? rnd(1, 3000) : be * rnd(1, 20);
    default: return be == 1 ? 8 * rnd(1, 600) + rnd(1, 7) : be * rnd(1, 3); /* tails / short */
    }
}

static void test_matvec(void)
{
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int shape = 0; shape < 4; shape++) {
            const rt_type t = TYPES[ti];
            const int acc = shape % 2;
            const uint32_t n_in = row_len(t, shape);
            const uint32_t n_out = shape == 1 ? rnd(5, 70) : rnd(1, 301);
            size_t pitch;
            float *deq = malloc((size_t)n_out * n_in * sizeof *deq);
            void *dw = make_matrix(t, n_out, n_in, &pitch, deq);
            float *x = rand_vec(n_in, 1.0f), *y0 = rand_vec(n_out, 1.0f);
            float *dx = dev_from(x, n_in * 4), *dy = acc ? dev_from(y0, n_out * 4)
                                                         : dev_from(NULL, n_out * 4);
            CHECK(rt_cuda_matvec(t, dw, pitch, n_out, n_in, dx, dy, acc, 0) == LOUPE_OK);
            CUDA_OK(cudaGetLastError());
            float *y = malloc(n_out * 4);
            dev_to(y, dy, n_out * 4);
            CHECK(check_rows(acc ? "matvec +=" : "matvec", t, y, deq, x, acc ? y0 : NULL, n_out,
                             n_in) == 0);
            cudaFree(dw);
            cudaFree(dx);
            cudaFree(dy);
            free(deq);
            free(x);
            free(y0);
            free(y);
        }
}

static void test_matvec_fused(void)
{
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int iter = 0; iter < 2; iter++) {
            const rt_type t = TYPES[ti];
            const uint32_t n_in = iter == 0 ? 4096 : row_len(t, 2);
            /* q, k, v-like row counts; the second time one matrix has no rows */
            uint32_t rows[3] = {rnd(1, 130), rnd(1, 40), iter == 0 ? rnd(1, 40) : 0};
            size_t pitch = 0;
            void *dw[3];
            float *deq[3], *dy[3], *ys[3], *ym[3];
            float *x = rand_vec(n_in, 1.0f), *dx = dev_from(x, n_in * 4);
            rt_cuda_mv_out outs[3];
            for (int m = 0; m < 3; m++) {
                deq[m] = malloc(((size_t)rows[m] * n_in + 1) * sizeof(float));
                dw[m] = make_matrix(t, rows[m], n_in, &pitch, deq[m]);
                ys[m] = malloc((rows[m] + 1) * 4);
                ym[m] = malloc((rows[m] + 1) * 4);
                dy[m] = dev_from(NULL, rows[m] * 4);
                CHECK(rt_cuda_matvec(t, dw[m], pitch, rows[m], n_in, dx, dy[m], false, 0) ==
                      LOUPE_OK);
                dev_to(ys[m], dy[m], rows[m] * 4);
                CUDA_OK(cudaMemset(dy[m], 0xff, rows[m] * 4));
                outs[m] = (rt_cuda_mv_out){dw[m], dy[m], rows[m]};
            }
            CHECK(rt_cuda_matvec_multi(t, pitch, n_in, outs, 3, dx, NULL, 0.0f, 0) == LOUPE_OK);
            CUDA_OK(cudaGetLastError());
            for (int m = 0; m < 3; m++) {
                dev_to(ym[m], dy[m], rows[m] * 4);
                CHECK_MSG(memcmp(ys[m], ym[m], rows[m] * 4) == 0,
                          "matvec_multi %s matrix %d (%u x %u) differs from rt_cuda_matvec",
                          rt_type_name(t), m, rows[m], n_in);
                CHECK(check_rows("matvec_multi", t, ym[m], deq[m], x, NULL, rows[m], n_in) == 0);
            }

            /* gate = matrix 0, up = a fresh matrix of the same shape */
            const uint32_t F = rows[0];
            float *deq_u = malloc((size_t)F * n_in * sizeof(float));
            void *dwu = make_matrix(t, F, n_in, &pitch, deq_u);
            float *du = dev_from(NULL, F * 4), *dh = dev_from(NULL, F * 4);
            float *u = malloc(F * 4), *h = malloc(F * 4);
            CHECK(rt_cuda_matvec(t, dwu, pitch, F, n_in, dx, du, false, 0) == LOUPE_OK);
            CHECK(rt_cuda_matvec_swiglu(t, dw[0], dwu, pitch, F, n_in, dx, NULL, 0.0f, dh, 0) ==
                  LOUPE_OK);
            CUDA_OK(cudaGetLastError());
            dev_to(u, du, F * 4);
            dev_to(h, dh, F * 4);
            int bad = 0;
            for (uint32_t r = 0; r < F; r++) {
                const float g = ys[0][r];
                const float want = g / (1.0f + expf(-g)) * u[r];
                double rg = 0, ru = 0, mg = 0, mu = 0;
                for (uint32_t i = 0; i < n_in; i++) {
                    rg += (double)deq[0][(size_t)r * n_in + i] * x[i];
                    ru += (double)deq_u[(size_t)r * n_in + i] * x[i];
                    mg += fabs((double)deq[0][(size_t)r * n_in + i] * x[i]);
                    mu += fabs((double)deq_u[(size_t)r * n_in + i] * x[i]);
                }
                /* d(silu(g)·u) ≈ (|u|·1.1)·dg + |silu(g)|·du */
                const double sg = rg / (1.0 + exp(-rg)), ref = sg * ru;
                const double tol = 1e-5 * (1.1 * fabs(ru) * mg + fabs(sg) * mu) + 1e-6;
                if ((!(fabsf(h[r] - want) <= 1e-6f * fabsf(want) + 1e-30f) ||
                     !(fabs(h[r] - ref) <= tol)) &&
                    bad++ < 3)
                    fprintf(stderr, "matvec_swiglu %s %u x %u row %u: %.9g vs %.9g (double %.9g)\n",
                            rt_type_name(t), F, n_in, r, h[r], want, ref);
            }
            CHECK(bad == 0);

            /* the same with the RMSNorm fused in: xn = x / rms(x) ⊙ g, in double */
            const float eps = 1e-5f;
            float *g = rand_vec(n_in, 1.0f), *dg = dev_from(g, n_in * 4);
            double *xn = malloc(n_in * sizeof *xn), ms = 0;
            for (uint32_t i = 0; i < n_in; i++)
                ms += (double)x[i] * x[i];
            const double inv = 1.0 / sqrt(ms / n_in + eps);
            float *xnf = malloc(n_in * 4);
            for (uint32_t i = 0; i < n_in; i++) {
                xn[i] = x[i] * inv * g[i];
                xnf[i] = (float)xn[i];
            }
            for (int m = 0; m < 3; m++)
                CUDA_OK(cudaMemset(dy[m], 0xff, rows[m] * 4));
            CUDA_OK(cudaMemset(dh, 0xff, F * 4));
            CHECK(rt_cuda_matvec_multi(t, pitch, n_in, outs, 3, dx, dg, eps, 0) == LOUPE_OK);
            CHECK(rt_cuda_matvec_swiglu(t, dw[0], dwu, pitch, F, n_in, dx, dg, eps, dh, 0) ==
                  LOUPE_OK);
            CUDA_OK(cudaGetLastError());
            for (int m = 0; m < 3; m++) {
                dev_to(ym[m], dy[m], rows[m] * 4);
                /* tolerance as for x (xn is within one float rounding of the double values) */
                CHECK(check_rows("matvec_multi+norm", t, ym[m], deq[m], xnf, NULL, rows[m],
                                 n_in) == 0);
            }
            dev_to(h, dh, F * 4);
            bad = 0;
            for (uint32_t r = 0; r < F; r++) {
                double rg = 0, ru = 0, mg = 0, mu = 0;
                for (uint32_t i = 0; i < n_in; i++) {
                    rg += (double)deq[0][(size_t)r * n_in + i] * xn[i];
                    ru += (double)deq_u[(size_t)r * n_in + i] * xn[i];
                    mg += fabs((double)deq[0][(size_t)r * n_in + i] * xn[i]);
                    mu += fabs((double)deq_u[(size_t)r * n_in + i] * xn[i]);
                }
                const double sg = rg / (1.0 + exp(-rg)), ref = sg * ru;
                const double tol = 1e-5 * (1.1 * fabs(ru) * mg + fabs(sg) * mu) + 1e-6;
                if (!(fabs(h[r] - ref) <= tol) && bad++ < 3)
                    fprintf(stderr, "matvec_swiglu+norm %s %u x %u row %u: %.9g vs %.9g\n",
                            rt_type_name(t), F, n_in, r, h[r], ref);
            }
            CHECK(bad == 0);
            cudaFree(dg);
            free(g);
            free(xn);
            free(xnf);
            for (int m = 0; m < 3; m++) {
                cudaFree(dw[m]);
                cudaFree(dy[m]);
                free(deq[m]);
                free(ys[m]);
                free(ym[m]);
            }
            cudaFree(dwu);
            cudaFree(du);
            cudaFree(dh);
            cudaFree(dx);
            free(deq_u);
            free(u);
            free(h);
            free(x);
        }
}

/* ==== flash-decoding ======================================================================== */

typedef cuda_test_cache cache_t;

/* Every head's output and lse against rt_attn_partial over keys [k0, k1); returns bad heads. */
static int check_heads(const char *what, const cache_t *c, const float *q, uint32_t n_head,
                       float scale, uint32_t k0, uint32_t k1, const float *out, const float *lse)
{
    const uint32_t hd = c->hd, group = n_head / c->n_kv;
    float *ref = malloc(hd * 4);
    int bad = 0;
    for (uint32_t h = 0; h < n_head && bad < 4; h++) {
        const uint32_t kvh = h / group;
        float rl;
        rt_attn_partial(q + (size_t)h * hd, c->k + ((size_t)kvh * c->n_ctx + k0) * hd,
                        c->v + ((size_t)kvh * c->n_ctx + k0) * hd, hd, NULL, k1 - k0, scale, ref,
                        &rl);
        int b = 0;
        for (uint32_t d = 0; d < hd; d++)
            if (!(fabsf(out[(size_t)h * hd + d] - ref[d]) <= 8e-5f) && b++ < 2)
                fprintf(stderr, "%s keys [%u,%u) hd %u group %u head %u dim %u: %g vs %g\n",
                        what, k0, k1, hd, group, h, d, out[(size_t)h * hd + d], ref[d]);
        if (!(lse[h] == rl || fabsf(lse[h] - rl) <= 2e-5f * fmaxf(1.0f, fabsf(rl)))) {
            fprintf(stderr, "%s keys [%u,%u) hd %u group %u head %u lse %g vs %g\n", what, k0, k1,
                    hd, group, h, lse[h], rl);
            b++;
        }
        bad += b > 0;
    }
    free(ref);
    return bad;
}

typedef struct {
    uint32_t n_kv, group, hd, n_ctx, k0, k1, max_splits;
    int bf;
} fd_case;

static void run_fd_case(const fd_case *fc)
{
    const uint32_t n_head = fc->n_kv * fc->group, hd = fc->hd;
    cache_t c;
    cuda_test_cache_make(&rng, &c, fc->n_kv, fc->n_ctx, hd, fc->bf);
    float *q = rand_vec((size_t)n_head * hd, 1.0f);
    float *dq = dev_from(q, (size_t)n_head * hd * 4);
    float *dpart =
        dev_from(NULL, rt_cuda_flash_decode_part_floats(n_head, hd, fc->max_splits) * 4);
    float *dout = dev_from(NULL, (size_t)n_head * hd * 4), *dlse = dev_from(NULL, n_head * 4);
    const float scale = 1.0f / sqrtf((float)hd);
    rt_cuda_attn_desc a = {dq, 0, c.dk, c.dv, c.type, fc->n_ctx, hd, n_head, fc->n_kv, scale};
    CHECK(rt_cuda_flash_decode(&a, fc->k0, fc->k1, dpart, fc->max_splits, dout, dlse, 0) ==
          LOUPE_OK);
    CUDA_OK(cudaGetLastError());
    float *out = malloc((size_t)n_head * hd * 4), *lse = malloc(n_head * 4);
    dev_to(out, dout, (size_t)n_head * hd * 4);
    dev_to(lse, dlse, n_head * 4);
    char what[64];
    snprintf(what, sizeof what, "flash_decode %s", fc->bf ? "bf16" : "f32");
    CHECK(check_heads(what, &c, q, n_head, scale, fc->k0, fc->k1, out, lse) == 0);
    cuda_test_cache_free(&c);
    cudaFree(dq);
    cudaFree(dpart);
    cudaFree(dout);
    cudaFree(dlse);
    free(q);
    free(out);
    free(lse);
}

static void test_flash_decode(void)
{
    static const uint32_t hds[] = {32, 64, 96, 128, 256};
    /* Llama-3 shapes: group 4, head dim 128, both cache types; lengths around tiles/splits */
    const uint32_t lens[] = {1, 31, 33, 127, 129, 200, rnd(300, 5000), rnd(5000, 40000)};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
        for (int bf = 0; bf < 2; bf++) {
            const uint32_t n_kv = lens[i] > 5000 ? 2 : rnd(1, 8);
            fd_case fc = {n_kv, 4, 128, lens[i] + rnd(0, 50), 0, lens[i], 256, bf};
            run_fd_case(&fc);
        }
    /* every group size (1..8: head groups of 1, 2, 4 and several groups) and head dim */
    for (uint32_t group = 1; group <= 8; group++) {
        const uint32_t n_ctx = rnd(1, 3000);
        const uint32_t k0 = rnd(0, n_ctx - 1), k1 = rnd(k0 + 1, n_ctx);
        fd_case fc = {rnd(1, 3), group, hds[rnd(0, 4)], n_ctx, k0, k1, 256, (int)rnd(0, 1)};
        run_fd_case(&fc);
    }
    for (int i = 0; i < 5; i++) { /* every head dim at group 4, a start past 0 */
        const uint32_t n_ctx = rnd(200, 9000), k0 = rnd(1, 150);
        fd_case fc = {2, 4, hds[i], n_ctx, k0, rnd(k0 + 1, n_ctx), 256, i % 2};
        run_fd_case(&fc);
    }
    { /* no keys: out 0, lse -inf */
        fd_case fc = {2, 4, 128, 100, 37, 37, 64, 1};
        run_fd_case(&fc);
    }
    { /* few splits allowed: long splits */
        fd_case fc = {2, 2, 64, 9000, 0, rnd(4000, 9000), 3, 0};
        run_fd_case(&fc);
    }
    /* the Llama-3 shape with few long splits: every warp streams dozens of tiles through its
     * cp.async buffers (K and V one phase ahead), the last one partial, both cache types */
    for (int bf = 0; bf < 2; bf++) {
        const uint32_t n_ctx = rnd(12000, 20000), k0 = rnd(0, 40);
        fd_case fc = {8, 4, 128, n_ctx, k0, rnd(n_ctx - 100, n_ctx), 5, bf};
        run_fd_case(&fc);
    }
}

static void test_flash_decode_dev(void)
{
    for (int iter = 0; iter < 4; iter++) {
        const int bf = iter % 2;
        const uint32_t group = iter < 2 ? 4 : rnd(1, 6), hd = iter < 2 ? 128 : 64;
        const uint32_t n_kv = rnd(1, 8), n_head = n_kv * group;
        const uint32_t n_ctx = iter == 0 ? rnd(20000, 30000) : rnd(129, 4000);
        const uint32_t max_splits = iter == 3 ? 5 : 256;
        cache_t c;
        cuda_test_cache_make(&rng, &c, n_kv, n_ctx, hd, bf);
        float *q = rand_vec((size_t)n_head * hd, 1.0f);
        float *dq = dev_from(q, (size_t)n_head * hd * 4);
        const size_t part_n = rt_cuda_flash_decode_part_floats(n_head, hd, max_splits);
        float *dpart = dev_from(NULL, part_n * 4);
        const size_t on = (size_t)n_head * hd;
        float *dout = dev_from(NULL, on * 4), *dlse = dev_from(NULL, n_head * 4);
        uint32_t *dn = dev_from(NULL, 4);
        const float scale = 1.0f / sqrtf((float)hd);
        rt_cuda_attn_desc a = {dq, 0, c.dk, c.dv, c.type, n_ctx, hd, n_head, n_kv, scale};
        float *o1 = malloc(on * 4), *o2 = malloc(on * 4), *l1 = malloc(n_head * 4),
              *l2 = malloc(n_head * 4);
        const uint32_t counts[] = {1, 2, 127, 128, 129, rnd(1, n_ctx), n_ctx};
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
            const uint32_t n = counts[i] <= n_ctx ? counts[i] : n_ctx;
            CUDA_OK(cudaMemcpy(dn, &n, 4, cudaMemcpyHostToDevice));
            CUDA_OK(cudaMemset(dout, 0xff, on * 4));
            CUDA_OK(cudaMemset(dlse, 0xff, n_head * 4));
            CHECK(rt_cuda_flash_decode_dev(&a, dn, dpart, max_splits, dout, dlse, 0) == LOUPE_OK);
            CUDA_OK(cudaGetLastError());
            dev_to(o1, dout, on * 4);
            dev_to(l1, dlse, n_head * 4);
            CUDA_OK(cudaMemset(dout, 0xff, on * 4));
            CUDA_OK(cudaMemset(dlse, 0xff, n_head * 4));
            CUDA_OK(cudaMemset(dpart, 0xff, part_n * 4));
            CHECK(rt_cuda_flash_decode(&a, 0, n, dpart, max_splits, dout, dlse, 0) == LOUPE_OK);
            dev_to(o2, dout, on * 4);
            dev_to(l2, dlse, n_head * 4);
            CHECK_MSG(!memcmp(o1, o2, on * 4) && !memcmp(l1, l2, n_head * 4),
                      "flash_decode_dev over %u of %u keys (group %u, hd %u, %s) differs from "
                      "rt_cuda_flash_decode",
                      n, n_ctx, group, hd, bf ? "bf16" : "f32");
            CHECK(check_heads("flash_decode_dev", &c, q, n_head, scale, 0, n, o1, l1) == 0);
        }
        cuda_test_cache_free(&c);
        cudaFree(dq);
        cudaFree(dpart);
        cudaFree(dout);
        cudaFree(dlse);
        cudaFree(dn);
        free(q);
        free(o1);
        free(o2);
        free(l1);
        free(l2);
    }
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } ops[] = {{"matvec", test_matvec},
               {"matvec_fused", test_matvec_fused},
               {"flash_decode", test_flash_decode},
               {"flash_decode_dev", test_flash_decode_dev}};
    if (argc != 2) {
        fprintf(stderr, "usage: test_cuda_decode OP\n");
        return 2;
    }
    size_t i = 0, n = sizeof ops / sizeof ops[0];
    while (i < n && strcmp(ops[i].name, argv[1]))
        i++;
    if (i == n) {
        fprintf(stderr, "test_cuda_decode: unknown op '%s'\n", argv[1]);
        return 2;
    }
    cuda_test_require_device();
    test_rng_seed(&rng, test_seed());
    ops[i].fn();
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaGetLastError());
    char name[64];
    snprintf(name, sizeof name, "test_cuda_decode %s", argv[1]);
    return test_summary(name);
}
