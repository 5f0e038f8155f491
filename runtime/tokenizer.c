/*
 * Byte-level BPE tokenizer (see rt_tokenizer.h): loading from GGUF metadata, the PCRE2
 * pre-tokenizer, BPE merging, serial and parallel tokenization, and streaming detokenization.
 *
 * Representation. Every token is kept as the raw bytes it stands for (the GPT-2 byte↔unicode
 * mapping is undone once at load time), so text is never converted to the mapped form while
 * tokenizing. Two hash maps drive the hot path:
 *   - text map: raw bytes → id, for the tokens text can produce (not control, user-defined or
 *     unused tokens), used for ignore_merges (a pre-token that is a whole token) and by nothing
 *     else;
 *   - pair map: (left id, right id) → (rank, merged id), one entry per merge rule.
 * BPE starts from the 256 byte tokens (all required at load) and repeatedly applies the
 * lowest-rank merge, leftmost first, exactly as Hugging Face's heap-based BPE does.
 *
 * Invalid UTF-8. The regex only ever sees maximal runs of valid UTF-8 (so PCRE2 runs with
 * PCRE2_NO_UTF_CHECK); every byte outside such runs is a pre-token of its own and becomes its
 * byte token. Hence every input round-trips byte for byte.
 *
 * Threads. The tokenizer is immutable after load. Everything a call mutates (PCRE2 match data,
 * BPE scratch, the cache of short pre-tokens' ids) lives in a per-call workspace, so concurrent
 * calls share nothing writable.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "runtime/runtime.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ==== Pre-tokenizer patterns ============================================================== */

/* Unicode White_Space, as Rust's regex crate (tiktoken) and Oniguruma (HF tokenizers) define \s;
 * spelled out because PCRE2's UCP \s also takes U+180E, and JavaScript's takes U+FEFF. */
#define WS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
           "\\x{202F}\\x{205F}\\x{3000}"

/* The contraction group is written with explicit case classes: (?i:'s) would also match the
 * long s "ſ" under Unicode case folding, which the reference implementations do not. */
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

/* Llama-3: numbers in groups of up to three digits. */
static const char re_llama3[] =
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

/* Qwen2: the same with single digits. */
static const char re_qwen2[] =
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

typedef enum { TOK_PRE_LLAMA3, TOK_PRE_QWEN2 } tok_pre;

/* ==== The tokenizer ======================================================================== */

typedef struct {
    uint32_t hash; /* upper bits of the key's hash, to skip most memcmp calls */
    int32_t id;    /* -1 = empty slot */
} tok_slot;

typedef struct {
    uint64_t key;   /* (left id << 32) | right id; UINT64_MAX = empty */
    uint32_t rank;  /* index of the merge rule: lower merges first */
    int32_t merged; /* id of left+right */
} pair_slot;

struct rt_tokenizer {
    uint32_t n_vocab;
    tok_pre pre;
    bool ignore_merges;
    char *bytes;         /* (n_bytes) raw bytes of every token, each followed by a NUL */
    uint32_t *offs;      /* (n_vocab + 1) token i is bytes[offs[i] .. offs[i+1] - 1), then a NUL */
    uint8_t *type;       /* (n_vocab) RT_TOKEN_* */
    tok_slot *text_map;  /* (text_mask + 1) raw bytes → id */
    uint32_t text_mask;
    pair_slot *pairs;    /* (pair_mask + 1) */
    uint32_t pair_mask;
    int32_t byte_id[256];
    int32_t bos, eos, eot;
    int32_t eog[8];      /* (n_eog) */
    int n_eog;
    pcre2_code *re;
    bool jit;            /* re was JIT-compiled: use pcre2_jit_match */
};

/* ==== GPT-2 byte↔unicode mapping =========================================================== */

/* Bytes that are printable Latin-1 map to themselves; the other 68 map, in order, to U+0100.. */
static bool byte_maps_to_self(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

/* Code point → byte, or -1 when the code point is not in the mapping. */
static int codepoint_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_maps_to_self(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68)
        return -1;
    unsigned k = cp - 0x100;
    for (unsigned b = 0; b < 256; b++)
        if (!byte_maps_to_self(b) && k-- == 0)
            return (int)b;
    return -1;
}

/* ==== UTF-8 ================================================================================ */

/* Length (1..4) of the valid UTF-8 sequence at p (n > 0 bytes available), 0 if invalid:
 * overlongs, surrogates, code points past U+10FFFF and truncated sequences are invalid. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3)
            return 0;
        uint8_t lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c < 0xF5) {
        if (n < 4)
            return 0;
        uint8_t lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 ? 4
                                                                                          : 0;
    }
    return 0;
}

/* Length of the maximal valid UTF-8 prefix of p[0..n). */
static size_t utf8_valid_prefix(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        size_t k = utf8_len(p + i, n - i);
        if (!k)
            break;
        i += k;
    }
    return i;
}

/* Decodes the code point at p (a valid sequence of length k). */
static uint32_t utf8_decode(const uint8_t *p, size_t k)
{
    switch (k) {
    case 1: return p[0];
    case 2: return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    case 3: return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    default:
        return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
               (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
    }
}

/* ==== Hashing and the two maps ============================================================= */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    return x;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001B3ull * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    }
    return mix64(h);
}

static uint32_t table_size_for(uint64_t n)
{
    uint64_t cap = 16;
    while (cap < n + n / 2 + 1)
        cap <<= 1;
    return (uint32_t)cap;
}

/* Byte length of token id (its trailing NUL excluded). */
static inline size_t tok_len(const rt_tokenizer *t, int32_t id)
{
    return t->offs[id + 1] - t->offs[id] - 1;
}

static int32_t text_map_find_h(const rt_tokenizer *t, const uint8_t *p, size_t n, uint64_t h)
{
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & t->text_mask;; i = (i + 1) & t->text_mask) {
        const tok_slot *s = &t->text_map[i];
        if (s->id < 0)
            return -1;
        if (s->hash == tag) {
            if (tok_len(t, s->id) == n && !memcmp(t->bytes + t->offs[s->id], p, n))
                return s->id;
        }
    }
}

static int32_t text_map_find(const rt_tokenizer *t, const uint8_t *p, size_t n)
{
    return text_map_find_h(t, p, n, hash_bytes(p, n));
}

/* Inserts token id under its bytes unless those bytes are already present (first id wins). */
static void text_map_insert(rt_tokenizer *t, int32_t id)
{
    const uint8_t *p = (const uint8_t *)t->bytes + t->offs[id];
    size_t n = tok_len(t, id);
    uint64_t h = hash_bytes(p, n);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & t->text_mask;; i = (i + 1) & t->text_mask) {
        tok_slot *s = &t->text_map[i];
        if (s->id < 0) {
            s->id = id;
            s->hash = tag;
            return;
        }
        if (s->hash == tag) {
            if (tok_len(t, s->id) == n && !memcmp(t->bytes + t->offs[s->id], p, n))
                return;
        }
    }
}

static const pair_slot *pair_find(const rt_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)mix64(key) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        const pair_slot *s = &t->pairs[i];
        if (s->key == key)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
    }
}

/* Adds a merge rule; a pair seen before keeps its earlier (lower) rank. */
static void pair_insert(rt_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t merged)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)mix64(key) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        pair_slot *s = &t->pairs[i];
        if (s->key == key)
            return;
        if (s->key == UINT64_MAX) {
            s->key = key;
            s->rank = rank;
            s->merged = merged;
            return;
        }
    }
}

/* ==== Loading ============================================================================== */

void rt_tokenizer_destroy(rt_tokenizer *t)
{
    if (!t)
        return;
    free(t->bytes);
    free(t->offs);
    free(t->type);
    free(t->text_map);
    free(t->pairs);
    pcre2_code_free(t->re);
    free(t);
}

/* Copies a GGUF string into a NUL-terminated buffer (for messages and comparisons). */
static void str_copy(char *dst, size_t cap, rt_gguf_str s)
{
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

static bool str_eq(rt_gguf_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && !memcmp(s.ptr, lit, n);
}

/* Decodes a byte-level token string into raw bytes at dst (room for s.len bytes: the mapping
 * never lengthens text). Returns the byte count, or -1 if s is not valid byte-level text. */
static int64_t bytelevel_decode(rt_gguf_str s, uint8_t *dst)
{
    const uint8_t *p = (const uint8_t *)s.ptr;
    size_t n = (size_t)s.len, i = 0, o = 0;
    while (i < n) {
        size_t k = utf8_len(p + i, n - i);
        if (!k)
            return -1;
        uint32_t cp = utf8_decode(p + i, k);
        int b = cp < 0x80 ? (byte_maps_to_self(cp) ? (int)cp : -1) : codepoint_to_byte(cp);
        if (b < 0)
            return -1;
        dst[o++] = (uint8_t)b;
        i += k;
    }
    return (int64_t)o;
}

/* Reads an optional token-id key into *out (-1 when absent); fails if present but not a valid
 * id. */
static loupe_status load_opt_id(const rt_gguf *g, const char *key, uint32_t n_vocab, int32_t *out,
                                loupe_err *err)
{
    *out = -1;
    if (rt_gguf_find_key(g, key) < 0)
        return LOUPE_OK;
    int64_t v;
    loupe_status st = rt_gguf_get_i64(g, key, &v, err);
    if (st)
        return st;
    if (v < 0 || v >= (int64_t)n_vocab)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: %s is %lld, outside the vocabulary of %u",
                          rt_gguf_path(g), key, (long long)v, n_vocab);
    *out = (int32_t)v;
    return LOUPE_OK;
}

static loupe_status load_pre(const rt_gguf *g, rt_tokenizer *t, loupe_err *err)
{
    rt_gguf_str model, pre;
    char buf[64];
    loupe_status st = rt_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (st)
        return st;
    if (!str_eq(model, "gpt2")) {
        str_copy(buf, sizeof buf, model);
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: tokenizer model '%s' is not supported (loupe reads byte-level BPE, "
                          "tokenizer.ggml.model = gpt2)", rt_gguf_path(g), buf);
    }
    if (rt_gguf_find_key(g, "tokenizer.ggml.pre") < 0)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: tokenizer.ggml.pre is missing; loupe needs 'llama-bpe' or 'qwen2'",
                          rt_gguf_path(g));
    st = rt_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err);
    if (st)
        return st;
    if (str_eq(pre, "llama-bpe") || str_eq(pre, "llama3") || str_eq(pre, "llama-v3")) {
        t->pre = TOK_PRE_LLAMA3;
        t->ignore_merges = true;
    } else if (str_eq(pre, "qwen2")) {
        t->pre = TOK_PRE_QWEN2;
        t->ignore_merges = false;
    } else {
        str_copy(buf, sizeof buf, pre);
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: pre-tokenizer '%s' is not supported (loupe knows 'llama-bpe' and "
                          "'qwen2')", rt_gguf_path(g), buf);
    }
    int ec;
    PCRE2_SIZE eoff;
    const char *pat = t->pre == TOK_PRE_LLAMA3 ? re_llama3 : re_qwen2;
    t->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec,
                          &eoff, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return loupe_fail(err, LOUPE_ERR_INTERNAL,
                          "pre-tokenizer regex does not compile at offset %zu: %s", (size_t)eoff,
                          (const char *)msg);
    }
    /* Without JIT (a platform PCRE2 lacks it for) the interpreter gives the same matches. */
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    return LOUPE_OK;
}

/* Reads tokens and types into the raw-bytes arena. */
static loupe_status load_tokens(const rt_gguf *g, rt_tokenizer *t, loupe_err *err)
{
    const char *path = rt_gguf_path(g);
    int64_t kv = rt_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (kv < 0)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing", path);
    if (rt_gguf_kv_type(g, kv) != RT_GGUF_ARRAY || rt_gguf_arr_type(g, kv) != RT_GGUF_STRING)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tokenizer.ggml.tokens is not an array of strings", path);
    uint64_t n = rt_gguf_arr_len(g, kv);
    if (n < 256 || n > INT32_MAX / 2)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tokenizer.ggml.tokens has %llu entries (expected 256 to 2^30)", path,
                          (unsigned long long)n);
    t->n_vocab = (uint32_t)n;

    int64_t tkv = rt_gguf_find_key(g, "tokenizer.ggml.token_type");
    if (tkv >= 0 && (rt_gguf_kv_type(g, tkv) != RT_GGUF_ARRAY || rt_gguf_arr_len(g, tkv) != n))
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tokenizer.ggml.token_type is not an array of %llu token types",
                          path, (unsigned long long)n);

    /* Pass 1: sizes (the mapping never lengthens a token, so the UTF-8 length bounds it). */
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        rt_gguf_str s;
        loupe_status st = rt_gguf_arr_str(g, kv, i, &s, err);
        if (st)
            return st;
        total += s.len + 1;
    }
    if (total > UINT32_MAX)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: the vocabulary's text is over 4 GiB", path);
    t->bytes = malloc(total ? total : 1);
    t->offs = malloc((n + 1) * sizeof *t->offs);
    t->type = malloc(n);
    if (!t->bytes || !t->offs || !t->type)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory for a vocabulary of %llu tokens",
                          path, (unsigned long long)n);

    uint32_t o = 0;
    for (uint64_t i = 0; i < n; i++) {
        rt_gguf_str s;
        loupe_status st = rt_gguf_arr_str(g, kv, i, &s, err);
        if (st)
            return st;
        int64_t ty = RT_TOKEN_NORMAL;
        if (tkv >= 0) {
            st = rt_gguf_arr_i64(g, tkv, i, &ty, err);
            if (st)
                return st;
            if (ty < 0 || ty > RT_TOKEN_BYTE)
                return loupe_fail(err, LOUPE_ERR_FORMAT,
                                  "%s: token %llu has unknown token type %lld", path,
                                  (unsigned long long)i, (long long)ty);
        }
        t->type[i] = (uint8_t)ty;
        t->offs[i] = o;
        int64_t k = -1;
        /* Control and user-defined tokens hold their text as is; the others are byte-level
         * encoded. A normal token that is not valid byte-level text is kept as is (it can then
         * only be reached through a merge that names it). */
        if (ty != RT_TOKEN_CONTROL && ty != RT_TOKEN_USER_DEFINED)
            k = bytelevel_decode(s, (uint8_t *)t->bytes + o);
        if (k < 0) {
            memcpy(t->bytes + o, s.ptr, (size_t)s.len);
            k = (int64_t)s.len;
        }
        o += (uint32_t)k;
        t->bytes[o++] = '\0';
    }
    t->offs[n] = o;
    return LOUPE_OK;
}

/* The text map holds the tokens text can produce; control, user-defined and unused tokens are
 * reached only by id. */
static loupe_status build_text_map(const rt_gguf *g, rt_tokenizer *t, loupe_err *err)
{
    t->text_mask = table_size_for(t->n_vocab) - 1;
    t->text_map = malloc(((size_t)t->text_mask + 1) * sizeof *t->text_map);
    if (!t->text_map)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for the token map");
    for (uint32_t i = 0; i <= t->text_mask; i++)
        t->text_map[i].id = -1;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->type[i];
        if (ty != RT_TOKEN_CONTROL && ty != RT_TOKEN_USER_DEFINED && ty != RT_TOKEN_UNUSED &&
            tok_len(t, (int32_t)i) > 0)
            text_map_insert(t, (int32_t)i);
    }
    for (unsigned b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        t->byte_id[b] = text_map_find(t, &c, 1);
        if (t->byte_id[b] < 0)
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: the vocabulary has no token for byte 0x%02X (byte-level BPE "
                              "needs all 256)", rt_gguf_path(g), b);
    }
    return LOUPE_OK;
}

static loupe_status load_merges(const rt_gguf *g, rt_tokenizer *t, loupe_err *err)
{
    const char *path = rt_gguf_path(g);
    int64_t kv = rt_gguf_find_key(g, "tokenizer.ggml.merges");
    if (kv < 0)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing", path);
    if (rt_gguf_kv_type(g, kv) != RT_GGUF_ARRAY || rt_gguf_arr_type(g, kv) != RT_GGUF_STRING)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: tokenizer.ggml.merges is not an array of strings", path);
    uint64_t n = rt_gguf_arr_len(g, kv);
    if (n > UINT32_MAX / 2)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: tokenizer.ggml.merges has %llu entries",
                          path, (unsigned long long)n);
    t->pair_mask = table_size_for(n) - 1;
    t->pairs = malloc(((size_t)t->pair_mask + 1) * sizeof *t->pairs);
    if (!t->pairs)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for %llu merges",
                          (unsigned long long)n);
    for (uint32_t i = 0; i <= t->pair_mask; i++)
        t->pairs[i].key = UINT64_MAX;

    loupe_status st = LOUPE_OK;
    uint8_t *buf = NULL; /* (cap) left bytes, then right bytes */
    size_t cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        rt_gguf_str s;
        st = rt_gguf_arr_str(g, kv, i, &s, err);
        if (st)
            goto done;
        if (s.len + 1 > cap) {
            cap = (size_t)s.len * 2 + 64;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory reading merges");
                goto done;
            }
            buf = nb;
        }
        const char *sp = memchr(s.ptr, ' ', (size_t)s.len);
        char shown[80];
        str_copy(shown, sizeof shown, s);
        if (!sp || sp == s.ptr || sp == s.ptr + s.len - 1 ||
            memchr(sp + 1, ' ', (size_t)(s.ptr + s.len - sp - 1))) {
            st = loupe_fail(err, LOUPE_ERR_FORMAT,
                            "%s: merge %llu ('%s') is not two tokens separated by one space",
                            path, (unsigned long long)i, shown);
            goto done;
        }
        rt_gguf_str left = {s.ptr, (uint64_t)(sp - s.ptr)};
        rt_gguf_str right = {sp + 1, s.len - left.len - 1};
        int64_t nl = bytelevel_decode(left, buf);
        int64_t nr = nl < 0 ? -1 : bytelevel_decode(right, buf + nl);
        int32_t a = -1, b = -1, m = -1;
        if (nl >= 0 && nr >= 0) {
            a = text_map_find(t, buf, (size_t)nl);
            b = text_map_find(t, buf + nl, (size_t)nr);
            m = text_map_find(t, buf, (size_t)(nl + nr));
        }
        if (a < 0 || b < 0 || m < 0) {
            st = loupe_fail(err, LOUPE_ERR_FORMAT,
                            "%s: merge %llu ('%s') names a token that is not in the vocabulary",
                            path, (unsigned long long)i, shown);
            goto done;
        }
        pair_insert(t, a, b, (uint32_t)i, m);
    }
done:
    free(buf);
    return st;
}

/* Finds a control/user-defined token by its exact text. */
static int32_t find_special_n(const rt_tokenizer *t, const char *text, size_t n)
{
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if ((t->type[i] == RT_TOKEN_CONTROL || t->type[i] == RT_TOKEN_USER_DEFINED) &&
            tok_len(t, (int32_t)i) == n && !memcmp(t->bytes + t->offs[i], text, n))
            return (int32_t)i;
    return -1;
}

static void add_eog(rt_tokenizer *t, int32_t id)
{
    if (id < 0)
        return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return;
    if (t->n_eog < (int)(sizeof t->eog / sizeof t->eog[0]))
        t->eog[t->n_eog++] = id;
}

static loupe_status load_specials(const rt_gguf *g, rt_tokenizer *t, loupe_err *err)
{
    loupe_status st = load_opt_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err);
    if (!st)
        st = load_opt_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err);
    if (!st)
        st = load_opt_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot, err);
    if (st)
        return st;
    static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end_of_text|>",
                                            "<|endoftext|>", "<|eom_id|>"};
    if (t->eot < 0)
        t->eot = rt_tokenizer_find_special(t, "<|eot_id|>");
    if (t->eot < 0)
        t->eot = rt_tokenizer_find_special(t, "<|im_end|>");
    add_eog(t, t->eos);
    add_eog(t, t->eot);
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++)
        add_eog(t, rt_tokenizer_find_special(t, eog_texts[i]));
    return LOUPE_OK;
}

loupe_status rt_tokenizer_load(const rt_gguf *g, rt_tokenizer **out, loupe_err *err)
{
    *out = NULL;
    rt_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for a tokenizer");
    t->bos = t->eos = t->eot = -1;
    loupe_status st = load_pre(g, t, err);
    if (!st)
        st = load_tokens(g, t, err);
    if (!st)
        st = build_text_map(g, t, err);
    if (!st)
        st = load_merges(g, t, err);
    if (!st)
        st = load_specials(g, t, err);
    if (st) {
        rt_tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return LOUPE_OK;
}

/* ==== Accessors ============================================================================ */

uint32_t rt_tokenizer_n_vocab(const rt_tokenizer *t) { return t->n_vocab; }
int32_t rt_tokenizer_bos(const rt_tokenizer *t) { return t->bos; }
int32_t rt_tokenizer_eos(const rt_tokenizer *t) { return t->eos; }
int32_t rt_tokenizer_eot(const rt_tokenizer *t) { return t->eot; }

const char *rt_tokenizer_pre_name(const rt_tokenizer *t)
{
    return t->pre == TOK_PRE_LLAMA3 ? "llama-bpe" : "qwen2";
}

int32_t rt_tokenizer_find_special(const rt_tokenizer *t, const char *text)
{
    return find_special_n(t, text, strlen(text));
}

bool rt_tokenizer_is_eog(const rt_tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

bool rt_tokenizer_is_special(const rt_tokenizer *t, int32_t id)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return false;
    return t->type[id] == RT_TOKEN_CONTROL || t->type[id] == RT_TOKEN_USER_DEFINED;
}

const char *rt_token_bytes(const rt_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = tok_len(t, id);
    return t->bytes + t->offs[id];
}

/* ==== BPE ================================================================================== */

typedef struct {
    int32_t id;   /* -1 once merged into its left neighbour */
    int32_t prev; /* index of the previous live symbol, -1 at the start */
    int32_t next; /* index of the next live symbol, -1 at the end */
} bpe_sym;

typedef struct {
    uint32_t rank;
    uint32_t left; /* index of the left symbol (its first byte's position: the tie-break) */
    int32_t a, b;  /* ids the merge expects at left and left's next: stale entries fail this */
} bpe_cand;

/* A direct-mapped cache of short pre-tokens' ids: text repeats its words, and a hit costs one
 * probe into a table that stays in the CPU cache instead of the big maps' scattered reads. */
enum { CACHE_KEY = 22, CACHE_IDS = 8, CACHE_SLOTS = 4096, CACHE_MIN_TEXT = 16 * 1024 };

typedef struct {
    uint64_t hash;
    uint8_t len;             /* key bytes; 0 = empty (keys are >= 2 bytes) */
    uint8_t n;               /* ids */
    char key[CACHE_KEY];
    int32_t ids[CACHE_IDS];
} tok_cache_ent;

/* Per-call scratch (see the file comment on threads). */
typedef struct {
    pcre2_match_data *md;
    bpe_sym *sym;          /* (cap) */
    bpe_cand *heap;        /* (3 * cap) initial pairs plus two per merge */
    size_t cap;
    tok_cache_ent *cache;  /* (CACHE_SLOTS), NULL for short texts */
} tok_work;

static void cache_put(tok_work *w, uint64_t h, const uint8_t *p, size_t n, const int32_t *ids,
                      size_t n_ids)
{
    if (!w->cache || n > CACHE_KEY || n_ids > CACHE_IDS)
        return;
    tok_cache_ent *e = &w->cache[h & (CACHE_SLOTS - 1)];
    e->hash = h;
    e->len = (uint8_t)n;
    e->n = (uint8_t)n_ids;
    memcpy(e->key, p, n);
    memcpy(e->ids, ids, n_ids * sizeof *ids);
}

static bool cand_less(const bpe_cand *x, const bpe_cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n)
{
    bpe_cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c]))
            c++;
        if (!cand_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static void push_cand(const rt_tokenizer *t, tok_work *w, size_t *nh, int32_t left)
{
    int32_t right = w->sym[left].next;
    if (right < 0)
        return;
    const pair_slot *ps = pair_find(t, w->sym[left].id, w->sym[right].id);
    if (ps) {
        bpe_cand c = {ps->rank, (uint32_t)left, w->sym[left].id, w->sym[right].id};
        heap_push(w->heap, nh, c);
    }
}

static loupe_status work_grow(tok_work *w, size_t n, loupe_err *err)
{
    if (n <= w->cap)
        return LOUPE_OK;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < n)
        cap *= 2;
    if (cap > INT32_MAX / 4)
        return loupe_fail(err, LOUPE_ERR_TOO_LONG, "a pre-token of %zu bytes is too long", n);
    bpe_sym *s = realloc(w->sym, cap * sizeof *s);
    if (s)
        w->sym = s;
    bpe_cand *h = realloc(w->heap, 3 * cap * sizeof *h);
    if (h)
        w->heap = h;
    if (!s || !h)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory tokenizing a %zu-byte word", n);
    w->cap = cap;
    return LOUPE_OK;
}

/* Appends the ids of one pre-token (n >= 1 bytes). */
static loupe_status encode_word(const rt_tokenizer *t, tok_work *w, const uint8_t *p, size_t n,
                                rt_ids *out, loupe_err *err)
{
    if (n == 1)
        return rt_ids_push(out, t->byte_id[p[0]], err);
    uint64_t h = hash_bytes(p, n);
    loupe_status st;
    if (w->cache && n <= CACHE_KEY) {
        const tok_cache_ent *e = &w->cache[h & (CACHE_SLOTS - 1)];
        if (e->hash == h && e->len == n && !memcmp(e->key, p, n)) {
            for (size_t i = 0; i < e->n; i++)
                if ((st = rt_ids_push(out, e->ids[i], err)))
                    return st;
            return LOUPE_OK;
        }
    }
    if (t->ignore_merges) {
        int32_t id = text_map_find_h(t, p, n, h);
        if (id >= 0) {
            cache_put(w, h, p, n, &id, 1);
            return rt_ids_push(out, id, err);
        }
    }
    st = work_grow(w, n, err);
    if (st)
        return st;
    bpe_sym *sym = w->sym;
    for (size_t i = 0; i < n; i++) {
        sym[i].id = t->byte_id[p[i]];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++)
        push_cand(t, w, &nh, (int32_t)i);
    while (nh) {
        bpe_cand c = heap_pop(w->heap, &nh);
        bpe_sym *l = &sym[c.left];
        if (l->id != c.a || l->next < 0 || sym[l->next].id != c.b)
            continue; /* stale: one side has merged since */
        const pair_slot *ps = pair_find(t, c.a, c.b);
        bpe_sym *r = &sym[l->next];
        l->id = ps->merged;
        l->next = r->next;
        if (r->next >= 0)
            sym[r->next].prev = (int32_t)c.left;
        r->id = -1;
        if (l->prev >= 0)
            push_cand(t, w, &nh, l->prev);
        push_cand(t, w, &nh, (int32_t)c.left);
    }
    int32_t res[CACHE_IDS];
    size_t n_res = 0;
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        if (n_res < CACHE_IDS)
            res[n_res] = sym[i].id;
        n_res++;
        st = rt_ids_push(out, sym[i].id, err);
        if (st)
            return st;
    }
    cache_put(w, h, p, n, res, n_res);
    return LOUPE_OK;
}

/* ==== Pre-tokenization and the tokenize loop ================================================ */

static int regex_match(const rt_tokenizer *t, tok_work *w, const uint8_t *p, size_t n,
                       size_t start)
{
    int rc = PCRE2_ERROR_JIT_STACKLIMIT;
    if (t->jit)
        rc = pcre2_jit_match(t->re, p, n, start, PCRE2_NO_UTF_CHECK, w->md, NULL);
    /* The interpreter keeps its backtracking state on the heap, so it succeeds where the JIT's
     * fixed stack runs out. */
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(t->re, p, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, w->md, NULL);
    return rc;
}

/* Pre-tokenizes and encodes one run of valid UTF-8. The pattern's alternatives cover every
 * character, but gaps between matches would be kept as pre-tokens too ("Isolated" splitting). */
static loupe_status encode_run(const rt_tokenizer *t, tok_work *w, const uint8_t *p, size_t n,
                               rt_ids *out, loupe_err *err)
{
    size_t pos = 0;
    loupe_status st = LOUPE_OK;
    while (pos < n && !st) {
        int rc = regex_match(t, w, p, n, pos);
        if (rc == PCRE2_ERROR_NOMATCH)
            return encode_word(t, w, p + pos, n - pos, out, err);
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return loupe_fail(err, LOUPE_ERR_INTERNAL, "pre-tokenizer regex failed: %s",
                              (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t s = ov[0], e = ov[1];
        if (s > pos)
            st = encode_word(t, w, p + pos, s - pos, out, err);
        if (e == s) /* an empty match cannot happen with these patterns; step one character */
            e = s + utf8_len(p + s, n - s);
        if (!st)
            st = encode_word(t, w, p + s, e - s, out, err);
        pos = e;
    }
    return st;
}

loupe_status rt_tokenize(const rt_tokenizer *t, const char *text, size_t len, rt_ids *out,
                         loupe_err *err)
{
    tok_work w = {0};
    w.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (len >= CACHE_MIN_TEXT) /* without it (no memory) only speed is lost */
        w.cache = calloc(CACHE_SLOTS, sizeof *w.cache);
    if (!w.md) {
        free(w.cache);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for regex match data");
    }
    const uint8_t *p = (const uint8_t *)text;
    /* Roughly one id per 4 bytes of text; grow geometrically so that many small calls appending
     * to one array stay linear. */
    size_t want = out->n + len / 4 + 16;
    loupe_status st = rt_ids_reserve(out, want > out->cap && want < 2 * out->cap ? 2 * out->cap
                                                                                  : want, err);
    size_t i = 0;
    while (i < len && !st) {
        size_t v = utf8_valid_prefix(p + i, len - i);
        if (v)
            st = encode_run(t, &w, p + i, v, out, err);
        i += v;
        if (i < len && !st) /* p[i] starts no valid sequence: its own pre-token */
            st = rt_ids_push(out, t->byte_id[p[i++]], err);
    }
    pcre2_match_data_free(w.md);
    free(w.sym);
    free(w.heap);
    free(w.cache);
    return st;
}

/* ==== Parallel tokenization ================================================================ */

static bool ascii_letter(uint8_t c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

/* First position in [from, to) (from >= 1) where both pre-tokenizers always split, whatever
 * comes before or after; `to` if none. Two kinds qualify (argued for both patterns):
 *   - after '\n', before a printable non-space ASCII character X: no alternative matches across
 *     a newline into a non-space character (letters, digits and contractions exclude '\n'; the
 *     punctuation alternative ends with [\r\n]*; the whitespace ones stop at X), and a match
 *     ending at the '\n' is found by `\s*[\r\n]+` before the lookahead alternative could look
 *     at X, so cutting the text there changes no match;
 *   - at a space between two ASCII letters: the letter run ends at the space and " b..." starts
 *     the next pre-token, with no lookahead involved. */
static size_t find_split(const uint8_t *p, size_t len, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (p[i - 1] == '\n' && p[i] > 0x20 && p[i] < 0x7F)
            return i;
        if (p[i] == ' ' && i + 1 < len && ascii_letter(p[i - 1]) && ascii_letter(p[i + 1]))
            return i;
    }
    return to;
}

loupe_status rt_tokenize_parallel(const rt_tokenizer *t, const char *text, size_t len,
                                  int n_threads, rt_ids *out, loupe_err *err)
{
    enum { MIN_CHUNK = 256 * 1024 };
    int nt = n_threads;
#ifdef _OPENMP
    if (nt <= 0)
        nt = omp_get_max_threads();
#else
    nt = 1;
#endif
    if (nt <= 1 || len < 2 * (size_t)MIN_CHUNK)
        return rt_tokenize(t, text, len, out, err);

    /* A few chunks per thread even out fast and slow stretches of text. */
    size_t n_want = (size_t)nt * 4;
    if (n_want > len / MIN_CHUNK)
        n_want = len / MIN_CHUNK;
    size_t *cut = malloc((n_want + 1) * sizeof *cut);   /* (n_chunks + 1) chunk starts, then len */
    rt_ids *parts = calloc(n_want, sizeof *parts);      /* (n_chunks) */
    loupe_status *sts = calloc(n_want, sizeof *sts);    /* (n_chunks) */
    loupe_err *errs = calloc(n_want, sizeof *errs);     /* (n_chunks) */
    loupe_status st = LOUPE_OK;
    if (!cut || !parts || !sts || !errs) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory splitting %zu bytes of text", len);
        goto done;
    }
    const uint8_t *p = (const uint8_t *)text;
    size_t n_chunks = 0;
    cut[n_chunks++] = 0;
    for (size_t k = 1; k < n_want; k++) {
        size_t from = k * (len / n_want), to = from + len / n_want;
        if (from <= cut[n_chunks - 1])
            from = cut[n_chunks - 1] + 1;
        if (to > len)
            to = len;
        size_t c = from < to ? find_split(p, len, from, to) : to;
        if (c < to)
            cut[n_chunks++] = c;
    }
    cut[n_chunks] = len;

    int nthr = nt < (int)n_chunks ? nt : (int)n_chunks;
    long nc = (long)n_chunks;
#pragma omp parallel for num_threads(nthr) schedule(dynamic, 1)
    for (long c = 0; c < nc; c++) {
        rt_ids_init(&parts[c]);
        sts[c] = rt_tokenize(t, text + cut[c], cut[c + 1] - cut[c], &parts[c], &errs[c]);
    }
    size_t total = out->n;
    for (size_t c = 0; c < n_chunks; c++) {
        if (sts[c] && !st) {
            st = sts[c];
            if (err)
                *err = errs[c];
        }
        total += parts[c].n;
    }
    if (!st)
        st = rt_ids_reserve(out, total, err);
    for (size_t c = 0; c < n_chunks && !st; c++) {
        memcpy(out->ids + out->n, parts[c].ids, parts[c].n * sizeof *out->ids);
        out->n += parts[c].n;
    }
    for (size_t c = 0; c < n_chunks; c++)
        rt_ids_free(&parts[c]);
done:
    free(cut);
    free(parts);
    free(sts);
    free(errs);
    return st;
}

/* ==== Streaming detokenization ============================================================= */

/* How many trailing bytes of p[0..n) (n <= 3 looked at) start a UTF-8 sequence that is valid
 * so far but incomplete: those must wait for the next token. 0 when the end is complete or the
 * tail is already invalid (then it is emitted as is). */
static size_t utf8_incomplete_tail(const uint8_t *p, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t c = p[n - k];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: the lead is further back */
        size_t want = c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3
                                            : c >= 0xF0 && c < 0xF5 ? 4 : 0;
        if (want <= k)
            return 0;
        if (k >= 2) {
            uint8_t c1 = p[n - k + 1];
            uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
            uint8_t hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            if (c1 < lo || c1 > hi)
                return 0;
        }
        return k;
    }
    return 0;
}

void rt_detok_init(rt_detok_state *s)
{
    memset(s, 0, sizeof *s);
}

size_t rt_detok_push(const rt_tokenizer *t, rt_detok_state *s, int32_t id, char *out, size_t cap,
                     size_t *need)
{
    size_t n;
    const char *b = rt_token_bytes(t, id, &n);
    if (!b) {
        if (need)
            *need = 0;
        return 0;
    }
    size_t total = s->n_pending + n;
    uint8_t tail[3]; /* the last min(3, total) bytes of pending + token */
    size_t m = total < 3 ? total : 3;
    for (size_t i = 0; i < m; i++) {
        size_t j = total - m + i;
        tail[i] = (uint8_t)(j < s->n_pending ? s->pending[j] : b[j - s->n_pending]);
    }
    size_t held = utf8_incomplete_tail(tail, m);
    size_t emit = total - held;
    if (need)
        *need = emit;
    if (emit > cap)
        return 0;
    char keep[8];
    for (size_t i = 0; i < held; i++) {
        size_t j = emit + i;
        keep[i] = j < s->n_pending ? s->pending[j] : b[j - s->n_pending];
    }
    size_t from_pending = s->n_pending < emit ? s->n_pending : emit;
    memcpy(out, s->pending, from_pending);
    if (emit > from_pending)
        memcpy(out + from_pending, b, emit - from_pending);
    memcpy(s->pending, keep, held);
    s->n_pending = held;
    return emit;
}

size_t rt_detok_flush(rt_detok_state *s, char *out, size_t cap)
{
    size_t n = s->n_pending;
    if (n > cap)
        return 0;
    memcpy(out, s->pending, n);
    s->n_pending = 0;
    return n;
}
