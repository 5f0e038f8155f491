/*
 * Chat formats (see rt_chat.h): Llama-3 and ChatML, as ids and as text.
 *
 * Both renderings are driven by one description of a format (render_parts below): a sequence of
 * parts, each either a special token (by its text) or a piece of plain text. The text rendering
 * concatenates everything; the id rendering looks special parts up in the vocabulary and
 * tokenizes the plain runs between them. So the two agree by construction: ids ==
 * tokenize-with-specials(text), as long as message text contains no special-token strings.
 */
#include "runtime/runtime.h"

#include <stdlib.h>
#include <string.h>

bool rt_chat_format_parse(const char *name, rt_chat_format *out)
{
    if (!strcmp(name, "llama3") || !strcmp(name, "llama-3")) {
        *out = RT_CHAT_LLAMA3;
        return true;
    }
    if (!strcmp(name, "chatml") || !strcmp(name, "qwen") || !strcmp(name, "qwen2")) {
        *out = RT_CHAT_CHATML;
        return true;
    }
    return false;
}

const char *rt_chat_format_name(rt_chat_format f)
{
    return f == RT_CHAT_LLAMA3 ? "llama3" : "chatml";
}

const char *rt_chat_role_name(rt_chat_role r)
{
    switch (r) {
    case RT_ROLE_SYSTEM: return "system";
    case RT_ROLE_USER: return "user";
    default: return "assistant";
    }
}

/* ==== Detection ============================================================================ */

static bool has_all(const rt_tokenizer *t, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rt_tokenizer_find_special(t, names[i]) < 0)
            return false;
    return true;
}

static const char *const llama3_specials[] = {"<|start_header_id|>", "<|end_header_id|>",
                                              "<|eot_id|>"};
static const char *const chatml_specials[] = {"<|im_start|>", "<|im_end|>"};

/* True if the n bytes at s contain the NUL-terminated needle. */
static bool contains(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (s[i] == needle[0] && !memcmp(s + i, needle, k))
            return true;
    return false;
}

loupe_status rt_chat_format_detect(const rt_gguf *g, const rt_tokenizer *t, rt_chat_format *out,
                                   loupe_err *err)
{
    if (g && rt_gguf_find_key(g, "tokenizer.chat_template") >= 0) {
        rt_gguf_str tpl;
        loupe_status st = rt_gguf_get_str(g, "tokenizer.chat_template", &tpl, err);
        if (st)
            return st;
        if (contains(tpl.ptr, (size_t)tpl.len, "<|start_header_id|>")) {
            *out = RT_CHAT_LLAMA3;
            return LOUPE_OK;
        }
        if (contains(tpl.ptr, (size_t)tpl.len, "<|im_start|>")) {
            *out = RT_CHAT_CHATML;
            return LOUPE_OK;
        }
    }
    if (has_all(t, llama3_specials, sizeof llama3_specials / sizeof llama3_specials[0])) {
        *out = RT_CHAT_LLAMA3;
        return LOUPE_OK;
    }
    if (has_all(t, chatml_specials, sizeof chatml_specials / sizeof chatml_specials[0])) {
        *out = RT_CHAT_CHATML;
        return LOUPE_OK;
    }
    return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                      "%s: cannot tell the chat format: neither the chat template nor the "
                      "vocabulary has Llama-3's or ChatML's header tokens",
                      g ? rt_gguf_path(g) : "model");
}

/* ==== Rendering ============================================================================ */

/* Length of the Unicode White_Space character at p (n bytes left), 0 if p starts none. */
static size_t ws_len(const unsigned char *p, size_t n)
{
    if (p[0] == ' ' || (p[0] >= '\t' && p[0] <= '\r'))
        return 1;
    if (n >= 2 && p[0] == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0))
        return 2;
    if (n >= 3 && p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80) /* U+1680 */
        return 3;
    if (n >= 3 && p[0] == 0xE2 && p[1] == 0x80 &&
        (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF)) /* U+2000-200A, 2028/9, 202F */
        return 3;
    if (n >= 3 && p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) /* U+205F */
        return 3;
    if (n >= 3 && p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) /* U+3000 */
        return 3;
    return 0;
}

/* Strips White_Space from both ends, as the Llama-3 templates' `| trim` does. */
static void trim(const char **s, size_t *n)
{
    const unsigned char *p = (const unsigned char *)*s;
    size_t len = *n, k;
    while (len && (k = ws_len(p, len)) > 0) {
        p += k;
        len -= k;
    }
    for (;;) {
        size_t back = 0;
        for (size_t j = 1; j <= 3 && j <= len; j++)
            if (ws_len(p + len - j, j) == j) {
                back = j;
                break;
            }
        if (!back)
            break;
        len -= back;
    }
    *s = (const char *)p;
    *n = len;
}

typedef struct {
    const char *special; /* a special token's text, or NULL for plain text */
    const char *text;    /* plain text, len bytes */
    size_t len;
} chat_part;

typedef struct {
    chat_part *parts; /* (n) */
    size_t n, cap;
} chat_parts;

static loupe_status add_part(chat_parts *ps, const char *special, const char *text, size_t len,
                             loupe_err *err)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 32;
        chat_part *p = realloc(ps->parts, cap * sizeof *p);
        if (!p)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory rendering a conversation");
        ps->parts = p;
        ps->cap = cap;
    }
    ps->parts[ps->n++] = (chat_part){special, text, len};
    return LOUPE_OK;
}

static loupe_status add_special(chat_parts *ps, const char *special, loupe_err *err)
{
    return add_part(ps, special, NULL, 0, err);
}

static loupe_status add_text(chat_parts *ps, const char *text, size_t len, loupe_err *err)
{
    return add_part(ps, NULL, text, len, err);
}

static loupe_status add_str(chat_parts *ps, const char *text, loupe_err *err)
{
    return add_part(ps, NULL, text, strlen(text), err);
}

/* The one description of both formats. */
static loupe_status render_parts(rt_chat_format f, const rt_chat_msg *msgs, size_t n, bool gen,
                                 chat_parts *ps, loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    if (f == RT_CHAT_LLAMA3) {
        st = add_special(ps, "<|begin_of_text|>", err);
        for (size_t i = 0; i < n && !st; i++) {
            const char *text = msgs[i].text;
            size_t len = msgs[i].len;
            trim(&text, &len);
            if (!(st = add_special(ps, "<|start_header_id|>", err)) &&
                !(st = add_str(ps, rt_chat_role_name(msgs[i].role), err)) &&
                !(st = add_special(ps, "<|end_header_id|>", err)) &&
                !(st = add_str(ps, "\n\n", err)) && !(st = add_text(ps, text, len, err)))
                st = add_special(ps, "<|eot_id|>", err);
        }
        if (gen && !st && !(st = add_special(ps, "<|start_header_id|>", err)) &&
            !(st = add_str(ps, "assistant", err)) &&
            !(st = add_special(ps, "<|end_header_id|>", err)))
            st = add_str(ps, "\n\n", err);
        return st;
    }
    for (size_t i = 0; i < n && !st; i++) {
        if (!(st = add_special(ps, "<|im_start|>", err)) &&
            !(st = add_str(ps, rt_chat_role_name(msgs[i].role), err)) &&
            !(st = add_str(ps, "\n", err)) &&
            !(st = add_text(ps, msgs[i].text, msgs[i].len, err)) &&
            !(st = add_special(ps, "<|im_end|>", err)))
            st = add_str(ps, "\n", err);
    }
    if (gen && !st && !(st = add_special(ps, "<|im_start|>", err)))
        st = add_str(ps, "assistant\n", err);
    return st;
}

static size_t part_len(const chat_part *p)
{
    return p->special ? strlen(p->special) : p->len;
}

loupe_status rt_chat_render_text(rt_chat_format f, const rt_chat_msg *msgs, size_t n,
                                 bool add_generation_prompt, char **out, loupe_err *err)
{
    *out = NULL;
    chat_parts ps = {0};
    loupe_status st = render_parts(f, msgs, n, add_generation_prompt, &ps, err);
    size_t total = 1;
    for (size_t i = 0; i < ps.n && !st; i++)
        total += part_len(&ps.parts[i]);
    char *s = st ? NULL : malloc(total);
    if (!st && !s)
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory rendering a conversation");
    if (!st) {
        size_t o = 0;
        for (size_t i = 0; i < ps.n; i++) {
            size_t k = part_len(&ps.parts[i]);
            memcpy(s + o, ps.parts[i].special ? ps.parts[i].special : ps.parts[i].text, k);
            o += k;
        }
        s[o] = '\0';
        *out = s;
    }
    free(ps.parts);
    return st;
}

loupe_status rt_chat_render(const rt_tokenizer *t, rt_chat_format f, const rt_chat_msg *msgs,
                            size_t n, bool add_generation_prompt, rt_ids *out, loupe_err *err)
{
    chat_parts ps = {0};
    char *buf = NULL; /* (cap) one plain run: consecutive text parts are tokenized together */
    size_t cap = 0;
    loupe_status st = render_parts(f, msgs, n, add_generation_prompt, &ps, err);
    for (size_t i = 0; i < ps.n && !st;) {
        if (ps.parts[i].special) {
            int32_t id = rt_tokenizer_find_special(t, ps.parts[i].special);
            /* Llama-3's BOS may be known only by id. */
            if (id < 0 && !strcmp(ps.parts[i].special, "<|begin_of_text|>"))
                id = rt_tokenizer_bos(t);
            if (id < 0)
                st = loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                                "the vocabulary has no '%s' token, which the %s chat format needs",
                                ps.parts[i].special, rt_chat_format_name(f));
            else
                st = rt_ids_push(out, id, err);
            i++;
            continue;
        }
        size_t len = 0, j = i;
        for (; j < ps.n && !ps.parts[j].special; j++)
            len += ps.parts[j].len;
        if (len > cap) {
            char *nb = realloc(buf, len);
            if (!nb) {
                st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory rendering a conversation");
                break;
            }
            buf = nb;
            cap = len;
        }
        size_t o = 0;
        for (size_t k = i; k < j; k++) {
            memcpy(buf + o, ps.parts[k].text, ps.parts[k].len);
            o += ps.parts[k].len;
        }
        st = rt_tokenize(t, buf, len, out, err);
        i = j;
    }
    free(buf);
    free(ps.parts);
    return st;
}
