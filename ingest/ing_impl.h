/*
 * ingest's private pieces shared by its files: a growable text buffer, the ingest context that
 * collects document records while sources are read, and the per-source readers.
 *
 * Invariants: ctx->docs holds every entry met, in layout order (sources in argument order, a
 * directory depth-first with entries sorted bytewise); ctx->x[i] carries what only ingest needs
 * about docs[i]. Readers report a failure to read one thing through `why` (a phrase without the
 * path); the caller turns it into a skip record (inside a walk) or an error (a named source).
 */
#ifndef LOUPE_ING_IMPL_H
#define LOUPE_ING_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingest/ingest.h"

/* ---- Growable buffer: a sticky out-of-memory flag keeps call sites short ------------------ */

typedef struct {
    char *p;    /* (n) bytes, NUL-terminated once anything was put */
    size_t n;
    size_t cap;
    bool oom;   /* set by the first failed growth; later puts do nothing */
} ing_buf;

void ing_buf_put(ing_buf *b, const char *s, size_t n);
void ing_buf_puts(ing_buf *b, const char *s);
void ing_buf_putc(ing_buf *b, char c);
void ing_buf_printf(ing_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Puts `s` with & " < > escaped as LAYOUT.md says, control bytes as \xNN. */
void ing_buf_put_attr(ing_buf *b, const char *s);
/* Hands over the bytes (NUL-terminated, never NULL unless oom) and resets the buffer. */
char *ing_buf_take(ing_buf *b, size_t *len);
void ing_buf_free(ing_buf *b);

/* ---- Context ----------------------------------------------------------------------------- */

typedef struct {
    size_t cut;            /* bytes of text kept when truncated */
    int64_t kept_plan;     /* tokens the plan allows (truncation) */
} ing_docx;

typedef struct {
    bool is_dir;           /* a directory source: its files go into <tree> */
    char *disp_root;       /* how its root reads in paths ("repo", "" for ".") */
} ing_srcinfo;

typedef struct {
    const ing_opts *o;
    loupe_err *err;
    ing_doc *docs;         /* (n_docs) */
    ing_docx *x;           /* (n_docs) */
    size_t n_docs, cap_docs;
    ing_srcinfo *src;      /* (n_src) */
    size_t n_src;
    ing_progress prog;
} ing_ctx;

/* Appends a zeroed record with a copy of `path`; *out points at it (valid until the next add). */
loupe_status ing_doc_add(ing_ctx *c, const char *path, int source, ing_doc **out);
/* Marks the record skipped with a printf-formatted reason. */
loupe_status ing_doc_skip(ing_ctx *c, ing_doc *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reports progress for `current`; LOUPE_ERR_CANCELLED (err set) if the callback asks to stop. */
loupe_status ing_progress_tick(ing_ctx *c, const char *current);

/* Decodes `data` into d->text: PDFs by magic, binary refused, text decoded (ing_decode_text).
 * Takes no ownership of data. Failure: status + phrase in `why`. */
loupe_status ing_doc_set_bytes(ing_doc *d, const void *data, size_t len, loupe_err *why);

/* ---- Readers ----------------------------------------------------------------------------- */

/* Reads a file at `fs_path` into d (size limit from opts; non-regular named files such as FIFOs
 * are read up to the limit). */
loupe_status ing_file_load(const ing_opts *o, const char *fs_path, ing_doc *d, loupe_err *why);
/* Reads opts->stdin_fd to the end (up to max_file_size) into d. */
loupe_status ing_stdin_load(const ing_opts *o, ing_doc *d, loupe_err *why);
/* True for "scheme://..." sources. */
bool ing_is_url(const char *s);
/* Fetches `url` into d; d->path becomes the final URL after redirects. */
loupe_status ing_url_load(const ing_opts *o, const char *url, ing_doc *d, loupe_err *why);
/* Walks directory source number `source` (fs path as given, display root) adding records. */
loupe_status ing_walk(ing_ctx *c, const char *fs_root, const char *disp_root, int source);

/* ---- Layout ------------------------------------------------------------------------------ */

/* Lays out the records whose status is included/truncated into `out` (LAYOUT.md). */
loupe_status ing_layout_build(const ing_ctx *c, ing_buf *out, loupe_err *err);
/* Human size: "10 MiB", "2.0 GiB", "512 bytes". */
void ing_fmt_size(uint64_t bytes, char *out, size_t cap);

#endif /* LOUPE_ING_IMPL_H */
