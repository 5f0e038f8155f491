/*
 * test_cuda_graph MODEL.gguf f32|bf16 [STEPS]: decode replayed through a CUDA graph against the
 * same decode launched without one (LOUPE_CUDA_GRAPHS=0). Exits 77 when no CUDA device is
 * usable.
 *
 * Two engines of n_ctx = 256 get the same random prompt (seed printed) of 120 tokens, so the
 * decode steps cross the 128-key boundary where flash-decoding goes from one split to two, then
 * STEPS decode steps of the same random ids. Checks:
 *   1. every step's logits are bit for bit equal (the graph path reads the position from device
 *      memory and sizes its flash-decoding grid for n_ctx; the result must not change);
 *   2. the graph engine really replays a graph from its second step on (so 1 cannot pass by
 *      comparing the eager path with itself), and the other engine never does;
 *   3. after rt_cuda_reset and a shorter prompt (40 tokens), 4 more steps at earlier positions
 *      are still bit for bit equal: the captured graph has no position baked in.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_test.h"
#include "runtime/cuda/decode_graph.cuh"
#include "runtime/runtime.h"

enum { N_CTX = 256, PROMPT = 120, PROMPT2 = 40, STEPS2 = 4 };

/* Prefills `prompt`, decodes `ids` (n steps), copying each step's logits to out (n, V). The
 * environment decides graph use on the first decode call. Returns 0, or 1 after printing. */
static int run(rt_cuda_engine *e, const int32_t *prompt, size_t n_prompt, const int32_t *ids,
               size_t n, size_t V, float *out, int *graph_steps)
{
    loupe_err err = {0};
    if (rt_cuda_prefill(e, prompt, n_prompt, NULL, &err)) {
        fprintf(stderr, "prefill: %s\n", loupe_err_message(&err));
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const float *l = NULL;
        if (rt_cuda_decode(e, ids[i], &err) || !(l = rt_cuda_logits(e, &err))) {
            fprintf(stderr, "decode step %zu: %s\n", i, loupe_err_message(&err));
            return 1;
        }
        memcpy(out + i * V, l, V * sizeof(float));
        *graph_steps += rt_cuda_decode_graph_active(e);
    }
    return 0;
}

/* Steps whose logits differ in any bit; prints the first. */
static int compare(const float *a, const float *b, size_t n, size_t V, const char *what)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!memcmp(a + i * V, b + i * V, V * sizeof(float)))
            continue;
        if (!bad)
            for (size_t j = 0; j < V; j++)
                if (memcmp(&a[i * V + j], &b[i * V + j], sizeof(float))) {
                    fprintf(stderr, "%s step %zu: logit %zu is %.9g with a graph, %.9g without\n",
                            what, i, j, a[i * V + j], b[i * V + j]);
                    break;
                }
        bad++;
    }
    return bad;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_cuda_graph MODEL.gguf f32|bf16 [STEPS]\n");
        return 2;
    }
    const size_t S = argc > 3 ? strtoul(argv[3], NULL, 10) : 16;
    if (S < 2 || PROMPT + S > N_CTX) {
        fprintf(stderr, "STEPS must be 2..%d\n", N_CTX - PROMPT);
        return 2;
    }
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    if (rt_gguf_open(argv[1], &g, &err) || rt_model_load(g, &m, &err)) {
        fprintf(stderr, "%s\n", loupe_err_message(&err));
        return 1;
    }
    cuda_test_require_device();
    const size_t V = rt_model_hparams(m)->n_vocab;
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    int32_t *ids = malloc((PROMPT + S) * sizeof *ids);
    for (size_t i = 0; i < PROMPT + S; i++)
        ids[i] = (int32_t)(test_rng_u64(&rng) % V);
    float *with = malloc(S * V * sizeof(float)), *without = malloc(S * V * sizeof(float));

    rt_cuda_params p;
    rt_cuda_params_init(&p);
    p.n_ctx = N_CTX;
    p.precision = strcmp(argv[2], "f32") ? RT_CUDA_BF16 : RT_CUDA_F32;
    rt_cuda_engine *eg = NULL, *ep = NULL;
    if (rt_cuda_engine_create(m, &p, &eg, &err) || rt_cuda_engine_create(m, &p, &ep, &err)) {
        fprintf(stderr, "%s\n", loupe_err_message(&err));
        return 1;
    }
    int graph_g = 0, graph_p = 0;
    /* 1, 2: the plain engine reads LOUPE_CUDA_GRAPHS=0 on its first decode, the other none. */
    setenv("LOUPE_CUDA_GRAPHS", "0", 1);
    int rc = run(ep, ids, PROMPT, ids + PROMPT, S, V, without, &graph_p);
    unsetenv("LOUPE_CUDA_GRAPHS");
    rc = rc || run(eg, ids, PROMPT, ids + PROMPT, S, V, with, &graph_g);
    CHECK(rc == 0);
    if (rc == 0) {
        printf("%zu decode steps after %d tokens: %d replayed a graph (want %zu), %d without\n",
               S, PROMPT, graph_g, S - 1, graph_p);
        CHECK_MSG(graph_g == (int)S - 1, "the graph engine replayed %d of %zu steps", graph_g,
                  S - 1);
        CHECK(graph_p == 0);
        const int bad = compare(with, without, S, V, "decode");
        CHECK_MSG(bad == 0, "%d of %zu steps differ", bad, S);
    }

    /* 3. rewind and replay at earlier positions */
    if (rc == 0) {
        rt_cuda_reset(eg);
        rt_cuda_reset(ep);
        graph_g = graph_p = 0;
        rc = run(ep, ids, PROMPT2, ids + PROMPT, STEPS2, V, without, &graph_p) ||
             run(eg, ids, PROMPT2, ids + PROMPT, STEPS2, V, with, &graph_g);
        CHECK(rc == 0);
        if (rc == 0) {
            CHECK(graph_g == STEPS2 && graph_p == 0);
            const int bad = compare(with, without, STEPS2, V, "after reset");
            CHECK_MSG(bad == 0, "%d of %d steps differ after a reset", bad, STEPS2);
        }
    }
    rt_cuda_engine_destroy(eg);
    rt_cuda_engine_destroy(ep);
    free(with);
    free(without);
    free(ids);
    rt_model_destroy(m);
    rt_gguf_close(g);
    return test_summary("test_cuda_graph");
}
