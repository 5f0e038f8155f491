/* Key storage: bf16, int8 and int8c scores stay within their derived error bounds of the f32
 * score; views read the caller's rows with a stride; a search copy (int8c) of bf16 keys follows
 * their growth, widening its channels' scales where new rows need it; bad shapes are refused
 * with a sentence. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "common/test_util.h"

int main(void)
{
    test_rng r;
    test_rng_seed(&r, test_seed());
    enum { N = 300, D = 100 }; /* D not a multiple of 16: exercises the kernels' tails */
    float *k = malloc(sizeof(float) * N * D), q[D], row[D];
    for (int i = 0; i < N * D; i++) /* mixed magnitudes, like keys with outlier channels */
        k[i] = test_rng_normal(&r) * (i % 7 == 0 ? 8.0f : 1.0f);
    ann_keys *f32 = NULL, *bf = NULL, *i8 = NULL, *i8c = NULL, *view = NULL;
    float cmax[D] = {0}; /* the channels' max |k| */
    for (int i = 0; i < N * D; i++)
        cmax[i % D] = fmaxf(cmax[i % D], fabsf(k[i]));
    loupe_err err;
    loupe_err_clear(&err);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_F32, &f32, &err) == LOUPE_OK);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_BF16, &bf, &err) == LOUPE_OK);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_INT8, &i8, &err) == LOUPE_OK);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_INT8C, &i8c, &err) == LOUPE_OK);
    CHECK(ann_keys_bytes(bf) == (size_t)N * D * 2);
    CHECK(ann_keys_bytes(i8) == (size_t)N * D + N * 4);
    CHECK(ann_keys_bytes(i8c) == (size_t)N * D + D * 4);
    CHECK(strcmp(ann_key_type_name(ANN_KEYS_INT8C), "int8c") == 0);
    double worst_bf = 0, worst_i8 = 0, worst_i8c = 0;
    for (int t = 0; t < 20; t++) {
        for (int i = 0; i < D; i++)
            q[i] = test_rng_normal(&r);
        for (int id = 0; id < N; id++) {
            double exact = 0, absdot = 0, q1 = 0, amax = 0;
            for (int i = 0; i < D; i++) {
                exact += (double)q[i] * k[id * D + i];
                absdot += fabs((double)q[i] * k[id * D + i]);
                q1 += fabs(q[i]);
                amax = fmax(amax, fabs(k[id * D + i]));
            }
            double fp = 1e-5 * absdot; /* f32 accumulation error */
            /* f32 storage: only accumulation error */
            CHECK(fabs(ann_keys_score(f32, q, id) - exact) <= fp);
            /* bf16: |k - bf16(k)| <= 2^-9 |k| per element */
            double e_bf = fabs(ann_keys_score(bf, q, id) - exact), b_bf = absdot / 512.0 + fp;
            CHECK_MSG(e_bf <= b_bf, "bf16 error %g > bound %g", e_bf, b_bf);
            /* int8: |k - s·k8| <= s/2 per element, s = max|k|/127 */
            double s = amax / 127.0;
            double e_i8 = fabs(ann_keys_score(i8, q, id) - exact), b_i8 = s * q1 / 2 + fp;
            CHECK_MSG(e_i8 <= b_i8, "int8 error %g > bound %g", e_i8, b_i8);
            /* int8c: |k_i - s_i·c_i| <= s_i/2 per element, s_i = max over the rows of |k_i|/127 */
            double b_i8c = fp;
            for (int i = 0; i < D; i++)
                b_i8c += fabs(q[i]) * cmax[i] / 127.0 / 2;
            double e_i8c = fabs(ann_keys_score(i8c, q, id) - exact);
            CHECK_MSG(e_i8c <= b_i8c, "int8c error %g > bound %g", e_i8c, b_i8c);
            worst_bf = fmax(worst_bf, e_bf / b_bf);
            worst_i8 = fmax(worst_i8, e_i8 / b_i8);
            worst_i8c = fmax(worst_i8c, e_i8c / b_i8c);
        }
    }
    fprintf(stderr, "worst error / bound: bf16 %.3f, int8 %.3f, int8c %.3f\n", worst_bf, worst_i8,
            worst_i8c);
    /* The bounds are not vacuous: int8 errors reach a visible fraction of theirs. */
    CHECK(worst_i8 > 0.05 && worst_i8c > 0.05);

    /* A search copy of bf16 keys: the first 200 rows now, the rest when the keys grow to N.
     * Its channel scales come from the first 200 rows, and widen where the rest exceed them. */
    uint16_t *rows16 = malloc(sizeof(uint16_t) * N * D);
    float first[D] = {0}, all[D] = {0}; /* max |k_i| over rows 0..199 and 0..N-1, as in bf16 */
    for (int id = 0; id < N; id++) {
        ann_keys_row(bf, id, row);
        ann_keys_encode_row(ANN_KEYS_BF16, row, D, rows16 + id * D, NULL);
        for (int i = 0; i < D; i++) {
            all[i] = fmaxf(all[i], fabsf(row[i]));
            if (id < 200)
                first[i] = all[i];
        }
    }
    ann_keys *grown = NULL, *copy = NULL;
    CHECK(ann_keys_view(ANN_KEYS_BF16, rows16, NULL, 200, D, D, &grown, &err) == LOUPE_OK);
    CHECK(ann_keys_search_copy(grown, 100, &copy, &err) == LOUPE_ERR_INVALID && !copy);
    CHECK(ann_keys_search_copy(grown, N, &copy, &err) == LOUPE_OK);
    CHECK(ann_keys_count(copy) == 200 && ann_keys_type(copy) == ANN_KEYS_INT8C);
    const float *scales = NULL;
    ann_keys_data(copy, NULL, &scales);
    for (int i = 0; i < D; i++)
        CHECK(scales[i] == first[i] / 127.0f);
    CHECK(ann_keys_set_count(copy, N, &err) == LOUPE_ERR_INVALID); /* grows by sync alone */
    CHECK(ann_keys_set_count(grown, N, &err) == LOUPE_OK);
    CHECK(ann_keys_search_copy_sync(copy, grown, &err) == LOUPE_OK && ann_keys_count(copy) == N);
    int widened = 0;
    for (int i = 0; i < D; i++) {
        CHECK(scales[i] == all[i] / 127.0f);
        widened += all[i] > first[i];
    }
    CHECK(widened > 0); /* rows 200.. exceed the first rows' range somewhere */
    for (int id = 0; id < N; id++) { /* every row, old ones included, under the wider scales */
        float src[D];
        ann_keys_row(bf, id, src);
        ann_keys_row(copy, id, row);
        for (int i = 0; i < D; i++)
            CHECK_MSG(fabsf(row[i] - src[i]) <= all[i] / 127.0f * 0.5001f + 1e-6f,
                      "copy row %d lane %d: %g for %g", id, i, row[i], src[i]);
    }
    ann_keys *small = NULL; /* a copy with room for 250 rows cannot follow 300 */
    CHECK(ann_keys_set_count(grown, 200, &err) == LOUPE_OK);
    CHECK(ann_keys_search_copy(grown, 250, &small, &err) == LOUPE_OK);
    CHECK(ann_keys_set_count(grown, N, &err) == LOUPE_OK);
    CHECK(ann_keys_search_copy_sync(small, grown, &err) == LOUPE_ERR_INVALID);
    CHECK(strstr(err.msg, "room 250") != NULL);
    CHECK(ann_keys_set_count(grown, 100, &err) == LOUPE_OK);
    CHECK(ann_keys_search_copy_sync(copy, grown, &err) == LOUPE_ERR_INVALID); /* shrank */
    ann_keys_destroy(small);
    ann_keys_destroy(copy);
    ann_keys_destroy(grown);
    free(rows16);

    /* Widening a row reproduces the stored values. */
    ann_keys_row(i8, 5, row);
    float amax5 = 0;
    for (int i = 0; i < D; i++)
        amax5 = fmaxf(amax5, fabsf(k[5 * D + i]));
    for (int i = 0; i < D; i++)
        CHECK(fabsf(row[i] - k[5 * D + i]) <= amax5 / 127.0f * 0.5001f + 1e-6f);
    ann_keys_row(f32, 7, row);
    CHECK(memcmp(row, k + 7 * D, sizeof row) == 0);

    /* A strided view over f32 rows of width D+3 scores like the owned copy. */
    float *wide = malloc(sizeof(float) * N * (D + 3));
    for (int id = 0; id < N; id++) {
        memcpy(wide + id * (D + 3), k + id * D, sizeof(float) * D);
        for (int i = 0; i < 3; i++)
            wide[id * (D + 3) + D + i] = 1e9f; /* must be ignored */
    }
    CHECK(ann_keys_view(ANN_KEYS_F32, wide, NULL, N, D, D + 3, &view, &err) == LOUPE_OK);
    for (int id = 0; id < N; id += 17)
        CHECK(ann_keys_score(view, q, id) == ann_keys_score(f32, q, id));

    /* Refusals come with a sentence. */
    ann_keys *bad = NULL;
    CHECK(ann_keys_create(k, 0, D, ANN_KEYS_BF16, &bad, &err) == LOUPE_ERR_INVALID && !bad);
    CHECK(strstr(err.msg, "key count") != NULL);
    CHECK(ann_keys_view(ANN_KEYS_INT8, wide, NULL, N, D, D, &bad, &err) == LOUPE_ERR_INVALID);
    CHECK(ann_keys_view(ANN_KEYS_INT8C, wide, NULL, N, D, D, &bad, &err) == LOUPE_ERR_INVALID);
    CHECK(ann_keys_view(ANN_KEYS_F32, wide, NULL, N, D, D - 1, &bad, &err) == LOUPE_ERR_INVALID);

    ann_keys_destroy(NULL);
    ann_keys_destroy(f32);
    ann_keys_destroy(bf);
    ann_keys_destroy(i8);
    ann_keys_destroy(i8c);
    ann_keys_destroy(view);
    free(k);
    free(wide);
    return test_summary("test_anns_keys");
}
