/*
 * Part of runtime.h: the CUDA backend — full-attention prefill and decode of an rt_model on one
 * GPU, inside a memory budget.
 *
 * Every function exists in every build. Built without CUDA (LOUPE_HAVE_CUDA off) they fail with
 * LOUPE_ERR_UNSUPPORTED and a sentence saying so, and rt_cuda_available() is false.
 *
 * Objects and lifetimes:
 *   rt_cuda_engine  one sequence on one GPU: the model's weights uploaded once in their stored
 *                   type (F32, F16, BF16, Q8_0, Q4_K, Q6_K; rows padded to 16 bytes), the KV cache
 *                   and every scratch buffer, carved out of ONE device allocation whose size
 *                   rt_cuda_plan() computes before anything is allocated. Evaluating tokens
 *                   allocates nothing. The rt_model (and its rt_gguf) must outlive the engine.
 *                   Not thread-safe.
 *
 * Precision (rt_cuda_params.precision):
 *   RT_CUDA_BF16  KV cache in bf16; prefill GEMMs on tensor cores with bf16 operands and fp32
 *                 accumulation (quantised weights are dequantised to bf16 per layer into a
 *                 scratch buffer; BF16 weights are used in place). Expect relative logit error
 *                 up to ~1e-2 against the CPU reference.
 *   RT_CUDA_F32   KV cache and prefill operands in fp32 (no TF32): slower, twice the KV memory,
 *                 agrees with the CPU reference to ~1e-4. For tests and checking.
 * Decode always multiplies fp32 activations with the weights in their stored type, dequantised
 * in registers, so it reads every weight byte exactly once per token.
 *
 * Prefill is layer-major: the tokens of a call (up to n_seg at a time) go through layer 0 in
 * chunks of n_batch, leaving that layer's K/V in the cache, then through layer 1, ... so each
 * layer's weights are dequantised once per call, not once per chunk.
 *
 * KV cache layout on the GPU: (n_layer, n_head_kv, n_ctx, head_dim), keys after RoPE — the CPU
 * backend's layout, so one head's keys are a contiguous matrix.
 */
#ifndef LOUPE_RT_CUDA_H
#define LOUPE_RT_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"
#include "runtime/rt_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of activations / KV cache on the GPU. */
typedef enum { RT_CUDA_F32 = 0, RT_CUDA_BF16 = 1 } rt_cuda_dtype;

/* True when loupe was built with CUDA and at least one device is usable. Never fails. */
bool rt_cuda_available(void);

/* Pins host memory [p, p + bytes) for the GPUs' copies (page-locked, cudaHostRegister): copies
 * to and from it then move by DMA instead of through the driver's staging buffers, which a busy
 * CPU slows (the graph build's key uploads while 16 builds ran: ~1 GB/s, docs/BENCHMARKS.md).
 * False when it cannot (no CUDA, no device, the system refuses); nothing is pinned then, and
 * copies still work, only slower. */
bool rt_cuda_host_pin(void *p, size_t bytes);
/* Undoes rt_cuda_host_pin (p as given to it); accepts NULL. */
void rt_cuda_host_unpin(void *p);

typedef struct {
    char name[128];      /* as the driver names it, cut to 127 bytes */
    int device;
    int cc_major, cc_minor;
    int n_sm;
    uint64_t total_mem; /* bytes */
    uint64_t free_mem;  /* bytes, when asked */
} rt_cuda_device_info;

loupe_status rt_cuda_device_info_get(int device, rt_cuda_device_info *out, loupe_err *err);

typedef struct {
    uint32_t n_ctx;        /* tokens the KV cache holds; 0 = the model's training context */
    uint32_t n_batch;      /* tokens per prefill chunk (GEMM rows); 0 = 512 */
    uint32_t n_seg;        /* tokens whose residual stream is resident during a layer-major
                              prefill; 0 = n_ctx (one pass over the layers per call) */
    uint64_t gpu_mem;      /* budget in bytes for everything loupe allocates; 0 = the device's
                              free memory less 512 MiB */
    int device;            /* CUDA device index */
    rt_cuda_dtype precision; /* RT_CUDA_BF16 (default) or RT_CUDA_F32 */
    bool beyond_train;     /* allow n_ctx past the training context (as rt_ctx_params) */
    bool local_prefill;    /* TIMING ONLY: each prefill chunk attends to its own tokens alone
                              (causal within the chunk), not to the context before it. K/V and
                              queries are still the model's, at their positions, and the cost
                              is linear in the context: for timing decode at contexts whose
                              exact prefill takes too long (bench retrieval --local-prefill).
                              The layers' outputs are not the model's: never for answers. */
    /* The retrieval layout (static_slots > 0; see "Retrieval attention" below): the KV cache
     * holds static_slots slots per layer and KV head instead of n_ctx positions, plus one
     * layer's K/V for n_ctx positions used by the context's prefill. static_slots must exceed
     * sinks + window (or reach n_ctx: more than n_ctx slots are never needed, and not made). */
    uint32_t static_slots;
    uint32_t sinks;        /* retrieval layout: the context's first positions kept on the GPU */
    uint32_t window;       /* retrieval layout: the context's last positions kept on the GPU */
} rt_cuda_params;

void rt_cuda_params_init(rt_cuda_params *p);

/* Device bytes an engine would allocate. */
typedef struct {
    uint64_t weights;  /* matrices in stored type + norms, biases, RoPE table */
    uint64_t kv;       /* K and V caches for n_ctx tokens */
    uint64_t scratch;  /* activations, dequantisation buffer, attention partials, cuBLAS */
    uint64_t total;
    uint32_t n_ctx, n_batch, n_seg; /* the values the plan was made for (defaults resolved) */
} rt_cuda_mem_plan;

/* Pure arithmetic: no device is touched (but it needs a CUDA build). */
loupe_status rt_cuda_plan(const rt_model *m, const rt_cuda_params *p, rt_cuda_mem_plan *out,
                          loupe_err *err);

typedef struct rt_cuda_engine rt_cuda_engine;

/* Plans, checks the plan against the budget (and the device's free memory), then makes the one
 * allocation and uploads the weights. When it does not fit it fails with LOUPE_ERR_GPU_MEMORY
 * and a sentence saying what would: a shorter context, retrieval attention, a quantised model.
 * Free with rt_cuda_engine_destroy(). */
loupe_status rt_cuda_engine_create(const rt_model *m, const rt_cuda_params *p,
                                   rt_cuda_engine **out, loupe_err *err);
void rt_cuda_engine_destroy(rt_cuda_engine *e); /* NULL is fine */

const rt_cuda_mem_plan *rt_cuda_engine_plan(const rt_cuda_engine *e);
uint32_t rt_cuda_n_past(const rt_cuda_engine *e);
void rt_cuda_reset(rt_cuda_engine *e); /* forget every token */

/* Same contracts as rt_ctx_prefill / rt_ctx_decode: appends tokens, computes the logits of the
 * last one; `all_logits` (host, (n, n_vocab)) receives every position's when non-NULL. Fails with
 * LOUPE_ERR_TOO_LONG (nothing evaluated) past n_ctx, LOUPE_ERR_RANGE for ids outside the
 * vocabulary, LOUPE_ERR_GPU with the CUDA error otherwise. */
loupe_status rt_cuda_prefill(rt_cuda_engine *e, const int32_t *ids, size_t n, float *all_logits,
                             loupe_err *err);
loupe_status rt_cuda_decode(rt_cuda_engine *e, int32_t id, loupe_err *err);

/* Logits after the last evaluated token, (n_vocab), copied to host memory on first use after an
 * evaluation; valid until the next one. NULL (and err set) on a CUDA error. */
const float *rt_cuda_logits(rt_cuda_engine *e, loupe_err *err);
/* Greedy choice (argmax, lowest id on ties) of the last logits, computed on the GPU. */
loupe_status rt_cuda_greedy(rt_cuda_engine *e, int32_t *id, loupe_err *err);

/* ---- Reading the engine's state back: queries and K/V -------------------------------------- *
 *
 * For index building (the prefill queries handed to the CPU) and for `dump-qk --backend cuda`.
 * rt_cuda_kv_read reads the full layout only (the retrieval layout writes K/V to the host during
 * its prefill instead). */

/* Called during rt_cuda_prefill for every layer and every chunk that holds captured positions:
 * q (host memory, valid during the call) holds the post-RoPE queries of n consecutive captured
 * positions pos0, pos0 + stride, ..., as rows of (n_head · head_dim) floats — exactly what the CPU
 * backend computes for those positions up to the engine's precision. */
typedef void (*rt_cuda_q_fn)(void *user, uint32_t layer, uint32_t pos0, uint32_t stride,
                             size_t n, const float *q);
/* Turns query capture on (fn non-NULL) or off: positions p with p % stride == 0 are captured
 * (stride ≥ 1). Capture costs a device→host copy per layer and chunk while on; nothing when off.
 * Takes effect from the next evaluation; not captured during decode. stride 0 fails with
 * LOUPE_ERR_INVALID. fn runs in the middle of a prefill and must not call the engine. */
loupe_status rt_cuda_set_q_capture(rt_cuda_engine *e, rt_cuda_q_fn fn, void *user,
                                   uint32_t stride, loupe_err *err);
/* While capture is on, also capture every position >= from (each chunk's such rows come in a
 * call of their own, stride 1, after its strided rows): retrieval attention wants sampled
 * queries of the whole prefill but every query of its last `window` positions, and copying
 * only those saves the device→host copy of the rest (2 GiB per layer for the 8B shape at
 * 128K). Reset to none by every rt_cuda_set_q_capture. */
void rt_cuda_set_q_capture_from(rt_cuda_engine *e, uint32_t from);

/* Copies cached keys and values of positions [p0, p1) of every KV head of `layer` to host memory
 * as float32: k_out and v_out are (n_head_kv, ld, head_dim) with row p − p0 + off of head h at
 * (h · ld + p − p0 + off) · head_dim, i.e. the CPU backend's cache layout when ld = n_ctx and off
 * = p0; either may be NULL. Synchronous. Fails with LOUPE_ERR_RANGE past n_past, for p0 > p1 or
 * a layer the model lacks, LOUPE_ERR_INVALID when the rows do not fit ld. Reading a bf16 cache
 * borrows the prefill's scratch for the conversion: no device memory beyond the plan. */
loupe_status rt_cuda_kv_read(rt_cuda_engine *e, uint32_t layer, uint32_t p0, uint32_t p1,
                             float *k_out, float *v_out, size_t ld, size_t off, loupe_err *err);

/* ---- Retrieval attention: the static set on the GPU, the host set in host memory ---------- *
 *
 * In the retrieval layout (rt_cuda_params.static_slots > 0) the GPU keeps only the STATIC set:
 * the context's first `sinks` positions and its tail — the last `window` positions of the
 * context and every token after — in slots [0, sinks) and [sinks, n_static). Every other
 * position (the HOST set, [sinks, host_end)) lives in host memory, where the caller searches it.
 *
 *   prefill   Only from an empty engine, in ONE call (n ≤ n_seg): layer by layer, the tokens go
 *             through the layer with causal attention over the one-layer buffer; then that
 *             layer's K/V of every position are written to the host arrays given by
 *             rt_cuda_set_host_kv (when set; float32, bf16 or int8), and the static positions
 *             are copied into the slots.
 *             host_end = max(sinks, n − window).
 *   decode    Per layer: q, k, v of the token (post-RoPE, float32) go to pinned host memory and
 *             the host attention callback computes each query head's partial over the host set
 *             (output and log-sum-exp) while the GPU attends to the static slots; the engine
 *             copies the host partial back and merges the two exactly (rt_attn_merge). The token
 *             takes the next slot. Launched eagerly (the callback sits between launches).
 *   moving    rt_cuda_static_drop(e, n) forgets the n oldest tail slots (the caller has moved
 *             those positions to its host set): host_end += n, later slots shift down.
 * A decode with no free slot fails with LOUPE_ERR_TOO_LONG: the caller moves tokens first.
 */

/* The host half of a decode step in the retrieval layout, called once per layer: q (n_head ·
 * head_dim), k and v (n_head_kv · head_dim) of the token at `pos`, post-RoPE float32; writes
 * out (n_head · head_dim) and lse (n_head): for each query head the attention over host-set keys
 * (scale 1/sqrt(head_dim), lse natural log; a head with no host keys: out 0, lse −INFINITY).
 * Pointers are pinned host memory valid during the call. A non-zero status stops the decode,
 * which fails with it and err's sentence. Must not call the engine. */
typedef loupe_status (*rt_cuda_host_attn_fn)(void *user, uint32_t layer, uint32_t pos,
                                              const float *q, const float *k, const float *v,
                                              float *out, float *lse, loupe_err *err);

/* Sets (fn non-NULL) or clears the callback; in the retrieval layout a decode without one fails
 * with LOUPE_ERR_INVALID. */
loupe_status rt_cuda_set_host_attn(rt_cuda_engine *e, rt_cuda_host_attn_fn fn, void *user,
                                   loupe_err *err);
/* Where the retrieval-layout prefill writes each layer's K/V: (n_layer, n_head_kv, ld,
 * head_dim) arrays in host memory, rows at positions, in anns' key storage types (the host K/V
 * the indexes search: ANN_KEYS_F32; ANN_KEYS_BF16, rounded to nearest even; ANN_KEYS_INT8 with
 * per-row scales max|x| / 127, (n_layer, n_head_kv, ld) each — bit for bit what
 * ann_keys_encode_row stores). A bf16 engine copies bf16 rows as they are. */
typedef struct {
    ann_key_type type;
    void *k, *v;              /* NULL: not written */
    float *k_scale, *v_scale; /* int8 only */
    size_t ld;                /* rows per head, >= the engine's n_ctx */
} rt_cuda_host_kv;

/* Sets (kv non-NULL) or clears where the prefill writes; the arrays must outlive the setting. */
loupe_status rt_cuda_set_host_kv(rt_cuda_engine *e, const rt_cuda_host_kv *kv, loupe_err *err);
/* Called by the retrieval layout's prefill after each layer, once that layer's K/V are in the
 * host arrays and its captured queries delivered, so the caller can build the layer's indexes
 * while the GPU runs the next layers. Runs on the prefill's thread: hand heavy work to another
 * thread. Must not call the engine. NULL: none. */
typedef void (*rt_cuda_layer_fn)(void *user, uint32_t layer);
void rt_cuda_set_layer_done(rt_cuda_engine *e, rt_cuda_layer_fn fn, void *user);
/* Forgets the n oldest slots of the static tail (see above). LOUPE_ERR_RANGE when the tail is
 * shorter than n; LOUPE_ERR_INVALID outside the retrieval layout. */
loupe_status rt_cuda_static_drop(rt_cuda_engine *e, uint32_t n, loupe_err *err);

/* Where the time of the retrieval layout's decode steps went, summed since the last reset. */
typedef struct {
    uint64_t tokens;   /* decode steps */
    double step_s;     /* wall time of the steps */
    double gpu_wait_s; /* host waiting for each layer's q, k, v (GPU work before the host half) */
    double host_s;     /* in the host attention callback */
    double merge_wait_s; /* host waiting at the end of a step (GPU work after the last host half) */
} rt_cuda_coexec_stats;
void rt_cuda_coexec_stats_get(const rt_cuda_engine *e, rt_cuda_coexec_stats *out);

/* ---- Exact query→key top-k on the GPU: the kNN step of anns' graph build ------------------ */

/* An ann_knn_fn (anns.h) computed on a GPU: plug it into ann_build_opts.knn (knn_user: NULL for
 * device 0, else an int * naming the device). Same contract as ann_knn_cpu: for each query the k
 * best keys by q·k, best first, scores exact in fp32 from the keys' stored representation; with
 * key_best_query, each key's best query. Never materialises an nq × n score matrix; the device
 * memory it uses is bounded and freed before it returns. Safe to call from several host threads
 * at once (each call uses its own stream and buffers). Shapes the kernel does not cover (head
 * dim > 256, k beyond a few hundred, GPUs before sm_80) and queries whose low-precision pass cannot
 * certify their top-k are computed by ann_knn_cpu instead, so the answer is always exact
 * (runtime/cuda/knn.cu). Fails with LOUPE_ERR_UNSUPPORTED in a build without CUDA or with no
 * usable device. */
loupe_status rt_cuda_knn(void *user, const ann_keys *keys, const float *queries, int64_t nq, int k,
                         int threads, int32_t *ids, float *scores, int32_t *key_best_query,
                         loupe_err *err);

/* An ann_prune_fn (anns.h) computed on a GPU: plug it into ann_build_opts.prune_lists
 * (prune_user: NULL for device 0, else an int * naming the device). The same rule as
 * ann_prune_cpu; distances are summed in another order, so a list can differ where two of its
 * candidates' distances tie within rounding. Explicit lists longer than 512 are pruned by
 * ann_prune_cpu on the calling thread meanwhile. Device memory (the keys as stored, the lists,
 * the results) is freed before it returns; safe to call from several host threads at once.
 * Fails with LOUPE_ERR_UNSUPPORTED without CUDA, without a usable device, or for shapes it does
 * not cover (head dim > 256, more than 64 kept, shared lists over 128), which the build then
 * prunes on the CPU (runtime/cuda/prune.cu). */
loupe_status rt_cuda_prune(void *user, const ann_prune_job *job, loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_RT_CUDA_H */
