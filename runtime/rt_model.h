/*
 * Part of runtime.h: the model — weights bound to a GGUF mapping, the forward pass (CPU reference
 * backend, later CUDA), the KV cache, attention partials and sampling.
 *
 * Objects and lifetimes:
 *   rt_model    the weights of one `llama`/`qwen2` file, bound in place: matrices stay in the
 *               read-only mapping in their stored type and are dequantised row block by row block
 *               while multiplying; only small vectors (norms, biases, rope factors) are copied to
 *               float. Immutable after rt_model_load(); the rt_gguf must outlive it.
 *   rt_ctx      one sequence: the KV cache and every scratch buffer, all sized at creation for
 *               n_ctx tokens and n_batch tokens per prefill chunk, so evaluating tokens allocates
 *               nothing. Not thread-safe; it runs its own OpenMP threads.
 *   rt_sampler  turns a logits row into a token id with fixed-size buffers and a seeded RNG.
 *
 * KV cache layout (float32), one array each for keys and values:
 *   (n_layer, n_head_kv, n_ctx, head_dim) — one head's keys are a contiguous (n_ctx, head_dim)
 *   matrix, the shape vector indexes and sessions want. Keys are stored after RoPE.
 */
#ifndef LOUPE_RT_MODEL_H
#define LOUPE_RT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"
#include "runtime/rt_gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Model ------------------------------------------------------------------------------ */

typedef struct rt_model rt_model;

/* Reads the hyperparameters (rt_hparams_load) and binds every tensor of `g`, checking names,
 * types and shapes; fails with a sentence naming the tensor for anything missing or malformed and
 * with LOUPE_ERR_UNSUPPORTED for architectures or weight types loupe cannot run. `g` must outlive
 * the model. Free with rt_model_destroy(). */
loupe_status rt_model_load(const rt_gguf *g, rt_model **out, loupe_err *err);
void rt_model_destroy(rt_model *m); /* NULL is fine */

const rt_hparams *rt_model_hparams(const rt_model *m);
/* Bytes of weights one token's forward pass reads (every matrix once, the embedding row aside). */
uint64_t rt_model_weight_bytes(const rt_model *m);
/* Number of parameters (elements of every tensor). */
uint64_t rt_model_n_params(const rt_model *m);

/* ---- Context: KV cache, prefill, decode ------------------------------------------------- */

typedef struct {
    uint32_t n_ctx;   /* tokens the KV cache holds; 0 = the model's training context */
    uint32_t n_batch; /* tokens per prefill chunk; 0 = 256 */
    int n_threads;    /* OpenMP threads; 0 = all cores */
    bool beyond_train; /* allow n_ctx past the training context: RoPE extrapolates and answers
                          degrade, but the vectors exist (measurements such as dump-qk) */
    bool no_kv_cache;  /* hold no KV cache: the context only counts positions, its K/V live
                          elsewhere (retrieval attention co-executed with the GPU keeps them in
                          its host set); prefill and decode on it fail */
} rt_ctx_params;

void rt_ctx_params_init(rt_ctx_params *p);

/* Called after each prefill chunk with tokens done so far and the total; return false to cancel
 * (the call then fails with LOUPE_ERR_CANCELLED, the tokens done stay in the cache). */
typedef bool (*rt_progress_fn)(void *user, size_t done, size_t total);

typedef struct rt_ctx rt_ctx;

/* n_ctx larger than the model's training context fails with LOUPE_ERR_TOO_LONG unless
 * beyond_train is set. */
loupe_status rt_ctx_create(const rt_model *m, const rt_ctx_params *p, rt_ctx **out,
                           loupe_err *err);
void rt_ctx_destroy(rt_ctx *c); /* NULL is fine */

uint32_t rt_ctx_n_ctx(const rt_ctx *c);
uint32_t rt_ctx_n_past(const rt_ctx *c); /* tokens in the KV cache */
void rt_ctx_reset(rt_ctx *c);            /* forget every token (n_past = 0) */
/* Forgets every token after the first n_past (e.g. to branch from a shared prefix); fails with
 * LOUPE_ERR_RANGE if n_past is more than the context holds. */
loupe_status rt_ctx_truncate(rt_ctx *c, uint32_t n_past, loupe_err *err);
void rt_ctx_set_progress(rt_ctx *c, rt_progress_fn fn, void *user);

/* Appends n tokens to the sequence, in chunks of n_batch, and computes the logits of the last one
 * (rt_ctx_logits). If `all_logits` is non-NULL it receives every position's logits, shape
 * (n, n_vocab). Fails with LOUPE_ERR_TOO_LONG (nothing evaluated) when n_past + n > n_ctx, and
 * with LOUPE_ERR_RANGE for ids outside the vocabulary. */
loupe_status rt_ctx_prefill(rt_ctx *c, const int32_t *ids, size_t n, float *all_logits,
                            loupe_err *err);
/* One token (the decode path; same result as a prefill of one). */
loupe_status rt_ctx_decode(rt_ctx *c, int32_t id, loupe_err *err);
/* Logits after the last evaluated token, (n_vocab); valid until the next evaluation. */
const float *rt_ctx_logits(const rt_ctx *c);

/* One KV head's cached keys or values, (n_ctx, head_dim) of which the first n_past rows are
 * filled; valid for the context's lifetime. NULL for a context without a KV cache. */
const float *rt_ctx_keys(const rt_ctx *c, uint32_t layer, uint32_t kv_head);
const float *rt_ctx_values(const rt_ctx *c, uint32_t layer, uint32_t kv_head);

/* Query capture (for `loupe dump-qk` and tests): while set, every token evaluated afterwards
 * (prefill or decode) writes its post-RoPE query vectors of layer `layer` into
 * q_out + pos · n_head · head_dim, pos being the token's position, so q_out is an array of shape
 * (n_ctx, n_head, head_dim) that the caller owns and keeps alive until capture is turned off with
 * q_out = NULL. Costs one comparison per layer when off. Fails with LOUPE_ERR_RANGE for a layer
 * the model does not have. */
loupe_status rt_ctx_set_capture(rt_ctx *c, uint32_t layer, float *q_out, loupe_err *err);

/* Decode attention for one token restricted the way retrieval attention restricts it, using an
 * exact (flat) search: per query head, a static set (the first `sinks` and last `window` cached
 * tokens, plus the token itself) and the `topk` highest-scoring other keys, merged from two
 * partials with rt_attn_merge(). topk = 0 means the static set only. */
typedef struct {
    bool enabled;
    uint32_t topk, sinks, window;
} rt_sparse_params;
loupe_status rt_ctx_decode_sparse(rt_ctx *c, int32_t id, const rt_sparse_params *sp,
                                  loupe_err *err);

/* ---- Attention partials ----------------------------------------------------------------- */

/* Softmax attention of one query over a subset of keys:
 *   s_j = scale · q·k_j,  lse = log Σ_j e^{s_j},  out = Σ_j e^{s_j − lse} v_j
 * over rows j = idx[0..n) of K and V (each (rows, head_dim), row-major), or rows 0..n-1 when idx
 * is NULL. n = 0 gives lse = −∞ and out = 0, which rt_attn_merge treats as empty. Uses no heap
 * memory (online softmax over blocks of keys). */
void rt_attn_partial(const float *q, const float *k, const float *v, uint32_t head_dim,
                     const int32_t *idx, size_t n, float scale, float *out, float *lse);

/* Exact merge of two partials over disjoint key sets, as flash attention merges blocks:
 *   out = (e^{l1} o1 + e^{l2} o2) / (e^{l1} + e^{l2}),  lse = log(e^{l1} + e^{l2}),
 * computed relative to max(l1, l2) so it never overflows. out may alias o1 or o2. */
void rt_attn_merge(const float *o1, float l1, const float *o2, float l2, uint32_t head_dim,
                   float *out, float *lse);

/* ---- Sampling --------------------------------------------------------------------------- */

/* Order: repetition penalty → temperature → top-k → top-p → min-p → draw. temp = 0 is greedy
 * (argmax after the penalty, lowest id on ties). */
typedef struct {
    float temp;           /* 0 = greedy */
    int top_k;            /* 0 = off */
    float top_p;          /* 1 = off */
    float min_p;          /* 0 = off; keeps p ≥ min_p · p_max */
    float repeat_penalty; /* 1 = off; llama.cpp's rule: l > 0 ? l / r : l · r */
    uint32_t repeat_last_n; /* tokens of history the penalty looks at (64) */
    uint64_t seed;
} rt_sampler_params;

void rt_sampler_params_init(rt_sampler_params *p);

typedef struct rt_sampler rt_sampler;

loupe_status rt_sampler_create(const rt_sampler_params *p, uint32_t n_vocab, rt_sampler **out,
                               loupe_err *err);
void rt_sampler_destroy(rt_sampler *s); /* NULL is fine */

/* Draws a token from `logits` (n_vocab, not modified). */
int32_t rt_sampler_sample(rt_sampler *s, const float *logits);
/* Records a token of the sequence (prompt or generated) for the repetition penalty. */
void rt_sampler_accept(rt_sampler *s, int32_t id);
void rt_sampler_reset(rt_sampler *s); /* clears the history; the RNG goes on */

/* The candidates the filters keep for `logits`, most probable first: ids and probabilities
 * (renormalised over the kept set) into the caller's arrays of n_vocab; returns how many. For
 * tests and for showing alternatives; temp = 0 keeps the argmax alone. */
size_t rt_sampler_candidates(rt_sampler *s, const float *logits, int32_t *ids, float *probs);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_RT_MODEL_H */
