/*
 * app — the `loupe` executable: subcommand dispatch, option parsing, configuration, and the one
 * place that prints errors and exits.
 *
 * Every subcommand is `int cmd_<name>(int argc, char **argv)`, argv[0] being the subcommand's
 * name; it returns an exit code (APP_EXIT_*). Errors from the libraries arrive as loupe_err and are
 * shown here as `loupe: <what>: <why>` on stderr.
 */
#ifndef LOUPE_APP_H
#define LOUPE_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"
#include "ingest/ingest.h"
#include "runtime/runtime.h"

enum { APP_EXIT_OK = 0, APP_EXIT_FAIL = 1, APP_EXIT_USAGE = 2 };

/* ---- Reporting (the only printing of errors in loupe) ----------------------------------- */

/* Prints "loupe: <what>: <why>" and returns APP_EXIT_FAIL. */
int app_fail(const char *what, const loupe_err *err);
/* Prints "loupe: <cmd>: <formatted message>" plus a hint to run `loupe <cmd> --help`, and
 * returns APP_EXIT_USAGE. */
int app_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- Options shared by every command (DESIGN.md, "common") ------------------------------ */

typedef struct {
    const char *model;      /* --model, else $LOUPE_MODEL, else the bundled model */
    rt_backend backend;    /* --backend */
    uint64_t gpu_mem;       /* --gpu-mem bytes, 0 = all free memory */
    int64_t ctx;            /* --ctx tokens, 0 = the model's training context */
    rt_attn_mode attention;
    int topk;               /* --topk (100) */
    int sinks;              /* --sinks (128) */
    int window;             /* --window (512) */
    int static_max;         /* --static-max (2048): static tail that moves to the host set */
    int ef;                 /* --ef: graph search beam (0: topk, at least 100) */
    int expand;             /* --expand N: pool entries a graph search expands (0: all) */
    float margin;           /* --margin X: a graph search stops below the best by X logits */
    int seed_lags;          /* --seed-lags N: decode steps back a graph search seeds from (0:
                               the runtime's choice, rt_retrieval_params.seed_lags) */
    uint32_t interleave;    /* --interleave N: query heads one thread searches at once (0: the
                               runtime's choice) */
    int nprobe;             /* --nprobe: IVF lists probed (0: 16) */
    int64_t build_queries;  /* --build-queries: prefill queries per index (0: the runtime's
                               choice, rt_retrieval_params.build_queries) */
    bool index_per_kv;      /* --index-per kv|q (kv): one index per KV head or per query head */
    int search_group;       /* --search-group N (1): query heads of a KV group per search */
    int degree;             /* --degree M: graph out-degree cap; 0 = the runner's default (16) */
    int build_k;            /* --build-k N: exact top-k per build query; 0 = the runtime's
                               choice (rt_retrieval_params.build_k) */
    int prune_nearest;      /* --prune-nearest N: lists cut to their N nearest; 0: the runtime's
                               choice, -1: none (--prune-nearest 0) */
    int prune;              /* --prune l2|ip: the graph's pruning rule; -1 = the default (l2) */
    int prune_on;           /* --prune-on cpu|gpu: 0 cpu, 1 gpu; -1 = the runner's default */
    int host_kv;            /* --host-kv f32|bf16|int8: ann_key_type; -1 = the runner's default */
    int search_copy;        /* --search-keys int8c|host: 1, 0; -1 = the runner's default (host) */
    int threads;            /* --threads, 0 = all cores */
    uint64_t seed;          /* --seed */
    bool seed_set;
    float temp;             /* --temp (0.8); 0 = greedy */
    int top_k;              /* --top-k (40), 0 = off */
    float top_p;            /* --top-p (0.95), 1 = off */
    float min_p;            /* --min-p (0.05), 0 = off */
    float repeat_penalty;   /* --repeat-penalty (1.0 = off) */
    int max_tokens;         /* --max-tokens (512) */
    bool beyond_train;      /* commands that measure vectors (dump-qk --beyond-train): --ctx may
                               exceed the model's training context */
} app_opts;

void app_opts_init(app_opts *o);

/* Tries to consume a common option at argv[*i] (and its value, advancing *i). Returns 1 if it
 * consumed one, 0 if argv[*i] is not a common option, or APP_EXIT_USAGE after reporting a bad
 * value (so callers write: r = app_opts_parse(...); if (r > 1) return r;). Accepts both
 * "--name value" and "--name=value". */
int app_opts_parse(app_opts *o, const char *cmd, int argc, char **argv, int *i);

/* The runner parameters (runtime/rt_runner.h) the common options describe. */
void app_runner_params(const app_opts *o, rt_runner_params *p);

/* The model path to use: o->model if set, else $LOUPE_MODEL, else the bundled model (next to
 * the build tree or installed). Never NULL. */
const char *app_model_path(const app_opts *o);

/* Value helpers for command-specific options; each reports a usage error and returns
 * APP_EXIT_USAGE on bad input, 0 on success. `name` is the option as typed (for the message). */
int app_parse_i64(const char *cmd, const char *name, const char *s, int64_t lo, int64_t hi,
                  int64_t *out);
int app_parse_f32(const char *cmd, const char *name, const char *s, float *out);
int app_parse_size(const char *cmd, const char *name, const char *s, uint64_t *out); /* 24G */

/* If argv[*i] is `--name value` or `--name=value`, stores the value and advances *i past it and
 * returns 1; returns 0 if argv[*i] is not that option; reports a missing value and returns
 * APP_EXIT_USAGE. */
int app_opt_value(const char *cmd, const char *name, int argc, char **argv, int *i,
                  const char **value);

/* ---- Ingestion shared by layout and ask (ingest_glue.c) -------------------------------- */

/* Counts tokens for ingest with the model's tokenizer; lives as long as the ing_opts using it. */
typedef struct {
    const rt_tokenizer *tok;
    int threads;
} app_counter;

/* Points io's count/prefix callbacks at `tok` through `c`. */
void app_counter_attach(app_counter *c, const rt_tokenizer *tok, int threads, ing_opts *io);

/* Sources and the options that shape their ingestion (--truncate, --exclude, --include,
 * --no-ignore, --max-file-size, --max-size, --timeout, --connect-timeout). */
typedef struct {
    ing_opts io;
    const char **paths;   /* (n_paths) into argv */
    size_t n_paths;
    const char **exclude; /* (n_exclude) */
    size_t n_exclude;
    const char **include; /* (n_include) */
    size_t n_include;
} app_sources;

void app_sources_init(app_sources *s);
void app_sources_free(app_sources *s);
/* Like app_opts_parse: 1 consumed, 0 not a source option, APP_EXIT_USAGE reported. */
int app_sources_parse(app_sources *s, const char *cmd, int argc, char **argv, int *i);
/* Adds a source path; APP_EXIT_USAGE (reported) when out of memory. */
int app_sources_add(app_sources *s, const char *cmd, const char *path);
/* Copies the glob lists into s->io; call once after parsing. */
void app_sources_finish(app_sources *s);
/* The help lines for the options above. */
const char *app_sources_help(void);

/* ---- The model, for commands that talk to it (ingest_glue.c) ---------------------------- */

typedef struct {
    rt_gguf *gguf;
    rt_model *model;
    rt_tokenizer *tok;
    rt_chat_format fmt;
} app_chat_model;

/* Opens the model app_model_path(o) names, with its tokenizer and chat format. On failure
 * nothing stays open and err says why. Close with app_chat_model_close (safe on a zeroed one). */
loupe_status app_chat_model_open(const app_opts *o, app_chat_model *cm, loupe_err *err);
void app_chat_model_close(app_chat_model *cm);
/* The context length to use: --ctx, else the model's training context; a --ctx longer than the
 * training context is refused (LOUPE_ERR_TOO_LONG). */
loupe_status app_context_limit(const app_opts *o, const rt_hparams *hp, uint64_t *limit,
                               loupe_err *err);

/* ---- Subcommands ------------------------------------------------------------------------ */

int cmd_model_info(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_layout(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_dump_qk(int argc, char **argv);

/* `loupe bench <name>` entries, one file each (bench_<name>.c). */
int bench_tokenize(int argc, char **argv);
int bench_decode(int argc, char **argv);   /* CPU/GPU decode and prefill tokens/s */
int bench_ingest(int argc, char **argv);
int bench_anns(int argc, char **argv);
int bench_niah(int argc, char **argv);    /* needle-in-a-haystack accuracy */
int bench_retrieval(int argc, char **argv); /* decode cost per context length and attention mode */

#endif /* LOUPE_APP_H */
