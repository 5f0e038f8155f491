/*
 * The host set's K/V in a storage type (host_kv_impl.h has the why and the layout).
 */
#include "runtime/host_kv_impl.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/model_impl.h"

static size_t rows(const rt_host_kv *kv)
{
    return (size_t)kv->n_layer * kv->n_kv * kv->n_ctx;
}

/* Index of the row of (layer, kv_head, pos). */
static size_t row_of(const rt_host_kv *kv, uint32_t layer, uint32_t kv_head, uint32_t pos)
{
    return ((size_t)layer * kv->n_kv + kv_head) * kv->n_ctx + pos;
}

/* An empty kv of that shape. */
static void set_shape(rt_host_kv *kv, ann_key_type type, uint32_t n_layer, uint32_t n_kv,
                      uint32_t n_ctx, uint32_t hd)
{
    *kv = (rt_host_kv){.type = type, .n_layer = n_layer, .n_kv = n_kv, .n_ctx = n_ctx, .hd = hd};
}

loupe_status rt_host_kv_alloc(rt_host_kv *kv, ann_key_type type, uint32_t n_layer, uint32_t n_kv,
                              uint32_t n_ctx, uint32_t hd, loupe_err *err)
{
    set_shape(kv, type, n_layer, n_kv, n_ctx, hd);
    kv->owned = true;
    const size_t n = rows(kv), bytes = n * hd * ann_key_type_bytes(type);
    kv->k = ann_rows_alloc(bytes);
    kv->v = ann_rows_alloc(bytes);
    if (type == ANN_KEYS_INT8) {
        kv->k_scale = calloc(n ? n : 1, sizeof(float));
        kv->v_scale = calloc(n ? n : 1, sizeof(float));
    }
    if (!kv->k || !kv->v || (type == ANN_KEYS_INT8 && (!kv->k_scale || !kv->v_scale))) {
        rt_host_kv_free(kv);
        return loupe_fail(err, LOUPE_ERR_NOMEM,
                          "out of host memory for the host K/V: %.1f GiB as %s for %u tokens "
                          "(--host-kv int8 needs half of bf16)",
                          2.0 * (double)bytes / (1 << 30), ann_key_type_name(type), n_ctx);
    }
    return LOUPE_OK;
}

void rt_host_kv_view_f32(rt_host_kv *kv, float *k, float *v, uint32_t n_layer, uint32_t n_kv,
                         uint32_t n_ctx, uint32_t hd)
{
    set_shape(kv, ANN_KEYS_F32, n_layer, n_kv, n_ctx, hd);
    kv->k = k;
    kv->v = v;
}

void rt_host_kv_free(rt_host_kv *kv)
{
    if (kv->owned) {
        ann_rows_free(kv->k);
        ann_rows_free(kv->v);
        free(kv->k_scale);
        free(kv->v_scale);
    }
    memset(kv, 0, sizeof *kv);
}

size_t rt_host_kv_bytes(const rt_host_kv *kv)
{
    if (!kv->k)
        return 0;
    const size_t n = rows(kv);
    return 2 * n * kv->hd * ann_key_type_bytes(kv->type) +
           (kv->type == ANN_KEYS_INT8 ? 2 * n * sizeof(float) : 0);
}

void rt_host_kv_store(rt_host_kv *kv, uint32_t layer, uint32_t kv_head, uint32_t pos,
                      const float *k, const float *v)
{
    const size_t r = row_of(kv, layer, kv_head, pos), es = ann_key_type_bytes(kv->type);
    const bool i8 = kv->type == ANN_KEYS_INT8;
    ann_keys_encode_row(kv->type, k, (int)kv->hd, (char *)kv->k + r * kv->hd * es,
                        i8 ? &kv->k_scale[r] : NULL);
    ann_keys_encode_row(kv->type, v, (int)kv->hd, (char *)kv->v + r * kv->hd * es,
                        i8 ? &kv->v_scale[r] : NULL);
}

/* Row r of one array widened to float32. */
static void widen(const rt_host_kv *kv, const void *base, const float *scale, size_t r, float *out)
{
    const uint32_t hd = kv->hd;
    switch (kv->type) {
    case ANN_KEYS_F32:
        memcpy(out, (const float *)base + r * hd, hd * sizeof *out);
        break;
    case ANN_KEYS_BF16: {
        const uint16_t *p = (const uint16_t *)base + r * hd;
        for (uint32_t i = 0; i < hd; i++) {
            uint32_t bits = (uint32_t)p[i] << 16;
            memcpy(&out[i], &bits, sizeof bits);
        }
        break;
    }
    default: {
        const int8_t *p = (const int8_t *)base + r * hd;
        const float s = scale[r];
        for (uint32_t i = 0; i < hd; i++)
            out[i] = s * (float)p[i];
        break;
    }
    }
}

void rt_host_kv_gather(const rt_host_kv *kv, uint32_t layer, uint32_t kv_head,
                       const int32_t *pos, uint32_t pos0, size_t n, float *K, float *V)
{
    const size_t r0 = row_of(kv, layer, kv_head, 0);
    for (size_t i = 0; i < n; i++) {
        const size_t r = r0 + (pos ? (size_t)pos[i] : pos0 + i);
        if (K)
            widen(kv, kv->k, kv->k_scale, r, K + i * kv->hd);
        if (V)
            widen(kv, kv->v, kv->v_scale, r, V + i * kv->hd);
    }
}

loupe_status rt_host_kv_keys_view(const rt_host_kv *kv, uint32_t layer, uint32_t kv_head,
                                  uint32_t p0, int64_t n, ann_keys **out, loupe_err *err)
{
    const size_t r = row_of(kv, layer, kv_head, p0);
    const char *rows = (const char *)kv->k + r * kv->hd * ann_key_type_bytes(kv->type);
    return ann_keys_view(kv->type, rows, kv->type == ANN_KEYS_INT8 ? kv->k_scale + r : NULL, n,
                         (int)kv->hd, kv->hd, out, err);
}
