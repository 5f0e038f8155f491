/*
 * Retrieval attention on the CPU backend (retrieval_impl.h has the life cycle).
 *
 * Positions of a sealed context of n_past tokens:
 *
 *   [0, sinks)            static: attention sinks
 *   [sinks, host_end)     host set: searched through the indexes; index id i is position sinks + i
 *   [host_end, n_past)    static tail: the context's last `window` tokens and every token after
 *
 * The host set's K/V (host_kv_impl.h) are, by default on the CPU backend, a float32 view over the
 * context's own cache; with --host-kv bf16|int8 they are rows of that type encoded from the
 * cache (a copy, for checking the types on the CPU), and co-executed with the GPU (a context
 * without a cache) they are rows the engine's prefill writes and rt_retr_host_attend adds. Each
 * (layer, KV head) gets one ann_keys VIEW over its stored keys from `sinks` on, grown in place as
 * tokens move to the host set, shared by the indexes of the KV group's query heads. Host partials
 * attend to the stored rows widened to float32 (the values the indexes score); the static
 * partials of the CPU backend read the context's float32 cache. With float32 host K/V and topk ≥
 * the host set the result is full attention up to the order of the additions.
 *
 * Query bookkeeping (all allocated at creation): `cap` holds the sampled prefill queries the
 * indexes are built from, (n_layer, cap_max, n_head, hd); `log` holds the queries of the static
 * tail's positions, (n_layer, log_max, n_head, hd), slot = position − host_end — the queries that
 * attended to tail tokens, used to link those tokens into the indexes when they move, and after
 * a prefill (the window's queries) built into the indexes with `cap`'s.
 *
 * Search: with one index per KV head, the host half of a token's layer runs one task per (KV
 * head, `sgroup` consecutive query heads of it), each ONE ann_search_group traversal whose rows
 * are loaded once for the group's heads, then every head's partial over its own top-k. Stats
 * count searches per query head and keys scanned per traversal (the memory cost), so keys
 * scanned / searches is the rows per head.
 */
#include "runtime/retrieval_impl.h"

#include "runtime/host_kv_impl.h"
#include "runtime/seed_ring_impl.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Host rows widened and attended at a time when a partial covers the whole host set: K and V of
 * 128 rows of head dim 128 in f32 take 128 KiB, within a core's L2 (and test_retrieval's host
 * sets of ~270 keys on two threads take two slices of two blocks each, so its exactness check
 * covers both merges, the blocks' and the slices'). */
enum { RT_HOST_BLOCK = 128, RT_MIN_SLICE = 32 };

struct rt_retr {
    rt_ctx *c;
    rt_attn_mode mode;
    rt_retrieval_params p;
    uint32_t n_layer, n_head, n_kv, hd, group, n_ctx;
    size_t nq; /* n_head · hd: one position's queries */
    int n_threads;

    bool sealed;
    uint32_t sinks, host_end;

    /* prefill capture */
    uint32_t cap_stride, cap_max, n_cap, prefill_n;
    float *cap;
    /* static-tail query log */
    uint32_t log_max;
    float *log;
    float *gather; /* (n_threads, gmax · heads_per_index, hd): per thread, one index's queries */
    size_t gmax;

    rt_host_kv hkv;      /* the host set's K/V (see the top of the file) */
    bool hkv_copy;       /* hkv holds typed rows encoded from the context's cache */
    bool k_pinned;       /* hkv.k is page-locked for the GPU's copies (rt_cuda_host_pin) */
    float *gk, *gv;      /* (n_threads, gather_max, hd): host rows widened for a partial */
    uint32_t n_slices;   /* host_whole_attend's row slices per KV head: threads / n_kv, >= 1 */
    float *spart;        /* (n_slices, n_head, hd): the slices' partials, merged per head */
    float *slse;         /* (n_slices, n_head) */
    float *hout, *hlse;  /* (n_head, hd), (n_head): one token's host partials (attend_whole) */
    uint32_t gather_max; /* rows one partial attends at most: topk (at least 1), or a block
                            when topk covers the context (see the creation) */
    ann_keys **keys;     /* (n_layer · n_kv), NULL while the host set is empty */
    ann_keys **skeys;    /* (n_layer · n_kv) the graphs' search copies of keys (int8c), or NULL
                            each where the searches score the host keys (use_copy) */
    bool use_copy;       /* graphs search int8c copies (rt_retrieval_params.search_copy) */
    ann_index **index;   /* (n_layer · n_index): per query head, or per KV head (index_per_kv) */
    uint32_t *todo;      /* (n_layer) scratch of build_layers: the layers it builds */
    uint32_t n_index, heads_per_index; /* per layer; query heads sharing one index */
    uint32_t sgroup;     /* query heads per search task (search_group within heads_per_index
                            and ANN_GROUP_MAX; 1 with an index per query head) */
    uint32_t sgroup_max; /* the most it may become (rt_retr_set_search) */
    uint32_t ilv;        /* with sgroup 1: query heads per search task, searched interleaved on
                            the task's thread (ann_search_many), within a KV group */
    uint32_t ilv_max;    /* the most it may become: search contexts per thread */
    uint32_t task_max;   /* query heads per task at most: the per-thread buffers' stride */
    ann_search_ctx **sctx; /* (n_threads, ilv_max) */
    int32_t *ids;        /* (n_threads, task_max, topk) */
    int32_t *seeds;      /* (n_threads, task_max · (1 + ring.lags) · topk) a task's seeds: its
                            heads' previous ids and the ids after earlier steps' (a group's:
                            their union) */
    int32_t *bids;       /* (n_threads, task_max, topk) an exploring step's second search's ids */
    float *bscores;      /* and scores (judge_steps_back) */
    rt_seed_ring ring;   /* where a one-token step's searches start (seed_ring_impl.h): the
                            last steps' results per (layer, query head), or after a build the
                            exact lists of the prompt's last positions */
    bool *build_seeds;   /* (n_layer) the layer's previous results are a build's exact lists,
                            not a step's yet: its next one-token step expands its whole beam */
    float *scores;       /* (n_threads, task_max, topk) */
    float *tmp;          /* (n_threads, task_max, hd) */
    double *search_t;    /* (n_threads) thread-seconds in search, this hook call */
    double *busy_t;      /* (n_threads) thread-seconds in tasks (search included), this call */
    /* A one-token step's search tasks of a layer, in the order they are handed to threads:
     * longest first by their time at the previous step (a head's search costs much the same
     * from token to token, and a layer has only a few tasks per thread, so handing out the
     * long ones last leaves threads waiting for one straggler; at 128K on the 8B shape the
     * measured imbalance stayed where it was, 2.6-2.7 ms per token: docs/BENCHMARKS.md) */
    uint16_t *task_order; /* (n_layer, n_head): a permutation of the layer's tasks (n_head
                             is at most 4096, hparams.c) */
    float *task_s;        /* (n_layer, n_head) seconds each task took at the previous step */
    int max_beam;
    int ef_cold;         /* beam of a search without seeds (see host_partials) */

    rt_runner_stats st;
    loupe_status hook_status; /* first failure inside a hook (reported by settle) */
    loupe_err hook_err;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ann_type index_type(rt_attn_mode mode)
{
    return mode == RT_ATTN_FLAT ? ANN_FLAT : mode == RT_ATTN_IVF ? ANN_IVF : ANN_GRAPH;
}

/* ==== Hooks =============================================================================== */

/* Prefill: sampled positions into `cap`, the last `window` positions into `log`. */
static void capture_hook(void *user, uint32_t layer, uint32_t pos0, size_t B, const float *q)
{
    rt_retr *r = user;
    uint32_t tail0 = r->prefill_n > r->p.window ? r->prefill_n - r->p.window : 0;
    for (size_t t = 0; t < B; t++) {
        uint32_t pos = pos0 + (uint32_t)t;
        const float *row = q + t * r->nq;
        if (pos % r->cap_stride == 0 && pos / r->cap_stride < r->cap_max)
            memcpy(r->cap + ((size_t)layer * r->cap_max + pos / r->cap_stride) * r->nq, row,
                   r->nq * sizeof *row);
        if (pos >= tail0 && pos - tail0 < r->log_max)
            memcpy(r->log + ((size_t)layer * r->log_max + (pos - tail0)) * r->nq, row,
                   r->nq * sizeof *row);
    }
}

/* Extension: every query into the tail log (slot = position − host_end). */
static void log_hook(void *user, uint32_t layer, uint32_t pos0, size_t B, const float *q)
{
    rt_retr *r = user;
    size_t slot = pos0 - r->host_end; /* ≤ static_max: settle() keeps the tail short */
    memcpy(r->log + ((size_t)layer * r->log_max + slot) * r->nq, q, B * r->nq * sizeof *q);
}

/* The first failure recorded inside a parallel section (a search), handed to the caller once and
 * cleared. */
static loupe_status take_hook_failure(rt_retr *r, loupe_err *err)
{
    loupe_status st = r->hook_status;
    if (st && err)
        *err = r->hook_err;
    r->hook_status = LOUPE_OK;
    return st;
}

static ann_index *index_of(const rt_retr *r, uint32_t il, uint32_t h)
{
    return r->index[(size_t)il * r->n_index + h / r->heads_per_index];
}

/* Thread tid's seed buffer: task_max heads' seeds, (1 + ring.lags) · topk each at most. */
static int32_t *thread_seeds(const rt_retr *r, int tid)
{
    return r->seeds + (size_t)tid * r->task_max * (1 + r->ring.lags) * r->p.topk;
}

/* An exploring step's verdict on the steps back (host_partials): each search x of the task
 * (params one[x], n_par of them; apart: one a query head, else one for all nh) that ran seeded
 * from every step back, rows0[x] its context's rows before it, results ids/sc/nf, runs again
 * from the newest step's seeds alone; each query head then keeps the steps back if they bought
 * enough of its top k for the rows they added (rt_seed_ring_judge; a group's heads judged
 * together: one traversal's rows). The second search's rows count as scanned: it costs them. */
static void judge_steps_back(rt_retr *r, int tid, uint32_t il, uint32_t h0, uint32_t nh,
                             const float *qs, const ann_search_params *one, int n_par,
                             const int64_t *rows0, const int32_t *ids, const float *sc,
                             const int *nf)
{
    const uint32_t topk = r->p.topk, hd = r->hd, n_host = r->host_end - r->sinks;
    const size_t slot = (size_t)il * r->n_head + h0;
    const bool apart = n_par > 1;
    int32_t *seeds = thread_seeds(r, tid);
    int32_t *bid = r->bids + (size_t)tid * r->task_max * topk;
    float *bsc = r->bscores + (size_t)tid * r->task_max * topk;
    for (int x = 0; x < n_par; x++) {
        const uint32_t j0 = apart ? (uint32_t)x : 0, j1 = apart ? j0 + 1 : nh;
        ann_search_params p = one[x];
        p.seeds = seeds;
        p.n_seeds = 0;
        for (uint32_t j = j0; j < j1; j++)
            p.n_seeds += rt_seed_ring_seeds(&r->ring, il, slot + j, 1, n_host, seeds + p.n_seeds);
        ann_search_ctx *ctx = r->sctx[(size_t)tid * r->ilv_max + (size_t)x];
        const int64_t rows1 = ann_search_ctx_scanned(ctx); /* after the seeded search */
        int bn[ANN_GROUP_MAX] = {0};
        loupe_err e;
        loupe_status st =
            j1 - j0 == 1
                ? ann_search(index_of(r, il, h0 + j0), ctx, qs + (size_t)j0 * hd, &p,
                             bid + (size_t)j0 * topk, bsc + (size_t)j0 * topk, &bn[j0], &e)
                : ann_search_group(index_of(r, il, h0), ctx, qs, (int)nh, &p, bid, bsc, bn, &e);
        if (st) /* no verdict: the last one stands (the seeded search gave the results) */
            continue;
        const int64_t more = (rows1 - rows0[x]) - (ann_search_ctx_scanned(ctx) - rows1);
        int gain = 0;
        for (uint32_t j = j0; j < j1; j++)
            gain += rt_seed_ring_gain(ids + (size_t)j * topk, sc + (size_t)j * topk, nf[j],
                                      bid + (size_t)j * topk, bsc + (size_t)j * topk, bn[j],
                                      (int)topk);
        for (uint32_t j = j0; j < j1; j++)
            rt_seed_ring_judge(&r->ring, slot + j, gain, more);
    }
}

/* Query heads h0 .. h0+nh-1's attention partials over the host set, on thread tid: over the
 * `topk` keys their index returns (nh > 1: one group search of their index; a host set no larger
 * than topk takes host_whole_attend instead); out (nh, hd) = 0 and lse (nh) = −∞ when nothing
 * is attended (topk 0, no host set). qs (nh, hd): their queries. The rows come from the host K/V
 * of their KV head, widened to float32. Seeded, the search starts from the heads' previous
 * results (a group's: their union); with keep_plane ≥ 0, its results go to that plane of the
 * ring (rt_seed_ring_keep_plane). A failed search attends nothing and is recorded for settle() to
 * report. */
static void host_partials(rt_retr *r, int tid, uint32_t il, uint32_t h0, uint32_t nh,
                          const float *qs, bool seeded, int keep_plane, float *out, float *lse)
{
    const uint32_t hd = r->hd, n_host = r->host_end - r->sinks, topk = r->p.topk;
    const uint32_t g = h0 / r->group;
    const float scale = 1.0f / sqrtf((float)hd);
    float *gk = r->gk + (size_t)tid * r->gather_max * hd;
    float *gv = r->gv + (size_t)tid * r->gather_max * hd;
    const size_t slot = (size_t)il * r->n_head + h0;
    const bool keep = keep_plane >= 0;
    /* (flat and IVF searches ignore seeds: nothing to judge) */
    const bool explore =
        rt_seed_ring_explores(&r->ring, il) && seeded && r->mode == RT_ATTN_RETRIEVAL;
    if (topk == 0 || n_host == 0) {
        memset(out, 0, (size_t)nh * hd * sizeof *out);
        for (uint32_t j = 0; j < nh; j++) {
            lse[j] = -INFINITY;
            if (keep)
                rt_seed_ring_count(&r->ring, (uint32_t)keep_plane, slot)[j] = 0;
        }
        return;
    }
    ann_search_params sp;
    memset(&sp, 0, sizeof sp);
    sp.k = (int)topk;
    sp.ef = r->p.ef;
    sp.expand = rt_retrieval_expand(r->p.expand, r->p.ef);
    sp.expand_batch = r->p.expand_batch;
    sp.margin = r->p.margin * sqrtf((float)hd); /* logits → q·k */
    sp.nprobe = r->p.nprobe;
    int32_t *ids = r->ids + (size_t)tid * r->task_max * topk;
    float *sc = r->scores + (size_t)tid * r->task_max * topk;
    int nf[ANN_GROUP_MAX] = {0};
    /* Interleaved: nh searches of their own (own seeds, own contexts); else one search, of a
     * group when nh > 1. */
    const bool apart = nh > 1 && r->sgroup == 1;
    ann_search_params one[ANN_INTERLEAVE_MAX];
    const int n_par = apart ? (int)nh : 1;
    uint64_t cold = 0, n_seeds = 0;
    const size_t seed_max = (size_t)(1 + r->ring.lags) * topk; /* a head's seeds at most */
    int32_t *seeds = thread_seeds(r, tid);
    for (int x = 0; x < n_par; x++) {
        ann_search_params *px = &one[x];
        *px = sp;
        if (seeded) {
            /* The heads' previous results (a group's: their union; repeats cost nothing,
             * visited marks skip them) and the key `lag` after each result of the step `lag`
             * back: a model copying from the context (the digits of a pass key, a value after
             * its key) wants at this step the position after the one it read at the last,
             * which need not be a graph neighbour of it, and a copied run that fell out of one
             * step's top k comes back a step or two later, moved on by as many. On the bundled
             * model's 128K layer-3 vectors a step's top 100 holds ~91 keys the last one's did
             * not: 57% of them follow one of its results, 15% one of two steps back, 6% three
             * back; at the default beam the steps back raised a head's recall@100 from .705
             * to .857 at 0.80% of the keys instead of 0.69% (docs/BENCHMARKS.md, "stream
             * seeds"). */
            int32_t *mine = seeds + (size_t)x * seed_max;
            if (r->build_seeds[il]) /* the first step from a build's lists: all of the beam */
                px->expand = 0;
            const uint32_t j0 = apart ? (uint32_t)x : 0, j1 = apart ? j0 + 1 : nh; /* heads */
            px->seeds = mine;
            for (uint32_t j = j0; j < j1; j++)
                px->n_seeds += rt_seed_ring_seeds(
                    &r->ring, il, slot + j, rt_seed_ring_lags(&r->ring, slot + j, explore),
                    n_host, mine + px->n_seeds);
        }
        if (px->n_seeds == 0) {
            /* Nothing to start near: a batch of extension tokens (a question) or a cold
             * one-token step (one whose heads kept nothing: a build keeps the newest query's
             * exact lists, so rarely). The narrowing (--expand, --margin), a seeded decode
             * step's economy, would leave keys these tokens read unfound; they are few and
             * searched once. The cold step also takes the wide beam. */
            px->expand = 0;
            px->margin = 0;
            if (seeded) {
                px->ef = r->ef_cold;
                cold++;
            }
        }
        n_seeds += (uint64_t)px->n_seeds;
    }
    if (cold) {
#pragma omp atomic
        r->st.cold_searches += cold;
    }
    if (n_seeds) {
#pragma omp atomic
        r->st.seeds += n_seeds;
    }
    loupe_err e;
    int64_t rows0[ANN_INTERLEAVE_MAX]; /* each search's rows before it (an exploring step) */
    for (int x = 0; explore && x < n_par; x++)
        rows0[x] = ann_search_ctx_scanned(r->sctx[(size_t)tid * r->ilv_max + (size_t)x]);
    double ts = now_s();
    loupe_status st;
    if (apart) {
        const ann_index *ixs[ANN_INTERLEAVE_MAX];
        const float *qv[ANN_INTERLEAVE_MAX];
        for (uint32_t j = 0; j < nh; j++) {
            ixs[j] = index_of(r, il, h0 + j);
            qv[j] = qs + (size_t)j * hd;
        }
        st = ann_search_many(ixs, r->sctx + (size_t)tid * r->ilv_max, qv, one, (int)nh, ids, sc,
                             nf, &e);
    } else {
        const ann_index *ix = index_of(r, il, h0);
        ann_search_ctx *ctx = r->sctx[(size_t)tid * r->ilv_max];
        st = nh == 1 ? ann_search(ix, ctx, qs, one, ids, sc, nf, &e)
                     : ann_search_group(ix, ctx, qs, (int)nh, one, ids, sc, nf, &e);
    }
    if (explore && !st) /* before the keep overwrites the oldest plane */
        judge_steps_back(r, tid, il, h0, nh, qs, one, n_par, rows0, ids, sc, nf);
    r->search_t[tid] += now_s() - ts;
    if (keep) { /* a failed search keeps nothing */
        int32_t *kept = rt_seed_ring_ids(&r->ring, (uint32_t)keep_plane, slot);
        int *kept_n = rt_seed_ring_count(&r->ring, (uint32_t)keep_plane, slot);
        for (uint32_t j = 0; j < nh; j++) {
            const int n = st ? 0 : nf[j];
            memcpy(kept + (size_t)j * topk, ids + (size_t)j * topk, (size_t)n * sizeof *ids);
            kept_n[j] = n;
        }
    }
    if (st) {
#pragma omp critical(rt_retr_err)
        if (!r->hook_status) {
            r->hook_status = st;
            r->hook_err = e;
        }
        memset(nf, 0, sizeof nf);
    }
    uint64_t attended = 0;
    for (uint32_t j = 0; j < nh; j++) {
        int32_t *hid = ids + (size_t)j * topk;
        for (int i = 0; i < nf[j]; i++)
            hid[i] += (int32_t)r->sinks; /* index id → cache position */
        rt_host_kv_gather(&r->hkv, il, g, hid, 0, (size_t)nf[j], gk, gv);
        rt_attn_partial(qs + (size_t)j * hd, gk, gv, hd, NULL, (size_t)nf[j], scale,
                        out + (size_t)j * hd, &lse[j]);
        attended += (uint64_t)nf[j];
    }
#pragma omp atomic
    r->st.keys_attended += attended;
}

/* Query heads per search task: a search group, else the heads searched interleaved. */
static uint32_t heads_per_task(const rt_retr *r)
{
    return r->sgroup > 1 ? r->sgroup : r->ilv;
}

/* Search task w of a layer (tasks_per_kv of them per KV head): its first query head and count. */
static uint32_t task_heads(const rt_retr *r, long w, uint32_t *nh)
{
    const uint32_t per = heads_per_task(r), per_kv = (r->group + per - 1) / per;
    const uint32_t g = (uint32_t)(w / per_kv), sub = (uint32_t)(w % per_kv) * per;
    *nh = r->group - sub < per ? r->group - sub : per;
    return g * r->group + sub;
}

static long tasks_per_token(const rt_retr *r)
{
    const uint32_t per = heads_per_task(r);
    return (long)r->n_kv * (long)((r->group + per - 1) / per);
}

/* Bookkeeping after a parallel section of host partials for `queries` query heads that took
 * `wall` seconds: its split by the threads' clocks (searching, attending, waiting for the
 * slowest), keys scanned, searches, tokens. */
static void account(rt_retr *r, uint32_t il, size_t tokens, double wall)
{
    const uint32_t n_host = r->host_end - r->sinks;
    const uint64_t queries = (uint64_t)tokens * r->n_head;
    double search = 0, busy = 0;
    for (int t = 0; t < r->n_threads; t++) {
        search += r->search_t[t];
        busy += r->busy_t[t];
        r->search_t[t] = r->busy_t[t] = 0;
    }
    for (size_t i = 0; i < (size_t)r->n_threads * r->ilv_max; i++) {
        r->st.keys_scanned += (uint64_t)ann_search_ctx_scanned(r->sctx[i]);
        ann_search_ctx_reset_scanned(r->sctx[i]);
    }
    search /= r->n_threads;
    busy /= r->n_threads;
    busy = busy < wall ? busy : wall;
    search = search < busy ? search : busy;
    r->st.search_s += search;
    r->st.attend_s += busy - search;
    r->st.imbalance_s += wall - busy;
    if (r->p.topk > 0 && n_host > r->p.topk)
        r->st.searches += queries;
    else if (r->p.topk > 0)
        r->st.keys_attended += queries * n_host;
    if (il == 0)
        r->st.retrieval_tokens += tokens;
}

/* One query head's partial over the static set at decode position pos: the sinks and the tail up
 * to pos, merged into out (hd) and *lse; tmp (hd) is scratch. K, V: its KV head's cache rows. */
static void static_partial(const rt_retr *r, const float *K, const float *V, const float *q,
                           size_t pos, float *tmp, float *out, float *lse)
{
    const uint32_t hd = r->hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float l_tail;
    rt_attn_partial(q, K, V, hd, NULL, r->sinks, scale, out, lse);
    rt_attn_partial(q, K + (size_t)r->host_end * hd, V + (size_t)r->host_end * hd, hd, NULL,
                    pos + 1 - r->host_end, scale, tmp, &l_tail);
    rt_attn_merge(out, *lse, tmp, l_tail, hd, out, lse);
}

/* True when a partial covers the whole host set: topk reaches it (hostfull, or a host set still
 * short). */
static bool host_whole(const rt_retr *r)
{
    const uint32_t n_host = r->host_end - r->sinks;
    return r->p.topk > 0 && n_host > 0 && n_host <= r->p.topk;
}

/* One token's partials of every query head over the whole host set (host_whole): one task per
 * (KV head, slice of its rows) widens each block of RT_HOST_BLOCK rows once and attends all of
 * the KV head's query heads to it, and the slices' partials are merged per head afterwards. The
 * host K/V are read once per token, not once per query head (a quarter of the bytes on the 8B
 * shape), with every thread busy although the KV heads are fewer than the threads. Used by the
 * co-executed step (rt_retr_host_attend) and the CPU backend's (attend_whole) alike. */
static void host_whole_attend(rt_retr *r, uint32_t il, const float *q, float *out, float *lse)
{
    const uint32_t hd = r->hd, G = r->group, n_host = r->host_end - r->sinks;
    /* slices of at least RT_MIN_SLICE rows: a task's fixed cost stays small beside its rows */
    const uint32_t most = n_host / RT_MIN_SLICE > 1 ? n_host / RT_MIN_SLICE : 1;
    const uint32_t ns = r->n_slices < most ? r->n_slices : most;
    const float scale = 1.0f / sqrtf((float)hd);
    const double t0 = now_s();
    const long work = (long)r->n_kv * ns;
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->n_threads)
    for (long w = 0; w < work; w++) {
        const int tid = omp_get_thread_num();
        const double ts = now_s();
        const uint32_t g = (uint32_t)(w / ns), s = (uint32_t)(w % ns);
        const uint32_t lo = (uint32_t)((uint64_t)n_host * s / ns);
        const uint32_t hi = (uint32_t)((uint64_t)n_host * (s + 1) / ns);
        float *gk = r->gk + (size_t)tid * r->gather_max * hd;
        float *gv = r->gv + (size_t)tid * r->gather_max * hd;
        float *bp = r->tmp + (size_t)tid * r->task_max * hd; /* one block's partial */
        float *po = r->spart + ((size_t)s * r->n_head + (size_t)g * G) * hd;
        float *pl = r->slse + (size_t)s * r->n_head + (size_t)g * G;
        for (uint32_t j = 0; j < G; j++) {
            memset(po + (size_t)j * hd, 0, (size_t)hd * sizeof *po);
            pl[j] = -INFINITY;
        }
        for (uint32_t r0 = lo; r0 < hi; r0 += RT_HOST_BLOCK) {
            const uint32_t nb = hi - r0 < RT_HOST_BLOCK ? hi - r0 : RT_HOST_BLOCK;
            rt_host_kv_gather(&r->hkv, il, g, NULL, r->sinks + r0, nb, gk, gv);
            for (uint32_t j = 0; j < G; j++) {
                float lb, *oj = po + (size_t)j * hd;
                rt_attn_partial(q + ((size_t)g * G + j) * hd, gk, gv, hd, NULL, nb, scale, bp,
                                &lb);
                rt_attn_merge(oj, pl[j], bp, lb, hd, oj, &pl[j]);
            }
        }
        r->busy_t[tid] += now_s() - ts;
    }
    for (uint32_t h = 0; h < r->n_head; h++) {
        float *oh = out + (size_t)h * hd;
        memcpy(oh, r->spart + (size_t)h * hd, (size_t)hd * sizeof *oh);
        lse[h] = r->slse[h];
        for (uint32_t s = 1; s < ns; s++)
            rt_attn_merge(oh, lse[h], r->spart + ((size_t)s * r->n_head + h) * hd,
                          r->slse[(size_t)s * r->n_head + h], hd, oh, &lse[h]);
    }
    account(r, il, 1, now_s() - t0);
}

/* attend_hook when every partial covers the whole host set: token by token, the host partials
 * of all heads (host_whole_attend, which reads the host K/V once for the token), then each head's
 * static partial (sinks + tail up to the token), merged. */
static void attend_whole(rt_retr *r, rt_ctx *c, uint32_t il, size_t B)
{
    const uint32_t hd = r->hd, n_head = r->n_head;
    for (size_t t = 0; t < B; t++) {
        const float *q = c->q + t * r->nq;
        float *att = c->att + t * r->nq;
        const size_t pos = (size_t)c->n_past + t;
        host_whole_attend(r, il, q, r->hout, r->hlse);
#pragma omp parallel for schedule(static) num_threads(r->n_threads)
        for (uint32_t h = 0; h < n_head; h++) {
            const int tid = omp_get_thread_num();
            const uint32_t g = h / r->group;
            const float *K = rt_ctx_keys(c, il, g), *V = rt_ctx_values(c, il, g);
            float *oh = att + (size_t)h * hd, l_out;
            static_partial(r, K, V, q + (size_t)h * hd, pos,
                           r->tmp + (size_t)tid * r->task_max * hd, oh, &l_out);
            rt_attn_merge(oh, l_out, r->hout + (size_t)h * hd, r->hlse[h], hd, oh, &l_out);
        }
    }
}

/* Attention of the chunk's B queries (positions n_past..) of one layer: per (token, head) the
 * static partial (sinks + tail up to the token) merged with the partial over the host keys the
 * head's index returns; one task per (token, search group of heads). */
static void attend_hook(void *user, rt_ctx *c, uint32_t il, size_t B)
{
    rt_retr *r = user;
    if (host_whole(r)) {
        attend_whole(r, c, il, B);
        return;
    }
    const uint32_t hd = r->hd, n_head = r->n_head, group = r->group;
    const long per_token = tasks_per_token(r);
    double t0 = now_s();
    long work = (long)B * per_token;
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->n_threads)
    for (long w = 0; w < work; w++) {
        int tid = omp_get_thread_num();
        double ts = now_s();
        size_t t = (size_t)(w / per_token);
        uint32_t nh, h0 = task_heads(r, w % per_token, &nh);
        const float *K = rt_ctx_keys(c, il, h0 / group), *V = rt_ctx_values(c, il, h0 / group);
        const float *q = c->q + (t * n_head + h0) * hd;
        float *out = c->att + (t * n_head + h0) * hd;
        float *tmp = r->tmp + (size_t)tid * r->task_max * hd;
        size_t pos = (size_t)c->n_past + t;
        float l_out[ANN_GROUP_MAX], l_tmp[ANN_GROUP_MAX];
        for (uint32_t j = 0; j < nh; j++)
            static_partial(r, K, V, q + (size_t)j * hd, pos, tmp, out + (size_t)j * hd,
                           &l_out[j]);
        /* one token: seeded; a batch's last tokens leave their results to the next step */
        host_partials(r, tid, il, h0, nh, q, B == 1, rt_seed_ring_keep_plane(&r->ring, il, t, B),
                      tmp, l_tmp);
        for (uint32_t j = 0; j < nh; j++)
            if (l_tmp[j] != -INFINITY)
                rt_attn_merge(out + (size_t)j * hd, l_out[j], tmp + (size_t)j * hd, l_tmp[j], hd,
                              out + (size_t)j * hd, &l_out[j]);
        r->busy_t[tid] += now_s() - ts;
    }
    r->build_seeds[il] = false;
    rt_seed_ring_advance(&r->ring, il, B);
    account(r, il, B, now_s() - t0);
}

/* order (n tasks) by took[task] descending; insertion sort: nearly sorted from the last step,
 * and a few dozen tasks. */
static void sort_longest_first(uint16_t *order, const float *took, long n)
{
    for (long i = 1; i < n; i++) {
        uint16_t w = order[i];
        long j = i;
        for (; j > 0 && took[order[j - 1]] < took[w]; j--)
            order[j] = order[j - 1];
        order[j] = w;
    }
}

loupe_status rt_retr_host_attend(rt_retr *r, uint32_t il, uint32_t pos, const float *q,
                                 const float *k, const float *v, float *out, float *lse,
                                 loupe_err *err)
{
    const uint32_t hd = r->hd;
    if (!r->sealed || pos < r->host_end || pos - r->host_end >= r->log_max || pos >= r->n_ctx)
        return loupe_fail(err, LOUPE_ERR_INTERNAL,
                          "host attention for position %u outside the static tail [%u, %u)", pos,
                          r->host_end, r->host_end + r->log_max);
    for (uint32_t g = 0; g < r->n_kv; g++) /* the token's row, for when it moves to the host set */
        rt_host_kv_store(&r->hkv, il, g, pos, k + (size_t)g * hd, v + (size_t)g * hd);
    memcpy(r->log + ((size_t)il * r->log_max + (pos - r->host_end)) * r->nq, q,
           r->nq * sizeof *q);
    if (host_whole(r)) {
        host_whole_attend(r, il, q, out, lse);
        return LOUPE_OK;
    }
    double t0 = now_s();
    const long work = tasks_per_token(r);
    uint16_t *order = r->task_order + (size_t)il * r->n_head;
    float *took = r->task_s + (size_t)il * r->n_head;
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->n_threads)
    for (long i = 0; i < work; i++) { /* dynamic hands iterations out in order */
        int tid = omp_get_thread_num();
        double ts = now_s();
        const long w = order[i];
        uint32_t nh, h0 = task_heads(r, w, &nh);
        host_partials(r, tid, il, h0, nh, q + (size_t)h0 * hd, true,
                      rt_seed_ring_keep_plane(&r->ring, il, 0, 1), out + (size_t)h0 * hd,
                      &lse[h0]);
        double dt = now_s() - ts;
        took[w] = (float)dt;
        r->busy_t[tid] += dt;
    }
    sort_longest_first(order, took, work);
    r->build_seeds[il] = false;
    rt_seed_ring_advance(&r->ring, il, 1);
    account(r, il, 1, now_s() - t0);
    return take_hook_failure(r, err);
}

uint32_t rt_retr_host_end(const rt_retr *r) { return r->host_end; }

/* ==== Lifetime ============================================================================ */

/* Tasks in their natural order, no times known (the search grouping changed, or a new
 * context). */
static void reset_task_order(rt_retr *r)
{
    for (size_t l = 0; l < r->n_layer; l++)
        for (uint32_t w = 0; w < r->n_head; w++) {
            r->task_order[l * r->n_head + w] = (uint16_t)w;
            r->task_s[l * r->n_head + w] = 0;
        }
}

/* Query heads per search task for a requested search_group: within one index's heads (a group
 * search needs one index) and ANN_GROUP_MAX. */
static uint32_t search_group_of(const rt_retr *r, uint32_t want)
{
    want = want > 1 ? want : 1;
    return want < r->sgroup_max ? want : r->sgroup_max;
}

/* Query heads searched interleaved per task for a requested count: within a KV group and
 * ANN_INTERLEAVE_MAX. 0 is the runtime's choice: pairs where a layer still has a task for every
 * thread with them (the 8B shape on 16 threads: 24.7 against 25.9 ms/token at 128K, the same
 * results; docs/BENCHMARKS.md), else one at a time. */
static uint32_t interleave_of(const rt_retr *r, uint32_t want)
{
    if (want == 0)
        want = (int64_t)(r->n_head / 2) >= (int64_t)r->n_threads ? 2 : 1;
    return want < r->ilv_max ? want : r->ilv_max;
}

/* The graph beam for a requested ef: 0 takes the keys wanted, at least DEFAULT_BEAM (over graphs
 * built from large build k lists a beam of 100 found more of the top-100 than 200 did over top-64
 * lists, at half the rows, and kept the bundled model's answers; a narrower beam for a smaller
 * top-k was never measured); at most n_ctx: a search happens only while topk < the host set <
 * n_ctx, and beams beyond n_ctx buy nothing. */
enum { DEFAULT_BEAM = 100 };
int rt_retrieval_beam(int ef, uint32_t topk, uint32_t n_ctx)
{
    if (ef <= 0)
        ef = topk > DEFAULT_BEAM ? (int)(topk < n_ctx ? topk : n_ctx) : DEFAULT_BEAM;
    return (int64_t)ef > (int64_t)n_ctx ? (int)n_ctx : ef;
}

/* A seeded decode step's expansion for a requested expand at beam ef: 0 is the runtime's choice,
 * the best 16/25 of the beam (64 of the default 100: at 128K on the 8B shape 17.2 against 22.1
 * ms/token, 1.04% of the keys scanned against 1.49%; on the bundled model at 4K-32K, 100 cases
 * per cell, the answers of the full expansion but one pass key at 32K, 98/100 of full
 * attention's; 48 lost three: docs/BENCHMARKS.md); at most ef (the whole beam). */
int rt_retrieval_expand(int expand, int ef)
{
    if (expand <= 0)
        expand = ef * 16 / 25 > 0 ? ef * 16 / 25 : 1;
    return expand < ef ? expand : ef;
}

loupe_status rt_retr_set_search(rt_retr *r, int ef, int expand, int expand_batch, float margin,
                                uint32_t search_group, uint32_t interleave, loupe_err *err)
{
    ef = rt_retrieval_beam(ef, r->p.topk, r->n_ctx);
    if (ef > r->max_beam)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "a search beam of %d exceeds the %d this retrieval state was created "
                          "for (create it with a larger --ef)",
                          ef, r->max_beam);
    r->p.ef = ef;
    r->p.expand = expand > 0 ? expand : 0;
    r->p.expand_batch = expand_batch;
    r->p.margin = margin > 0 ? margin : 0;
    uint32_t sgroup = search_group_of(r, search_group), ilv = interleave_of(r, interleave);
    if (sgroup != r->sgroup || ilv != r->ilv)
        reset_task_order(r); /* other tasks */
    r->sgroup = sgroup;
    r->ilv = ilv;
    return LOUPE_OK;
}

loupe_status rt_retr_create(rt_ctx *c, rt_attn_mode mode, const rt_retrieval_params *p,
                            rt_retr **out, loupe_err *err)
{
    const rt_hparams *hp = &c->m->hp;
    *out = NULL;
    if (mode != RT_ATTN_RETRIEVAL && mode != RT_ATTN_FLAT && mode != RT_ATTN_IVF)
        return loupe_fail(err, LOUPE_ERR_INVALID, "retrieval state for a non-retrieval mode");
    if (p->static_max <= p->window)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "the static tail limit (--static-max %u tokens) must exceed the window "
                          "(--window %u tokens)",
                          p->static_max, p->window);
    rt_retr *r = calloc(1, sizeof *r);
    if (!r)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for the retrieval state");
    r->c = c;
    r->mode = mode;
    r->p = *p;
    r->p.ef = rt_retrieval_beam(p->ef, p->topk, c->n_ctx);
    if (r->p.nprobe <= 0)
        r->p.nprobe = 16;
    /* The graphs' build k, queries and list cut where not given (rt_runner.h says why): a
     * 16th of the context within 64..1024 (a short context's keys are few, and large lists
     * only cost there) over 4,096 queries. */
    if (r->p.build_k <= 0)
        r->p.build_k = c->n_ctx / 16 < 64     ? 64
                       : c->n_ctx / 16 > 1024 ? 1024
                                              : (int)(c->n_ctx / 16);
    if (r->p.build_queries <= 0)
        r->p.build_queries = 4096;
    if (r->p.prune_nearest == 0)
        r->p.prune_nearest = r->p.build_k > 128 ? 128 : -1;
    r->n_layer = hp->n_layer;
    r->n_head = hp->n_head;
    r->n_kv = hp->n_head_kv;
    r->hd = hp->head_dim;
    r->group = hp->n_head / hp->n_head_kv;
    r->n_ctx = c->n_ctx;
    r->nq = (size_t)r->n_head * r->hd;
    r->n_threads = c->n_threads;
    r->heads_per_index = r->p.index_per_kv ? r->group : 1;
    r->n_index = r->n_head / r->heads_per_index;
    r->sgroup_max = r->heads_per_index < ANN_GROUP_MAX ? r->heads_per_index : ANN_GROUP_MAX;
    r->sgroup = search_group_of(r, r->p.search_group);
    r->ilv_max = r->group < ANN_INTERLEAVE_MAX ? r->group : ANN_INTERLEAVE_MAX;
    r->ilv = interleave_of(r, r->p.interleave);
    r->task_max = r->sgroup_max > r->ilv_max ? r->sgroup_max : r->ilv_max;
    /* build_queries counts queries per index: a shared index takes its query heads' queries at
     * build_queries / heads_per_index sampled positions */
    int64_t positions = r->p.build_queries / r->heads_per_index;
    if (positions < 1)
        positions = 1;
    r->cap_max = positions < r->n_ctx ? (uint32_t)positions : r->n_ctx;
    r->log_max = r->p.static_max + c->n_batch;
    if (r->p.nprobe > (int)r->n_ctx)
        r->p.nprobe = (int)r->n_ctx;
    /* A one-token step with no previous results to start from (before builds kept the newest
     * query's exact lists, the first after a prefill) searches with COLD_BEAM times the beam:
     * on the bundled model at 16K that step was where passkey answers were lost, and it is one
     * step of many. (A batch of extension tokens is searched unseeded, at the plain beam: it
     * would cost COLD_BEAM times for every token.) */
    enum { COLD_BEAM = 4 };
    r->ef_cold = r->p.ef;
    if (r->mode == RT_ATTN_RETRIEVAL)
        r->ef_cold = (int64_t)r->p.ef * COLD_BEAM < (int64_t)r->n_ctx ? r->p.ef * COLD_BEAM
                                                                      : (int)r->n_ctx;
    r->max_beam = r->ef_cold;
    if (r->p.topk < r->n_ctx && (int)r->p.topk > r->max_beam)
        r->max_beam = (int)r->p.topk;
    if (r->p.nprobe > r->max_beam)
        r->max_beam = r->p.nprobe;
    if (r->max_beam < 64) /* ann_index_add links with each query's top 64 */
        r->max_beam = 64;
    /* a build gathers the sampled queries and a window's tail queries; growth a log's worth */
    uint32_t gmax = r->cap_max + r->p.window > r->log_max ? r->cap_max + r->p.window : r->log_max;
    size_t topk = r->p.topk == 0 ? 1 : r->p.topk < r->n_ctx ? r->p.topk : r->n_ctx;
    /* The query buffers grow with --static-max and --build-queries. Past the machine's memory
     * an overcommitting kernel would hand them out and the first touch kill the process: said
     * here instead. */
    const size_t cap_n = (size_t)r->n_layer * r->cap_max * r->nq;
    const size_t log_n = (size_t)r->n_layer * r->log_max * r->nq;
    const size_t gather_n = (size_t)r->n_threads * gmax * r->heads_per_index * r->hd;
    const double q_bytes = ((double)cap_n + (double)log_n + (double)gather_n) * sizeof(float);
    const double phys = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (phys > 0 && q_bytes > phys) {
        rt_retr_destroy(r);
        return loupe_fail(err, LOUPE_ERR_NOMEM,
                          "the retrieval state's query buffers would take %.1f GiB, more than "
                          "this machine's %.1f GiB of memory (a smaller --static-max or "
                          "--build-queries)",
                          q_bytes / (1 << 30), phys / (1 << 30));
    }
    r->cap = malloc(cap_n * sizeof *r->cap);
    r->log = malloc(log_n * sizeof *r->log);
    r->gmax = gmax;
    r->gather = malloc(gather_n * sizeof *r->gather);
    r->keys = calloc((size_t)r->n_layer * r->n_kv, sizeof *r->keys);
    r->skeys = calloc((size_t)r->n_layer * r->n_kv, sizeof *r->skeys);
    r->index = calloc((size_t)r->n_layer * r->n_index, sizeof *r->index);
    r->todo = malloc((size_t)r->n_layer * sizeof *r->todo);
    r->sctx = calloc((size_t)r->n_threads * r->ilv_max, sizeof *r->sctx);
    r->ids = malloc((size_t)r->n_threads * r->task_max * topk * sizeof *r->ids);
    /* a failure is reported with the other buffers' below */
    const loupe_status ring_st = rt_seed_ring_init(&r->ring, r->n_layer, r->n_head,
                                                   (uint32_t)topk, r->p.seed_lags,
                                                   r->p.seed_explore, NULL);
    r->seeds = malloc((size_t)r->n_threads * r->task_max * (1 + r->ring.lags) * topk *
                      sizeof *r->seeds);
    r->bids = malloc((size_t)r->n_threads * r->task_max * topk * sizeof *r->bids);
    r->bscores = malloc((size_t)r->n_threads * r->task_max * topk * sizeof *r->bscores);
    r->build_seeds = calloc(r->n_layer, sizeof *r->build_seeds);
    r->scores = malloc((size_t)r->n_threads * r->task_max * topk * sizeof *r->scores);
    r->tmp = malloc((size_t)r->n_threads * r->task_max * r->hd * sizeof *r->tmp);
    r->search_t = calloc((size_t)r->n_threads, sizeof *r->search_t);
    r->busy_t = calloc((size_t)r->n_threads, sizeof *r->busy_t);
    r->task_order = malloc((size_t)r->n_layer * r->n_head * sizeof *r->task_order);
    r->task_s = malloc((size_t)r->n_layer * r->n_head * sizeof *r->task_s);
    /* with topk at least the context, every partial covers the whole host set: a block at a
     * time (1 GiB per thread at 128K on the 8B shape otherwise) */
    r->gather_max = r->p.topk >= r->n_ctx ? RT_HOST_BLOCK : (uint32_t)topk;
    r->n_slices = r->n_threads > (int)r->n_kv ? ((uint32_t)r->n_threads + r->n_kv - 1) / r->n_kv
                                              : 1;
    r->spart = malloc((size_t)r->n_slices * r->nq * sizeof *r->spart);
    r->slse = malloc((size_t)r->n_slices * r->n_head * sizeof *r->slse);
    r->hout = malloc(r->nq * sizeof *r->hout);
    r->hlse = malloc((size_t)r->n_head * sizeof *r->hlse);
    r->gk = malloc((size_t)r->n_threads * r->gather_max * r->hd * sizeof *r->gk);
    r->gv = malloc((size_t)r->n_threads * r->gather_max * r->hd * sizeof *r->gv);
    if (ring_st || !r->cap || !r->log || !r->gather || !r->keys || !r->skeys || !r->index ||
        !r->todo || !r->sctx || !r->ids || !r->seeds || !r->bids || !r->bscores ||
        !r->build_seeds || !r->gk || !r->gv || !r->spart || !r->slse || !r->hout || !r->hlse ||
        !r->scores || !r->tmp || !r->search_t || !r->busy_t || !r->task_order || !r->task_s) {
        rt_retr_destroy(r);
        return loupe_fail(err, LOUPE_ERR_NOMEM,
                          "out of memory for the retrieval state (%.1f MiB of query buffers)",
                          q_bytes / (1 << 20));
    }
    reset_task_order(r);
    for (size_t i = 0; i < (size_t)r->n_threads * r->ilv_max; i++) {
        loupe_status st = ann_search_ctx_create(r->n_ctx, r->max_beam, &r->sctx[i], err);
        if (st) {
            rt_retr_destroy(r);
            return st;
        }
    }
    /* The host K/V: the context's own float32 cache when it has one and no other type is
     * asked for; else rows of their own (bf16 by default, a context without a cache being the
     * GPU's co-execution partner). */
    int type = p->host_kv;
    if (type < 0)
        type = c->k_cache ? ANN_KEYS_F32 : ANN_KEYS_BF16;
    if (type == ANN_KEYS_F32 && c->k_cache) {
        rt_host_kv_view_f32(&r->hkv, c->k_cache, c->v_cache, r->n_layer, r->n_kv, r->n_ctx,
                            r->hd);
    } else {
        loupe_status st = rt_host_kv_alloc(&r->hkv, (ann_key_type)type, r->n_layer, r->n_kv,
                                           r->n_ctx, r->hd, err);
        if (st) {
            rt_retr_destroy(r);
            return st;
        }
        r->hkv_copy = c->k_cache != NULL;
        /* The keys page-locked where a GPU builds the graphs: each build uploads its keys (and
         * the prefill writes them), and staged copies crawled while the builds kept every core
         * busy. Pinning the values too would help the prefill's copies only; not done. */
        if (rt_cuda_available())
            r->k_pinned = rt_cuda_host_pin(r->hkv.k, (size_t)r->n_layer * r->n_kv * r->n_ctx *
                                                         r->hd * ann_key_type_bytes(r->hkv.type));
    }
    r->use_copy = mode == RT_ATTN_RETRIEVAL && p->search_copy > 0;
    *out = r;
    return LOUPE_OK;
}

const rt_host_kv *rt_retr_host_kv(const rt_retr *r) { return &r->hkv; }

/* With a typed copy (hkv_copy), positions [p0, p1) of layer l (every KV head) encoded from the
 * context's cache into it; nothing otherwise (a view, or rows written by the GPU's prefill). */
static void copy_rows(rt_retr *r, uint32_t l, uint32_t p0, uint32_t p1)
{
    if (!r->hkv_copy)
        return;
    for (uint32_t g = 0; g < r->n_kv; g++) {
        const float *K = rt_ctx_keys(r->c, l, g), *V = rt_ctx_values(r->c, l, g);
        for (uint32_t p = p0; p < p1; p++)
            rt_host_kv_store(&r->hkv, l, g, p, K + (size_t)p * r->hd, V + (size_t)p * r->hd);
    }
}

/* The static/host split of a context of n tokens. */
static void split(rt_retr *r, uint32_t n)
{
    r->sinks = r->p.sinks < n ? r->p.sinks : n;
    r->host_end = n > r->p.window ? n - r->p.window : 0;
    if (r->host_end < r->sinks)
        r->host_end = r->sinks;
}

/* (The arrays may be missing: a create that failed half way destroys what it made.) */
static void drop_indexes(rt_retr *r)
{
    for (size_t i = 0; r->index && i < (size_t)r->n_layer * r->n_index; i++) {
        ann_index_destroy(r->index[i]);
        r->index[i] = NULL;
    }
    for (size_t i = 0; r->keys && r->skeys && i < (size_t)r->n_layer * r->n_kv; i++) {
        ann_keys_destroy(r->keys[i]);
        ann_keys_destroy(r->skeys[i]);
        r->keys[i] = r->skeys[i] = NULL;
    }
}

/* The indexes dropped and the context's hooks removed: what a reset and a destroy share (a
 * destroy after a failed create must not touch the buffers a reset clears). */
static void detach(rt_retr *r)
{
    drop_indexes(r);
    r->c->q_hook = NULL;
    r->c->attend_hook = NULL;
}

void rt_retr_reset(rt_retr *r)
{
    detach(r);
    r->sealed = false;
    r->sinks = r->host_end = 0;
    r->n_cap = r->prefill_n = 0;
    r->hook_status = LOUPE_OK;
    memset(&r->st, 0, sizeof r->st);
    rt_seed_ring_clear(&r->ring);
    memset(r->build_seeds, 0, r->n_layer * sizeof *r->build_seeds);
    reset_task_order(r);
}

void rt_retr_destroy(rt_retr *r)
{
    if (!r)
        return;
    detach(r); /* not rt_retr_reset: after a failed create its buffers may be missing */
    if (r->sctx)
        for (size_t i = 0; i < (size_t)r->n_threads * r->ilv_max; i++)
            ann_search_ctx_destroy(r->sctx[i]);
    free(r->cap);
    free(r->log);
    free(r->gather);
    free(r->keys);
    free(r->skeys);
    free(r->index);
    free(r->todo);
    free(r->sctx);
    free(r->ids);
    free(r->seeds);
    free(r->bids);
    free(r->bscores);
    free(r->gk);
    free(r->gv);
    free(r->spart);
    free(r->slse);
    free(r->hout);
    free(r->hlse);
    if (r->k_pinned)
        rt_cuda_host_unpin(r->hkv.k);
    rt_host_kv_free(&r->hkv);
    rt_seed_ring_free(&r->ring);
    free(r->build_seeds);
    free(r->scores);
    free(r->tmp);
    free(r->search_t);
    free(r->busy_t);
    free(r->task_order);
    free(r->task_s);
    free(r);
}

bool rt_retr_sealed(const rt_retr *r) { return r->sealed; }

void rt_retr_begin(rt_retr *r, size_t n)
{
    rt_retr_reset(r);
    r->prefill_n = (uint32_t)n;
    r->cap_stride = (uint32_t)((n + r->cap_max - 1) / r->cap_max);
    if (r->cap_stride == 0)
        r->cap_stride = 1;
    r->n_cap = (uint32_t)((n + r->cap_stride - 1) / r->cap_stride);
    split(r, (uint32_t)n); /* known now, so layers can be built while later ones prefill */
    r->c->q_hook = capture_hook;
    r->c->hook_user = r;
}

void rt_retr_capture_plan(const rt_retr *r, uint32_t *stride, uint32_t *from)
{
    *stride = r->cap_stride;
    *from = r->prefill_n > r->p.window ? r->prefill_n - r->p.window : 0;
}

void rt_retr_capture(rt_retr *r, uint32_t layer, uint32_t pos0, uint32_t stride, size_t n,
                     const float *q)
{
    for (size_t i = 0; i < n; i++)
        capture_hook(r, layer, pos0 + (uint32_t)i * stride, 1, q + i * r->nq);
}

/* ==== Indexes ============================================================================= */

/* Index x's query heads' rows of a (rows, n_head, hd) block, then of a second (rows2, n_head,
 * hd) block (rows2 may be 0), contiguous head by head into thread t's gather buffer:
 * (rows + rows2) · heads_per_index queries. */
static const float *gather_index(rt_retr *r, int t, const float *block, uint32_t rows,
                                 const float *block2, uint32_t rows2, uint32_t x)
{
    float *g = r->gather + (size_t)t * r->gmax * r->heads_per_index * r->hd;
    const size_t per_head = (size_t)rows + rows2;
    for (uint32_t j = 0; j < r->heads_per_index; j++) {
        uint32_t h = x * r->heads_per_index + j;
        for (uint32_t i = 0; i < rows; i++)
            memcpy(g + ((size_t)j * per_head + i) * r->hd,
                   block + ((size_t)i * r->n_head + h) * r->hd, r->hd * sizeof(float));
        for (uint32_t i = 0; i < rows2; i++)
            memcpy(g + ((size_t)j * per_head + rows + i) * r->hd,
                   block2 + ((size_t)i * r->n_head + h) * r->hd, r->hd * sizeof(float));
    }
    return g;
}

/* At most `max` GPU calls of one kind in flight; the calls' summed seconds in *sum (under the
 * gate's lock: one writer at a time). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t freed;
    int in_flight;
} call_gate;

static void gate_enter(call_gate *g, int max)
{
    pthread_mutex_lock(&g->mu);
    while (g->in_flight >= max)
        pthread_cond_wait(&g->freed, &g->mu);
    g->in_flight++;
    pthread_mutex_unlock(&g->mu);
}

static void gate_leave(call_gate *g, double seconds, double *sum)
{
    pthread_mutex_lock(&g->mu);
    *sum += seconds;
    g->in_flight--;
    pthread_cond_signal(&g->freed);
    pthread_mutex_unlock(&g->mu);
}

/* A measurement switch's count of calls in flight: the environment's `name` within 1..most, or
 * dflt when it is not set. */
static int calls_from_env(const char *name, int dflt, int most)
{
    const char *v = getenv(name);
    const long n = v ? strtol(v, NULL, 10) : dflt;
    return n < 1 ? 1 : n > most ? most : (int)n;
}

/* GPU kNN calls in flight at most: 1, or LOUPE_KNN_CALLS (1..4) to measure whether more pay.
 * Each call takes device memory outside the engine's budget (at 128K keys about 0.35 GB with
 * top-64 lists, 0.6 GB with top-1024: the wide path's score rows; runtime/cuda/knn.cu,
 * knn_wide.cu), so concurrent builds must not multiply it by default; a call fills the GPU, and
 * the builds' CPU steps still overlap. */
static int knn_calls_max(void)
{
    return calls_from_env("LOUPE_KNN_CALLS", 1, 4);
}

/* LOUPE_IVF_GPU=1: the IVF builds' k-means assignments go through knn_on_gpu as top-1 searches
 * (ann_build_opts.kmeans_knn) instead of the build's threads (~80 s of the 8B shape's 128K ivf
 * prefill with a dot product a centroid; since 2026-12-07 the threads run ann_knn_cpu's blocked
 * products, 2.1-2.4x as fast on dev-2c, not yet measured there). Off by default until
 * measured: the ~2,300 calls of a 128K build pass the same one-at-a-time gate as the graphs'. */
static bool ivf_kmeans_on_gpu(void)
{
    const char *v = getenv("LOUPE_IVF_GPU");
    return v && !strcmp(v, "1");
}

/* The GPU's exact kNN for builds that run at once (knn_calls_max at a time). Where the device
 * has too little memory left for a call (another process took it), the CPU computes the same
 * lists, slower, rather than failing the prefill. */
static loupe_status knn_on_gpu(void *user, const ann_keys *keys, const float *queries,
                               int64_t nq, int k, int threads, int32_t *ids, float *scores,
                               int32_t *key_best_query, loupe_err *err)
{
    static call_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    rt_retr *r = user;
    gate_enter(&gate, knn_calls_max());
    const double t0 = now_s();
    loupe_status st = rt_cuda_knn(NULL, keys, queries, nq, k, threads, ids, scores,
                                  key_best_query, err);
    gate_leave(&gate, now_s() - t0, &r->st.build_knn_gpu_s);
    if (st == LOUPE_ERR_GPU_MEMORY) {
#pragma omp atomic
        r->st.build_knn_cpu_calls++;
        st = ann_knn_cpu(NULL, keys, queries, nq, k, threads, ids, scores, key_best_query, err);
    }
    return st;
}

/* GPU pruning calls in flight at most: 4, or LOUPE_PRUNE_CALLS (1..8) to measure another. A
 * call holds little device memory (the keys as stored and the lists, ~60 MB at 128K keys) but
 * much host work around its kernels (the lists gathered and staged, the results scattered
 * back), which one call at a time kept on the build's critical path. Four at once: the 128K
 * build 36.9 → 32.5-33.0 s; the prefill, bound by the GPU that the build's calls share with
 * it, did not move (docs/BENCHMARKS.md). */
static int prune_calls_max(void)
{
    return calls_from_env("LOUPE_PRUNE_CALLS", 4, 8);
}

/* The projection's pruning on the GPU, at most prune_calls_max() calls at once. */
static loupe_status prune_on_gpu(void *user, const ann_prune_job *job, loupe_err *err)
{
    static call_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    rt_retr *r = user;
    gate_enter(&gate, prune_calls_max());
    const double t0 = now_s();
    loupe_status st = rt_cuda_prune(NULL, job, err);
    gate_leave(&gate, now_s() - t0, &r->st.build_prune_gpu_s);
    return st;
}

/* The int8c search copies of the n_todo layers' keys (use_copy), with room for cap rows, one
 * (layer, KV head) per thread; their bytes count as the indexes'. */
static loupe_status search_copies(rt_retr *r, const uint32_t *todo, uint32_t n_todo, int64_t cap,
                                  loupe_err *err)
{
    if (!r->use_copy)
        return LOUPE_OK;
    const long work = (long)n_todo * r->n_kv;
    loupe_status first = LOUPE_OK;
    uint64_t bytes = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->n_threads) reduction(+ : bytes)
    for (long w = 0; w < work; w++) {
        const size_t i = (size_t)todo[w / r->n_kv] * r->n_kv + (size_t)(w % r->n_kv);
        loupe_err e;
        loupe_status st = ann_keys_search_copy(r->keys[i], cap, &r->skeys[i], &e);
        if (st) {
#pragma omp critical(rt_retr_build)
            if (!first) {
                first = st;
                if (err)
                    *err = e;
            }
            continue;
        }
        bytes += ann_keys_bytes(r->skeys[i]);
    }
    r->st.index_bytes += bytes;
    return first;
}

/* Builds the indexes of layers [l0, l1) not built yet over host positions [sinks, host_end),
 * from `rows` queries per query head of `qsrc` (layer stride qstride rows) and, after a
 * prefill, the queries of the static tail's positions (the log's first prefill_n − host_end
 * rows: the context's last `window` positions). Those are the queries most like the decode
 * steps' — a question at the end of the context and the answer after it — and evenly sampled
 * positions rarely include them: on the bundled model at 16K, graphs built without them lost
 * passkey answers that exact top-k attention found (docs/BENCHMARKS.md). Keys become views
 * with room up to the end of the cache.
 *
 * The indexes build at once, each on a share of the threads (one each when there are as many
 * indexes as threads): a build has serial steps (entry points, reachability, compaction) and
 * parallel ones that scale poorly on one index's lists, so one index at a time on every thread
 * left most of them waiting (docs/BENCHMARKS.md: 66.6 → 46.1 s at 128K for a layer's 8 at once). */
static loupe_status build_layers(rt_retr *r, uint32_t l0, uint32_t l1, const float *qsrc,
                                 uint32_t qstride, uint32_t rows, bool with_tail, loupe_err *err)
{
    const int64_t n_host = r->host_end - r->sinks, cap = (int64_t)r->n_ctx - r->sinks;
    if (r->p.topk == 0) /* the static set alone: nothing is ever searched */
        return LOUPE_OK;
    const uint32_t tail = with_tail && r->prefill_n > r->host_end ? r->prefill_n - r->host_end : 0;
    double t0 = now_s();
    uint32_t *todo = r->todo, n_todo = 0; /* the layers to build */
    for (uint32_t l = l0; l < l1 && l < r->n_layer; l++) {
        if (r->index[(size_t)l * r->n_index])
            continue;
        copy_rows(r, l, r->sinks, r->host_end);
        for (uint32_t g = 0; g < r->n_kv; g++) {
            loupe_status st = rt_host_kv_keys_view(&r->hkv, l, g, r->sinks, n_host,
                                                   &r->keys[(size_t)l * r->n_kv + g], err);
            if (st)
                return st;
        }
        todo[n_todo++] = l;
    }
    const long work = (long)n_todo * r->n_index;
    if (work == 0)
        return LOUPE_OK;
    loupe_status copied = search_copies(r, todo, n_todo, cap, err);
    if (copied)
        return copied;
    /* The graphs keep each query head's exact top-k for its last query (the newest position:
     * the prefill's last, or the tail's when settle builds the first indexes), and the next
     * one-token step starts from them as from a previous step's results — not from nothing
     * with COLD_BEAM times the beam (~0.1 s a turn at 1M tokens). That step expands its whole
     * beam, as the cold one did (the narrowing is for steps that follow a step: the first
     * token of an answer is where the cold step once lost passkey answers). With a tail (its
     * queries are consecutive positions) they keep the last `planes` positions' lists, which
     * fill the seeding ring as if that many one-token steps had run: the first step of an
     * answer explores the steps back and seeds from them. */
    const uint32_t per_head = rows + tail;
    const uint32_t planes = tail == 0 ? 1 : tail < r->ring.lags ? tail : r->ring.lags;
    const uint32_t n_keep = r->heads_per_index * planes; /* (planes, heads) rows, oldest first */
    int64_t *keep_rows = NULL;
    int32_t *keep_buf = NULL; /* (threads, n_keep, topk) */
    const int conc = work < r->n_threads ? (int)work : r->n_threads;
    if (index_type(r->mode) == ANN_GRAPH && r->p.topk < n_host && per_head > 0 &&
        (tail > 0 || !with_tail)) {
        keep_rows = malloc(n_keep * sizeof *keep_rows);
        keep_buf = malloc((size_t)conc * n_keep * r->p.topk * sizeof *keep_buf);
        if (!keep_rows || !keep_buf) {
            free(keep_rows);
            free(keep_buf);
            return loupe_fail(err, LOUPE_ERR_NOMEM, "no memory for the index builds' seeds");
        }
        for (uint32_t pl = 0; pl < planes; pl++) /* plane pl: the position planes - pl back */
            for (uint32_t j = 0; j < r->heads_per_index; j++)
                keep_rows[pl * r->heads_per_index + j] =
                    (int64_t)j * per_head + per_head - (planes - pl);
        for (uint32_t i = 0; i < n_todo; i++) /* planes 0 .. planes-1, the newest last */
            rt_seed_ring_start(&r->ring, todo[i], planes);
    }
    const int inner = r->n_threads / conc > 0 ? r->n_threads / conc : 1;
    const int levels = omp_get_max_active_levels();
    if (inner > 1 && levels < 2)
        omp_set_max_active_levels(2);
    loupe_status first = LOUPE_OK;
    double knn_s = 0, proj_s = 0, repair_s = 0, task_s = 0;
    uint64_t bytes = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(conc) \
    reduction(+ : knn_s, proj_s, repair_s, task_s, bytes)
    for (long w = 0; w < work; w++) {
        const double t_task = now_s();
        const int t = omp_get_thread_num();
        const uint32_t l = todo[w / r->n_index], x = (uint32_t)(w % r->n_index);
        ann_build_opts bo;
        ann_build_opts_init(&bo);
        bo.threads = inner;
        if (r->p.degree > 0)
            bo.degree = r->p.degree;
        bo.build_k = r->p.build_k;
        bo.prune = (ann_prune_rule)r->p.prune;
        bo.prune_nearest = r->p.prune_nearest > 0 ? r->p.prune_nearest : 0;
        if (rt_cuda_available()) { /* the kNN and the pruning on the GPU when there is one */
            bo.knn = knn_on_gpu;
            bo.knn_user = r;
            bo.kmeans_knn = ivf_kmeans_on_gpu();
            if (!r->p.cpu_prune) {
                bo.prune_lists = prune_on_gpu;
                bo.prune_user = r;
            }
        }
        const size_t slot = (size_t)l * r->n_head + (size_t)x * r->heads_per_index;
        int32_t *kept = keep_buf ? keep_buf + (size_t)t * n_keep * r->p.topk : NULL;
        if (keep_rows) {
            bo.n_keep = (int)n_keep;
            bo.keep_k = (int)r->p.topk;
            bo.keep_row = keep_rows;
            bo.kept = kept;
        }
        const float *q = gather_index(r, t, qsrc + (size_t)l * qstride * r->nq, rows,
                                      r->log + (size_t)l * r->log_max * r->nq, tail, x);
        const uint32_t g = x * r->heads_per_index / r->group;
        ann_index **ix = &r->index[(size_t)l * r->n_index + x];
        ann_build_stats bs;
        loupe_err e;
        loupe_status st = ann_index_build(index_type(r->mode), r->keys[(size_t)l * r->n_kv + g], q,
                                          ((int64_t)rows + tail) * r->heads_per_index, &bo, ix,
                                          &bs, &e);
        if (!st)
            st = ann_index_reserve(*ix, cap, &e);
        if (!st && r->skeys[(size_t)l * r->n_kv + g])
            st = ann_index_set_search_keys(*ix, r->skeys[(size_t)l * r->n_kv + g], &e);
        if (st) {
#pragma omp critical(rt_retr_build)
            if (!first) {
                first = st;
                if (err) {
                    *err = e;
                    loupe_err_prefix(err, "index %u of layer %u", x, l);
                }
            }
            continue;
        }
        for (uint32_t row = 0; keep_rows && row < n_keep; row++) {
            const uint32_t pl = row / r->heads_per_index, j = row % r->heads_per_index;
            const int32_t *list = kept + (size_t)row * r->p.topk;
            int n = 0;
            while (n < (int)r->p.topk && list[n] >= 0)
                n++;
            memcpy(rt_seed_ring_ids(&r->ring, pl, slot + j), list, (size_t)n * sizeof *list);
            *rt_seed_ring_count(&r->ring, pl, slot + j) = n;
        }
        knn_s += bs.knn_s;
        proj_s += bs.projection_s;
        repair_s += bs.repair_s;
        bytes += ann_index_bytes(*ix);
        task_s += now_s() - t_task;
    }
    if (inner > 1 && levels < 2)
        omp_set_max_active_levels(levels);
    for (uint32_t i = 0; keep_rows && i < n_todo; i++)
        r->build_seeds[todo[i]] = true;
    free(keep_rows);
    free(keep_buf);
    r->st.build_knn_s += knn_s; /* thread time, waits for the GPU included: builds overlap */
    r->st.build_proj_s += proj_s;
    r->st.build_repair_s += repair_s;
    r->st.build_task_s += task_s;
    r->st.index_bytes += bytes;
    r->st.build_s += now_s() - t0;
    return first;
}

/* Builds every layer's indexes not built yet (see build_layers). */
static loupe_status build_indexes(rt_retr *r, const float *qsrc, uint32_t qstride, uint32_t rows,
                                  bool with_tail, loupe_err *err)
{
    return build_layers(r, 0, r->n_layer, qsrc, qstride, rows, with_tail, err);
}

loupe_status rt_retr_build_layers(rt_retr *r, uint32_t from, uint32_t to, loupe_err *err)
{
    if (r->sealed || r->prefill_n == 0 || from >= to || to > r->n_layer)
        return loupe_fail(err, LOUPE_ERR_INTERNAL,
                          "index build of layers [%u, %u) outside a prefill", from, to);
    if (r->host_end <= r->sinks)
        return LOUPE_OK; /* no host set */
    return build_layers(r, from, to, r->cap, r->cap_max, r->n_cap, true, err);
}

loupe_status rt_retr_seal(rt_retr *r, loupe_err *err)
{
    rt_ctx *c = r->c;
    uint32_t n = c->n_past;
    if (n != r->prefill_n)
        return loupe_fail(err, LOUPE_ERR_INTERNAL,
                          "sealing a context of %u tokens after a prefill of %u", n,
                          r->prefill_n);
    split(r, n);
    /* The log holds the last `window` prefill positions from slot 0; if the tail is shorter
     * (no host set), shift it so slot 0 is host_end. */
    uint32_t tail0 = r->prefill_n > r->p.window ? r->prefill_n - r->p.window : 0;
    if (r->host_end > tail0)
        for (uint32_t l = 0; l < r->n_layer; l++) {
            float *lg = r->log + (size_t)l * r->log_max * r->nq;
            memmove(lg, lg + (size_t)(r->host_end - tail0) * r->nq,
                    (size_t)(n - r->host_end) * r->nq * sizeof *lg);
        }
    if (r->host_end > r->sinks) {
        loupe_status st = build_indexes(r, r->cap, r->cap_max, r->n_cap, true, err);
        if (st) {
            drop_indexes(r);
            return st;
        }
    }
    c->q_hook = log_hook;
    c->attend_hook = attend_hook;
    c->hook_user = r;
    r->sealed = true;
    return LOUPE_OK;
}

loupe_status rt_retr_settle(rt_retr *r, loupe_err *err)
{
    loupe_status failed = take_hook_failure(r, err);
    if (failed)
        return failed;
    uint32_t n = r->c->n_past, tail = n - r->host_end;
    if (tail <= r->p.static_max)
        return LOUPE_OK;
    /* Move all but the last `window` tail tokens to the host set, linked into the indexes by
     * every tail query (those are the queries that attended to the moved tokens). */
    uint32_t moved = tail - r->p.window;
    double t0 = now_s();
    if (!r->index[0]) { /* no host set yet: first indexes, built from the tail's queries */
        r->host_end += moved;
        loupe_status st = build_indexes(r, r->log, r->log_max, tail, false, err);
        if (st) {
            drop_indexes(r);
            r->host_end -= moved;
            return st;
        }
    } else {
        int64_t n_host = (int64_t)r->host_end + moved - r->sinks;
        for (uint32_t l = 0; l < r->n_layer; l++)
            copy_rows(r, l, r->host_end, r->host_end + moved);
        for (size_t i = 0; i < (size_t)r->n_layer * r->n_kv; i++) {
            loupe_status st = ann_keys_set_count(r->keys[i], n_host, err);
            if (!st && r->skeys[i]) {
                const size_t before = ann_keys_bytes(r->skeys[i]);
                st = ann_keys_search_copy_sync(r->skeys[i], r->keys[i], err);
                r->st.index_bytes += ann_keys_bytes(r->skeys[i]) - before;
            }
            if (st)
                return st;
        }
        /* Every index grows on its own thread (indexes sharing keys may grow at once). */
        const long n_ix = (long)r->n_layer * r->n_index;
        loupe_status first = LOUPE_OK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->n_threads)
        for (long i = 0; i < n_ix; i++) {
            int t = omp_get_thread_num();
            uint32_t l = (uint32_t)(i / r->n_index), h = (uint32_t)(i % r->n_index);
            const float *q = gather_index(r, t, r->log + (size_t)l * r->log_max * r->nq, tail,
                                          NULL, 0, h);
            loupe_err e;
            loupe_status st = ann_index_add(r->index[i], q, (int64_t)tail * r->heads_per_index,
                                            r->sctx[(size_t)t * r->ilv_max], &e);
            if (st) {
#pragma omp critical(rt_retr_grow)
                if (!first) {
                    first = st;
                    if (err) {
                        *err = e;
                        loupe_err_prefix(err, "growing index %u of layer %u", h, l);
                    }
                }
            }
        }
        if (first)
            return first;
        r->host_end += moved;
    }
    for (uint32_t l = 0; l < r->n_layer; l++) {
        float *lg = r->log + (size_t)l * r->log_max * r->nq;
        memmove(lg, lg + (size_t)moved * r->nq, (size_t)(n - r->host_end) * r->nq * sizeof *lg);
    }
    r->st.moves++;
    r->st.build_s += now_s() - t0;
    return LOUPE_OK;
}

void rt_retr_stats(const rt_retr *r, rt_runner_stats *out)
{
    *out = r->st;
    out->n_static = r->sealed ? r->sinks + (r->c->n_past - r->host_end) : r->c->n_past;
    out->n_host = r->sealed ? r->host_end - r->sinks : 0;
}
