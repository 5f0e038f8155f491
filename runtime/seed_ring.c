/*
 * Where a retrieval decode step's graph searches start: the last steps' results per (layer,
 * query head), and which heads seed from the steps back (seed_ring_impl.h).
 */
#include "runtime/seed_ring_impl.h"

#include <math.h>
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

/* What the steps back must buy at an exploring step for a head to keep them: at least
 * STREAM_GAIN_MIN more of the top k than the newest step's seeds alone find, and a key for every
 * KEY_ROWS rows they add. On the bundled model's 128K layer-3 vectors they bought ~15 keys of a
 * search's 100 for ~140 rows (~10 rows a key), where widening the beam buys a key for 80-150
 * rows; on the 8B shape's random weights every head kept them by the count of keys they gave
 * (many of which the search finds anyway) and the keys scanned doubled (docs/BENCHMARKS.md). */
enum { STREAM_GAIN_MIN = 2, KEY_ROWS = 32 };

/* No head seeds from the steps back; each layer's first exploring step comes at FIRST_EXPLORE. */
static void reset_head_lags(rt_seed_ring *s)
{
    uint32_t first = s->lags < s->explore_every ? s->lags : s->explore_every;
    if (first > FIRST_EXPLORE)
        first = FIRST_EXPLORE;
    for (uint32_t l = 0; l < s->n_layer; l++)
        s->explore_in[l] = first - 1;
    memset(s->steps, 0, s->n_layer * sizeof *s->steps);
    memset(s->head_lags, 1, (size_t)s->n_layer * s->n_head);
}

/* Steps after layer il's exploring step until its next: the layers take turns, layer il in
 * phase il · explore_every / n_layer of the period, so that an exploring step's second search
 * (~3× a plain step's rows on random weights) falls on a few layers of each token rather than
 * on every layer of every explore_every-th token; a layer that explored out of its phase (the
 * first after a start or a batch) waits at least half a period. */
static uint32_t steps_to_phase(const rt_seed_ring *s, uint32_t il)
{
    const uint32_t E = s->explore_every;
    const uint32_t off = (uint32_t)((uint64_t)il * E / s->n_layer);
    const uint32_t in = (E - (s->steps[il] + off) % E) % E;
    return in < E / 2 ? in + E : in;
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
    s->steps = malloc(n_layer * sizeof *s->steps);
    s->head_lags = malloc((size_t)n_layer * n_head * sizeof *s->head_lags);
    if (!s->ids || !s->n || !s->newest || !s->len || !s->explore_in || !s->steps ||
        !s->head_lags) {
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
    free(s->steps);
    free(s->head_lags);
    s->ids = NULL;
    s->n = NULL;
    s->newest = s->len = s->explore_in = s->steps = NULL;
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

uint32_t rt_seed_ring_lags(const rt_seed_ring *s, size_t slot, bool explore)
{
    return explore ? s->lags : s->head_lags[slot];
}

int rt_seed_ring_seeds(const rt_seed_ring *s, uint32_t il, size_t slot, uint32_t lags,
                       uint32_t n_host, int32_t *out)
{
    if (lags > s->len[il])
        lags = s->len[il];
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

/* Whether list (ids, n) holds id (lists are a search's results: a few hundred at most). */
static bool holds(const int32_t *ids, int n, int32_t id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* The k-th best score of lists a and b together (keys in both counted once), or -inf when they
 * hold fewer than k keys. Repeated selection of the best below the last: k · (na + nb) steps
 * and no scratch, for two searches' results (topk each) once a head every exploring step. */
static float kth_best(const int32_t *ia, const float *sa, int na, const int32_t *ib,
                      const float *sb, int nb, int k)
{
    float last = INFINITY;
    int taken = 0;
    while (taken < k) {
        float best = -INFINITY;
        int ties = 0;
        for (int i = 0; i < na; i++)
            if (sa[i] < last && sa[i] > best)
                best = sa[i];
        for (int i = 0; i < nb; i++)
            if (sb[i] < last && sb[i] > best)
                best = sb[i];
        if (best == -INFINITY)
            return -INFINITY;
        /* every distinct key at exactly `best` */
        for (int i = 0; i < na; i++)
            ties += sa[i] == best;
        for (int i = 0; i < nb; i++)
            ties += sb[i] == best && !holds(ia, na, ib[i]);
        taken += ties;
        last = best;
    }
    return last;
}

int rt_seed_ring_gain(const int32_t *ia, const float *sa, int na, const int32_t *ib,
                      const float *sb, int nb, int k)
{
    const float t = kth_best(ia, sa, na, ib, sb, nb, k);
    int gain = 0;
    for (int i = 0; i < na; i++)
        gain += sa[i] >= t && !holds(ib, nb, ia[i]);
    for (int i = 0; i < nb; i++)
        gain -= sb[i] >= t && !holds(ia, na, ib[i]);
    return gain;
}

void rt_seed_ring_judge(rt_seed_ring *s, size_t slot, int gain, int64_t rows)
{
    s->head_lags[slot] =
        (uint8_t)(gain >= STREAM_GAIN_MIN && (int64_t)gain * KEY_ROWS >= rows ? s->lags : 1);
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
    s->steps[il]++;
    s->explore_in[il] = B > 1 && kept > 1 ? 0
                        : s->explore_in[il] ? s->explore_in[il] - 1
                                            : steps_to_phase(s, il);
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
