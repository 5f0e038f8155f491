/*
 * Private to runtime/: retrieval attention on the CPU backend (retrieval_cpu.c), driven by the
 * runner (runner.c). Not part of runtime.h.
 *
 * Life of an rt_retr over one rt_ctx:
 *   rt_retr_begin(n)   before the context's prefill of n tokens: arms the query capture (every
 *                      layer, positions sampled evenly to build_queries, plus the last `window`
 *                      positions, which start the static tail).
 *   (rt_ctx_prefill)   full attention; the capture hook copies queries.
 *   rt_retr_seal()     splits the context into static and host sets, builds every query head's
 *                      index over its KV head's host keys (those rt_retr_build_layers has not
 *                      built during the prefill), and installs the attention hook.
 *   (rt_ctx_prefill / rt_ctx_decode)   extensions: static partial + searched host partial, merged.
 *   rt_retr_settle()   after each extension: moves the oldest static tokens to the host set (and
 *                      into the indexes) once the static tail exceeds static_max.
 *   rt_retr_reset()    back to before rt_retr_begin, keeping the buffers.
 */
#ifndef LOUPE_RETRIEVAL_IMPL_H
#define LOUPE_RETRIEVAL_IMPL_H

#include "runtime/host_kv_impl.h"
#include "runtime/model_impl.h"
#include "runtime/runtime.h"

typedef struct rt_retr rt_retr;

/* mode: RT_ATTN_RETRIEVAL, RT_ATTN_FLAT or RT_ATTN_IVF. Allocates every buffer the extensions
 * need for the context's n_ctx and n_batch. */
loupe_status rt_retr_create(rt_ctx *c, rt_attn_mode mode, const rt_retrieval_params *p,
                            rt_retr **out, loupe_err *err);
void rt_retr_destroy(rt_retr *r);
void rt_retr_reset(rt_retr *r);
bool rt_retr_sealed(const rt_retr *r);
/* Arms the capture for a prefill of n tokens starting at position 0. */
void rt_retr_begin(rt_retr *r, size_t n);
/* The capture for a prefill computed elsewhere (the CUDA engine): n query rows (n_head · hd) of
 * `layer` at positions pos0, pos0 + stride, ... Between rt_retr_begin and rt_retr_seal. */
void rt_retr_capture(rt_retr *r, uint32_t layer, uint32_t pos0, uint32_t stride, size_t n,
                     const float *q);
/* The positions the capture keeps, after rt_retr_begin: p % stride == 0 (the sampled build
 * queries) and every p >= from (the static tail's); a prefill elsewhere need hand over no
 * others. */
void rt_retr_capture_plan(const rt_retr *r, uint32_t *stride, uint32_t *from);
/* Builds the indexes of layers [from, to) not built yet during the prefill, once those layers'
 * queries are captured and their K/V are in the context's cache (the CUDA engine's
 * layer-by-layer prefill), so the building overlaps the later layers; all of them at once, on
 * a share of the threads each; seal() builds the layers not built this way. Not thread-safe
 * with itself: one builder at a time; the capture of later layers may run meanwhile. */
loupe_status rt_retr_build_layers(rt_retr *r, uint32_t from, uint32_t to, loupe_err *err);
loupe_status rt_retr_seal(rt_retr *r, loupe_err *err);
/* The host half of a co-executed decode step (rt_cuda_host_attn_fn's contract) for the token at
 * `pos` of layer il, on a sealed state: stores k and v in the context's cache at pos, logs q as
 * a static-tail query, and writes each query head's partial over the host set. The caller then
 * advances the context's n_past and calls rt_retr_settle once per token. */
loupe_status rt_retr_host_attend(rt_retr *r, uint32_t il, uint32_t pos, const float *q,
                                 const float *k, const float *v, float *out, float *lse,
                                 loupe_err *err);
/* The host set's K/V (host_kv_impl.h): where the CUDA engine's retrieval prefill writes. */
const rt_host_kv *rt_retr_host_kv(const rt_retr *r);
/* First position after the host set (the static tail starts here). */
uint32_t rt_retr_host_end(const rt_retr *r);
loupe_status rt_retr_settle(rt_retr *r, loupe_err *err);
void rt_retr_stats(const rt_retr *r, rt_runner_stats *out);
/* Changes the search of the steps that follow (rt_runner_set_search has the why): the beam
 * (0: topk, at least 100; at most what the state was created for, its cold beam), the expansion (0: all),
 * the entries expanded at a time, the margin, the query heads per traversal and those searched
 * interleaved (clamped as at creation). */
loupe_status rt_retr_set_search(rt_retr *r, int ef, int expand, int expand_batch, float margin,
                                uint32_t search_group, uint32_t interleave, loupe_err *err);

#endif /* LOUPE_RETRIEVAL_IMPL_H */
