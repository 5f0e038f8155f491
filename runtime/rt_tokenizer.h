/*
 * Part of runtime.h: byte-level BPE tokenizer (GPT-2 style byte↔unicode mapping) loaded from a
 * GGUF file's tokenizer.ggml.* keys, with the `llama-bpe` (Llama-3) and `qwen2` pre-tokenizers.
 *
 * Special tokens are never produced from text: rt_tokenize() treats "<|eot_id|>" in a document as
 * plain characters. Only the chat formatter (rt_chat.h) inserts special ids. A tokenizer is
 * immutable after loading and may be used from many threads at once.
 *
 * Any bytes are accepted. Valid UTF-8 is pre-tokenized exactly as Hugging Face tokenizers do;
 * each byte of an invalid UTF-8 sequence becomes its own pre-token (its byte token), and the valid
 * runs between such bytes are pre-tokenized independently. So detokenize(tokenize(x)) == x holds
 * byte for byte for every input, NUL bytes included.
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

/* GGUF token types (tokenizer.ggml.token_type), llama.cpp's numbering. */
enum {
    RT_TOKEN_UNDEFINED = 0,
    RT_TOKEN_NORMAL = 1,
    RT_TOKEN_UNKNOWN = 2,
    RT_TOKEN_CONTROL = 3,      /* special: <|eot_id|>, <|im_start|>, ... */
    RT_TOKEN_USER_DEFINED = 4, /* added tokens that are not special; also never matched in text */
    RT_TOKEN_UNUSED = 5,
    RT_TOKEN_BYTE = 6,
};

/* Builds the tokenizer from a GGUF file's metadata; fails clearly (LOUPE_ERR_UNSUPPORTED) for
 * models other than `gpt2` (byte-level BPE) or unknown pre-tokenizers, and with
 * LOUPE_ERR_FORMAT for inconsistent data (ids out of range, merges naming unknown tokens, a
 * vocabulary without all 256 byte tokens). Free with rt_tokenizer_destroy(). */
loupe_status rt_tokenizer_load(const rt_gguf *g, rt_tokenizer **out, loupe_err *err);
void rt_tokenizer_destroy(rt_tokenizer *t); /* NULL is fine */

uint32_t rt_tokenizer_n_vocab(const rt_tokenizer *t);
/* "llama-bpe" or "qwen2": the pre-tokenizer in use. */
const char *rt_tokenizer_pre_name(const rt_tokenizer *t);
int32_t rt_tokenizer_bos(const rt_tokenizer *t); /* -1 if none */
int32_t rt_tokenizer_eos(const rt_tokenizer *t); /* -1 if none */
int32_t rt_tokenizer_eot(const rt_tokenizer *t); /* -1 if none */
/* Id of a special/control (or user-defined) token by its text ("<|eot_id|>"), or -1. */
int32_t rt_tokenizer_find_special(const rt_tokenizer *t, const char *text);
/* True for tokens that end generation (eos, eot, <|eot_id|>, <|im_end|>, <|end_of_text|>, ...). */
bool rt_tokenizer_is_eog(const rt_tokenizer *t, int32_t id);
/* True for control and user-defined tokens (the ones text never produces); false out of range. */
bool rt_tokenizer_is_special(const rt_tokenizer *t, int32_t id);

/* Appends the ids of `text` (len bytes, any bytes allowed) to `out`. Fails only for lack of
 * memory (or an internal regex failure); on failure `out` may hold a partial result. */
loupe_status rt_tokenize(const rt_tokenizer *t, const char *text, size_t len, rt_ids *out,
                         loupe_err *err);
/* Same result as rt_tokenize, splitting large inputs across n_threads (0 = all cores) at
 * boundaries where the pre-tokenizer provably splits: after a '\n' followed by a printable
 * non-space ASCII character, or at a space between two ASCII letters. Chunks are at least
 * 256 KiB, so inputs under 512 KiB are tokenized on the calling thread. */
loupe_status rt_tokenize_parallel(const rt_tokenizer *t, const char *text, size_t len,
                                  int n_threads, rt_ids *out, loupe_err *err);

/* The raw bytes a token stands for (byte-level mapping undone); special tokens give their text.
 * The bytes are followed by a NUL (not counted in *len). NULL (and *len = 0) if id is out of
 * range. */
const char *rt_token_bytes(const rt_tokenizer *t, int32_t id, size_t *len);

/* Streaming detokenizer: emits only complete UTF-8 sequences, holding back a token's trailing
 * bytes until the sequence completes (or is proven invalid, then emitted as is). The
 * concatenation of everything emitted (pushes, then the final flush) equals the concatenation of
 * the tokens' bytes exactly. */
typedef struct {
    char pending[8]; /* (n_pending) bytes of an incomplete UTF-8 sequence, at most 3 */
    size_t n_pending;
} rt_detok_state;

void rt_detok_init(rt_detok_state *s);
/* Appends the bytes now complete after token `id` to out (cap bytes) and returns the number
 * written. *need (may be NULL) receives the number of bytes this push has to write; when that is
 * more than cap, nothing is written or consumed (the state is unchanged) and 0 is returned, so
 * the caller can grow `out` and push the same id again. An out-of-range id contributes nothing. */
size_t rt_detok_push(const rt_tokenizer *t, rt_detok_state *s, int32_t id, char *out, size_t cap,
                     size_t *need);
/* Flushes whatever is held (end of stream); cap >= 8 always suffices (with less, and more held
 * than fits, nothing is written and 0 is returned). */
size_t rt_detok_flush(rt_detok_state *s, char *out, size_t cap);

/* Reads a Hugging Face tokenizer.json (+ optional tokenizer_config.json, may be NULL, for the
 * chat template and bos/eos) and writes the tokenizer.ggml.* keys (model, pre, tokens,
 * token_type, merges, bos/eos/eot ids) and tokenizer.chat_template into a GGUF being written.
 * Only byte-level BPE tokenizers with a Llama-3 or Qwen2 pre-tokenizer regex are accepted. On
 * success *n_vocab receives the vocabulary size (for the embedding shape). */
loupe_status rt_tokenizer_json_to_gguf(const char *tokenizer_json, const char *tokenizer_config,
                                       rt_gguf_writer *w, uint32_t *n_vocab, loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_RT_TOKENIZER_H */
