/*
 * The seeding ring (runtime/seed_ring.c): what a search seeded from every step back gained over
 * one seeded from the newest step alone (keys of the two lists' best k that only it found), the
 * verdict a gain and a row cost give (random weights: the steps back gave keys, which the rule
 * before counted, but the search from the newest step found them too at half the rows), and the
 * seeds a verdict hands a search, and the layers' turns at exploring. Hand-made lists, one
 * layer and one head (32 layers for the turns).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "runtime/seed_ring_impl.h"

enum { LAGS = 16, TOPK = 10, N_HOST = 1000000 };

/* A list of n keys first, first + step, ... with scores top, top - 1, ... (best first). */
static void list(int32_t *ids, float *sc, int n, int32_t first, int32_t step, float top)
{
    for (int i = 0; i < n; i++) {
        ids[i] = first + i * step;
        sc[i] = top - (float)i;
    }
}

/* The list of the step `lag` back (1: the newest) after rt_seed_ring_start(LAGS). */
static int32_t *list_back(rt_seed_ring *s, uint32_t lag, int n)
{
    const uint32_t pl = LAGS - lag;
    *rt_seed_ring_count(s, pl, 0) = n;
    return rt_seed_ring_ids(s, pl, 0);
}

int main(void)
{
    int32_t ia[TOPK], ib[TOPK];
    float sa[TOPK], sb[TOPK];

    /* 1. gain: the same lists gain nothing */
    list(ia, sa, TOPK, 100, 1, 50);
    list(ib, sb, TOPK, 100, 1, 50);
    CHECK(rt_seed_ring_gain(ia, sa, TOPK, ib, sb, TOPK, TOPK) == 0);

    /* 2. a holds b's best 6 and 4 better keys than b's other 4: +4; the other way round -4 */
    list(ia, sa, TOPK, 100, 1, 50); /* 100..109 at 50..41 */
    list(ib, sb, 6, 100, 1, 50);    /* 100..105 at 50..45, then 4 keys at 30..27 */
    list(ib + 6, sb + 6, 4, 500, 1, 30);
    CHECK_MSG(rt_seed_ring_gain(ia, sa, TOPK, ib, sb, TOPK, TOPK) == 4, "gain %d, expected 4",
              rt_seed_ring_gain(ia, sa, TOPK, ib, sb, TOPK, TOPK));
    CHECK(rt_seed_ring_gain(ib, sb, TOPK, ia, sa, TOPK, TOPK) == -4);

    /* 3. each found keys the other missed: a's 2 extra keys rank 3rd and 4th, b's 2 extra 5th
     * and 6th; with k = 10 the union's best 10 hold all four: 2 - 2 = 0; with k = 4, a's alone */
    list(ia, sa, 4, 100, 1, 50);          /* 100..103 at 50..47 */
    ia[2] = 700, ia[3] = 701;             /* a: 100, 101, 700, 701 */
    list(ib, sb, 4, 100, 1, 50);
    ib[2] = 800, ib[3] = 801;             /* b: 100, 101, 800 (48), 801 (47) */
    sb[2] = 46, sb[3] = 45;               /* ... ranking below a's 700 (48), 701 (47) */
    CHECK(rt_seed_ring_gain(ia, sa, 4, ib, sb, 4, 10) == 0);
    CHECK_MSG(rt_seed_ring_gain(ia, sa, 4, ib, sb, 4, 4) == 2, "k = 4: gain %d, expected 2",
              rt_seed_ring_gain(ia, sa, 4, ib, sb, 4, 4));

    /* 4. a key in both counts once toward k: a = {100, 101} b = {100, 102}, k = 2: the union's
     * best two are 100 (50) and 101 (49) */
    list(ia, sa, 2, 100, 1, 50);
    ib[0] = 100, sb[0] = 50, ib[1] = 102, sb[1] = 48;
    CHECK(rt_seed_ring_gain(ia, sa, 2, ib, sb, 2, 2) == 1);

    /* 5. the verdict: at least 2 keys, a key every 32 rows */
    rt_seed_ring s;
    loupe_err err;
    CHECK(rt_seed_ring_init(&s, 1, 1, TOPK, LAGS, 0, &err) == LOUPE_OK);
    CHECK(s.lags == LAGS);
    rt_seed_ring_start(&s, 0, LAGS);
    CHECK(rt_seed_ring_explores(&s, 0));
    CHECK(rt_seed_ring_lags(&s, 0, true) == LAGS);
    const struct {
        int gain;
        int64_t rows;
        uint32_t lags;
    } verdicts[] = {
        {15, 140, LAGS}, /* the bundled model at 128K: ~15 keys for ~140 rows */
        {10, 320, LAGS}, /* just a key per 32 rows */
        {10, 321, 1},    /* just not */
        {8, 1300, 1},    /* random weights: a few keys for ~1,300 rows */
        {1, 0, 1},       /* one key, however cheap */
        {2, -50, LAGS},  /* more keys for fewer rows */
        {-3, 10, 1},     /* the steps back lost keys */
    };
    for (size_t i = 0; i < sizeof verdicts / sizeof *verdicts; i++) {
        rt_seed_ring_judge(&s, 0, verdicts[i].gain, verdicts[i].rows);
        CHECK_MSG(rt_seed_ring_lags(&s, 0, false) == verdicts[i].lags,
                  "gain %d for %lld rows: %u steps back, expected %u", verdicts[i].gain,
                  (long long)verdicts[i].rows, rt_seed_ring_lags(&s, 0, false),
                  verdicts[i].lags);
        CHECK(rt_seed_ring_lags(&s, 0, true) == LAGS); /* exploring: all of them */
    }

    /* 6. the seeds: from the newest step alone, its list and the keys after it; from two steps
     * back, also p + 2 of the step two back; ids at n_host and past left out */
    for (uint32_t lag = 1; lag <= LAGS; lag++) {
        int32_t *ids = list_back(&s, lag, TOPK);
        for (int i = 0; i < TOPK; i++)
            ids[i] = (int32_t)(lag * 50000 + i * 100);
    }
    list_back(&s, 1, TOPK)[TOPK - 1] = N_HOST - 1; /* its next key is past the host set */
    int32_t out[(1 + LAGS) * TOPK];
    int n = rt_seed_ring_seeds(&s, 0, 0, 1, N_HOST, out);
    CHECK_MSG(n == 2 * TOPK - 1, "%d seeds from the newest step, expected %d", n, 2 * TOPK - 1);
    n = rt_seed_ring_seeds(&s, 0, 0, 2, N_HOST, out);
    CHECK_MSG(n == 3 * TOPK - 1, "%d seeds from two steps back, expected %d", n, 3 * TOPK - 1);
    int found = 0;
    for (int i = 0; i < n; i++)
        found += out[i] == 2 * 50000 + 700 + 2;
    CHECK(found == 1);
    CHECK(rt_seed_ring_seeds(&s, 0, 0, LAGS + 5, N_HOST, out) == (1 + LAGS) * TOPK - 1);

    rt_seed_ring_free(&s);

    /* 7. the layers take turns exploring: 32 layers, every 16th step, after a start that makes
     * every layer explore its first step. Then each layer's next exploring step comes within
     * half a period to a period and a half, from there on exactly every 16th, and no token but
     * the first has more than 32 / 16 layers exploring. */
    enum { NL = 32, E = 16, STEPS = 80 };
    CHECK(rt_seed_ring_init(&s, NL, 1, TOPK, LAGS, E, &err) == LOUPE_OK);
    int last[NL], seen[NL];
    for (uint32_t l = 0; l < NL; l++) {
        rt_seed_ring_start(&s, l, LAGS);
        last[l] = -1;
        seen[l] = 0;
    }
    for (int t = 0; t < STEPS; t++) {
        int exploring = 0;
        for (uint32_t l = 0; l < NL; l++) {
            if (rt_seed_ring_explores(&s, l)) {
                exploring++;
                const int gap = t - last[l];
                if (seen[l] == 1)
                    CHECK_MSG(gap > E / 2 && gap <= E + E / 2,
                              "layer %u: second exploring step %d steps after the first", l,
                              gap);
                else if (seen[l] > 1)
                    CHECK_MSG(gap == E, "layer %u explores %d steps after its last", l, gap);
                last[l] = t;
                seen[l]++;
            }
            rt_seed_ring_advance(&s, l, 1);
        }
        CHECK_MSG(t == 0 ? exploring == NL : exploring <= NL / E,
                  "step %d: %d layers explore", t, exploring);
    }
    for (uint32_t l = 0; l < NL; l++)
        CHECK_MSG(seen[l] >= STEPS / E, "layer %u explored %d times in %d steps", l, seen[l],
                  STEPS);
    rt_seed_ring_free(&s);
    return test_summary("test_seed_ring");
}
