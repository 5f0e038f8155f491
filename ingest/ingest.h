/*
 * ingest — sources (files, directory trees honouring .gitignore, URLs, PDFs, stdin) → documents →
 * one laid-out text, with token counts per document and explicit truncation policy.
 *
 * Depends on no other module but anns (status codes): token counting goes through the callback
 * below, which the app wires to the runtime's tokenizer.
 */
#ifndef LOUPE_INGEST_H
#define LOUPE_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"

/* Counts the tokens of `text` (len bytes) with the model's tokenizer; returns the count or a
 * negative number on failure. */
typedef int64_t (*ing_count_tokens_fn)(void *ctx, const char *text, size_t len);

#endif /* LOUPE_INGEST_H */
