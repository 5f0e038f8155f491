/*
 * The CUDA backend's API (rt_cuda.h) in a build without CUDA: every function exists, reports that
 * the backend is absent with LOUPE_ERR_UNSUPPORTED, and rt_cuda_available() is false. Compiled
 * only when LOUPE_HAVE_CUDA is off (runtime/CMakeLists.txt); the .cu files of runtime/cuda replace it.
 */
#include "runtime/runtime.h"

#include <string.h>

static loupe_status no_cuda(loupe_err *err)
{
    return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                      "this loupe was built without CUDA (reconfigure with -DLOUPE_CUDA=ON on a "
                      "machine with the CUDA toolkit); use --backend cpu");
}

bool rt_cuda_available(void) { return false; }

bool rt_cuda_host_pin(void *p, size_t bytes)
{
    (void)p;
    (void)bytes;
    return false;
}

void rt_cuda_host_unpin(void *p) { (void)p; }

loupe_status rt_cuda_device_info_get(int device, rt_cuda_device_info *out, loupe_err *err)
{
    (void)device;
    memset(out, 0, sizeof *out);
    return no_cuda(err);
}

void rt_cuda_params_init(rt_cuda_params *p)
{
    memset(p, 0, sizeof *p);
    p->precision = RT_CUDA_BF16;
}

loupe_status rt_cuda_plan(const rt_model *m, const rt_cuda_params *p, rt_cuda_mem_plan *out,
                          loupe_err *err)
{
    (void)m;
    (void)p;
    memset(out, 0, sizeof *out);
    return no_cuda(err);
}

loupe_status rt_cuda_engine_create(const rt_model *m, const rt_cuda_params *p,
                                   rt_cuda_engine **out, loupe_err *err)
{
    (void)m;
    (void)p;
    *out = NULL;
    return no_cuda(err);
}

void rt_cuda_engine_destroy(rt_cuda_engine *e) { (void)e; }

const rt_cuda_mem_plan *rt_cuda_engine_plan(const rt_cuda_engine *e)
{
    (void)e;
    return NULL;
}

uint32_t rt_cuda_n_past(const rt_cuda_engine *e)
{
    (void)e;
    return 0;
}

void rt_cuda_reset(rt_cuda_engine *e) { (void)e; }

loupe_status rt_cuda_prefill(rt_cuda_engine *e, const int32_t *ids, size_t n, float *all_logits,
                             loupe_err *err)
{
    (void)e;
    (void)ids;
    (void)n;
    (void)all_logits;
    return no_cuda(err);
}

loupe_status rt_cuda_decode(rt_cuda_engine *e, int32_t id, loupe_err *err)
{
    (void)e;
    (void)id;
    return no_cuda(err);
}

const float *rt_cuda_logits(rt_cuda_engine *e, loupe_err *err)
{
    (void)e;
    no_cuda(err);
    return NULL;
}

loupe_status rt_cuda_greedy(rt_cuda_engine *e, int32_t *id, loupe_err *err)
{
    (void)e;
    *id = -1;
    return no_cuda(err);
}

loupe_status rt_cuda_knn(void *user, const ann_keys *keys, const float *queries, int64_t nq, int k,
                         int threads, int32_t *ids, float *scores, int32_t *key_best_query,
                         loupe_err *err)
{
    (void)user, (void)keys, (void)queries, (void)nq, (void)k, (void)threads, (void)ids;
    (void)scores, (void)key_best_query;
    return no_cuda(err);
}

loupe_status rt_cuda_prune(void *user, const ann_prune_job *job, loupe_err *err)
{
    (void)user, (void)job;
    return no_cuda(err);
}

void rt_cuda_set_q_capture_from(rt_cuda_engine *e, uint32_t from)
{
    (void)e, (void)from;
}

loupe_status rt_cuda_set_q_capture(rt_cuda_engine *e, rt_cuda_q_fn fn, void *user,
                                   uint32_t stride, loupe_err *err)
{
    (void)e, (void)fn, (void)user, (void)stride;
    return no_cuda(err);
}

loupe_status rt_cuda_kv_read(rt_cuda_engine *e, uint32_t layer, uint32_t p0, uint32_t p1,
                             float *k_out, float *v_out, size_t ld, size_t off, loupe_err *err)
{
    (void)e, (void)layer, (void)p0, (void)p1, (void)k_out, (void)v_out, (void)ld, (void)off;
    return no_cuda(err);
}

loupe_status rt_cuda_set_host_attn(rt_cuda_engine *e, rt_cuda_host_attn_fn fn, void *user,
                                   loupe_err *err)
{
    (void)e, (void)fn, (void)user;
    return no_cuda(err);
}

loupe_status rt_cuda_set_host_kv(rt_cuda_engine *e, const rt_cuda_host_kv *kv, loupe_err *err)
{
    (void)e, (void)kv;
    return no_cuda(err);
}

loupe_status rt_cuda_static_drop(rt_cuda_engine *e, uint32_t n, loupe_err *err)
{
    (void)e, (void)n;
    return no_cuda(err);
}

void rt_cuda_coexec_stats_get(const rt_cuda_engine *e, rt_cuda_coexec_stats *out)
{
    (void)e;
    memset(out, 0, sizeof *out);
}

void rt_cuda_set_layer_done(rt_cuda_engine *e, rt_cuda_layer_fn fn, void *user)
{
    (void)e, (void)fn, (void)user;
}
