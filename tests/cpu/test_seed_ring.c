/*
 * The seeding ring's verdict (runtime/seed_ring.c): after an exploring step a query head keeps
 * the nearest steps back whose seeds found keys worth more than the rows they add, and none where
 * they found keys only at a price (random weights: ~1,300 rows a search for a handful of keys,
 * which the rule before this test kept and which doubled the 8B shape's search time).
 * Hand-made lists, one layer and one head; steps back are filled as an index build fills them.
 */
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "runtime/seed_ring_impl.h"

enum { LAGS = 16, TOPK = 100, N_HOST = 1000000 };

/* The list of the step `lag` back (1: the newest) after rt_seed_ring_start(LAGS). */
static int32_t *list_back(rt_seed_ring *s, uint32_t lag, int n)
{
    const uint32_t pl = LAGS - lag;
    *rt_seed_ring_count(s, pl, 0) = n;
    return rt_seed_ring_ids(s, pl, 0);
}

/* Every step back holds TOPK keys of its own, far from the others' (nothing repeats, nothing
 * follows anything): each older step's seeds cost TOPK rows. */
static void fill_apart(rt_seed_ring *s)
{
    for (uint32_t lag = 1; lag <= LAGS; lag++) {
        int32_t *ids = list_back(s, lag, TOPK);
        for (int i = 0; i < TOPK; i++)
            ids[i] = (int32_t)(lag * 50000 + i * 100);
    }
}

/* The verdict for results res (n of them) over the ring as filled. */
static uint32_t verdict(rt_seed_ring *s, const int32_t *res, int n, int32_t *scratch)
{
    s->head_lags[0] = 99; /* a stale verdict the judge must overwrite */
    rt_seed_ring_judge(s, 0, 0, res, n, N_HOST, scratch);
    return s->head_lags[0];
}

int main(void)
{
    rt_seed_ring s;
    loupe_err err;
    CHECK(rt_seed_ring_init(&s, 1, 1, TOPK, LAGS, 0, &err) == LOUPE_OK);
    CHECK(s.lags == LAGS);
    int32_t *scratch = malloc(rt_seed_ring_judge_scratch(&s) * sizeof *scratch);
    int32_t res[TOPK];
    rt_seed_ring_start(&s, 0, LAGS);
    CHECK(rt_seed_ring_explores(&s, 0));

    /* 1. A copying head: the step two back's whole list, moved on by 2, is this step's top k
     * (100 keys for 100 rows); the steps further back found nothing. It keeps two steps back,
     * not all sixteen. */
    fill_apart(&s);
    {
        const int32_t *two = rt_seed_ring_ids(&s, LAGS - 2, 0);
        for (int i = 0; i < TOPK; i++)
            res[i] = two[i] + 2;
    }
    CHECK_MSG(verdict(&s, res, TOPK, scratch) == 2, "a head copying from two steps back keeps %u "
              "steps back, expected 2", s.head_lags[0]);

    /* 2. Keys from two and from five steps back (20 each): it keeps five. */
    {
        const int32_t *two = rt_seed_ring_ids(&s, LAGS - 2, 0);
        const int32_t *five = rt_seed_ring_ids(&s, LAGS - 5, 0);
        for (int i = 0; i < TOPK; i++)
            res[i] = i < 20 ? two[i] + 2 : i < 40 ? five[i] + 5 : 900000 + i;
    }
    CHECK_MSG(verdict(&s, res, TOPK, scratch) == 5, "keys from two and five steps back: keeps %u "
              "steps back, expected 5", s.head_lags[0]);

    /* 3. Random weights: one key from each of the steps 2..7 back, each step's seeds 100 rows.
     * Six keys pass the count and beat chance (over a million host keys), but cost 100 rows
     * each: it keeps none. */
    for (int i = 0; i < TOPK; i++)
        res[i] = 900000 + i;
    for (uint32_t lag = 2; lag <= 7; lag++)
        res[lag] = rt_seed_ring_ids(&s, LAGS - lag, 0)[lag] + (int32_t)lag;
    CHECK_MSG(verdict(&s, res, TOPK, scratch) == 1, "six keys for ~600 rows: keeps %u steps back, "
              "expected none (1)", s.head_lags[0]);

    /* 4. Runs the newest step already covers cost nothing and find nothing: the step two back
     * holds the newest's keys one earlier (a run that stayed in the top k), so its seeds p + 2
     * are the newest's p + 1. Keys the newest step's seeds give are not the older steps' to
     * claim: none kept. */
    {
        int32_t *one = list_back(&s, 1, TOPK), *two = list_back(&s, 2, TOPK);
        for (int i = 0; i < TOPK; i++) {
            one[i] = 300000 + i * 10;
            two[i] = one[i] - 1;
            res[i] = one[i] + 1;
        }
        for (uint32_t lag = 3; lag <= LAGS; lag++)
            list_back(&s, lag, 0);
    }
    CHECK_MSG(verdict(&s, res, TOPK, scratch) == 1, "a run the newest step covers: keeps %u "
              "steps back, expected none (1)", s.head_lags[0]);

    /* 5. Too few keys: three keys from two steps back for no rows but theirs: below the count of
     * 4, none kept however cheap. */
    fill_apart(&s);
    for (int i = 0; i < TOPK; i++)
        res[i] = 900000 + i;
    list_back(&s, 2, 3); /* the step two back kept 3 keys: 3 rows */
    for (int i = 0; i < 3; i++)
        res[i] = rt_seed_ring_ids(&s, LAGS - 2, 0)[i] + 2;
    for (uint32_t lag = 3; lag <= LAGS; lag++)
        list_back(&s, lag, 0);
    CHECK_MSG(verdict(&s, res, TOPK, scratch) == 1, "three keys: keeps %u steps back, expected "
              "none (1)", s.head_lags[0]);

    /* 6. The seeds a kept verdict gives: the newest list, its keys + 1, and p + lag for the
     * steps back kept (here 2: the case-1 ring). */
    fill_apart(&s);
    s.head_lags[0] = 2;
    {
        int32_t *out = malloc((size_t)(1 + LAGS) * TOPK * sizeof *out);
        const int n = rt_seed_ring_seeds(&s, 0, 0, false, N_HOST, out);
        CHECK_MSG(n == 3 * TOPK, "%d seeds from two steps back, expected %d", n, 3 * TOPK);
        const int32_t *two = rt_seed_ring_ids(&s, LAGS - 2, 0);
        int found = 0;
        for (int i = 0; i < n; i++)
            found += out[i] == two[7] + 2;
        CHECK(found == 1);
        free(out);
    }

    free(scratch);
    rt_seed_ring_free(&s);
    return test_summary("test_seed_ring");
}
