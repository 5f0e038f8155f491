/*
 * Model hyperparameters of `llama` and `qwen2` GGUF files, and the check that every tensor the
 * forward pass needs exists with the shape those hyperparameters imply.
 *
 * Keys are llama.cpp's (`<arch>.block_count`, `<arch>.attention.head_count`, ...). Tensor shapes
 * are in GGUF order (ne[0] = the input dimension of a projection):
 *   token_embd.weight [n_embd, n_vocab]     output.weight [n_embd, n_vocab] (absent: tied)
 *   output_norm.weight, blk.N.attn_norm.weight, blk.N.ffn_norm.weight [n_embd]
 *   blk.N.attn_q.weight [n_embd, n_head*head_dim]   attn_k/v.weight [n_embd, n_head_kv*head_dim]
 *   blk.N.attn_output.weight [n_head*head_dim, n_embd]
 *   blk.N.attn_q.bias [n_head*head_dim], attn_k/v.bias [n_head_kv*head_dim] (all layers or none)
 *   blk.N.ffn_gate/up.weight [n_embd, n_ff]   blk.N.ffn_down.weight [n_ff, n_embd]
 *   rope_freqs.weight [rope_dim/2] (optional)
 * After success every field of rt_hparams is in range: counts >= 1, n_head a multiple of n_head_kv,
 * rope_dim even and <= head_dim, norm_eps and rope_freq_base positive and finite.
 */
#include "runtime/runtime.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const rt_gguf *g;
    const char *arch;
    loupe_err *err;
} hp_ctx;

/* Reads <arch>.<suffix> as a u32 in [lo, hi]; if `def` is non-NULL the key is optional. */
static loupe_status get_u32_key(const hp_ctx *c, const char *suffix, const uint32_t *def,
                                uint32_t lo, uint32_t hi, uint32_t *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    uint64_t v;
    if (def && rt_gguf_find_key(c->g, key) < 0) {
        *out = *def;
        return LOUPE_OK;
    }
    loupe_status st = rt_gguf_get_u64(c->g, key, &v, c->err);
    if (st)
        return st;
    if (v < lo || v > hi)
        return loupe_fail(c->err, LOUPE_ERR_RANGE,
                          "%s: %s is %" PRIu64 ", outside the supported range %" PRIu32
                          "..%" PRIu32, rt_gguf_path(c->g), key, v, lo, hi);
    *out = (uint32_t)v;
    return LOUPE_OK;
}

/* Reads <arch>.<suffix> as a finite float > 0 (or >= 0 with allow_zero); optional with `def`. */
static loupe_status get_f32_key(const hp_ctx *c, const char *suffix, const float *def,
                                bool allow_zero, float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    if (def && rt_gguf_find_key(c->g, key) < 0) {
        *out = *def;
        return LOUPE_OK;
    }
    double v;
    loupe_status st = rt_gguf_get_f64(c->g, key, &v, c->err);
    if (st)
        return st;
    if (!isfinite(v) || v < 0 || (!allow_zero && v == 0) || v > 3.4e38)
        return loupe_fail(c->err, LOUPE_ERR_RANGE, "%s: %s is %g, expected a positive number",
                          rt_gguf_path(c->g), key, v);
    *out = (float)v;
    return LOUPE_OK;
}

/* Copies a metadata string into a fixed buffer (truncating), empty when the key is absent. */
static void copy_str(const rt_gguf *g, const char *key, char *dst, size_t cap)
{
    rt_gguf_str s;
    dst[0] = '\0';
    if (rt_gguf_find_key(g, key) < 0 || rt_gguf_get_str(g, key, &s, NULL))
        return;
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

/* ==== Tensor shape checks =================================================================== */

static loupe_status check_tensor(const rt_gguf *g, const char *name, uint64_t ne0, uint64_t ne1,
                                 bool optional, bool *present, loupe_err *err)
{
    const rt_gguf_tensor *t = rt_gguf_find_tensor(g, name);
    if (present)
        *present = t != NULL;
    if (!t) {
        if (optional)
            return LOUPE_OK;
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tensor '%s' is missing", rt_gguf_path(g),
                          name);
    }
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
        char want[64];
        if (ne1 == 1)
            snprintf(want, sizeof want, "[%" PRIu64 "]", ne0);
        else
            snprintf(want, sizeof want, "[%" PRIu64 ", %" PRIu64 "]", ne0, ne1);
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%" PRIu64 ", %" PRIu64 ", %" PRIu64
                          ", %" PRIu64 "], expected %s",
                          rt_gguf_path(g), name, t->ne[0], t->ne[1], t->ne[2], t->ne[3], want);
    }
    if (!rt_type_supported(t->type))
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has type %s, which loupe cannot compute with (it "
                          "supports F32, F16, BF16, Q8_0, Q4_K and Q6_K)",
                          rt_gguf_path(g), name, rt_type_name(t->type));
    return LOUPE_OK;
}

static loupe_status check_layer(const rt_gguf *g, const rt_hparams *hp, uint32_t il,
                                loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    uint64_t e = hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim,
             kv = (uint64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    struct {
        const char *suffix;
        uint64_t ne0, ne1;
        bool bias;
    } want[] = {
        {"attn_norm.weight", e, 1, false}, {"attn_q.weight", e, q, false},
        {"attn_k.weight", e, kv, false},   {"attn_v.weight", e, kv, false},
        {"attn_output.weight", q, e, false}, {"attn_q.bias", q, 1, true},
        {"attn_k.bias", kv, 1, true},      {"attn_v.bias", kv, 1, true},
        {"ffn_norm.weight", e, 1, false},  {"ffn_gate.weight", e, ff, false},
        {"ffn_up.weight", e, ff, false},   {"ffn_down.weight", ff, e, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0] && !st; i++) {
        if (want[i].bias && !hp->has_qkv_bias) {
            char name[96];
            snprintf(name, sizeof name, "blk.%" PRIu32 ".%s", il, want[i].suffix);
            if (rt_gguf_find_tensor(g, name))
                return loupe_fail(err, LOUPE_ERR_FORMAT,
                                  "%s: tensor '%s' exists but blk.0.attn_q.bias does not (biases "
                                  "must be in every layer or none)", rt_gguf_path(g), name);
            continue;
        }
        char name[96];
        snprintf(name, sizeof name, "blk.%" PRIu32 ".%s", il, want[i].suffix);
        st = check_tensor(g, name, want[i].ne0, want[i].ne1, false, NULL, err);
    }
    return st;
}

/* ==== Loading =============================================================================== */

static loupe_status read_rope_scaling(const hp_ctx *c, rt_hparams *hp)
{
    loupe_status st;
    char key[128];
    const float one = 1.0f;
    hp->rope_scaling = RT_ROPE_SCALING_NONE;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    if (rt_gguf_find_key(c->g, key) >= 0) {
        rt_gguf_str s;
        if ((st = rt_gguf_get_str(c->g, key, &s, c->err)))
            return st;
        if (s.len == 4 && !memcmp(s.ptr, "none", 4))
            hp->rope_scaling = RT_ROPE_SCALING_NONE;
        else if (s.len == 6 && !memcmp(s.ptr, "linear", 6))
            hp->rope_scaling = RT_ROPE_SCALING_LINEAR;
        else if (s.len == 4 && !memcmp(s.ptr, "yarn", 4))
            hp->rope_scaling = RT_ROPE_SCALING_YARN;
        else
            return loupe_fail(c->err, LOUPE_ERR_UNSUPPORTED,
                              "%s: %s is '%.*s'; loupe supports none, linear and yarn",
                              rt_gguf_path(c->g), key, (int)(s.len > 32 ? 32 : s.len), s.ptr);
    }
    if ((st = get_f32_key(c, "rope.scaling.factor", &one, true, &hp->rope_scale_factor)))
        return st;
    /* Older files say rope.scale_linear instead. */
    snprintf(key, sizeof key, "%s.rope.scale_linear", c->arch);
    if (rt_gguf_find_key(c->g, key) >= 0) {
        if ((st = get_f32_key(c, "rope.scale_linear", NULL, false, &hp->rope_scale_factor)))
            return st;
        if (hp->rope_scaling == RT_ROPE_SCALING_NONE && hp->rope_scale_factor != 1.0f)
            hp->rope_scaling = RT_ROPE_SCALING_LINEAR;
    }
    if (hp->rope_scale_factor == 0.0f || hp->rope_scaling == RT_ROPE_SCALING_NONE)
        hp->rope_scale_factor = 1.0f;
    if ((st = get_u32_key(c, "rope.scaling.original_context_length", &hp->n_ctx_train, 1,
                          UINT32_MAX, &hp->rope_orig_ctx)))
        return st;
    /* YaRN defaults as llama.cpp uses them: extrapolation mix on only when yarn is on. */
    const float ext = hp->rope_scaling == RT_ROPE_SCALING_YARN ? 1.0f : 0.0f;
    const float beta_fast = 32.0f, beta_slow = 1.0f;
    float attn = 1.0f;
    if ((st = get_f32_key(c, "rope.scaling.attn_factor", &one, false, &attn)) ||
        (st = get_f32_key(c, "rope.scaling.yarn_attn_factor", &attn, false,
                          &hp->yarn_attn_factor)) ||
        (st = get_f32_key(c, "rope.scaling.yarn_ext_factor", &ext, true, &hp->yarn_ext_factor)) ||
        (st = get_f32_key(c, "rope.scaling.yarn_beta_fast", &beta_fast, false,
                          &hp->yarn_beta_fast)) ||
        (st = get_f32_key(c, "rope.scaling.yarn_beta_slow", &beta_slow, false,
                          &hp->yarn_beta_slow)))
        return st;
    return LOUPE_OK;
}

static loupe_status read_vocab(const rt_gguf *g, rt_hparams *hp, loupe_err *err)
{
    int64_t k = rt_gguf_find_key(g, "tokenizer.ggml.tokens");
    const rt_gguf_tensor *emb = rt_gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing",
                          rt_gguf_path(g));
    uint64_t n = emb->ne[1];
    if (k >= 0) {
        if (rt_gguf_kv_type(g, k) != RT_GGUF_ARRAY || rt_gguf_arr_type(g, k) != RT_GGUF_STRING)
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: tokenizer.ggml.tokens is not an array of strings",
                              rt_gguf_path(g));
        n = rt_gguf_arr_len(g, k);
    }
    if (n < 1 || n > INT32_MAX)
        return loupe_fail(err, LOUPE_ERR_RANGE, "%s: vocabulary of %" PRIu64 " tokens",
                          rt_gguf_path(g), n);
    hp->n_vocab = (uint32_t)n;
    return LOUPE_OK;
}

loupe_status rt_hparams_load(const rt_gguf *g, rt_hparams *hp, loupe_err *err)
{
    loupe_status st;
    const char *path = rt_gguf_path(g);
    memset(hp, 0, sizeof *hp);

    rt_gguf_str arch;
    if ((st = rt_gguf_get_str(g, "general.architecture", &arch, err)))
        return st;
    if (arch.len >= sizeof hp->arch_name || memchr(arch.ptr, 0, arch.len))
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: unsupported architecture '%.*s' (loupe runs llama and qwen2)",
                          path, (int)(arch.len > 32 ? 32 : arch.len), arch.ptr);
    memcpy(hp->arch_name, arch.ptr, arch.len);
    hp->arch_name[arch.len] = '\0';
    if (!strcmp(hp->arch_name, "llama")) {
        hp->arch = RT_ARCH_LLAMA;
        hp->rope_style = RT_ROPE_NORM;
    } else if (!strcmp(hp->arch_name, "qwen2")) {
        hp->arch = RT_ARCH_QWEN2;
        hp->rope_style = RT_ROPE_NEOX;
    } else {
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: unsupported architecture '%s' (loupe runs llama and qwen2)", path,
                          hp->arch_name);
    }
    copy_str(g, "general.name", hp->name, sizeof hp->name);

    hp_ctx c = {g, hp->arch_name, err};
    const uint32_t big = 1u << 20;
    const float def_base = 10000.0f;
    if ((st = get_u32_key(&c, "block_count", NULL, 1, 4096, &hp->n_layer)) ||
        (st = get_u32_key(&c, "embedding_length", NULL, 1, big, &hp->n_embd)) ||
        (st = get_u32_key(&c, "attention.head_count", NULL, 1, 4096, &hp->n_head)) ||
        (st = get_u32_key(&c, "attention.head_count_kv", &hp->n_head, 1, 4096, &hp->n_head_kv)) ||
        (st = get_u32_key(&c, "feed_forward_length", NULL, 1, big, &hp->n_ff)) ||
        (st = get_u32_key(&c, "context_length", NULL, 1, UINT32_MAX, &hp->n_ctx_train)) ||
        (st = get_f32_key(&c, "attention.layer_norm_rms_epsilon", NULL, false, &hp->norm_eps)) ||
        (st = get_f32_key(&c, "rope.freq_base", &def_base, false, &hp->rope_freq_base)))
        return st;
    if (hp->n_head % hp->n_head_kv)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: %" PRIu32 " attention heads cannot be shared by %" PRIu32
                          " KV heads (not a multiple)", path, hp->n_head, hp->n_head_kv);
    uint32_t def_head_dim = hp->n_embd / hp->n_head;
    char klen_key[64];
    snprintf(klen_key, sizeof klen_key, "%s.attention.key_length", hp->arch_name);
    if (rt_gguf_find_key(g, klen_key) < 0 && hp->n_embd % hp->n_head)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: embedding width %" PRIu32 " is not a multiple of the %" PRIu32
                          " heads and %s is absent", path, hp->n_embd, hp->n_head, klen_key);
    if ((st = get_u32_key(&c, "attention.key_length", &def_head_dim, 2, 4096, &hp->head_dim)))
        return st;
    uint32_t v_len;
    if ((st = get_u32_key(&c, "attention.value_length", &hp->head_dim, 1, 4096, &v_len)))
        return st;
    if (v_len != hp->head_dim)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: key length %" PRIu32 " differs from value length %" PRIu32
                          " (not supported)", path, hp->head_dim, v_len);
    if (hp->head_dim % 2)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: head dimension %" PRIu32 " is odd", path,
                          hp->head_dim);
    if ((st = get_u32_key(&c, "rope.dimension_count", &hp->head_dim, 2, hp->head_dim,
                          &hp->rope_dim)))
        return st;
    if (hp->rope_dim % 2)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: rope dimension count %" PRIu32 " is odd",
                          path, hp->rope_dim);
    if ((st = read_rope_scaling(&c, hp)) || (st = read_vocab(g, hp, err)))
        return st;

    /* Tensors. */
    bool has_output;
    if ((st = check_tensor(g, "token_embd.weight", hp->n_embd, hp->n_vocab, false, NULL, err)) ||
        (st = check_tensor(g, "output_norm.weight", hp->n_embd, 1, false, NULL, err)) ||
        (st = check_tensor(g, "output.weight", hp->n_embd, hp->n_vocab, true, &has_output, err)) ||
        (st = check_tensor(g, "rope_freqs.weight", hp->rope_dim / 2, 1, true, &hp->has_rope_freqs,
                           err)))
        return st;
    hp->tied_output = !has_output;
    hp->has_qkv_bias = rt_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    for (uint32_t il = 0; il < hp->n_layer && !st; il++)
        st = check_layer(g, hp, il, err);
    return st;
}
