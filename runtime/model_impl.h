/*
 * Private to runtime/: the structs behind rt_model and rt_ctx, and the CPU kernels the forward
 * pass is built from (matmul over stored-type weights, RMSNorm, RoPE). Not part of runtime.h.
 *
 * Invariants: every rt_mat points into the GGUF mapping and has n_in a multiple of its type's
 * block size; every scratch array of rt_ctx is sized at creation for n_batch tokens, so a forward
 * pass never allocates.
 */
#ifndef LOUPE_RT_MODEL_IMPL_H
#define LOUPE_RT_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

/* A weight matrix in its stored type: n_out rows of n_in elements (GGUF ne = [n_in, n_out]). */
typedef struct {
    const void *data; /* (n_out, row_bytes) inside the mapping */
    rt_type type;
    uint32_t n_in;
    uint32_t n_out;
    size_t row_bytes;
} rt_mat;

typedef struct {
    float *attn_norm;           /* (n_embd) */
    rt_mat wq, wk, wv, wo;      /* (n_head*hd, n_embd), (n_kv*hd, n_embd) x2, (n_embd, n_head*hd) */
    float *bq, *bk, *bv;        /* (n_head*hd), (n_kv*hd), (n_kv*hd); NULL when absent */
    float *ffn_norm;            /* (n_embd) */
    rt_mat w_gate, w_up, w_down; /* (n_ff, n_embd), (n_ff, n_embd), (n_embd, n_ff) */
} rt_layer;

struct rt_model {
    const rt_gguf *g;
    rt_hparams hp;
    rt_mat tok_embd;    /* (n_vocab, n_embd) */
    rt_mat output;      /* (n_vocab, n_embd); the embedding when the output is tied */
    float *output_norm; /* (n_embd) */
    float *rope_freqs;  /* (rope_dim/2) divisors, or NULL */
    rt_layer *layers;   /* (n_layer) */
    uint32_t max_in;    /* longest row of any matrix, sizes the dequantisation buffers */
    uint64_t weight_bytes;
    uint64_t n_params;
};

/* Rows dequantised together: one block is decoded once and reused by every token of a chunk. */
enum { RT_MM_ROWS = 8 };

/* Per-thread dequantisation buffers: (n_threads, RT_MM_ROWS, max_in). */
typedef struct {
    float *buf;
    size_t stride; /* floats per thread = RT_MM_ROWS * max_in */
    int n_threads;
} rt_mm_pool;

/* out[t*ld_out + r] = Σ_i W[r][i] · x[t*ld_x + i] for t < n_tok, r < n_out; OpenMP over row
 * blocks. */
void rt_matmul_cpu(const rt_mat *w, const float *x, size_t ld_x, size_t n_tok, float *out,
                   size_t ld_out, const rt_mm_pool *pool);
/* Σ a[i]·b[i] in float with independent partial sums (vectorises without -ffast-math). */
float rt_dot_f32(const float *a, const float *b, size_t n);

/* Most queries one rt_attn_tile call takes. */
enum { RT_ATTN_TILE_MAX = 32 };
/* nq ≤ RT_ATTN_TILE_MAX queries q[i] against the same keys, query i over rows 0 .. n[i] of K
 * and V (each with max n[i] rows of head_dim): each block of K/V rows is read once for the
 * whole tile. out[i] and lse[i] are bit-identical to rt_attn_partial(q[i], k, v, head_dim,
 * NULL, n[i], scale, out[i], &lse[i]) on the same (SIMD or portable) path. No heap memory. */
void rt_attn_tile(const float *const *q, const float *k, const float *v, uint32_t head_dim,
                  const size_t *n, size_t nq, float scale, float *const *out, float *lse);

/* RoPE constants derived from the hyperparameters, computed once per context. */
typedef struct {
    uint32_t n_pairs;    /* rope_dim / 2 */
    rt_rope_style style;
    double *inv_freq;    /* (n_pairs) base^(-2i/rope_dim) / rope_freqs[i] */
    double freq_scale;   /* 1 / scaling factor (linear, yarn), else 1 */
    double ext_factor;   /* yarn extrapolation mix; 0 = none */
    double corr_lo, corr_hi; /* yarn ramp between these pair indices */
    double mscale;       /* multiplies cos and sin (yarn's attention scaling) */
} rt_rope;

loupe_status rt_rope_init(rt_rope *r, const rt_hparams *hp, const float *rope_freqs,
                          loupe_err *err);
void rt_rope_free(rt_rope *r);
/* cs (n_pairs, 2): cos and sin (times mscale) of each pair's angle at position pos. */
void rt_rope_angles(const rt_rope *r, uint32_t pos, float *cs);
/* Rotates the first 2*n_pairs dims of one head vector in place. */
void rt_rope_apply(const rt_rope *r, const float *cs, float *x, uint32_t head_dim);

struct rt_ctx {
    const rt_model *m;
    uint32_t n_ctx, n_batch, n_past;
    int n_threads;
    rt_mm_pool pool;
    rt_rope rope;
    float *k_cache;  /* (n_layer, n_head_kv, n_ctx, head_dim); NULL: no_kv_cache */
    float *v_cache;  /* (n_layer, n_head_kv, n_ctx, head_dim); NULL: no_kv_cache */
    float *x;        /* (n_batch, n_embd) residual stream */
    float *xb;       /* (n_batch, n_embd) normed input / projection output */
    float *q;        /* (n_batch, n_head*hd) */
    float *k;        /* (n_batch, n_kv*hd) */
    float *v;        /* (n_batch, n_kv*hd) */
    float *att;      /* (n_batch, n_head*hd) attention output */
    float *hb;       /* (n_batch, n_ff) gate, then silu(gate)·up */
    float *hb2;      /* (n_batch, n_ff) up */
    float *cs;       /* (n_batch, rope_dim/2, 2) cos/sin per token */
    float *logits;   /* (n_vocab) of the last token */
    float *sp_score; /* (n_threads, n_ctx) sparse decode: scores of the middle keys */
    int32_t *sp_idx; /* (n_threads, n_ctx) sparse decode: their positions */
    float *cap_q;    /* (n_ctx, n_head, head_dim) caller's query capture, NULL = off */
    uint32_t cap_layer;
    /* Hooks of the retrieval path (retrieval_cpu.c), NULL = off. q_hook sees every layer's
     * post-RoPE queries of a chunk, (B, n_head · head_dim) at positions n_past..; attend_hook
     * replaces full attention: it reads c->q and the cache (the chunk's K/V rows already stored)
     * and writes c->att. */
    void (*q_hook)(void *user, uint32_t layer, uint32_t pos0, size_t B, const float *q);
    void (*attend_hook)(void *user, rt_ctx *c, uint32_t layer, size_t B);
    void *hook_user;
    rt_progress_fn progress;
    void *progress_user;
};

#endif /* LOUPE_RT_MODEL_IMPL_H */
