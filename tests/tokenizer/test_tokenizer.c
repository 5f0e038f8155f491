/* Unit tests of the tokenizer and chat formats on small synthetic vocabularies written as GGUF:
 * the pre-tokenizer's splits (hand-computed), BPE against a naive reference on random merges,
 * byte-exact round trips of random bytes (invalid UTF-8 and NUL included), streaming
 * detokenization, special-token text staying plain, parallel == serial, load-time validation,
 * and both chat formats (text vs hand-written strings, ids vs tokenize-with-specials). */
#include "common/test_util.h"
#include "runtime/runtime.h"

#include <stdlib.h>
#include <string.h>

/* ==== Building vocabularies =============================================================== */

/* GPT-2's byte → code point table, computed the way the original encoder.py does. */
static uint32_t byte_cp[256];

static void init_byte_cp(void)
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_cp[b] = self ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

typedef struct {
    char *raw[4096];     /* raw bytes of each token */
    size_t raw_len[4096];
    int32_t type[4096];
    size_t n;
    char *merge[4096];   /* "a b" in byte-level form */
    int32_t merge_a[4096], merge_b[4096]; /* the same merges as ids */
    size_t n_merges;
} vocab;

static char *bytelevel(const char *raw, size_t n)
{
    char *s = malloc(n * 2 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += put_utf8(s + o, byte_cp[(uint8_t)raw[i]]);
    s[o] = '\0';
    return s;
}

static int32_t vocab_find(const vocab *v, const char *raw, size_t n)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->raw_len[i] == n && !memcmp(v->raw[i], raw, n) && v->type[i] == RT_TOKEN_NORMAL)
            return (int32_t)i;
    return -1;
}

static int32_t vocab_add(vocab *v, const char *raw, size_t n, int32_t type)
{
    if (type == RT_TOKEN_NORMAL) {
        int32_t id = vocab_find(v, raw, n);
        if (id >= 0)
            return id;
    }
    v->raw[v->n] = malloc(n + 1);
    memcpy(v->raw[v->n], raw, n);
    v->raw[v->n][n] = '\0';
    v->raw_len[v->n] = n;
    v->type[v->n] = type;
    return (int32_t)v->n++;
}

static void vocab_add_str(vocab *v, const char *s) { vocab_add(v, s, strlen(s), RT_TOKEN_NORMAL); }

/* Adds the merge a+b (both existing tokens); the merged token is added too. */
static void vocab_merge(vocab *v, int32_t a, int32_t b)
{
    char buf[512];
    size_t na = v->raw_len[a], nb = v->raw_len[b];
    memcpy(buf, v->raw[a], na);
    memcpy(buf + na, v->raw[b], nb);
    vocab_add(v, buf, na + nb, RT_TOKEN_NORMAL);
    char *sa = bytelevel(v->raw[a], na), *sb = bytelevel(v->raw[b], nb);
    size_t la = strlen(sa), lb = strlen(sb);
    char *m = malloc(la + lb + 2);
    memcpy(m, sa, la);
    m[la] = ' ';
    memcpy(m + la + 1, sb, lb + 1);
    v->merge_a[v->n_merges] = a;
    v->merge_b[v->n_merges] = b;
    v->merge[v->n_merges++] = m;
    free(sa);
    free(sb);
}

static void vocab_free(vocab *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->raw[i]);
    for (size_t i = 0; i < v->n_merges; i++)
        free(v->merge[i]);
}

static const char *const specials[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
                                       "<|start_header_id|>", "<|end_header_id|>", "<|im_start|>",
                                       "<|im_end|>"};

/* 256 byte tokens in a shuffled order, so ids are not bytes. */
static void vocab_init(vocab *v, test_rng *rng)
{
    memset(v, 0, sizeof *v);
    int perm[256];
    for (int i = 0; i < 256; i++)
        perm[i] = i;
    for (int i = 255; i > 0; i--) {
        int j = (int)(test_rng_u64(rng) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < 256; i++) {
        char c = (char)perm[i];
        vocab_add(v, &c, 1, RT_TOKEN_NORMAL);
    }
}

typedef struct {
    const char *model, *pre;
    int64_t bos, eos;        /* -2 = from the special tokens, -1 = absent */
    int32_t bad_type_at;     /* token given type 9, -1 = none */
    const char *bad_merge;   /* appended merge, NULL = none */
    const char *chat_template;
    int drop_byte;           /* byte whose token is left out, -1 = none */
} gguf_opts;

static const gguf_opts default_opts = {"gpt2", "llama-bpe", -2, -2, -1, NULL, NULL, -1};

/* Writes v (plus the special tokens) as a tokenizer-only GGUF; returns the status of writing. */
static loupe_status write_vocab(const vocab *v0, const gguf_opts *o, const char *path,
                                loupe_err *err)
{
    vocab v = *v0; /* shallow: the specials are appended to the copy's arrays only */
    size_t first_special = v.n;
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        v.raw[v.n] = (char *)specials[i];
        v.raw_len[v.n] = strlen(specials[i]);
        v.type[v.n++] = RT_TOKEN_CONTROL;
    }
    char **strs = calloc(v.n, sizeof *strs);
    uint64_t *lens = calloc(v.n, sizeof *lens);
    int32_t *types = calloc(v.n, sizeof *types);
    for (size_t i = 0; i < v.n; i++) {
        bool dropped = o->drop_byte >= 0 && v.raw_len[i] == 1 &&
                       (uint8_t)v.raw[i][0] == (uint8_t)o->drop_byte && i < first_special;
        strs[i] = v.type[i] == RT_TOKEN_NORMAL && !dropped ? bytelevel(v.raw[i], v.raw_len[i])
                                                           : strdup(dropped ? "[X]" : v.raw[i]);
        lens[i] = strlen(strs[i]);
        types[i] = dropped ? RT_TOKEN_UNUSED : v.type[i];
    }
    if (o->bad_type_at >= 0)
        types[o->bad_type_at] = 9;
    const char *merges[4097];
    size_t nm = v.n_merges;
    for (size_t i = 0; i < nm; i++)
        merges[i] = v.merge[i];
    if (o->bad_merge)
        merges[nm++] = o->bad_merge;

    rt_gguf_writer *w = NULL;
    loupe_status st = rt_gguf_writer_create(path, &w, err);
    if (!st)
        st = rt_gguf_writer_set_str(w, "tokenizer.ggml.model", o->model, err);
    if (!st && o->pre)
        st = rt_gguf_writer_set_str(w, "tokenizer.ggml.pre", o->pre, err);
    if (!st)
        st = rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)strs,
                                        lens, v.n, err);
    if (!st)
        st = rt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", RT_GGUF_INT32, types, v.n,
                                    err);
    if (!st)
        st = rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, NULL, nm, err);
    int64_t bos = o->bos == -2 ? (int64_t)first_special : o->bos;
    int64_t eos = o->eos == -2 ? (int64_t)first_special + 1 : o->eos;
    if (!st && bos >= 0)
        st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos, err);
    if (!st && eos >= 0)
        st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos, err);
    if (!st && o->chat_template)
        st = rt_gguf_writer_set_str(w, "tokenizer.chat_template", o->chat_template, err);
    if (!st)
        st = rt_gguf_writer_finish(w, err);
    rt_gguf_writer_destroy(w);
    for (size_t i = 0; i < v.n; i++)
        free(strs[i]);
    free(strs);
    free(lens);
    free(types);
    return st;
}

/* Writes and loads; on failure returns the status and leaves *out NULL. */
static loupe_status load_vocab(const vocab *v, const gguf_opts *o, rt_gguf **g, rt_tokenizer **out,
                               loupe_err *err)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tok_unit.gguf", test_tmpdir());
    *out = NULL;
    *g = NULL;
    loupe_status st = write_vocab(v, o, path, err);
    if (!st)
        st = rt_gguf_open(path, g, err);
    if (!st)
        st = rt_tokenizer_load(*g, out, err);
    return st;
}

/* ==== Helpers ============================================================================= */

static char *detok_all(const rt_tokenizer *t, const rt_ids *ids, size_t *len)
{
    size_t cap = 64, n = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < ids->n; i++) {
        size_t k;
        const char *b = rt_token_bytes(t, ids->ids[i], &k);
        while (n + k > cap)
            s = realloc(s, cap *= 2);
        memcpy(s + n, b, k);
        n += k;
    }
    *len = n;
    return s;
}

/* Streams ids through rt_detok_push with a small, random output buffer, growing it when the
 * push asks for more; returns the concatenation. */
static char *detok_stream(const rt_tokenizer *t, const rt_ids *ids, test_rng *rng, size_t *len)
{
    size_t cap = 16, n = 0;
    char *s = malloc(cap);
    rt_detok_state st;
    rt_detok_init(&st);
    char small[8];
    for (size_t i = 0; i < ids->n; i++) {
        size_t need = 0, k = 0;
        size_t c = test_rng_u64(rng) % 8;
        k = rt_detok_push(t, &st, ids->ids[i], small, c, &need);
        if (need > c) {
            CHECK(k == 0);
            char *big = malloc(need ? need : 1);
            k = rt_detok_push(t, &st, ids->ids[i], big, need, &need);
            CHECK(k == need);
            while (n + k > cap)
                s = realloc(s, cap *= 2);
            memcpy(s + n, big, k);
            free(big);
        } else {
            CHECK(k == need);
            while (n + k > cap)
                s = realloc(s, cap *= 2);
            memcpy(s + n, small, k);
        }
        n += k;
        /* what is held is always a proper prefix of a multi-byte sequence */
        CHECK(st.n_pending <= 3);
    }
    char tail[8];
    size_t k = rt_detok_flush(&st, tail, sizeof tail);
    while (n + k > cap)
        s = realloc(s, cap *= 2);
    memcpy(s + n, tail, k);
    *len = n + k;
    return s;
}

static void check_round_trip(const rt_tokenizer *t, const char *x, size_t n, test_rng *rng,
                             const char *what)
{
    rt_ids ids;
    rt_ids_init(&ids);
    loupe_err err = {0};
    CHECK_MSG(rt_tokenize(t, x, n, &ids, &err) == LOUPE_OK, "%s", loupe_err_message(&err));
    for (size_t i = 0; i < ids.n; i++)
        CHECK_MSG(!rt_tokenizer_is_special(t, ids.ids[i]), "%s: special id %d from text", what,
                  ids.ids[i]);
    size_t m1, m2;
    char *y1 = detok_all(t, &ids, &m1);
    char *y2 = detok_stream(t, &ids, rng, &m2);
    CHECK_MSG(m1 == n && !memcmp(x, y1, n), "%s: detokenize(tokenize(x)) != x (%zu vs %zu bytes)",
              what, m1, n);
    CHECK_MSG(m2 == n && !memcmp(x, y2, n), "%s: streamed detokenization differs", what);
    free(y1);
    free(y2);
    rt_ids_free(&ids);
}

/* The ids of `text` must be exactly the listed pre-tokens, each a whole token. */
static void check_split(const rt_tokenizer *t, const vocab *v, const char *text,
                        const char *const *want, size_t n_want)
{
    rt_ids ids;
    rt_ids_init(&ids);
    loupe_err err = {0};
    CHECK(rt_tokenize(t, text, strlen(text), &ids, &err) == LOUPE_OK);
    bool ok = ids.n == n_want;
    for (size_t i = 0; ok && i < n_want; i++)
        ok = ids.ids[i] == vocab_find(v, want[i], strlen(want[i]));
    if (!ok) {
        fprintf(stderr, "split of '%s' differs; got:", text);
        for (size_t i = 0; i < ids.n; i++) {
            size_t k;
            const char *b = rt_token_bytes(t, ids.ids[i], &k);
            fprintf(stderr, " [%.*s]", (int)k, b);
        }
        fprintf(stderr, "\n");
    }
    CHECK_MSG(ok, "pre-token split of '%s'", text);
    rt_ids_free(&ids);
}

/* ==== Tests =============================================================================== */

typedef struct {
    const char *text;
    const char *want[8];
} split_case;

static const split_case llama3_cases[] = {
    {"Hello world's 1234", {"Hello", " world", "'s", " ", "123", "4"}},
    {"I'M you'Re THEY'LL", {"I", "'M", " you", "'Re", " THEY", "'LL"}},
    {"foo  \n\n  bar", {"foo", "  \n\n", " ", " bar"}},
    {"x\r\ny", {"x", "\r\n", "y"}},
    {"a!!!\n\nb", {"a", "!!!\n\n", "b"}},
    {"  leading", {" ", " leading"}},
    {"trailing  ", {"trailing", "  "}},
    {"$var_name", {"$var", "_name"}},
    {"12345678", {"123", "456", "78"}},
    {"h\xC3\xA9llo w\xC3\xB6rld", {"h\xC3\xA9llo", " w\xC3\xB6rld"}},
    {"\xE4\xB8\xAD\xE6\x96\x87 abc", {"\xE4\xB8\xAD\xE6\x96\x87", " abc"}},
    /* U+0085 is White_Space: two of them split as whitespace, then the prefix rule takes one */
    {"a\xC2\x85\xC2\x85" "b", {"a", "\xC2\x85", "\xC2\x85" "b"}},
    /* U+FEFF is not: the punctuation rule takes both */
    {"a\xEF\xBB\xBF\xEF\xBB\xBF" "1", {"a", "\xEF\xBB\xBF\xEF\xBB\xBF", "1"}},
    /* invalid UTF-8 bytes are pre-tokens of their own, the runs around them split on their own */
    {"ab\xFF" "cd \xC3", {"ab", "\xFF", "cd", " ", "\xC3"}},
    {"it\xE2\x80\x99s ok", {"it", "\xE2\x80\x99s", " ok"}},
};

static void test_pretokenizer(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    for (size_t i = 0; i < sizeof llama3_cases / sizeof llama3_cases[0]; i++)
        for (size_t k = 0; k < 8 && llama3_cases[i].want[k]; k++)
            vocab_add_str(&v, llama3_cases[i].want[k]);
    rt_gguf *g;
    rt_tokenizer *t;
    loupe_err err = {0};
    loupe_status st = load_vocab(&v, &default_opts, &g, &t, &err);
    CHECK_MSG(st == LOUPE_OK, "%s", loupe_err_message(&err));
    if (!st) {
        CHECK(!strcmp(rt_tokenizer_pre_name(t), "llama-bpe"));
        for (size_t i = 0; i < sizeof llama3_cases / sizeof llama3_cases[0]; i++) {
            size_t n = 0;
            while (n < 8 && llama3_cases[i].want[n])
                n++;
            check_split(t, &v, llama3_cases[i].text, llama3_cases[i].want, n);
        }
    }
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    vocab_free(&v);
}

/* Digits: Llama-3 groups three, Qwen2 splits every digit (so no digit merge can apply). */
static void test_digits(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    vocab_merge(&v, vocab_find(&v, "1", 1), vocab_find(&v, "2", 1));
    vocab_merge(&v, vocab_find(&v, "12", 2), vocab_find(&v, "3", 1));
    vocab_merge(&v, vocab_find(&v, "4", 1), vocab_find(&v, "5", 1));
    static const char *const want_l[] = {"123", "45"};
    static const char *const want_q[] = {"1", "2", "3", "4", "5"};
    const char *pres[] = {"llama-bpe", "qwen2"};
    for (int k = 0; k < 2; k++) {
        gguf_opts o = default_opts;
        o.pre = pres[k];
        rt_gguf *g;
        rt_tokenizer *t;
        loupe_err err = {0};
        CHECK_MSG(load_vocab(&v, &o, &g, &t, &err) == LOUPE_OK, "%s", loupe_err_message(&err));
        if (t)
            check_split(t, &v, "12345", k ? want_q : want_l, k ? 5 : 2);
        rt_tokenizer_destroy(t);
        rt_gguf_close(g);
    }
    vocab_free(&v);
}

/* Naive BPE: repeatedly merge the leftmost pair of lowest rank (ranks looked up in a dense
 * table built from the merge list). */
static size_t naive_bpe(const vocab *v, const char *w, size_t n, int32_t *out)
{
    size_t nv = v->n;
    int32_t *rank = malloc(nv * nv * sizeof *rank);
    for (size_t i = 0; i < nv * nv; i++)
        rank[i] = INT32_MAX;
    for (size_t r = v->n_merges; r-- > 0;)
        rank[(size_t)v->merge_a[r] * nv + (size_t)v->merge_b[r]] = (int32_t)r;
    size_t m = n;
    for (size_t i = 0; i < n; i++)
        out[i] = vocab_find(v, w + i, 1);
    for (;;) {
        int32_t best = INT32_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            int32_t r = rank[(size_t)out[i] * nv + (size_t)out[i + 1]];
            if (r < best) {
                best = r;
                at = i;
            }
        }
        if (best == INT32_MAX)
            break;
        char buf[64];
        size_t la = v->raw_len[out[at]], lb = v->raw_len[out[at + 1]];
        memcpy(buf, v->raw[out[at]], la);
        memcpy(buf + la, v->raw[out[at + 1]], lb);
        out[at] = vocab_find(v, buf, la + lb);
        memmove(&out[at + 1], &out[at + 2], (m - at - 2) * sizeof out[0]);
        m--;
    }
    free(rank);
    return m;
}

static void test_bpe_random(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    /* A small alphabet of letters (one pre-token per word), merges between random existing
     * tokens, then shuffled ranks so rank order and creation order differ. */
    const char *alpha[] = {"a", "b", "c", "d", "\xC3\xA9"};
    int32_t pool[600];
    size_t np = 0;
    for (int i = 0; i < 4; i++)
        pool[np++] = vocab_find(&v, alpha[i], 1);
    vocab_merge(&v, vocab_find(&v, "\xC3", 1), vocab_find(&v, "\xA9", 1));
    pool[np++] = vocab_find(&v, "\xC3\xA9", 2);
    while (v.n_merges < 400) {
        int32_t a = pool[test_rng_u64(rng) % np], b = pool[test_rng_u64(rng) % np];
        if (v.raw_len[a] + v.raw_len[b] > 12)
            continue;
        char buf[32];
        memcpy(buf, v.raw[a], v.raw_len[a]);
        memcpy(buf + v.raw_len[a], v.raw[b], v.raw_len[b]);
        if (vocab_find(&v, buf, v.raw_len[a] + v.raw_len[b]) >= 0)
            continue;
        vocab_merge(&v, a, b);
        pool[np++] = (int32_t)v.n - 1;
    }
    for (size_t i = v.n_merges - 1; i > 1; i--) { /* keep "é" first */
        size_t j = 1 + test_rng_u64(rng) % i;
        char *t = v.merge[i];
        v.merge[i] = v.merge[j];
        v.merge[j] = t;
        int32_t ta = v.merge_a[i], tb = v.merge_b[i];
        v.merge_a[i] = v.merge_a[j];
        v.merge_b[i] = v.merge_b[j];
        v.merge_a[j] = ta;
        v.merge_b[j] = tb;
    }
    const char *pres[] = {"qwen2", "llama-bpe"};
    for (int k = 0; k < 2; k++) {
        gguf_opts o = default_opts;
        o.pre = pres[k];
        rt_gguf *g;
        rt_tokenizer *t;
        loupe_err err = {0};
        CHECK_MSG(load_vocab(&v, &o, &g, &t, &err) == LOUPE_OK, "%s", loupe_err_message(&err));
        for (int trial = 0; t && trial < 300; trial++) {
            char w[2048];
            size_t n = 0, target = trial < 290 ? 1 + test_rng_u64(rng) % 24
                                               : 500 + test_rng_u64(rng) % 1000;
            while (n < target) {
                const char *c = alpha[test_rng_u64(rng) % 5];
                memcpy(w + n, c, strlen(c));
                n += strlen(c);
            }
            /* sometimes a whole vocabulary token: ignore_merges must emit it whole */
            if (trial % 7 == 0) {
                int32_t id = pool[test_rng_u64(rng) % np];
                n = v.raw_len[id];
                memcpy(w, v.raw[id], n);
            }
            int32_t want[2048];
            size_t nw;
            int32_t whole = vocab_find(&v, w, n);
            if (k == 1 && whole >= 0) {
                want[0] = whole;
                nw = 1;
            } else {
                nw = naive_bpe(&v, w, n, want);
            }
            rt_ids ids;
            rt_ids_init(&ids);
            CHECK(rt_tokenize(t, w, n, &ids, &err) == LOUPE_OK);
            bool same = ids.n == nw && !memcmp(ids.ids, want, nw * sizeof want[0]);
            CHECK_MSG(same, "%s: BPE of a %zu-byte word differs from the naive reference (%zu vs "
                      "%zu ids)", pres[k], n, ids.n, nw);
            rt_ids_free(&ids);
        }
        rt_tokenizer_destroy(t);
        rt_gguf_close(g);
    }
    vocab_free(&v);
}

/* Random text: bytes, broken UTF-8, valid multi-byte characters, whitespace and NULs. */
static size_t random_text(test_rng *rng, char *s, size_t n)
{
    static const char *const pieces[] = {"\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xC3\xA9", "\n",
                                         "\r\n", "  ", "\t", "'s", "'LL", "123456", "<|eot_id|>",
                                         "\xE4\xB8\xAD\xE6\x96\x87", "\xC2\xA0", "word", " the",
                                         "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xC0\xAF", "\0"};
    size_t o = 0;
    while (o + 16 < n) {
        uint64_t r = test_rng_u64(rng) % 10;
        if (r < 3) {
            s[o++] = (char)(test_rng_u64(rng) & 0xFF);
        } else if (r < 5) {
            const char *p = pieces[test_rng_u64(rng) % (sizeof pieces / sizeof pieces[0])];
            size_t k = *p ? strlen(p) : 1;
            memcpy(s + o, p, k);
            o += k;
        } else if (r < 6) { /* a truncated multi-byte sequence */
            const char *p = pieces[test_rng_u64(rng) % 4];
            size_t k = 1 + test_rng_u64(rng) % (strlen(p) > 1 ? strlen(p) - 1 : 1);
            memcpy(s + o, p, k);
            o += k;
        } else {
            s[o++] = (char)('a' + test_rng_u64(rng) % 26);
            if (r == 9)
                s[o++] = ' ';
        }
    }
    return o;
}

static void test_round_trip(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    vocab_merge(&v, vocab_find(&v, "t", 1), vocab_find(&v, "h", 1));
    vocab_merge(&v, vocab_find(&v, "\xE2", 1), vocab_find(&v, "\x82", 1));
    vocab_merge(&v, vocab_find(&v, " ", 1), vocab_find(&v, "th", 2));
    vocab_merge(&v, vocab_find(&v, "\xF0", 1), vocab_find(&v, "\x9F", 1));
    vocab_merge(&v, vocab_find(&v, "\xF0\x9F", 2), vocab_find(&v, "\x98", 1));
    vocab_add_str(&v, "word");
    const char *pres[] = {"llama-bpe", "qwen2"};
    for (int k = 0; k < 2; k++) {
        gguf_opts o = default_opts;
        o.pre = pres[k];
        rt_gguf *g;
        rt_tokenizer *t;
        loupe_err err = {0};
        CHECK_MSG(load_vocab(&v, &o, &g, &t, &err) == LOUPE_OK, "%s", loupe_err_message(&err));
        if (!t)
            continue;
        char *buf = malloc(1 << 16);
        for (int trial = 0; trial < 40; trial++) {
            size_t n = random_text(rng, buf, 1 + test_rng_u64(rng) % (1 << 16));
            check_round_trip(t, buf, n, rng, pres[k]);
        }
        check_round_trip(t, "", 0, rng, "empty");
        check_round_trip(t, "\0\0\0", 3, rng, "NULs");

        /* Special-token text is plain text. */
        const char *s = "before <|eot_id|><|begin_of_text|> after";
        rt_ids ids;
        rt_ids_init(&ids);
        CHECK(rt_tokenize(t, s, strlen(s), &ids, &err) == LOUPE_OK);
        for (size_t i = 0; i < ids.n; i++)
            CHECK(!rt_tokenizer_is_special(t, ids.ids[i]));
        rt_ids_free(&ids);
        CHECK(rt_tokenizer_is_special(t, rt_tokenizer_find_special(t, "<|eot_id|>")));

        /* A very long run of one class must not exhaust the regex engine. */
        for (int c = 0; c < 4; c++) {
            size_t n = 1 << 20;
            memset(buf = realloc(buf, n), " a1!"[c], n);
            check_round_trip(t, buf, n, rng, "long run");
        }
        free(buf);
        rt_tokenizer_destroy(t);
        rt_gguf_close(g);
    }
    vocab_free(&v);
}

/* Detokenizing a token that ends inside a UTF-8 sequence holds it; a later one completes it. */
static void test_detok_streaming(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    vocab_merge(&v, vocab_find(&v, "a", 1), vocab_find(&v, "\xE2", 1));
    rt_gguf *g;
    rt_tokenizer *t;
    loupe_err err = {0};
    CHECK(load_vocab(&v, &default_opts, &g, &t, &err) == LOUPE_OK);
    if (t) {
        int32_t ids[] = {vocab_find(&v, "a\xE2", 2), vocab_find(&v, "\x82", 1),
                         vocab_find(&v, "\xAC", 1), vocab_find(&v, "\xF0", 1),
                         vocab_find(&v, "b", 1)};
        const char *want[] = {"a", "", "\xE2\x82\xAC", "", ("\xF0" "b")};
        rt_detok_state s;
        rt_detok_init(&s);
        for (int i = 0; i < 5; i++) {
            char out[16];
            size_t need, k = rt_detok_push(t, &s, ids[i], out, sizeof out, &need);
            CHECK_MSG(k == strlen(want[i]) && !memcmp(out, want[i], k), "detok step %d", i);
        }
        char out[8];
        CHECK(rt_detok_flush(&s, out, sizeof out) == 0);
        /* held bytes come out on flush */
        rt_detok_init(&s);
        size_t need;
        CHECK(rt_detok_push(t, &s, vocab_find(&v, "\xF0", 1), out, sizeof out, &need) == 0);
        CHECK(rt_detok_flush(&s, out, sizeof out) == 1 && (uint8_t)out[0] == 0xF0);
        /* too small a buffer: nothing consumed, need says how much */
        rt_detok_init(&s);
        int32_t sp = rt_tokenizer_find_special(t, "<|im_start|>");
        CHECK(rt_detok_push(t, &s, sp, out, 4, &need) == 0 && need == strlen("<|im_start|>"));
        char big[32];
        CHECK(rt_detok_push(t, &s, sp, big, sizeof big, &need) == need &&
              !memcmp(big, "<|im_start|>", need));
        CHECK(rt_detok_push(t, &s, -5, big, sizeof big, &need) == 0 && need == 0);
        size_t len;
        CHECK(rt_token_bytes(t, (int32_t)rt_tokenizer_n_vocab(t), &len) == NULL && len == 0);
    }
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    vocab_free(&v);
}

/* The documented split rule, re-implemented here: cutting there must not change any id. */
static bool is_split(const char *p, size_t len, size_t i)
{
    const uint8_t *u = (const uint8_t *)p;
    bool letter_l = i >= 1 && (((u[i - 1] | 0x20) >= 'a') && ((u[i - 1] | 0x20) <= 'z'));
    bool letter_r = i + 1 < len && (((u[i + 1] | 0x20) >= 'a') && ((u[i + 1] | 0x20) <= 'z'));
    return (i >= 1 && u[i - 1] == '\n' && u[i] > 0x20 && u[i] < 0x7F) ||
           (u[i] == ' ' && letter_l && letter_r);
}

static void test_parallel(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    vocab_merge(&v, vocab_find(&v, " ", 1), vocab_find(&v, "a", 1));
    vocab_merge(&v, vocab_find(&v, "\n", 1), vocab_find(&v, "\n", 1));
    vocab_merge(&v, vocab_find(&v, " ", 1), vocab_find(&v, "\n", 1));
    vocab_add_str(&v, "word");
    rt_gguf *g;
    rt_tokenizer *t;
    loupe_err err = {0};
    CHECK(load_vocab(&v, &default_opts, &g, &t, &err) == LOUPE_OK);
    if (t) {
        size_t n = 3u << 20;
        char *buf = malloc(n);
        n = random_text(rng, buf, n);
        rt_ids serial, par, pieces;
        rt_ids_init(&serial);
        rt_ids_init(&pieces);
        CHECK(rt_tokenize(t, buf, n, &serial, &err) == LOUPE_OK);
        int threads[] = {2, 3, 8};
        for (int k = 0; k < 3; k++) {
            rt_ids_init(&par);
            CHECK(rt_tokenize_parallel(t, buf, n, threads[k], &par, &err) == LOUPE_OK);
            CHECK_MSG(par.n == serial.n && !memcmp(par.ids, serial.ids, par.n * 4),
                      "parallel (%d threads) != serial", threads[k]);
            rt_ids_free(&par);
        }
        /* every documented split point, not only the few the parallel call picks */
        size_t start = 0, n_cuts = 0;
        for (size_t i = 1; i <= n; i++) {
            if (i == n || is_split(buf, n, i)) {
                CHECK(rt_tokenize(t, buf + start, i - start, &pieces, &err) == LOUPE_OK);
                start = i;
                n_cuts++;
            }
        }
        CHECK_MSG(pieces.n == serial.n && !memcmp(pieces.ids, serial.ids, serial.n * 4),
                  "tokenizing between %zu split points differs from the whole", n_cuts);
        CHECK(n_cuts > 1000);
        rt_ids_free(&serial);
        rt_ids_free(&pieces);
        free(buf);
    }
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    vocab_free(&v);
}

static void expect_load_error(const vocab *v, const gguf_opts *o, loupe_status want,
                              const char *needle)
{
    rt_gguf *g;
    rt_tokenizer *t;
    loupe_err err = {0};
    loupe_status st = load_vocab(v, o, &g, &t, &err);
    CHECK_MSG(st == want && t == NULL, "expected status %d, got %d (%s)", (int)want, (int)st,
              loupe_err_message(&err));
    CHECK_MSG(strstr(loupe_err_message(&err), needle) != NULL, "message '%s' lacks '%s'",
              loupe_err_message(&err), needle);
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
}

static void test_load_errors(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    vocab_merge(&v, vocab_find(&v, "a", 1), vocab_find(&v, "b", 1));
    gguf_opts o = default_opts;
    o.model = "llama";
    expect_load_error(&v, &o, LOUPE_ERR_UNSUPPORTED, "'llama' is not supported");
    o = default_opts;
    o.pre = "gpt-4o";
    expect_load_error(&v, &o, LOUPE_ERR_UNSUPPORTED, "'gpt-4o'");
    o.pre = NULL;
    expect_load_error(&v, &o, LOUPE_ERR_UNSUPPORTED, "tokenizer.ggml.pre");
    o = default_opts;
    o.bos = 100000;
    expect_load_error(&v, &o, LOUPE_ERR_FORMAT, "bos_token_id");
    o = default_opts;
    o.bad_type_at = 7;
    expect_load_error(&v, &o, LOUPE_ERR_FORMAT, "token type 9");
    o = default_opts;
    o.bad_merge = "a zz";
    expect_load_error(&v, &o, LOUPE_ERR_FORMAT, "not in the vocabulary");
    o.bad_merge = "ab";
    expect_load_error(&v, &o, LOUPE_ERR_FORMAT, "one space");
    o.bad_merge = "a  b";
    expect_load_error(&v, &o, LOUPE_ERR_FORMAT, "one space");
    o = default_opts;
    o.drop_byte = 0x41;
    expect_load_error(&v, &o, LOUPE_ERR_FORMAT, "byte 0x41");
    vocab_free(&v);
}

static void test_chat(test_rng *rng)
{
    vocab v;
    vocab_init(&v, rng);
    vocab_merge(&v, vocab_find(&v, "\n", 1), vocab_find(&v, "\n", 1));
    vocab_add_str(&v, "assistant");
    vocab_add_str(&v, "user");
    const char *sys = "You are loupe.", *q1 = "  What is <|eot_id|> here?\n", *a1 = "Plain text.";
    rt_chat_msg msgs[] = {{RT_ROLE_SYSTEM, sys, strlen(sys)},
                          {RT_ROLE_USER, q1, strlen(q1)},
                          {RT_ROLE_ASSISTANT, a1, strlen(a1)},
                          {RT_ROLE_USER, "\xC3\xA9t\xC3\xA9 \xE2\x80\x83", 9}};
    const char *want_llama3 =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are loupe.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is <|eot_id|> here?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nPlain text.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n\xC3\xA9t\xC3\xA9<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n";
    const char *want_chatml =
        "<|im_start|>system\nYou are loupe.<|im_end|>\n"
        "<|im_start|>user\n  What is <|eot_id|> here?\n<|im_end|>\n"
        "<|im_start|>assistant\nPlain text.<|im_end|>\n"
        "<|im_start|>user\n\xC3\xA9t\xC3\xA9 \xE2\x80\x83<|im_end|>\n"
        "<|im_start|>assistant\n";
    char *s = NULL;
    loupe_err err = {0};
    CHECK(rt_chat_render_text(RT_CHAT_LLAMA3, msgs, 4, true, &s, &err) == LOUPE_OK);
    CHECK_MSG(s && !strcmp(s, want_llama3), "llama3 text:\n%s", s ? s : "(null)");
    free(s);
    CHECK(rt_chat_render_text(RT_CHAT_CHATML, msgs, 4, true, &s, &err) == LOUPE_OK);
    CHECK_MSG(s && !strcmp(s, want_chatml), "chatml text:\n%s", s ? s : "(null)");
    free(s);
    CHECK(rt_chat_render_text(RT_CHAT_CHATML, msgs, 1, false, &s, &err) == LOUPE_OK);
    CHECK(s && !strcmp(s, "<|im_start|>system\nYou are loupe.<|im_end|>\n"));
    free(s);

    rt_chat_format f;
    CHECK(rt_chat_format_parse("llama3", &f) && f == RT_CHAT_LLAMA3);
    CHECK(rt_chat_format_parse("chatml", &f) && f == RT_CHAT_CHATML);
    CHECK(!rt_chat_format_parse("vicuna", &f));

    /* ids == tokenize-with-specials(text): split the text at the special strings (the message
     * holding "<|eot_id|>" is left out here, as that text is plain in the ids by design). */
    gguf_opts o = default_opts;
    o.chat_template = "{% for m in messages %}<|im_start|>{{ m.role }}...{% endfor %}";
    rt_gguf *g;
    rt_tokenizer *t;
    CHECK(load_vocab(&v, &o, &g, &t, &err) == LOUPE_OK);
    if (t) {
        CHECK(rt_chat_format_detect(g, t, &f, &err) == LOUPE_OK && f == RT_CHAT_CHATML);
        CHECK(rt_chat_format_detect(NULL, t, &f, &err) == LOUPE_OK && f == RT_CHAT_LLAMA3);
        CHECK(rt_tokenizer_is_eog(t, rt_tokenizer_find_special(t, "<|eot_id|>")));
        CHECK(rt_tokenizer_is_eog(t, rt_tokenizer_find_special(t, "<|im_end|>")));
        CHECK(rt_tokenizer_is_eog(t, rt_tokenizer_eos(t)));
        CHECK(!rt_tokenizer_is_eog(t, rt_tokenizer_bos(t)));
        CHECK(rt_tokenizer_eot(t) == rt_tokenizer_find_special(t, "<|eot_id|>"));
        rt_chat_msg ok[] = {msgs[0], msgs[2], msgs[3]};
        for (int k = 0; k < 2; k++) {
            rt_chat_format ff = k ? RT_CHAT_CHATML : RT_CHAT_LLAMA3;
            for (int gen = 0; gen < 2; gen++) {
                rt_ids a, b;
                rt_ids_init(&a);
                rt_ids_init(&b);
                CHECK(rt_chat_render(t, ff, ok, 3, gen, &a, &err) == LOUPE_OK);
                CHECK(rt_chat_render_text(ff, ok, 3, gen, &s, &err) == LOUPE_OK);
                const char *p = s;
                while (*p) {
                    const char *next = NULL;
                    size_t which = 0;
                    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
                        const char *q = strstr(p, specials[i]);
                        if (q && (!next || q < next)) {
                            next = q;
                            which = i;
                        }
                    }
                    size_t plain = next ? (size_t)(next - p) : strlen(p);
                    CHECK(rt_tokenize(t, p, plain, &b, &err) == LOUPE_OK);
                    p += plain;
                    if (next) {
                        rt_ids_push(&b, rt_tokenizer_find_special(t, specials[which]), &err);
                        p += strlen(specials[which]);
                    }
                }
                CHECK_MSG(a.n == b.n && !memcmp(a.ids, b.ids, a.n * 4),
                          "%s chat ids differ from tokenize-with-specials of its text",
                          rt_chat_format_name(ff));
                free(s);
                rt_ids_free(&a);
                rt_ids_free(&b);
            }
        }
        /* message text stays plain in the ids */
        rt_ids a;
        rt_ids_init(&a);
        CHECK(rt_chat_render(t, RT_CHAT_LLAMA3, msgs, 2, false, &a, &err) == LOUPE_OK);
        size_t n_eot = 0;
        for (size_t i = 0; i < a.n; i++)
            n_eot += a.ids[i] == rt_tokenizer_eot(t);
        CHECK(n_eot == 2);
        rt_ids_free(&a);
    }
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    vocab_free(&v);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    init_byte_cp();
    test_pretokenizer(&rng);
    test_digits(&rng);
    test_bpe_random(&rng);
    test_round_trip(&rng);
    test_detok_streaming(&rng);
    test_parallel(&rng);
    test_load_errors(&rng);
    test_chat(&rng);
    return test_summary("test_tokenizer");
}
