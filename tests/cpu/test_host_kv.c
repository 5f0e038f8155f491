/*
 * The host K/V of retrieval attention (runtime/host_kv.c) in each storage type: rows stored and
 * gathered back are within the type's bound of the originals (f32 exact; bf16 2^-8 relative;
 * int8 half a step of max|row| / 127), equal what anns stores for the same rows (the view the
 * indexes search scores q·k from exactly the gathered keys), gathers by position list and by
 * range agree, rows of other (layer, head, position) are untouched, and bytes are counted.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "common/test_util.h"
#include "runtime/host_kv_impl.h"

enum { LAYERS = 2, HEADS = 3, CTX = 37, HD = 64 };

static void check_type(test_rng *rng, ann_key_type type)
{
    rt_host_kv kv;
    loupe_err err;
    CHECK(rt_host_kv_alloc(&kv, type, LAYERS, HEADS, CTX, HD, &err) == LOUPE_OK);
    const size_t n_rows = (size_t)LAYERS * HEADS * CTX;
    float *k = malloc(n_rows * HD * sizeof *k), *v = malloc(n_rows * HD * sizeof *v);
    for (size_t i = 0; i < n_rows * HD; i++) {
        k[i] = test_rng_normal(rng) * (1.0f + (float)(i % 7)); /* rows of different scales */
        v[i] = test_rng_normal(rng);
    }
    /* every row but (layer 1, head 2, position 5), which stays zero */
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t h = 0; h < HEADS; h++)
            for (uint32_t p = 0; p < CTX; p++) {
                if (l == 1 && h == 2 && p == 5)
                    continue;
                size_t r = ((size_t)l * HEADS + h) * CTX + p;
                rt_host_kv_store(&kv, l, h, p, k + r * HD, v + r * HD);
            }
    float K[CTX * HD], V[CTX * HD], K2[CTX * HD];
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t h = 0; h < HEADS; h++) {
            rt_host_kv_gather(&kv, l, h, NULL, 0, CTX, K, V);
            int32_t pos[CTX];
            for (int i = 0; i < CTX; i++)
                pos[i] = CTX - 1 - i;
            rt_host_kv_gather(&kv, l, h, pos, 0, CTX, K2, NULL);
            for (int i = 0; i < CTX; i++)
                CHECK(!memcmp(K2 + (size_t)i * HD, K + (size_t)(CTX - 1 - i) * HD, HD * 4));
            ann_keys *view = NULL;
            CHECK(rt_host_kv_keys_view(&kv, l, h, 0, CTX, &view, &err) == LOUPE_OK);
            for (uint32_t p = 0; p < CTX; p++) {
                size_t r = ((size_t)l * HEADS + h) * CTX + p;
                const float *kr = k + r * HD, *vr = v + r * HD;
                const float *kg = K + (size_t)p * HD, *vg = V + (size_t)p * HD;
                bool zero = l == 1 && h == 2 && p == 5;
                float kmax = 0, vmax = 0, row[HD];
                for (int i = 0; i < HD; i++) {
                    kmax = fmaxf(kmax, fabsf(kr[i]));
                    vmax = fmaxf(vmax, fabsf(vr[i]));
                }
                for (int i = 0; i < HD; i++) {
                    float kb = type == ANN_KEYS_F32    ? 0
                               : type == ANN_KEYS_BF16 ? fabsf(kr[i]) / 256
                                                       : kmax / 127 * 0.5001f;
                    float vb = type == ANN_KEYS_F32    ? 0
                               : type == ANN_KEYS_BF16 ? fabsf(vr[i]) / 256
                                                       : vmax / 127 * 0.5001f;
                    CHECK_MSG(zero ? kg[i] == 0 : fabsf(kg[i] - kr[i]) <= kb, "%s k %u/%u/%u",
                              ann_key_type_name(type), l, h, p);
                    CHECK_MSG(zero ? vg[i] == 0 : fabsf(vg[i] - vr[i]) <= vb, "%s v %u/%u/%u",
                              ann_key_type_name(type), l, h, p);
                }
                /* the indexes see exactly the gathered keys */
                ann_keys_row(view, p, row);
                CHECK(!memcmp(row, kg, sizeof row));
            }
            ann_keys_destroy(view);
        }
    size_t es = type == ANN_KEYS_F32 ? 4 : type == ANN_KEYS_BF16 ? 2 : 1;
    CHECK(rt_host_kv_bytes(&kv) ==
          2 * n_rows * HD * es + (type == ANN_KEYS_INT8 ? 2 * n_rows * 4 : 0));
    rt_host_kv_free(&kv);
    CHECK(rt_host_kv_bytes(&kv) == 0);
    rt_host_kv_free(&kv); /* an empty one: nothing */
    free(k);
    free(v);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    check_type(&rng, ANN_KEYS_F32);
    check_type(&rng, ANN_KEYS_BF16);
    check_type(&rng, ANN_KEYS_INT8);

    /* A float32 view over caller arrays reads them in place. */
    float k[2 * 4 * 8], v[2 * 4 * 8], K[4 * 8];
    for (int i = 0; i < 64; i++) {
        k[i] = (float)i;
        v[i] = (float)-i;
    }
    rt_host_kv kv;
    rt_host_kv_view_f32(&kv, k, v, 2, 1, 4, 8);
    rt_host_kv_gather(&kv, 1, 0, NULL, 1, 3, K, NULL);
    CHECK(K[0] == 40.0f && K[23] == 63.0f);
    CHECK(rt_host_kv_bytes(&kv) == sizeof k + sizeof v);
    rt_host_kv_free(&kv); /* a view: forgets, frees nothing */
    CHECK(kv.k == NULL);
    return test_summary("test_host_kv");
}
