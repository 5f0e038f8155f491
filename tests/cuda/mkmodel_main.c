/*
 * `loupe_mkmodel`: app/cmd_mkmodel.c as a program of its own, for the stand-alone CUDA test build
 * (tests/cuda as a top-level project), where the tokenizer and the rest of the app are not
 * built. --tokenizer is therefore unavailable there; the built-in byte-level vocabulary works.
 */
#include "app/app.h"
#include "runtime/runtime.h"

loupe_status rt_tokenizer_json_to_gguf(const char *tokenizer_json, const char *tokenizer_config,
                                       rt_gguf_writer *w, uint32_t *n_vocab, loupe_err *err)
{
    (void)tokenizer_config;
    (void)w;
    (void)n_vocab;
    return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                      "%s: this stand-alone mkmodel has no tokenizer support", tokenizer_json);
}

int main(int argc, char **argv)
{
    return cmd_mkmodel(argc, argv);
}
