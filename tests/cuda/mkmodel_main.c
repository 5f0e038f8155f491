/*
 * `loupe_mkmodel`: app/cmd_mkmodel.c as a program of its own, for the stand-alone CUDA test build
 * (tests/cuda as a top-level project), where the tokenizer and the rest of the app are not
 * built. --tokenizer is therefore unavailable there; the built-in byte-level vocabulary works.
 *
 * Benchmark models are scratch files: with LOUPE_MKMODEL_NO_FSYNC=1 in the environment
 * (run_device.sh sets it) the GGUF writer's final fsync is skipped, because on a slow disk it
 * would wait minutes for a 16 GB model to reach the disk before the benchmark may read it back
 * from the page cache anyway. This program's own fsync() takes the place of libc's for the
 * writer (a definition in the executable wins at link time); without the variable it is the
 * plain system call.
 */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "app/app.h"
#include "runtime/runtime.h"

int fsync(int fd)
{
    const char *skip = getenv("LOUPE_MKMODEL_NO_FSYNC");
    if (skip && skip[0] == '1')
        return 0;
    return (int)syscall(SYS_fsync, fd);
}

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
