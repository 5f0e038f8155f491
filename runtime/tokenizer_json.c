/*
 * Hugging Face tokenizer.json (+ tokenizer_config.json) → GGUF tokenizer keys, the way llama.cpp's
 * converter lays them out (see rt_tokenizer_json_to_gguf in rt_tokenizer.h):
 *   tokens      the vocabulary by id: model.vocab entries as their byte-level text, added tokens
 *               as their plain content; ids nobody names become "[PAD<id>]";
 *   token_type  NORMAL for the vocabulary, CONTROL for added tokens flagged special,
 *               USER_DEFINED for the other added tokens, UNUSED for the padding;
 *   merges      "left right" strings, rank = index (both the old string form and the newer
 *               [left, right] pairs are read);
 *   pre         "llama-bpe" or "qwen2", recognised from the Split pre-tokenizer's regex.
 * Only byte-level BPE is accepted; anything else fails with LOUPE_ERR_UNSUPPORTED and says what
 * was found.
 */
#include "runtime/runtime.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The Split regexes of the two supported pre-tokenizers, verbatim from their tokenizer.json. */
static const char llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char qwen2_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct {
    const char *path;
    json_object *root;
    json_object *config;  /* NULL without tokenizer_config.json */
    uint32_t n_vocab;
    const char **text;    /* (n_vocab) token text (borrowed from the JSON or from pad) */
    uint64_t *len;        /* (n_vocab) */
    int32_t *type;        /* (n_vocab) RT_TOKEN_* */
    char *pad;            /* "[PAD<id>]" strings for unnamed ids, NUL-separated */
    const char **merge;   /* (n_merges) "left right" */
    uint64_t *merge_len;  /* (n_merges) */
    char *merge_buf;      /* joined [left, right] pairs */
    size_t n_merges;
} tok_json;

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static loupe_status read_json(const char *path, json_object **out, loupe_err *err)
{
    *out = json_object_from_file(path);
    if (!*out) {
        const char *why = json_util_get_last_err();
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: cannot read JSON: %s", path,
                          why ? why : "parse error");
    }
    if (!json_object_is_type(*out, json_type_object))
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: the top level is not a JSON object", path);
    return LOUPE_OK;
}

/* Finds the pre-tokenizer: a Split with a known regex, alone or inside a Sequence. */
static loupe_status pick_pre(tok_json *j, const char **pre, loupe_err *err)
{
    json_object *pt = get(j->root, "pre_tokenizer");
    json_object *list = get(pt, "pretokenizers");
    size_t n = list && json_object_is_type(list, json_type_array) ? json_object_array_length(list)
                                                                   : 1;
    const char *seen = "none";
    for (size_t i = 0; i < n; i++) {
        json_object *p = list ? json_object_array_get_idx(list, i) : pt;
        const char *type = json_object_get_string(get(p, "type"));
        if (!type || strcmp(type, "Split"))
            continue;
        const char *re = json_object_get_string(get(get(p, "pattern"), "Regex"));
        if (!re)
            continue;
        if (!strcmp(re, llama3_regex)) {
            *pre = "llama-bpe";
            return LOUPE_OK;
        }
        if (!strcmp(re, qwen2_regex)) {
            *pre = "qwen2";
            return LOUPE_OK;
        }
        seen = re;
    }
    return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                      "%s: the pre-tokenizer is neither Llama-3's nor Qwen2's (split regex: "
                      "%.60s)", j->path, seen);
}

static loupe_status read_vocab(tok_json *j, loupe_err *err)
{
    json_object *model = get(j->root, "model");
    const char *mtype = json_object_get_string(get(model, "type"));
    if (mtype && strcmp(mtype, "BPE"))
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED, "%s: tokenizer model '%s' is not BPE",
                          j->path, mtype);
    json_object *vocab = get(model, "vocab");
    json_object *added = get(j->root, "added_tokens");
    if (!vocab || !json_object_is_type(vocab, json_type_object))
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: model.vocab is missing or not an object",
                          j->path);
    if (added && !json_object_is_type(added, json_type_array))
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: added_tokens is not an array", j->path);

    /* Size: the largest id named anywhere, plus one. */
    int64_t max_id = -1;
    json_object_object_foreach(vocab, key, val) {
        (void)key;
        int64_t id = json_object_get_int64(val);
        if (!json_object_is_type(val, json_type_int) || id < 0 || id >= (1 << 30))
            return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: vocabulary entry '%.40s' has id %s",
                              j->path, key, json_object_to_json_string(val));
        if (id > max_id)
            max_id = id;
    }
    size_t n_added = added ? json_object_array_length(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        json_object *a = json_object_array_get_idx(added, i);
        json_object *idv = get(a, "id");
        int64_t id = json_object_get_int64(idv);
        if (!json_object_is_type(idv, json_type_int) || id < 0 || id >= (1 << 30) ||
            !json_object_is_type(get(a, "content"), json_type_string))
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: added token %zu has no valid id and content", j->path, i);
        if (id > max_id)
            max_id = id;
    }
    if (max_id < 255)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: a vocabulary of %lld tokens is too small",
                          j->path, (long long)max_id + 1);
    j->n_vocab = (uint32_t)max_id + 1;
    j->text = calloc(j->n_vocab, sizeof *j->text);
    j->len = calloc(j->n_vocab, sizeof *j->len);
    j->type = calloc(j->n_vocab, sizeof *j->type);
    if (!j->text || !j->len || !j->type)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for %u tokens", j->n_vocab);

    json_object_object_foreach(vocab, key2, val2) {
        int64_t id = json_object_get_int64(val2);
        if (j->text[id])
            return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: id %lld is given to two tokens",
                              j->path, (long long)id);
        j->text[id] = key2;
        j->len[id] = strlen(key2);
        j->type[id] = RT_TOKEN_NORMAL;
    }
    for (size_t i = 0; i < n_added; i++) {
        json_object *a = json_object_array_get_idx(added, i);
        int64_t id = json_object_get_int64(get(a, "id"));
        json_object *content = get(a, "content");
        j->text[id] = json_object_get_string(content);
        j->len[id] = (uint64_t)json_object_get_string_len(content);
        j->type[id] = json_object_get_boolean(get(a, "special")) ? RT_TOKEN_CONTROL
                                                                  : RT_TOKEN_USER_DEFINED;
    }

    /* Holes get a placeholder name, as llama.cpp's converter does. */
    size_t n_holes = 0;
    for (uint32_t i = 0; i < j->n_vocab; i++)
        n_holes += !j->text[i];
    if (n_holes) {
        j->pad = malloc(n_holes * 20);
        if (!j->pad)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for padding tokens");
        char *p = j->pad;
        for (uint32_t i = 0; i < j->n_vocab; i++) {
            if (j->text[i])
                continue;
            int w = snprintf(p, 20, "[PAD%u]", i);
            j->text[i] = p;
            j->len[i] = (uint64_t)w;
            j->type[i] = RT_TOKEN_UNUSED;
            p += w + 1;
        }
    }
    return LOUPE_OK;
}

static loupe_status read_merges(tok_json *j, loupe_err *err)
{
    json_object *merges = get(get(j->root, "model"), "merges");
    if (!merges || !json_object_is_type(merges, json_type_array))
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: model.merges is missing or not an array",
                          j->path);
    size_t n = json_object_array_length(merges), pair_bytes = 0;
    j->n_merges = n;
    j->merge = calloc(n ? n : 1, sizeof *j->merge);
    j->merge_len = calloc(n ? n : 1, sizeof *j->merge_len);
    if (!j->merge || !j->merge_len)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for %zu merges", n);
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(merges, i);
        if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2)
            for (size_t k = 0; k < 2; k++)
                pair_bytes += (size_t)json_object_get_string_len(
                                  json_object_array_get_idx(m, k)) + 1;
    }
    if (pair_bytes && !(j->merge_buf = malloc(pair_bytes)))
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for merges");
    char *p = j->merge_buf;
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(merges, i);
        if (json_object_is_type(m, json_type_string)) {
            j->merge[i] = json_object_get_string(m);
            j->merge_len[i] = (uint64_t)json_object_get_string_len(m);
            continue;
        }
        json_object *l = json_object_is_type(m, json_type_array) &&
                                 json_object_array_length(m) == 2
                             ? json_object_array_get_idx(m, 0) : NULL;
        json_object *r = l ? json_object_array_get_idx(m, 1) : NULL;
        if (!l || !r || !json_object_is_type(l, json_type_string) ||
            !json_object_is_type(r, json_type_string))
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", j->path, i);
        size_t nl = (size_t)json_object_get_string_len(l);
        size_t nr = (size_t)json_object_get_string_len(r);
        const char *ls = json_object_get_string(l), *rs = json_object_get_string(r);
        /* GGUF stores merges as "a b": a token containing a space cannot be written so. */
        if (memchr(ls, ' ', nl) || memchr(rs, ' ', nr))
            return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                              "%s: merge %zu has a token with a space, which byte-level BPE "
                              "never has", j->path, i);
        memcpy(p, ls, nl);
        p[nl] = ' ';
        memcpy(p + nl + 1, rs, nr);
        j->merge[i] = p;
        j->merge_len[i] = nl + 1 + nr;
        p += nl + 1 + nr;
    }
    return LOUPE_OK;
}

static int32_t find_token(const tok_json *j, const char *text)
{
    if (!text)
        return -1;
    size_t n = strlen(text);
    for (uint32_t i = 0; i < j->n_vocab; i++)
        if (j->type[i] != RT_TOKEN_UNUSED && j->len[i] == n && !memcmp(j->text[i], text, n))
            return (int32_t)i;
    return -1;
}

/* A token named in tokenizer_config.json: a string or {"content": ...}; NULL when absent. */
static const char *config_token(const tok_json *j, const char *key)
{
    json_object *v = get(j->config, key);
    if (v && json_object_is_type(v, json_type_object))
        v = get(v, "content");
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* The chat template: a string, or a list of {name, template} where "default" wins. */
static const char *config_template(const tok_json *j)
{
    json_object *v = get(j->config, "chat_template");
    if (v && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    if (v && json_object_is_type(v, json_type_array)) {
        const char *first = NULL;
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *e = json_object_array_get_idx(v, i);
            const char *name = json_object_get_string(get(e, "name"));
            const char *tpl = json_object_get_string(get(e, "template"));
            if (tpl && !first)
                first = tpl;
            if (tpl && name && !strcmp(name, "default"))
                return tpl;
        }
        return first;
    }
    return NULL;
}

static loupe_status write_keys(tok_json *j, const char *pre, rt_gguf_writer *w, loupe_err *err)
{
    loupe_status st = rt_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", err);
    if (!st)
        st = rt_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, err);
    if (!st)
        st = rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", j->text, j->len, j->n_vocab,
                                        err);
    if (!st)
        st = rt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", RT_GGUF_INT32, j->type,
                                    j->n_vocab, err);
    if (!st)
        st = rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", j->merge, j->merge_len,
                                        j->n_merges, err);
    if (st)
        return st;

    const char *bos_text = config_token(j, "bos_token");
    const char *eos_text = config_token(j, "eos_token");
    if (!j->config) { /* without a config, the names both families use */
        bos_text = find_token(j, "<|begin_of_text|>") >= 0 ? "<|begin_of_text|>" : NULL;
        eos_text = find_token(j, "<|end_of_text|>") >= 0 ? "<|end_of_text|>" : "<|endoftext|>";
    }
    int32_t bos = find_token(j, bos_text), eos = find_token(j, eos_text);
    int32_t eot = find_token(j, "<|eot_id|>");
    if (eot < 0)
        eot = find_token(j, "<|im_end|>");
    if (bos_text && bos < 0)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "bos_token '%.40s' is not in the vocabulary",
                          bos_text);
    if (eos_text && eos < 0 && j->config)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "eos_token '%.40s' is not in the vocabulary",
                          eos_text);
    if (bos >= 0)
        st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos, err);
    if (!st && eos >= 0)
        st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos, err);
    if (!st && eot >= 0)
        st = rt_gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)eot, err);
    const char *tpl = config_template(j);
    if (!st && tpl)
        st = rt_gguf_writer_set_str(w, "tokenizer.chat_template", tpl, err);
    return st;
}

loupe_status rt_tokenizer_json_to_gguf(const char *tokenizer_json, const char *tokenizer_config,
                                       rt_gguf_writer *w, uint32_t *n_vocab, loupe_err *err)
{
    tok_json j = {.path = tokenizer_json};
    const char *pre = NULL;
    loupe_status st = read_json(tokenizer_json, &j.root, err);
    if (!st && tokenizer_config)
        st = read_json(tokenizer_config, &j.config, err);
    if (!st)
        st = pick_pre(&j, &pre, err);
    if (!st)
        st = read_vocab(&j, err);
    if (!st)
        st = read_merges(&j, err);
    if (!st)
        st = write_keys(&j, pre, w, err);
    if (!st && n_vocab)
        *n_vocab = j.n_vocab;
    free(j.text);
    free(j.len);
    free(j.type);
    free(j.pad);
    free(j.merge);
    free(j.merge_len);
    free(j.merge_buf);
    json_object_put(j.root);
    json_object_put(j.config);
    return st;
}
