/* `loupe tokenize --model FILE`: text on stdin → token ids on stdout, space-separated on one
 * line, no BOS; special-token text in the input is plain text (DESIGN.md, command line). Any
 * bytes are accepted, so `loupe tokenize | loupe detokenize` restores the input exactly. */
#include "app/app.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: loupe tokenize [--model FILE] [--threads N] < text\n"
    "Prints the token ids of stdin, space-separated, without BOS. Text that looks like a special\n"
    "token (\"<|eot_id|>\") is tokenized as plain text.\n";

/* Reads all of `f` into a malloc'd buffer. */
static loupe_status read_all(FILE *f, char **out, size_t *len, loupe_err *err)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory reading stdin");
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory reading stdin");
            }
            buf = nb;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) {
            if (ferror(f)) {
                free(buf);
                return loupe_fail(err, LOUPE_ERR_IO, "cannot read stdin: %s", strerror(errno));
            }
            break;
        }
    }
    *out = buf;
    *len = n;
    return LOUPE_OK;
}

int cmd_tokenize(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return APP_EXIT_OK;
        }
        int r = app_opts_parse(&o, "tokenize", argc, argv, &i);
        if (r > 1)
            return r;
        if (r == 0)
            return app_usage("tokenize", "unknown argument '%s'", argv[i]);
    }
    const char *path = app_model_path(&o);
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    rt_ids ids;
    rt_ids_init(&ids);
    int rc = APP_EXIT_OK;
    if (rt_gguf_open(path, &g, &err) || rt_tokenizer_load(g, &t, &err) ||
        read_all(stdin, &text, &len, &err) ||
        rt_tokenize_parallel(t, text, len, o.threads, &ids, &err)) {
        rc = app_fail("tokenize", &err);
        goto done;
    }
    /* Formatted by hand: a million ids print in milliseconds. */
    char buf[1 << 14];
    size_t n = 0;
    for (size_t i = 0; i < ids.n; i++) {
        if (n + 16 > sizeof buf) {
            fwrite(buf, 1, n, stdout);
            n = 0;
        }
        if (i)
            buf[n++] = ' ';
        char digits[12];
        int k = 0;
        uint32_t v = (uint32_t)ids.ids[i];
        do {
            digits[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (k)
            buf[n++] = digits[--k];
    }
    buf[n++] = '\n';
    fwrite(buf, 1, n, stdout);
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "cannot write stdout: %s", strerror(errno));
        rc = app_fail("tokenize", &err);
    }
done:
    rt_ids_free(&ids);
    free(text);
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    return rc;
}
