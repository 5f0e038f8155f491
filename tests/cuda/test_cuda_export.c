/*
 * Reading the CUDA engine's state back: rt_cuda_set_q_capture and rt_cuda_kv_read against the
 * CPU backend. Exits 77 when no CUDA device is usable.
 *
 * test_cuda_export kernel
 *   rt_cuda_kv_to_f32 (kv_read.cu's conversion op) against the plain C conversion, bf16 and fp32
 *   sources, a strided head pitch, a run long enough for the grid-stride loop: exact, and the
 *   output past n_head · len (poisoned) untouched.
 *
 * test_cuda_export MODEL.gguf f32|bf16 [N]
 *   On a model written by `loupe mkmodel`, with random ids (seed printed), an engine of n_batch 5
 *   and n_seg 13 (chunk and segment boundaries fall mid-sequence), relative error = max|gpu − cpu|
 *   / max|cpu| per row, tolerance 1e-4 with RT_CUDA_F32 and 2e-2 with RT_CUDA_BF16:
 *   1. capture with stride 1 over a prefill of N: every layer's every position delivered exactly
 *      once, with the callback's arguments inside the contract (layer, stride, pos0 % stride,
 *      1 ≤ n ≤ n_batch), rows vs the CPU's (rt_ctx_set_capture, one CPU prefill per layer);
 *   2. kv_read of several ranges of every layer, in the CPU's layout (ld = n_ctx, off = p0) and
 *      packed with margins (ld = n + 3, off = 2; the margins, poisoned, must stay untouched),
 *      keys only (v_out NULL), vs rt_ctx_keys / rt_ctx_values;
 *   3. errors: a layer the model lacks, a range past n_past or reversed (LOUPE_ERR_RANGE), rows
 *      that do not fit ld, stride 0, kv_read from inside the callback (LOUPE_ERR_INVALID);
 *   4. set(NULL): a further prefill does not call the callback;
 *   5. after a reset, stride 3 over a prefill given in two calls (17 + N − 17): only p % 3 == 0
 *      delivered, once each, rows vs the CPU's;
 *   5b. stride 4 plus every position from N − 7 on (rt_cuda_set_q_capture_from): exactly those
 *      delivered, once each (the tail in calls of stride 1), rows vs the CPU's;
 *   6. decode after that captured prefill (capture still on): the callback is not called, every
 *      step's logits equal the CPU's (2e-3 fp32 / 2e-2 bf16, as test_cuda_forward), and kv_read
 *      of all N + D positions (decode-written rows included) equals the CPU's cache.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_test.h"
#include "runtime/cuda/kv_read.cuh"
#include "runtime/runtime.h"

/* ==== The conversion op ==================================================================== */

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_bf16_trunc(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}

static void kernel_case(test_rng *rng, rt_cuda_dtype type, uint32_t H, size_t len, size_t pitch,
                        size_t off)
{
    const size_t esz = type == RT_CUDA_BF16 ? 2 : 4, n_src = H * pitch + off, tail = 64;
    uint8_t *src = malloc(n_src * esz);
    float *ref = malloc(H * len * sizeof(float));
    float *got = malloc((H * len + tail) * sizeof(float));
    for (size_t i = 0; i < n_src; i++) {
        float v = test_rng_normal(rng);
        if (type == RT_CUDA_BF16) {
            uint16_t b = f32_to_bf16_trunc(v);
            memcpy(src + 2 * i, &b, 2);
        } else {
            memcpy(src + 4 * i, &v, 4);
        }
    }
    for (uint32_t h = 0; h < H; h++)
        for (size_t j = 0; j < len; j++) {
            const size_t s = off + h * pitch + j;
            uint16_t b;
            if (type == RT_CUDA_BF16) {
                memcpy(&b, src + 2 * s, 2);
                ref[h * len + j] = bf16_to_f32(b);
            } else {
                memcpy(&ref[h * len + j], src + 4 * s, 4);
            }
        }
    uint8_t *d_src = dev_from(src, n_src * esz);
    float *d_out = dev_from(NULL, (H * len + tail) * sizeof(float));
    CHECK(rt_cuda_kv_to_f32(d_src + off * esz, pitch, H, len, type, d_out, 0) == LOUPE_OK);
    CUDA_OK(cudaGetLastError());
    dev_to(got, d_out, (H * len + tail) * sizeof(float));
    size_t bad = 0;
    for (size_t i = 0; i < H * len; i++)
        bad += memcmp(&got[i], &ref[i], sizeof(float)) != 0;
    size_t touched = 0;
    for (size_t i = H * len; i < H * len + tail; i++) {
        uint32_t u;
        memcpy(&u, &got[i], sizeof u);
        touched += u != 0xffffffffu;
    }
    printf("kv_to_f32 %s, %u heads x %zu (pitch %zu): %zu wrong, %zu written past the end\n",
           type == RT_CUDA_BF16 ? "bf16" : "f32", H, len, pitch, bad, touched);
    CHECK(bad == 0);
    CHECK(touched == 0);
    CUDA_OK(cudaFree(d_src));
    CUDA_OK(cudaFree(d_out));
    free(src);
    free(ref);
    free(got);
}

static int run_kernel(void)
{
    cuda_test_require_device();
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    kernel_case(&rng, RT_CUDA_BF16, 3, 777, 1000, 5);
    kernel_case(&rng, RT_CUDA_F32, 3, 777, 1000, 5);
    kernel_case(&rng, RT_CUDA_BF16, 2, 300001, 300017, 3); /* > 1024 blocks of 256 */
    kernel_case(&rng, RT_CUDA_BF16, 1, 1, 1, 0);
    return test_summary("test_cuda_export kernel");
}

/* ==== The engine against the CPU backend =================================================== */

/* What the capture callback saw. */
typedef struct {
    size_t nq;                 /* n_head · head_dim */
    uint32_t n_layer, n_ctx, n_batch, stride;
    uint32_t from;             /* rt_cuda_set_q_capture_from: also every position from here */
    float *q;                  /* (n_layer, n_ctx, nq), NaN where nothing was delivered */
    int *count;                /* (n_layer, n_ctx) deliveries per row */
    long calls;
    long bad;                  /* calls whose arguments break the contract */
    rt_cuda_engine *probe;     /* when set, the first call tries kv_read on it (must be refused) */
    loupe_status probe_st;
} collector;

static void collector_init(collector *c, size_t nq, uint32_t n_layer, uint32_t n_ctx,
                           uint32_t n_batch, uint32_t stride)
{
    c->nq = nq;
    c->n_layer = n_layer;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->stride = stride;
    c->from = UINT32_MAX;
    c->q = malloc((size_t)n_layer * n_ctx * nq * sizeof(float));
    c->count = calloc((size_t)n_layer * n_ctx, sizeof(int));
    for (size_t i = 0; i < (size_t)n_layer * n_ctx * nq; i++)
        c->q[i] = NAN;
    c->calls = c->bad = 0;
    c->probe = NULL;
    c->probe_st = LOUPE_OK;
}

static void collector_free(collector *c)
{
    free(c->q);
    free(c->count);
}

static void collect(void *user, uint32_t layer, uint32_t pos0, uint32_t stride, size_t n,
                    const float *q)
{
    collector *c = user;
    if (c->probe && c->calls == 0) {
        float kv[1];
        loupe_err err = {0};
        c->probe_st = rt_cuda_kv_read(c->probe, 0, 0, 0, kv, kv, 1, 0, &err);
    }
    c->calls++;
    const bool tail = stride == 1 && pos0 >= c->from; /* the rows from `from` on */
    if (layer >= c->n_layer || (stride != c->stride && !tail) || pos0 % stride || n == 0 ||
        n > c->n_batch || pos0 + (n - 1) * stride >= c->n_ctx) {
        if (c->bad++ < 5)
            fprintf(stderr, "capture call outside the contract: layer %u pos0 %u stride %u n %zu\n",
                    layer, pos0, stride, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const size_t p = pos0 + i * stride;
        memcpy(c->q + ((size_t)layer * c->n_ctx + p) * c->nq, q + i * c->nq,
               c->nq * sizeof(float));
        c->count[(size_t)layer * c->n_ctx + p]++;
    }
}

/* Captured rows of positions [0, T) against the CPU's (cpu_q: (n_layer, n_ctx, nq)): each row
 * with p % stride == 0 or p >= from delivered once and within tol, every other row never. */
static void check_capture(const collector *c, const float *cpu_q, uint32_t T, double tol,
                          const char *what)
{
    long miscount = 0;
    for (uint32_t il = 0; il < c->n_layer; il++) {
        double worst = 0;
        for (uint32_t p = 0; p < T; p++) {
            const size_t r = (size_t)il * c->n_ctx + p;
            const int want = p % c->stride == 0 || p >= c->from;
            if (c->count[r] != want) {
                if (miscount++ < 5)
                    fprintf(stderr, "%s: layer %u position %u delivered %d times, expected %d\n",
                            what, il, p, c->count[r], want);
                continue;
            }
            if (want)
                worst = fmax(worst, test_rel_diff(c->q + r * c->nq, cpu_q + r * c->nq, c->nq));
        }
        printf("%s: layer %u queries, worst row error %.3g (tolerance %.0e)\n", what, il, worst,
               tol);
        CHECK(worst <= tol);
    }
    printf("%s: %ld callback calls, %ld outside the contract, %ld rows miscounted\n", what,
           c->calls, c->bad, miscount);
    CHECK(c->bad == 0);
    CHECK(miscount == 0);
}

/* kv_read of [p0, p1) of every layer into (ld, off) vs the CPU cache; margins must stay poisoned.
 * With keys_only, v_out is NULL. Returns the worst row error. */
static double check_kv(rt_cuda_engine *e, const rt_ctx *c, const rt_hparams *hp, uint32_t p0,
                       uint32_t p1, size_t ld, size_t off, bool keys_only)
{
    const size_t hd = hp->head_dim, H = hp->n_head_kv, n = p1 - p0, total = H * ld * hd;
    float *k = malloc(total * sizeof(float)), *v = malloc(total * sizeof(float));
    double worst = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        memset(k, 0xff, total * sizeof(float));
        memset(v, 0xff, total * sizeof(float));
        loupe_err err = {0};
        loupe_status st = rt_cuda_kv_read(e, il, p0, p1, k, keys_only ? NULL : v, ld, off, &err);
        CHECK_MSG(st == LOUPE_OK, "kv_read layer %u [%u, %u): %s", il, p0, p1,
                  loupe_err_message(&err));
        if (st)
            worst = INFINITY;
        size_t margin_bad = 0;
        for (size_t h = 0; h < H; h++) {
            const float *ck = rt_ctx_keys(c, il, (uint32_t)h);
            const float *cv = rt_ctx_values(c, il, (uint32_t)h);
            for (size_t r = 0; r < ld; r++) {
                const float *gk = k + (h * ld + r) * hd, *gv = v + (h * ld + r) * hd;
                if (r >= off && r < off + n) {
                    const size_t p = p0 + r - off;
                    worst = fmax(worst, test_rel_diff(gk, ck + p * hd, hd));
                    if (!keys_only)
                        worst = fmax(worst, test_rel_diff(gv, cv + p * hd, hd));
                    continue;
                }
                for (size_t d = 0; d < hd; d++) {
                    uint32_t uk, uv;
                    memcpy(&uk, gk + d, 4);
                    memcpy(&uv, gv + d, 4);
                    margin_bad += uk != 0xffffffffu || uv != 0xffffffffu;
                }
            }
        }
        if (keys_only)
            for (size_t i = 0; i < total; i++) {
                uint32_t u;
                memcpy(&u, v + i, 4);
                margin_bad += u != 0xffffffffu;
            }
        CHECK_MSG(margin_bad == 0, "kv_read layer %u [%u, %u) ld %zu off %zu wrote %zu floats "
                  "outside its rows", il, p0, p1, ld, off, margin_bad);
    }
    free(k);
    free(v);
    return worst;
}

static int run_model(const rt_model *m, bool f32, size_t T)
{
    const double tol = f32 ? 1e-4 : 2e-2, logit_tol = f32 ? 2e-3 : 2e-2;
    enum { X = 4, D = 6, SPLIT = 17 };
    const rt_hparams *hp = rt_model_hparams(m);
    const size_t V = hp->n_vocab, nq = (size_t)hp->n_head * hp->head_dim;
    const uint32_t NCTX = (uint32_t)(T + X + D), L = hp->n_layer;
    if (T <= SPLIT) {
        fprintf(stderr, "N must be more than %d\n", SPLIT);
        return 2;
    }
    cuda_test_require_device();
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    int32_t *ids = malloc((T + X + D) * sizeof *ids);
    for (size_t i = 0; i < T + X + D; i++)
        ids[i] = (int32_t)(test_rng_u64(&rng) % V);
    const int32_t *dec = ids + T + X;

    /* CPU reference: every layer's queries of the N-token prefill, one prefill per layer. */
    loupe_err err = {0};
    rt_ctx *c = NULL;
    rt_ctx_params cp;
    rt_ctx_params_init(&cp);
    cp.n_ctx = NCTX;
    float *cpu_q = malloc((size_t)L * NCTX * nq * sizeof(float));
    if (rt_ctx_create(m, &cp, &c, &err)) {
        fprintf(stderr, "%s\n", loupe_err_message(&err));
        return 1;
    }
    for (uint32_t il = 0; il < L; il++) {
        rt_ctx_reset(c);
        if (rt_ctx_set_capture(c, il, cpu_q + (size_t)il * NCTX * nq, &err) ||
            rt_ctx_prefill(c, ids, T, NULL, &err)) {
            fprintf(stderr, "%s\n", loupe_err_message(&err));
            return 1;
        }
    }
    rt_ctx_set_capture(c, 0, NULL, &err);

    rt_cuda_params p;
    rt_cuda_params_init(&p);
    p.n_ctx = NCTX;
    p.n_batch = 5;
    p.n_seg = 13;
    p.precision = f32 ? RT_CUDA_F32 : RT_CUDA_BF16;
    rt_cuda_engine *e = NULL;
    if (rt_cuda_engine_create(m, &p, &e, &err)) {
        fprintf(stderr, "%s\n", loupe_err_message(&err));
        return 1;
    }
    const uint32_t NB = rt_cuda_engine_plan(e)->n_batch;

    /* 1. stride 1 */
    collector c1;
    collector_init(&c1, nq, L, NCTX, NB, 1);
    c1.probe = e;
    CHECK(rt_cuda_set_q_capture(e, collect, &c1, 1, &err) == LOUPE_OK);
    CHECK(rt_cuda_prefill(e, ids, T, NULL, &err) == LOUPE_OK);
    check_capture(&c1, cpu_q, (uint32_t)T, tol, "stride 1");
    CHECK(c1.probe_st == LOUPE_ERR_INVALID); /* kv_read from inside the callback is refused */

    /* 2. kv_read */
    const uint32_t t = (uint32_t)T;
    const uint32_t ranges[][2] = {{0, t}, {3, SPLIT}, {t - 1, t}, {5, 5}, {1, t - 2}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        const uint32_t p0 = ranges[r][0], p1 = ranges[r][1];
        const double a = check_kv(e, c, hp, p0, p1, NCTX, p0, false);
        const double b = check_kv(e, c, hp, p0, p1, p1 - p0 + 3, 2, false);
        printf("kv_read [%u, %u): worst row error %.3g (CPU layout), %.3g (packed)\n", p0, p1, a,
               b);
        CHECK(a <= tol);
        CHECK(b <= tol);
    }
    const double ko = check_kv(e, c, hp, 2, 9, 10, 1, true);
    printf("kv_read keys only: worst row error %.3g\n", ko);
    CHECK(ko <= tol);

    /* 3. errors */
    float *scratch = malloc((size_t)hp->n_head_kv * NCTX * hp->head_dim * sizeof(float));
    CHECK(rt_cuda_kv_read(e, L, 0, 1, scratch, scratch, NCTX, 0, &err) == LOUPE_ERR_RANGE);
    printf("bad layer: %s\n", loupe_err_message(&err));
    CHECK(rt_cuda_kv_read(e, 0, 0, t + 1, scratch, NULL, NCTX, 0, &err) == LOUPE_ERR_RANGE);
    printf("past n_past: %s\n", loupe_err_message(&err));
    CHECK(rt_cuda_kv_read(e, 0, 5, 4, scratch, NULL, NCTX, 0, &err) == LOUPE_ERR_RANGE);
    CHECK(rt_cuda_kv_read(e, 0, 0, 8, scratch, NULL, 9, 2, &err) == LOUPE_ERR_INVALID);
    printf("too narrow: %s\n", loupe_err_message(&err));
    CHECK(rt_cuda_set_q_capture(e, collect, &c1, 0, &err) == LOUPE_ERR_INVALID);
    printf("stride 0: %s\n", loupe_err_message(&err));
    free(scratch);

    /* 4. off */
    CHECK(rt_cuda_set_q_capture(e, NULL, NULL, 0, &err) == LOUPE_OK);
    const long calls1 = c1.calls;
    CHECK(rt_cuda_prefill(e, ids + T, X, NULL, &err) == LOUPE_OK);
    printf("capture off: %ld callback calls during a %d-token prefill\n", c1.calls - calls1, X);
    CHECK(c1.calls == calls1);
    collector_free(&c1);

    /* 5. stride 3 over two prefill calls */
    rt_cuda_reset(e);
    collector c3;
    collector_init(&c3, nq, L, NCTX, NB, 3);
    CHECK(rt_cuda_set_q_capture(e, collect, &c3, 3, &err) == LOUPE_OK);
    CHECK(rt_cuda_prefill(e, ids, SPLIT, NULL, &err) == LOUPE_OK);
    CHECK(rt_cuda_prefill(e, ids + SPLIT, T - SPLIT, NULL, &err) == LOUPE_OK);
    check_capture(&c3, cpu_q, t, tol, "stride 3");

    /* 5b. stride 4 and every position from T - 7 on (retrieval attention's sampled build
     * queries and its static tail), one prefill call */
    rt_cuda_reset(e);
    collector c4;
    collector_init(&c4, nq, L, NCTX, NB, 4);
    c4.from = t - 7;
    CHECK(rt_cuda_set_q_capture(e, collect, &c4, 4, &err) == LOUPE_OK);
    rt_cuda_set_q_capture_from(e, c4.from);
    CHECK(rt_cuda_prefill(e, ids, T, NULL, &err) == LOUPE_OK);
    check_capture(&c4, cpu_q, t, tol, "stride 4, all from T - 7");
    collector_free(&c4);
    /* back to stride 3 (set_q_capture resets `from`) and the state of 5 for 6 */
    rt_cuda_reset(e);
    CHECK(rt_cuda_set_q_capture(e, collect, &c3, 3, &err) == LOUPE_OK);
    CHECK(rt_cuda_prefill(e, ids, T, NULL, &err) == LOUPE_OK);

    /* 6. decode after the captured prefill (c holds the same N tokens from the last layer's
     * reference prefill) */
    const long calls3 = c3.calls;
    double worst_dec = 0;
    for (size_t i = 0; i < D; i++) {
        if (rt_ctx_decode(c, dec[i], &err) || rt_cuda_decode(e, dec[i], &err)) {
            fprintf(stderr, "%s\n", loupe_err_message(&err));
            test_failures++;
            break;
        }
        const float *lg = rt_cuda_logits(e, &err);
        worst_dec = fmax(worst_dec, lg ? test_rel_diff(lg, rt_ctx_logits(c), V) : INFINITY);
    }
    printf("decode of %d tokens after a captured prefill: worst logits error %.3g (tolerance "
           "%.0e), %ld callback calls\n", D, worst_dec, logit_tol, c3.calls - calls3);
    CHECK(worst_dec <= logit_tol);
    CHECK(c3.calls == calls3);
    const double all = check_kv(e, c, hp, 0, t + D, NCTX, 0, false);
    printf("kv_read [0, %u) after decode: worst row error %.3g\n", t + D, all);
    CHECK(all <= tol);
    collector_free(&c3);

    rt_cuda_engine_destroy(e);
    rt_ctx_destroy(c);
    free(cpu_q);
    free(ids);
    return test_summary(f32 ? "test_cuda_export f32" : "test_cuda_export bf16");
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "kernel"))
        return run_kernel();
    if (argc < 3 || (strcmp(argv[2], "f32") && strcmp(argv[2], "bf16"))) {
        fprintf(stderr, "usage: test_cuda_export kernel | MODEL.gguf f32|bf16 [N]\n");
        return 2;
    }
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    if (rt_gguf_open(argv[1], &g, &err) || rt_model_load(g, &m, &err)) {
        fprintf(stderr, "%s\n", loupe_err_message(&err));
        return 1;
    }
    const size_t T = argc > 3 ? strtoul(argv[3], NULL, 10) : 40;
    const int rc = run_model(m, !strcmp(argv[2], "f32"), T);
    rt_model_destroy(m);
    rt_gguf_close(g);
    return rc;
}
