/*
 * `loupe bench retrieval [--model F | --preset NAME] [--ctx 4096,32768] [--gen N] [--modes LIST]
 * [--full-gpu-mem SIZE] [--csv]` + the common options: the cost of decoding after a long context
 * in each attention mode, side by side (issue 7's performance table).
 *
 * For each context length L and each mode, a fresh runner with n_ctx = L (destroyed before the
 * next, so rows do not share memory) prefills L − gen reproducible random ids — timed as
 * prefill_s, which in a retrieval mode includes the index build that the runner's statistics
 * report apart (build_s; build_knn_s is the exact kNN's thread time, the indexes of a layer
 * building at once; build_knn_gpu_s and build_prune_gpu_s the GPU kNN and pruning calls' own
 * time, summed (kNN calls one at a time, pruning calls up to 4 at once, unless the switches
 * below say otherwise);
 * build_proj_s, build_repair_s and build_task_s the projection's, the repair's and the whole
 * builds' thread time) — then decodes gen more random ids one at a time with rt_runner_decode,
 * teacher-forced as in `bench decode`, each token timed up to its logits being readable (mean
 * and median ms/token); with --search, once per search setting after the one prefill (L −
 * gen·settings tokens). Every mode at a length sees the same ids.
 *
 * Modes (runner parameters; the retrieval ones take --topk, --sinks, --window, --ef, --nprobe,
 * --build-queries, --static-max):
 *   full       full attention; on the CUDA backend under --full-gpu-mem (default 0: the whole
 *              card) rather than --gpu-mem, so that it runs wherever the card can hold it — when
 *              it cannot, the row says why and the bench goes on
 *   retrieval  the attention-aware graph; flat: exact top-k; ivf: IVF top-k
 *   hostfull   the retrieval path with topk = L: every host key attended exactly on the CPU, the
 *              rest (static set, layers) where the backend runs it — what llama.cpp's
 *              --no-kv-offload does. Built as a flat index: no search runs, so a graph would be
 *              built for nothing
 *   static     the retrieval path with topk 0: the static set alone (StreamingLLM)
 *
 * The per-token breakdown is the change of rt_runner_stats over the decode phase divided by gen:
 * the host threads' search, CPU attention and imbalance (waiting for a layer's slowest task)
 * ms/token; for co-executed tokens (CUDA backend, retrieval modes) the host's wait for the GPU's
 * q/k/v, the host half, the tail wait, and idle = step − (wait + host + tail). scan% is keys
 * scanned over searches × host keys; att% is host keys attended over (tokens × layers × query
 * heads × host keys); host keys counted after the prefill (a decode past --static-max moves
 * tokens into the host set, and the two become approximate).
 * Memory: the runner's gpu_bytes, host_kv_bytes and index_bytes after the decode, the process
 * RSS after the prefill, and the row's peak RSS (VmHWM, reset through /proc/self/clear_refs
 * before each row where the kernel allows; otherwise the process peak so far).
 *
 * Measurement switches of the CUDA build (environment; each off, or at its default, unless set),
 * for alternated runs such as tests/device.sh envab: LOUPE_BUILD_OVERLAP=0 builds every index
 * after the prefill instead of beside it; LOUPE_KNN_CALLS=N (1..4, default 1) and
 * LOUPE_PRUNE_CALLS=N (1..8, default 4) bound the build's GPU kNN and pruning calls in flight;
 * LOUPE_IVF_GPU=1 runs the IVF builds' k-means assignments as GPU kNN calls. (A kNN stream at
 * the device's greatest priority was tried and removed: the 128K prefill did not move,
 * docs/BENCHMARKS.md.)
 */
#include "app/app.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/runtime.h"

static const char *const CMD = "bench retrieval";

typedef enum {
    MODE_FULL,
    MODE_RETRIEVAL,
    MODE_FLAT,
    MODE_IVF,
    MODE_HOSTFULL,
    MODE_STATIC,
    MODE_COUNT
} bench_mode;

static const char *const mode_names[MODE_COUNT] = {"full", "retrieval", "flat",
                                                   "ivf",  "hostfull",  "static"};

enum { MAX_LENS = 16, MAX_MODES = 16, MAX_SEARCH = 16 };

/* One search setting of --search (rt_runner_set_search). */
typedef struct {
    int ef, expand, group, batch;
    float margin; /* logits, 0: none */
    int ilv;      /* heads searched interleaved */
} search_setting;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loupe bench retrieval [OPTIONS]\n"
            "  --model FILE | --preset NAME\n"
            "                        the model (default $LOUPE_MODEL, else the bundled one)\n"
            "  --ctx LIST            context lengths (4096,32768); a row prefills L - gen tokens\n"
            "  --gen N               tokens decoded one by one after the prefill (32)\n"
            "  --modes LIST          full,retrieval,flat,ivf,hostfull,static (all of them)\n"
            "                        hostfull: every host key attended on the CPU (topk = L);\n"
            "                        static: the static set alone (topk 0)\n"
            "  --full-gpu-mem SIZE   the CUDA budget of the full mode (0: the whole card)\n"
            "  --search LIST         the retrieval mode decodes --gen tokens under each setting\n"
            "                        EF/EXPAND/GROUP[/BATCH[/MARGIN[/INTERLEAVE]]] of the comma-\n"
            "                        separated list (EXPAND: --expand, 0: the runtime's choice,\n"
            "                        16/25 of EF, EF: all; BATCH: pool entries expanded at a\n"
            "                        time, 1; MARGIN: --margin, 0; INTERLEAVE: --interleave, 0: the\n"
            "                        runtime's choice), one row each, after ONE prefill of\n"
            "                        L - gen·settings tokens (e.g.\n"
            "                        100/0/2,100/32/2,100/0/1; EF at most the first's 4×: the\n"
            "                        runner is created with the first). The first setting's\n"
            "                        first step starts from the lists the build kept for the\n"
            "                        prefill's last position (cold_searches counts any that\n"
            "                        started from nothing)\n"
            "  --backend, --gpu-mem, --topk, --sinks, --window, --ef, --expand, --margin,\n"
            "  --seed-lags, --interleave, --nprobe, --build-queries,\n"
            "  --static-max, --index-per, --search-group, --degree, --build-k, --prune,\n"
            "  --prune-nearest, --prune-on, --host-kv, --search-keys, --threads, --seed\n"
            "                        as for every command\n"
            "  --local-prefill       TIMING ONLY, CUDA backend: each prefill chunk attends to\n"
            "                        itself alone, so the prefill's cost is linear in L (K/V\n"
            "                        and queries are still the model's); for decode timings at\n"
            "                        lengths whose exact prefill takes too long. Rows are\n"
            "                        marked [local prefill]\n"
            "  --csv                 one header line, then one row per (ctx, mode)\n"
            "Prefill, index build and decode ms/token per context length and attention mode,\n"
            "with the per-token search / attention / co-execution breakdown, keys scanned and\n"
            "memory. Memory columns are GiB in the table, bytes in the CSV.\n");
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ==== Options ============================================================================= */

typedef struct {
    app_opts o;
    const char *preset;
    int64_t lens[MAX_LENS];
    int n_lens;
    bench_mode modes[MAX_MODES];
    int n_modes;
    int64_t gen;
    uint64_t full_gpu_mem;
    search_setting search[MAX_SEARCH];
    int n_search;
    bool csv;
    bool local_prefill; /* --local-prefill: timing only (rt_cuda_params.local_prefill) */
} bench_opts;

/* Parses "100/0/2,100/32/2" into b->search. */
static int parse_search(bench_opts *b, const char *s)
{
    b->n_search = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        search_setting *x = &b->search[b->n_search];
        int used = 0, used4 = 0, used5 = 0, used6 = 0;
        x->batch = 1;
        x->ilv = 0; /* the runtime's choice */
        x->margin = 0;
        if (b->n_search < MAX_SEARCH &&
            sscanf(s, "%d/%d/%d%n/%d%n/%f%n/%d%n", &x->ef, &x->expand, &x->group, &used,
                   &x->batch, &used4, &x->margin, &used5, &x->ilv, &used6) >= 3 && used4 > used)
            used = used6 > used5 ? used6 : used5 > used4 ? used5 : used4;
        if (b->n_search == MAX_SEARCH || (size_t)used != len || x->ef < 1 || x->expand < 0 ||
            x->group < 1 || x->group > ANN_GROUP_MAX || x->batch < 1 ||
            x->batch > ANN_BATCH_MAX || !(x->margin >= 0 && x->margin <= 1000) || x->ilv < 0 ||
            x->ilv > ANN_INTERLEAVE_MAX)
            return app_usage(CMD,
                             "--search expects up to %d settings "
                             "EF/EXPAND/GROUP[/BATCH[/MARGIN[/INTERLEAVE]]] (EF >= 1, EXPAND >= "
                             "0, GROUP 1..%d, BATCH 1..%d, MARGIN 0..1000, INTERLEAVE 1..%d) "
                             "like 100/0/2,100/32/2/4,200/0/1/1/8,100/0/1/1/0/2, got '%.*s'",
                             MAX_SEARCH, ANN_GROUP_MAX, ANN_BATCH_MAX, ANN_INTERLEAVE_MAX,
                             (int)len, s);
        b->n_search++;
        s += len + (s[len] == ',');
    }
    return b->n_search ? 0 : app_usage(CMD, "--search needs at least one setting");
}

/* Parses "4096,32768" into o->lens. */
static int parse_lens(bench_opts *b, const char *s)
{
    b->n_lens = 0;
    while (*s) {
        char item[32];
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof item || b->n_lens == MAX_LENS)
            return app_usage(CMD, "--ctx expects up to %d lengths like 4096,32768, got '%s'",
                             MAX_LENS, s);
        memcpy(item, s, len);
        item[len] = '\0';
        int r = app_parse_i64(CMD, "--ctx", item, 2, INT32_MAX, &b->lens[b->n_lens++]);
        if (r)
            return r;
        s += len + (s[len] == ',');
    }
    return b->n_lens ? 0 : app_usage(CMD, "--ctx needs at least one length");
}

/* Parses "full,retrieval,static" into o->modes. */
static int parse_modes(bench_opts *b, const char *s)
{
    b->n_modes = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        int m = 0;
        while (m < MODE_COUNT && !(strlen(mode_names[m]) == len && !strncmp(s, mode_names[m], len)))
            m++;
        if (m == MODE_COUNT || b->n_modes == MAX_MODES)
            return app_usage(CMD,
                             "--modes expects up to %d of full, retrieval, flat, ivf, hostfull, "
                             "static, got '%.*s'",
                             MAX_MODES, (int)len, s);
        b->modes[b->n_modes++] = (bench_mode)m;
        s += len + (s[len] == ',');
    }
    return b->n_modes ? 0 : app_usage(CMD, "--modes needs at least one mode");
}

/* Returns 0 to go on, APP_EXIT_OK after --help, or APP_EXIT_USAGE (reported). */
static int parse_args(bench_opts *b, int argc, char **argv, bool *help)
{
    const char *ctx = "4096,32768", *modes = "full,retrieval,flat,ivf,hostfull,static", *v = NULL;
    const char *search = NULL;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            *help = true;
            return 0;
        }
        if (!strcmp(argv[i], "--csv")) {
            b->csv = true;
            continue;
        }
        if (!strcmp(argv[i], "--local-prefill")) {
            b->local_prefill = true;
            continue;
        }
        /* --ctx here takes a list, so it is read before the common options see it */
        if ((r = app_opt_value(CMD, "--ctx", argc, argv, &i, &ctx)) ||
            (r = app_opt_value(CMD, "--modes", argc, argv, &i, &modes)) ||
            (r = app_opt_value(CMD, "--preset", argc, argv, &i, &b->preset)) ||
            (r = app_opt_value(CMD, "--search", argc, argv, &i, &search))) {
            if (r > 1)
                return r;
            continue;
        }
        if ((r = app_opt_value(CMD, "--gen", argc, argv, &i, &v))) {
            if (r > 1 || (r = app_parse_i64(CMD, "--gen", v, 1, 1 << 20, &b->gen)))
                return r;
            continue;
        }
        if ((r = app_opt_value(CMD, "--full-gpu-mem", argc, argv, &i, &v))) {
            if (r > 1 || (r = app_parse_size(CMD, "--full-gpu-mem", v, &b->full_gpu_mem)))
                return r;
            continue;
        }
        r = app_opts_parse(&b->o, CMD, argc, argv, &i);
        if (r > 1)
            return r;
        if (r == 0)
            return app_usage(CMD, "unknown option '%s'", argv[i]);
    }
    int r = parse_lens(b, ctx);
    if (!r && search)
        r = parse_search(b, search);
    return r ? r : parse_modes(b, modes);
}

/* ==== Memory ============================================================================== */

/* A "Vm...:" line of /proc/self/status in bytes; 0 where unreadable. */
static uint64_t proc_status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            kb = strtoull(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* Resets VmHWM to the current RSS (Linux ≥ 4.0), so each row's peak is its own. */
static void reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

/* ==== Progress ============================================================================ */

/* Prefill progress on stderr: a refreshed line on a terminal once the prefill passes a second,
 * and a line when the index build starts after a prefill that took over a second. */
typedef struct {
    double t0;
    bool tty, shown, builds;
    uint32_t ctx;
    const char *mode;
} progress;

static bool on_progress(void *user, size_t done, size_t total)
{
    progress *p = user;
    double s = now_s() - p->t0;
    if (p->tty && (s > 1.0 || p->shown)) {
        fprintf(stderr, "\rloupe: %s: ctx %u %s: prefill %zu/%zu tokens, %.0f tokens/s", CMD,
                p->ctx, p->mode, done, total, (double)done / s);
        if (done == total)
            fputc('\n', stderr);
        p->shown = true;
    }
    if (done == total && p->builds && s > 1.0)
        fprintf(stderr, "loupe: %s: ctx %u %s: building the indexes\n", CMD, p->ctx, p->mode);
    return true;
}

/* ==== One row ============================================================================= */

typedef struct {
    uint32_t ctx, n_pre, n_gen, topk;
    search_setting search; /* the graph search's settings (ef 0 in the other modes) */
    bench_mode mode;
    rt_backend backend;     /* resolved, when created */
    rt_attn_mode attention; /* resolved, when created */
    bool ok;
    char why[LOUPE_ERR_MSG_MAX];
    double prefill_s, build_s, build_knn_s, build_knn_gpu_s, build_prune_gpu_s, build_proj_s,
        build_repair_s, build_task_s;
    double ms_mean, ms_median;
    double search_ms, attend_ms, imbalance_ms;  /* per token */
    uint64_t coexec_tokens;
    double step_ms, wait_ms, host_ms, tail_ms, idle_ms; /* per co-executed token */
    uint32_t n_host;
    uint64_t searches, scanned, attended, cold; /* cold: searches with nothing to start from */
    double scanned_pct, attended_pct;
    uint64_t gpu_bytes, host_kv_bytes, index_bytes, rss_prefill, rss_peak;
} row;

typedef struct {
    const bench_opts *b;
    const rt_model *m;
    int32_t *ids;  /* (max L) this length's ids */
    double *times; /* (max gen) per-token seconds */
    bool tty;
} bench;

static bool is_retrieval(bench_mode m) { return m != MODE_FULL; }

static void mode_params(const bench *be, uint32_t L, bench_mode mode, rt_runner_params *p)
{
    static const rt_attn_mode attn[MODE_COUNT] = {RT_ATTN_FULL, RT_ATTN_RETRIEVAL, RT_ATTN_FLAT,
                                                  RT_ATTN_IVF,  RT_ATTN_FLAT,      RT_ATTN_FLAT};
    app_runner_params(&be->b->o, p);
    p->n_ctx = L;
    p->attention = attn[mode];
    p->local_prefill = be->b->local_prefill;
    if (mode == MODE_FULL)
        p->gpu_mem = be->b->full_gpu_mem;
    if (mode == MODE_HOSTFULL)
        p->retrieval.topk = L;
    if (mode == MODE_STATIC)
        p->retrieval.topk = 0;
}

/* Reproducible ids for length L (splitmix-style, as in bench decode), the same for every mode. */
static void make_ids(int32_t *ids, uint32_t L, uint64_t seed, uint32_t n_vocab)
{
    seed ^= (uint64_t)L * 0xD1B54A32D192ED03ull;
    for (uint32_t i = 0; i < L; i++) {
        seed += 0x9E3779B97F4A7C15ull;
        uint64_t z = (seed ^ (seed >> 31)) * 0xBF58476D1CE4E5B9ull;
        ids[i] = (int32_t)((z >> 33) % n_vocab);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Teacher-forced decode of n ids, each timed until its logits are readable (a GPU step may
 * return before it finishes). */
static loupe_status decode_timed(bench *be, rt_runner *r, const int32_t *ids, uint32_t n,
                                 row *out, loupe_err *err)
{
    double t_start = now_s(), sum = 0;
    bool shown = false;
    for (uint32_t i = 0; i < n; i++) {
        double t0 = now_s();
        loupe_status st = rt_runner_decode(r, ids[i], err);
        if (!st && !rt_runner_logits(r, err))
            st = err->status ? err->status : LOUPE_ERR_GPU;
        if (st)
            return st;
        be->times[i] = now_s() - t0;
        sum += be->times[i];
        if (be->tty && (shown || now_s() - t_start > 1.0)) {
            fprintf(stderr, "\rloupe: %s: ctx %u %s: decode %u/%u", CMD, out->ctx,
                    mode_names[out->mode], i + 1, n);
            shown = true;
        }
    }
    if (shown)
        fputc('\n', stderr);
    qsort(be->times, n, sizeof *be->times, cmp_double);
    out->ms_mean = 1e3 * sum / n;
    out->ms_median = 1e3 * (n % 2 ? be->times[n / 2]
                                  : 0.5 * (be->times[n / 2 - 1] + be->times[n / 2]));
    return LOUPE_OK;
}

/* The decode phase's share of the statistics: a = after the prefill, z = after the decode. */
static void breakdown(const rt_runner_stats *a, const rt_runner_stats *z, const rt_hparams *hp,
                      row *out)
{
    double n = out->n_gen;
    out->search_ms = 1e3 * (z->search_s - a->search_s) / n;
    out->attend_ms = 1e3 * (z->attend_s - a->attend_s) / n;
    out->imbalance_ms = 1e3 * (z->imbalance_s - a->imbalance_s) / n;
    out->coexec_tokens = z->coexec_tokens - a->coexec_tokens;
    if (out->coexec_tokens) {
        double c = (double)out->coexec_tokens;
        out->step_ms = 1e3 * (z->coexec_step_s - a->coexec_step_s) / c;
        out->wait_ms = 1e3 * (z->coexec_gpu_wait_s - a->coexec_gpu_wait_s) / c;
        out->host_ms = 1e3 * (z->coexec_host_s - a->coexec_host_s) / c;
        out->tail_ms = 1e3 * (z->coexec_tail_s - a->coexec_tail_s) / c;
        out->idle_ms = out->step_ms - (out->wait_ms + out->host_ms + out->tail_ms);
    }
    out->n_host = a->n_host;
    out->searches = z->searches - a->searches;
    out->scanned = z->keys_scanned - a->keys_scanned;
    out->attended = z->keys_attended - a->keys_attended;
    out->cold = z->cold_searches - a->cold_searches;
    double host = (double)a->n_host;
    out->scanned_pct = out->searches && host > 0 ? 100.0 * out->scanned / (out->searches * host)
                                                 : 0;
    double slots = (double)(z->retrieval_tokens - a->retrieval_tokens) * hp->n_layer *
                   hp->n_head * host;
    out->attended_pct = slots > 0 ? 100.0 * out->attended / slots : 0;
    out->gpu_bytes = z->gpu_bytes;
    out->host_kv_bytes = z->host_kv_bytes;
    out->index_bytes = z->index_bytes;
}

static void print_row(const bench_opts *b, const char *name, int threads, bool coexec,
                      const row *w);

/* Creates, prefills and decodes one (L, mode) and prints its row; the retrieval mode with
 * --search decodes once per setting after one prefill and prints a row each. A failure's row
 * carries the sentence. Returns how many rows ran. */
static int run_rows(bench *be, uint32_t L, bench_mode mode, const char *name, int threads,
                    bool coexec)
{
    const bench_opts *b = be->b;
    const rt_hparams *hp = rt_model_hparams(be->m);
    const int n_set = mode == MODE_RETRIEVAL && b->n_search ? b->n_search : 1;
    uint32_t gen = (uint32_t)b->gen, budget = L / 2 / (uint32_t)n_set;
    row out;
    memset(&out, 0, sizeof out);
    out.ctx = L;
    out.mode = mode;
    out.n_gen = gen < budget ? gen : budget;
    out.n_pre = L - out.n_gen * (uint32_t)n_set;
    rt_runner_params p;
    mode_params(be, L, mode, &p);
    if (mode == MODE_RETRIEVAL && b->n_search) { /* created with the first setting */
        p.retrieval.ef = b->search[0].ef;
        p.retrieval.expand = b->search[0].expand;
        p.retrieval.search_group = (uint32_t)b->search[0].group;
        p.retrieval.expand_batch = b->search[0].batch;
        p.retrieval.margin = b->search[0].margin;
        p.retrieval.interleave = (uint32_t)b->search[0].ilv;
    }
    out.topk = is_retrieval(mode) ? p.retrieval.topk : 0;
    if (mode == MODE_RETRIEVAL)
        out.search = (search_setting){
            p.retrieval.ef > 0 ? p.retrieval.ef : rt_retrieval_beam(0, p.retrieval.topk, L),
            p.retrieval.expand, (int)p.retrieval.search_group,
            p.retrieval.expand_batch > 1 ? p.retrieval.expand_batch : 1, p.retrieval.margin,
            (int)p.retrieval.interleave};

    loupe_err err;
    loupe_err_clear(&err);
    rt_runner *r = NULL;
    reset_peak_rss();
    /* flat indexes (flat, hostfull, static) cost nothing to build: no line for them */
    bool builds = mode == MODE_RETRIEVAL || mode == MODE_IVF;
    progress pr = {0, be->tty, false, builds, L, mode_names[mode]};
    loupe_status st = rt_runner_create(be->m, &p, &r, &err);
    if (!st) {
        out.backend = rt_runner_backend(r);
        out.attention = rt_runner_attention(r);
        rt_runner_set_progress(r, on_progress, &pr);
        pr.t0 = now_s();
        st = rt_runner_prefill(r, be->ids, out.n_pre, NULL, &err);
        out.prefill_s = now_s() - pr.t0;
        rt_runner_set_progress(r, NULL, NULL); /* a retrieval decode step is a prefill of one */
    }
    if (!st) {
        rt_runner_stats a;
        rt_runner_stats_get(r, &a);
        out.build_s = a.build_s;
        out.build_knn_s = a.build_knn_s;
        out.build_knn_gpu_s = a.build_knn_gpu_s;
        out.build_prune_gpu_s = a.build_prune_gpu_s;
        out.build_proj_s = a.build_proj_s;
        out.build_repair_s = a.build_repair_s;
        out.build_task_s = a.build_task_s;
        out.rss_prefill = proc_status_bytes("VmRSS");
        if (a.build_knn_cpu_calls > 0)
            fprintf(stderr, "loupe: %s: ctx %u %s: %llu of the build's kNN calls ran on the CPU "
                    "(the GPU had too little memory left for them)\n", CMD, L, mode_names[mode],
                    (unsigned long long)a.build_knn_cpu_calls);
        if (out.prefill_s > 1.0 && builds)
            fprintf(stderr, "loupe: %s: ctx %u %s: prefill %.1f s, of which index build %.1f s\n",
                    CMD, L, mode_names[mode], out.prefill_s, out.build_s);
        else if (out.prefill_s > 1.0)
            fprintf(stderr, "loupe: %s: ctx %u %s: prefill %.1f s\n", CMD, L, mode_names[mode],
                    out.prefill_s);
    }
    int n_rows = 0;
    for (int s = 0; s < n_set; s++) {
        row w = out;
        if (!st && n_set > 1) {
            const search_setting *x = &b->search[s];
            st = rt_runner_set_search(r, x->ef, x->expand, x->batch, x->margin,
                                      (uint32_t)x->group, (uint32_t)x->ilv, &err);
            w.search = *x;
        }
        rt_runner_stats a, z;
        if (!st) {
            rt_runner_stats_get(r, &a);
            st = decode_timed(be, r, be->ids + out.n_pre + (size_t)s * out.n_gen, out.n_gen, &w,
                              &err);
        }
        if (!st) {
            rt_runner_stats_get(r, &z);
            breakdown(&a, &z, hp, &w);
            w.rss_peak = proc_status_bytes("VmHWM");
            w.ok = true;
        } else {
            snprintf(w.why, sizeof w.why, "%s", loupe_err_message(&err));
        }
        print_row(b, name, threads, coexec, &w);
        n_rows += w.ok;
        if (st)
            break;
    }
    rt_runner_destroy(r);
    return n_rows;
}

/* ==== Output ============================================================================== */

static double gib(uint64_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

static void print_header(const bench_opts *b, const char *name, const rt_model *m, int threads,
                         bool coexec)
{
    const rt_hparams *hp = rt_model_hparams(m);
    if (b->csv) {
        printf("model,backend,threads,ctx,mode,attention,topk,prefill_tokens,gen,prefill_s,"
               "build_s,build_knn_s,build_knn_gpu_s,build_prune_gpu_s,build_proj_s,build_repair_s,"
               "build_task_s,"
               "ms_tok_mean,ms_tok_median,search_ms_tok,attend_ms_tok,imbalance_ms_tok,"
               "coexec_tokens,step_ms,gpu_wait_ms,host_ms,tail_ms,idle_ms,n_host,searches,"
               "keys_scanned,keys_attended,scanned_pct,attended_pct,gpu_bytes,host_kv_bytes,"
               "index_bytes,rss_prefill_bytes,peak_rss_bytes,ef,expand,search_group,"
               "expand_batch,margin,interleave,cold_searches,status\n");
        return;
    }
    printf("model %s: %.1fM params, %u layers, %u/%u heads; backend %s, %d threads\n"
           "retrieval: topk %d, sinks %d, window %d; decode %lld tokens per row\n"
           "times in s, per-token columns in ms, memory in GiB\n\n",
           name, (double)rt_model_n_params(m) / 1e6, hp->n_layer, hp->n_head, hp->n_head_kv,
           rt_backend_name(b->o.backend), threads, b->o.topk, b->o.sinks, b->o.window,
           (long long)b->gen);
    printf("%7s %-9s %-13s %8s %7s %8s %8s %7s %7s %7s", "ctx", "mode", "ef/exp/g", "prefill",
           "build", "ms/tok", "median", "search", "attend", "imbal");
    if (coexec)
        printf(" %7s %7s %7s %7s", "gpuwait", "host", "tail", "idle");
    printf(" %6s %6s %7s %7s %7s %7s %7s\n", "scan%", "att%", "gpu", "host_kv", "index", "rss",
           "peak");
}

/* The runner's sentence as one CSV field. */
static void print_csv_quoted(const char *prefix, const char *s)
{
    printf("\"%s", prefix);
    for (; *s; s++) {
        if (*s == '"')
            putchar('"'); /* doubled, as CSV quotes a quote */
        putchar(*s);
    }
    printf("\"\n");
}

static void print_row(const bench_opts *b, const char *name, int threads, bool coexec,
                      const row *w)
{
    const char *mode = mode_names[w->mode];
    if (b->csv) {
        printf("%s,%s,%d,%u,%s,%s,%u,%u,%u,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f,"
               "%.4f,%.4f,%llu,%.4f,%.4f,%.4f,%.4f,%.4f,%u,%llu,%llu,%llu,%.3f,%.3f,%llu,%llu,"
               "%llu,%llu,%llu,%d,%d,%d,%d,%g,%d,%llu,",
               name, w->ok ? rt_backend_name(w->backend) : rt_backend_name(b->o.backend),
               threads, w->ctx, mode, w->ok ? rt_attn_mode_name(w->attention) : "", w->topk,
               w->n_pre, w->n_gen, w->prefill_s, w->build_s, w->build_knn_s,
               w->build_knn_gpu_s, w->build_prune_gpu_s, w->build_proj_s, w->build_repair_s,
               w->build_task_s,
               w->ms_mean,
               w->ms_median, w->search_ms, w->attend_ms, w->imbalance_ms,
               (unsigned long long)w->coexec_tokens,
               w->step_ms, w->wait_ms, w->host_ms, w->tail_ms, w->idle_ms, w->n_host,
               (unsigned long long)w->searches, (unsigned long long)w->scanned,
               (unsigned long long)w->attended, w->scanned_pct, w->attended_pct,
               (unsigned long long)w->gpu_bytes, (unsigned long long)w->host_kv_bytes,
               (unsigned long long)w->index_bytes, (unsigned long long)w->rss_prefill,
               (unsigned long long)w->rss_peak, w->search.ef, w->search.expand,
               w->search.group, w->search.batch, (double)w->search.margin, w->search.ilv,
               (unsigned long long)w->cold);
        if (w->ok)
            printf("ok\n");
        else
            print_csv_quoted("failed: ", w->why);
    } else if (!w->ok) {
        printf("%7u %-9s failed: %s\n", w->ctx, mode, w->why);
    } else {
        char set[96] = "-";
        const search_setting *x = &w->search;
        if (x->ef > 0) { /* as --search takes it: the optional fields up to the last set one */
            const int fields = x->ilv != 0 ? 6 : x->margin > 0 ? 5 : x->batch > 1 ? 4 : 3;
            int len = snprintf(set, sizeof set, "%d/%d/%d", x->ef, x->expand, x->group);
            if (fields >= 4)
                len += snprintf(set + len, sizeof set - (size_t)len, "/%d", x->batch);
            if (fields >= 5)
                len += snprintf(set + len, sizeof set - (size_t)len, "/%g", (double)x->margin);
            if (fields >= 6)
                snprintf(set + len, sizeof set - (size_t)len, "/%d", x->ilv);
        }
        printf("%7u %-9s %-13s %8.2f %7.2f %8.2f %8.2f %7.2f %7.2f %7.2f", w->ctx, mode, set,
               w->prefill_s, w->build_s, w->ms_mean, w->ms_median, w->search_ms, w->attend_ms,
               w->imbalance_ms);
        if (coexec)
            printf(" %7.2f %7.2f %7.2f %7.2f", w->wait_ms, w->host_ms, w->tail_ms, w->idle_ms);
        printf(" %6.1f %6.1f %7.3f %7.3f %7.3f %7.3f %7.3f\n", w->scanned_pct, w->attended_pct,
               gib(w->gpu_bytes), gib(w->host_kv_bytes), gib(w->index_bytes),
               gib(w->rss_prefill), gib(w->rss_peak));
    }
    fflush(stdout);
}

/* ==== The command ========================================================================= */

/* Every (L, mode) row; returns how many ran. */
static int run_all(bench *be, const char *name, int threads, bool coexec)
{
    const bench_opts *b = be->b;
    const rt_hparams *hp = rt_model_hparams(be->m);
    uint64_t seed = b->o.seed_set ? b->o.seed : 12345;
    int n_ok = 0;
    for (int li = 0; li < b->n_lens; li++) {
        uint32_t L = (uint32_t)b->lens[li];
        make_ids(be->ids, L, seed, hp->n_vocab);
        for (int mi = 0; mi < b->n_modes; mi++)
            n_ok += run_rows(be, L, b->modes[mi], name, threads, coexec);
    }
    return n_ok;
}

int bench_retrieval(int argc, char **argv)
{
    bench_opts b;
    memset(&b, 0, sizeof b);
    app_opts_init(&b.o);
    b.gen = 32;
    bool help = false;
    int rc = parse_args(&b, argc, argv, &help);
    if (help) {
        usage(stdout);
        return APP_EXIT_OK;
    }
    if (rc)
        return rc;
    int threads = b.o.threads > 0 ? b.o.threads : omp_get_max_threads();
    int64_t max_len = 0;
    for (int i = 0; i < b.n_lens; i++)
        max_len = b.lens[i] > max_len ? b.lens[i] : max_len;

    rc = APP_EXIT_FAIL;
    loupe_err err = {0};
    char tmp_path[256] = "";
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    bench be = {.b = &b, .tty = isatty(STDERR_FILENO) != 0};
    const char *path = app_model_path(&b.o);
    if (b.preset) { /* written by `loupe mkmodel`, removed at the end */
        snprintf(tmp_path, sizeof tmp_path, "%s/loupe-bench-%s-%d.gguf",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", b.preset, (int)getpid());
        char *mk[] = {"mkmodel", "--preset", (char *)b.preset, "--out", tmp_path, NULL};
        if ((rc = cmd_mkmodel(5, mk)) != APP_EXIT_OK) {
            tmp_path[0] = '\0';
            goto done;
        }
        rc = APP_EXIT_FAIL;
        path = tmp_path;
    }
    if (rt_gguf_open(path, &g, &err) || rt_model_load(g, &m, &err)) {
        app_fail(CMD, &err);
        goto done;
    }
    be.m = m;
    be.ids = malloc((size_t)max_len * sizeof *be.ids);
    be.times = malloc((size_t)b.gen * sizeof *be.times);
    if (!be.ids || !be.times) {
        loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory for %lld token ids", (long long)max_len);
        app_fail(CMD, &err);
        goto done;
    }
    /* the co-execution columns only where a CUDA backend can run */
    bool coexec = b.o.backend == RT_BACKEND_CUDA ||
                  (b.o.backend == RT_BACKEND_AUTO && rt_cuda_available());
    char marked[512];
    const char *name = b.preset ? b.preset : path;
    if (b.local_prefill) { /* every row says its prefill was not the model's */
        snprintf(marked, sizeof marked, "%s [local prefill]", name);
        name = marked;
    }
    print_header(&b, name, m, threads, coexec);
    if (run_all(&be, name, threads, coexec) > 0)
        rc = APP_EXIT_OK;
    else
        fprintf(stderr, "loupe: %s: every row failed\n", CMD);
done:
    free(be.ids);
    free(be.times);
    rt_model_destroy(m);
    rt_gguf_close(g);
    if (tmp_path[0])
        unlink(tmp_path);
    return rc;
}
