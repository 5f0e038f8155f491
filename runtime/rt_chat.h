/*
 * Part of runtime.h: chat formats. Turns a conversation into token ids with the model's special
 * tokens (the only place special ids are produced): Llama-3 and ChatML (Qwen).
 *
 *   Llama-3: <|begin_of_text|> then per message
 *            <|start_header_id|>ROLE<|end_header_id|>\n\nTEXT<|eot_id|>
 *            (TEXT with surrounding whitespace trimmed, as the Llama-3 templates' `| trim` does);
 *            generation prompt <|start_header_id|>assistant<|end_header_id|>\n\n
 *   ChatML:  per message <|im_start|>ROLE\nTEXT<|im_end|>\n, no BOS;
 *            generation prompt <|im_start|>assistant\n
 *            (Qwen's template adds a default system message when the conversation has none;
 *            loupe always passes its own, so no default is invented here.)
 *
 * The ids are exactly what tokenizing the rendered text would give if special-token strings in
 * it were matched as special tokens and the rest tokenized as plain text; message text itself is
 * always plain text, even where it contains "<|eot_id|>".
 */
#ifndef LOUPE_RT_CHAT_H
#define LOUPE_RT_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "anns/anns.h"
#include "runtime/rt_gguf.h"
#include "runtime/rt_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { RT_CHAT_LLAMA3, RT_CHAT_CHATML } rt_chat_format;
typedef enum { RT_ROLE_SYSTEM, RT_ROLE_USER, RT_ROLE_ASSISTANT } rt_chat_role;

typedef struct {
    rt_chat_role role;
    const char *text; /* UTF-8, len bytes */
    size_t len;
} rt_chat_msg;

/* "llama3" / "chatml" (also "llama-3", "qwen", "qwen2"); false if unknown. */
bool rt_chat_format_parse(const char *name, rt_chat_format *out);
const char *rt_chat_format_name(rt_chat_format f);
/* "system" / "user" / "assistant". */
const char *rt_chat_role_name(rt_chat_role r);
/* Picks the format from tokenizer.chat_template when present (recognising the Llama-3 and ChatML
 * templates by their header tokens), else from the special tokens the vocabulary has; fails
 * (LOUPE_ERR_UNSUPPORTED) if neither matches. `g` may be NULL (vocabulary only). */
loupe_status rt_chat_format_detect(const rt_gguf *g, const rt_tokenizer *t, rt_chat_format *out,
                                   loupe_err *err);

/* Appends the ids of the conversation (BOS where the format has one, each turn with its header
 * and end token; then the assistant header if add_generation_prompt). Message text is tokenized as
 * plain text. Fails (LOUPE_ERR_UNSUPPORTED) when the vocabulary lacks the format's special
 * tokens. */
loupe_status rt_chat_render(const rt_tokenizer *t, rt_chat_format f, const rt_chat_msg *msgs,
                            size_t n, bool add_generation_prompt, rt_ids *out, loupe_err *err);
/* The same conversation as text, exactly as the chat template renders it (for tests and
 * `--verbose`); malloc'd, NUL-terminated, caller frees. */
loupe_status rt_chat_render_text(rt_chat_format f, const rt_chat_msg *msgs, size_t n,
                                 bool add_generation_prompt, char **out, loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_RT_CHAT_H */
