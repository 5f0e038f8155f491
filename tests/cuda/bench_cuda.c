/*
 * bench_cuda MODEL.gguf N_PROMPT N_DECODE [bf16|f32] [HBM_GBPS]: a benchmark program (not a
 * test). Prefills N_PROMPT random tokens (timed once, after a small warm-up prefill), then
 * decodes N_DECODE tokens greedily (argmax on the GPU) and reports the median decode step.
 *
 * The floor is the bytes one decode step must stream from GPU memory — every weight matrix once
 * plus the K and V of every cached token — over the HBM bandwidth (default 2970 GB/s, the H100
 * copy rate measured in DESIGN.md). Output: one CSV header and one row, then a readable line.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

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

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_cuda MODEL.gguf N_PROMPT N_DECODE [bf16|f32] [HBM_GBPS]\n");
        return 2;
    }
    const size_t n_prompt = strtoul(argv[2], NULL, 10), n_dec = strtoul(argv[3], NULL, 10);
    const bool f32 = argc > 4 && !strcmp(argv[4], "f32");
    const double hbm = argc > 5 ? strtod(argv[5], NULL) * 1e9 : 2970e9;
    if (n_prompt == 0 || n_dec == 0) {
        fprintf(stderr, "bench_cuda: N_PROMPT and N_DECODE must be positive\n");
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
    if (rt_gguf_open(argv[1], &g, &err) || rt_model_load(g, &m, &err))
        goto fail;
    const rt_hparams *hp = rt_model_hparams(m);
    rt_cuda_params p;
    rt_cuda_params_init(&p);
    p.n_ctx = (uint32_t)(n_prompt + n_dec + 8);
    p.precision = f32 ? RT_CUDA_F32 : RT_CUDA_BF16;
    if (rt_cuda_engine_create(m, &p, &e, &err))
        goto fail;
    ids = malloc(n_prompt * sizeof *ids);
    steps = malloc(n_dec * sizeof *steps);
    if (!ids || !steps)
        goto fail;
    test_rng rng;
    test_rng_seed(&rng, 42);
    for (size_t i = 0; i < n_prompt; i++)
        ids[i] = (int32_t)(test_rng_u64(&rng) % hp->n_vocab);

    /* Warm-up: module loading, cuBLAS heuristics, first-touch of the arena. */
    if (rt_cuda_prefill(e, ids, n_prompt < 64 ? n_prompt : 64, NULL, &err) ||
        rt_cuda_decode(e, ids[0], &err))
        goto fail;
    rt_cuda_reset(e);

    double t0 = now_s();
    if (rt_cuda_prefill(e, ids, n_prompt, NULL, &err))
        goto fail;
    const double prefill_s = now_s() - t0;
    int32_t tok;
    for (size_t i = 0; i < n_dec; i++) {
        double t1 = now_s();
        if (rt_cuda_greedy(e, &tok, &err) || rt_cuda_decode(e, tok, &err))
            goto fail;
        steps[i] = now_s() - t1;
    }
    qsort(steps, n_dec, sizeof *steps, cmp_double);
    const double dec_ms = 1e3 * steps[n_dec / 2];
    const double ctx_mid = (double)n_prompt + (double)n_dec / 2;
    const double kv_bytes = 2.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * (f32 ? 4 : 2) *
                            ctx_mid;
    const double bytes = (double)rt_model_weight_bytes(m) + kv_bytes;
    const double floor_ms = 1e3 * bytes / hbm;
    const rt_cuda_mem_plan *pl = rt_cuda_engine_plan(e);
    const char *name = strrchr(argv[1], '/') ? strrchr(argv[1], '/') + 1 : argv[1];
    printf("model,precision,n_prompt,prefill_s,prefill_tok_s,decode_ms,floor_ms,ratio,gpu_gib\n");
    printf("%s,%s,%zu,%.3f,%.0f,%.3f,%.3f,%.2f,%.2f\n", name, f32 ? "f32" : "bf16", n_prompt,
           prefill_s, (double)n_prompt / prefill_s, dec_ms, floor_ms, dec_ms / floor_ms,
           (double)pl->total / (1u << 30));
    printf("%s: prefill %zu tokens in %.3f s (%.0f tok/s); decode %.3f ms/token at ~%.0f tokens "
           "of context, floor %.3f ms (%.2fx)\n",
           name, n_prompt, prefill_s, (double)n_prompt / prefill_s, dec_ms, ctx_mid, floor_ms,
           dec_ms / floor_ms);
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
