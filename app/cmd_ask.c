/*
 * `loupe ask [OPTIONS] SOURCE... -q QUESTION [--system S]`: the end-to-end path. Ingests the
 * sources (files, directories, URLs, PDFs, - for stdin) into the layout of docs/LAYOUT.md, within
 * the context left after the question and --max-tokens of answer; puts the question after a blank
 * line as the user's turn; renders the chat format; prefills on the CPU and streams the sampled
 * answer to stdout until an end-of-generation token, --max-tokens, or the end of the context
 * (which is said on stderr: an answer is never cut silently).
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
    fprintf(f, "usage: loupe ask [OPTIONS] SOURCE... -q QUESTION [--system TEXT]\n"
               "Answers QUESTION about the sources (files, directories, http(s) URLs, PDFs, - for\n"
               "stdin), streaming the answer to stdout.\n"
               "options: --model FILE, --ctx N, --threads N, --seed N, --temp T, --top-k N,\n"
               "         --top-p P, --min-p P, --repeat-penalty R, --max-tokens N\n%s",
            app_sources_help());
}

/* ==== The user turn (LAYOUT.md) =========================================================== */

/* The laid-out sources (if any), a blank line, the question; malloc'd into *out. */
static loupe_status build_user_turn(const ing_result *r, const char *question, char **out,
                                    size_t *out_len, loupe_err *err)
{
    size_t ctx_len = r ? r->len : 0, q_len = strlen(question);
    char *p = malloc(ctx_len + 1 + q_len + 1);
    if (!p)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory building a %zu-byte prompt",
                          ctx_len + q_len);
    size_t n = 0;
    if (ctx_len) {
        memcpy(p, r->text, ctx_len);
        n = ctx_len;
        p[n++] = '\n';
    }
    memcpy(p + n, question, q_len);
    n += q_len;
    p[n] = '\0';
    *out = p;
    *out_len = n;
    return LOUPE_OK;
}

/* Tokens the chat format and the question take around the sources (the turn with no sources). */
static loupe_status count_overhead(const rt_tokenizer *tok, rt_chat_format fmt, const char *system,
                                   const char *question, size_t *out, loupe_err *err)
{
    rt_chat_msg msgs[2];
    size_t n = 0;
    if (system)
        msgs[n++] = (rt_chat_msg){RT_ROLE_SYSTEM, system, strlen(system)};
    msgs[n++] = (rt_chat_msg){RT_ROLE_USER, question, strlen(question)};
    rt_ids ids;
    rt_ids_init(&ids);
    loupe_status st = rt_chat_render(tok, fmt, msgs, n, true, &ids, err);
    *out = ids.n + 2; /* the blank line between context and question may add a token or two */
    rt_ids_free(&ids);
    return st;
}

/* ==== Prefill progress ==================================================================== */

/* The prompt's progress line, per phase (`what`: the sources' prefill, then in a retrieval mode
 * the question's extension), shown once a phase passes a second, and in every phase after.
 * `then`: what follows the sources' prefill inside the same call (the retrieval indexes' build),
 * announced when the last token is in so that the wait is not silent. */
typedef struct {
    const char *what;
    struct timespec start;  /* the phase's */
    struct timespec all_in; /* when its last token was in (then's start) */
    bool shown;
    const char *then;
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
        fprintf(stderr, "\rloupe: %s %zu/%zu tokens (%d%%), %.0f tokens/s", p->what, done, total,
                (int)(100.0 * (double)done / (double)total), (double)done / s);
        if (done == total) {
            fputc('\n', stderr);
            if (p->then)
                fprintf(stderr, "loupe: %s ...", p->then);
            clock_gettime(CLOCK_MONOTONIC, &p->all_in);
        }
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

/* Where the question's tokens begin in the prompt: the last place its own tokenisation occurs
 * (the user turn ends with it, after a blank line that ends a pre-token). Falls back to the last
 * token, so at least that goes through the decode path. */
static loupe_status question_start(const rt_tokenizer *tok, const char *question,
                                   const rt_ids *ids, size_t *start, loupe_err *err)
{
    rt_ids q;
    rt_ids_init(&q);
    loupe_status st = rt_tokenize(tok, question, strlen(question), &q, err);
    *start = ids->n - 1;
    if (!st && q.n > 0 && q.n < ids->n)
        for (size_t i = ids->n - q.n + 1; i-- > 0;)
            if (!memcmp(ids->ids + i, q.ids, q.n * sizeof *q.ids)) {
                *start = i;
                break;
            }
    rt_ids_free(&q);
    return st;
}

int cmd_ask(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    const char *question = NULL, *system = NULL, *session = NULL;
    app_sources src;
    app_sources_init(&src);
    for (int i = 1; i < argc; i++) {
        int r = app_opts_parse(&o, "ask", argc, argv, &i);
        if (r == 0 && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) {
            usage(stdout);
            app_sources_free(&src);
            return APP_EXIT_OK;
        }
        if (r == 0)
            r = app_sources_parse(&src, "ask", argc, argv, &i);
        if (r == 0)
            r = app_opt_value("ask", "-q", argc, argv, &i, &question);
        if (r == 0)
            r = app_opt_value("ask", "--question", argc, argv, &i, &question);
        if (r == 0)
            r = app_opt_value("ask", "--system", argc, argv, &i, &system);
        if (r == 0)
            r = app_opt_value("ask", "--session", argc, argv, &i, &session);
        if (r == 0 && argv[i][0] == '-' && argv[i][1] != '\0')
            r = app_usage("ask", "unknown option '%s'", argv[i]);
        if (r == 0)
            r = app_sources_add(&src, "ask", argv[i]);
        if (r > 1) {
            app_sources_free(&src);
            return r;
        }
    }
    if (!question) {
        app_sources_free(&src);
        return app_usage("ask", "a question is required: -q QUESTION");
    }
    app_sources_finish(&src);

    int rc = APP_EXIT_FAIL;
    loupe_err err = {0};
    char *user = NULL;
    size_t user_len = 0;
    ing_result *docs = NULL;
    app_counter cnt;
    rt_ids ids;
    rt_ids_init(&ids);
    app_chat_model cm = {0};
    rt_model *m = NULL;
    rt_tokenizer *tok = NULL;
    rt_runner *c = NULL;
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
    if (app_chat_model_open(&o, &cm, &err))
        goto fail;
    m = cm.model;
    tok = cm.tok;
    rt_chat_format fmt = cm.fmt;
    const rt_hparams *hp = rt_model_hparams(m);
    uint64_t limit = 0;
    if (app_context_limit(&o, hp, &limit, &err))
        goto fail;

    /* The sources get what the chat format, the question and the answer leave of the context. */
    if (src.n_paths > 0) {
        size_t overhead = 0;
        if (count_overhead(tok, fmt, system, question, &overhead, &err))
            goto fail;
        uint64_t reserve = overhead + (uint64_t)o.max_tokens;
        if (reserve >= limit) {
            loupe_fail(&err, LOUPE_ERR_TOO_LONG,
                       "the question (%zu tokens with the chat format) and --max-tokens %d leave no "
                       "room for the sources in a context of %llu tokens", overhead, o.max_tokens,
                       (unsigned long long)limit);
            goto fail;
        }
        src.io.ctx = (int64_t)(limit - reserve);
        src.io.threads = o.threads;
        app_counter_attach(&cnt, tok, o.threads, &src.io);
        loupe_status st = ing_ingest(src.paths, src.n_paths, &src.io, &docs, &err);
        if (st == LOUPE_ERR_TOO_LONG && docs) {
            for (size_t i = 0; i < docs->n_docs; i++)
                if ((docs->docs[i].status == ING_DOC_TRUNCATED ||
                     docs->docs[i].status == ING_DOC_DROPPED) && docs->docs[i].reason)
                    fprintf(stderr, "loupe: ask:   %s: %s\n", docs->docs[i].path,
                            docs->docs[i].reason);
            loupe_err_prefix(&err, "the sources do not fit (with --max-tokens %d of answer): ",
                             o.max_tokens);
            goto fail;
        }
        if (st)
            goto fail;
        for (size_t i = 0; i < docs->n_docs; i++)
            if (docs->docs[i].status != ING_DOC_INCLUDED)
                fprintf(stderr, "loupe: ask: %s %s: %s\n", docs->docs[i].path,
                        ing_doc_status_name(docs->docs[i].status),
                        docs->docs[i].reason ? docs->docs[i].reason : "");
    }
    if (build_user_turn(docs, question, &user, &user_len, &err))
        goto fail;
    rt_chat_msg msgs[2];
    size_t n_msgs = 0;
    if (system)
        msgs[n_msgs++] = (rt_chat_msg){RT_ROLE_SYSTEM, system, strlen(system)};
    msgs[n_msgs++] = (rt_chat_msg){RT_ROLE_USER, user, user_len};
    if (rt_chat_render(tok, fmt, msgs, n_msgs, true, &ids, &err))
        goto fail;
    if (ids.n >= limit) {
        loupe_fail(&err, LOUPE_ERR_TOO_LONG,
                   "the prompt is %zu tokens but the context allows %llu (and the answer needs "
                   "room)", ids.n, (unsigned long long)limit);
        goto fail;
    }
    rt_runner_params rp;
    app_runner_params(&o, &rp);
    uint64_t want = ids.n + (uint64_t)o.max_tokens;
    rp.n_ctx = (uint32_t)(want < limit ? want : limit);
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
    if (rt_runner_create(m, &rp, &c, &err) || rt_sampler_create(&sp, hp->n_vocab, &smp, &err))
        goto fail;
    for (size_t i = 0; i < ids.n; i++)
        rt_sampler_accept(smp, ids.ids[i]);

    /* In a retrieval mode the sources are the context's prefill and the question extends it
     * through the retrieval path, as a follow-up question to a saved session would. */
    const rt_attn_mode mode = rt_runner_attention(c);
    size_t n_pre = ids.n;
    if (mode != RT_ATTN_FULL && question_start(tok, question, &ids, &n_pre, &err))
        goto fail;
    ask_progress prog = {.what = "prefill",
                         .then = mode == RT_ATTN_RETRIEVAL || mode == RT_ATTN_IVF
                                     ? "building the indexes" /* flat has none */
                                     : NULL};
    clock_gettime(CLOCK_MONOTONIC, &prog.start);
    prog.all_in = prog.start;
    rt_runner_set_progress(c, on_progress, &prog);
    const loupe_status st_pre = rt_runner_prefill(c, ids.ids, n_pre, NULL, &err);
    if (prog.shown && prog.then) { /* the wait after the last token (on the GPU the builds also
                                      run beside the prefill's layers), or the line ended */
        if (st_pre)
            fputc('\n', stderr);
        else
            fprintf(stderr, " %.1f s\n", since(&prog.all_in));
    }
    if (st_pre)
        goto fail;
    if (n_pre < ids.n) { /* the question: a phase of its own */
        prog.what = "question";
        prog.then = NULL;
        clock_gettime(CLOCK_MONOTONIC, &prog.start);
        if (rt_runner_prefill(c, ids.ids + n_pre, ids.n - n_pre, NULL, &err))
            goto fail;
    }
    /* The answer's tokens go through the runner one by one: in a retrieval mode each is a
     * one-token extension, which would report progress between the answer's words. */
    rt_runner_set_progress(c, NULL, NULL);

    rt_detok_state ds;
    rt_detok_init(&ds);
    bool ended_nl = true, context_full = false;
    for (int n_gen = 0; n_gen < o.max_tokens; n_gen++) {
        const float *logits = rt_runner_logits(c, &err);
        if (!logits)
            goto fail;
        int32_t id = rt_sampler_sample(smp, logits);
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
        if (rt_runner_n_past(c) >= rt_runner_n_ctx(c)) {
            context_full = true;
            break;
        }
        if (rt_runner_decode(c, id, &err))
            goto fail;
    }
    size_t w = rt_detok_flush(&ds, out, out_cap);
    if (w > 0) {
        fwrite(out, 1, w, stdout);
        ended_nl = out[w - 1] == '\n';
    }
    if (!ended_nl)
        fputc('\n', stdout);
    if (context_full)
        fprintf(stderr, "loupe: ask: the answer stopped at the end of the context (%u tokens); "
                        "a larger --ctx or fewer sources leave it more room\n", rt_runner_n_ctx(c));
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
    rt_runner_destroy(c);
    app_chat_model_close(&cm);
    rt_ids_free(&ids);
    free(user);
    ing_result_destroy(docs);
    app_sources_free(&src);
    return rc;
}
