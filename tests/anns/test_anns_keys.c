/* Key storage: bf16 and int8 scores stay within their derived error bounds of the f32 score;
 * views read the caller's rows with a stride; bad shapes are refused with a sentence. */
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
    ann_keys *f32 = NULL, *bf = NULL, *i8 = NULL, *view = NULL;
    loupe_err err;
    loupe_err_clear(&err);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_F32, &f32, &err) == LOUPE_OK);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_BF16, &bf, &err) == LOUPE_OK);
    CHECK(ann_keys_create(k, N, D, ANN_KEYS_INT8, &i8, &err) == LOUPE_OK);
    CHECK(ann_keys_bytes(bf) == (size_t)N * D * 2);
    CHECK(ann_keys_bytes(i8) == (size_t)N * D + N * 4);
    double worst_bf = 0, worst_i8 = 0;
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
            worst_bf = fmax(worst_bf, e_bf / b_bf);
            worst_i8 = fmax(worst_i8, e_i8 / b_i8);
        }
    }
    fprintf(stderr, "worst error / bound: bf16 %.3f, int8 %.3f\n", worst_bf, worst_i8);
    /* The bounds are not vacuous: int8 errors reach a visible fraction of theirs. */
    CHECK(worst_i8 > 0.05);

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
    CHECK(ann_keys_view(ANN_KEYS_F32, wide, NULL, N, D, D - 1, &bad, &err) == LOUPE_ERR_INVALID);

    ann_keys_destroy(NULL);
    ann_keys_destroy(f32);
    ann_keys_destroy(bf);
    ann_keys_destroy(i8);
    ann_keys_destroy(view);
    free(k);
    free(wide);
    return test_summary("test_anns_keys");
}
