/*
 * test_cuda_api F32_MODEL Q4K_MODEL: the CUDA backend's API where no GPU is needed, so it runs on
 * every machine.
 *   Built without CUDA: every function fails with LOUPE_ERR_UNSUPPORTED and a sentence saying
 *   loupe was built without CUDA; rt_cuda_available() is false.
 *   Built with CUDA: rt_cuda_plan() counts exactly the KV cache it should (2 · layers · KV heads
 *   · n_ctx · head_dim · element size, per-buffer 256-byte rounding aside), halves it in bf16,
 *   grows with n_ctx, charges a Q4_K model less than an F32 one, resolves n_ctx = 0 to the
 *   training context and refuses a longer one; without a device, engine creation fails with
 *   LOUPE_ERR_GPU and a sentence, and rt_cuda_available() is false.
 */
#include <string.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

static rt_model *load(const char *path, rt_gguf **g)
{
    loupe_err err = {0};
    rt_model *m = NULL;
    if (rt_gguf_open(path, g, &err) || rt_model_load(*g, &m, &err)) {
        fprintf(stderr, "%s\n", loupe_err_message(&err));
        return NULL;
    }
    return m;
}

#ifdef LOUPE_HAVE_CUDA
static uint64_t round256(uint64_t b) { return (b + 255) / 256 * 256; }
#endif

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_cuda_api F32_MODEL Q4K_MODEL\n");
        return 2;
    }
    rt_gguf *g = NULL, *g4 = NULL;
    rt_model *m = load(argv[1], &g), *m4 = load(argv[2], &g4);
    CHECK(m && m4);
    if (!m || !m4)
        return test_summary("test_cuda_api");
    loupe_err err = {0};
    rt_cuda_params p;
    rt_cuda_params_init(&p);
    CHECK(p.precision == RT_CUDA_BF16 && p.gpu_mem == 0 && p.n_ctx == 0);
    rt_cuda_mem_plan plan;
    rt_cuda_engine *e = (rt_cuda_engine *)&err; /* must be reset to NULL on failure */

#ifndef LOUPE_HAVE_CUDA
    CHECK(!rt_cuda_available());
    CHECK(rt_cuda_plan(m, &p, &plan, &err) == LOUPE_ERR_UNSUPPORTED);
    CHECK(strstr(loupe_err_message(&err), "without CUDA") != NULL);
    CHECK(rt_cuda_engine_create(m, &p, &e, &err) == LOUPE_ERR_UNSUPPORTED && e == NULL);
    int32_t id = 5;
    CHECK(rt_cuda_prefill(NULL, &id, 1, NULL, &err) == LOUPE_ERR_UNSUPPORTED);
    CHECK(rt_cuda_decode(NULL, id, &err) == LOUPE_ERR_UNSUPPORTED);
    CHECK(rt_cuda_greedy(NULL, &id, &err) == LOUPE_ERR_UNSUPPORTED && id == -1);
    CHECK(rt_cuda_logits(NULL, &err) == NULL);
    rt_cuda_device_info info;
    CHECK(rt_cuda_device_info_get(0, &info, &err) == LOUPE_ERR_UNSUPPORTED);
    rt_cuda_engine_destroy(NULL);
    printf("built without CUDA: the stubs fail cleanly\n");
#else
    const rt_hparams *hp = rt_model_hparams(m);
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    uint32_t n_ctx = 1 + (uint32_t)(test_rng_u64(&rng) % hp->n_ctx_train);
    p.n_ctx = n_ctx;
    p.precision = RT_CUDA_F32;
    CHECK(rt_cuda_plan(m, &p, &plan, &err) == LOUPE_OK);
    uint64_t kv_f32 = 2 * round256((uint64_t)hp->n_layer * hp->n_head_kv * n_ctx * hp->head_dim * 4);
    CHECK_MSG(plan.kv == kv_f32, "KV %llu, expected %llu", (unsigned long long)plan.kv,
              (unsigned long long)kv_f32);
    CHECK(plan.weights >= rt_model_weight_bytes(m));
    CHECK(plan.total == plan.weights + plan.kv + plan.scratch);
    CHECK(plan.n_ctx == n_ctx && plan.n_seg == n_ctx && plan.n_batch <= n_ctx);
    rt_cuda_mem_plan bf;
    p.precision = RT_CUDA_BF16;
    CHECK(rt_cuda_plan(m, &p, &bf, &err) == LOUPE_OK);
    CHECK(bf.kv == 2 * round256((uint64_t)hp->n_layer * hp->n_head_kv * n_ctx * hp->head_dim * 2));
    rt_cuda_mem_plan big, q4;
    p.n_ctx = hp->n_ctx_train;
    CHECK(rt_cuda_plan(m, &p, &big, &err) == LOUPE_OK);
    CHECK(big.total >= bf.total);
    CHECK(rt_cuda_plan(m4, &p, &q4, &err) == LOUPE_OK);
    CHECK(q4.weights < big.weights);
    p.n_ctx = 0;
    CHECK(rt_cuda_plan(m, &p, &plan, &err) == LOUPE_OK && plan.n_ctx == hp->n_ctx_train);
    p.n_ctx = hp->n_ctx_train + 1;
    CHECK(rt_cuda_plan(m, &p, &plan, &err) == LOUPE_ERR_TOO_LONG);
    printf("plan for %u tokens: weights %llu, KV %llu, scratch %llu bytes\n", n_ctx,
           (unsigned long long)bf.weights, (unsigned long long)bf.kv,
           (unsigned long long)bf.scratch);
    if (!rt_cuda_available()) {
        p.n_ctx = 64;
        loupe_err e2 = {0};
        CHECK(rt_cuda_engine_create(m, &p, &e, &e2) == LOUPE_ERR_GPU && e == NULL);
        CHECK(strstr(loupe_err_message(&e2), "no CUDA device") != NULL);
        printf("no CUDA device: engine creation fails with \"%s\"\n", loupe_err_message(&e2));
    }
#endif
    rt_model_destroy(m);
    rt_model_destroy(m4);
    rt_gguf_close(g);
    rt_gguf_close(g4);
    return test_summary("test_cuda_api");
}
