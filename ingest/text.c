/*
 * Bytes → text: the decoding rules every source shares.
 *
 *   - A UTF-8 BOM is dropped; a UTF-16 LE/BE BOM switches to UTF-16 (unpaired surrogates become
 *     U+FFFD).
 *   - Otherwise the bytes are read as UTF-8; every byte that does not start a valid sequence
 *     (overlong forms, surrogates and values past U+10FFFF count as invalid) is read as Latin-1,
 *     so no byte is ever dropped and the output is always valid UTF-8.
 *   - NUL characters past the binary sniff window become U+FFFD: the text must stay a C string.
 *
 * Binary sniffing looks at the first 8 KiB only: a NUL byte (unless a UTF-16 BOM explains it) or
 * more than 10% control characters other than tab, newline, CR, FF, VT, backspace and ESC.
 */
#include "ingest/ing_impl.h"

#include <stdlib.h>
#include <string.h>

#define SNIFF_BYTES 8192

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

static size_t put_cp(char *o, uint32_t cp)
{
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
        memcpy(o, REPLACEMENT, 3);
        return 3;
    }
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if s[0] does not start one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0) /* overlong */
            return 0;
        if (c == 0xED && s[1] >= 0xA0) /* surrogate */
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xF4 && s[1] >= 0x90) /* past U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

static char *decode_utf16(const unsigned char *s, size_t len, bool big, size_t *out_len)
{
    /* Each 2-byte unit yields at most 3 bytes; a pair (4 bytes) yields 4. */
    char *out = malloc(len / 2 * 3 + 4);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i + 1 < len; i += 2) {
        uint32_t u = big ? (uint32_t)(s[i] << 8 | s[i + 1]) : (uint32_t)(s[i + 1] << 8 | s[i]);
        if (u >= 0xD800 && u <= 0xDBFF && i + 3 < len) {
            uint32_t v = big ? (uint32_t)(s[i + 2] << 8 | s[i + 3])
                             : (uint32_t)(s[i + 3] << 8 | s[i + 2]);
            if (v >= 0xDC00 && v <= 0xDFFF) {
                o += put_cp(out + o, 0x10000 + ((u - 0xD800) << 10) + (v - 0xDC00));
                i += 2;
                continue;
            }
        }
        o += put_cp(out + o, u); /* lone surrogates and NUL → U+FFFD */
    }
    if (len & 1)
        o += put_cp(out + o, 0xFFFD); /* a dangling odd byte */
    out[o] = '\0';
    *out_len = o;
    return out;
}

char *ing_decode_text(const void *data, size_t len, size_t *out_len)
{
    const unsigned char *s = data;
    if (len >= 2 && s[0] == 0xFF && s[1] == 0xFE)
        return decode_utf16(s + 2, len - 2, false, out_len);
    if (len >= 2 && s[0] == 0xFE && s[1] == 0xFF)
        return decode_utf16(s + 2, len - 2, true, out_len);
    if (len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) {
        s += 3;
        len -= 3;
    }
    /* Worst case: every byte invalid → 2 bytes each; NUL → 3 bytes. */
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    size_t i = 0;
    while (i < len && s[i] && s[i] < 0x80) /* ASCII fast path */
        i++;
    size_t cap = i == len ? len + 1 : len * 3 + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    memcpy(out, s, i);
    size_t o = i;
    while (i < len) {
        unsigned char c = s[i];
        if (c && c < 0x80) {
            out[o++] = (char)c;
            i++;
            continue;
        }
        if (!c) {
            memcpy(out + o, REPLACEMENT, 3);
            o += 3;
            i++;
            continue;
        }
        size_t k = utf8_seq(s + i, len - i);
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            o += put_cp(out + o, c); /* Latin-1 */
            i++;
        }
    }
    out[o] = '\0';
    *out_len = o;
    if (cap > o + 4096) { /* give back the worst-case slack */
        char *shrunk = realloc(out, o + 1);
        if (shrunk)
            out = shrunk;
    }
    return out;
}

bool ing_looks_binary(const void *data, size_t len, const char **why)
{
    const unsigned char *s = data;
    if (len >= 2 && ((s[0] == 0xFF && s[1] == 0xFE) || (s[0] == 0xFE && s[1] == 0xFF)))
        return false; /* UTF-16 with BOM: NULs are expected */
    size_t n = len < SNIFF_BYTES ? len : SNIFF_BYTES;
    size_t ctrl = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == 0) {
            *why = "binary file (NUL bytes in the first 8 KiB)";
            return true;
        }
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v' &&
             c != '\b' && c != 0x1B) || c == 0x7F)
            ctrl++;
    }
    if (n && ctrl * 10 > n) {
        *why = "binary file (mostly control characters in the first 8 KiB)";
        return true;
    }
    return false;
}

loupe_status ing_doc_set_bytes(ing_doc *d, const void *data, size_t len, loupe_err *why)
{
    if (len >= 5 && !memcmp(data, "%PDF-", 5)) {
        size_t n = 0;
        int pages = 0;
        loupe_err e = {0};
        char *t = ing_pdf_to_text(data, len, d->path, &n, &pages, &e);
        if (!t)
            return loupe_fail(why, e.status ? e.status : LOUPE_ERR_FORMAT, "%s", e.msg);
        d->text = t;
        d->text_bytes = n;
        d->pages = pages;
        d->format = ING_FMT_PDF;
        return LOUPE_OK;
    }
    const char *phrase = NULL;
    if (ing_looks_binary(data, len, &phrase))
        return loupe_fail(why, LOUPE_ERR_UNSUPPORTED, "%s", phrase);
    size_t n = 0;
    char *t = ing_decode_text(data, len, &n);
    if (!t)
        return loupe_fail(why, LOUPE_ERR_NOMEM, "out of memory decoding %zu bytes", len);
    d->text = t;
    d->text_bytes = n;
    if (d->format != ING_FMT_HTML)
        d->format = ING_FMT_TEXT;
    return LOUPE_OK;
}
