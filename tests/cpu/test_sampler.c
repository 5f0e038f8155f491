/*
 * Sampler: greedy = argmax; top-k, top-p and min-p keep exactly the sets computed here
 * independently (in double); draws are reproducible per seed and follow the kept distribution;
 * the repetition penalty pushes a repeated token down.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

enum { V = 500 };

static const double *g_p; /* probabilities cmp_idx sorts by */

static int cmp_idx(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    if (g_p[x] != g_p[y])
        return g_p[x] < g_p[y] ? 1 : -1;
    return x - y;
}

static rt_sampler *make(float temp, int top_k, float top_p, float min_p, uint64_t seed)
{
    rt_sampler_params p;
    rt_sampler_params_init(&p);
    p.temp = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    rt_sampler *s = NULL;
    loupe_err err = {0};
    CHECK(rt_sampler_create(&p, V, &s, &err) == LOUPE_OK);
    return s;
}

/* True if ids[0..n) (any order) equals the set want[0..m). */
static bool same_set(const int32_t *ids, size_t n, const int *want, size_t m)
{
    if (n != m)
        return false;
    static char mark[V];
    memset(mark, 0, sizeof mark);
    for (size_t i = 0; i < m; i++)
        mark[want[i]] = 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V || !mark[ids[i]]--)
            return false;
    return true;
}

int main(void)
{
    test_rng rng;
    uint64_t seed = test_seed();
    test_rng_seed(&rng, seed);
    float logits[V];
    double p[V];
    int order[V];
    int32_t ids[V];
    float probs[V];
    g_p = p;

    for (int trial = 0; trial < 30; trial++) {
        for (int i = 0; i < V; i++)
            logits[i] = 3.0f * test_rng_normal(&rng);
        float temp = 0.5f + test_rng_uniform(&rng);
        /* Independent softmax at temp, sorted order. */
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < V; i++)
            mx = fmax(mx, logits[i] / (double)temp);
        for (int i = 0; i < V; i++)
            sum += (p[i] = exp(logits[i] / (double)temp - mx));
        for (int i = 0; i < V; i++) {
            p[i] /= sum;
            order[i] = i;
        }
        qsort(order, V, sizeof *order, cmp_idx);

        /* Greedy. */
        rt_sampler *s = make(0, 40, 0.9f, 0.1f, 1);
        CHECK_MSG(rt_sampler_sample(s, logits) == order[0], "greedy picked %d, argmax %d",
                  rt_sampler_sample(s, logits), order[0]);
        rt_sampler_destroy(s);

        /* top-k alone. */
        int k = 1 + (int)(test_rng_u64(&rng) % 60);
        s = make(temp, k, 1.0f, 0.0f, 1);
        size_t n = rt_sampler_candidates(s, logits, ids, probs);
        CHECK_MSG(same_set(ids, n, order, (size_t)k), "top-k %d kept %zu", k, n);
        double z = 0;
        for (int i = 0; i < k; i++)
            z += p[order[i]];
        for (size_t i = 0; i < n; i++)
            CHECK_MSG(fabs(probs[i] - p[ids[i]] / z) < 1e-5, "top-k prob of %d: %g vs %g", ids[i],
                      (double)probs[i], p[ids[i]] / z);
        rt_sampler_destroy(s);

        /* top-p alone: the smallest prefix reaching the mass. */
        float top_p = 0.3f + 0.6f * test_rng_uniform(&rng);
        size_t want = 0;
        double cum = 0;
        while (want < V && cum < top_p)
            cum += p[order[want++]];
        s = make(temp, 0, top_p, 0.0f, 1);
        n = rt_sampler_candidates(s, logits, ids, probs);
        /* a boundary within float rounding of top_p may go either way */
        bool boundary = fabs(cum - p[order[want - 1]] - top_p) < 1e-5 || fabs(cum - top_p) < 1e-5;
        CHECK_MSG(same_set(ids, n, order, want) || boundary, "top-p %g kept %zu, want %zu",
                  (double)top_p, n, want);
        rt_sampler_destroy(s);

        /* min-p alone. */
        float min_p = 0.01f + 0.3f * test_rng_uniform(&rng);
        want = 0;
        while (want < V && p[order[want]] >= min_p * p[order[0]])
            want++;
        s = make(temp, 0, 1.0f, min_p, 1);
        n = rt_sampler_candidates(s, logits, ids, probs);
        CHECK_MSG(same_set(ids, n, order, want), "min-p %g kept %zu, want %zu", (double)min_p, n,
                  want);
        for (size_t i = 1; i < n; i++)
            CHECK(probs[i - 1] >= probs[i]); /* most probable first */
        rt_sampler_destroy(s);
    }

    /* Seeded reproducibility; different seeds diverge. */
    for (int i = 0; i < V; i++)
        logits[i] = test_rng_normal(&rng);
    rt_sampler *a = make(1.0f, 0, 1.0f, 0.0f, seed), *b = make(1.0f, 0, 1.0f, 0.0f, seed),
               *c = make(1.0f, 0, 1.0f, 0.0f, seed + 1);
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 200; i++) {
        int32_t x = rt_sampler_sample(a, logits), y = rt_sampler_sample(b, logits),
                w = rt_sampler_sample(c, logits);
        same_ab &= x == y;
        same_ac &= x == w;
    }
    CHECK(same_ab);
    CHECK(!same_ac);
    rt_sampler_destroy(a);
    rt_sampler_destroy(b);
    rt_sampler_destroy(c);

    /* Draw frequencies follow the kept distribution (4 tokens, 20000 draws). */
    for (int i = 0; i < V; i++)
        logits[i] = -30.0f;
    float lg[4] = {2.0f, 1.0f, 0.5f, 0.0f};
    double pe[4], ze = 0;
    for (int i = 0; i < 4; i++) {
        logits[10 * i + 3] = lg[i];
        ze += (pe[i] = exp(lg[i]));
    }
    rt_sampler *d = make(1.0f, 4, 1.0f, 0.0f, seed);
    int hits[4] = {0, 0, 0, 0};
    const int draws = 20000;
    for (int i = 0; i < draws; i++) {
        int32_t id = rt_sampler_sample(d, logits);
        CHECK(id % 10 == 3 && id / 10 < 4);
        if (id % 10 == 3 && id / 10 < 4)
            hits[id / 10]++;
    }
    for (int i = 0; i < 4; i++) {
        double want = draws * pe[i] / ze, sd = sqrt(want * (1 - pe[i] / ze));
        CHECK_MSG(fabs(hits[i] - want) < 5 * sd, "token %d drawn %d times, expected %.0f", i,
                  hits[i], want);
    }
    rt_sampler_destroy(d);

    /* Repetition penalty: the argmax, once seen, loses to the runner-up. */
    rt_sampler_params rp;
    rt_sampler_params_init(&rp);
    rp.temp = 0;
    rp.repeat_penalty = 2.0f;
    for (int i = 0; i < V; i++)
        logits[i] = test_rng_uniform(&rng);
    logits[7] = 5.0f;
    logits[9] = 3.0f;
    rt_sampler *e = NULL;
    loupe_err err = {0};
    CHECK(rt_sampler_create(&rp, V, &e, &err) == LOUPE_OK);
    CHECK(rt_sampler_sample(e, logits) == 7);
    rt_sampler_accept(e, 7);
    rt_sampler_accept(e, 7); /* seen twice: still penalised once (5/2 = 2.5 < 3) */
    CHECK(rt_sampler_sample(e, logits) == 9);
    rt_sampler_reset(e);
    CHECK(rt_sampler_sample(e, logits) == 7);
    rt_sampler_destroy(e);
    return test_summary("test_sampler");
}
