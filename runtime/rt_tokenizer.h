/*
 * Part of runtime.h: byte-level BPE tokenizer (GPT-2 style byte↔unicode mapping) loaded from a
 * GGUF file's tokenizer.ggml.* keys, with the `llama-bpe` (Llama-3) and `qwen2` pre-tokenizers.
 *
 * Special tokens are never produced from text: rt_tokenize() treats "<|eot_id|>" in a document as
 * plain characters. Only the chat formatter (rt_chat.h) inserts special ids. A tokenizer is
 * immutable after loading and may be used from many threads at once.
 */
#ifndef LOUPE_RT_TOKENIZER_H
#define LOUPE_RT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"
#include "runtime/rt_gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A growable array of token ids, caller-owned (rt_ids_init / rt_ids_free). */
typedef struct {
    int32_t *ids; /* (n) */
    size_t n;
    size_t cap;
} rt_ids;

void rt_ids_init(rt_ids *v);
void rt_ids_free(rt_ids *v);
loupe_status rt_ids_push(rt_ids *v, int32_t id, loupe_err *err);
loupe_status rt_ids_reserve(rt_ids *v, size_t cap, loupe_err *err);

typedef struct rt_tokenizer rt_tokenizer;

/* Builds the tokenizer from a GGUF file's metadata; fails clearly for models other than `gpt2`
 * (byte-level BPE) or unknown pre-tokenizers. Free with rt_tokenizer_destroy(). */
loupe_status rt_tokenizer_load(const rt_gguf *g, rt_tokenizer **out, loupe_err *err);
void rt_tokenizer_destroy(rt_tokenizer *t); /* NULL is fine */

uint32_t rt_tokenizer_n_vocab(const rt_tokenizer *t);
int32_t rt_tokenizer_bos(const rt_tokenizer *t); /* -1 if none */
int32_t rt_tokenizer_eos(const rt_tokenizer *t); /* -1 if none */
/* Id of a special/control token by its text ("<|eot_id|>"), or -1. */
int32_t rt_tokenizer_find_special(const rt_tokenizer *t, const char *text);
/* True for tokens that end generation (eos, eot, <|im_end|>, ...). */
bool rt_tokenizer_is_eog(const rt_tokenizer *t, int32_t id);

/* Appends the ids of `text` (len bytes, any bytes allowed) to `out`. */
loupe_status rt_tokenize(const rt_tokenizer *t, const char *text, size_t len, rt_ids *out,
                         loupe_err *err);
/* Same result as rt_tokenize, splitting large inputs across n_threads (0 = all cores) at
 * boundaries where the pre-tokenizer is known to split. */
loupe_status rt_tokenize_parallel(const rt_tokenizer *t, const char *text, size_t len,
                                  int n_threads, rt_ids *out, loupe_err *err);

/* The raw bytes a token stands for (byte-level mapping undone); special tokens give their text. */
const char *rt_token_bytes(const rt_tokenizer *t, int32_t id, size_t *len);

/* Streaming detokenizer: emits only complete UTF-8 sequences, holding back a token's trailing
 * bytes until the sequence completes (or is proven invalid, then emitted as is). */
typedef struct {
    char pending[8];
    size_t n_pending;
} rt_detok_state;

void rt_detok_init(rt_detok_state *s);
/* Appends the bytes now complete after token `id` to out (cap bytes); returns the number written,
 * or sets *need to the required capacity and returns 0 when out is too small. */
size_t rt_detok_push(const rt_tokenizer *t, rt_detok_state *s, int32_t id, char *out, size_t cap,
                     size_t *need);
/* Flushes whatever is held (end of stream). */
size_t rt_detok_flush(rt_detok_state *s, char *out, size_t cap);

/* Reads a Hugging Face tokenizer.json (+ optional tokenizer_config.json for the chat template and
 * bos/eos) and writes the tokenizer.ggml.* keys into a GGUF being written. On success *n_vocab
 * receives the vocabulary size (for the embedding shape). */
loupe_status rt_tokenizer_json_to_gguf(const char *tokenizer_json, const char *tokenizer_config,
                                       rt_gguf_writer *w, uint32_t *n_vocab, loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_RT_TOKENIZER_H */
