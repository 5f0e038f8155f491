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
 */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/test_util.h"
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

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_cuda MODEL.gguf N_PROMPT[,N_PROMPT...] N_DECODE [bf16|f32] "
                        "[HBM_GBPS]\n");
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
