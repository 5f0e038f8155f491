/*
 * Where a retrieval decode step's graph searches start: the last steps' results per (layer,
 * query head), and which heads seed from the steps back (seed_ring_impl.h).
 */
#include "runtime/seed_ring_impl.h"

#include <stdlib.h>
#include <string.h>

/* The default steps back and exploring period; the most ids a head's seeds from the steps back
 * may take (the kept lists cost lags · topk ids a query head and layer: 6.6 MB on the 8B shape
 * at the default 16 · 100, so a larger topk takes fewer steps back, one from SEED_ROWS_MAX on). */
enum { DEFAULT_SEED_LAGS = 16, SEED_ROWS_MAX = 1600, DEFAULT_SEED_EXPLORE = 16 };

/* Each layer's first exploring step is the one that keeps FIRST_EXPLORE steps (or fewer, with
 * fewer steps back or exploring steps closer): the steps back that soon already find a copying
 * head's runs (two to four steps back gave a quarter of a step's new keys at 128K), and an answer
 * need not wait for a full ring to use them. */
enum { FIRST_EXPLORE = 4 };

/* Keys an exploring step must find through the older steps alone for a head to keep them; what
 * a key found is worth in rows scanned (a seed is a row: at 128K on the bundled model's layer 3
 * the steps back bought recall .705 -> .857, ~15 keys of a search's 100, for ~140 rows, where
 * on random weights they cost ~1,300 rows a search and doubled its time: docs/BENCHMARKS.md). */
enum { STREAM_HITS_MIN = 4, HIT_ROWS = 16 };

/* No head seeds from the steps back; each layer's first exploring step comes at FIRST_EXPLORE. */
static void reset_head_lags(rt_seed_ring *s)
{
    uint32_t first = s->lags < s->explore_every ? s->lags : s->explore_every;
    if (first > FIRST_EXPLORE)
        first = FIRST_EXPLORE;
    for (uint32_t l = 0; l < s->n_layer; l++)
        s->explore_in[l] = first - 1;
    memset(s->head_lags, 1, (size_t)s->n_layer * s->n_head);
}

loupe_status rt_seed_ring_init(rt_seed_ring *s, uint32_t n_layer, uint32_t n_head, uint32_t topk,
                               int lags, int explore, loupe_err *err)
{
    memset(s, 0, sizeof *s);
    s->n_layer = n_layer;
    s->n_head = n_head;
    s->topk = topk;
    s->lags = lags > 0 ? (uint32_t)lags : DEFAULT_SEED_LAGS;
    if ((size_t)s->lags * topk > SEED_ROWS_MAX)
        s->lags = topk < SEED_ROWS_MAX ? (uint32_t)(SEED_ROWS_MAX / topk) : 1;
    if (s->lags > UINT8_MAX)
        s->lags = UINT8_MAX;
    s->explore_every = explore > 0 ? (uint32_t)explore : DEFAULT_SEED_EXPLORE;
    s->plane_ids = (size_t)n_layer * n_head * topk;
    s->ids = malloc(s->lags * s->plane_ids * sizeof *s->ids);
    s->n = calloc((size_t)s->lags * n_layer * n_head, sizeof *s->n);
    s->newest = calloc(n_layer, sizeof *s->newest);
    s->len = calloc(n_layer, sizeof *s->len);
    s->explore_in = malloc(n_layer * sizeof *s->explore_in);
    s->head_lags = malloc((size_t)n_layer * n_head * sizeof *s->head_lags);
    if (!s->ids || !s->n || !s->newest || !s->len || !s->explore_in || !s->head_lags) {
        const double mib = (double)(s->lags * s->plane_ids * sizeof *s->ids) / (1 << 20);
        rt_seed_ring_free(s); /* keeps lags: the caller sizes its seed buffers by it */
        return loupe_fail(err, LOUPE_ERR_NOMEM,
                          "out of memory for the search seeds (%.1f MiB of kept results)", mib);
    }
    reset_head_lags(s);
    return LOUPE_OK;
}

void rt_seed_ring_free(rt_seed_ring *s)
{
    free(s->ids);
    free(s->n);
    free(s->newest);
    free(s->len);
    free(s->explore_in);
    free(s->head_lags);
    s->ids = NULL;
    s->n = NULL;
    s->newest = s->len = s->explore_in = NULL;
    s->head_lags = NULL;
}

void rt_seed_ring_clear(rt_seed_ring *s)
{
    if (!s->ids) /* never made, or freed */
        return;
    memset(s->n, 0, (size_t)s->lags * s->n_layer * s->n_head * sizeof *s->n);
    memset(s->len, 0, s->n_layer * sizeof *s->len);
    reset_head_lags(s);
}

int32_t *rt_seed_ring_ids(const rt_seed_ring *s, uint32_t pl, size_t slot)
{
    return s->ids + pl * s->plane_ids + slot * s->topk;
}

int *rt_seed_ring_count(const rt_seed_ring *s, uint32_t pl, size_t slot)
{
    return s->n + (size_t)pl * s->n_layer * s->n_head + slot;
}

/* The plane of layer il's results `lag` steps back (1: the newest). */
static uint32_t plane_back(const rt_seed_ring *s, uint32_t il, uint32_t lag)
{
    return (s->newest[il] + s->lags - (lag - 1)) % s->lags;
}

bool rt_seed_ring_explores(const rt_seed_ring *s, uint32_t il)
{
    return s->explore_in[il] == 0;
}

int rt_seed_ring_seeds(const rt_seed_ring *s, uint32_t il, size_t slot, bool explore,
                       uint32_t n_host, int32_t *out)
{
    const uint32_t lags = explore || s->head_lags[slot] > s->len[il] ? s->len[il]
                                                                      : s->head_lags[slot];
    int m = 0;
    for (uint32_t lag = 1; lag <= lags; lag++) {
        const uint32_t pl = plane_back(s, il, lag);
        const int32_t *prev = rt_seed_ring_ids(s, pl, slot);
        for (int i = 0; i < *rt_seed_ring_count(s, pl, slot); i++) {
            if (lag == 1)
                out[m++] = prev[i];
            if (prev[i] + (int32_t)lag < (int32_t)n_host)
                out[m++] = prev[i] + (int32_t)lag;
        }
    }
    return m;
}

static int cmp_id(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int cmp_i64(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static bool sorted_has(const int32_t *sorted, int n, int32_t id)
{
    return bsearch(&id, sorted, (size_t)n, sizeof *sorted, cmp_id) != NULL;
}

/* For each step back lag = 2 .. len of layer il: hits[lag], how many of query head slot's n
 * results res the newest step's seeds (its results and the keys after them) did not give and
 * the step `lag` back's did (a result p of it: p + lag; a key two steps could give counts for
 * the nearer), and cost[lag], how many rows its seeds add to the newest step's and the nearer
 * steps' (distinct keys the search scores only because of them). */
static void stream_value(const rt_seed_ring *s, uint32_t il, size_t slot, const int32_t *res,
                         int n, uint32_t n_host, int32_t *scratch, int *hits, int *cost)
{
    const uint32_t len = s->len[il];
    int32_t *sorted = scratch, *claimed = sorted + s->topk, *newest = claimed + s->topk;
    int64_t *older = (int64_t *)(newest + 2 * s->topk); /* 8-byte aligned: topk·4 ints before */
    memcpy(sorted, res, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_id);
    memset(claimed, 0, (size_t)n * sizeof *claimed);
    int n_newest = 0;
    size_t n_older = 0;
    for (uint32_t lag = 1; lag <= len; lag++) {
        hits[lag] = cost[lag] = 0;
        const uint32_t pl = plane_back(s, il, lag);
        const int32_t *prev = rt_seed_ring_ids(s, pl, slot);
        for (int i = 0; i < *rt_seed_ring_count(s, pl, slot); i++)
            for (uint32_t d = lag == 1 ? 0 : lag; d <= lag; d++) {
                const int32_t want = prev[i] + (int32_t)d;
                if (want >= (int32_t)n_host)
                    continue;
                if (lag == 1)
                    newest[n_newest++] = want;
                else /* id, then lag: sorted, a key's nearest step comes first */
                    older[n_older++] = (int64_t)want * (s->lags + 1) + lag;
                const int32_t *at = bsearch(&want, sorted, (size_t)n, sizeof *sorted, cmp_id);
                if (at && !claimed[at - sorted]) {
                    claimed[at - sorted] = 1;
                    hits[lag] += lag > 1;
                }
            }
    }
    qsort(newest, (size_t)n_newest, sizeof *newest, cmp_id);
    qsort(older, n_older, sizeof *older, cmp_i64);
    for (size_t i = 0; i < n_older; i++) {
        const int64_t id = older[i] / (s->lags + 1);
        if (i > 0 && older[i - 1] / (s->lags + 1) == id)
            continue; /* a nearer step's seed */
        if (!sorted_has(newest, n_newest, (int32_t)id))
            cost[older[i] % (s->lags + 1)]++;
    }
}

size_t rt_seed_ring_judge_scratch(const rt_seed_ring *s)
{
    /* results and their claims, the newest seeds (2·topk), the older seeds (int64 each), then
     * hits and cost per step back */
    return (size_t)4 * s->topk + 2 * (size_t)s->lags * s->topk + 2 * ((size_t)s->lags + 1);
}

void rt_seed_ring_judge(rt_seed_ring *s, uint32_t il, size_t slot, const int32_t *res, int n,
                        uint32_t n_host, int32_t *scratch)
{
    const uint32_t len = s->len[il];
    if (len <= 1) /* no step back to judge */
        return;
    int *hits = scratch + rt_seed_ring_judge_scratch(s) - 2 * ((size_t)s->lags + 1);
    int *cost = hits + s->lags + 1;
    stream_value(s, il, slot, res, n, n_host, scratch, hits, cost);
    /* The steps back worth their rows: the nearest `keep` of them, where the keys they found
     * less their rows' worth (HIT_ROWS rows a key) is largest. Then the found keys must pass
     * STREAM_HITS_MIN and twice chance (their rows × the share of the host set a result is). */
    int h = 0, c = 0, best_h = 0, best_c = 0;
    double best = 0;
    uint32_t keep = 1;
    for (uint32_t lag = 2; lag <= len; lag++) {
        h += hits[lag];
        c += cost[lag];
        const double net = h - (double)c / HIT_ROWS;
        if (net > best) {
            best = net;
            keep = lag;
            best_h = h;
            best_c = c;
        }
    }
    const double chance = (double)best_c * n / n_host;
    s->head_lags[slot] =
        (uint8_t)(keep > 1 && best_h >= STREAM_HITS_MIN && best_h >= 2 * chance ? keep : 1);
}

/* The tokens of a B-token step whose results the ring keeps: a one-token step's one, a batch's
 * last `lags`. */
static uint32_t kept_tokens(const rt_seed_ring *s, size_t B)
{
    return B < s->lags ? (uint32_t)B : s->lags;
}

int rt_seed_ring_keep_plane(const rt_seed_ring *s, uint32_t il, size_t t, size_t B)
{
    const size_t first = B - kept_tokens(s, B); /* the first token kept */
    return t < first ? -1 : (int)((s->newest[il] + 1 + (t - first)) % s->lags);
}

/* A batch starts the ring over from its own tokens (their searches followed no one-token step,
 * and the planes before it are more than its length back), and with two or more of them kept
 * the next step explores. */
void rt_seed_ring_advance(rt_seed_ring *s, uint32_t il, size_t B)
{
    const uint32_t kept = kept_tokens(s, B);
    s->explore_in[il] = B > 1 && kept > 1 ? 0
                        : s->explore_in[il] ? s->explore_in[il] - 1
                                            : s->explore_every - 1;
    s->newest[il] = (s->newest[il] + kept) % s->lags;
    s->len[il] = B > 1 ? kept : s->len[il] < s->lags ? s->len[il] + 1 : s->lags;
}

void rt_seed_ring_start(rt_seed_ring *s, uint32_t il, uint32_t planes)
{
    s->newest[il] = planes - 1;
    s->len[il] = planes;
    if (planes > 1) /* a ring kept: the first step explores */
        s->explore_in[il] = 0;
}
