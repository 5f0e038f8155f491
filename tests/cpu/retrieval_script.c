/* The CPU retrieval tests' script (retrieval_script.h). */
#include "cpu/retrieval_script.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"

rt_model *script_setup(int argc, char **argv, const char *name, rt_gguf **g, int32_t **ids)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", name);
        return NULL;
    }
    loupe_err err = {0};
    rt_model *m = NULL;
    *g = NULL;
    if (rt_gguf_open(argv[1], g, &err) || rt_model_load(*g, &m, &err)) {
        fprintf(stderr, "loading %s: %s\n", argv[1], loupe_err_message(&err));
        return NULL;
    }
    const uint32_t nv = rt_model_hparams(m)->n_vocab;
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    *ids = malloc(SCRIPT_IDS * sizeof **ids);
    for (size_t i = 0; *ids && i < SCRIPT_IDS; i++)
        (*ids)[i] = (int32_t)(test_rng_u64(&rng) % nv);
    return *ids ? m : NULL;
}

void script_params(rt_runner_params *p, rt_attn_mode mode, uint32_t topk)
{
    rt_runner_params_init(p);
    p->backend = RT_BACKEND_CPU;
    p->attention = mode;
    p->n_ctx = N0 + EXT + DEC + 8;
    p->n_batch = 64;
    p->n_threads = 2;
    p->retrieval.topk = topk;
    p->retrieval.sinks = SINKS;
    p->retrieval.window = WINDOW;
    p->retrieval.static_max = STATIC_MAX;
    p->retrieval.build_queries = 128;
}

loupe_status script_run(const rt_model *m, const rt_runner_params *p, const int32_t *ids,
                        float *out, rt_runner_stats *st, loupe_err *err)
{
    uint32_t nv = rt_model_hparams(m)->n_vocab;
    rt_runner *r = NULL;
    float *ext = malloc((size_t)EXT * nv * sizeof *ext);
    loupe_status s = ext ? rt_runner_create(m, p, &r, err) : LOUPE_ERR_NOMEM;
    if (!s)
        s = rt_runner_prefill(r, ids, N0, NULL, err);
    if (!s) {
        memcpy(out, rt_runner_logits(r, NULL), nv * sizeof *out);
        s = rt_runner_prefill(r, ids + N0, EXT, ext, err);
    }
    if (!s)
        memcpy(out + nv, ext, (size_t)EXT * nv * sizeof *out);
    for (int i = 0; !s && i < DEC; i++) {
        s = rt_runner_decode(r, ids[N0 + EXT + i], err);
        if (!s)
            memcpy(out + (size_t)(1 + EXT + i) * nv, rt_runner_logits(r, NULL), nv * sizeof *out);
    }
    if (!s && st)
        rt_runner_stats_get(r, st);
    rt_runner_destroy(r);
    free(ext);
    return s;
}

double script_max_row_diff(const float *a, const float *b, uint32_t nv, int *worst)
{
    double d = 0;
    for (int t = 0; t < SCRIPT_ROWS; t++) {
        double e = test_rel_diff(a + (size_t)t * nv, b + (size_t)t * nv, nv);
        if (e > d) {
            d = e;
            if (worst)
                *worst = t;
        }
    }
    return d;
}
