/*
 * Private to runtime/: the host set's K/V for retrieval attention, in a storage type.
 *
 * Retrieval attention keeps most of a long context's K/V in host memory, where the indexes
 * search the keys and the top-k rows are attended on CPU threads. In float32 that is 32 GiB for
 * the Llama-3-8B shape at 128K tokens and 256 GiB at 1M — past a 125 GB machine — so the rows
 * are stored like anns' keys (anns.h: ANN_KEYS_BF16, round to nearest even; ANN_KEYS_INT8, a
 * per-row scale max|x| / 127), keys and values alike, and the indexes search views over the
 * stored keys without a copy.
 *
 * Layout (n_layer, n_kv, n_ctx, hd) like the CPU context's cache, a row per position. Two ways
 * to have one:
 *   owned   rt_host_kv_alloc: zeroed, huge pages advised; the CUDA engine's retrieval prefill
 *           writes it directly (rt_cuda_set_host_kv), rt_host_kv_store adds rows one by one;
 *   view    rt_host_kv_view_f32: float32 over a CPU context's own cache (no copy).
 * Readers widen rows to float32 (rt_host_kv_gather) before attending to them, so attention
 * sees exactly the values the indexes score.
 */
#ifndef LOUPE_HOST_KV_IMPL_H
#define LOUPE_HOST_KV_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"

typedef struct {
    ann_key_type type;        /* element type of k and v */
    uint32_t n_layer, n_kv, n_ctx, hd;
    void *k, *v;              /* (n_layer, n_kv, n_ctx, hd) elements of `type` */
    float *k_scale, *v_scale; /* int8: (n_layer, n_kv, n_ctx) row scales; else NULL */
    bool owned;               /* freed by rt_host_kv_free (else a view) */
} rt_host_kv;

/* Allocates zeroed storage. On failure says how much was asked for; kv is left empty. */
loupe_status rt_host_kv_alloc(rt_host_kv *kv, ann_key_type type, uint32_t n_layer, uint32_t n_kv,
                              uint32_t n_ctx, uint32_t hd, loupe_err *err);
/* A float32 view over caller-owned (n_layer, n_kv, n_ctx, hd) arrays. */
void rt_host_kv_view_f32(rt_host_kv *kv, float *k, float *v, uint32_t n_layer, uint32_t n_kv,
                         uint32_t n_ctx, uint32_t hd);
/* Frees owned storage (a view: forgets it); kv becomes empty. Accepts an empty kv. */
void rt_host_kv_free(rt_host_kv *kv);

/* Bytes of the rows and scales (a view counts the arrays it covers). */
size_t rt_host_kv_bytes(const rt_host_kv *kv);

/* Stores the float32 rows k and v (hd each) of (layer, kv_head, pos), encoded. */
void rt_host_kv_store(rt_host_kv *kv, uint32_t layer, uint32_t kv_head, uint32_t pos,
                      const float *k, const float *v);
/* Widens the rows of (layer, kv_head) at positions pos[0..n) — or pos0, pos0 + 1, ... when pos
 * is NULL — to float32 into K and V (n, hd) each; either may be NULL. */
void rt_host_kv_gather(const rt_host_kv *kv, uint32_t layer, uint32_t kv_head,
                       const int32_t *pos, uint32_t pos0, size_t n, float *K, float *V);
/* An ann_keys VIEW over the stored keys of (layer, kv_head) at positions [p0, p0 + n), which can
 * grow in place up to n_ctx (ann_keys_set_count). Caller destroys the view; kv outlives it. */
loupe_status rt_host_kv_keys_view(const rt_host_kv *kv, uint32_t layer, uint32_t kv_head,
                                  uint32_t p0, int64_t n, ann_keys **out, loupe_err *err);

#endif /* LOUPE_HOST_KV_IMPL_H */
