/*
 * The forward pass of the CPU reference backend (`llama` and `qwen2`), one chunk of tokens at a
 * time:
 *
 *   x = embed(ids)
 *   per layer:  h = rmsnorm(x)·attn_norm;  q,k,v = Wq h (+bq), Wk h (+bk), Wv h (+bv)
 *               rope(q), rope(k);  K,V cache ← k,v at positions n_past..
 *               a = causal softmax(q·Kᵀ / √head_dim) V  (query head h reads KV head h / group)
 *               x += Wo a
 *               h = rmsnorm(x)·ffn_norm;  x += Wdown (silu(Wgate h) ⊙ Wup h)
 *   logits = Wout (rmsnorm(x)·output_norm)
 *
 * Invariants: a chunk has at most n_batch tokens; n_past + chunk ≤ n_ctx is checked before any
 * work, so a failed call leaves the cache as it was; nothing here allocates.
 */
#include "runtime/model_impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ==== Small kernels ======================================================================= */

static void rmsnorm(float *out, const float *x, const float *w, size_t n, float eps)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] * inv * w[i];
}

static void add_bias(float *x, const float *b, size_t n_tok, size_t n)
{
    for (size_t t = 0; t < n_tok; t++)
        for (size_t i = 0; i < n; i++)
            x[t * n + i] += b[i];
}

/* ==== Attention over the cache ============================================================ */

static float *kv_at(const rt_ctx *c, float *cache, uint32_t layer, uint32_t kvh)
{
    const rt_hparams *hp = &c->m->hp;
    return cache + (((size_t)layer * hp->n_head_kv + kvh) * c->n_ctx) * hp->head_dim;
}

/* Causal attention of the chunk's B queries (positions n_past + t) over the cache, in tiles of
 * (KV head, hs of its query heads, T consecutive tokens) so a tile's queries share each block of
 * K/V rows (rt_attn_tile). Every query's result is bit-identical to rt_attn_partial over its
 * n_past + t + 1 keys whatever the tiling, so decode (B = 1) and prefill agree exactly. */
static void attend_full(rt_ctx *c, uint32_t il, size_t B)
{
    const rt_hparams *hp = &c->m->hp;
    const uint32_t hd = hp->head_dim, n_head = hp->n_head, n_kv = hp->n_head_kv;
    const uint32_t group = n_head / n_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    enum { TILE_QUERIES = 16 }; /* target queries per tile: K/V block + outputs stay in L1/L2 */
    size_t hs = group < TILE_QUERIES ? group : TILE_QUERIES;
    size_t T = TILE_QUERIES / hs < B ? TILE_QUERIES / hs : B;
    size_t n_tt = (B + T - 1) / T, n_hs = (group + hs - 1) / hs;
    if (n_tt * n_kv * n_hs < (size_t)c->n_threads) {
        /* Too few tiles for the threads (decode): split the heads of a group instead. */
        size_t split = ((size_t)c->n_threads + n_tt * n_kv - 1) / (n_tt * n_kv);
        hs = (group + split - 1) / split;
        n_hs = (group + hs - 1) / hs;
    }
    const size_t per_tt = (size_t)n_kv * n_hs;
    const long work = (long)(n_tt * per_tt);
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads)
    for (long w = 0; w < work; w++) {
        /* the last tokens first: they have the most keys, so the dynamic schedule balances */
        size_t tt = n_tt - 1 - (size_t)w / per_tt, rem = (size_t)w % per_tt;
        uint32_t kvh = (uint32_t)(rem / n_hs);
        size_t h0 = (size_t)kvh * group + (rem % n_hs) * hs;
        size_t h1 = h0 + hs < (size_t)(kvh + 1) * group ? h0 + hs : (size_t)(kvh + 1) * group;
        size_t t1 = (tt + 1) * T < B ? (tt + 1) * T : B;
        const float *qp[RT_ATTN_TILE_MAX];
        float *op[RT_ATTN_TILE_MAX], lse[RT_ATTN_TILE_MAX];
        size_t n[RT_ATTN_TILE_MAX], nq = 0; /* hs·T ≤ TILE_QUERIES ≤ RT_ATTN_TILE_MAX */
        for (size_t t = tt * T; t < t1; t++)
            for (size_t h = h0; h < h1; h++) {
                qp[nq] = c->q + (t * n_head + h) * hd;
                op[nq] = c->att + (t * n_head + h) * hd;
                n[nq++] = c->n_past + t + 1;
            }
        rt_attn_tile(qp, kv_at(c, c->k_cache, il, kvh), kv_at(c, c->v_cache, il, kvh), hd, n, nq,
                     scale, op, lse);
    }
}

static int cmp_pos(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Moves the k largest scores of idx[0..n) (scores indexed by position) to the front, in any
 * order: quickselect with a three-way partition, so runs of equal scores cannot degrade it.
 * Scores tied at the k-th go to the lower positions, as in the indexes (anns' lower id), so
 * that the exact sparse decode and the retrieval runner's flat search pick the same keys. */
static void select_topk(int32_t *idx, size_t n, size_t k, const float *score)
{
    size_t lo = 0, hi = n; /* the boundary k lies in [lo, hi] */
    while (hi - lo > 1) {
        float pivot = score[idx[lo + (hi - lo) / 2]];
        size_t gt = lo, i = lo, lt = hi; /* [lo,gt) > pivot, [gt,i) == pivot, [lt,hi) < pivot */
        while (i < lt) {
            float s = score[idx[i]];
            int32_t tmp = idx[i];
            if (s > pivot) {
                idx[i++] = idx[gt];
                idx[gt++] = tmp;
            } else if (s < pivot) {
                idx[i] = idx[--lt];
                idx[lt] = tmp;
            } else {
                i++;
            }
        }
        if (k < gt) {
            hi = gt;
        } else if (k > lt) {
            lo = lt;
        } else {
            if (gt < k && k < lt) /* a tie group cut by the boundary: its lower positions */
                qsort(idx + gt, lt - gt, sizeof *idx, cmp_pos);
            return;
        }
    }
}

/* Decode attention for one token (position n_past): static set (sinks + window + itself) and
 * the exact top-k of the other keys, merged. */
static void attend_sparse(rt_ctx *c, uint32_t il, const rt_sparse_params *sp)
{
    const rt_hparams *hp = &c->m->hp;
    const uint32_t hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t n = (size_t)c->n_past + 1; /* keys including the token itself */
    size_t sinks = sp->sinks < n ? sp->sinks : n;
    size_t win_lo = n - 1 >= sp->window ? n - 1 - sp->window : 0;
    if (win_lo < sinks)
        win_lo = sinks;
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (long hl = 0; hl < (long)n_head; hl++) {
        uint32_t h = (uint32_t)hl;
        const float *K = kv_at(c, c->k_cache, il, h / group);
        const float *V = kv_at(c, c->v_cache, il, h / group);
        const float *q = c->q + (size_t)h * hd;
        float *out = c->att + (size_t)h * hd;
        float tmp[512], l_out, l_tmp; /* head_dim ≤ 512 is checked at decode */
        rt_attn_partial(q, K, V, hd, NULL, sinks, scale, out, &l_out);
        rt_attn_partial(q, K + win_lo * hd, V + win_lo * hd, hd, NULL, n - win_lo, scale, tmp,
                        &l_tmp);
        rt_attn_merge(out, l_out, tmp, l_tmp, hd, out, &l_out);
        size_t n_mid = win_lo - sinks;
        if (n_mid == 0 || sp->topk == 0)
            continue;
        int tid = omp_get_thread_num();
        float *score = c->sp_score + (size_t)tid * c->n_ctx;
        int32_t *idx = c->sp_idx + (size_t)tid * c->n_ctx;
        for (size_t j = 0; j < n_mid; j++) {
            size_t pos = sinks + j;
            idx[j] = (int32_t)pos;
            score[pos] = rt_dot_f32(q, K + pos * hd, hd);
        }
        size_t k = sp->topk < n_mid ? sp->topk : n_mid;
        select_topk(idx, n_mid, k, score);
        rt_attn_partial(q, K, V, hd, idx, k, scale, tmp, &l_tmp);
        rt_attn_merge(out, l_out, tmp, l_tmp, hd, out, &l_out);
    }
}

/* ==== One chunk =========================================================================== */

/* Runs B ≤ n_batch tokens at positions n_past.. and advances n_past. Logits: every row into
 * `all_logits` (B, n_vocab) when non-NULL; the last row always into c->logits. */
static void forward_chunk(rt_ctx *c, const int32_t *ids, size_t B, float *all_logits,
                          const rt_sparse_params *sp)
{
    const rt_model *m = c->m;
    const rt_hparams *hp = &m->hp;
    const size_t E = hp->n_embd, hd = hp->head_dim, F = hp->n_ff;
    const size_t nq = (size_t)hp->n_head * hd, nkv = (size_t)hp->n_head_kv * hd;
    const size_t np2 = (size_t)c->rope.n_pairs * 2 + 2;
    const rt_mm_pool *pool = &c->pool;

    for (size_t t = 0; t < B; t++) {
        rt_dequantize(m->tok_embd.type,
                      (const unsigned char *)m->tok_embd.data +
                          (size_t)ids[t] * m->tok_embd.row_bytes,
                      c->x + t * E, E);
        rt_rope_angles(&c->rope, c->n_past + (uint32_t)t, c->cs + t * np2);
    }

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const rt_layer *L = &m->layers[il];
        for (size_t t = 0; t < B; t++)
            rmsnorm(c->xb + t * E, c->x + t * E, L->attn_norm, E, hp->norm_eps);
        rt_matmul_cpu(&L->wq, c->xb, E, B, c->q, nq, pool);
        rt_matmul_cpu(&L->wk, c->xb, E, B, c->k, nkv, pool);
        rt_matmul_cpu(&L->wv, c->xb, E, B, c->v, nkv, pool);
        if (L->bq) {
            add_bias(c->q, L->bq, B, nq);
            add_bias(c->k, L->bk, B, nkv);
            add_bias(c->v, L->bv, B, nkv);
        }
        for (size_t t = 0; t < B; t++) {
            const float *cs = c->cs + t * np2;
            for (uint32_t h = 0; h < hp->n_head; h++)
                rt_rope_apply(&c->rope, cs, c->q + t * nq + h * hd, (uint32_t)hd);
            for (uint32_t h = 0; h < hp->n_head_kv; h++) {
                float *kt = c->k + t * nkv + h * hd;
                rt_rope_apply(&c->rope, cs, kt, (uint32_t)hd);
                size_t pos = c->n_past + t;
                memcpy(kv_at(c, c->k_cache, il, h) + pos * hd, kt, hd * sizeof(float));
                memcpy(kv_at(c, c->v_cache, il, h) + pos * hd, c->v + t * nkv + h * hd,
                       hd * sizeof(float));
            }
        }
        if (c->cap_q && il == c->cap_layer) /* the chunk's positions are contiguous */
            memcpy(c->cap_q + (size_t)c->n_past * nq, c->q, B * nq * sizeof(float));
        if (c->q_hook)
            c->q_hook(c->hook_user, il, c->n_past, B, c->q);
        if (sp && sp->enabled)
            attend_sparse(c, il, sp);
        else if (c->attend_hook)
            c->attend_hook(c->hook_user, c, il, B);
        else
            attend_full(c, il, B);
        rt_matmul_cpu(&L->wo, c->att, nq, B, c->xb, E, pool);
        for (size_t i = 0; i < B * E; i++)
            c->x[i] += c->xb[i];

        for (size_t t = 0; t < B; t++)
            rmsnorm(c->xb + t * E, c->x + t * E, L->ffn_norm, E, hp->norm_eps);
        rt_matmul_cpu(&L->w_gate, c->xb, E, B, c->hb, F, pool);
        rt_matmul_cpu(&L->w_up, c->xb, E, B, c->hb2, F, pool);
        for (size_t i = 0; i < B * F; i++) {
            float g = c->hb[i];
            c->hb[i] = g / (1.0f + expf(-g)) * c->hb2[i];
        }
        rt_matmul_cpu(&L->w_down, c->hb, F, B, c->xb, E, pool);
        for (size_t i = 0; i < B * E; i++)
            c->x[i] += c->xb[i];
    }

    size_t first = all_logits ? 0 : B - 1; /* rows whose logits are wanted */
    for (size_t t = first; t < B; t++)
        rmsnorm(c->xb + t * E, c->x + t * E, m->output_norm, E, hp->norm_eps);
    if (all_logits) {
        rt_matmul_cpu(&m->output, c->xb, E, B, all_logits, hp->n_vocab, pool);
        memcpy(c->logits, all_logits + (B - 1) * hp->n_vocab, hp->n_vocab * sizeof(float));
    } else {
        rt_matmul_cpu(&m->output, c->xb + (B - 1) * E, E, 1, c->logits, hp->n_vocab, pool);
    }
    c->n_past += (uint32_t)B;
}

/* ==== Public entry points ================================================================= */

static loupe_status check_tokens(const rt_ctx *c, const int32_t *ids, size_t n, loupe_err *err)
{
    if (!c->k_cache)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "this context holds no KV cache (its K/V live in the retrieval host "
                          "set): it cannot evaluate tokens on the CPU");
    if (n > (size_t)(c->n_ctx - c->n_past))
        return loupe_fail(err, LOUPE_ERR_TOO_LONG,
                          "%zu tokens do not fit in the context: %u of %u already used", n,
                          c->n_past, c->n_ctx);
    uint32_t n_vocab = c->m->hp.n_vocab;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= n_vocab)
            return loupe_fail(err, LOUPE_ERR_RANGE,
                              "token id %d at position %zu is outside the vocabulary (0..%u)",
                              (int)ids[i], i, n_vocab - 1);
    return LOUPE_OK;
}

loupe_status rt_ctx_prefill(rt_ctx *c, const int32_t *ids, size_t n, float *all_logits,
                            loupe_err *err)
{
    loupe_status st = check_tokens(c, ids, n, err);
    if (st)
        return st;
    if (n == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "nothing to evaluate: no tokens given");
    size_t n_vocab = c->m->hp.n_vocab;
    for (size_t done = 0; done < n;) {
        size_t b = n - done < c->n_batch ? n - done : c->n_batch;
        forward_chunk(c, ids + done, b, all_logits ? all_logits + done * n_vocab : NULL, NULL);
        done += b;
        if (c->progress && !c->progress(c->progress_user, done, n) && done < n)
            return loupe_fail(err, LOUPE_ERR_CANCELLED, "prefill cancelled after %zu of %zu tokens",
                              done, n);
    }
    return LOUPE_OK;
}

loupe_status rt_ctx_decode(rt_ctx *c, int32_t id, loupe_err *err)
{
    loupe_status st = check_tokens(c, &id, 1, err);
    if (st)
        return st;
    forward_chunk(c, &id, 1, NULL, NULL);
    return LOUPE_OK;
}

loupe_status rt_ctx_decode_sparse(rt_ctx *c, int32_t id, const rt_sparse_params *sp,
                                  loupe_err *err)
{
    loupe_status st = check_tokens(c, &id, 1, err);
    if (st)
        return st;
    if (c->m->hp.head_dim > 512)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "sparse attention supports head dims up to 512, the model has %u",
                          c->m->hp.head_dim);
    forward_chunk(c, &id, 1, NULL, sp);
    return LOUPE_OK;
}

loupe_status rt_ctx_set_capture(rt_ctx *c, uint32_t layer, float *q_out, loupe_err *err)
{
    if (q_out && layer >= c->m->hp.n_layer)
        return loupe_fail(err, LOUPE_ERR_RANGE, "cannot capture queries of layer %u: the model has "
                          "%u layers", layer, c->m->hp.n_layer);
    c->cap_q = q_out;
    c->cap_layer = layer;
    return LOUPE_OK;
}
