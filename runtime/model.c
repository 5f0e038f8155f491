/*
 * rt_model and rt_ctx: binding a GGUF file's tensors to the model's weights, and creating a
 * context (KV cache + scratch) sized once for n_ctx tokens and n_batch-token prefill chunks.
 *
 * Matrices are never copied: an rt_mat points into the mapping. Only vectors of at most a few
 * thousand elements (norms, biases, rope factors) are dequantised to owned float arrays, so a
 * model's resident memory is the file's pages the forward pass touches.
 */
#include "runtime/model_impl.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== Binding tensors ===================================================================== */

static const rt_gguf_tensor *find(const rt_model *m, const char *name)
{
    return rt_gguf_find_tensor(m->g, name);
}

static void count(rt_model *m, const rt_gguf_tensor *t)
{
    m->n_params += t->n_elems;
}

/* Binds a matrix of shape ne = [n_in, n_out]; fails naming the tensor. */
static loupe_status bind_mat(rt_model *m, const char *name, uint32_t n_in, uint32_t n_out,
                             bool optional, rt_mat *out, loupe_err *err)
{
    const rt_gguf_tensor *t = find(m, name);
    const char *path = rt_gguf_path(m->g);
    memset(out, 0, sizeof *out);
    if (!t) {
        if (optional)
            return LOUPE_OK;
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
    }
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%llu, %llu] (%u dims), expected [%u, %u]",
                          path, name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                          t->n_dims, n_in, n_out);
    if (!rt_type_supported(t->type))
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has type %s, which loupe cannot compute with "
                          "(supported: F32, F16, BF16, Q8_0, Q4_K, Q6_K)",
                          path, name, rt_type_name(t->type));
    if (n_in % rt_type_block_elems(t->type) != 0)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tensor '%s' rows of %u elements are not whole %s blocks", path,
                          name, n_in, rt_type_name(t->type));
    out->data = t->data;
    out->type = t->type;
    out->n_in = n_in;
    out->n_out = n_out;
    out->row_bytes = rt_type_row_bytes(t->type, n_in);
    if (n_in > m->max_in)
        m->max_in = n_in;
    count(m, t);
    return LOUPE_OK;
}

/* Dequantises a vector of n elements into a new float array (NULL when optional and absent). */
static loupe_status bind_vec(rt_model *m, const char *name, uint32_t n, bool optional,
                             float **out, loupe_err *err)
{
    const rt_gguf_tensor *t = find(m, name);
    const char *path = rt_gguf_path(m->g);
    *out = NULL;
    if (!t) {
        if (optional)
            return LOUPE_OK;
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
    }
    if (t->n_elems != n || t->ne[0] != n)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tensor '%s' has %llu elements, expected a vector of %u", path, name,
                          (unsigned long long)t->n_elems, n);
    if (!rt_type_supported(t->type) || n % rt_type_block_elems(t->type) != 0)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "%s: tensor '%s' has unusable type %s",
                          path, name, rt_type_name(t->type));
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory reading tensor '%s'", name);
    rt_dequantize(t->type, t->data, v, n);
    *out = v;
    count(m, t);
    return LOUPE_OK;
}

static loupe_status bind_layer(rt_model *m, uint32_t il, loupe_err *err)
{
    const rt_hparams *hp = &m->hp;
    rt_layer *L = &m->layers[il];
    uint32_t nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
    char name[96];
    loupe_status st;
#define NAME(s) (snprintf(name, sizeof name, "blk.%u." s, il), name)
    if ((st = bind_vec(m, NAME("attn_norm.weight"), hp->n_embd, false, &L->attn_norm, err)) ||
        (st = bind_mat(m, NAME("attn_q.weight"), hp->n_embd, nq, false, &L->wq, err)) ||
        (st = bind_mat(m, NAME("attn_k.weight"), hp->n_embd, nkv, false, &L->wk, err)) ||
        (st = bind_mat(m, NAME("attn_v.weight"), hp->n_embd, nkv, false, &L->wv, err)) ||
        (st = bind_mat(m, NAME("attn_output.weight"), nq, hp->n_embd, false, &L->wo, err)) ||
        (st = bind_vec(m, NAME("attn_q.bias"), nq, true, &L->bq, err)) ||
        (st = bind_vec(m, NAME("attn_k.bias"), nkv, true, &L->bk, err)) ||
        (st = bind_vec(m, NAME("attn_v.bias"), nkv, true, &L->bv, err)) ||
        (st = bind_vec(m, NAME("ffn_norm.weight"), hp->n_embd, false, &L->ffn_norm, err)) ||
        (st = bind_mat(m, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, false, &L->w_gate,
                       err)) ||
        (st = bind_mat(m, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, false, &L->w_up, err)) ||
        (st = bind_mat(m, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, false, &L->w_down,
                       err)))
        return st;
#undef NAME
    if ((L->bq != NULL) != (L->bk != NULL) || (L->bk != NULL) != (L->bv != NULL))
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: layer %u has some but not all of the q/k/v biases",
                          rt_gguf_path(m->g), il);
    const rt_mat *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
        m->weight_bytes += (uint64_t)mats[i]->row_bytes * mats[i]->n_out;
    return LOUPE_OK;
}

loupe_status rt_model_load(const rt_gguf *g, rt_model **out, loupe_err *err)
{
    loupe_status st;
    *out = NULL;
    rt_model *m = calloc(1, sizeof *m);
    if (!m)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory loading a model");
    m->g = g;
    if ((st = rt_hparams_load(g, &m->hp, err)))
        goto fail;
    rt_hparams *hp = &m->hp;
    const char *path = rt_gguf_path(g);
    if (hp->n_layer == 0 || hp->n_embd == 0 || hp->n_head == 0 || hp->n_head_kv == 0 ||
        hp->head_dim == 0 || hp->n_ff == 0 || hp->n_head % hp->n_head_kv != 0 ||
        hp->head_dim % 2 != 0 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2 != 0) {
        st = loupe_fail(err, LOUPE_ERR_FORMAT,
                        "%s: inconsistent shape (layers %u, embd %u, heads %u/%u, head dim %u, "
                        "rope dim %u, ff %u)",
                        path, hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim,
                        hp->rope_dim, hp->n_ff);
        goto fail;
    }
    const rt_gguf_tensor *emb = rt_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) {
        st = loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", path);
        goto fail;
    }
    uint32_t n_vocab = emb->n_dims == 2 ? (uint32_t)emb->ne[1] : 0;
    if (n_vocab == 0 || (hp->n_vocab != 0 && hp->n_vocab > n_vocab)) {
        st = loupe_fail(err, LOUPE_ERR_FORMAT,
                        "%s: the vocabulary has %u tokens but token_embd.weight has %u rows",
                        path, hp->n_vocab, n_vocab);
        goto fail;
    }
    hp->n_vocab = n_vocab;
    if ((st = bind_mat(m, "token_embd.weight", hp->n_embd, n_vocab, false, &m->tok_embd, err)) ||
        (st = bind_mat(m, "output.weight", hp->n_embd, n_vocab, true, &m->output, err)) ||
        (st = bind_vec(m, "output_norm.weight", hp->n_embd, false, &m->output_norm, err)))
        goto fail;
    if (!m->output.data) /* tied: logits reuse the embedding matrix */
        m->output = m->tok_embd;
    uint32_t rope_dim = hp->rope_dim ? hp->rope_dim : hp->head_dim;
    if ((st = bind_vec(m, "rope_freqs.weight", rope_dim / 2, true, &m->rope_freqs, err)))
        goto fail;
    m->weight_bytes += (uint64_t)m->output.row_bytes * m->output.n_out;
    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory loading %u layers", hp->n_layer);
        goto fail;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++)
        if ((st = bind_layer(m, il, err)))
            goto fail;
    *out = m;
    return LOUPE_OK;
fail:
    rt_model_destroy(m);
    return st;
}

void rt_model_destroy(rt_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (uint32_t il = 0; il < m->hp.n_layer; il++) {
            rt_layer *L = &m->layers[il];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
        }
        free(m->layers);
    }
    free(m->output_norm);
    free(m->rope_freqs);
    free(m);
}

const rt_hparams *rt_model_hparams(const rt_model *m) { return &m->hp; }
uint64_t rt_model_weight_bytes(const rt_model *m) { return m->weight_bytes; }
uint64_t rt_model_n_params(const rt_model *m) { return m->n_params; }

/* ==== Context ============================================================================= */

void rt_ctx_params_init(rt_ctx_params *p)
{
    memset(p, 0, sizeof *p);
}

/* a · b elements of elem bytes into *n (elements); false when the bytes overflow a size_t. */
static bool arr_elems(size_t a, size_t b, size_t elem, size_t *n)
{
    if (a && b > SIZE_MAX / a)
        return false;
    *n = a * b;
    return !*n || elem <= SIZE_MAX / *n;
}

/* calloc of a*b floats (or ints) with overflow checking; NULL on failure. */
static void *alloc_arr(size_t a, size_t b, size_t elem)
{
    size_t n;
    return arr_elems(a, b, elem, &n) ? calloc(n ? n : 1, elem) : NULL;
}

/* alloc_arr for the KV caches: line-aligned rows on huge pages (ann_rows_alloc; the retrieval
 * searches read their rows at random). */
static void *alloc_rows(size_t a, size_t b, size_t elem)
{
    size_t n;
    return arr_elems(a, b, elem, &n) ? ann_rows_alloc(n * elem) : NULL;
}

loupe_status rt_ctx_create(const rt_model *m, const rt_ctx_params *p, rt_ctx **out,
                           loupe_err *err)
{
    const rt_hparams *hp = &m->hp;
    loupe_status st = LOUPE_OK;
    *out = NULL;
    uint32_t n_ctx = p->n_ctx ? p->n_ctx : hp->n_ctx_train;
    if (n_ctx == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "the model states no training context; give a context length");
    if (hp->n_ctx_train && n_ctx > hp->n_ctx_train && !p->beyond_train)
        return loupe_fail(err, LOUPE_ERR_TOO_LONG,
                          "a context of %u tokens is longer than the model's %u", n_ctx,
                          hp->n_ctx_train);
    rt_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory creating a context");
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_batch = p->n_batch ? p->n_batch : 256;
    if (c->n_batch > n_ctx)
        c->n_batch = n_ctx;
    c->n_threads = p->n_threads > 0 ? p->n_threads : omp_get_max_threads();
    if ((st = rt_rope_init(&c->rope, hp, m->rope_freqs, err)))
        goto fail;

    size_t B = c->n_batch, hd = hp->head_dim;
    size_t nq = (size_t)hp->n_head * hd, nkv = (size_t)hp->n_head_kv * hd;
    size_t kv_elems = (size_t)hp->n_layer * hp->n_head_kv * (size_t)n_ctx;
    c->pool.n_threads = c->n_threads;
    c->pool.stride = (size_t)RT_MM_ROWS * m->max_in;
    c->pool.buf = alloc_arr((size_t)c->n_threads, c->pool.stride, sizeof(float));
    if (!p->no_kv_cache) {
        c->k_cache = alloc_rows(kv_elems, hd, sizeof(float));
        c->v_cache = alloc_rows(kv_elems, hd, sizeof(float));
    }
    c->x = alloc_arr(B, hp->n_embd, sizeof(float));
    c->xb = alloc_arr(B, hp->n_embd, sizeof(float));
    c->q = alloc_arr(B, nq, sizeof(float));
    c->k = alloc_arr(B, nkv, sizeof(float));
    c->v = alloc_arr(B, nkv, sizeof(float));
    c->att = alloc_arr(B, nq, sizeof(float));
    c->hb = alloc_arr(B, hp->n_ff, sizeof(float));
    c->hb2 = alloc_arr(B, hp->n_ff, sizeof(float));
    c->cs = alloc_arr(B, (size_t)c->rope.n_pairs * 2 + 2, sizeof(float));
    c->logits = alloc_arr(hp->n_vocab, 1, sizeof(float));
    c->sp_score = alloc_arr((size_t)c->n_threads, n_ctx, sizeof(float));
    c->sp_idx = alloc_arr((size_t)c->n_threads, n_ctx, sizeof(int32_t));
    if (!c->pool.buf || (!p->no_kv_cache && (!c->k_cache || !c->v_cache)) || !c->x || !c->xb ||
        !c->q || !c->k || !c->v || !c->att || !c->hb || !c->hb2 || !c->cs || !c->logits ||
        !c->sp_score || !c->sp_idx) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM,
                        "out of memory for a context of %u tokens (KV cache %.1f MiB)", n_ctx,
                        p->no_kv_cache ? 0.0
                                       : 2.0 * (double)kv_elems * (double)hd * 4 /
                                             (1024.0 * 1024.0));
        goto fail;
    }
    *out = c;
    return LOUPE_OK;
fail:
    rt_ctx_destroy(c);
    return st;
}

void rt_ctx_destroy(rt_ctx *c)
{
    if (!c)
        return;
    rt_rope_free(&c->rope);
    free(c->pool.buf);
    ann_rows_free(c->k_cache);
    ann_rows_free(c->v_cache);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->hb);
    free(c->hb2);
    free(c->cs);
    free(c->logits);
    free(c->sp_score);
    free(c->sp_idx);
    free(c);
}

uint32_t rt_ctx_n_ctx(const rt_ctx *c) { return c->n_ctx; }
uint32_t rt_ctx_n_past(const rt_ctx *c) { return c->n_past; }
void rt_ctx_reset(rt_ctx *c) { c->n_past = 0; }

loupe_status rt_ctx_truncate(rt_ctx *c, uint32_t n_past, loupe_err *err)
{
    if (n_past > c->n_past)
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "cannot truncate a context of %u tokens to %u tokens", c->n_past,
                          n_past);
    c->n_past = n_past;
    return LOUPE_OK;
}
const float *rt_ctx_logits(const rt_ctx *c) { return c->logits; }

void rt_ctx_set_progress(rt_ctx *c, rt_progress_fn fn, void *user)
{
    c->progress = fn;
    c->progress_user = user;
}

static size_t kv_offset(const rt_ctx *c, uint32_t layer, uint32_t kv_head)
{
    const rt_hparams *hp = &c->m->hp;
    return (((size_t)layer * hp->n_head_kv + kv_head) * c->n_ctx) * hp->head_dim;
}

const float *rt_ctx_keys(const rt_ctx *c, uint32_t layer, uint32_t kv_head)
{
    return c->k_cache ? c->k_cache + kv_offset(c, layer, kv_head) : NULL;
}

const float *rt_ctx_values(const rt_ctx *c, uint32_t layer, uint32_t kv_head)
{
    return c->v_cache ? c->v_cache + kv_offset(c, layer, kv_head) : NULL;
}
