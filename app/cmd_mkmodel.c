/*
 * `loupe mkmodel`: writes a `llama` or `qwen2` GGUF with random weights of a given shape, for tests
 * and benchmarks that need a model of real size but not real weights.
 *
 * Weights are drawn N(0, 0.02²), norm weights 1 + N(0, 0.02²), biases N(0, 0.02²), so activations
 * stay well-conditioned through any number of layers. Each row of each tensor has its own RNG
 * stream seeded from (seed, tensor, row): the file depends only on the options, not on the
 * thread count. Rows are generated and quantised a chunk at a time (OpenMP across rows) and
 * streamed to the writer, so memory use is about 32 MB whatever the model size (llama3-8b
 * writes without 16 GB of RAM).
 *
 * Vocabulary: from a Hugging Face tokenizer.json when --tokenizer is given, else a minimal
 * byte-level one (the 256 GPT-2 byte tokens, no merges, the chat format's special tokens, then
 * reserved specials up to --vocab) with the matching chat template.
 */
#include "app/app.h"
#include "runtime/runtime.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ==== Options and presets =================================================================== */

typedef struct {
    const char *name;
    const char *arch;
    uint32_t layers, embd, heads, kv_heads, ff, vocab, ctx;
    float rope_base, norm_eps;
    rt_type type;
    bool tied, qkv_bias;
} mk_preset;

static const mk_preset presets[] = {
    {"tiny", "llama", 2, 256, 2, 1, 512, 384, 2048, 500000.0f, 1e-5f, RT_TYPE_F32, false, false},
    {"qwen2-tiny", "qwen2", 2, 256, 2, 1, 512, 384, 4096, 1000000.0f, 1e-6f, RT_TYPE_F32, true,
     true},
    {"llama3-1b", "llama", 16, 2048, 32, 8, 8192, 128256, 8192, 500000.0f, 1e-5f, RT_TYPE_F16,
     true, false},
    {"llama3-8b", "llama", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0f, 1e-5f, RT_TYPE_F16,
     false, false},
};

typedef struct {
    const char *out;
    mk_preset p;
    uint64_t seed;
    bool rope_freqs;
    const char *tokenizer, *tokenizer_config;
    bool vocab_set;
} mk_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loupe mkmodel --out FILE [--preset NAME] [--arch llama|qwen2] [--layers N]\n"
            "         [--embd N] [--heads N] [--kv-heads N] [--ff N] [--vocab N] [--ctx N]\n"
            "         [--type f32|f16|bf16|q8_0|q4_k|q6_k] [--seed N] [--rope-base F]\n"
            "         [--rope-freqs] [--tied] [--tokenizer tokenizer.json\n"
            "         [--tokenizer-config tokenizer_config.json]]\n"
            "Writes a GGUF model with random weights. Presets: tiny (default), qwen2-tiny,\n"
            "llama3-1b, llama3-8b; flags after --preset override it. Norms and biases are F32;\n"
            "a matrix whose rows do not fit the type's block size falls back to Q8_0 or F16.\n");
}

/* Chooses the number option `name`; returns 1 consumed, 0 not this option, >1 exit code. */
static int opt_u32(int argc, char **argv, int *i, const char *name, uint32_t lo, uint32_t hi,
                   uint32_t *out)
{
    const char *v;
    int r = app_opt_value("mkmodel", name, argc, argv, i, &v);
    if (r != 1)
        return r;
    int64_t n;
    if ((r = app_parse_i64("mkmodel", name, v, lo, hi, &n)))
        return r;
    *out = (uint32_t)n;
    return 1;
}

static int parse_args(int argc, char **argv, mk_opts *o)
{
    memset(o, 0, sizeof *o);
    o->p = presets[0];
    o->seed = 1;
    /* The preset first, so other flags override it wherever they appear. */
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = app_opt_value("mkmodel", "--preset", argc, argv, &i, &v);
        if (r > 1)
            return r;
        if (r == 1) {
            size_t k = 0, n = sizeof presets / sizeof presets[0];
            while (k < n && strcmp(presets[k].name, v))
                k++;
            if (k == n)
                return app_usage("mkmodel", "unknown preset '%s' (tiny, qwen2-tiny, llama3-1b, "
                                 "llama3-8b)", v);
            o->p = presets[k];
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        int64_t n;
#define OPT(name) ((r = app_opt_value("mkmodel", name, argc, argv, &i, &v)) != 0)
#define U32(name, lo, hi, dst) ((r = opt_u32(argc, argv, &i, name, lo, hi, dst)) != 0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--rope-freqs")) {
            o->rope_freqs = true;
        } else if (!strcmp(a, "--tied")) {
            o->p.tied = true;
        } else if (OPT("--preset")) {
            if (r > 1) return r; /* applied above */
        } else if (OPT("--out")) {
            if (r > 1) return r;
            o->out = v;
        } else if (OPT("--arch")) {
            if (r > 1) return r;
            if (strcmp(v, "llama") && strcmp(v, "qwen2"))
                return app_usage("mkmodel", "--arch must be llama or qwen2, got '%s'", v);
            o->p.arch = !strcmp(v, "llama") ? "llama" : "qwen2";
            o->p.qkv_bias = !strcmp(v, "qwen2");
        } else if (OPT("--type")) {
            if (r > 1) return r;
            if (!rt_type_parse(v, &o->p.type) || !rt_type_supported(o->p.type))
                return app_usage("mkmodel",
                                 "--type must be f32, f16, bf16, q8_0, q4_k or q6_k, got '%s'", v);
        } else if (OPT("--seed")) {
            if (r > 1) return r;
            if ((r = app_parse_i64("mkmodel", "--seed", v, 0, INT64_MAX, &n))) return r;
            o->seed = (uint64_t)n;
        } else if (OPT("--rope-base")) {
            if (r > 1) return r;
            if ((r = app_parse_f32("mkmodel", "--rope-base", v, &o->p.rope_base))) return r;
            if (o->p.rope_base <= 0) return app_usage("mkmodel", "--rope-base must be > 0");
        } else if (OPT("--tokenizer")) {
            if (r > 1) return r;
            o->tokenizer = v;
        } else if (OPT("--tokenizer-config")) {
            if (r > 1) return r;
            o->tokenizer_config = v;
        } else if (U32("--layers", 1, 4096, &o->p.layers) || U32("--embd", 2, 1 << 20, &o->p.embd) ||
                   U32("--heads", 1, 4096, &o->p.heads) ||
                   U32("--kv-heads", 1, 4096, &o->p.kv_heads) ||
                   U32("--ff", 1, 1 << 20, &o->p.ff) || U32("--ctx", 1, INT32_MAX, &o->p.ctx)) {
            if (r > 1) return r;
        } else if (U32("--vocab", 1, 1 << 24, &o->p.vocab)) {
            if (r > 1) return r;
            o->vocab_set = true;
        } else {
            return app_usage("mkmodel", "unknown option '%s'", a);
        }
#undef OPT
#undef U32
    }
    if (!o->out)
        return app_usage("mkmodel", "--out FILE is required");
    if (o->tokenizer_config && !o->tokenizer)
        return app_usage("mkmodel", "--tokenizer-config needs --tokenizer");
    if (o->p.embd % o->p.heads)
        return app_usage("mkmodel", "--embd %" PRIu32 " is not a multiple of --heads %" PRIu32,
                         o->p.embd, o->p.heads);
    if ((o->p.embd / o->p.heads) % 2)
        return app_usage("mkmodel", "the head dimension (--embd / --heads = %" PRIu32
                         ") must be even for RoPE", o->p.embd / o->p.heads);
    if (o->p.heads % o->p.kv_heads)
        return app_usage("mkmodel", "--heads %" PRIu32 " is not a multiple of --kv-heads %" PRIu32,
                         o->p.heads, o->p.kv_heads);
    return 0;
}

/* ==== Random numbers ======================================================================== */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Normal samples by table lookup: the 65536 quantiles Φ⁻¹((i + ½) / 65536) indexed by 16 random
 * bits, four samples per 64-bit draw. That is a normal distribution up to a discretisation far
 * below what f16 or any quantised type keeps (tails end at ±4.3σ), and ~20x faster than
 * Box-Muller, which matters when drawing 8 billion weights. */
enum { NORMAL_TABLE = 1 << 16 };

/* Fills table[NORMAL_TABLE] by bisection on Φ(x) = erfc(-x/√2)/2 (once per run, ~50 ms). */
static void normal_table_init(float *table)
{
    for (int i = 0; i < NORMAL_TABLE; i++) {
        double p = (i + 0.5) / NORMAL_TABLE, lo = -10, hi = 10;
        for (int it = 0; it < 48; it++) {
            double mid = 0.5 * (lo + hi);
            if (0.5 * erfc(-mid / M_SQRT2) < p)
                lo = mid;
            else
                hi = mid;
        }
        table[i] = (float)(0.5 * (lo + hi));
    }
}

/* n samples with the given mean and std from the stream of `state`. */
static void fill_normal(const float *table, float *x, size_t n, uint64_t state, float mean,
                        float std)
{
    for (size_t i = 0; i < n; i += 4) {
        uint64_t r = splitmix64(&state);
        for (size_t k = 0; k < 4 && i + k < n; k++, r >>= 16)
            x[i + k] = mean + std * table[r & 0xffff];
    }
}

/* ==== Tensors =============================================================================== */

typedef enum { FILL_WEIGHT, FILL_NORM, FILL_BIAS, FILL_ROPE_FREQS } fill_kind;

typedef struct {
    char name[64];
    rt_type type;
    uint32_t n_dims;
    uint64_t ne[2];
    fill_kind fill;
} mk_tensor;

/* The type a matrix gets: the requested one if its rows fit the block size, else Q8_0, else F16. */
static rt_type matrix_type(rt_type want, uint64_t row, bool *fell_back)
{
    if (row % rt_type_block_elems(want) == 0)
        return want;
    *fell_back = true;
    return row % 32 == 0 && want != RT_TYPE_F16 && want != RT_TYPE_BF16 ? RT_TYPE_Q8_0
                                                                          : RT_TYPE_F16;
}

/* Appends one tensor to the plan (the list is sized by the caller for the worst case). */
static void plan_add(mk_tensor *list, size_t *n, const char *name, fill_kind fill, uint64_t d0,
                     uint64_t d1, rt_type want, bool *fell_back)
{
    mk_tensor *t = &list[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->fill = fill;
    t->ne[0] = d0;
    t->ne[1] = d1;
    t->n_dims = d1 > 1 ? 2 : 1;
    t->type = fill == FILL_WEIGHT ? matrix_type(want, d0, fell_back) : RT_TYPE_F32;
}

/* The tensors in file order into `list` (room for 4 + 10 per layer); returns the count. */
static size_t plan_tensors(const mk_opts *o, mk_tensor *list, bool *fell_back)
{
    const mk_preset *p = &o->p;
    uint64_t hd = p->embd / p->heads, q = (uint64_t)p->heads * hd, kv = (uint64_t)p->kv_heads * hd;
    size_t n = 0;
    rt_type ty = p->type;
    plan_add(list, &n, "token_embd.weight", FILL_WEIGHT, p->embd, p->vocab, ty, fell_back);
    if (o->rope_freqs)
        plan_add(list, &n, "rope_freqs.weight", FILL_ROPE_FREQS, hd / 2, 1, ty, fell_back);
    plan_add(list, &n, "output_norm.weight", FILL_NORM, p->embd, 1, ty, fell_back);
    if (!p->tied)
        plan_add(list, &n, "output.weight", FILL_WEIGHT, p->embd, p->vocab, ty, fell_back);
    const struct {
        const char *suffix;
        fill_kind fill;
        uint64_t ne0, ne1;
        bool bias;
    } layer[] = {
        {"attn_norm.weight", FILL_NORM, p->embd, 1, false},
        {"attn_q.weight", FILL_WEIGHT, p->embd, q, false},
        {"attn_k.weight", FILL_WEIGHT, p->embd, kv, false},
        {"attn_v.weight", FILL_WEIGHT, p->embd, kv, false},
        {"attn_q.bias", FILL_BIAS, q, 1, true},
        {"attn_k.bias", FILL_BIAS, kv, 1, true},
        {"attn_v.bias", FILL_BIAS, kv, 1, true},
        {"attn_output.weight", FILL_WEIGHT, q, p->embd, false},
        {"ffn_norm.weight", FILL_NORM, p->embd, 1, false},
        {"ffn_gate.weight", FILL_WEIGHT, p->embd, p->ff, false},
        {"ffn_up.weight", FILL_WEIGHT, p->embd, p->ff, false},
        {"ffn_down.weight", FILL_WEIGHT, p->ff, p->embd, false},
    };
    for (uint32_t il = 0; il < p->layers; il++)
        for (size_t k = 0; k < sizeof layer / sizeof layer[0]; k++) {
            if (layer[k].bias && !p->qkv_bias)
                continue;
            char name[64];
            snprintf(name, sizeof name, "blk.%" PRIu32 ".%s", il, layer[k].suffix);
            plan_add(list, &n, name, layer[k].fill, layer[k].ne0, layer[k].ne1, ty, fell_back);
        }
    return n;
}

/* Llama-3.1 style frequency divisors: 1 for short wavelengths, 8 for long, smooth between. */
static void rope_freq_factors(float *out, uint64_t n, float base, uint64_t head_dim)
{
    const double factor = 8, low = 1, high = 4, orig_ctx = 8192;
    const double low_wavelen = orig_ctx / low, high_wavelen = orig_ctx / high;
    for (uint64_t i = 0; i < n; i++) {
        double freq = pow(base, -2.0 * (double)i / (double)head_dim);
        double wavelen = 2 * M_PI / freq;
        if (wavelen < high_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            out[i] = (float)factor;
        } else {
            double smooth = (orig_ctx / wavelen - low) / (high - low);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

/* ==== Progress ============================================================================== */

typedef struct {
    struct timespec start;
    double last;
    bool shown;
} progress;

static double elapsed(const progress *pr)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - pr->start.tv_sec) + (double)(now.tv_nsec - pr->start.tv_nsec) / 1e9;
}

/* One updating line on stderr, only once writing has taken more than a second. */
static void progress_update(progress *pr, uint64_t done, uint64_t total, bool final)
{
    double t = elapsed(pr);
    if (t < 1.0 || (!final && t - pr->last < 0.25))
        return;
    pr->last = t;
    pr->shown = true;
    double gib = 1024.0 * 1024 * 1024;
    fprintf(stderr, "\rmkmodel: %.2f / %.2f GiB (%3.0f%%), %.0f MiB/s   ", (double)done / gib,
            (double)total / gib, total ? 100.0 * (double)done / (double)total : 100.0,
            (double)done / (1024.0 * 1024) / t);
    if (final)
        fputc('\n', stderr);
}

/* Generates, quantises and streams one tensor, a chunk of rows at a time. */
static loupe_status write_tensor(rt_gguf_writer *w, const mk_opts *o, const mk_tensor *t,
                                 uint64_t index, const float *table, float *fbuf, uint8_t *qbuf,
                                 size_t chunk_elems, progress *pr, uint64_t total, loupe_err *err)
{
    uint64_t row = t->ne[0], rows = t->ne[1];
    size_t row_bytes = rt_type_row_bytes(t->type, row);
    uint64_t per_chunk = chunk_elems / row ? chunk_elems / row : 1;
    for (uint64_t r0 = 0; r0 < rows; r0 += per_chunk) {
        uint64_t nr = rows - r0 < per_chunk ? rows - r0 : per_chunk;
        if (t->fill == FILL_ROPE_FREQS) {
            rope_freq_factors(fbuf, row, o->p.rope_base, o->p.embd / o->p.heads);
            rt_quantize(t->type, fbuf, qbuf, row);
        } else {
            float mean = t->fill == FILL_NORM ? 1.0f : 0.0f;
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < (int64_t)nr; r++) {
                uint64_t s = o->seed * 0x9E3779B97F4A7C15ull ^ (index << 40) ^ (r0 + (uint64_t)r);
                splitmix64(&s);
                fill_normal(table, fbuf + (size_t)r * row, row, s, mean, 0.02f);
                rt_quantize(t->type, fbuf + (size_t)r * row, qbuf + (size_t)r * row_bytes, row);
            }
        }
        loupe_status st = rt_gguf_writer_write(w, qbuf, (size_t)nr * row_bytes, err);
        if (st)
            return st;
        progress_update(pr, rt_gguf_writer_bytes_written(w), total, false);
    }
    return LOUPE_OK;
}

/* ==== Vocabulary ============================================================================ */

static const char llama3_template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char chatml_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Appends the UTF-8 encoding of code point cp (< 0x800 here) to out; returns the length. */
static int utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

/* The minimal byte-level vocabulary: token b (0..255) is byte b under GPT-2's byte↔unicode map
 * (printable bytes stand for themselves, the others for 256, 257, ... in byte order), then the
 * chat format's special tokens, then reserved specials up to n_vocab. */
static loupe_status write_builtin_vocab(rt_gguf_writer *w, const mk_opts *o, loupe_err *err)
{
    static const char *const llama_specials[] = {"<|begin_of_text|>", "<|end_of_text|>",
                                                 "<|start_header_id|>", "<|end_header_id|>",
                                                 "<|eot_id|>"};
    static const char *const qwen_specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    bool qwen = !strcmp(o->p.arch, "qwen2");
    const char *const *spec = qwen ? qwen_specials : llama_specials;
    uint32_t n_spec = qwen ? 3 : 5, n = o->p.vocab;
    loupe_status st = LOUPE_OK;
    char *text = malloc((size_t)n * 40);
    const char **strs = malloc((size_t)n * sizeof *strs);
    int32_t *types = malloc((size_t)n * sizeof *types);
    if (!text || !strs || !types) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory building a %" PRIu32 "-token vocabulary",
                        n);
        goto done;
    }
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        char *s = text + (size_t)b * 40;
        int len = utf8_put(printable ? b : next++, s);
        s[len] = '\0';
        strs[b] = s;
        types[b] = 1; /* normal */
    }
    for (uint32_t i = 256; i < n; i++) {
        char *s = text + (size_t)i * 40;
        if (i - 256 < n_spec)
            snprintf(s, 40, "%s", spec[i - 256]);
        else
            snprintf(s, 40, "<|reserved_special_token_%" PRIu32 "|>", i - 256 - n_spec);
        strs[i] = s;
        types[i] = 3; /* control */
    }
    uint32_t bos = 256, eos = qwen ? 258 : 257, eot = qwen ? 258 : 260;
    if ((st = rt_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", err)) ||
        (st = rt_gguf_writer_set_str(w, "tokenizer.ggml.pre", qwen ? "qwen2" : "llama-bpe", err)) ||
        (st = rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, NULL, n, err)) ||
        (st = rt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", RT_GGUF_INT32, types, n,
                                     err)) ||
        (st = rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", NULL, NULL, 0, err)) ||
        (st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", bos, err)) ||
        (st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", eos, err)) ||
        (st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", eot, err)) ||
        (st = rt_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", !qwen, err)) ||
        (st = rt_gguf_writer_set_str(w, "tokenizer.chat_template",
                                     qwen ? chatml_template : llama3_template, err)))
        goto done;
done:
    free(text);
    free(strs);
    free(types);
    return st;
}

/* ==== Main ================================================================================== */

/* llama.cpp's general.file_type for a file mostly of type t. */
static uint32_t file_type(rt_type t)
{
    switch (t) {
    case RT_TYPE_F16: return 1;
    case RT_TYPE_Q8_0: return 7;
    case RT_TYPE_Q4_K: return 15; /* Q4_K_M */
    case RT_TYPE_Q6_K: return 18;
    case RT_TYPE_BF16: return 32;
    default: return 0;
    }
}

static loupe_status write_metadata(rt_gguf_writer *w, const mk_opts *o, loupe_err *err)
{
    loupe_status st;
    const mk_preset *p = &o->p;
    char key[96], name[96];
    uint32_t hd = p->embd / p->heads;
    snprintf(name, sizeof name, "loupe random %s %" PRIu32 "L-%" PRIu32 " (seed %" PRIu64 ")",
             p->arch, p->layers, p->embd, o->seed);
    if ((st = rt_gguf_writer_set_str(w, "general.architecture", p->arch, err)) ||
        (st = rt_gguf_writer_set_str(w, "general.name", name, err)) ||
        (st = rt_gguf_writer_set_u32(w, "general.file_type", file_type(p->type), err)) ||
        (st = rt_gguf_writer_set_u32(w, "general.quantization_version", 2, err)))
        return st;
    struct {
        const char *suffix;
        uint32_t v;
    } u32s[] = {
        {"block_count", p->layers},         {"context_length", p->ctx},
        {"embedding_length", p->embd},      {"feed_forward_length", p->ff},
        {"attention.head_count", p->heads}, {"attention.head_count_kv", p->kv_heads},
        {"attention.key_length", hd},       {"attention.value_length", hd},
        {"rope.dimension_count", hd},       {"vocab_size", p->vocab},
    };
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", p->arch, u32s[i].suffix);
        if ((st = rt_gguf_writer_set_u32(w, key, u32s[i].v, err)))
            return st;
    }
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", p->arch);
    if ((st = rt_gguf_writer_set_f32(w, key, p->norm_eps, err)))
        return st;
    snprintf(key, sizeof key, "%s.rope.freq_base", p->arch);
    return rt_gguf_writer_set_f32(w, key, p->rope_base, err);
}

static loupe_status mkmodel(mk_opts *o, loupe_err *err)
{
    loupe_status st;
    rt_gguf_writer *w = NULL;
    mk_tensor *list = NULL;
    float *fbuf = NULL, *table = NULL;
    uint8_t *qbuf = NULL;
    progress pr = {0};
    clock_gettime(CLOCK_MONOTONIC, &pr.start);

    if ((st = rt_gguf_writer_create(o->out, &w, err)))
        goto done;
    if (o->tokenizer) {
        uint32_t n_vocab = 0;
        if ((st = rt_tokenizer_json_to_gguf(o->tokenizer, o->tokenizer_config, w, &n_vocab, err)))
            goto done;
        if (o->vocab_set && n_vocab != o->p.vocab) {
            st = loupe_fail(err, LOUPE_ERR_INVALID,
                            "%s has %" PRIu32 " tokens but --vocab says %" PRIu32, o->tokenizer,
                            n_vocab, o->p.vocab);
            goto done;
        }
        o->p.vocab = n_vocab;
    } else {
        uint32_t min = 256 + (strcmp(o->p.arch, "qwen2") ? 5 : 3);
        if (o->p.vocab < min) {
            st = loupe_fail(err, LOUPE_ERR_INVALID,
                            "--vocab %" PRIu32 " is too small for the built-in byte-level "
                            "vocabulary (at least %" PRIu32 ": 256 bytes + special tokens)",
                            o->p.vocab, min);
            goto done;
        }
        if ((st = write_builtin_vocab(w, o, err)))
            goto done;
    }
    if ((st = write_metadata(w, o, err)))
        goto done;

    bool fell_back = false;
    list = calloc(4 + (size_t)o->p.layers * 12, sizeof *list);
    if (!list) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t n = plan_tensors(o, list, &fell_back);
    if (fell_back)
        fprintf(stderr, "loupe: mkmodel: note: some rows do not fit the %s block size; those "
                "matrices use Q8_0 or F16\n", rt_type_name(o->p.type));
    size_t max_row = 0;
    for (size_t i = 0; i < n; i++) {
        if ((st = rt_gguf_writer_add_tensor(w, list[i].name, list[i].type, list[i].n_dims,
                                            list[i].ne, err)))
            goto done;
        if (list[i].ne[0] > max_row)
            max_row = list[i].ne[0];
    }
    /* About 4M floats per chunk (16 MB), at least one row. */
    size_t chunk = (size_t)1 << 22;
    if (chunk < max_row)
        chunk = max_row;
    fbuf = malloc(chunk * sizeof *fbuf);
    qbuf = malloc(chunk * sizeof(float));
    table = malloc(NORMAL_TABLE * sizeof *table);
    if (!fbuf || !qbuf || !table) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for a %zu-element buffer", chunk);
        goto done;
    }
    normal_table_init(table);
    uint64_t total = rt_gguf_writer_total_bytes(w);
    for (size_t i = 0; i < n; i++)
        if ((st = write_tensor(w, o, &list[i], i, table, fbuf, qbuf, chunk, &pr, total, err)))
            goto done;
    st = rt_gguf_writer_finish(w, err);
    if (!st && pr.shown)
        progress_update(&pr, total, total, true);
done:
    if (st && pr.shown)
        fputc('\n', stderr);
    rt_gguf_writer_destroy(w);
    free(list);
    free(fbuf);
    free(qbuf);
    free(table);
    return st;
}

int cmd_mkmodel(int argc, char **argv)
{
    mk_opts o;
    int r = parse_args(argc, argv, &o);
    if (r < 0)
        return APP_EXIT_OK;
    if (r)
        return r;
    loupe_err err = {0};
    if (mkmodel(&o, &err))
        return app_fail("mkmodel", &err);
    return APP_EXIT_OK;
}
