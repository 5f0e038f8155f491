/*
 * `loupe bench anns`: builds each index type over one head's keys, sweeps its search parameter
 * (ef for graphs, nprobe for IVF) and prints, per setting, recall@k against exact ground truth,
 * the fraction of keys scanned (distance computations / keys), searches/s and build seconds with
 * their split. Vectors come from .fbin files or from the synthetic attention-like generator.
 * Ground truth is computed exactly from the f32 keys unless --truth gives it, so recall includes
 * the error of the key storage type. Beside recall@k it reports the attention-mass recall (the
 * softmax weight of the returned keys over that of the true top-k), since attention's score
 * profiles are near one-hot and the tail of a top-k weighs almost nothing.
 *
 * For vectors dumped from a model (`loupe dump-qk`): --exclude-first/--exclude-last index only
 * the middle keys, as the decode does (sinks and the recent window stay on the GPU and are
 * attended exactly); --analyze prints where the test queries' attention goes; --prev-seeds
 * replays decode order, each search seeded by the previous step's results (--next-seeds,
 * --stream-seeds: and by the keys after them and after earlier steps', as the runtime does).
 *
 * --group G (graphs): the --queries files are the query heads of one KV group over its one
 * index, each file one head's decode queries in order; decode step i of G consecutive files is
 * searched with one ann_search_group traversal. Keys scanned then count each key row once per
 * traversal (its memory cost), so the scanned fraction and rows per query are per head: a
 * group's rows / G; searches/s counts heads searched.
 */
#include "app/app.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: loupe bench anns (--keys K.fbin --build-queries Q.fbin --queries T.fbin |\n"
    "                         --synthetic N,D) [OPTIONS]\n"
    "  (--build-queries and --queries take comma-separated lists, concatenated: e.g. every\n"
    "   query head of a KV group for one index per KV head)\n"
    "  --truth G.ibin        ground truth ids (n_queries, >= k); computed exactly if absent\n"
    "  --k N                 results per query (100)\n"
    "  --index LIST          comma-separated: flat,ivf,graph,keygraph (all)\n"
    "  --threads N           search and build threads (all cores)\n"
    "  --storage T           key storage: bf16 (default), int8, f32, int8c (int8 with a\n"
    "                        scale per channel)\n"
    "  --search-keys int8c   graphs walk an int8c copy of the keys (built over the keys as\n"
    "                        stored; the beam re-scored against them)\n"
    "  --n-test N            synthetic test queries (1000)\n"
    "  --sample N            build queries sampled for the graph (all)\n"
    "  --degree M            graph out-degree cap (32)\n"
    "  --build-k N           exact top-k per build query (64)\n"
    "  --fill N              top lists up to N edges with pruned candidates (16)\n"
    "  --prune-nearest N     cut each list to its N candidates nearest the owner before\n"
    "                        pruning (0: all; with a large --build-k, e.g. 128)\n"
    "  --prune l2|ip         pruning rule (l2)\n"
    "  --alpha A             l2 pruning relaxation, 1..4: keep c unless A·d(r,c) < d(p,c) (1)\n"
    "  --pivot-cap N         lists one key may own as pivot, 0 = no cap (8)\n"
    "  --entries N           entry points (4)\n"
    "  --no-repair           skip the connectivity repair\n"
    "  --nlist N             IVF lists (2·sqrt(n))\n"
    "  --ef LIST             graph beams to sweep (100,128,160,200,256,320,400,512,768);\n"
    "                        below k: a pool of k whose best ef entries are expanded\n"
    "  --nprobe LIST         IVF probes to sweep (1,2,4,8,16,32,64,128)\n"
    "  --write-synthetic P   also write P.keys.fbin, P.build.fbin, P.test.fbin\n"
    "  --exclude-first N     index only keys N.. (the sinks the GPU keeps, e.g. 128)\n"
    "  --exclude-last N      and not the last N keys (the recent window, e.g. 512); ground\n"
    "                        truth and recall are then over the middle keys only\n"
    "  --expand-batch N      graphs: pool entries expanded at a time, their rows fetched\n"
    "                        together (1..8; 1, the classic order)\n"
    "  --interleave N        graphs: each thread runs N searches at once, interleaved a step\n"
    "                        at a time (1..4; the same results and rows; 1)\n"
    "  --margin X            graphs: stop at the first unexpanded pool entry whose attention\n"
    "                        logit q.k/sqrt(d) is below the best's by more than X (0: none)\n"
    "  --expand-frac F       graphs: a beam above k stops once its best F·ef entries are\n"
    "                        expanded (the runtime's default is 0.64; 1, all)\n"
    "  --prev-seeds N        graphs: search the test queries in order on one thread, each\n"
    "                        seeded with the previous one's best N (decode steps; per file)\n"
    "  --recent-seeds N      graphs: also start every search at the last N indexed keys (the\n"
    "                        ones just before the recent window: decode queries attend near)\n"
    "  --next-seeds          with --prev-seeds: also the key after each previous result, as\n"
    "                        the runtime seeds a decode step\n"
    "  --stream-seeds S      with --prev-seeds: also the key s after each result of the step\n"
    "                        s back, s = 1..S (--next-seeds is S = 1)\n"
    "  --oracle-seeds        diagnostic: seed with the TRUE best N (--prev-seeds N) keys, to\n"
    "                        tell entry problems from graph-structure ones\n"
    "  --per-file            after each setting's row over all test queries, one row per\n"
    "                        --queries file searched alone (index name <type>@<file>)\n"
    "  --group G             graphs: search step i of G consecutive --queries files (the\n"
    "                        query heads of one KV group, equal lengths) with one traversal\n"
    "                        (ann_search_group; seeds: the union of the group's); 1 (default)\n"
    "                        searches each head alone. --per-file rows then share the\n"
    "                        grouped run's scanned rows and time\n"
    "  --group-mode M        each (default): a pool per head, rows and expansions shared;\n"
    "                        max, mean: one shared pool ranked by the heads' best or mean\n"
    "                        score (anns.h, ann_group_mode)\n"
    "  --analyze             first print where the test queries' attention goes: softmax\n"
    "                        mass of the sinks, the window, the middle and its top-k; where\n"
    "                        each decode step's new top-k keys come from (p+s of the step s\n"
    "                        back: what --stream-seeds can reach)\n"
    "  --seed N              (1)\n"
    "  --csv                 one header line, then one row per setting\n";

typedef struct {
    int vals[32];
    int n;
} int_list;

enum { ANN_BENCH_MAX_FILES = 64 }; /* files in one --queries list */

static int parse_list(const char *cmd, const char *name, const char *s, int_list *out)
{
    out->n = 0;
    char buf[512];
    if (strlen(s) >= sizeof buf)
        return app_usage(cmd, "%s: list too long", name);
    memcpy(buf, s, strlen(s) + 1);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int64_t v;
        if (out->n == 32)
            return app_usage(cmd, "%s: at most 32 values", name);
        if (app_parse_i64(cmd, name, tok, 1, 1 << 20, &v))
            return APP_EXIT_USAGE;
        out->vals[out->n++] = (int)v;
    }
    return out->n ? 0 : app_usage(cmd, "%s: empty list", name);
}

static float dotf(const float *a, const float *b, int d)
{
    float acc = 0;
    for (int c = 0; c < d; c++)
        acc += a[c] * b[c];
    return acc;
}

typedef struct {
    const ann_index *ix;
    ann_search_ctx **ctxs;
    int nth;
    const float *tq;
    int64_t nt;
    const int32_t *truth;
    int truth_d;
    int k;
    int64_t n;
    int csv;
    double build_s;
    const ann_build_stats *bs;
    int32_t *ids;
    float *scores;
    const float *keys_f32;   /* (n, d) the indexed keys, f32, for the attention-mass recall */
    int d;
    const double *truth_mass; /* (nt) sum of exp(q.k/sqrt(d) - top1) over the true top-k */
    int prev_seeds;           /* > 0: search in order, seeded by the previous query's best */
    int64_t seq_len;          /* queries per decode sequence (one file); seeds stay within one */
    int oracle;               /* seeds are the true best prev_seeds keys instead (diagnostic) */
    int stream_lags;          /* --next-seeds / --stream-seeds S: the key `lag` after each result
                                 of the step `lag` back, lag 1 .. stream_lags (0: none) */
    int per_file;             /* also one row per --queries file (--per-file) */
    int n_files;              /* --queries files, their query counts in file_n */
    const int64_t *file_n;
    const int32_t *recent;    /* (n_recent) the last keys before the window (--recent-seeds) */
    int n_recent;
    int32_t *seed_buf;        /* ((1 + stream_lags)·group·k + n_recent) one decode step's seeds:
                                 previous, the keys after earlier steps' results, recent */
    int group;                /* --group: query files searched together, 1: alone */
    ann_group_mode mix;        /* --group-mode */
    float *gq;                /* (nth, group, d) per thread, one group's queries */
    int32_t *gids;            /* (nth, group, k) per thread, one group's results */
    float *gsc;               /* (nth, group, k) */
    int expand_batch;         /* --expand-batch: graph pool entries expanded at a time */
    int interleave;           /* --interleave: searches per thread at once; ctxs holds nth of
                                 them per thread */
    float margin;             /* --margin in logits, times sqrt(d): q·k units */
    float expand_frac;        /* --expand-frac: beams above k expand their best share, 0: all */
} sweep_ctx;

/* Softmax weight of key `id` for query q relative to the query's best true score `s1`. */
static double key_weight(const sweep_ctx *s, const float *q, int32_t id, float s1)
{
    float sc = dotf(q, s->keys_f32 + (int64_t)id * s->d, s->d) / sqrtf((float)s->d);
    return exp((double)(sc - s1));
}

/* One setting's measurements over a slice of the test queries. */
typedef struct {
    double recall, mass, frac, secs;
    int64_t nq;
} sweep_row;

/* Recall@k and attention-mass recall of the results of test queries q0 .. q0+nq-1 into out. */
static void evaluate(const sweep_ctx *s, int64_t q0, int64_t nq, sweep_row *out)
{
    int64_t hits = 0;
    for (int64_t q = q0; q < q0 + nq; q++)
        for (int i = 0; i < s->k; i++) {
            int32_t id = s->ids[q * s->k + i];
            for (int j = 0; j < s->k && id >= 0; j++)
                if (s->truth[q * s->truth_d + j] == id) {
                    hits++;
                    break;
                }
        }
    out->recall = (double)hits / ((double)nq * s->k);
    /* Attention-mass recall: the softmax mass of the returned keys over that of the true top-k
     * (what the missed keys cost the attention output, unlike recall, which weighs all alike). */
    double mass = 0;
    for (int64_t q = q0; q < q0 + nq; q++) {
        const float *qv = s->tq + q * s->d;
        float s1 = dotf(qv, s->keys_f32 + (int64_t)s->truth[q * s->truth_d] * s->d, s->d) /
                   sqrtf((float)s->d);
        double got = 0;
        for (int i = 0; i < s->k; i++)
            if (s->ids[q * s->k + i] >= 0)
                got += key_weight(s, qv, s->ids[q * s->k + i], s1);
        double m = got / s->truth_mass[q];
        mass += m > 1 ? 1 : m;
    }
    out->mass = mass / (double)nq;
    out->nq = nq;
}

/* --next-seeds / --stream-seeds: for lag 1 .. stream_lags, the key `lag` after each of the per
 * results of the step `lag` back (ids in index order are positions), as the runtime seeds a
 * decode step (retrieval_cpu.c: a model copying from the context reads, at this step, the
 * position after the one it read at the last; a copied run that fell out of one step's top k
 * comes back moved on). res: the results of the step before, those of the step `lag` back at
 * res − (lag − 1)·k; avail: the steps back the query's sequence has. Writes into out, returns
 * how many. */
static int stream_keys(const sweep_ctx *s, const int32_t *res, int per, int64_t avail,
                       int32_t *out)
{
    int m = 0;
    for (int lag = 1; lag <= s->stream_lags && lag <= avail; lag++) {
        const int32_t *prev = res - (int64_t)(lag - 1) * s->k;
        for (int x = 0; x < per; x++)
            if (prev[x] >= 0 && prev[x] + lag < s->n)
                out[m++] = prev[x] + lag;
    }
    return m;
}

/* Group gi's queries of decode step i (--group): file f's step i is test query f·seq_len + i.
 * Gathers them into thread t's buffer, searches them with one traversal and scatters the
 * results to their rows of s->ids / s->scores. */
static loupe_status search_group_step(sweep_ctx *s, const ann_search_params *p, int t, int gi,
                                      int64_t i, loupe_err *err)
{
    int f0 = gi * s->group, nq = s->n_files - f0 < s->group ? s->n_files - f0 : s->group;
    float *qs = s->gq + (size_t)t * s->group * s->d;
    int32_t *gid = s->gids + (size_t)t * s->group * s->k;
    float *gsc = s->gsc + (size_t)t * s->group * s->k;
    int nf[ANN_GROUP_MAX];
    for (int j = 0; j < nq; j++)
        memcpy(qs + (size_t)j * s->d, s->tq + ((f0 + j) * s->seq_len + i) * s->d,
               (size_t)s->d * sizeof *qs);
    loupe_status st = ann_search_group(s->ix, s->ctxs[t], qs, nq, p, gid, gsc, nf, err);
    for (int j = 0; j < nq && !st; j++) {
        int64_t q = (f0 + j) * s->seq_len + i;
        memcpy(s->ids + q * s->k, gid + (size_t)j * s->k, (size_t)s->k * sizeof *gid);
        memcpy(s->scores + q * s->k, gsc + (size_t)j * s->k, (size_t)s->k * sizeof *gsc);
    }
    return st;
}

/* --group: every decode step of every group of files. With --prev-seeds in decode order on one
 * thread, a group's step seeded with the union of its heads' previous (or true, --oracle-seeds)
 * best prev_seeds keys; else the (group, step) pairs in parallel. */
static int search_grouped(sweep_ctx *s, ann_search_params p)
{
    loupe_err err;
    loupe_err_clear(&err);
    const int n_groups = (s->n_files + s->group - 1) / s->group;
    const int64_t L = s->seq_len;
    if (s->prev_seeds > 0) {
        int per = s->prev_seeds < s->k ? s->prev_seeds : s->k;
        for (int gi = 0; gi < n_groups; gi++) {
            int f0 = gi * s->group, nq = s->n_files - f0 < s->group ? s->n_files - f0 : s->group;
            for (int64_t i = 0; i < L; i++) {
                int n_seeds = 0;
                for (int j = 0; j < nq && (i > 0 || s->oracle); j++) {
                    int64_t q = (f0 + j) * L + i;
                    const int32_t *prev = s->oracle ? s->truth + q * s->truth_d
                                                    : s->ids + (q - 1) * s->k;
                    memcpy(s->seed_buf + n_seeds, prev, (size_t)per * sizeof *prev);
                    n_seeds += per;
                    if (s->stream_lags && !s->oracle)
                        n_seeds += stream_keys(s, prev, per, i, s->seed_buf + n_seeds);
                }
                if (s->n_recent)
                    memcpy(s->seed_buf + n_seeds, s->recent,
                           (size_t)s->n_recent * sizeof *s->recent);
                p.seeds = s->seed_buf;
                p.n_seeds = n_seeds + s->n_recent;
                if (search_group_step(s, &p, 0, gi, i, &err))
                    return app_fail("bench anns: group search", &err);
            }
        }
        return 0;
    }
    loupe_status rc = LOUPE_OK;
    const long work = (long)n_groups * (long)L;
#pragma omp parallel num_threads(s->nth)
    {
        loupe_err e;
        loupe_err_clear(&e);
#pragma omp for schedule(dynamic, 16)
        for (long w = 0; w < work; w++)
            if (search_group_step(s, &p, omp_get_thread_num(), (int)(w / L), w % L, &e))
#pragma omp critical(bench_group_err)
                if (rc == LOUPE_OK) {
                    rc = e.status;
                    err = e;
                }
    }
    return rc ? app_fail("bench anns: group search", &err) : 0;
}

/* Searches test queries q0 .. q0+nq-1 with p (with --group: all of them, grouped) and measures
 * recall@k, attention-mass recall and the fraction of keys scanned. Seeds (--prev-seeds) restart
 * at q0 and at each file's start. */
/* --interleave: the queries in runs of s->interleave, each run on one thread with its
 * contexts, interleaved (ann_search_many). */
static loupe_status search_interleaved(sweep_ctx *s, const ann_search_params *p, int64_t q0,
                                       int64_t nq, loupe_err *err)
{
    const int w = s->interleave;
    const int64_t runs = (nq + w - 1) / w;
    loupe_status rc = LOUPE_OK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(s->nth)
    for (int64_t i = 0; i < runs; i++) {
        const int t = omp_get_thread_num();
        const int64_t q = q0 + i * w;
        const int n = nq - i * w < w ? (int)(nq - i * w) : w;
        const ann_index *ixs[ANN_INTERLEAVE_MAX];
        const float *qs[ANN_INTERLEAVE_MAX];
        ann_search_params ps[ANN_INTERLEAVE_MAX];
        int nf[ANN_INTERLEAVE_MAX];
        for (int j = 0; j < n; j++) {
            ixs[j] = s->ix;
            qs[j] = s->tq + (q + j) * s->d;
            ps[j] = *p;
        }
        loupe_err e;
        loupe_status st = ann_search_many(ixs, s->ctxs + (size_t)t * w, qs, ps, n,
                                          s->ids + q * s->k, s->scores + q * s->k, nf, &e);
        if (st) {
#pragma omp critical(bench_anns_interleave)
            if (!rc) {
                rc = st;
                *err = e;
            }
        }
    }
    return rc;
}

static int measure(sweep_ctx *s, ann_search_params p, int64_t q0, int64_t nq, sweep_row *out)
{
    loupe_err err;
    loupe_err_clear(&err);
    const int n_ctx = s->nth * s->interleave;
    for (int t = 0; t < n_ctx; t++)
        ann_search_ctx_reset_scanned(s->ctxs[t]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (s->group > 1 && ann_index_type(s->ix) >= ANN_GRAPH) {
        if (search_grouped(s, p))
            return APP_EXIT_FAIL;
    } else if (s->prev_seeds > 0 && ann_index_type(s->ix) >= ANN_GRAPH) {
        /* Decode order: step t starts from step t-1's best keys (one thread). */
        for (int64_t q = q0; q < q0 + nq; q++) {
            int nf;
            int first = q == q0 || s->seq_len <= 0 || q % s->seq_len == 0;
            const int32_t *prev = first ? NULL : s->ids + (q - 1) * s->k;
            int n_prev = first ? 0 : s->prev_seeds < s->k ? s->prev_seeds : s->k;
            if (s->oracle) { /* diagnostic: start at the true best keys */
                prev = s->truth + q * s->truth_d;
                n_prev = s->prev_seeds < s->k ? s->prev_seeds : s->k;
            }
            if (n_prev)
                memcpy(s->seed_buf, prev, (size_t)n_prev * sizeof *prev);
            if (n_prev && s->stream_lags && !s->oracle) {
                const int64_t start = s->seq_len > 0 && q0 < q - q % s->seq_len
                                          ? q - q % s->seq_len : q0;
                n_prev += stream_keys(s, prev, n_prev, q - start, s->seed_buf + n_prev);
            }
            if (s->n_recent)
                memcpy(s->seed_buf + n_prev, s->recent, (size_t)s->n_recent * sizeof *prev);
            p.seeds = s->seed_buf;
            p.n_seeds = n_prev + s->n_recent;
            if (ann_search(s->ix, s->ctxs[0], s->tq + q * s->d, &p, s->ids + q * s->k,
                           s->scores + q * s->k, &nf, &err))
                return app_fail("bench anns: search", &err);
        }
    } else if (s->interleave > 1 && ann_index_type(s->ix) >= ANN_GRAPH) {
        if (search_interleaved(s, &p, q0, nq, &err))
            return app_fail("bench anns: search", &err);
    } else if (ann_search_batch(s->ix, s->ctxs, s->nth, s->tq + q0 * s->d, nq, &p,
                                s->ids + q0 * s->k, s->scores + q0 * s->k, &err)) {
        return app_fail("bench anns: search", &err);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    out->secs = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    int64_t scanned = 0;
    for (int t = 0; t < n_ctx; t++)
        scanned += ann_search_ctx_scanned(s->ctxs[t]);
    evaluate(s, q0, nq, out);
    out->frac = (double)scanned / ((double)nq * (double)s->n);
    return 0;
}

/* One output row; `name` is the index type, or "<type>@<file>" for one --queries file's row. */
static void print_row(const sweep_ctx *s, const char *name, const char *param, int value,
                      const sweep_row *r)
{
    double bpk = (double)ann_index_bytes(s->ix) / (double)s->n;
    double rows = r->frac * (double)s->n; /* key rows per query (head) */
    if (s->csv)
        printf("%s,%s,%d,%.4f,%.4f,%.5f,%.1f,%.3f,%.3f,%.3f,%.3f,%.1f,%.1f\n", name, param, value,
               r->recall, r->mass, r->frac, (double)r->nq / r->secs, s->build_s, s->bs->knn_s,
               s->bs->projection_s, s->bs->repair_s, bpk, rows);
    else
        printf("%-9s %-7s %6d  %8.4f  %6.4f  %9.3f%%  %11.0f  %8.2f  %6.2f %6.2f %6.2f  %7.1f  "
               "%7.0f\n",
               name, param, value, r->recall, r->mass, 100.0 * r->frac, (double)r->nq / r->secs,
               s->build_s, s->bs->knn_s, s->bs->projection_s, s->bs->repair_s, bpk, rows);
}

/* Graphs: `ef` below k keeps a pool of k and expands only its best ef entries. With
 * --per-file, each --queries file is then searched alone and gets its own row (one index per KV
 * head tested on each of its query heads' decode queries). */
static int run_setting(sweep_ctx *s, const char *param, int value, int ef, int nprobe)
{
    int expand = ef;
    if (s->expand_frac > 0 && ef > s->k) { /* the best share of a wide beam */
        expand = (int)(s->expand_frac * (float)ef);
        expand = expand > 0 ? expand : 1;
    }
    ann_search_params p = {.k = s->k, .ef = ef > s->k ? ef : s->k, .nprobe = nprobe,
                           .expand = expand, .group_mode = s->mix,
                           .expand_batch = s->expand_batch, .margin = s->margin};
    const int grouped = s->group > 1 && ann_index_type(s->ix) >= ANN_GRAPH;
    const char *name = ann_type_name(ann_index_type(s->ix));
    if (s->n_recent) { /* the same start keys for every query; the decode loop adds its own */
        p.seeds = s->recent;
        p.n_seeds = s->n_recent;
    }
    sweep_row r;
    if (measure(s, p, 0, s->nt, &r))
        return APP_EXIT_FAIL;
    print_row(s, name, param, value, &r);
    int64_t q0 = 0;
    for (int f = 0; s->per_file && s->n_files > 1 && f < s->n_files; f++) {
        char fname[32];
        snprintf(fname, sizeof fname, "%s@%d", name, f);
        if (grouped) { /* the files were searched together: the whole run's rows and rate */
            r.secs *= (double)s->file_n[f] / (double)r.nq;
            evaluate(s, q0, s->file_n[f], &r);
        }
        else if (measure(s, p, q0, s->file_n[f], &r))
            return APP_EXIT_FAIL;
        print_row(s, fname, param, value, &r);
        q0 += s->file_n[f];
    }
    fflush(stdout);
    return 0;
}

/* Reads one .fbin, or several comma-separated ones of one dimension concatenated (e.g. the
 * queries of every query head of a KV group: one index per KV head from their union). When
 * file_n is non-NULL it receives each file's row count (at most ANN_BENCH_MAX_FILES files) and
 * *n_files their number. */
static loupe_status read_fbin_list(const char *list, float **out, int64_t *n, int *d,
                                   int64_t *file_n, int *n_files, loupe_err *err)
{
    char buf[4096];
    loupe_status st = LOUPE_OK;
    *out = NULL;
    *n = 0;
    *d = 0;
    if (strlen(list) >= sizeof buf)
        return loupe_fail(err, LOUPE_ERR_INVALID, "file list too long: %.60s...", list);
    memcpy(buf, list, strlen(list) + 1);
    for (char *sv = NULL, *path = strtok_r(buf, ",", &sv); path && !st;
         path = strtok_r(NULL, ",", &sv)) {
        float *part = NULL;
        int64_t pn = 0;
        int pd = 0;
        if (file_n && *n_files == ANN_BENCH_MAX_FILES) {
            st = loupe_fail(err, LOUPE_ERR_INVALID, "at most %d files in a list",
                            ANN_BENCH_MAX_FILES);
            break;
        }
        if ((st = ann_fbin_read(path, &part, &pn, &pd, err)) != LOUPE_OK)
            break;
        if (*d && pd != *d) {
            st = loupe_fail(err, LOUPE_ERR_FORMAT, "%s: dimension %d, the list's first file has "
                            "%d", path, pd, *d);
        } else {
            float *grown = realloc(*out, (size_t)(*n + pn) * (size_t)pd * sizeof *grown);
            if (!grown) {
                st = loupe_fail(err, LOUPE_ERR_NOMEM, "no memory for %s", path);
            } else {
                memcpy(grown + *n * pd, part, (size_t)pn * (size_t)pd * sizeof *grown);
                if (file_n)
                    file_n[(*n_files)++] = pn;
                *out = grown;
                *n += pn;
                *d = pd;
            }
        }
        free(part);
    }
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* ---- --analyze: where the test queries' attention goes ------------------------------------ */

static int cmp_float_asc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* With test queries in decode order (sequences of seq_len): of the keys in a step's exact
 * middle top-k that the step before lacked, how many are p + s for a key p of the top-k s steps
 * back (the smallest such s, up to STREAM_LAGS), how many return unmoved from an earlier step,
 * and how many are neither: how far seeding a step from the last steps' results (the runtime's
 * seed_lags, --stream-seeds) can reach. mt (nt, k): the middle top-k ids, in position order. */
enum { STREAM_LAGS = 16 };
static bool holds(const int32_t *list, int k, int32_t id)
{
    for (int j = 0; j < k; j++)
        if (list[j] == id)
            return true;
    return false;
}

static void analyze_streams(const int32_t *mt, int64_t nt, int k, int64_t seq_len)
{
    double fresh = 0, by_lag[STREAM_LAGS + 1] = {0}, back = 0, none = 0;
    int64_t steps = 0;
    for (int64_t t = 1; t < nt; t++) {
        const int64_t t0 = t - t % seq_len; /* the sequence's first step */
        if (t == t0)
            continue;
        steps++;
        for (int i = 0; i < k; i++) {
            const int32_t id = mt[t * k + i];
            if (holds(mt + (t - 1) * k, k, id))
                continue;
            fresh++;
            int lag = 0;
            for (int sb = 1; sb <= STREAM_LAGS && t - sb >= t0 && !lag; sb++)
                lag = holds(mt + (t - sb) * k, k, id - sb) ? sb : 0;
            bool returning = false;
            for (int sb = 2; !lag && sb <= STREAM_LAGS && t - sb >= t0 && !returning; sb++)
                returning = holds(mt + (t - sb) * k, k, id);
            if (lag)
                by_lag[lag]++;
            else if (returning)
                back++;
            else
                none++;
        }
    }
    if (steps == 0 || fresh == 0)
        return;
    double later = 0;
    for (int sb = 5; sb <= STREAM_LAGS; sb++)
        later += by_lag[sb];
    printf("#   decode steps: %.1f of a step's middle top-%d are new; of those, p+s for a key p of "
           "the top-%d s steps back: s=1 %.1f%%, 2 %.1f%%, 3 %.1f%%, 4 %.1f%%, 5-%d %.1f%%; "
           "back unmoved from 2-%d steps back %.1f%%; neither %.1f%%\n", fresh / (double)steps,
           k, k, 100 * by_lag[1] / fresh, 100 * by_lag[2] / fresh, 100 * by_lag[3] / fresh,
           100 * by_lag[4] / fresh, STREAM_LAGS, 100 * later / fresh, STREAM_LAGS,
           100 * back / fresh, 100 * none / fresh);
}

/* Prints, over the test queries, the softmax mass (scale 1/sqrt(d), as attention) held by the
 * first `first` keys (sinks), the last `last` keys (recent window), the middle, and the middle's
 * exact top-k; where the middle's top-k lie (distance to the window); where a decode step's new
 * top-k keys come from (analyze_streams, with seq_len > 1); how many of them some build query
 * also has in its top-build_k (what the graph's projection can have linked); and how close each
 * test query is to the build queries (best cosine, and that query's top-k overlap). K is (n, d)
 * f32; the middle is [first, n - last). */
static int analyze(const float *K, int64_t n, int d, const float *BQ, int64_t nbq,
                   const float *TQ, int64_t nt, int k, int64_t first, int64_t last,
                   int build_k, int nth, int64_t seq_len)
{
    int rc = APP_EXIT_FAIL;
    loupe_err err;
    loupe_err_clear(&err);
    int64_t mid0 = first, nm = n - first - last;
    float *s = malloc((size_t)n * sizeof *s), *tmp = malloc((size_t)n * sizeof *tmp);
    int32_t *mt = malloc((size_t)nt * (size_t)k * sizeof *mt);
    float *ms = malloc((size_t)nt * (size_t)k * sizeof *ms);
    int32_t *bl = NULL;
    float *bs = NULL;
    uint8_t *covered = NULL;
    ann_keys *mk = NULL;
    if (!s || !tmp || !mt || !ms) {
        fprintf(stderr, "loupe: bench anns: out of memory for --analyze\n");
        goto done;
    }
    if (ann_keys_create(K + mid0 * d, nm, d, ANN_KEYS_F32, &mk, &err) ||
        ann_knn_cpu(NULL, mk, TQ, nt, k, nth, mt, ms, NULL, &err))
        goto fail;
    double m_first = 0, m_last = 0, m_mid = 0, m_midk = 0, m_allk = 0, top1 = 0;
    double in_first = 0, in_last = 0, near[4] = {0}, gap1k = 0, gapk10k = 0;
    const int64_t bands[4] = {512, 2048, 8192, INT64_MAX}; /* keys before the window */
    const float scale = 1.0f / sqrtf((float)d);
    for (int64_t t = 0; t < nt; t++) {
        const float *q = TQ + t * d;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            s[j] = scale * dotf(q, K + j * d, d);
            mx = s[j] > mx ? s[j] : mx;
        }
        double z = 0, zf = 0, zl = 0;
        for (int64_t j = 0; j < n; j++) {
            double e = exp((double)(s[j] - mx));
            z += e;
            if (j < first)
                zf += e;
            else if (j >= n - last)
                zl += e;
        }
        m_first += zf / z;
        m_last += zl / z;
        m_mid += (z - zf - zl) / z;
        double zk = 0;
        for (int i = 0; i < k; i++) {
            int64_t j = mid0 + mt[t * k + i];
            zk += exp((double)(s[j] - mx));
            int64_t before = n - last - j; /* 1 = the key just before the window */
            for (int bnd = 0; bnd < 4; bnd++)
                if (before <= bands[bnd]) {
                    near[bnd] += 1.0 / (double)k;
                    break;
                }
        }
        m_midk += zk / z;
        top1 += exp((double)(s[mid0 + mt[t * k]] - mx)) / z;
        /* The overall top-k: the k-th largest score is the threshold. */
        memcpy(tmp, s, (size_t)n * sizeof *tmp);
        qsort(tmp, (size_t)n, sizeof *tmp, cmp_float_asc);
        float thr = tmp[n - (k < n ? k : n)];
        double zak = 0;
        int cf = 0, cl = 0;
        for (int64_t j = 0; j < n; j++)
            if (s[j] >= thr) {
                zak += exp((double)(s[j] - mx));
                cf += j < first;
                cl += j >= n - last;
            }
        m_allk += zak / z;
        /* Score profile of the middle (softmax logits): how far the k-th key trails the best,
         * and how little separates it from the 10k-th (a flat tail makes recall@k noisy). */
        memcpy(tmp, s + first, (size_t)nm * sizeof *tmp);
        qsort(tmp, (size_t)nm, sizeof *tmp, cmp_float_asc);
        int64_t r10 = 10 * (int64_t)k < nm ? 10 * (int64_t)k : nm;
        gap1k += tmp[nm - 1] - tmp[nm - k];
        gapk10k += tmp[nm - k] - tmp[nm - r10];
        in_first += (double)cf / k;
        in_last += (double)cl / k;
    }
    double inv = 1.0 / (double)nt;
    printf("# analyze: %lld test queries over %lld keys; sinks [0,%lld), window [%lld,%lld), "
           "middle %lld keys; softmax scale 1/sqrt(%d)\n", (long long)nt, (long long)n,
           (long long)first, (long long)(n - last), (long long)n, (long long)nm, d);
    printf("#   mean attention mass: sinks %.3f, window %.3f, middle %.3f (its exact top-%d: %.3f, "
           "its best key: %.3f); top-%d of all keys: %.3f\n", m_first * inv, m_last * inv,
           m_mid * inv, k, m_midk * inv, top1 * inv, k, m_allk * inv);
    printf("#   sinks + window + middle top-%d (what retrieval attention attends): %.3f\n", k,
           (m_first + m_last + m_midk) * inv);
    printf("#   the overall top-%d: %.1f%% sinks, %.1f%% window, %.1f%% middle\n", k,
           100 * in_first * inv, 100 * in_last * inv,
           100 * (1 - (in_first + in_last) * inv));
    printf("#   middle logits: best - %d-th %.2f, %d-th - %d-th %.2f (softmax units)\n", k,
           gap1k * inv, k, 10 * k, gapk10k * inv);
    printf("#   middle top-%d by distance before the window: <=512 %.1f%%, 513-2048 %.1f%%, "
           "2049-8192 %.1f%%, farther %.1f%%\n", k, 100 * near[0] * inv, 100 * near[1] * inv,
           100 * near[2] * inv, 100 * near[3] * inv);
    if (seq_len > 1)
        analyze_streams(mt, nt, k, seq_len);

    /* Coverage by the build queries' exact top-build_k lists over the middle. */
    if (nbq > 0 && build_k > 0) {
        int bk = build_k < nm ? build_k : (int)nm;
        bl = malloc((size_t)nbq * (size_t)bk * sizeof *bl);
        bs = malloc((size_t)nbq * (size_t)bk * sizeof *bs);
        covered = calloc((size_t)nm, 1);
        if (!bl || !bs || !covered) {
            fprintf(stderr, "loupe: bench anns: out of memory for --analyze\n");
            goto done;
        }
        if (ann_knn_cpu(NULL, mk, BQ, nbq, bk, nth, bl, bs, NULL, &err))
            goto fail;
        int64_t ncov = 0;
        for (int64_t i = 0; i < nbq * bk; i++)
            if (bl[i] >= 0 && !covered[bl[i]]) {
                covered[bl[i]] = 1;
                ncov++;
            }
        double cov = 0;
        for (int64_t i = 0; i < nt * k; i++)
            cov += covered[mt[i]];
        /* Nearest build query by cosine, and how much of its top-bk the test top-k shares. */
        double best_cos = 0, overlap = 0;
        for (int64_t t = 0; t < nt; t++) {
            const float *q = TQ + t * d;
            double qn = sqrt((double)dotf(q, q, d)), bc = -2;
            int64_t bj = 0;
            for (int64_t j = 0; j < nbq; j++) {
                const float *b = BQ + j * d;
                double c = dotf(q, b, d) /
                           (qn * sqrt((double)dotf(b, b, d)) + 1e-30);
                if (c > bc) {
                    bc = c;
                    bj = j;
                }
            }
            best_cos += bc;
            int ov = 0;
            for (int i = 0; i < k; i++)
                for (int j = 0; j < bk; j++)
                    if (mt[t * k + i] == bl[bj * bk + j]) {
                        ov++;
                        break;
                    }
            overlap += (double)ov / k;
        }
        printf("#   build queries' top-%d lists cover %lld of %lld middle keys (%.1f%%) and %.1f%% "
               "of the test queries' middle top-%d\n", bk, (long long)ncov, (long long)nm,
               100.0 * (double)ncov / (double)nm, 100 * cov / ((double)nt * k), k);
        printf("#   nearest build query: mean cosine %.3f; its top-%d holds %.1f%% of the test "
               "query's top-%d\n", best_cos * inv, bk, 100 * overlap * inv, k);
    }
    rc = APP_EXIT_OK;
    goto done;
fail:
    rc = app_fail("bench anns: analyze", &err);
done:
    ann_keys_destroy(mk);
    free(s);
    free(tmp);
    free(mt);
    free(ms);
    free(bl);
    free(bs);
    free(covered);
    return rc;
}

int bench_anns(int argc, char **argv)
{
    const char *cmd = "bench anns";
    const char *keys_path = NULL, *bq_path = NULL, *tq_path = NULL, *truth_path = NULL;
    const char *synthetic = NULL, *write_syn = NULL;
    int64_t k = 100, threads = 0, n_test = 1000, seed = 1, v, ex_first = 0, ex_last = 0;
    int csv = 0, want[4] = {1, 1, 1, 1}, do_analyze = 0, prev_seeds = 0, oracle = 0;
    int stream_lags = 0;
    float expand_frac = 0;
    int per_file = 0, recent_seeds = 0, group = 1, expand_batch = 1, interleave = 1;
    float margin = 0.0f;
    ann_group_mode mix = ANN_GROUP_EACH;
    ann_key_type storage = ANN_KEYS_BF16;
    bool search_copy = false; /* --search-keys int8c */
    ann_keys *skeys = NULL;
    ann_build_opts bo;
    ann_build_opts_init(&bo);
    int_list efs = {{100, 128, 160, 200, 256, 320, 400, 512, 768}, 9};
    int_list probes = {{1, 2, 4, 8, 16, 32, 64, 128}, 8};
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        int r = 0;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return APP_EXIT_OK;
        } else if (!strcmp(a, "--csv")) {
            csv = 1;
        } else if (!strcmp(a, "--no-repair")) {
            bo.repair = 0;
        } else if (!strcmp(a, "--analyze")) {
            do_analyze = 1;
        } else if (!strcmp(a, "--oracle-seeds")) {
            oracle = 1;
        } else if (!strcmp(a, "--next-seeds")) {
            stream_lags = 1;
        } else if ((r = app_opt_value(cmd, "--stream-seeds", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--stream-seeds", val, 1, 64, &v))
                return APP_EXIT_USAGE;
            stream_lags = (int)v;
        } else if (!strcmp(a, "--per-file")) {
            per_file = 1;
        } else if ((r = app_opt_value(cmd, "--recent-seeds", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--recent-seeds", val, 1, 1 << 20, &v))
                return APP_EXIT_USAGE;
            recent_seeds = (int)v;
        } else if ((r = app_opt_value(cmd, "--group", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--group", val, 1, ANN_GROUP_MAX, &v))
                return APP_EXIT_USAGE;
            group = (int)v;
        } else if ((r = app_opt_value(cmd, "--group-mode", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (strcmp(val, "max") && strcmp(val, "mean") && strcmp(val, "each"))
                return app_usage(cmd, "--group-mode expects max, mean or each, got '%s'", val);
            mix = !strcmp(val, "mean") ? ANN_GROUP_SHARED_MEAN
                  : !strcmp(val, "max") ? ANN_GROUP_SHARED_MAX : ANN_GROUP_EACH;
        } else if ((r = app_opt_value(cmd, "--expand-batch", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--expand-batch", val, 1, ANN_BATCH_MAX, &v))
                return APP_EXIT_USAGE;
            expand_batch = (int)v;
        } else if ((r = app_opt_value(cmd, "--interleave", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--interleave", val, 1, ANN_INTERLEAVE_MAX, &v))
                return APP_EXIT_USAGE;
            interleave = (int)v;
        } else if ((r = app_opt_value(cmd, "--margin", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_f32(cmd, "--margin", val, &margin))
                return APP_EXIT_USAGE;
            if (!(margin >= 0 && margin <= 1000))
                return app_usage(cmd, "--margin must be between 0 and 1000 (attention logits), "
                                 "got %s", val);
        } else if ((r = app_opt_value(cmd, "--expand-frac", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_f32(cmd, "--expand-frac", val, &expand_frac))
                return APP_EXIT_USAGE;
            if (!(expand_frac > 0 && expand_frac <= 1))
                return app_usage(cmd, "--expand-frac must be in (0, 1], got %s", val);
        } else if ((r = app_opt_value(cmd, "--prev-seeds", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--prev-seeds", val, 1, 4096, &v))
                return APP_EXIT_USAGE;
            prev_seeds = (int)v;
        } else if ((r = app_opt_value(cmd, "--exclude-first", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--exclude-first", val, 0, INT32_MAX, &ex_first))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--exclude-last", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--exclude-last", val, 0, INT32_MAX, &ex_last))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--keys", argc, argv, &i, &keys_path))) {
        } else if ((r = app_opt_value(cmd, "--build-queries", argc, argv, &i, &bq_path))) {
        } else if ((r = app_opt_value(cmd, "--queries", argc, argv, &i, &tq_path))) {
        } else if ((r = app_opt_value(cmd, "--truth", argc, argv, &i, &truth_path))) {
        } else if ((r = app_opt_value(cmd, "--synthetic", argc, argv, &i, &synthetic))) {
        } else if ((r = app_opt_value(cmd, "--write-synthetic", argc, argv, &i, &write_syn))) {
        } else if ((r = app_opt_value(cmd, "--k", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--k", val, 1, 4096, &k))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--threads", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--threads", val, 1, 1024, &threads))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--n-test", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--n-test", val, 1, 1 << 24, &n_test))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--seed", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--seed", val, 0, INT64_MAX, &seed))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--sample", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--sample", val, 1, INT32_MAX, &bo.max_build_queries))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--degree", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--degree", val, 1, 1024, &v))
                return APP_EXIT_USAGE;
            bo.degree = (int)v;
        } else if ((r = app_opt_value(cmd, "--build-k", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--build-k", val, 1, 4096, &v))
                return APP_EXIT_USAGE;
            bo.build_k = (int)v;
        } else if ((r = app_opt_value(cmd, "--fill", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--fill", val, 0, 1024, &v))
                return APP_EXIT_USAGE;
            bo.fill = (int)v;
        } else if ((r = app_opt_value(cmd, "--prune-nearest", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--prune-nearest", val, 0, 1 << 20, &v))
                return APP_EXIT_USAGE;
            bo.prune_nearest = (int)v;
        } else if ((r = app_opt_value(cmd, "--pivot-cap", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--pivot-cap", val, 0, 1 << 30, &v))
                return APP_EXIT_USAGE;
            bo.pivot_cap = (int)v;
        } else if ((r = app_opt_value(cmd, "--entries", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--entries", val, 1, 1024, &v))
                return APP_EXIT_USAGE;
            bo.n_entry = (int)v;
        } else if ((r = app_opt_value(cmd, "--nlist", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (app_parse_i64(cmd, "--nlist", val, 1, 1 << 24, &v))
                return APP_EXIT_USAGE;
            bo.nlist = (int)v;
        } else if ((r = app_opt_value(cmd, "--alpha", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            char *end = NULL;
            double x = strtod(val, &end);
            if (!end || *end || !(x >= 1.0 && x <= 4.0))
                return app_usage(cmd, "--alpha expects a number in 1..4, got '%s'", val);
            bo.prune_alpha = (float)x;
        } else if ((r = app_opt_value(cmd, "--prune", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (strcmp(val, "l2") && strcmp(val, "ip"))
                return app_usage(cmd, "--prune expects l2 or ip, got '%s'", val);
            bo.prune = !strcmp(val, "ip") ? ANN_PRUNE_IP : ANN_PRUNE_L2;
        } else if ((r = app_opt_value(cmd, "--storage", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (!strcmp(val, "bf16"))
                storage = ANN_KEYS_BF16;
            else if (!strcmp(val, "int8"))
                storage = ANN_KEYS_INT8;
            else if (!strcmp(val, "f32"))
                storage = ANN_KEYS_F32;
            else if (!strcmp(val, "int8c"))
                storage = ANN_KEYS_INT8C;
            else
                return app_usage(cmd, "--storage expects bf16, int8, f32 or int8c, got '%s'",
                                 val);
        } else if ((r = app_opt_value(cmd, "--search-keys", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (strcmp(val, "int8c"))
                return app_usage(cmd, "--search-keys expects int8c, got '%s'", val);
            search_copy = true;
        } else if ((r = app_opt_value(cmd, "--ef", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (parse_list(cmd, "--ef", val, &efs))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--nprobe", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            if (parse_list(cmd, "--nprobe", val, &probes))
                return APP_EXIT_USAGE;
        } else if ((r = app_opt_value(cmd, "--index", argc, argv, &i, &val))) {
            if (r != 1)
                return r;
            char buf[256];
            loupe_err e;
            if (strlen(val) >= sizeof buf)
                return app_usage(cmd, "--index: list too long");
            memcpy(buf, val, strlen(val) + 1);
            memset(want, 0, sizeof want);
            for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
                ann_type ty;
                if (ann_type_parse(t, &ty, &e))
                    return app_usage(cmd, "%s", e.msg);
                want[ty] = 1;
            }
        } else {
            return app_usage(cmd, "unknown option '%s'", a);
        }
    }
    if (!synthetic && (!keys_path || !bq_path || !tq_path))
        return app_usage(cmd, "give --keys, --build-queries and --queries, or --synthetic N,D");
    if (stream_lags && !prev_seeds)
        return app_usage(cmd, "--next-seeds and --stream-seeds add to --prev-seeds N: give both");

    int rc = APP_EXIT_FAIL;
    loupe_err err;
    loupe_err_clear(&err);
    float *K = NULL, *BQ = NULL, *TQ = NULL, *scores = NULL;
    double *truth_mass = NULL;
    int32_t *truth = NULL, *ids = NULL, *recent = NULL, *seed_buf = NULL, *gids = NULL;
    float *gq = NULL, *gsc = NULL;
    int64_t n = 0, nbq = 0, nt = 0, ntr = 0, seq_len = 0, file_n[ANN_BENCH_MAX_FILES] = {0};
    int n_files = 0;
    int d = 0, dbq = 0, dt = 0, truth_d = 0;
    ann_keys *keys = NULL, *keys_f32 = NULL;
    ann_search_ctx *ctxs[1024 * ANN_INTERLEAVE_MAX] = {0}; /* --threads at most 1024 */
    int nth = threads > 0 ? (int)threads : omp_get_max_threads();
    bo.threads = nth;
    bo.seed = (uint64_t)seed;

    if (synthetic) {
        long long sn = 0;
        int sd = 0;
        char tail = 0;
        if (sscanf(synthetic, "%lld,%d%c", &sn, &sd, &tail) != 2 || sn < 16 || sn > INT32_MAX ||
            sd < 8 || sd > 4096 || sd % 2)
            return app_usage(cmd, "--synthetic expects N,D (N >= 16 keys, even D in 8..4096), "
                             "got '%s'", synthetic);
        ann_synth_opts so = {.n_keys = sn, .n_test = n_test, .dim = sd, .seed = (uint64_t)seed,
                             .rope = 1};
        if (ann_synth_generate(&so, &K, &BQ, &TQ, &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }
        n = nbq = sn;
        nt = n_test;
        d = dbq = dt = sd;
        if (write_syn) {
            char path[4096];
            const char *suffix[3] = {"keys", "build", "test"};
            const float *arr[3] = {K, BQ, TQ};
            int64_t cnt[3] = {n, nbq, nt};
            for (int i = 0; i < 3; i++) {
                snprintf(path, sizeof path, "%s.%s.fbin", write_syn, suffix[i]);
                if (ann_fbin_write(path, arr[i], cnt[i], d, &err)) {
                    rc = app_fail("bench anns", &err);
                    goto done;
                }
            }
        }
    } else {
        if (ann_fbin_read(keys_path, &K, &n, &d, &err) ||
            read_fbin_list(bq_path, &BQ, &nbq, &dbq, NULL, NULL, &err) ||
            read_fbin_list(tq_path, &TQ, &nt, &dt, file_n, &n_files, &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }
        seq_len = file_n[0];
        if (dbq != d || dt != d) {
            fprintf(stderr, "loupe: bench anns: dimensions differ: keys %d, build queries %d, "
                    "queries %d\n", d, dbq, dt);
            goto done;
        }
    }
    if (truth_path && (ex_first || ex_last)) {
        fprintf(stderr, "loupe: bench anns: --truth ids index all keys; with --exclude-first/last "
                "leave --truth out (truth over the middle is computed)\n");
        goto done;
    }
    if (ex_first + ex_last + 1 > n) {
        fprintf(stderr, "loupe: bench anns: --exclude-first %lld and --exclude-last %lld leave no "
                "keys of %lld\n", (long long)ex_first, (long long)ex_last, (long long)n);
        goto done;
    }
    if (do_analyze && analyze(K, n, d, BQ, nbq, TQ, nt, (int)(k < n - ex_first - ex_last
                                                               ? k : n - ex_first - ex_last),
                              ex_first, ex_last, bo.build_k, nth, seq_len)) {
        rc = APP_EXIT_FAIL;
        goto done;
    }
    /* From here on the keys are the middle: ids are positions minus ex_first. */
    int64_t n_all = n;
    n -= ex_first + ex_last;
    const float *KM = K + ex_first * d;
    if (k > n)
        k = n;
    if (ann_keys_create(KM, n, d, storage, &keys, &err) ||
        ann_keys_create(KM, n, d, ANN_KEYS_F32, &keys_f32, &err)) {
        rc = app_fail("bench anns", &err);
        goto done;
    }
    if (truth_path) {
        if (ann_ibin_read(truth_path, &truth, &ntr, &truth_d, &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }
        if (ntr != nt || truth_d < k) {
            fprintf(stderr, "loupe: bench anns: %s: %lld × %d ids, need %lld × >= %lld\n",
                    truth_path, (long long)ntr, truth_d, (long long)nt, (long long)k);
            goto done;
        }
    } else {
        truth_d = (int)k;
        truth = malloc((size_t)nt * (size_t)k * sizeof *truth);
        float *ts = malloc((size_t)nt * (size_t)k * sizeof *ts);
        loupe_status st = truth && ts ? ann_knn_cpu(NULL, keys_f32, TQ, nt, (int)k, nth, truth,
                                                    ts, NULL, &err)
                                      : loupe_fail(&err, LOUPE_ERR_NOMEM, "no memory for truth");
        free(ts);
        if (st) {
            rc = app_fail("bench anns: ground truth", &err);
            goto done;
        }
    }
    ids = malloc((size_t)nt * (size_t)k * sizeof *ids);
    scores = malloc((size_t)nt * (size_t)k * sizeof *scores);
    truth_mass = malloc((size_t)nt * sizeof *truth_mass);
    if (recent_seeds > n)
        recent_seeds = (int)n;
    recent = malloc((size_t)(recent_seeds ? recent_seeds : 1) * sizeof *recent);
    seed_buf = malloc((size_t)((1 + stream_lags) * group * k + recent_seeds) * sizeof *seed_buf);
    for (int i = 0; recent && i < recent_seeds; i++)
        recent[i] = (int32_t)(n - recent_seeds + i);
    if (!ids || !scores || !truth_mass || !recent || !seed_buf) {
        fprintf(stderr, "loupe: bench anns: out of memory\n");
        goto done;
    }
    for (int64_t q = 0; q < nt; q++) {
        const float *qv = TQ + q * d;
        float s1 = dotf(qv, KM + (int64_t)truth[q * truth_d] * d, d) / sqrtf((float)d);
        truth_mass[q] = 0;
        for (int i = 0; i < k; i++)
            truth_mass[q] += exp((double)(dotf(qv, KM + (int64_t)truth[q * truth_d + i] * d, d) /
                                              sqrtf((float)d) - s1));
    }
    int max_beam = 128;
    for (int i = 0; i < efs.n; i++)
        max_beam = efs.vals[i] > max_beam ? efs.vals[i] : max_beam;
    for (int i = 0; i < probes.n; i++)
        max_beam = probes.vals[i] > max_beam ? probes.vals[i] : max_beam;
    max_beam = (int)k > max_beam ? (int)k : max_beam;
    if (nth > 1024)
        nth = 1024;
    if (group > 1) {
        for (int f = 1; f < n_files; f++)
            if (file_n[f] != file_n[0]) {
                fprintf(stderr, "loupe: bench anns: --group needs --queries files of one length "
                        "(file %d has %lld queries, file 0 %lld)\n", f, (long long)file_n[f],
                        (long long)file_n[0]);
                goto done;
            }
        if (n_files < group) {
            fprintf(stderr, "loupe: bench anns: --group %d needs at least %d --queries files "
                    "(one per query head), got %d\n", group, group, n_files);
            goto done;
        }
        gq = malloc((size_t)nth * group * d * sizeof *gq);
        gids = malloc((size_t)nth * group * k * sizeof *gids);
        gsc = malloc((size_t)nth * group * k * sizeof *gsc);
        if (!gq || !gids || !gsc) {
            fprintf(stderr, "loupe: bench anns: out of memory\n");
            goto done;
        }
    }
    for (int t = 0; t < nth * interleave; t++)
        if (ann_search_ctx_create(n, max_beam, &ctxs[t], &err)) {
            rc = app_fail("bench anns", &err);
            goto done;
        }

    if (!csv) {
        printf("# %lld keys × %d (%s%s), %lld build queries, %lld test queries, k=%lld, "
               "%d threads\n", (long long)n, d, ann_key_type_name(storage),
               search_copy ? ", graphs search an int8c copy" : "", (long long)nbq,
               (long long)nt, (long long)k, nth);
        if (n != n_all)
            printf("# middle keys only: positions %lld..%lld of %lld (first %lld and last %lld "
                   "left to the static set)\n", (long long)ex_first,
                   (long long)(ex_first + n - 1), (long long)n_all, (long long)ex_first,
                   (long long)ex_last);
        printf("%-9s %-7s %6s  %8s  %6s  %10s  %11s  %8s  %6s %6s %6s  %7s  %7s\n", "index",
               "param", "value", "recall", "mass", "scanned", "searches/s", "build_s", "knn",
               "proj", "repair", "B/key", "rows/q");
        if (group > 1)
            printf("# --group %d: step i of %d consecutive --queries files in one traversal "
                   "(%s); scanned and rows/q per head = the group's rows / %d\n", group, group,
                   mix == ANN_GROUP_EACH ? "a pool per head" : "one shared pool", group);
    } else {
        printf("index,param,value,recall,mass_recall,scanned_frac,searches_per_s,build_s,knn_s,"
               "projection_s,repair_s,index_bytes_per_key,rows_per_query\n");
    }
    for (int ty = 0; ty < 4; ty++) {
        if (!want[ty])
            continue;
        ann_index *ix = NULL;
        ann_build_stats bs;
        if (ann_index_build((ann_type)ty, keys, BQ, nbq, &bo, &ix, &bs, &err)) {
            rc = app_fail("bench anns: build", &err);
            goto done;
        }
        if (search_copy && (ty == ANN_GRAPH || ty == ANN_KEYGRAPH) &&
            ((!skeys && ann_keys_search_copy(keys, n, &skeys, &err)) ||
             ann_index_set_search_keys(ix, skeys, &err))) {
            ann_index_destroy(ix);
            rc = app_fail("bench anns: search keys", &err);
            goto done;
        }
        if (!csv && (ty == ANN_GRAPH || ty == ANN_KEYGRAPH))
            printf("# %s: %lld build queries, %lld keys in no top-%d list, %lld repair edges, "
                   "%lld unreachable, %.1f edges/key\n", ann_type_name((ann_type)ty),
                   (long long)bs.n_build_queries, (long long)bs.n_untouched, bo.build_k,
                   (long long)bs.n_repaired, (long long)bs.n_unreachable,
                   (double)bs.n_edges / (double)n);
        sweep_ctx s = {ix, ctxs, nth, TQ, nt, truth, truth_d, (int)k, n, csv, bs.total_s, &bs,
                       ids, scores, KM, d, truth_mass, prev_seeds, seq_len, oracle,
                       stream_lags, per_file, n_files, file_n, recent, recent_seeds, seed_buf,
                       group, mix, gq, gids, gsc, expand_batch, interleave,
                       margin * sqrtf((float)d), expand_frac};
        int r = 0;
        if (ty == ANN_FLAT) {
            r = run_setting(&s, "-", 0, (int)k, 1);
        } else if (ty == ANN_IVF) {
            for (int i = 0; i < probes.n && !r; i++)
                r = run_setting(&s, "nprobe", probes.vals[i], (int)k, probes.vals[i]);
        } else {
            for (int i = 0; i < efs.n && !r; i++)
                r = run_setting(&s, "ef", efs.vals[i], efs.vals[i], 1);
        }
        ann_index_destroy(ix);
        if (r) {
            rc = r;
            goto done;
        }
    }
    rc = APP_EXIT_OK;
done:
    for (int t = 0; t < 1024 * ANN_INTERLEAVE_MAX; t++)
        ann_search_ctx_destroy(ctxs[t]);
    ann_keys_destroy(skeys);
    ann_keys_destroy(keys);
    ann_keys_destroy(keys_f32);
    free(K);
    free(BQ);
    free(TQ);
    free(truth);
    free(ids);
    free(scores);
    free(truth_mass);
    free(recent);
    free(seed_buf);
    free(gq);
    free(gids);
    free(gsc);
    return rc;
}
