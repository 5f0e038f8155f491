/*
 * Tiled attention (rt_attn_tile): random tiles of queries over prefixes of the same keys, with
 * ragged causal lengths (consecutive tokens, lengths at and around block edges of 64 keys, lengths
 * more than a block apart, empty queries), odd head dims (tails of 8 and of 32), and big scores.
 * Each query must be bit-identical to rt_attn_partial over its own keys (the invariant that keeps
 * decode == prefill), and within the partial test's bounds of a double-precision softmax.
 * Run once on the SIMD path and once with LOUPE_CPU_SIMD=0 (see CMakeLists.txt).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "cpu/attn_ref.h"
#include "runtime/model_impl.h"

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    static const int dims[] = {128, 64, 40, 100, 8, 3};
    enum { TRIALS = 48 };
    int bit_mismatch = 0;
    for (int trial = 0; trial < TRIALS; trial++) {
        int d = dims[trial % 6];
        size_t nq = 1 + test_rng_u64(&rng) % RT_ATTN_TILE_MAX;
        if (trial % 8 == 7)
            nq = RT_ATTN_TILE_MAX; /* full tiles too */
        float amp = trial % 5 == 4 ? 60.0f : 1.0f; /* big scores: e^s overflows float */
        double tol = amp > 1 ? 1e-4 : 1e-5;

        /* Lengths: like the forward pass (group of heads × consecutive tokens), or around a
         * block edge, or spread over several blocks, with an occasional empty query. */
        size_t n[RT_ATTN_TILE_MAX], nmax = 0;
        size_t base = test_rng_u64(&rng) % 700;
        int mode = trial % 4;
        size_t group = 1 + test_rng_u64(&rng) % 4;
        for (size_t i = 0; i < nq; i++) {
            if (mode == 0)
                n[i] = base + 1 + i / group; /* token i / group of the chunk */
            else if (mode == 1)
                n[i] = 64 * (1 + test_rng_u64(&rng) % 4) + (size_t)(test_rng_u64(&rng) % 3) - 1;
            else if (mode == 2)
                n[i] = test_rng_u64(&rng) % 400;
            else
                n[i] = base + test_rng_u64(&rng) % 9;
            if (test_rng_uniform(&rng) < 0.05f)
                n[i] = 0;
            if (n[i] > nmax)
                nmax = n[i];
        }
        size_t rows = nmax ? nmax : 1;
        float *q = malloc(nq * d * sizeof *q), *k = malloc(rows * d * sizeof *k),
              *v = malloc(rows * d * sizeof *v), *o = malloc(nq * d * sizeof *o),
              *po = malloc(d * sizeof *po);
        double *ro = malloc(d * sizeof *ro);
        for (size_t i = 0; i < nq * d; i++)
            q[i] = test_rng_normal(&rng) * amp;
        for (size_t i = 0; i < rows * d; i++) {
            k[i] = test_rng_normal(&rng);
            v[i] = test_rng_normal(&rng);
        }
        /* Outputs start as garbage: the kernel must not read them. */
        for (size_t i = 0; i < nq * d; i++)
            o[i] = 1e30f;
        const float *qp[RT_ATTN_TILE_MAX];
        float *op[RT_ATTN_TILE_MAX], lse[RT_ATTN_TILE_MAX];
        for (size_t i = 0; i < nq; i++) {
            qp[i] = q + i * d;
            op[i] = o + i * d;
        }
        float scale = 1.0f / sqrtf((float)d);
        rt_attn_tile(qp, k, v, (uint32_t)d, n, nq, scale, op, lse);

        for (size_t i = 0; i < nq; i++) {
            float pl;
            rt_attn_partial(qp[i], k, v, (uint32_t)d, NULL, n[i], scale, po, &pl);
            int same = memcmp(po, op[i], d * sizeof *po) == 0 && memcmp(&pl, &lse[i], 4) == 0;
            if (!same && bit_mismatch++ < 5)
                fprintf(stderr, "trial %d query %zu (n=%zu d=%d): differs from rt_attn_partial\n",
                        trial, i, n[i], d);
            CHECK(same);
            double rl;
            ref_attn(qp[i], k, v, d, NULL, n[i], scale, ro, &rl);
            if (n[i] == 0) {
                CHECK(isinf(lse[i]) && lse[i] < 0);
                for (int x = 0; x < d; x++)
                    CHECK(op[i][x] == 0.0f);
                continue;
            }
            double e = max_rel(op[i], ro, d);
            CHECK_MSG(e < tol, "trial %d query %zu n=%zu d=%d: rel err %g", trial, i, n[i], d, e);
            CHECK_MSG(fabs(lse[i] - rl) <= 1e-5 * fmax(1.0, fabs(rl)),
                      "trial %d query %zu: lse %g vs %g", trial, i, (double)lse[i], rl);
        }
        free(q);
        free(k);
        free(v);
        free(o);
        free(po);
        free(ro);
    }
    return test_summary("test_attn_tile");
}
