/* Model hyperparameters on files made by the writer: llama and qwen2 with random shapes, the
 * defaults (KV heads, rope base, head dim, rope dims), rope scaling keys, tied output, biases,
 * rope_freqs, vocabulary from the token list or the embedding; and clear failures for a missing
 * tensor, a mis-shaped one, an unsupported type, a missing key and an unsupported architecture. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

typedef struct {
    const char *arch;
    uint32_t layers, embd, heads, kv_heads, ff, vocab;
    bool tied, bias, rope_freqs, tokens;
    bool omit_kv_heads, omit_base;
    const char *skip;       /* tensor to leave out */
    const char *misshape;   /* tensor to give one extra row */
    const char *scaling;    /* rope.scaling.type, or NULL */
    const char *omit_key;   /* suffix of an <arch>. key to leave out */
    rt_type weight_type;
} spec;

static char path[512];
static test_rng rng;

static void add(rt_gguf_writer *w, const spec *s, const char *name, uint64_t ne0, uint64_t ne1,
                rt_type type, int *n_added, char names[][64], uint64_t (*shapes)[2],
                rt_type *types)
{
    if (s->skip && !strcmp(name, s->skip))
        return;
    uint64_t ne[2] = {ne0, ne1};
    if (s->misshape && !strcmp(name, s->misshape))
        ne[1] += 1;
    loupe_err e = {0};
    CHECK_MSG(rt_gguf_writer_add_tensor(w, name, type, ne1 > 1 || ne[1] > 1 ? 2 : 1, ne, &e) ==
                  LOUPE_OK, "%s", e.msg);
    snprintf(names[*n_added], 64, "%s", name);
    shapes[*n_added][0] = ne[0];
    shapes[*n_added][1] = ne[1];
    types[*n_added] = type;
    (*n_added)++;
}

/* Writes the model described by s to `path`. */
static void write_model(const spec *s)
{
    loupe_err e = {0};
    rt_gguf_writer *w = NULL;
    CHECK(rt_gguf_writer_create(path, &w, &e) == LOUPE_OK);
    if (!w)
        return;
    char key[128];
    const char *a = s->arch;
    uint32_t hd = s->embd / s->heads;
#define SETU(suffix, v)                                                                       \
    do {                                                                                      \
        if (!s->omit_key || strcmp(s->omit_key, suffix)) {                                   \
            snprintf(key, sizeof key, "%s.%s", a, suffix);                                    \
            CHECK(rt_gguf_writer_set_u32(w, key, v, &e) == LOUPE_OK);                        \
        }                                                                                     \
    } while (0)
    CHECK(rt_gguf_writer_set_str(w, "general.architecture", a, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_str(w, "general.name", "hp test", &e) == LOUPE_OK);
    SETU("block_count", s->layers);
    SETU("embedding_length", s->embd);
    SETU("attention.head_count", s->heads);
    if (!s->omit_kv_heads)
        SETU("attention.head_count_kv", s->kv_heads);
    SETU("feed_forward_length", s->ff);
    SETU("context_length", 4096);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    if (!s->omit_key || strcmp(s->omit_key, "attention.layer_norm_rms_epsilon"))
        CHECK(rt_gguf_writer_set_f32(w, key, 1e-5f, &e) == LOUPE_OK);
    if (!s->omit_base) {
        snprintf(key, sizeof key, "%s.rope.freq_base", a);
        CHECK(rt_gguf_writer_set_f32(w, key, 500000.0f, &e) == LOUPE_OK);
    }
    if (s->scaling) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        CHECK(rt_gguf_writer_set_str(w, key, s->scaling, &e) == LOUPE_OK);
        snprintf(key, sizeof key, "%s.rope.scaling.factor", a);
        CHECK(rt_gguf_writer_set_f32(w, key, 4.0f, &e) == LOUPE_OK);
        /* An unsigned 64-bit count where others write u32: any width must do. */
        snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", a);
        CHECK(rt_gguf_writer_set_u64(w, key, 1024, &e) == LOUPE_OK);
    }
    if (s->tokens) {
        const char **toks = malloc(s->vocab * sizeof *toks);
        for (uint32_t i = 0; i < s->vocab; i++)
            toks[i] = "t";
        CHECK(rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, s->vocab, &e) ==
              LOUPE_OK);
        free(toks);
    }
#undef SETU
    enum { MAXT = 64 };
    char names[MAXT][64];
    uint64_t shapes[MAXT][2];
    rt_type types[MAXT];
    int n = 0;
    uint64_t q = (uint64_t)s->heads * hd, kv = (uint64_t)s->kv_heads * hd;
    rt_type wt = s->weight_type;
    add(w, s, "token_embd.weight", s->embd, s->vocab, wt, &n, names, shapes, types);
    add(w, s, "output_norm.weight", s->embd, 1, RT_TYPE_F32, &n, names, shapes, types);
    if (!s->tied)
        add(w, s, "output.weight", s->embd, s->vocab, wt, &n, names, shapes, types);
    if (s->rope_freqs)
        add(w, s, "rope_freqs.weight", hd / 2, 1, RT_TYPE_F32, &n, names, shapes, types);
    for (uint32_t l = 0; l < s->layers; l++) {
        char nm[64];
#define L(suffix, d0, d1, ty)                                                                  \
    snprintf(nm, sizeof nm, "blk.%" PRIu32 "." suffix, l);                                     \
    add(w, s, nm, d0, d1, ty, &n, names, shapes, types)
        L("attn_norm.weight", s->embd, 1, RT_TYPE_F32);
        L("attn_q.weight", s->embd, q, wt);
        L("attn_k.weight", s->embd, kv, wt);
        L("attn_v.weight", s->embd, kv, wt);
        if (s->bias) {
            L("attn_q.bias", q, 1, RT_TYPE_F32);
            L("attn_k.bias", kv, 1, RT_TYPE_F32);
            L("attn_v.bias", kv, 1, RT_TYPE_F32);
        }
        L("attn_output.weight", q, s->embd, wt);
        L("ffn_norm.weight", s->embd, 1, RT_TYPE_F32);
        L("ffn_gate.weight", s->embd, s->ff, wt);
        L("ffn_up.weight", s->embd, s->ff, wt);
        L("ffn_down.weight", s->ff, s->embd, wt);
#undef L
    }
    for (int i = 0; i < n; i++) {
        size_t bytes = rt_type_row_bytes(types[i], shapes[i][0]) * shapes[i][1];
        uint8_t *d = malloc(bytes);
        for (size_t k = 0; k < bytes; k++)
            d[k] = (uint8_t)test_rng_u64(&rng);
        CHECK(rt_gguf_writer_write(w, d, bytes, &e) == LOUPE_OK);
        free(d);
    }
    CHECK_MSG(rt_gguf_writer_finish(w, &e) == LOUPE_OK, "%s", e.msg);
    rt_gguf_writer_destroy(w);
}

/* Loads hparams of the model in `path`; returns the status, message in err. */
static loupe_status load(rt_hparams *hp, loupe_err *err)
{
    rt_gguf *g = NULL;
    loupe_status st = rt_gguf_open(path, &g, err);
    if (!st)
        st = rt_hparams_load(g, hp, err);
    rt_gguf_close(g);
    return st;
}

static spec base_spec(const char *arch)
{
    uint32_t kv = 1 + (uint32_t)(test_rng_u64(&rng) % 2);
    uint32_t heads = kv * (1 + (uint32_t)(test_rng_u64(&rng) % 3));
    uint32_t hd = 2 * (2 + (uint32_t)(test_rng_u64(&rng) % 8));
    spec s = {arch, 1 + (uint32_t)(test_rng_u64(&rng) % 3), heads * hd, heads, kv,
              8 + 4 * (uint32_t)(test_rng_u64(&rng) % 8), 50 + (uint32_t)(test_rng_u64(&rng) % 40),
              false, false, false, true, false, false, NULL, NULL, NULL, NULL, RT_TYPE_F32};
    return s;
}

static void expect_fail(const spec *s, loupe_status want, const char *msg)
{
    write_model(s);
    rt_hparams hp;
    loupe_err e = {0};
    loupe_status st = load(&hp, &e);
    CHECK_MSG(st == want && strstr(e.msg, msg) && strstr(e.msg, path),
              "expected %d /%s/, got %d: %s", (int)want, msg, (int)st, e.msg);
}

int main(void)
{
    test_rng_seed(&rng, test_seed());
    snprintf(path, sizeof path, "%s/test_gguf_hparams-%d.gguf", test_tmpdir(), (int)getpid());
    rt_hparams hp;
    loupe_err e = {0};

    /* llama, separate output, token list. */
    spec s = base_spec("llama");
    write_model(&s);
    CHECK_MSG(load(&hp, &e) == LOUPE_OK, "%s", e.msg);
    CHECK(hp.arch == RT_ARCH_LLAMA && !strcmp(hp.arch_name, "llama") && !strcmp(hp.name, "hp test"));
    CHECK(hp.n_layer == s.layers && hp.n_embd == s.embd && hp.n_head == s.heads);
    CHECK(hp.n_head_kv == s.kv_heads && hp.head_dim == s.embd / s.heads && hp.n_ff == s.ff);
    CHECK(hp.n_vocab == s.vocab && hp.n_ctx_train == 4096 && hp.norm_eps == 1e-5f);
    CHECK(hp.rope_freq_base == 500000.0f && hp.rope_dim == hp.head_dim);
    CHECK(hp.rope_style == RT_ROPE_NORM && hp.rope_scaling == RT_ROPE_SCALING_NONE);
    CHECK(hp.rope_scale_factor == 1.0f && hp.rope_orig_ctx == 4096);
    CHECK(!hp.tied_output && !hp.has_qkv_bias && !hp.has_rope_freqs);
    CHECK(hp.yarn_ext_factor == 0.0f && hp.yarn_attn_factor == 1.0f);
    CHECK(hp.yarn_beta_fast == 32.0f && hp.yarn_beta_slow == 1.0f);

    /* qwen2: biases, tied, NeoX rope, yarn, defaults for KV heads and rope base, vocabulary from
     * the embedding's shape. */
    s = base_spec("qwen2");
    s.bias = s.tied = true;
    s.tokens = false;
    s.omit_kv_heads = s.omit_base = true;
    s.kv_heads = s.heads;
    s.scaling = "yarn";
    write_model(&s);
    CHECK_MSG(load(&hp, &e) == LOUPE_OK, "%s", e.msg);
    CHECK(hp.arch == RT_ARCH_QWEN2 && hp.rope_style == RT_ROPE_NEOX);
    CHECK(hp.has_qkv_bias && hp.tied_output && hp.n_head_kv == hp.n_head);
    CHECK(hp.rope_freq_base == 10000.0f && hp.n_vocab == s.vocab);
    CHECK(hp.rope_scaling == RT_ROPE_SCALING_YARN && hp.rope_scale_factor == 4.0f);
    CHECK(hp.rope_orig_ctx == 1024 && hp.yarn_ext_factor == 1.0f);

    /* llama with rope_freqs, linear scaling, quantised weights. */
    s = base_spec("llama");
    s.rope_freqs = true;
    s.scaling = "linear";
    s.embd = 256;
    s.heads = 2;
    s.kv_heads = 1;
    s.ff = 256;
    s.weight_type = RT_TYPE_Q4_K;
    write_model(&s);
    CHECK_MSG(load(&hp, &e) == LOUPE_OK, "%s", e.msg);
    CHECK(hp.has_rope_freqs && hp.rope_scaling == RT_ROPE_SCALING_LINEAR);

    /* Failures. */
    s = base_spec("llama");
    s.skip = "blk.0.ffn_up.weight";
    expect_fail(&s, LOUPE_ERR_FORMAT, "tensor 'blk.0.ffn_up.weight' is missing");
    s = base_spec("llama");
    s.skip = "token_embd.weight";
    expect_fail(&s, LOUPE_ERR_FORMAT, "tensor 'token_embd.weight' is missing");
    s = base_spec("llama");
    char last[64];
    snprintf(last, sizeof last, "blk.%" PRIu32 ".attn_k.weight", s.layers - 1);
    s.misshape = last;
    char want[160];
    snprintf(want, sizeof want, "tensor '%s' has shape [%" PRIu32 ", %" PRIu32 ", 1, 1], expected "
             "[%" PRIu32 ", %" PRIu32 "]", last, s.embd, s.kv_heads * (s.embd / s.heads) + 1,
             s.embd, s.kv_heads * (s.embd / s.heads));
    expect_fail(&s, LOUPE_ERR_FORMAT, want);
    s = base_spec("llama");
    s.misshape = "output.weight";
    expect_fail(&s, LOUPE_ERR_FORMAT, "tensor 'output.weight' has shape");
    s = base_spec("qwen2");
    s.bias = true;
    s.skip = "blk.0.attn_v.bias";
    expect_fail(&s, LOUPE_ERR_FORMAT, "tensor 'blk.0.attn_v.bias' is missing");
    s = base_spec("llama");
    s.weight_type = RT_TYPE_Q4_0;
    s.embd = 64;
    s.heads = 2;
    s.kv_heads = 1;
    s.ff = 64;
    expect_fail(&s, LOUPE_ERR_UNSUPPORTED, "has type Q4_0, which loupe cannot compute with");
    s = base_spec("llama");
    s.omit_key = "block_count";
    expect_fail(&s, LOUPE_ERR_NOT_FOUND, "key 'llama.block_count' is missing");
    s = base_spec("llama");
    s.omit_key = "attention.layer_norm_rms_epsilon";
    expect_fail(&s, LOUPE_ERR_NOT_FOUND, "llama.attention.layer_norm_rms_epsilon");
    s = base_spec("llama");
    s.scaling = "longrope";
    expect_fail(&s, LOUPE_ERR_UNSUPPORTED, "rope.scaling.type is 'longrope'");
    s = base_spec("gemma");
    expect_fail(&s, LOUPE_ERR_UNSUPPORTED, "unsupported architecture 'gemma'");
    s = base_spec("llama");
    s.heads = 3;
    s.kv_heads = 2;
    s.embd = 3 * 8;
    expect_fail(&s, LOUPE_ERR_FORMAT, "not a multiple");
    unlink(path);
    return test_summary("test_gguf_hparams");
}
