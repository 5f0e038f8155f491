/*
 * The laid-out text, exactly as docs/LAYOUT.md defines it (the bundled model is trained on it):
 *
 *   <context>
 *   <sources>            every included document's path, one a line, in layout order
 *   <tree>               directory sources only: root "name/", then two spaces per level,
 *                        directories end in "/"; only directories holding included files
 *   <document path="…">  the text, ending in a newline (one is added if missing; an empty
 *   </document>          text stays empty); a cut one ends with the truncation marker line
 *   </context>
 *
 * Paths are escaped wherever they appear (& " < > as entities, control bytes as \xNN) so that a
 * hostile file name cannot forge structure; document text is never escaped. The tree is printed
 * from the documents' order alone: a depth-first walk with sorted entries visits a directory's
 * files contiguously, so comparing each path's directories with the previous one's suffices.
 */
#include "ingest/ing_impl.h"

#include <string.h>

/* stdin's name is written as LAYOUT.md spells it, `<stdin>`; a file of that name would read
 * `&lt;stdin&gt;`, so the two never collide. */
static void put_path(ing_buf *out, const ing_doc *d)
{
    if (d->kind == ING_SRC_STDIN)
        ing_buf_puts(out, d->path);
    else
        ing_buf_put_attr(out, d->path);
}

static bool laid_out(const ing_doc *d)
{
    return d->status == ING_DOC_INCLUDED || d->status == ING_DOC_TRUNCATED;
}

/* Number of leading directory components `a` and `b` share (each "x/y/" style, n bytes). */
static size_t common_dirs(const char *a, size_t an, const char *b, size_t bn, size_t *bytes)
{
    size_t k = 0, i = 0, last = 0;
    while (i < an && i < bn && a[i] == b[i]) {
        if (a[i] == '/') {
            k++;
            last = i + 1;
        }
        i++;
    }
    *bytes = last;
    return k;
}

static void put_indent(ing_buf *out, size_t level)
{
    for (size_t i = 0; i < level; i++)
        ing_buf_puts(out, "  ");
}

static void put_attr_n(ing_buf *out, const char *s, size_t n)
{
    /* ing_buf_put_attr takes a C string; component names are short, copy through a stack
     * buffer, falling back to byte-wise puts for very long names. */
    char tmp[512];
    if (n < sizeof tmp) {
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        ing_buf_put_attr(out, tmp);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char one[2] = {s[i], '\0'};
        ing_buf_put_attr(out, one);
    }
}

static void put_tree(const ing_ctx *c, ing_buf *out)
{
    bool any = false;
    for (size_t s = 0; s < c->n_src; s++)
        any |= c->src[s].is_dir;
    if (!any)
        return;
    ing_buf_puts(out, "<tree>\n");
    size_t i = 0;
    for (size_t s = 0; s < c->n_src; s++) {
        if (!c->src[s].is_dir)
            continue;
        const char *root = c->src[s].disp_root;
        size_t prefix = *root ? strlen(root) + 1 : 0;
        ing_buf_put_attr(out, *root ? root : ".");
        ing_buf_puts(out, "/\n");
        const char *prev = "";
        size_t prev_n = 0; /* bytes of prev's directory part, "a/b/" */
        while (i < c->n_docs && c->docs[i].source < (int)s)
            i++;
        for (; i < c->n_docs && c->docs[i].source == (int)s; i++) {
            const ing_doc *d = &c->docs[i];
            if (!laid_out(d) || strlen(d->path) < prefix)
                continue;
            const char *rel = d->path + prefix;
            const char *slash = strrchr(rel, '/');
            size_t dir_n = slash ? (size_t)(slash - rel) + 1 : 0;
            size_t shared_bytes = 0;
            size_t level = common_dirs(prev, prev_n, rel, dir_n, &shared_bytes);
            /* Print the directories of rel past the shared ones. */
            size_t p = shared_bytes;
            while (p < dir_n) {
                const char *end = memchr(rel + p, '/', dir_n - p);
                size_t len = (size_t)(end - (rel + p));
                put_indent(out, level + 1);
                put_attr_n(out, rel + p, len);
                ing_buf_puts(out, "/\n");
                level++;
                p += len + 1;
            }
            put_indent(out, level + 1);
            ing_buf_put_attr(out, rel + dir_n);
            ing_buf_putc(out, '\n');
            prev = rel;
            prev_n = dir_n;
        }
    }
    ing_buf_puts(out, "</tree>\n");
}

/* True if the cut text of a PDF stops inside a page (its last "<page" line is not closed). */
static bool pdf_page_open(const char *t, size_t n)
{
    size_t open_at = 0, close_at = 0; /* 1 + offset of the last marker line, 0 = none */
    for (size_t i = 0; i < n; i++) {
        if (i && t[i - 1] != '\n')
            continue;
        if (n - i >= 9 && !memcmp(t + i, "<page n=\"", 9))
            open_at = i + 1;
        else if (n - i >= 7 && !memcmp(t + i, "</page>", 7))
            close_at = i + 1;
    }
    return open_at > close_at;
}

loupe_status ing_layout_build(const ing_ctx *c, ing_buf *out, loupe_err *err)
{
    ing_buf_puts(out, "<context>\n<sources>\n");
    for (size_t i = 0; i < c->n_docs; i++) {
        if (!laid_out(&c->docs[i]))
            continue;
        put_path(out, &c->docs[i]);
        ing_buf_putc(out, '\n');
    }
    ing_buf_puts(out, "</sources>\n");
    put_tree(c, out);
    for (size_t i = 0; i < c->n_docs; i++) {
        const ing_doc *d = &c->docs[i];
        if (!laid_out(d))
            continue;
        ing_buf_puts(out, "<document path=\"");
        put_path(out, d);
        ing_buf_puts(out, "\">\n");
        size_t n = d->status == ING_DOC_TRUNCATED ? c->x[i].cut : d->text_bytes;
        ing_buf_put(out, d->text, n);
        if (n && d->text[n - 1] != '\n')
            ing_buf_putc(out, '\n');
        if (d->status == ING_DOC_TRUNCATED) {
            if (d->format == ING_FMT_PDF && pdf_page_open(d->text, n))
                ing_buf_puts(out, "</page>\n");
            ing_buf_printf(out, "[... truncated: %lld of %lld tokens kept ...]\n",
                           (long long)d->tokens_kept, (long long)d->tokens);
        }
        ing_buf_puts(out, "</document>\n");
    }
    ing_buf_puts(out, "</context>\n");
    if (out->oom)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory laying out %zu documents",
                          c->n_docs);
    return LOUPE_OK;
}
