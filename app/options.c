/* Error reporting and the options every subcommand shares (see app.h). */
#include "app/app.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LOUPE_BUNDLED_MODEL
#define LOUPE_BUNDLED_MODEL "tests/models/loupe-tiny.gguf"
#endif
#ifndef LOUPE_INSTALLED_MODEL
#define LOUPE_INSTALLED_MODEL "/usr/local/share/loupe/loupe-tiny.gguf"
#endif

/* ---- Reporting -------------------------------------------------------------------------- */

int app_fail(const char *what, const loupe_err *err)
{
    fprintf(stderr, "loupe: %s: %s\n", what, loupe_err_message(err));
    return APP_EXIT_FAIL;
}

int app_usage(const char *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loupe: %s: %s (see `loupe %s --help`)\n", cmd, msg, cmd);
    return APP_EXIT_USAGE;
}

/* ---- Value parsing ---------------------------------------------------------------------- */

int app_parse_i64(const char *cmd, const char *name, const char *s, int64_t lo, int64_t hi,
                  int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return app_usage(cmd, "%s expects an integer, got '%s'", name, s);
    if (v < lo || v > hi)
        return app_usage(cmd, "%s must be between %lld and %lld, got %lld", name, (long long)lo,
                         (long long)hi, v);
    *out = v;
    return 0;
}

int app_parse_f32(const char *cmd, const char *name, const char *s, float *out)
{
    char *end = NULL;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v))
        return app_usage(cmd, "%s expects a number, got '%s'", name, s);
    *out = v;
    return 0;
}

int app_parse_size(const char *cmd, const char *name, const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return app_usage(cmd, "%s expects a size such as 24G or 512M, got '%s'", name, s);
    double mult = 1;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: return app_usage(cmd, "%s: unknown size suffix in '%s' (use K, M, G or T)", name, s);
    }
    if (*end == 'i' || *end == 'B') /* accept 24GiB / 24GB, both meaning binary units */
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end != '\0')
        return app_usage(cmd, "%s: cannot read size '%s'", name, s);
    double bytes = v * mult;
    if (bytes > 1.8e19)
        return app_usage(cmd, "%s: size '%s' is too large", name, s);
    *out = (uint64_t)bytes;
    return 0;
}

int app_opt_value(const char *cmd, const char *name, int argc, char **argv, int *i,
                  const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return app_usage(cmd, "%s needs a value", name);
    *value = argv[++*i];
    return 1;
}

/* ---- Common options --------------------------------------------------------------------- */

void app_opts_init(app_opts *o)
{
    memset(o, 0, sizeof *o);
    o->backend = RT_BACKEND_AUTO;
    o->attention = RT_ATTN_AUTO;
    o->topk = 100;
    o->sinks = 128;
    o->window = 512;
    o->static_max = 2048;
    o->build_queries = 0; /* the runtime's choice (rt_retrieval_params.build_queries) */
    o->index_per_kv = true;
    o->search_group = 1;
    o->host_kv = -1;
    o->search_copy = -1;
    o->prune = -1;
    o->prune_on = -1;
    o->temp = 0.8f;
    o->top_k = 40;
    o->top_p = 0.95f;
    o->min_p = 0.05f;
    o->repeat_penalty = 1.0f;
    o->max_tokens = 512;
}

int app_opts_parse(app_opts *o, const char *cmd, int argc, char **argv, int *i)
{
    const char *v = NULL;
    int r;
    int64_t n;
#define TRY(name) ((r = app_opt_value(cmd, name, argc, argv, i, &v)) != 0)
    if (TRY("--model")) {
        if (r > 1) return r;
        o->model = v;
    } else if (TRY("--backend")) {
        if (r > 1) return r;
        if (!strcmp(v, "auto")) o->backend = RT_BACKEND_AUTO;
        else if (!strcmp(v, "cpu")) o->backend = RT_BACKEND_CPU;
        else if (!strcmp(v, "cuda")) o->backend = RT_BACKEND_CUDA;
        else return app_usage(cmd, "--backend must be auto, cpu or cuda, got '%s'", v);
    } else if (TRY("--attention")) {
        if (r > 1) return r;
        if (!strcmp(v, "auto")) o->attention = RT_ATTN_AUTO;
        else if (!strcmp(v, "full")) o->attention = RT_ATTN_FULL;
        else if (!strcmp(v, "retrieval")) o->attention = RT_ATTN_RETRIEVAL;
        else if (!strcmp(v, "flat")) o->attention = RT_ATTN_FLAT;
        else if (!strcmp(v, "ivf")) o->attention = RT_ATTN_IVF;
        else return app_usage(cmd, "--attention must be auto, full, retrieval, flat or ivf, got '%s'", v);
    } else if (TRY("--gpu-mem")) {
        if (r > 1) return r;
        if ((r = app_parse_size(cmd, "--gpu-mem", v, &o->gpu_mem))) return r;
    } else if (TRY("--ctx")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--ctx", v, 1, INT32_MAX, &o->ctx))) return r;
    } else if (TRY("--topk")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--topk", v, 0, INT32_MAX, &n))) return r;
        o->topk = (int)n;
    } else if (TRY("--sinks")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--sinks", v, 0, INT32_MAX, &n))) return r;
        o->sinks = (int)n;
    } else if (TRY("--window")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--window", v, 0, INT32_MAX, &n))) return r;
        o->window = (int)n;
    } else if (TRY("--static-max")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--static-max", v, 2, INT32_MAX, &n))) return r;
        o->static_max = (int)n;
    } else if (TRY("--ef")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--ef", v, 1, 1 << 20, &n))) return r;
        o->ef = (int)n;
    } else if (TRY("--expand")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--expand", v, 1, 1 << 20, &n))) return r;
        o->expand = (int)n;
    } else if (TRY("--margin")) {
        if (r > 1) return r;
        if ((r = app_parse_f32(cmd, "--margin", v, &o->margin))) return r;
        if (!(o->margin >= 0 && o->margin <= 1000))
            return app_usage(cmd, "--margin must be between 0 and 1000 (attention logits), got %s",
                             v);
    } else if (TRY("--seed-lags")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--seed-lags", v, 1, 64, &n))) return r;
        o->seed_lags = (int)n;
    } else if (TRY("--interleave")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--interleave", v, 1, ANN_INTERLEAVE_MAX, &n))) return r;
        o->interleave = (uint32_t)n;
    } else if (TRY("--nprobe")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--nprobe", v, 1, 1 << 20, &n))) return r;
        o->nprobe = (int)n;
    } else if (TRY("--build-queries")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--build-queries", v, 1, INT32_MAX, &o->build_queries)))
            return r;
    } else if (TRY("--index-per")) {
        if (r > 1) return r;
        if (strcmp(v, "kv") && strcmp(v, "q"))
            return app_usage(cmd, "--index-per expects kv (one index per KV head, shared by its "
                                  "query heads) or q (one per query head), got '%s'", v);
        o->index_per_kv = !strcmp(v, "kv");
    } else if (TRY("--search-group")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--search-group", v, 1, ANN_GROUP_MAX, &n))) return r;
        o->search_group = (int)n;
    } else if (TRY("--degree")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--degree", v, 2, 1024, &n))) return r;
        o->degree = (int)n;
    } else if (TRY("--build-k")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--build-k", v, 1, 4096, &n))) return r;
        o->build_k = (int)n;
    } else if (TRY("--prune-nearest")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--prune-nearest", v, 0, 1 << 20, &n))) return r;
        o->prune_nearest = n > 0 ? (int)n : -1; /* 0 asks for no cut: the runtime's -1 */
    } else if (TRY("--prune")) {
        if (r > 1) return r;
        if (strcmp(v, "l2") && strcmp(v, "ip"))
            return app_usage(cmd, "--prune expects l2 (drop a candidate nearer a kept key than "
                                  "the owner, by L2) or ip (by inner product), got '%s'", v);
        o->prune = !strcmp(v, "ip") ? ANN_PRUNE_IP : ANN_PRUNE_L2;
    } else if (TRY("--prune-on")) {
        if (r > 1) return r;
        if (strcmp(v, "cpu") && strcmp(v, "gpu"))
            return app_usage(cmd, "--prune-on expects cpu or gpu (where the graph build prunes "
                                  "its lists; gpu needs one), got '%s'", v);
        o->prune_on = !strcmp(v, "gpu");
    } else if (TRY("--host-kv")) {
        if (r > 1) return r;
        if (!strcmp(v, "f32"))
            o->host_kv = ANN_KEYS_F32;
        else if (!strcmp(v, "bf16"))
            o->host_kv = ANN_KEYS_BF16;
        else if (!strcmp(v, "int8"))
            o->host_kv = ANN_KEYS_INT8;
        else
            return app_usage(cmd, "--host-kv expects f32, bf16 or int8 (how the host set's keys "
                                  "and values are stored), got '%s'", v);
    } else if (TRY("--search-keys")) {
        if (r > 1) return r;
        if (strcmp(v, "int8c") && strcmp(v, "host"))
            return app_usage(cmd, "--search-keys expects host (graphs search the host keys as "
                                  "stored) or int8c (an int8 copy of them), got '%s'", v);
        o->search_copy = !strcmp(v, "int8c");
    } else if (TRY("--threads")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--threads", v, 0, 4096, &n))) return r;
        o->threads = (int)n;
    } else if (TRY("--seed")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--seed", v, 0, INT64_MAX, &n))) return r;
        o->seed = (uint64_t)n;
        o->seed_set = true;
    } else if (TRY("--temp")) {
        if (r > 1) return r;
        if ((r = app_parse_f32(cmd, "--temp", v, &o->temp))) return r;
        if (o->temp < 0) return app_usage(cmd, "--temp must be >= 0");
    } else if (TRY("--top-k")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--top-k", v, 0, INT32_MAX, &n))) return r;
        o->top_k = (int)n;
    } else if (TRY("--top-p")) {
        if (r > 1) return r;
        if ((r = app_parse_f32(cmd, "--top-p", v, &o->top_p))) return r;
        if (o->top_p <= 0 || o->top_p > 1) return app_usage(cmd, "--top-p must be in (0, 1]");
    } else if (TRY("--min-p")) {
        if (r > 1) return r;
        if ((r = app_parse_f32(cmd, "--min-p", v, &o->min_p))) return r;
        if (o->min_p < 0 || o->min_p > 1) return app_usage(cmd, "--min-p must be in [0, 1]");
    } else if (TRY("--repeat-penalty")) {
        if (r > 1) return r;
        if ((r = app_parse_f32(cmd, "--repeat-penalty", v, &o->repeat_penalty))) return r;
        if (o->repeat_penalty <= 0) return app_usage(cmd, "--repeat-penalty must be > 0");
    } else if (TRY("--max-tokens")) {
        if (r > 1) return r;
        if ((r = app_parse_i64(cmd, "--max-tokens", v, 1, INT32_MAX, &n))) return r;
        o->max_tokens = (int)n;
    } else {
        return 0;
    }
#undef TRY
    return 1;
}

void app_runner_params(const app_opts *o, rt_runner_params *p)
{
    rt_runner_params_init(p);
    p->backend = o->backend;
    p->attention = o->attention;
    p->n_ctx = (uint32_t)o->ctx;
    p->n_threads = o->threads;
    p->gpu_mem = o->gpu_mem;
    p->retrieval.topk = (uint32_t)o->topk;
    p->retrieval.sinks = (uint32_t)o->sinks;
    p->retrieval.window = (uint32_t)o->window;
    p->retrieval.static_max = (uint32_t)o->static_max;
    p->retrieval.ef = o->ef;
    p->retrieval.expand = o->expand;
    p->retrieval.margin = o->margin;
    p->retrieval.seed_lags = o->seed_lags;
    p->retrieval.interleave = o->interleave;
    p->retrieval.nprobe = o->nprobe;
    p->retrieval.build_queries = o->build_queries;
    p->retrieval.index_per_kv = o->index_per_kv;
    p->retrieval.search_group = (uint32_t)o->search_group;
    if (o->degree > 0)
        p->retrieval.degree = o->degree;
    if (o->build_k > 0)
        p->retrieval.build_k = o->build_k;
    p->retrieval.prune_nearest = o->prune_nearest;
    if (o->prune >= 0)
        p->retrieval.prune = o->prune;
    if (o->prune_on >= 0)
        p->retrieval.cpu_prune = o->prune_on == 0;
    p->retrieval.host_kv = o->host_kv;
    p->retrieval.search_copy = o->search_copy;
}

const char *app_model_path(const app_opts *o)
{
    if (o->model && *o->model)
        return o->model;
    const char *env = getenv("LOUPE_MODEL");
    if (env && *env)
        return env;
    if (access(LOUPE_BUNDLED_MODEL, R_OK) == 0)
        return LOUPE_BUNDLED_MODEL;
    /* Installed next to the executable: <prefix>/bin/loupe → <prefix>/share/loupe/. */
    static char beside[PATH_MAX];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            int w = snprintf(beside, sizeof beside, "%s/../share/loupe/loupe-tiny.gguf", exe);
            if (w > 0 && (size_t)w < sizeof beside && access(beside, R_OK) == 0)
                return beside;
        }
    }
    return LOUPE_INSTALLED_MODEL;
}
