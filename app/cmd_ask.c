/*
 * `loupe ask [OPTIONS] FILE... -q QUESTION [--system S]`: the first end-to-end path. Reads plain
 * text files, lays them out as docs/LAYOUT.md describes (<context>, <sources>, one <document> per
 * file, </context>, a blank line, the question) as the user's turn, renders the chat format,
 * prefills on the CPU and streams the sampled answer to stdout until an end-of-generation token,
 * --max-tokens, or the end of the context. (Directories, URLs and PDFs arrive with ingest.)
 */
#include "app/app.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/runtime.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: loupe ask [OPTIONS] FILE... -q QUESTION [--system TEXT]\n"
               "Answers QUESTION about the files, streaming the answer to stdout.\n"
               "options: --model FILE, --ctx N, --threads N, --seed N, --temp T, --top-k N,\n"
               "         --top-p P, --min-p P, --repeat-penalty R, --max-tokens N\n");
}

/* ==== The user turn (LAYOUT.md) =========================================================== */

typedef struct {
    char *p; /* (len) bytes, NUL-terminated */
    size_t len, cap;
} ask_buf;

static loupe_status buf_add(ask_buf *b, const char *s, size_t n, loupe_err *err)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory laying out %zu bytes", cap);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return LOUPE_OK;
}

static loupe_status buf_str(ask_buf *b, const char *s, loupe_err *err)
{
    return buf_add(b, s, strlen(s), err);
}

/* An attribute value with & " < > escaped. */
static loupe_status buf_attr(ask_buf *b, const char *s, loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    for (; *s && !st; s++) {
        switch (*s) {
        case '&': st = buf_str(b, "&amp;", err); break;
        case '"': st = buf_str(b, "&quot;", err); break;
        case '<': st = buf_str(b, "&lt;", err); break;
        case '>': st = buf_str(b, "&gt;", err); break;
        default: st = buf_add(b, s, 1, err);
        }
    }
    return st;
}

static loupe_status append_file(ask_buf *b, const char *path, loupe_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return loupe_fail(err, LOUPE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    loupe_status st = LOUPE_OK;
    char chunk[65536];
    size_t n, start = b->len;
    while (!st && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        st = buf_add(b, chunk, n, err);
    if (!st && ferror(f))
        st = loupe_fail(err, LOUPE_ERR_IO, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    if (!st && (b->len == start || b->p[b->len - 1] != '\n'))
        st = buf_str(b, "\n", err);
    return st;
}

static loupe_status build_user_turn(char **files, int n_files, const char *question, ask_buf *b,
                                    loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    if (n_files > 0) {
        st = buf_str(b, "<context>\n<sources>\n", err);
        for (int i = 0; i < n_files && !st; i++)
            if (!(st = buf_str(b, files[i], err)))
                st = buf_str(b, "\n", err);
        if (!st)
            st = buf_str(b, "</sources>\n", err);
        for (int i = 0; i < n_files && !st; i++) {
            if ((st = buf_str(b, "<document path=\"", err)) || (st = buf_attr(b, files[i], err)) ||
                (st = buf_str(b, "\">\n", err)) || (st = append_file(b, files[i], err)))
                break;
            st = buf_str(b, "</document>\n", err);
        }
        if (!st)
            st = buf_str(b, "</context>\n\n", err);
    }
    if (!st)
        st = buf_str(b, question, err);
    return st;
}

/* ==== Prefill progress ==================================================================== */

typedef struct {
    struct timespec start;
    bool shown;
} ask_progress;

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

static bool on_progress(void *user, size_t done, size_t total)
{
    ask_progress *p = user;
    double s = since(&p->start);
    if (s > 1.0 || p->shown) {
        fprintf(stderr, "\rloupe: prefill %zu/%zu tokens (%d%%), %.0f tokens/s", done, total,
                (int)(100.0 * (double)done / (double)total), (double)done / s);
        if (done == total)
            fputc('\n', stderr);
        p->shown = true;
    }
    return true;
}

/* ==== The command ========================================================================= */

static bool blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    return true;
}

int cmd_ask(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    const char *question = NULL, *system = NULL, *session = NULL;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    int n_files = 0;
    if (!files)
        return app_usage("ask", "out of memory");
    for (int i = 1; i < argc; i++) {
        int r = app_opts_parse(&o, "ask", argc, argv, &i);
        if (r == 0 && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) {
            usage(stdout);
            free(files);
            return APP_EXIT_OK;
        }
        if (r == 0)
            r = app_opt_value("ask", "-q", argc, argv, &i, &question);
        if (r == 0)
            r = app_opt_value("ask", "--question", argc, argv, &i, &question);
        if (r == 0)
            r = app_opt_value("ask", "--system", argc, argv, &i, &system);
        if (r == 0)
            r = app_opt_value("ask", "--session", argc, argv, &i, &session);
        if (r > 1) {
            free(files);
            return r;
        }
        if (r == 1)
            continue;
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            free(files);
            return app_usage("ask", "unknown option '%s'", argv[i]);
        }
        files[n_files++] = argv[i];
    }
    if (!question) {
        free(files);
        return app_usage("ask", "a question is required: -q QUESTION");
    }

    int rc = APP_EXIT_FAIL;
    loupe_err err = {0};
    ask_buf user = {0};
    rt_ids ids;
    rt_ids_init(&ids);
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    rt_tokenizer *tok = NULL;
    rt_ctx *c = NULL;
    rt_sampler *smp = NULL;
    char *out = NULL;
    const size_t out_cap = 1 << 16;

    if (blank(question)) {
        loupe_fail(&err, LOUPE_ERR_INVALID, "the question is empty");
        goto fail;
    }
    if (session) {
        loupe_fail(&err, LOUPE_ERR_UNSUPPORTED, "--session is not supported yet");
        goto fail;
    }
    if (o.backend == APP_BACKEND_CUDA) {
        loupe_fail(&err, LOUPE_ERR_UNSUPPORTED, "the CUDA backend is not built yet; use --backend cpu");
        goto fail;
    }
    if (build_user_turn(files, n_files, question, &user, &err))
        goto fail;
    const char *path = app_model_path(&o);
    rt_chat_format fmt;
    if (rt_gguf_open(path, &g, &err) || rt_model_load(g, &m, &err) ||
        rt_tokenizer_load(g, &tok, &err) || rt_chat_format_detect(g, tok, &fmt, &err))
        goto fail;
    rt_chat_msg msgs[2];
    size_t n_msgs = 0;
    if (system)
        msgs[n_msgs++] = (rt_chat_msg){RT_ROLE_SYSTEM, system, strlen(system)};
    msgs[n_msgs++] = (rt_chat_msg){RT_ROLE_USER, user.p, user.len};
    if (rt_chat_render(tok, fmt, msgs, n_msgs, true, &ids, &err))
        goto fail;

    const rt_hparams *hp = rt_model_hparams(m);
    uint64_t limit = o.ctx ? (uint64_t)o.ctx : hp->n_ctx_train;
    if (hp->n_ctx_train && limit > hp->n_ctx_train) {
        loupe_fail(&err, LOUPE_ERR_TOO_LONG, "--ctx %lld is longer than the model's context of %u "
                   "tokens", (long long)o.ctx, hp->n_ctx_train);
        goto fail;
    }
    if (ids.n >= limit) {
        loupe_fail(&err, LOUPE_ERR_TOO_LONG,
                   "the prompt is %zu tokens but the context allows %llu (and the answer needs "
                   "room)", ids.n, (unsigned long long)limit);
        goto fail;
    }
    rt_ctx_params cp;
    rt_ctx_params_init(&cp);
    uint64_t want = ids.n + (uint64_t)o.max_tokens;
    cp.n_ctx = (uint32_t)(want < limit ? want : limit);
    cp.n_threads = o.threads;
    rt_sampler_params sp;
    rt_sampler_params_init(&sp);
    sp.temp = o.temp;
    sp.top_k = o.top_k;
    sp.top_p = o.top_p;
    sp.min_p = o.min_p;
    sp.repeat_penalty = o.repeat_penalty;
    sp.seed = o.seed_set ? o.seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    out = malloc(out_cap);
    if (!out) {
        loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (rt_ctx_create(m, &cp, &c, &err) || rt_sampler_create(&sp, hp->n_vocab, &smp, &err))
        goto fail;
    for (size_t i = 0; i < ids.n; i++)
        rt_sampler_accept(smp, ids.ids[i]);

    ask_progress prog = {.shown = false};
    clock_gettime(CLOCK_MONOTONIC, &prog.start);
    rt_ctx_set_progress(c, on_progress, &prog);
    if (rt_ctx_prefill(c, ids.ids, ids.n, NULL, &err))
        goto fail;

    rt_detok_state ds;
    rt_detok_init(&ds);
    bool ended_nl = true;
    for (int n_gen = 0; n_gen < o.max_tokens; n_gen++) {
        int32_t id = rt_sampler_sample(smp, rt_ctx_logits(c));
        if (rt_tokenizer_is_eog(tok, id))
            break;
        rt_sampler_accept(smp, id);
        if (rt_tokenizer_is_special(tok, id))
            goto next; /* control tokens are not text (llama.cpp hides them too) */
        size_t need = 0, w = rt_detok_push(tok, &ds, id, out, out_cap, &need);
        if (w == 0 && need > out_cap) { /* a token longer than 64 KiB: print it as it is */
            size_t len = 0;
            const char *b = rt_token_bytes(tok, id, &len);
            fwrite(b, 1, len, stdout);
        }
        if (w > 0) {
            fwrite(out, 1, w, stdout);
            ended_nl = out[w - 1] == '\n';
        }
        fflush(stdout);
    next:
        if (rt_ctx_n_past(c) >= rt_ctx_n_ctx(c))
            break; /* the context is full: the answer ends here */
        if (rt_ctx_decode(c, id, &err))
            goto fail;
    }
    size_t w = rt_detok_flush(&ds, out, out_cap);
    if (w > 0) {
        fwrite(out, 1, w, stdout);
        ended_nl = out[w - 1] == '\n';
    }
    if (!ended_nl)
        fputc('\n', stdout);
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "writing the answer to stdout failed");
        goto fail;
    }
    rc = APP_EXIT_OK;
    goto done;
fail:
    rc = app_fail("ask", &err);
done:
    free(out);
    rt_sampler_destroy(smp);
    rt_ctx_destroy(c);
    rt_tokenizer_destroy(tok);
    rt_model_destroy(m);
    rt_gguf_close(g);
    rt_ids_free(&ids);
    free(user.p);
    free(files);
    return rc;
}
