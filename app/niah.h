/*
 * Private to app/: needle-in-a-haystack cases for `loupe bench niah` and `loupe dump-qk`.
 *
 * A case is one prompt in exactly the shape loupe-tiny was trained on (tests/models/data.py, the
 * canonical template of each task): a Llama-3 user turn holding a docs/LAYOUT.md context
 * (<context>, <sources>, one <document> per filler file, </context>), a blank line and the
 * question; the answer is the needle's value, compared after trimming whitespace.
 *
 *   passkey    "The pass key is {5 digits}. Remember it." at a line boundary near the depth;
 *              Q "What is the pass key?"
 *   needles    2..8 lines "The special magic number for {word} is: {7 digits}."; the asked one
 *              at the depth, the others anywhere; Q "What is the special magic number for {word}?"
 *   kv         one document data/{word}.txt of lines "{key}: {value}" (8 hex characters, the
 *              first a digit) filling the context; the pair asked sits at the depth;
 *              Q "What is the value for the key {key}?"
 *   whichfile  Python files only; Q "Which file defines {name}?" for a top-level def/class found
 *              in exactly one document, the one nearest the depth; A the document's path.
 *
 * Held out from training by construction: the filler is the files given (or text generated here
 * that no training document contains: training drew only from the GPU machine's Python, C headers
 * and /usr/share/doc), and every random choice comes from this file's own splitmix64 stream keyed
 * by (seed, task, length, depth, case index), not from data.py's numpy generators.
 *
 * Invariants: a case depends only on the filler, the tokenizer and its spec (same inputs → same
 * ids); the prompt never exceeds spec.length tokens.
 */
#ifndef LOUPE_APP_NIAH_H
#define LOUPE_APP_NIAH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

typedef enum { NIAH_PASSKEY, NIAH_NEEDLES, NIAH_KV, NIAH_WHICHFILE, NIAH_N_TASKS } niah_task;

const char *niah_task_name(niah_task t);
bool niah_task_parse(const char *s, niah_task *out);

/* ---- Filler documents ------------------------------------------------------------------- */

typedef struct niah_filler niah_filler;

/* One document per (path, text) pair, copied; texts that are empty or hold NUL bytes are
 * skipped, and none left is an error. `what` names the source in that error. */
loupe_status niah_filler_from_texts(const rt_tokenizer *t, const char *const *paths,
                                    const char *const *texts, const size_t *lens, size_t n,
                                    const char *what, niah_filler **out, loupe_err *err);
/* Generated documents (prose notes and small Python modules) of about min_tokens tokens in all,
 * deterministic per seed. */
loupe_status niah_filler_builtin(const rt_tokenizer *t, uint64_t seed, size_t min_tokens,
                                 niah_filler **out, loupe_err *err);
void niah_filler_destroy(niah_filler *f); /* NULL is fine */
size_t niah_filler_n_docs(const niah_filler *f);
size_t niah_filler_n_tokens(const niah_filler *f); /* all documents' bodies */
bool niah_filler_has_python(const niah_filler *f);

/* ---- Cases ------------------------------------------------------------------------------ */

typedef struct {
    niah_task task;
    uint32_t length; /* the prompt's token budget (chat headers and question included) */
    double depth;    /* 0..1: where the needle sits within the context */
    uint64_t seed;
    uint32_t index;  /* case number within its cell */
} niah_spec;

typedef struct {
    char *user;          /* the user turn's text (layout + blank line + question) */
    char *question;
    char *answer;
    rt_ids ids;          /* the whole prompt, generation prompt included */
    size_t needle_pos;   /* first token of the needle (or of the defining line) in ids */
    size_t ctx_start;    /* first token of "<context>" in ids */
    size_t ctx_end;      /* first token of "</context>" in ids */
    double depth;        /* measured: (needle_pos - ctx_start) / (ctx_end - ctx_start) */
} niah_case;

/* Builds one case. Fails with LOUPE_ERR_INVALID when the filler cannot serve the task (whichfile
 * without Python files that define a unique name) and LOUPE_ERR_TOO_LONG when the length leaves
 * no room for a context. Free with niah_case_free() (also after a failure). */
loupe_status niah_case_build(const niah_filler *f, const rt_tokenizer *t, rt_chat_format fmt,
                             const niah_spec *s, niah_case *out, loupe_err *err);
void niah_case_free(niah_case *c);

/* True when the generated text, with surrounding whitespace trimmed, equals the answer. */
bool niah_answer_match(const char *generated, size_t len, const char *answer);

#endif /* LOUPE_APP_NIAH_H */
