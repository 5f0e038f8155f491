/*
 * Part of runtime.h: the runner — one sequence on a chosen backend with a chosen attention, the
 * object every command drives (ask, logits, bench niah).
 *
 * An rt_runner wraps an rt_ctx (CPU backend) or an rt_cuda_engine (CUDA backend) and, in the
 * retrieval modes, the retrieval state of DESIGN.md:
 *
 *   prefill   The context, with full attention. In a retrieval mode the context is then split:
 *             the STATIC set is its first `sinks` and last `window` tokens, the HOST set the rest;
 *             every KV head of every layer gets an index over its host keys, built from that
 *             layer's prefill queries of the KV head's query heads (sampled to `build_queries`)
 *             and searched by each of them (or, with index_per_kv off, one index per query head).
 *             A runner with a sealed context takes further prefill calls as extensions (below).
 *   extend    Tokens after the context (a follow-up question, each generated token): in full mode
 *             ordinary attention; in a retrieval mode each token's query heads attend exactly to
 *             the static set (causally: new tokens see each other) and to the `topk` host keys
 *             their index returns; the two partials are merged exactly (rt_attn_merge). New
 *             tokens join the static set; when its tail (everything after the host set) grows
 *             past `static_max` tokens, all but the last `window` of them move to the host set
 *             and into the indexes (ann_index_add), linked by the queries that attended to them.
 *
 * Modes: RT_ATTN_RETRIEVAL searches the attention-aware graph (ANN_GRAPH); RT_ATTN_FLAT an exact
 * scan (the baseline: what the retrieval would be with perfect recall); RT_ATTN_IVF k-means lists
 * (the baseline the method claims to beat). With topk ≥ the host set every host key is attended
 * and the result equals full attention up to rounding. topk = 0 is the static set alone
 * (StreamingLLM), to show what the retrieval adds.
 *
 * Where the retrieval runs: the host set's K/V live in host memory (`host_kv`: on the CPU
 * backend the CPU context's own float32 cache by default; bf16 or int8 rows otherwise), and the
 * indexes search views over its keys. On the CPU backend that context does everything. With the
 * CUDA backend a retrieval mode CO-EXECUTES (DESIGN.md): the engine runs in its retrieval layout
 * (rt_cuda.h: only the static set on the GPU, plus one layer's K/V during the prefill); the
 * CPU context keeps no cache; the prefill runs layer by layer on the GPU, queries captured and
 * each layer's K/V written into the host K/V (bf16 by default); the indexes are built (kNN on
 * the GPU); then every
 * later token is a GPU decode step whose per-layer host half (search + attention over the host
 * keys, rt_retr_host_attend) runs on CPU threads while the GPU attends to the static set, the
 * two partials merged on the GPU. Extensions of several tokens go through it one token at a time.
 */
#ifndef LOUPE_RT_RUNNER_H
#define LOUPE_RT_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"
#include "runtime/rt_cuda.h"
#include "runtime/rt_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { RT_BACKEND_AUTO = 0, RT_BACKEND_CPU = 1, RT_BACKEND_CUDA = 2 } rt_backend;
typedef enum {
    RT_ATTN_AUTO = 0,      /* full when it fits (the CPU backend: always), else retrieval */
    RT_ATTN_FULL = 1,
    RT_ATTN_RETRIEVAL = 2, /* attention-aware graph */
    RT_ATTN_FLAT = 3,      /* exact top-k (baseline) */
    RT_ATTN_IVF = 4        /* IVF top-k (baseline) */
} rt_attn_mode;

const char *rt_backend_name(rt_backend b);    /* "auto", "cpu", "cuda" */
const char *rt_attn_mode_name(rt_attn_mode m); /* "auto", "full", "retrieval", "flat", "ivf" */

typedef struct {
    uint32_t topk;          /* host keys attended per query head (100); 0 = static set only */
    uint32_t sinks;         /* first tokens kept static (128) */
    uint32_t window;        /* last tokens of the context kept static (512) */
    uint32_t static_max;    /* static tail that triggers a move to the host set (2048) */
    int ef;                 /* graph beam; 0: topk, at least 100 */
    int expand;             /* graph: a search stops once the best `expand` of its pool are
                               expanded (0: the runtime's choice, rt_retrieval_expand: 64 of
                               the default beam of 100; ef or more: all); fewer keys scanned
                               for the tail of the top-k, which carries little attention
                               weight */
    int expand_batch;       /* graph: pool entries expanded at a time, their key rows fetched
                               together (0 or 1: one; anns.h's ann_search_params) */
    float margin;           /* graph: a search stops at the first unexpanded pool entry whose
                               attention logit q·k/sqrt(hd) is below the best's by more than
                               this (0: no such stop): keys e^-margin of the best weigh nothing.
                               expand and margin narrow decode steps only (searches seeded with
                               the previous step's keys); a batch of extension tokens has no
                               seeds and keeps the whole beam */
    int seed_lags;          /* graph: a decode step's search starts from the last step's results
                               and from the key `lag` after each result of the step `lag` back,
                               lag 1 .. seed_lags (0: 16; fewer where seed_lags · topk would
                               pass 1,600, at least 1): a copied run of the context that fell
                               out of one step's top k comes back moved on. On the bundled
                               model's 128K layer-3 vectors 16 steps back raised a head's
                               recall@100 from .705 to .857 at 0.80% of the keys instead of
                               0.69%, the default beam (docs/BENCHMARKS.md, "stream seeds").
                               A head seeds from the steps back only while they pay: see
                               seed_explore */
    int seed_explore;       /* graph: every seed_explore-th decode step of a layer (the first
                               right after the index build, which keeps the prompt's last
                               seed_lags positions' lists; else once 4 steps are kept) seeds all
                               its heads from every step back and searches again from the last
                               step's seeds alone; until the next such step a head seeds from
                               the steps back only if they found at least 2 more of the top k
                               and a key for every 32 rows they added (on the 8B shape's random
                               weights they found few and doubled the rows), and before the
                               first from the last step alone (0: 16; 1: every step explores:
                               all heads always seed from every step back, each step searched
                               twice) */
    uint32_t interleave;    /* with search_group 1: query heads of a KV group one thread searches
                               at once, interleaved a step at a time so that one search's memory
                               waits overlap the others' work (anns.h's ann_search_many; 0: two
                               where a layer has at least twice as many query heads as threads,
                               else one; at most 4); the same results */
    int nprobe;             /* IVF lists probed; 0: 16 */
    int64_t build_queries;  /* prefill queries per index, sampled evenly (0: 4,096; a shared
                               index takes its query heads' queries at a 1/group of that many
                               positions). With a large build_k, 4,096 find as much as 16,384
                               with top-64 lists */
    int degree;             /* graph out-degree cap (16); 0: anns' default */
    int build_k;            /* graph: exact top-k per build query (0: a 16th of the context
                               within 64..1,024, 1,024 from 16K on). On the bundled model's
                               real vectors top-1024 lists over 4,096 queries find .735 of a
                               decode step's top-100 at 128K where top-64 over 16,384 find .540,
                               at the same search time (docs/BENCHMARKS.md, "large build k and
                               search groups at equal search time"), .586 at half the beam;
                               ~20% more CPU build time, and on the GPU a 128K prefill of
                               ~45 s instead of ~33 (the build's GPU calls; "the GPU build of
                               large-k graphs") */
    int prune;              /* graph: ann_prune_rule (ANN_PRUNE_L2, the default) */
    int prune_nearest;      /* graph: each list cut to its N candidates nearest the owner before
                               pruning (ann_build_opts.prune_nearest; 0: 128 where build_k is
                               larger, else none; < 0: none). With a large build_k, 128 keeps
                               the recall and cuts the CPU projection 2.4-3x; the GPU pruning
                               cuts too (its greedy pass stops after N) */
    bool cpu_prune;         /* graph: prune on CPU threads even where a GPU could (false: the
                               GPU prunes where there is one, runtime/cuda/prune.cu; the graphs
                               differ only where distances tie within rounding) */
    bool index_per_kv;      /* one index per KV head (default), built from the union of its
                               query heads' queries and searched by each of them (a quarter of
                               the indexes and their memory under 4-way GQA); else one per
                               query head */
    uint32_t search_group;  /* with index_per_kv: query heads of a KV group searched by one
                               traversal that loads each key row once for all of them (1: one
                               search per head, the default). On the bundled model at 16K a
                               pair loads 0.78-0.89x the rows per head at the same ef; on the
                               8B shape at 128K it loads more (1.60% vs 1.44% of the keys),
                               scores each row twice and leaves 16 tasks per layer to balance
                               instead of 32: 43.6 vs 28.2 ms/token (docs/BENCHMARKS.md) */
    int host_kv;            /* ann_key_type of the host set's K/V (--host-kv); -1 (default):
                               the CPU context's own float32 cache on the CPU backend, bf16
                               co-executed with the GPU. int8 (a scale per row) halves bf16:
                               what 1M tokens of an 8B model need on a 125 GB machine */
    int search_copy;        /* graph: the walk scores an int8 copy of the host keys with one
                               scale per channel (ann_keys_search_copy: half a bf16 row's
                               bytes, no per-row scale), the beam re-scored against the host
                               keys: 1 on, 0 off (the default). Off because the bytes are not
                               what a search waits for: at 128K on the 8B shape (16 threads,
                               ~0.5 GB of bf16 rows per token) the copy searched in 14.1-16.0
                               ms/token against 13.4 without, for 4.3 GB more host memory
                               and ~10 s more index build (docs/BENCHMARKS.md) */
} rt_retrieval_params;

typedef struct {
    rt_backend backend;
    rt_attn_mode attention;
    uint32_t n_ctx;         /* 0 = the model's training context */
    uint32_t n_batch;       /* 0 = the backend's default */
    int n_threads;          /* 0 = all cores */
    uint64_t gpu_mem;       /* CUDA budget in bytes; 0 = the device's free memory */
    int device;
    rt_cuda_dtype precision;
    bool local_prefill;     /* TIMING ONLY, CUDA backend: rt_cuda_params.local_prefill */
    rt_retrieval_params retrieval;
} rt_runner_params;

void rt_runner_params_init(rt_runner_params *p);

/* The graph beam a retrieval state searches with for a requested ef (rt_retrieval_params.ef)
 * at a top-k and context: 0 takes the top-k, at least 100; at most n_ctx. */
int rt_retrieval_beam(int ef, uint32_t topk, uint32_t n_ctx);
/* The expansion of a seeded decode step for a requested expand (rt_retrieval_params.expand) at
 * beam ef: 0 takes 16/25 of ef (64 of 100); at most ef. */
int rt_retrieval_expand(int expand, int ef);

/* Totals since the last rt_runner_reset, for the UI, `bench` and tests. */
typedef struct {
    uint32_t n_static;        /* tokens in the static set now (sinks + tail) */
    uint32_t n_host;          /* tokens in the host set now (per index) */
    uint64_t retrieval_tokens;/* tokens that went through the retrieval path */
    uint64_t searches;        /* index searches (tokens × layers × query heads) */
    uint64_t keys_scanned;    /* key rows the searches scored */
    uint64_t keys_attended;   /* host keys attended (≤ searches × topk) */
    uint64_t cold_searches;   /* one-token searches with nothing to start from (no previous
                                 results kept): the whole, widened beam */
    uint64_t seeds;           /* ids the searches started from (rt_retrieval_params.seed_lags),
                                 repeats included */
    double search_s;          /* wall time of retrieval attention, per layer call, summed, */
    double attend_s;          /*   split by the threads' own clocks: searching (mean thread),
                                   attending (mean thread: static and host partials, merge), */
    double imbalance_s;       /*   and the rest, threads waiting for the layer's slowest task
                                   (or idle, with fewer tasks than threads) */
    double build_s;           /* wall time of the index builds: rounds beside the prefill's
                                 layers (runner.c's builder) and what is left after it */
    double build_knn_s;       /* the exact kNN steps' thread time (a layer's indexes build at
                                 once: this may exceed build_s; waits for the GPU included) */
    double build_knn_gpu_s;   /* the GPU kNN calls' own time, summed (one call at a time unless
                                 LOUPE_KNN_CALLS allows more): near build_s, the build waits on
                                 the GPU; far below it, on the CPU steps */
    uint64_t build_knn_cpu_calls; /* GPU kNN calls refused for want of GPU memory and computed
                                 on CPU threads instead (the same lists, slower) */
    double build_prune_gpu_s; /* the GPU pruning calls' own time (the projection's pruning,
                                 runtime/cuda/prune.cu), summed: up to 4 calls run at once
                                 unless LOUPE_PRUNE_CALLS says otherwise */
    double build_proj_s;      /* thread time of the graphs' projection (lists, pruning) */
    double build_repair_s;    /*   and of their entry points and reachability repair */
    double build_task_s;      /* thread time of the index builds, whole (gathering the queries,
                                 kNN, projection, repair, reserving room to grow) */
    uint64_t index_bytes;     /* the indexes' own arrays, at their reserved capacity, and the
                                 rows their search copies hold */
    uint64_t moves;           /* static → host moves (index growth) */
    /* The co-executed decode (CUDA backend, retrieval modes), per token summed: */
    uint64_t coexec_tokens;
    double coexec_step_s;     /* wall time of those decode steps */
    double coexec_gpu_wait_s; /* host waiting for each layer's q, k, v from the GPU */
    double coexec_host_s;     /* the host half: search + attention over host keys + K/V store */
    double coexec_tail_s;     /* host waiting for the GPU after the last layer's host half */
    uint64_t gpu_bytes;       /* the CUDA engine's device allocation (0 on the CPU backend) */
    uint64_t host_kv_bytes;   /* host memory holding K/V (the CPU context's cache) */
} rt_runner_stats;

typedef struct rt_runner rt_runner;

/* Resolves AUTO (backend: CUDA when a device is usable; attention: full unless the CUDA engine's
 * KV for n_ctx exceeds gpu_mem, then retrieval), creates the context and/or engine, and fails with
 * a sentence when the backend cannot run. `m` must outlive the runner. */
loupe_status rt_runner_create(const rt_model *m, const rt_runner_params *p, rt_runner **out,
                              loupe_err *err);
void rt_runner_destroy(rt_runner *r); /* NULL is fine */

rt_backend rt_runner_backend(const rt_runner *r);     /* resolved: cpu or cuda */
rt_attn_mode rt_runner_attention(const rt_runner *r); /* resolved: never auto */
uint32_t rt_runner_n_ctx(const rt_runner *r);
uint32_t rt_runner_n_past(const rt_runner *r);
/* Forgets every token, the indexes and the statistics; the next prefill starts a new context. */
void rt_runner_reset(rt_runner *r);
void rt_runner_set_progress(rt_runner *r, rt_progress_fn fn, void *user);

/* Appends n tokens and computes the last one's logits (all_logits: every row, (n, n_vocab), when
 * non-NULL). The first call after create/reset is the context's prefill (full attention, then in
 * a retrieval mode the indexes are built); later calls extend through the mode's decode path.
 * Fails as rt_ctx_prefill does (LOUPE_ERR_TOO_LONG before evaluating anything, ...). */
loupe_status rt_runner_prefill(rt_runner *r, const int32_t *ids, size_t n, float *all_logits,
                               loupe_err *err);
/* One token through the decode path (an extension of one). */
loupe_status rt_runner_decode(rt_runner *r, int32_t id, loupe_err *err);
/* Logits after the last token, (n_vocab); valid until the next evaluation. NULL with err set on
 * a CUDA error. */
const float *rt_runner_logits(rt_runner *r, loupe_err *err);

void rt_runner_stats_get(const rt_runner *r, rt_runner_stats *out);

/* Changes how the steps that follow search (retrieval modes): the graph beam (ef, 0: topk, at
 * least 100; at most the beam the runner was created for, or 4× it: its first-step beam), its
 * expansion (expand, 0: the runtime's choice, rt_retrieval_expand; ef: all), the entries
 * expanded at a time (expand_batch), the margin (logits, 0: none), the query heads per
 * traversal (search_group, clamped to one index's heads) and the heads searched interleaved
 * (interleave, with search_group 1; 0: the runtime's choice). For a benchmark that sweeps
 * search settings over one prefill; the indexes stay. */
loupe_status rt_runner_set_search(rt_runner *r, int ef, int expand, int expand_batch, float margin,
                                  uint32_t search_group, uint32_t interleave, loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_RT_RUNNER_H */
