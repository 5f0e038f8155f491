/*
 * ingest — sources (files, directory trees honouring .gitignore, URLs, PDFs, stdin) → documents →
 * one laid-out text, with token counts per document and explicit truncation policy.
 *
 * Depends on no other module but anns (status codes): token counting goes through the callback
 * below, which the app wires to the runtime's tokenizer.
 *
 * The laid-out text follows docs/LAYOUT.md exactly (the bundled model is trained on it). Usage:
 *
 *     ing_opts o; ing_opts_init(&o); o.count = my_counter; o.ctx = 131072;
 *     ing_result *r = NULL;
 *     loupe_status st = ing_ingest(sources, n, &o, &r, &err);
 *     ... r->text (laid out), r->docs (one record per source considered, skipped ones included) ...
 *     ing_result_destroy(r);
 *
 * Policy, in one place:
 *   - A source named explicitly (a file, URL, `-`) that cannot be read is an error: the call fails
 *     with a sentence naming it. Inside a directory walk, unreadable, binary, oversized and ignored
 *     entries are skipped, each with a record and its reason; nothing is dropped silently.
 *   - If the laid-out text's tokens exceed opts.ctx: ING_TRUNCATE_NONE refuses (LOUPE_ERR_TOO_LONG,
 *     the result still describes, per document, what `tail` would cut or drop);
 *     ING_TRUNCATE_TAIL keeps documents in order, cuts the first that does not fit and drops the
 *     rest; ING_TRUNCATE_PROPORTIONAL cuts every document by the same fraction. Cut documents end
 *     with the marker line of LAYOUT.md and their record says by how much.
 */
#ifndef LOUPE_INGEST_H
#define LOUPE_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Counts the tokens of `text` (len bytes) with the model's tokenizer; returns the count or a
 * negative number on failure. Called from several threads at once: it must be thread-safe. */
typedef int64_t (*ing_count_tokens_fn)(void *ctx, const char *text, size_t len);

/* Optional: the byte length of the longest prefix of `text` made of at most `max_tokens` tokens
 * (tokenize, then sum the bytes of the first max_tokens tokens); negative on failure. Without it
 * ingest finds the cut by bisection with the counter (slower, same policy). */
typedef int64_t (*ing_prefix_fn)(void *ctx, const char *text, size_t len, int64_t max_tokens);

/* ---- Progress ---------------------------------------------------------------------------- */

typedef enum {
    ING_PHASE_READ,   /* walking, reading, fetching, extracting */
    ING_PHASE_COUNT,  /* counting tokens per document */
    ING_PHASE_LAYOUT, /* laying out, counting the total, applying the truncation policy */
} ing_phase;

typedef struct {
    ing_phase phase;
    uint64_t files_scanned;  /* entries looked at (files, skipped ones included) */
    uint64_t docs;           /* documents read so far */
    uint64_t bytes;          /* bytes of document text so far */
    int64_t tokens;          /* tokens counted so far */
    uint64_t docs_counted;   /* documents whose tokens are counted */
    const char *current;     /* the source being read; valid during the call only */
} ing_progress;

/* Called often (every file); never from two threads at once. Return nonzero to cancel: the
 * ingest then fails with LOUPE_ERR_CANCELLED. */
typedef int (*ing_progress_fn)(void *ctx, const ing_progress *p);

/* ---- Options ----------------------------------------------------------------------------- */

typedef enum {
    ING_TRUNCATE_NONE,         /* refuse when over --ctx (default) */
    ING_TRUNCATE_TAIL,         /* keep documents in order; cut the one that crosses, drop the rest */
    ING_TRUNCATE_PROPORTIONAL, /* cut every document by the same fraction */
} ing_truncate;

/* "none", "tail", "proportional" → *out; false for anything else. */
bool ing_truncate_parse(const char *s, ing_truncate *out);
const char *ing_truncate_name(ing_truncate t);

#define ING_DEFAULT_MAX_FILE_SIZE (10ull << 20)   /* 10 MiB */
#define ING_DEFAULT_MAX_URL_SIZE (64ull << 20)    /* 64 MiB */
#define ING_DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define ING_DEFAULT_TIMEOUT_MS 60000L
#define ING_DEFAULT_MAX_REDIRECTS 5

typedef struct {
    /* Files */
    uint64_t max_file_size;        /* larger files are skipped (walk) or refused (named) */
    bool no_ignore;                /* do not read .gitignore / .ignore / .git/info/exclude */
    const char *const *exclude;    /* (n_exclude) gitignore-syntax globs, relative to each walked
                                    * directory source: matching entries are skipped */
    size_t n_exclude;
    const char *const *include;    /* (n_include) if any: only files matching one are taken */
    size_t n_include;
    int stdin_fd;                  /* what `-` reads (0) */
    /* URLs */
    long connect_timeout_ms;
    long timeout_ms;               /* whole transfer */
    uint64_t max_url_size;         /* body bytes; the transfer is aborted past it */
    int max_redirects;
    /* Tokens and context */
    ing_count_tokens_fn count;     /* NULL: no counting (tokens are -1, ctx must be 0) */
    ing_prefix_fn prefix;          /* optional, see above */
    void *count_ctx;               /* passed to count and prefix */
    int64_t ctx;                   /* token budget for the laid-out text; 0 = no limit */
    ing_truncate truncate;
    int threads;                   /* counting threads; 0 = OpenMP's default */
    /* Progress */
    ing_progress_fn progress;
    void *progress_ctx;
} ing_opts;

/* Defaults: limits above, truncate none, no counter, no limit on ctx. */
void ing_opts_init(ing_opts *o);

/* ---- Result ------------------------------------------------------------------------------ */

typedef enum {
    ING_DOC_INCLUDED,  /* whole */
    ING_DOC_TRUNCATED, /* cut by the truncation policy (reason says by how much) */
    ING_DOC_DROPPED,   /* left out by the truncation policy */
    ING_DOC_SKIPPED,   /* not a document: ignored, binary, too large, unreadable, loop, ... */
} ing_doc_status;

const char *ing_doc_status_name(ing_doc_status s); /* "included", "truncated", ... */

typedef enum { ING_SRC_FILE, ING_SRC_URL, ING_SRC_STDIN } ing_src_kind;
typedef enum { ING_FMT_TEXT, ING_FMT_HTML, ING_FMT_PDF } ing_format;

typedef struct {
    char *path;            /* as laid out: path relative as given, final URL, or "<stdin>" */
    ing_src_kind kind;
    ing_format format;     /* how the text was obtained */
    ing_doc_status status;
    uint64_t bytes;        /* size of the source: file size, or body bytes fetched */
    uint64_t text_bytes;   /* bytes of the document's text (0 when skipped) */
    int64_t tokens;        /* tokens of the whole text; -1 when not counted or skipped */
    int64_t tokens_kept;   /* tokens of the text as laid out (< tokens when truncated) */
    int pages;             /* PDF pages, else 0 */
    char *reason;          /* why skipped/truncated/dropped; NULL when included whole. With
                            * ING_TRUNCATE_NONE over budget: what `tail` would do to it */
    char *text;            /* (text_bytes) the whole text, NUL-terminated; NULL when skipped */
    int source;            /* index of the source (argument) it came from */
} ing_doc;

typedef struct {
    char *text;            /* (len) the laid-out text, NUL-terminated; NULL when refused */
    size_t len;
    ing_doc *docs;         /* (n_docs) every entry considered, in layout order, skipped ones
                            * where they were met */
    size_t n_docs;
    size_t n_included, n_truncated, n_dropped, n_skipped;
    uint64_t text_bytes;   /* bytes of the included documents' text (as laid out) */
    int64_t doc_tokens;    /* sum of the documents' whole token counts (before any cut); -1 */
    int64_t total_tokens;  /* tokens of the laid-out text exactly (the context it fills); -1 */
    int64_t ctx;           /* the budget it was laid out for (0 = none) */
    double sec_read;       /* time split: walk + read + extract */
    double sec_count;      /* per-document token counts */
    double sec_layout;     /* layout + total count + truncation */
} ing_result;

/*
 * Ingests `sources` (n of them: paths, directories, http(s) URLs, "-" for stdin) into one laid-out
 * text. On success returns LOUPE_OK and *out (free with ing_result_destroy). On
 * LOUPE_ERR_TOO_LONG (over ctx with ING_TRUNCATE_NONE) *out is ALSO set, with text NULL and each
 * document's reason saying what `--truncate tail` would do; err holds the summary. On any other
 * failure *out is NULL and err names the source and the problem.
 */
loupe_status ing_ingest(const char *const *sources, size_t n, const ing_opts *o, ing_result **out,
                        loupe_err *err);
void ing_result_destroy(ing_result *r); /* NULL is fine */

/* ---- Pieces, exposed for tests and for callers that want one of them -------------------- */

/* Decodes raw bytes into UTF-8 (BOM-marked UTF-8/UTF-16 LE/BE handled; other invalid bytes read
 * as Latin-1). Returns a malloc'd NUL-terminated string and its length in *out_len, or NULL when
 * out of memory. */
char *ing_decode_text(const void *data, size_t len, size_t *out_len);
/* True if the first 8 KiB look binary (a NUL byte outside UTF-16, or > 10% control characters);
 * *why receives a static phrase. */
bool ing_looks_binary(const void *data, size_t len, const char **why);

/* HTML (len bytes, charset from the HTTP header or NULL) → readable text: title first, scripts,
 * styles, noscript and template dropped, block elements on their own lines, whitespace collapsed
 * except in <pre>. Returns a malloc'd string or NULL (err set). */
char *ing_html_to_text(const char *html, size_t len, const char *charset, size_t *out_len,
                       loupe_err *err);

/* PDF bytes → text with `<page n="N">` … `</page>` per page (LAYOUT.md). `name` is for messages.
 * Encrypted or corrupt files fail with a sentence. *pages receives the page count. */
char *ing_pdf_to_text(const void *data, size_t len, const char *name, size_t *out_len, int *pages,
                      loupe_err *err);

/* gitignore-style matching of one pattern list (tests, --include/--exclude). */
typedef struct ing_ignore ing_ignore;
/* Parses the lines of an ignore file (text, len bytes); `origin` names it in reasons. */
loupe_status ing_ignore_parse(const char *text, size_t len, const char *origin, ing_ignore **out,
                              loupe_err *err);
void ing_ignore_destroy(ing_ignore *ig); /* NULL is fine */
/* Matches `rel` (path relative to the ignore file's directory, '/'-separated, no leading '/').
 * Returns 1 = ignored, -1 = re-included by a negation, 0 = no pattern matched. The deciding
 * pattern's "origin:line: pattern" goes to `why` (cap bytes) when non-NULL. */
int ing_ignore_match(const ing_ignore *ig, const char *rel, bool is_dir, char *why, size_t cap);
/* git's wildmatch with WM_PATHNAME ('*' and '?' do not cross '/', "**" does at segment edges). */
bool ing_wildmatch(const char *pattern, const char *text);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_INGEST_H */
