/*
 * bench_cuda MODEL.gguf N_PROMPT[,N_PROMPT...] N_DECODE [bf16|f32] [HBM_GBPS]: a benchmark
 * program (not a test). For each prompt length, in the order given, on one engine sized for the
 * longest: forgets everything, prefills N_PROMPT random tokens (timed), then decodes N_DECODE
 * tokens greedily (argmax on the GPU) and reports the median decode step. A small prefill and one
 * decode step run first as a warm-up (module loading, cuBLAS heuristics, first touch).
 *
 * The floor is the bytes one decode step must stream from GPU memory — every weight matrix once
 * plus the K and V of every cached token, at the middle of the decode run — over the HBM
 * bandwidth (default 2970 GB/s, the H100 copy rate measured in DESIGN.md). The program also
 * measures the device-to-device copy rate itself (2 × bytes copied / time, over 1 GiB buffers)
 * and prints it, so a run shows both.
 *
 * Memory: `gpu_gib` is the engine's one allocation (its plan); `dev_used_gib` is the most device
 * memory in use (total − free, CUDA context and cuBLAS included) seen after creating the engine
 * and after each prefill and decode run — the process's peak, as nothing else frees memory.
 *
 * Output: a CSV header, then one row per prompt length as soon as it is measured (a readable
 * line for it goes to stderr).
 *
 * bench_cuda --kernels [HBM_GBPS]: the decode kernels alone, on Llama-3-8B's shapes, so one run
 * shows where a decode step's time goes. Each measurement captures a CUDA graph of launches
 * (as decode replays them) over enough copies of its inputs that L2 (50 MB) cannot serve them,
 * replays it 7 times and takes the median; GB/s counts the bytes the kernel must read (weights,
 * or K and V) over that time, "%copy" compares with the device-to-device copy rate measured at
 * the start. Rows: rt_cuda_matvec for every stored type on 4096x4096 (wq, wo), 1024x4096 (wk,
 * wv), 14336x4096 (gate, up), 4096x14336 (down), 128256x4096 (output); the fused launchers, with
 * the RMSNorm in as decode runs them, on a layer's q+k+v (6144 rows) and gate+up with SwiGLU
 * (2 x 14336 rows); flash-decoding (the
 * decode-graph form, rt_cuda_flash_decode_dev) over 4K, 32K and 128K keys of 8 KV heads, 32
 * query heads, head dim 128, bf16 and fp32 cache. Last, a per-token estimate for the 8B shape:
 * 32 × (qkv + wo + gate/up + down + attention) + output, next to the floor (bytes / HBM_GBPS,
 * default 2970) — the small per-layer launches (rmsnorm, rope, K/V store) are not in it.
 */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/test_util.h"
#include "runtime/cuda/flash_decode.cuh"
#include "runtime/cuda/matvec.cuh"
#include "runtime/cuda/repack.cuh"
#include "runtime/runtime.h"

enum { MAX_LENGTHS = 8 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Device memory in use now (bytes), 0 if the driver will not say. */
static double dev_used(void)
{
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
        return 0;
    return (double)(total_b - free_b);
}

/* Device-to-device copy rate in GB/s (read + write counted), 0 when it cannot be measured. */
static double measure_copy_gbs(void)
{
    const size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms = 0;
    double gbs = 0;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess ||
        cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
        goto done;
    cudaMemset(a, 1, bytes);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice); /* warm-up */
    cudaEventRecord(e0, 0);
    for (int i = 0; i < 10; i++)
        cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, 0);
    cudaEventRecord(e1, 0);
    if (cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess &&
        ms > 0)
        gbs = 2.0 * 10 * (double)bytes / (ms * 1e-3) / 1e9;
done:
    cudaGetLastError(); /* a failure here only means "not measured" */
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return gbs;
}

/* ==== --kernels ============================================================================= */

enum { KB_REPS = 7, KB_MAX_LAUNCHES = 64 };
static const double KB_ROTATE_BYTES = 256e6; /* inputs per graph: > 5 × the H100's L2 */

/* One graph-captured launch sequence: launch(ctx, i, stream) for i < n. */
typedef loupe_status (*kb_launch_fn)(void *ctx, int i, cudaStream_t s);

/* Microseconds per launch: the median of KB_REPS replays of a graph of n launches (after one
 * eager pass and one warm replay); -1 when anything fails. */
static double kb_time(kb_launch_fn f, void *ctx, int n, cudaStream_t s)
{
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double reps[KB_REPS], us = -1;
    for (int i = 0; i < n; i++)
        if (f(ctx, i, s))
            goto done;
    if (cudaStreamSynchronize(s) != cudaSuccess ||
        cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        goto done;
    for (int i = 0; i < n; i++)
        f(ctx, i, s);
    if (cudaStreamEndCapture(s, &g) != cudaSuccess ||
        cudaGraphInstantiateWithFlags(&x, g, 0) != cudaSuccess ||
        cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess ||
        cudaGraphLaunch(x, s) != cudaSuccess)
        goto done;
    for (int r = 0; r < KB_REPS; r++) {
        float ms = 0;
        if (cudaEventRecord(e0, s) != cudaSuccess || cudaGraphLaunch(x, s) != cudaSuccess ||
            cudaEventRecord(e1, s) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
            cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
            goto done;
        reps[r] = 1e3 * ms / n;
    }
    qsort(reps, KB_REPS, sizeof reps[0], cmp_double);
    us = reps[KB_REPS / 2];
done:
    if (us < 0)
        fprintf(stderr, "bench_cuda: timing failed: %s\n", cudaGetErrorString(cudaGetLastError()));
    if (x)
        cudaGraphExecDestroy(x);
    if (g)
        cudaGraphDestroy(g);
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    return us;
}

/* Copies: how many copies of `bytes` to rotate through (at least 2, at most KB_MAX_LAUNCHES). */
static int kb_copies(double bytes)
{
    double n = ceil(KB_ROTATE_BYTES / bytes);
    return n < 2 ? 2 : n > KB_MAX_LAUNCHES ? KB_MAX_LAUNCHES : (int)n;
}

/* Fills dst (n bytes, device) with `pat` (m bytes, host) repeated, by doubling device copies. */
static int kb_fill(void *dst, size_t n, const void *pat, size_t m)
{
    size_t have = m < n ? m : n;
    if (cudaMemcpy(dst, pat, have, cudaMemcpyHostToDevice) != cudaSuccess)
        return -1;
    while (have < n) {
        size_t c = have < n - have ? have : n - have;
        if (cudaMemcpy((char *)dst + have, dst, c, cudaMemcpyDeviceToDevice) != cudaSuccess)
            return -1;
        have += c;
    }
    return 0;
}

enum { KB_PLAIN, KB_QKV, KB_SWIGLU };

typedef struct {
    rt_type t;
    int kind;
    uint32_t n_out, n_in; /* per matrix (KB_QKV: q's; k and v have n_out / 4) */
    size_t pitch, stride; /* stride: bytes of one copy of all the kind's matrices */
    uint8_t *w;
    float *x, *y;
    float *nw; /* RMSNorm weight: the fused kinds run with the norm, as decode does */
} kb_mv;

static loupe_status kb_mv_launch(void *ctx, int i, cudaStream_t s)
{
    const kb_mv *c = ctx;
    const uint8_t *w = c->w + (size_t)i * c->stride;
    if (c->kind == KB_QKV) {
        const uint32_t nk = c->n_out / 4;
        rt_cuda_mv_out o[3] = {{w, c->y, c->n_out},
                               {w + (size_t)c->n_out * c->pitch, c->y + c->n_out, nk},
                               {w + (size_t)(c->n_out + nk) * c->pitch, c->y + c->n_out + nk, nk}};
        return rt_cuda_matvec_multi(c->t, c->pitch, c->n_in, o, 3, c->x, c->nw, 1e-5f, s);
    }
    if (c->kind == KB_SWIGLU)
        return rt_cuda_matvec_swiglu(c->t, w, w + (size_t)c->n_out * c->pitch, c->pitch,
                                     c->n_out, c->n_in, c->x, c->nw, 1e-5f, c->y, s);
    return rt_cuda_matvec(c->t, w, c->pitch, c->n_out, c->n_in, c->x, c->y, false, s);
}

/* µs per launch of one mat-vec kind; *bytes gets the weight bytes it reads. -1 on failure. */
static double kb_matvec(rt_type t, int kind, uint32_t n_out, uint32_t n_in, test_rng *rng,
                        cudaStream_t s, double *bytes)
{
    const uint32_t rows = kind == KB_QKV ? n_out + n_out / 2 : kind == KB_SWIGLU ? 2 * n_out
                                                                                 : n_out;
    kb_mv c = {t, kind, n_out, n_in, 0, 0, NULL, NULL, NULL, NULL};
    c.pitch = (rt_type_row_bytes(t, n_in) + 15) / 16 * 16;
    c.stride = (size_t)rows * c.pitch;
    *bytes = (double)c.stride;
    const int n = kb_copies(*bytes);
    const uint32_t pat_rows = rows < 256 ? rows : 256; /* distinct random rows, repeated */
    double us = -1;
    unsigned char *pat = calloc(pat_rows, c.pitch), *qrow = malloc(c.pitch);
    float *row = malloc(n_in * sizeof *row), *x = malloc(n_in * sizeof *x);
    if (!pat || !qrow || !row || !x)
        goto done;
    for (uint32_t r = 0; r < pat_rows; r++) { /* stored bytes, then the GPU layout (repack.cuh) */
        for (uint32_t i = 0; i < n_in; i++)
            row[i] = 0.05f * test_rng_normal(rng);
        rt_quantize(t, row, qrow, n_in);
        rt_cuda_repack_rows(t, n_in, qrow, c.pitch, pat + (size_t)r * c.pitch, c.pitch, 1);
    }
    for (uint32_t i = 0; i < n_in; i++)
        x[i] = test_rng_normal(rng);
    if (cudaMalloc((void **)&c.w, c.stride * n) != cudaSuccess ||
        cudaMalloc((void **)&c.x, n_in * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&c.y, (size_t)rows * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&c.nw, n_in * sizeof(float)) != cudaSuccess ||
        kb_fill(c.w, c.stride * n, pat, (size_t)pat_rows * c.pitch) ||
        cudaMemcpy(c.x, x, n_in * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(c.nw, x, n_in * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
        goto done;
    if (kind == KB_PLAIN) {
        cudaFree(c.nw);
        c.nw = NULL;
    }
    us = kb_time(kb_mv_launch, &c, n, s);
done:
    cudaGetLastError();
    cudaFree(c.w);
    cudaFree(c.x);
    cudaFree(c.y);
    cudaFree(c.nw);
    free(pat);
    free(qrow);
    free(row);
    free(x);
    return us;
}

typedef struct {
    rt_cuda_attn_desc a;
    size_t layer_elems; /* K (or V) elements of one layer copy */
    size_t esz;
    const uint32_t *n_keys;
    float *part, *out, *lse;
} kb_fd;

static loupe_status kb_fd_launch(void *ctx, int i, cudaStream_t s)
{
    const kb_fd *c = ctx;
    rt_cuda_attn_desc a = c->a;
    a.k = (const char *)a.k + (size_t)i * c->layer_elems * c->esz;
    a.v = (const char *)a.v + (size_t)i * c->layer_elems * c->esz;
    return rt_cuda_flash_decode_dev(&a, c->n_keys, c->part, 256, c->out, c->lse, s);
}

/* µs per flash-decoding call over n_ctx keys (8 KV heads, 32 query heads, head dim 128);
 * *bytes gets the K and V bytes it reads. -1 on failure. */
static double kb_flash_decode(int bf, uint32_t n_ctx, test_rng *rng, cudaStream_t s,
                              double *bytes)
{
    const uint32_t n_kv = 8, n_head = 32, hd = 128;
    kb_fd c;
    memset(&c, 0, sizeof c);
    c.esz = bf ? 2 : 4;
    c.layer_elems = (size_t)n_kv * n_ctx * hd;
    *bytes = 2.0 * (double)c.layer_elems * (double)c.esz;
    const int n = kb_copies(*bytes);
    const size_t pat_n = (size_t)1 << 20;
    double us = -1;
    void *k = NULL, *v = NULL;
    uint32_t *dn = NULL;
    unsigned char *pat = malloc(pat_n * c.esz);
    float *q = malloc((size_t)n_head * hd * sizeof *q), *dq = NULL;
    if (!pat || !q)
        goto done;
    for (size_t i = 0; i < pat_n; i++) {
        const float f = test_rng_normal(rng);
        if (bf) {
            const uint16_t h = rt_f32_to_bf16(f);
            memcpy(pat + 2 * i, &h, 2);
        } else {
            memcpy(pat + 4 * i, &f, 4);
        }
    }
    for (size_t i = 0; i < (size_t)n_head * hd; i++)
        q[i] = test_rng_normal(rng);
    const size_t all = c.layer_elems * c.esz * n;
    if (cudaMalloc(&k, all) != cudaSuccess || cudaMalloc(&v, all) != cudaSuccess ||
        cudaMalloc((void **)&dq, (size_t)n_head * hd * sizeof *q) != cudaSuccess ||
        cudaMalloc((void **)&dn, sizeof *dn) != cudaSuccess ||
        cudaMalloc((void **)&c.part,
                   rt_cuda_flash_decode_part_floats(n_head, hd, 256) * sizeof(float)) !=
            cudaSuccess ||
        cudaMalloc((void **)&c.out, (size_t)n_head * hd * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&c.lse, n_head * sizeof(float)) != cudaSuccess ||
        kb_fill(k, all, pat, pat_n * c.esz) || kb_fill(v, all, pat, pat_n * c.esz) ||
        cudaMemcpy(dq, q, (size_t)n_head * hd * sizeof *q, cudaMemcpyHostToDevice) !=
            cudaSuccess ||
        cudaMemcpy(dn, &n_ctx, sizeof n_ctx, cudaMemcpyHostToDevice) != cudaSuccess)
        goto done;
    c.a = (rt_cuda_attn_desc){dq, (size_t)n_head * hd, k, v, bf ? RT_CUDA_BF16 : RT_CUDA_F32,
                              n_ctx, hd, n_head, n_kv, 1.0f / sqrtf((float)hd)};
    c.n_keys = dn;
    us = kb_time(kb_fd_launch, &c, n, s);
done:
    cudaGetLastError();
    cudaFree(k);
    cudaFree(v);
    cudaFree(dq);
    cudaFree(dn);
    cudaFree(c.part);
    cudaFree(c.out);
    cudaFree(c.lse);
    free(pat);
    free(q);
    return us;
}

static void kb_row(const char *what, const char *type, double bytes, double us, double copy_gbs)
{
    const double gbs = us > 0 ? bytes / (us * 1e3) : 0;
    if (us > 0)
        printf("%-20s %-5s %9.1f %9.2f %8.0f %6.1f\n", what, type, bytes / 1e6, us, gbs,
               copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0);
    else
        printf("%-20s %-5s %9.1f   FAILED\n", what, type, bytes / 1e6);
    fflush(stdout);
}

static int kernels_main(int argc, char **argv)
{
    const double hbm = argc > 2 ? strtod(argv[2], NULL) * 1e9 : 2970e9;
    if (!(hbm > 0)) {
        fprintf(stderr, "usage: bench_cuda --kernels [HBM_GBPS]\n");
        return 2;
    }
    if (!rt_cuda_available()) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    cudaStream_t s = NULL;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
        fprintf(stderr, "bench_cuda: cannot create a stream\n");
        return 1;
    }
    test_rng rng;
    test_rng_seed(&rng, 42);
    const double copy_gbs = measure_copy_gbs();
    printf("device copy %.0f GB/s (read + write); floors below use %.0f GB/s\n", copy_gbs,
           hbm / 1e9);
    printf("%-20s %-5s %9s %9s %8s %6s\n", "kernel", "type", "MB", "us", "GB/s", "%copy");
    static const struct {
        const char *name;
        int kind;
        uint32_t n_out, n_in;
    } shapes[] = {{"mv 4096x4096", KB_PLAIN, 4096, 4096},
                  {"mv 1024x4096", KB_PLAIN, 1024, 4096},
                  {"mv 14336x4096", KB_PLAIN, 14336, 4096},
                  {"mv 4096x14336", KB_PLAIN, 4096, 14336},
                  {"mv 128256x4096", KB_PLAIN, 128256, 4096},
                  {"qkv 6144x4096", KB_QKV, 4096, 4096},
                  {"gate+up 2x14336", KB_SWIGLU, 14336, 4096}};
    enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };
    static const rt_type types[] = {RT_TYPE_BF16, RT_TYPE_Q8_0, RT_TYPE_F16,
                                    RT_TYPE_Q4_K, RT_TYPE_Q6_K, RT_TYPE_F32};
    enum { N_TYPES = sizeof types / sizeof types[0] };
    double mv_us[N_TYPES][N_SHAPES], mv_bytes[N_TYPES][N_SHAPES];
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int si = 0; si < N_SHAPES; si++) {
            mv_us[ti][si] = kb_matvec(types[ti], shapes[si].kind, shapes[si].n_out,
                                      shapes[si].n_in, &rng, s, &mv_bytes[ti][si]);
            kb_row(shapes[si].name, rt_type_name(types[ti]), mv_bytes[ti][si], mv_us[ti][si],
                   copy_gbs);
        }
    static const uint32_t ctxs[] = {4096, 32768, 131072};
    enum { N_CTX = sizeof ctxs / sizeof ctxs[0] };
    double fd_us[2][N_CTX], fd_bytes[2][N_CTX];
    for (int bf = 1; bf >= 0; bf--)
        for (int ci = 0; ci < N_CTX; ci++) {
            char what[32];
            snprintf(what, sizeof what, "attn %uK", ctxs[ci] / 1024);
            fd_us[bf][ci] = kb_flash_decode(bf, ctxs[ci], &rng, s, &fd_bytes[bf][ci]);
            kb_row(what, bf ? "bf16" : "f32", fd_bytes[bf][ci], fd_us[bf][ci], copy_gbs);
        }

    /* The 8B shape per token: 32 layers of fused qkv, wo, fused gate/up, down and (bf16 KV)
     * attention, then the output matrix; the floor counts the same bytes. */
    printf("\nLlama-3-8B decode estimate (these kernels only), ms/token vs floor at %.0f GB/s:\n",
           hbm / 1e9);
    printf("%-5s %7s %9s %9s %6s\n", "type", "ctx", "est_ms", "floor_ms", "ratio");
    for (int ti = 0; ti < 2; ti++) { /* BF16, Q8_0 */
        const double *u = mv_us[ti], *b = mv_bytes[ti];
        const double layer_us = u[5] + u[0] + u[6] + u[3];
        const double layer_b = b[5] + b[0] + b[6] + b[3];
        for (int ci = 0; ci < N_CTX; ci++) {
            if (layer_us <= 0 || u[4] <= 0 || fd_us[1][ci] <= 0)
                continue;
            const double est = 32 * (layer_us + fd_us[1][ci]) + u[4];
            const double fl = (32 * (layer_b + fd_bytes[1][ci]) + b[4]) / hbm * 1e6;
            printf("%-5s %7u %9.3f %9.3f %6.2f\n", rt_type_name(types[ti]), ctxs[ci], est / 1e3,
                   fl / 1e3, est / fl);
        }
    }
    cudaStreamDestroy(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--kernels"))
        return kernels_main(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: bench_cuda MODEL.gguf N_PROMPT[,N_PROMPT...] N_DECODE [bf16|f32] "
                        "[HBM_GBPS]\n       bench_cuda --kernels [HBM_GBPS]\n");
        return 2;
    }
    size_t lens[MAX_LENGTHS], n_lens = 0, max_len = 0;
    for (char *s = argv[2], *end; *s && n_lens < MAX_LENGTHS; s = *end ? end + 1 : end) {
        lens[n_lens] = strtoul(s, &end, 10);
        if (end == s || (*end && *end != ',') || lens[n_lens] == 0) {
            fprintf(stderr, "bench_cuda: N_PROMPT must be positive numbers separated by commas\n");
            return 2;
        }
        max_len = lens[n_lens] > max_len ? lens[n_lens] : max_len;
        n_lens++;
    }
    const size_t n_dec = strtoul(argv[3], NULL, 10);
    const bool f32 = argc > 4 && !strcmp(argv[4], "f32");
    const double hbm = argc > 5 ? strtod(argv[5], NULL) * 1e9 : 2970e9;
    if (n_lens == 0 || n_dec == 0 || !(hbm > 0)) {
        fprintf(stderr, "bench_cuda: N_PROMPT, N_DECODE and HBM_GBPS must be positive\n");
        return 2;
    }
    if (!rt_cuda_available()) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    rt_cuda_engine *e = NULL;
    int rc = 1;
    int32_t *ids = NULL;
    double *steps = NULL;
    double peak = 0;
    const double copy_gbs = measure_copy_gbs();
    double t_load = now_s();
    if (rt_gguf_open(argv[1], &g, &err) || rt_model_load(g, &m, &err))
        goto fail;
    const rt_hparams *hp = rt_model_hparams(m);
    rt_cuda_params p;
    rt_cuda_params_init(&p);
    p.n_ctx = (uint32_t)(max_len + n_dec + 8);
    p.precision = f32 ? RT_CUDA_F32 : RT_CUDA_BF16;
    if (rt_cuda_engine_create(m, &p, &e, &err))
        goto fail;
    t_load = now_s() - t_load;
    peak = dev_used();
    ids = malloc((max_len > 64 ? max_len : 64) * sizeof *ids);
    steps = malloc(n_dec * sizeof *steps);
    if (!ids || !steps)
        goto fail;
    test_rng rng;
    test_rng_seed(&rng, 42);
    for (size_t i = 0; i < max_len; i++)
        ids[i] = (int32_t)(test_rng_u64(&rng) % hp->n_vocab);

    /* Warm-up: module loading, cuBLAS heuristics, first touch of the arena. */
    if (rt_cuda_prefill(e, ids, max_len < 64 ? max_len : 64, NULL, &err) ||
        rt_cuda_decode(e, ids[0], &err))
        goto fail;
    fprintf(stderr, "bench_cuda: %s loaded and uploaded in %.1f s; device copy %.0f GB/s\n",
            argv[1], t_load, copy_gbs);

    const rt_cuda_mem_plan *pl = rt_cuda_engine_plan(e);
    const char *name = strrchr(argv[1], '/') ? strrchr(argv[1], '/') + 1 : argv[1];
    const double gib = 1024.0 * 1024 * 1024;
    /* Rows go out as each length finishes, so a run stopped by a time limit keeps its results. */
    printf("model,precision,n_prompt,prefill_s,prefill_tok_s,decode_ms,floor_ms,ratio,gpu_gib,"
           "dev_used_gib,copy_gbs\n");
    fflush(stdout);
    for (size_t k = 0; k < n_lens; k++) {
        rt_cuda_reset(e);
        double t0 = now_s();
        if (rt_cuda_prefill(e, ids, lens[k], NULL, &err))
            goto fail;
        const double prefill_s = now_s() - t0;
        peak = fmax(peak, dev_used());
        int32_t tok;
        for (size_t i = 0; i < n_dec; i++) {
            double t1 = now_s();
            if (rt_cuda_greedy(e, &tok, &err) || rt_cuda_decode(e, tok, &err))
                goto fail;
            steps[i] = now_s() - t1;
        }
        peak = fmax(peak, dev_used());
        qsort(steps, n_dec, sizeof *steps, cmp_double);
        const double dec_ms = 1e3 * steps[n_dec / 2];
        const double ctx_mid = (double)lens[k] + (double)n_dec / 2;
        const double kv_bytes = 2.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * (f32 ? 4 : 2) *
                                ctx_mid;
        const double floor_ms = 1e3 * ((double)rt_model_weight_bytes(m) + kv_bytes) / hbm;
        printf("%s,%s,%zu,%.3f,%.0f,%.3f,%.3f,%.2f,%.2f,%.2f,%.0f\n", name, f32 ? "f32" : "bf16",
               lens[k], prefill_s, (double)lens[k] / prefill_s, dec_ms, floor_ms,
               dec_ms / floor_ms, (double)pl->total / gib, peak / gib, copy_gbs);
        fflush(stdout);
        fprintf(stderr, "%s: prefill %zu tokens in %.3f s (%.0f tok/s); decode %.3f ms/token at "
                        "~%.0f tokens of context, floor %.3f ms (%.2fx)\n",
                name, lens[k], prefill_s, (double)lens[k] / prefill_s, dec_ms, ctx_mid, floor_ms,
                dec_ms / floor_ms);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_cuda: %s\n", loupe_err_message(&err));
done:
    free(ids);
    free(steps);
    rt_cuda_engine_destroy(e);
    rt_model_destroy(m);
    rt_gguf_close(g);
    return rc;
}
