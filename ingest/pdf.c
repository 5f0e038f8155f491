/*
 * PDF → text with poppler-glib, page by page in page order, each page wrapped as LAYOUT.md says:
 *     <page n="N">\n ...text, ending in a newline... </page>\n
 * An empty page is kept (its markers alone) so page numbers stay true. Encrypted documents that
 * need a password and corrupt files fail with a sentence; poppler's own text is decoded again so
 * the result is valid UTF-8 without NULs.
 */
#include "ingest/ing_impl.h"

#include <glib.h>
#include <poppler.h>
#include <stdlib.h>
#include <string.h>

char *ing_pdf_to_text(const void *data, size_t len, const char *name, size_t *out_len, int *pages,
                      loupe_err *err)
{
    char *result = NULL;
    GError *gerr = NULL;
    PopplerDocument *doc = NULL;
    ing_buf out = {0};
    if (!name)
        name = "PDF";
    GBytes *bytes = g_bytes_new_static(data, len);
    doc = poppler_document_new_from_bytes(bytes, NULL, &gerr);
    if (!doc) {
        if (gerr && gerr->domain == POPPLER_ERROR && gerr->code == POPPLER_ERROR_ENCRYPTED)
            loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                       "encrypted PDF: it needs a password, which loupe does not take");
        else
            loupe_fail(err, LOUPE_ERR_FORMAT, "not a readable PDF (%s)",
                       gerr && gerr->message ? gerr->message : "poppler could not open it");
        goto done;
    }
    int n = poppler_document_get_n_pages(doc);
    *pages = n;
    for (int i = 0; i < n; i++) {
        PopplerPage *page = poppler_document_get_page(doc, i);
        char *t = page ? poppler_page_get_text(page) : NULL;
        ing_buf_printf(&out, "<page n=\"%d\">\n", i + 1);
        if (t && *t) {
            size_t tl = 0;
            char *clean = ing_decode_text(t, strlen(t), &tl);
            if (clean) {
                ing_buf_put(&out, clean, tl);
                if (tl && clean[tl - 1] != '\n')
                    ing_buf_putc(&out, '\n');
                free(clean);
            } else {
                out.oom = true;
            }
        }
        ing_buf_puts(&out, "</page>\n");
        g_free(t);
        if (page)
            g_object_unref(page);
        if (out.oom)
            break;
    }
    if (out.oom) {
        loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory extracting the text of %s", name);
        goto done;
    }
    result = ing_buf_take(&out, out_len);
    if (!result)
        loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory extracting the text of %s", name);
done:
    ing_buf_free(&out);
    if (doc)
        g_object_unref(doc);
    if (gerr)
        g_error_free(gerr);
    g_bytes_unref(bytes);
    return result;
}
