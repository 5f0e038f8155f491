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
 * step of a layer (the first sooner: rt_seed_ring_start, rt_seed_ring_clear) seeds every head
 * from all the steps back and counts what they found that the newest step's seeds did not
 * (rt_seed_ring_judge); until the next such step a head uses them only if that count beat
 * chance. Heads start without them; a head's verdict outlives a turn (what a head does is the
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
    uint8_t *head_lags;     /* (n_layer · n_head) steps back a head seeds from: 1 .. lags */
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

/* Whether layer il's next one-token step explores (seeds every head from every step back). */
bool rt_seed_ring_explores(const rt_seed_ring *s, uint32_t il);
/* Query head `slot`'s seeds for a one-token step of layer il into out (at most (1 + lags) ·
 * topk): its newest results, and the key `lag` after each result of the step `lag` back for
 * the steps back it uses (all of them when exploring); ids at or past n_host left out. Returns
 * how many. */
int rt_seed_ring_seeds(const rt_seed_ring *s, uint32_t il, size_t slot, bool explore,
                       uint32_t n_host, int32_t *out);
/* An exploring step's verdict for query head `slot` from its n (≤ topk) results res (before
 * they are kept): how many steps back it seeds from until the next exploring step. A step back
 * pays by the keys of res that its seeds gave and the newest step's did not, and costs the rows
 * its seeds add; the head keeps the nearest steps back where found keys less the rows' worth is
 * largest, if they found at least 4 keys and twice what chance over a host set of n_host gives;
 * else none. scratch: rt_seed_ring_judge_scratch ints. */
void rt_seed_ring_judge(rt_seed_ring *s, uint32_t il, size_t slot, const int32_t *res, int n,
                        uint32_t n_host, int32_t *scratch);
size_t rt_seed_ring_judge_scratch(const rt_seed_ring *s);

/* The plane where token t of a B-token step of layer il keeps its results, or -1. */
int rt_seed_ring_keep_plane(const rt_seed_ring *s, uint32_t il, size_t t, size_t B);
/* After a layer's step of B tokens whose searches kept their results: the last one's plane
 * becomes the newest. */
void rt_seed_ring_advance(rt_seed_ring *s, uint32_t il, size_t B);
/* Layer il's index build filled planes 0 .. planes-1 (the newest last): a ring of that many
 * steps; with two or more the next step explores. */
void rt_seed_ring_start(rt_seed_ring *s, uint32_t il, uint32_t planes);

#endif
