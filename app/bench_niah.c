/*
 * `loupe bench niah`: needle-in-a-haystack accuracy. For each task × length × depth cell it builds
 * --cases held-out cases (niah_cases.c: the training prompt format over filler the model never
 * saw), prefills each prompt, decodes greedily and scores an exact match of the trimmed answer.
 * Prints accuracy per task and length with one column per depth, plus prefill and decode
 * tokens/s; --csv prints one row per cell.
 *
 * A length is the whole sequence, as in training (prompt + answer): the prompt gets the length
 * minus ANSWER_ROOM tokens, and a length beyond the context (--ctx, else the model's) is flagged
 * and skipped.
 *
 * With --attention retrieval|flat|ivf the case is run the way a session is used: the context (the
 * prompt up to "</context>") is the prefill, with full attention, after which the indexes are
 * built; the rest of the prompt (question, generation prompt) and every answer token go through
 * the retrieval decode path (rt_runner.h). --topk 0 is the static set alone (StreamingLLM).
 */
#include "app/app.h"
#include "app/niah.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { ANSWER_ROOM = 32, MAX_CELLS_AXIS = 32 };

static const char usage_text[] =
    "usage: loupe bench niah [OPTIONS]\n"
    "  --model FILE          (default $LOUPE_MODEL, else the bundled model)\n"
    "  --task LIST           passkey,needles,kv,whichfile (passkey,kv)\n"
    "  --lengths LIST        whole sequence lengths in tokens, prompt + answer (2048,4096)\n"
    "  --depths LIST         needle depths in the context, 0..1 (0,0.25,0.5,0.75,1)\n"
    "  --cases N             cases per cell (5)\n"
    "  --case K              only case K of each cell (the number --show-misses prints)\n"
    "  --seed N              case seed (1); the same seed gives the same cases\n"
    "  --haystack PATH...    filler files or directories (default: generated text)\n"
    "  --attention MODE      full|retrieval|flat|ivf (full); the retrieval modes take --topk,\n"
    "                        --sinks, --window, --ef, --expand, --margin, --seed-lags,\n"
    "                        --interleave,\n"
    "                        --nprobe, --build-queries, --static-max, --index-per,\n"
    "                        --search-group, --degree, --build-k, --prune,\n"
    "                        --prune-nearest, --prune-on, --host-kv, --search-keys\n"
    "  --backend auto|cpu|cuda  --ctx N, --threads N, --gpu-mem SIZE\n"
    "  --list                print each case (tokens, needle position, depth, answer), run nothing\n"
    "  --show-prompts        with --list: also print each case's user turn\n"
    "  --show-misses         print each wrong answer on stderr\n"
    "  --csv                 one header line, then one row per cell\n";

typedef struct {
    double v[MAX_CELLS_AXIS];
    int n;
} dlist;

static int parse_dlist(const char *name, const char *s, double lo, double hi, bool integer,
                       dlist *out)
{
    out->n = 0;
    char buf[512];
    if (strlen(s) >= sizeof buf)
        return app_usage("bench niah", "%s: list too long", name);
    memcpy(buf, s, strlen(s) + 1);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (out->n == MAX_CELLS_AXIS)
            return app_usage("bench niah", "%s: at most %d values", name, MAX_CELLS_AXIS);
        char *end = NULL;
        double v = strtod(tok, &end);
        if (end == tok || *end != '\0' || !(v >= lo && v <= hi) || (integer && v != floor(v)))
            return app_usage("bench niah", "%s: '%s' is not %s in %g..%g", name, tok,
                             integer ? "an integer" : "a number", lo, hi);
        out->v[out->n++] = v;
    }
    if (out->n == 0)
        return app_usage("bench niah", "%s: empty list", name);
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    int cases, correct, skipped;
    double prompt_tokens, depth_sum;
    double prefill_tokens, prefill_s, decode_tokens, decode_s;
    double searches, scanned, host_keys; /* retrieval: searches, keys scanned, host set sizes */
    bool too_long, failed;
} cell;

/* ==== One case ============================================================================ */

typedef struct {
    rt_runner *r;
    const rt_tokenizer *tok;
    bool split;        /* retrieval modes: prefill the context, extend with the rest */
    char answer[1024]; /* (len) generated text */
    size_t len;
} runner;

static int32_t argmax(const float *x, uint32_t n)
{
    int32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (int32_t)i;
    return best;
}

/* Prefills the case and decodes greedily up to max_new tokens or an end-of-generation token. */
static loupe_status run_case(runner *r, const niah_case *cs, uint32_t n_vocab, int max_new,
                             cell *cl, loupe_err *err)
{
    const rt_ids *ids = &cs->ids;
    rt_runner_reset(r->r);
    r->len = 0;
    size_t n_pre = r->split && cs->ctx_end > 0 && cs->ctx_end < ids->n ? cs->ctx_end : ids->n;
    double t0 = now_s();
    loupe_status st = rt_runner_prefill(r->r, ids->ids, n_pre, NULL, err);
    if (!st && n_pre < ids->n)
        st = rt_runner_prefill(r->r, ids->ids + n_pre, ids->n - n_pre, NULL, err);
    if (st)
        return st;
    double t1 = now_s();
    cl->prefill_tokens += (double)ids->n;
    cl->prefill_s += t1 - t0;
    int n_dec = 0;
    for (int i = 0; i < max_new; i++) {
        const float *logits = rt_runner_logits(r->r, err);
        if (!logits)
            return err ? err->status : LOUPE_ERR_GPU;
        int32_t id = argmax(logits, n_vocab);
        if (rt_tokenizer_is_eog(r->tok, id))
            break;
        if (!rt_tokenizer_is_special(r->tok, id)) {
            size_t n = 0;
            const char *b = rt_token_bytes(r->tok, id, &n);
            if (b && r->len + n < sizeof r->answer) {
                memcpy(r->answer + r->len, b, n);
                r->len += n;
            }
        }
        if (i + 1 == max_new || rt_runner_n_past(r->r) >= rt_runner_n_ctx(r->r))
            break;
        if ((st = rt_runner_decode(r->r, id, err)))
            return st;
        n_dec++;
    }
    r->answer[r->len] = '\0';
    cl->decode_tokens += n_dec;
    cl->decode_s += now_s() - t1;
    rt_runner_stats rs;
    rt_runner_stats_get(r->r, &rs);
    cl->searches += (double)rs.searches;
    cl->scanned += (double)rs.keys_scanned;
    cl->host_keys += (double)rs.searches * rs.n_host;
    return LOUPE_OK;
}

/* ==== Filler ============================================================================== */

static loupe_status load_haystack(const rt_tokenizer *tok, const char **paths, size_t n,
                                  niah_filler **out, loupe_err *err)
{
    ing_opts io;
    ing_opts_init(&io);
    ing_result *res = NULL;
    loupe_status st = ing_ingest(paths, n, &io, &res, err);
    if (st)
        return st;
    const char **p = calloc(res->n_docs + 1, sizeof *p);
    const char **t = calloc(res->n_docs + 1, sizeof *t);
    size_t *len = calloc(res->n_docs + 1, sizeof *len), k = 0;
    if (!p || !t || !len) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory reading the haystack");
    } else {
        for (size_t i = 0; i < res->n_docs; i++) {
            const ing_doc *d = &res->docs[i];
            if (d->status != ING_DOC_INCLUDED || !d->text)
                continue;
            p[k] = d->path;
            t[k] = d->text;
            len[k++] = strlen(d->text);
        }
        st = niah_filler_from_texts(tok, p, t, len, k, "--haystack", out, err);
    }
    free(p);
    free(t);
    free(len);
    ing_result_destroy(res);
    return st;
}

/* ==== Output ============================================================================== */

static double pct(const cell *c)
{
    int n = c->cases - c->skipped;
    return n > 0 ? 100.0 * c->correct / n : NAN;
}

static void print_table(const niah_task *tasks, int n_tasks, const dlist *lens, const dlist *deps,
                        const cell *cells, int n_cases)
{
    printf("accuracy %% (%d cases per cell), greedy decoding\n", n_cases);
    printf("%-10s %7s", "task", "length");
    for (int d = 0; d < deps->n; d++) {
        char h[32];
        snprintf(h, sizeof h, "d=%.2f", deps->v[d]);
        printf(" %7s", h);
    }
    printf(" %7s %8s %12s %12s %9s\n", "all", "prompt", "prefill t/s", "decode t/s", "scanned%");
    for (int ti = 0; ti < n_tasks; ti++)
        for (int li = 0; li < lens->n; li++) {
            cell row = {0};
            printf("%-10s %7.0f", niah_task_name(tasks[ti]), lens->v[li]);
            for (int d = 0; d < deps->n; d++) {
                const cell *c = &cells[(ti * lens->n + li) * deps->n + d];
                if (c->too_long)
                    printf(" %7s", "toolong");
                else if (c->failed)
                    printf(" %7s", "n/a");
                else
                    printf(" %7.1f", pct(c));
                row.cases += c->cases;
                row.correct += c->correct;
                row.skipped += c->skipped;
                row.prompt_tokens += c->prompt_tokens;
                row.prefill_tokens += c->prefill_tokens;
                row.prefill_s += c->prefill_s;
                row.decode_tokens += c->decode_tokens;
                row.decode_s += c->decode_s;
                row.scanned += c->scanned;
                row.host_keys += c->host_keys;
            }
            int n = row.cases - row.skipped;
            printf(" %7.1f %8.0f %12.1f %12.1f", pct(&row), n > 0 ? row.prompt_tokens / n : 0.0,
                   row.prefill_s > 0 ? row.prefill_tokens / row.prefill_s : 0.0,
                   row.decode_s > 0 ? row.decode_tokens / row.decode_s : 0.0);
            if (row.host_keys > 0)
                printf(" %9.2f\n", 100.0 * row.scanned / row.host_keys);
            else
                printf(" %9s\n", "-");
        }
}

static void print_csv(const niah_task *tasks, int n_tasks, const dlist *lens, const dlist *deps,
                      const cell *cells, const char *attention)
{
    printf("task,length,depth,attention,cases,correct,accuracy,skipped,prompt_tokens,"
           "measured_depth,prefill_tok_s,decode_tok_s,scanned_pct,status\n");
    for (int ti = 0; ti < n_tasks; ti++)
        for (int li = 0; li < lens->n; li++)
            for (int d = 0; d < deps->n; d++) {
                const cell *c = &cells[(ti * lens->n + li) * deps->n + d];
                int n = c->cases - c->skipped;
                printf("%s,%.0f,%.4g,%s,%d,%d,%.4f,%d,%.1f,%.4f,%.2f,%.2f,%.3f,%s\n",
                       niah_task_name(tasks[ti]), lens->v[li], deps->v[d], attention, c->cases,
                       c->correct, n > 0 ? (double)c->correct / n : 0.0, c->skipped,
                       n > 0 ? c->prompt_tokens / n : 0.0, n > 0 ? c->depth_sum / n : 0.0,
                       c->prefill_s > 0 ? c->prefill_tokens / c->prefill_s : 0.0,
                       c->decode_s > 0 ? c->decode_tokens / c->decode_s : 0.0,
                       c->host_keys > 0 ? 100.0 * c->scanned / c->host_keys : 0.0,
                       c->too_long ? "too_long" : c->failed ? "failed" : "ok");
            }
}

/* ==== The command ========================================================================= */

int bench_niah(int argc, char **argv)
{
    const char *cmd = "bench niah";
    app_opts o;
    app_opts_init(&o);
    niah_task tasks[NIAH_N_TASKS] = {NIAH_PASSKEY, NIAH_KV};
    int n_tasks = 2, n_cases = 5, only_case = -1;
    bool csv = false, list = false, show_misses = false, show_prompts = false;
    dlist lens = {{2048, 4096}, 2}, deps = {{0, 0.25, 0.5, 0.75, 1}, 5};
    const char **hay = calloc((size_t)argc + 1, sizeof *hay);
    size_t n_hay = 0;
    if (!hay)
        return app_usage(cmd, "out of memory");
    int rc = APP_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r = app_opts_parse(&o, cmd, argc, argv, &i);
        if (r > 1)
            goto out_usage;
        if (r == 1)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            free(hay);
            return APP_EXIT_OK;
        } else if (!strcmp(argv[i], "--csv")) {
            csv = true;
        } else if (!strcmp(argv[i], "--list")) {
            list = true;
        } else if (!strcmp(argv[i], "--show-prompts")) {
            show_prompts = true;
        } else if (!strcmp(argv[i], "--show-misses")) {
            show_misses = true;
        } else if ((r = app_opt_value(cmd, "--task", argc, argv, &i, &v))) {
            if (r > 1)
                goto out_usage;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            n_tasks = 0;
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t;
                 t = strtok_r(NULL, ",", &save)) {
                if (n_tasks == NIAH_N_TASKS || !niah_task_parse(t, &tasks[n_tasks])) {
                    app_usage(cmd, "--task: '%s' is not one of passkey, needles, kv, whichfile "
                              "(each at most once)", t);
                    goto out_usage;
                }
                n_tasks++;
            }
            if (n_tasks == 0) {
                app_usage(cmd, "--task: empty list");
                goto out_usage;
            }
        } else if ((r = app_opt_value(cmd, "--lengths", argc, argv, &i, &v))) {
            if (r > 1 || parse_dlist("--lengths", v, 128, 1 << 24, true, &lens))
                goto out_usage;
        } else if ((r = app_opt_value(cmd, "--depths", argc, argv, &i, &v))) {
            if (r > 1 || parse_dlist("--depths", v, 0, 1, false, &deps))
                goto out_usage;
        } else if ((r = app_opt_value(cmd, "--cases", argc, argv, &i, &v))) {
            int64_t n;
            if (r > 1 || app_parse_i64(cmd, "--cases", v, 1, 1000000, &n))
                goto out_usage;
            n_cases = (int)n;
        } else if ((r = app_opt_value(cmd, "--case", argc, argv, &i, &v))) {
            int64_t n;
            if (r > 1 || app_parse_i64(cmd, "--case", v, 0, 999999, &n))
                goto out_usage;
            only_case = (int)n;
        } else if ((r = app_opt_value(cmd, "--haystack", argc, argv, &i, &v))) {
            if (r > 1)
                goto out_usage;
            hay[n_hay++] = v;
            while (i + 1 < argc && argv[i + 1][0] != '-') /* --haystack A B C */
                hay[n_hay++] = argv[++i];
        } else {
            app_usage(cmd, "unknown option '%s'", argv[i]);
            goto out_usage;
        }
    }

    loupe_err err = {0};
    app_chat_model cm = {0};
    rt_model *m = NULL;
    rt_tokenizer *tok = NULL;
    rt_runner *c = NULL;
    niah_filler *f = NULL;
    cell *cells = NULL;
    niah_case cs = {0};
    rt_ids_init(&cs.ids);
    rc = APP_EXIT_FAIL;
    uint64_t seed = o.seed_set ? o.seed : 1;

    if (app_chat_model_open(&o, &cm, &err))
        goto fail;
    m = cm.model;
    tok = cm.tok;
    rt_chat_format fmt = cm.fmt;
    const rt_hparams *hp = rt_model_hparams(m);
    uint64_t limit = 0;
    if (app_context_limit(&o, hp, &limit, &err))
        goto fail;
    double max_len = 0;
    for (int li = 0; li < lens.n; li++)
        if (lens.v[li] <= (double)limit && lens.v[li] > max_len)
            max_len = lens.v[li];
        else if (lens.v[li] > (double)limit)
            fprintf(stderr, "loupe: bench niah: length %.0f exceeds the context of %llu tokens "
                    "(%s): its cells are skipped\n", lens.v[li], (unsigned long long)limit,
                    o.ctx ? "--ctx" : "the model's");

    if (n_hay > 0) {
        if (load_haystack(tok, hay, n_hay, &f, &err))
            goto fail;
    } else if (niah_filler_builtin(tok, seed, (size_t)(3 * (max_len > 0 ? max_len : 4096)), &f,
                                   &err)) {
        goto fail;
    }
    fprintf(stderr, "loupe: bench niah: %s, filler %zu documents (%zu tokens)%s\n",
            rt_gguf_path(cm.gguf),
            niah_filler_n_docs(f), niah_filler_n_tokens(f), n_hay ? "" : ", generated");

    size_t n_cells = (size_t)n_tasks * (size_t)lens.n * (size_t)deps.n;
    cells = calloc(n_cells, sizeof *cells);
    if (!cells) {
        loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    runner run = {.tok = tok};
    if (!list && max_len > 0) {
        rt_runner_params rp;
        app_runner_params(&o, &rp);
        rp.n_ctx = (uint32_t)max_len;
        if (rt_runner_create(m, &rp, &c, &err))
            goto fail;
        run.r = c;
        run.split = rt_runner_attention(c) != RT_ATTN_FULL;
        fprintf(stderr, "loupe: bench niah: %s backend, %s attention\n",
                rt_backend_name(rt_runner_backend(c)), rt_attn_mode_name(rt_runner_attention(c)));
    }
    if (list)
        printf("task,length,depth,case,prompt_tokens,needle_pos,measured_depth,answer\n");

    bool tty = isatty(2);
    double t_start = now_s();
    /* --case K runs cases [K, K + 1) of each cell: the same case as in a run of more cases */
    const int first_case = only_case >= 0 ? only_case : 0;
    if (only_case >= 0)
        n_cases = only_case + 1;
    size_t done = 0, total = n_cells * (size_t)(n_cases - first_case);
    for (int ti = 0; ti < n_tasks; ti++)
        for (int li = 0; li < lens.n; li++)
            for (int di = 0; di < deps.n; di++) {
                cell *cl = &cells[((size_t)ti * lens.n + li) * deps.n + di];
                if (lens.v[li] > (double)limit) {
                    cl->too_long = true;
                    done += (size_t)(n_cases - first_case);
                    continue;
                }
                double t_cell = now_s();
                for (int k = first_case; k < n_cases; k++, done++) {
                    niah_spec sp = {tasks[ti], (uint32_t)lens.v[li] - ANSWER_ROOM, deps.v[di], seed,
                                    (uint32_t)k};
                    niah_case_free(&cs);
                    loupe_status st = niah_case_build(f, tok, fmt, &sp, &cs, &err);
                    if (st == LOUPE_ERR_INVALID || st == LOUPE_ERR_TOO_LONG) {
                        fprintf(stderr, "loupe: bench niah: %s at %.0f tokens: %s; cell skipped\n",
                                niah_task_name(tasks[ti]), lens.v[li], loupe_err_message(&err));
                        cl->failed = true;
                        done += (size_t)(n_cases - k);
                        break;
                    }
                    if (st)
                        goto fail;
                    cl->cases++;
                    cl->prompt_tokens += (double)cs.ids.n;
                    cl->depth_sum += cs.depth;
                    if (list) {
                        printf("%s,%.0f,%.4g,%d,%zu,%zu,%.4f,%s\n", niah_task_name(tasks[ti]),
                               lens.v[li], deps.v[di], k, cs.ids.n, cs.needle_pos, cs.depth,
                               cs.answer);
                        if (show_prompts)
                            printf("---- user turn ----\n%s\n---- end ----\n", cs.user);
                        continue;
                    }
                    if (tty)
                        fprintf(stderr, "\rniah: %s %.0f depth %.2f case %d/%d (%zu/%zu, %.0f s)  ",
                                niah_task_name(tasks[ti]), lens.v[li], deps.v[di], k + 1, n_cases,
                                done + 1, total, now_s() - t_start);
                    if (run_case(&run, &cs, hp->n_vocab, ANSWER_ROOM, cl, &err))
                        goto fail;
                    bool ok = niah_answer_match(run.answer, run.len, cs.answer);
                    cl->correct += ok;
                    if (!ok && show_misses)
                        fprintf(stderr, "%sniah: miss: %s %.0f depth %.2f case %d: expected \"%s\", "
                                "got \"%s\"\n", tty ? "\n" : "", niah_task_name(tasks[ti]),
                                lens.v[li], deps.v[di], k, cs.answer, run.answer);
                }
                if (!list && !cl->failed)
                    fprintf(stderr, "%sniah: %s %.0f depth %.2f: %d/%d correct (%.1f s)\n",
                            tty ? "\r" : "", niah_task_name(tasks[ti]), lens.v[li], deps.v[di],
                            cl->correct, cl->cases, now_s() - t_cell);
            }
    if (!list) {
        const char *attn = c ? rt_attn_mode_name(rt_runner_attention(c)) : "full";
        if (csv)
            print_csv(tasks, n_tasks, &lens, &deps, cells, attn);
        else
            print_table(tasks, n_tasks, &lens, &deps, cells, n_cases - first_case);
    }
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "writing to stdout failed");
        goto fail;
    }
    rc = APP_EXIT_OK;
    goto done;
fail:
    rc = app_fail("bench niah", &err);
done:
    niah_case_free(&cs);
    free(cells);
    niah_filler_destroy(f);
    rt_runner_destroy(c);
    app_chat_model_close(&cm);
out_usage:
    free(hay);
    return rc;
}
