/*
 * Attention partials: rt_attn_partial against a double-precision two-pass softmax, and
 * rt_attn_merge of partials over random disjoint key subsets == the partial over all keys.
 * Also: empty subsets, huge scores (no overflow), merge order independence.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "cpu/attn_ref.h"
#include "runtime/runtime.h"

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    for (int trial = 0; trial < 20; trial++) {
        int d = (trial % 3 == 0) ? 64 : (trial % 3 == 1 ? 128 : 40);
        size_t n = 1 + test_rng_u64(&rng) % 3000;
        float amp = trial % 5 == 4 ? 60.0f : 1.0f; /* big scores: e^s overflows float */
        /* float scores carry ~1e-7·|s| absolute error, so huge scores loosen the output bound */
        double tol = amp > 1 ? 1e-4 : 1e-5;
        float *q = malloc(d * sizeof *q), *k = malloc(n * d * sizeof *k),
              *v = malloc(n * d * sizeof *v);
        for (int i = 0; i < d; i++)
            q[i] = test_rng_normal(&rng) * amp;
        for (size_t i = 0; i < n * d; i++) {
            k[i] = test_rng_normal(&rng);
            v[i] = test_rng_normal(&rng);
        }
        float scale = 1.0f / sqrtf((float)d);
        float *o = malloc(d * sizeof *o), *o1 = malloc(d * sizeof *o1),
              *o2 = malloc(d * sizeof *o2);
        double *ro = malloc(d * sizeof *ro), rl;
        float l, l1, l2;

        /* Whole set against the reference. */
        rt_attn_partial(q, k, v, (uint32_t)d, NULL, n, scale, o, &l);
        ref_attn(q, k, v, d, NULL, n, scale, ro, &rl);
        double e = max_rel(o, ro, d);
        CHECK_MSG(e < tol, "trial %d n=%zu d=%d: output rel err %g", trial, n, d, e);
        CHECK_MSG(fabs(l - rl) <= 1e-5 * fmax(1.0, fabs(rl)), "trial %d: lse %g vs %g", trial,
                  (double)l, rl);

        /* Random split into two disjoint subsets via idx, merged. */
        int32_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        size_t na = 0, nb = 0;
        for (size_t j = 0; j < n; j++) {
            if (test_rng_uniform(&rng) < 0.3f)
                a[na++] = (int32_t)j;
            else
                b[nb++] = (int32_t)j;
        }
        rt_attn_partial(q, k, v, (uint32_t)d, a, na, scale, o1, &l1);
        rt_attn_partial(q, k, v, (uint32_t)d, b, nb, scale, o2, &l2);
        float om[256], lm, om2[256], lm2;
        rt_attn_merge(o1, l1, o2, l2, (uint32_t)d, om, &lm);
        rt_attn_merge(o2, l2, o1, l1, (uint32_t)d, om2, &lm2);
        e = max_rel(om, ro, d);
        CHECK_MSG(e < tol, "trial %d: merged (%zu + %zu keys) rel err %g", trial, na, nb, e);
        CHECK_MSG(fabs(lm - rl) <= 1e-5 * fmax(1.0, fabs(rl)), "trial %d: merged lse %g vs %g",
                  trial, (double)lm, rl);
        CHECK(max_rel(om2, ro, d) < tol);

        /* Subset partial alone against the reference over the same subset. */
        ref_attn(q, k, v, d, a, na, scale, ro, &rl);
        if (na > 0)
            CHECK_MSG(max_rel(o1, ro, d) < tol, "trial %d: subset rel err %g", trial,
                      max_rel(o1, ro, d));

        /* Merging in place with an empty partial changes nothing. */
        float oe[256], le;
        rt_attn_partial(q, k, v, (uint32_t)d, NULL, 0, scale, oe, &le);
        CHECK(isinf(le) && le < 0);
        memcpy(om2, o1, d * sizeof *o1);
        rt_attn_merge(om2, l1, oe, le, (uint32_t)d, om2, &lm2);
        CHECK(memcmp(om2, o1, d * sizeof *o1) == 0 && lm2 == l1);

        free(a);
        free(b);
        free(q);
        free(k);
        free(v);
        free(o);
        free(o1);
        free(o2);
        free(ro);
    }
    /* Both empty: zeros and -inf, no NaN. */
    float z1[4] = {1, 2, 3, 4}, z2[4] = {5, 6, 7, 8}, zo[4], zl;
    rt_attn_merge(z1, -INFINITY, z2, -INFINITY, 4, zo, &zl);
    CHECK(zo[0] == 0 && zo[3] == 0 && isinf(zl));
    return test_summary("test_attn_partial");
}
