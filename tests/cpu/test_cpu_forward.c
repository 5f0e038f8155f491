/*
 * test_cpu_forward MODEL.gguf [N_TOKENS] [linear|yarn FACTOR ORIG_CTX]: the CPU backend against
 * the independent double-precision reference (ref_forward.c) on a model written by `loupe
 * mkmodel`. With a scaling argument the model is first copied with rope.scaling.* keys added
 * (mkmodel writes none), so linear and YaRN scaling are checked on the same weights.
 *
 * Checks, with random token ids (seed printed):
 *   1. prefill in chunks of 5 (so chunk boundaries fall mid-sequence), every position's logits:
 *      relative error max|a − b| / max|b| per row ≤ 1e-4 (a = backend float32, b = reference);
 *   2. token-by-token decode gives the same logits as the chunked prefill (≤ 1e-6);
 *   3. the sparse decode path with a static set covering every key equals full attention, and
 *      with top-k over the middle keys large enough to take them all, too;
 *   4. a sequence longer than the context fails with LOUPE_ERR_TOO_LONG and leaves the cache as
 *      it was; a context longer than the training context cannot be created.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "cpu/ref_forward.h"
#include "runtime/runtime.h"

/* Copies `src` to `dst` adding <arch>.rope.scaling.{type,factor,original_context_length}. */
static loupe_status copy_with_scaling(const rt_gguf *src, const char *dst, const char *type,
                                      float factor, uint32_t orig, loupe_err *err)
{
    rt_gguf_writer *w = NULL;
    loupe_status st = rt_gguf_writer_create(dst, &w, err);
    rt_gguf_str arch;
    char key[256];
    if (!st)
        st = rt_gguf_get_str(src, "general.architecture", &arch, err);
    for (int64_t i = 0; !st && i < rt_gguf_n_kv(src); i++) {
        rt_gguf_str k = rt_gguf_key(src, i);
        uint64_t nb = 0;
        const void *raw = rt_gguf_kv_raw(src, i, &nb);
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        if (strstr(key, ".rope.scaling."))
            continue;
        st = rt_gguf_writer_set_raw(w, key, rt_gguf_kv_type(src, i), raw, nb, err);
    }
    if (!st) {
        snprintf(key, sizeof key, "%.*s.rope.scaling.type", (int)arch.len, arch.ptr);
        st = rt_gguf_writer_set_str(w, key, type, err);
    }
    if (!st) {
        snprintf(key, sizeof key, "%.*s.rope.scaling.factor", (int)arch.len, arch.ptr);
        st = rt_gguf_writer_set_f32(w, key, factor, err);
    }
    if (!st) {
        snprintf(key, sizeof key, "%.*s.rope.scaling.original_context_length", (int)arch.len,
                 arch.ptr);
        st = rt_gguf_writer_set_u32(w, key, orig, err);
    }
    for (int64_t i = 0; !st && i < rt_gguf_n_tensors(src); i++) {
        const rt_gguf_tensor *t = rt_gguf_tensor_at(src, i);
        st = rt_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, err);
    }
    for (int64_t i = 0; !st && i < rt_gguf_n_tensors(src); i++) {
        const rt_gguf_tensor *t = rt_gguf_tensor_at(src, i);
        st = rt_gguf_writer_write(w, t->data, t->n_bytes, err);
    }
    if (!st)
        st = rt_gguf_writer_finish(w, err);
    rt_gguf_writer_destroy(w);
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_cpu_forward MODEL.gguf [N_TOKENS]\n");
        return 2;
    }
    size_t T = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 21;
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    rt_ctx *c = NULL, *d = NULL;
    char scaled[512];
    if (argc > 5) {
        rt_gguf *src = NULL;
        snprintf(scaled, sizeof scaled, "%s/scaled-%s-%s", test_tmpdir(), argv[3],
                 strrchr(argv[1], '/') ? strrchr(argv[1], '/') + 1 : argv[1]);
        if (rt_gguf_open(argv[1], &src, &err) ||
            copy_with_scaling(src, scaled, argv[3], strtof(argv[4], NULL),
                              (uint32_t)strtoul(argv[5], NULL, 10), &err)) {
            fprintf(stderr, "%s\n", loupe_err_message(&err));
            rt_gguf_close(src);
            return 1;
        }
        rt_gguf_close(src);
        argv[1] = scaled;
    }
    if (rt_gguf_open(argv[1], &g, &err) || rt_model_load(g, &m, &err)) {
        fprintf(stderr, "%s\n", loupe_err_message(&err));
        return 1;
    }
    const rt_hparams *hp = rt_model_hparams(m);
    ref_model *ref = ref_model_load(g);
    CHECK(ref != NULL);
    if (!ref)
        return test_summary("test_cpu_forward");
    size_t V = hp->n_vocab;
    CHECK((size_t)ref_model_n_vocab(ref) == V);
    fprintf(stderr, "%s: %s, %u layers, %u/%u heads, head dim %u, vocab %zu, %zu tokens, "
            "rope scaling %d\n", argv[1], hp->arch_name, hp->n_layer, hp->n_head, hp->n_head_kv,
            hp->head_dim, V, T, (int)hp->rope_scaling);

    int32_t *ids = malloc(T * sizeof *ids);
    for (size_t i = 0; i < T; i++)
        ids[i] = (int32_t)(test_rng_u64(&rng) % V);
    float *got = malloc(T * V * sizeof *got);
    double *want = malloc(T * V * sizeof *want);
    ref_forward(ref, ids, T, want);

    /* 1. chunked prefill vs the reference */
    rt_ctx_params cp;
    rt_ctx_params_init(&cp);
    cp.n_ctx = (uint32_t)T;
    cp.n_batch = 5;
    cp.n_threads = 2;
    CHECK(rt_ctx_create(m, &cp, &c, &err) == LOUPE_OK);
    CHECK(rt_ctx_prefill(c, ids, T, got, &err) == LOUPE_OK);
    double worst = 0;
    for (size_t t = 0; t < T; t++) {
        double e = ref_rel_err(got + t * V, want + t * V, V);
        if (e > worst)
            worst = e;
    }
    fprintf(stderr, "max relative error vs reference (max|a-b|/max|b| per logits row): %.3g\n",
            worst);
    CHECK_MSG(worst <= 1e-4, "relative error %g > 1e-4", worst);
    CHECK(test_rel_diff(rt_ctx_logits(c), got + (T - 1) * V, V) == 0);

    /* 4a. one token too many: TOO_LONG, cache untouched */
    CHECK(rt_ctx_decode(c, ids[0], &err) == LOUPE_ERR_TOO_LONG);
    CHECK(rt_ctx_n_past(c) == T);

    /* 2. token by token, and 3. the sparse path */
    rt_ctx_params_init(&cp);
    cp.n_ctx = (uint32_t)T;
    cp.n_threads = 2;
    CHECK(rt_ctx_create(m, &cp, &d, &err) == LOUPE_OK);
    double dec_worst = 0;
    for (size_t t = 0; t + 1 < T; t++) {
        CHECK(rt_ctx_decode(d, ids[t], &err) == LOUPE_OK);
        double e = test_rel_diff(rt_ctx_logits(d), got + t * V, V);
        if (e > dec_worst)
            dec_worst = e;
    }
    /* The last token three ways from the same state (truncating back in between). */
    rt_sparse_params all = {.enabled = true, .topk = 0, .sinks = 2, .window = (uint32_t)T};
    rt_sparse_params topk = {.enabled = true, .topk = (uint32_t)T, .sinks = 2, .window = 3};
    CHECK(rt_ctx_decode_sparse(d, ids[T - 1], &all, &err) == LOUPE_OK);
    double sp_all = test_rel_diff(rt_ctx_logits(d), got + (T - 1) * V, V);
    CHECK(rt_ctx_truncate(d, (uint32_t)T - 1, &err) == LOUPE_OK);
    CHECK(rt_ctx_decode_sparse(d, ids[T - 1], &topk, &err) == LOUPE_OK);
    double sp_topk = test_rel_diff(rt_ctx_logits(d), got + (T - 1) * V, V);
    CHECK(rt_ctx_truncate(d, (uint32_t)T - 1, &err) == LOUPE_OK);
    CHECK(rt_ctx_decode(d, ids[T - 1], &err) == LOUPE_OK);
    double e = test_rel_diff(rt_ctx_logits(d), got + (T - 1) * V, V);
    if (e > dec_worst)
        dec_worst = e;
    CHECK(rt_ctx_truncate(d, (uint32_t)T + 1, &err) == LOUPE_ERR_RANGE);
    fprintf(stderr, "decode vs chunked prefill: %.3g; sparse (all keys static): %.3g; sparse "
            "(top-k takes every middle key): %.3g\n", dec_worst, sp_all, sp_topk);
    CHECK_MSG(dec_worst <= 1e-6, "decode differs from prefill by %g", dec_worst);
    CHECK_MSG(sp_all <= 1e-5, "sparse decode (all static) differs from full by %g", sp_all);
    CHECK_MSG(sp_topk <= 1e-5, "sparse decode (top-k) differs from full by %g", sp_topk);

    /* 4b. a context beyond the training length */
    rt_ctx *big = NULL;
    if (hp->n_ctx_train > 0) {
        rt_ctx_params_init(&cp);
        cp.n_ctx = hp->n_ctx_train + 1;
        CHECK(rt_ctx_create(m, &cp, &big, &err) == LOUPE_ERR_TOO_LONG);
        CHECK(big == NULL);
    }

    rt_ctx_destroy(c);
    rt_ctx_destroy(d);
    free(ids);
    free(got);
    free(want);
    ref_model_free(ref);
    rt_model_destroy(m);
    rt_gguf_close(g);
    return test_summary("test_cpu_forward");
}
