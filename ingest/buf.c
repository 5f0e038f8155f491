/*
 * ing_buf: the growable byte buffer every ingest file builds text in. Growth doubles; the first
 * failed allocation sets a sticky `oom` flag and later puts do nothing, so builders check once at
 * the end instead of after every put. The bytes are always NUL-terminated after a put.
 */
#include "ingest/ing_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool buf_grow(ing_buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->n + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void ing_buf_put(ing_buf *b, const char *s, size_t n)
{
    if (!buf_grow(b, n))
        return;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void ing_buf_puts(ing_buf *b, const char *s)
{
    ing_buf_put(b, s, strlen(s));
}

void ing_buf_putc(ing_buf *b, char c)
{
    ing_buf_put(b, &c, 1);
}

void ing_buf_printf(ing_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int w = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (w < 0)
        return;
    if ((size_t)w < sizeof small) {
        ing_buf_put(b, small, (size_t)w);
        return;
    }
    if (!buf_grow(b, (size_t)w))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)w + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)w;
}

void ing_buf_put_attr(ing_buf *b, const char *s)
{
    for (const char *run = s;; s++) {
        unsigned char ch = (unsigned char)*s;
        const char *rep = NULL;
        char hex[8];
        switch (ch) {
        case '&': rep = "&amp;"; break;
        case '"': rep = "&quot;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        default:
            /* A newline or tab inside a path would break the one-path-per-line lists. */
            if (ch && (ch < 0x20 || ch == 0x7f)) {
                snprintf(hex, sizeof hex, "\\x%02X", ch);
                rep = hex;
            }
        }
        if (rep || !ch) {
            ing_buf_put(b, run, (size_t)(s - run));
            if (!ch)
                return;
            ing_buf_puts(b, rep);
            run = s + 1;
        }
    }
}

char *ing_buf_take(ing_buf *b, size_t *len)
{
    if (b->oom) {
        ing_buf_free(b);
        return NULL;
    }
    if (!b->p)
        ing_buf_put(b, "", 0);
    char *p = b->oom ? NULL : b->p;
    if (len)
        *len = b->n;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

void ing_buf_free(ing_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    b->oom = false;
}

void ing_fmt_size(uint64_t bytes, char *out, size_t cap)
{
    const char *units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) {
        snprintf(out, cap, "%llu bytes", (unsigned long long)bytes);
        return;
    }
    double v = (double)bytes / 1024;
    int u = 0;
    while (v >= 1024 && u < 3) {
        v /= 1024;
        u++;
    }
    if (v == (double)(uint64_t)v)
        snprintf(out, cap, "%llu %s", (unsigned long long)v, units[u]);
    else
        snprintf(out, cap, "%.1f %s", v, units[u]);
}
