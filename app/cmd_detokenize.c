/* `loupe detokenize --model FILE`: token ids on stdin (separated by whitespace) → the bytes they
 * stand for on stdout, exactly (special tokens print their text). Every id is checked before
 * anything is written, so a bad id produces an error and no partial output. */
#include "app/app.h"
#include "runtime/runtime.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: loupe detokenize [--model FILE] < ids\n"
    "Prints the text of the token ids on stdin (decimal, separated by whitespace).\n";

int cmd_detokenize(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return APP_EXIT_OK;
        }
        int r = app_opts_parse(&o, "detokenize", argc, argv, &i);
        if (r > 1)
            return r;
        if (r == 0)
            return app_usage("detokenize", "unknown argument '%s'", argv[i]);
    }
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_tokenizer *t = NULL;
    rt_ids ids;
    rt_ids_init(&ids);
    int rc = APP_EXIT_OK;
    if (rt_gguf_open(app_model_path(&o), &g, &err) || rt_tokenizer_load(g, &t, &err)) {
        rc = app_fail("detokenize", &err);
        goto done;
    }
    uint32_t n_vocab = rt_tokenizer_n_vocab(t);
    char word[32];
    size_t n = 0, index = 0;
    for (int c = 0;;) {
        c = getchar();
        if (c != EOF && !isspace(c)) {
            if (n + 1 < sizeof word)
                word[n] = (char)c;
            n++;
            continue;
        }
        if (n) {
            bool too_long = n >= sizeof word;
            word[too_long ? sizeof word - 1 : n] = '\0';
            char *end = NULL;
            errno = 0;
            long long v = too_long ? -1 : strtoll(word, &end, 10);
            if (too_long || errno || *end || word[0] == '+' || word[0] == '-') {
                loupe_fail(&err, LOUPE_ERR_INVALID, "'%s%s' (item %zu on stdin) is not a token id",
                           word, too_long ? "..." : "", index + 1);
                rc = app_fail("detokenize", &err);
                goto done;
            }
            if (v >= (long long)n_vocab) {
                loupe_fail(&err, LOUPE_ERR_RANGE,
                           "token id %lld (item %zu on stdin) is outside the vocabulary "
                           "(0..%u)", v, index + 1, n_vocab - 1);
                rc = app_fail("detokenize", &err);
                goto done;
            }
            if (rt_ids_push(&ids, (int32_t)v, &err)) {
                rc = app_fail("detokenize", &err);
                goto done;
            }
            index++;
            n = 0;
        }
        if (c == EOF)
            break;
    }
    if (ferror(stdin)) {
        loupe_fail(&err, LOUPE_ERR_IO, "cannot read stdin: %s", strerror(errno));
        rc = app_fail("detokenize", &err);
        goto done;
    }
    for (size_t i = 0; i < ids.n; i++) {
        size_t len;
        const char *b = rt_token_bytes(t, ids.ids[i], &len);
        fwrite(b, 1, len, stdout);
    }
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "cannot write stdout: %s", strerror(errno));
        rc = app_fail("detokenize", &err);
    }
done:
    rt_ids_free(&ids);
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    return rc;
}
