/*
 * Private to runtime/: where a retrieval decode step's graph searches start (retrieval_cpu.c).
 *
 * A model copying from its context reads, at this step, the position after the one it read at
 * the last, and a copied run that drops out of one step's top k comes back a step or two later,
 * moved on by as many (on the bundled model's 128K layer-3 vectors a step's top 100 holds ~91
 * keys the last step's did not: 57% follow one of its results, 15% one of two steps back, 6%
 * three back; docs/BENCHMARKS.md, "stream seeds"). So each (layer, query head) keeps the results
 * of its last `lags` steps, index ids, in planes of (n_layer · n_head, topk) that each layer uses
 * as a ring, and a step's search starts from the newest results and from the key `lag` after
 * each result of the step `lag` back.
 *
 * The steps back pay only in heads that copy runs of the context; elsewhere their seeds are keys
 * the search would not have scored (on random ids, 60% more rows at 16K). Every explore_every-th
 * step of a layer (the first sooner: rt_seed_ring_start, rt_seed_ring_clear; the layers in turn,
 * a few each token) seeds every head from all the steps back and searches again from the
 * newest step's seeds alone; until the next such step a head uses the steps back only if they
 * bought enough keys of the top k for the rows they added (rt_seed_ring_judge). Counting the
 * keys they gave instead kept them on random weights, where the search finds most of those keys
 * anyway. Heads start without them; a head's verdict outlives a turn (what a head does is the
 * model's, not the text's).
 *
 * Steps: a one-token step keeps its results in the plane after the newest; a batch of tokens
 * (consecutive positions, as one-token steps are) keeps its last `lags` tokens' and starts the
 * ring over from them; an index build keeps the exact lists of the prompt's last positions
 * (rt_seed_ring_start). Tasks of a layer's step touch only their own heads' lists, so they run
 * in parallel; rt_seed_ring_advance runs once the layer's tasks are done.
 */
#ifndef LOUPE_SEED_RING_IMPL_H
#define LOUPE_SEED_RING_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

typedef struct {
    uint32_t n_layer, n_head, topk; /* topk: ids a head's list holds */
    uint32_t lags;          /* planes: the steps back a search may seed from */
    uint32_t explore_every; /* steps from one exploring step to the next */
    size_t plane_ids;       /* elements of one plane of ids */
    int32_t *ids;           /* (lags, n_layer · n_head, topk) */
    int *n;                 /* (lags, n_layer · n_head) ids in each list */
    uint32_t *newest;       /* (n_layer) the plane of the newest step's results */
    uint32_t *len;          /* (n_layer) planes holding results, newest first: 0 .. lags */
    uint32_t *explore_in;   /* (n_layer) steps until the layer's next exploring step (0: this) */
    uint32_t *steps;        /* (n_layer) steps the layer took since the ring was cleared */
    uint8_t *head_lags;     /* (n_layer · n_head) steps back a head seeds from: 1 or lags */
} rt_seed_ring;

/* lags, explore: rt_retrieval_params.seed_lags and .seed_explore (0: their defaults); lags
 * shrink where lags · topk would pass 1,600. On failure says how much was asked for and frees
 * what it had: the ring then holds no lists (clear and free do nothing) but its sizes. */
loupe_status rt_seed_ring_init(rt_seed_ring *s, uint32_t n_layer, uint32_t n_head, uint32_t topk,
                               int lags, int explore, loupe_err *err);
/* Frees the lists; the sizes stay. */
void rt_seed_ring_free(rt_seed_ring *s);
/* Every list empty, no head seeding from the steps back (a new context). */
void rt_seed_ring_clear(rt_seed_ring *s);

/* Plane pl's lists from query head slot `slot` (layer · n_head + head) on: ids, topk a head,
 * and their counts. */
int32_t *rt_seed_ring_ids(const rt_seed_ring *s, uint32_t pl, size_t slot);
int *rt_seed_ring_count(const rt_seed_ring *s, uint32_t pl, size_t slot);

/* Whether layer il's next one-token step explores: every head seeds from every step back, and
 * its searches are repeated from the newest step's seeds alone to judge them. */
bool rt_seed_ring_explores(const rt_seed_ring *s, uint32_t il);
/* The steps back query head `slot` seeds from at a one-token step: all of them when exploring,
 * else its verdict's (1 or all); rt_seed_ring_seeds takes what its layer's ring holds of them. */
uint32_t rt_seed_ring_lags(const rt_seed_ring *s, size_t slot, bool explore);
/* Query head `slot`'s seeds from its `lags` nearest steps back (1: the newest alone) into out
 * (at most (1 + lags) · topk): the newest step's results, and the key `lag` after each result
 * of the step `lag` back; ids at or past n_host left out. Returns how many. */
int rt_seed_ring_seeds(const rt_seed_ring *s, uint32_t il, size_t slot, uint32_t lags,
                       uint32_t n_host, int32_t *out);
/* What search a's results (ids ia, scores sa, na of them, best first) hold of the best k keys of
 * a's and b's together that b's do not, less what b's hold that a's do not: the keys of the top
 * k a found more (the same query, so a key in both has one score). */
int rt_seed_ring_gain(const int32_t *ia, const float *sa, int na, const int32_t *ib,
                      const float *sb, int nb, int k);
/* An exploring step's verdict for query head `slot`: its search seeded from every step back
 * found `gain` more of the top k than the same search from the newest step's seeds
 * (rt_seed_ring_gain) at `rows` more key rows. It seeds from the steps back until the next
 * exploring step if that gain is at least 2 keys and a key for every 32 rows; else from the
 * newest step alone. */
void rt_seed_ring_judge(rt_seed_ring *s, size_t slot, int gain, int64_t rows);

/* The plane where token t of a B-token step of layer il keeps its results, or -1. */
int rt_seed_ring_keep_plane(const rt_seed_ring *s, uint32_t il, size_t t, size_t B);
/* After a layer's step of B tokens whose searches kept their results: the last one's plane
 * becomes the newest. */
void rt_seed_ring_advance(rt_seed_ring *s, uint32_t il, size_t B);
/* Layer il's index build filled planes 0 .. planes-1 (the newest last): a ring of that many
 * steps; with two or more the next step explores. */
void rt_seed_ring_start(rt_seed_ring *s, uint32_t il, uint32_t planes);

#endif
