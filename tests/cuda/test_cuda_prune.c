/*
 * test_cuda_prune CASE: rt_cuda_prune (the graph build's batch pruning on the GPU) against
 * ann_prune_cpu on fresh random data (seed printed). CASE is one of
 *   lists     explicit lists (with and without the owner distances given, some longer than the
 *             GPU takes: the CPU prunes those meanwhile) and shared lists (repeats, -1 entries,
 *             owners inside and outside their list), f32 / bf16 / int8 keys, dims 64 / 96 / 128,
 *             the L2 rule with and without relaxation and the inner-product rule, keep/fill
 *             16/16, 32/8, 64/64; some batches again with each list cut to its nearest
 *             candidates (ann_prune_job.nearest)
 *   long      the long-list kernel: shared lists of 200 to 2048 (large build k; many repeats),
 *             explicit lists up to 5000 and a few over the GPU's longest (the CPU's meanwhile),
 *             every key type, the L2 and inner-product rules, keep 16 and 64; the shared
 *             lists and the explicit ones up to 5000 again cut to their nearest 128, the shared
 *             ones of 1024 and 2048 once more without repeats (as the runtime's: the cut by
 *             selection rather than a whole sort)
 *   graph     a graph built over synthetic out-of-distribution keys with the GPU's pruning and
 *             with the CPU's: the same recall within 0.02, every key reachable
 *   threads   four host threads calling at once, each its own job
 *   shapes    what has no GPU path answers LOUPE_ERR_UNSUPPORTED; empty batches and lists
 * Exits 77 when no CUDA device is usable.
 *
 * What "the same as the CPU" means (prune.cu): the rule is the same, the distances are summed in
 * another order, so a list may differ where two distances tie within rounding. Every GPU list must
 * be well formed (at most keep, distinct candidates of its list, never the owner, distances the
 * true ones within 1e-4 relative) and at most 2% of the lists may differ from the CPU's.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "cuda/cuda_test.h"
#include "runtime/rt_cuda.h"

static uint64_t g_seed;

typedef struct {
    ann_keys *keys;
    float *F; /* widened rows */
    int64_t n;
    int dim;
} keyset;

static keyset make_keys(test_rng *r, int64_t n, int dim, ann_key_type t)
{
    keyset ks = {NULL, malloc((size_t)n * dim * sizeof(float)), n, dim};
    float *raw = malloc((size_t)n * dim * sizeof(float));
    for (int64_t i = 0; i < n * dim; i++)
        raw[i] = test_rng_normal(r) + (i % 5 == 1 ? 0.7f : 0.0f);
    loupe_err err;
    CHECK(ann_keys_create(raw, n, dim, t, &ks.keys, &err) == LOUPE_OK);
    for (int64_t i = 0; i < n; i++)
        ann_keys_row(ks.keys, i, ks.F + i * dim);
    free(raw);
    return ks;
}

static void free_keys(keyset *ks)
{
    ann_keys_destroy(ks->keys);
    free(ks->F);
}

static double true_dist(const keyset *ks, int64_t a, int64_t b, int ip)
{
    double s = 0;
    for (int i = 0; i < ks->dim; i++) {
        double x = ks->F[a * ks->dim + i], y = ks->F[b * ks->dim + i];
        s += ip ? x * y : (x - y) * (x - y);
    }
    return ip ? -s : s;
}

/* A job and the arrays it points to. */
typedef struct {
    ann_prune_job j;
    int32_t *own, *len, *cid, *shared, *lst;
    int64_t *start;
    float *cdist;
} batch;

static void batch_free(batch *b)
{
    free(b->own);
    free(b->len);
    free(b->cid);
    free(b->shared);
    free(b->lst);
    free(b->start);
    free(b->cdist);
}

/* n_lists distinct owners in random order. */
static int32_t *owners(test_rng *r, int64_t n, int64_t n_lists)
{
    int32_t *perm = malloc((size_t)n * sizeof *perm);
    for (int64_t i = 0; i < n; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = 0; i < n_lists; i++) {
        int64_t k = i + (int64_t)(test_rng_u64(r) % (uint64_t)(n - i));
        int32_t t = perm[i];
        perm[i] = perm[k];
        perm[k] = t;
    }
    return perm;
}

static void job_base(batch *b, const keyset *ks, ann_prune_rule rule, float alpha, int keep,
                     int fill)
{
    memset(&b->j, 0, sizeof b->j);
    b->j.keys = ks->keys;
    b->j.F = ks->F;
    b->j.n = ks->n;
    b->j.dim = ks->dim;
    b->j.rule = rule;
    b->j.alpha = alpha;
    b->j.keep = keep;
    b->j.fill = fill;
    b->j.stride = keep + 4;
    b->j.threads = 2;
}

/* Explicit lists of 0..maxlen distinct candidates; with_dist: the owner distances given (exact
 * ones, as the build's merge carries them). */
static batch explicit_batch(test_rng *r, const keyset *ks, int64_t n_lists, int maxlen,
                            int with_dist, ann_prune_rule rule, float alpha, int keep, int fill)
{
    batch b;
    memset(&b, 0, sizeof b);
    job_base(&b, ks, rule, alpha, keep, fill);
    b.own = owners(r, ks->n, n_lists);
    b.len = malloc((size_t)n_lists * sizeof *b.len);
    b.start = malloc((size_t)n_lists * sizeof *b.start);
    int64_t total = 0;
    for (int64_t i = 0; i < n_lists; i++) {
        int l = (int)(test_rng_u64(r) % (uint64_t)(maxlen + 1));
        if (i % 97 == 3)
            l = maxlen; /* some at the longest */
        b.len[i] = l < ks->n - 1 ? l : (int)ks->n - 1;
        b.start[i] = total;
        total += b.len[i];
    }
    b.cid = malloc((size_t)(total ? total : 1) * sizeof *b.cid);
    b.cdist = with_dist ? malloc((size_t)(total ? total : 1) * sizeof *b.cdist) : NULL;
    uint8_t *used = calloc((size_t)ks->n, 1);
    for (int64_t i = 0; i < n_lists; i++) {
        int32_t *c = b.cid + b.start[i];
        for (int x = 0; x < b.len[i]; x++) {
            int32_t v;
            do
                v = (int32_t)(test_rng_u64(r) % (uint64_t)ks->n);
            while (v == b.own[i] || used[v]);
            used[v] = 1;
            c[x] = v;
            if (with_dist)
                b.cdist[b.start[i] + x] = (float)true_dist(ks, b.own[i], v, rule == ANN_PRUNE_IP);
        }
        for (int x = 0; x < b.len[i]; x++)
            used[c[x]] = 0;
    }
    free(used);
    b.j.n_lists = n_lists;
    b.j.own = b.own;
    b.j.start = b.start;
    b.j.len = b.len;
    b.j.cid = b.cid;
    b.j.cdist = b.cdist;
    return b;
}

/* nq shared lists of K ids (some -1, some repeated), n_lists owners sorted by their list; about
 * a third of the owners are members of their list. */
static batch shared_batch(test_rng *r, const keyset *ks, int64_t nq, int K, int64_t n_lists,
                          ann_prune_rule rule, float alpha, int keep, int fill)
{
    batch b;
    memset(&b, 0, sizeof b);
    job_base(&b, ks, rule, alpha, keep, fill);
    b.shared = malloc((size_t)nq * K * sizeof *b.shared);
    for (int64_t q = 0; q < nq; q++)
        for (int x = 0; x < K; x++) {
            uint64_t z = test_rng_u64(r) % 100;
            int32_t *e = &b.shared[q * K + x];
            *e = (int32_t)(test_rng_u64(r) % (uint64_t)ks->n);
            if (z < 3)
                *e = -1;
            else if (z < 6 && x > 0)
                *e = b.shared[q * K + (int)(test_rng_u64(r) % (uint64_t)x)];
        }
    b.own = owners(r, ks->n, n_lists);
    b.lst = malloc((size_t)n_lists * sizeof *b.lst);
    for (int64_t i = 0; i < n_lists; i++)
        b.lst[i] = (int32_t)(test_rng_u64(r) % (uint64_t)nq);
    /* Sort by list (insertion into buckets), then make some owners members. */
    int64_t *cnt = calloc((size_t)nq + 1, sizeof *cnt);
    for (int64_t i = 0; i < n_lists; i++)
        cnt[b.lst[i] + 1]++;
    for (int64_t q = 0; q < nq; q++)
        cnt[q + 1] += cnt[q];
    int32_t *own2 = malloc((size_t)n_lists * sizeof *own2), *lst2 = malloc((size_t)n_lists * 4);
    for (int64_t i = 0; i < n_lists; i++) {
        int64_t at = cnt[b.lst[i]]++;
        own2[at] = b.own[i];
        lst2[at] = b.lst[i];
    }
    free(cnt);
    free(b.own);
    free(b.lst);
    b.own = own2;
    b.lst = lst2;
    for (int64_t i = 0; i < n_lists; i += 3) {
        int32_t *l = b.shared + (int64_t)b.lst[i] * K;
        int x = (int)(test_rng_u64(r) % (uint64_t)K);
        int taken = 0;
        for (int64_t o = 0; o < n_lists; o++) /* not if that slot is another owner of the list */
            taken |= b.lst[o] == b.lst[i] && l[x] == b.own[o];
        if (!taken)
            l[x] = b.own[i];
    }
    b.j.n_lists = n_lists;
    b.j.own = b.own;
    b.j.shared = b.shared;
    b.j.K = K;
    b.j.lst = b.lst;
    return b;
}

/* A shared batch's lists made like the runtime's (a query's exact top-K): no -1 and no key twice
 * in a list — a later repeat or a -1 becomes a key the list does not hold yet. The owners put
 * into their lists stay where they were put first. */
static void make_distinct(test_rng *r, batch *b, int64_t nq, int64_t n)
{
    uint8_t *in = calloc((size_t)n, 1);
    CHECK(in != NULL);
    for (int64_t q = 0; in && q < nq; q++) {
        int32_t *l = b->shared + q * b->j.K;
        for (int x = 0; x < b->j.K; x++) {
            while (l[x] < 0 || in[l[x]])
                l[x] = (int32_t)(test_rng_u64(r) % (uint64_t)n);
            in[l[x]] = 1;
        }
        for (int x = 0; x < b->j.K; x++)
            in[l[x]] = 0;
    }
    free(in);
}

typedef struct {
    int32_t *out;
    float *outd;
    int *outn;
} result;

static result run_job(ann_prune_job j, int gpu, loupe_status *st)
{
    result res = {malloc((size_t)j.n * j.stride * sizeof(int32_t)),
                  malloc((size_t)j.n * j.stride * sizeof(float)),
                  malloc((size_t)j.n * sizeof(int))};
    for (int64_t i = 0; i < j.n * j.stride; i++) {
        res.out[i] = -7;
        res.outd[i] = NAN;
    }
    for (int64_t i = 0; i < j.n; i++)
        res.outn[i] = -7;
    j.out = res.out;
    j.outd = res.outd;
    j.outn = res.outn;
    loupe_err err;
    loupe_err_clear(&err);
    *st = gpu ? rt_cuda_prune(NULL, &j, &err) : ann_prune_cpu(NULL, &j, &err);
    if (*st)
        fprintf(stderr, "%s pruning: %s\n", gpu ? "GPU" : "CPU", err.msg);
    return res;
}

static void free_result(result *r)
{
    free(r->out);
    free(r->outd);
    free(r->outn);
}

/* Is id a candidate of list i? */
static int is_candidate(const batch *b, int64_t i, int32_t id)
{
    const ann_prune_job *j = &b->j;
    if (j->shared) {
        const int32_t *l = j->shared + (int64_t)j->lst[i] * j->K;
        for (int x = 0; x < j->K; x++)
            if (l[x] == id)
                return id != j->own[i];
        return 0;
    }
    for (int x = 0; x < j->len[i]; x++)
        if (j->cid[j->start[i] + x] == id)
            return 1;
    return 0;
}

/* GPU against CPU over one batch; returns the fraction of lists that differ. */
static double compare(const char *what, const batch *b, const keyset *ks)
{
    loupe_status sg, sc;
    result g = run_job(b->j, 1, &sg), c = run_job(b->j, 0, &sc);
    CHECK_MSG(sg == LOUPE_OK && sc == LOUPE_OK, "%s: pruning failed", what);
    int64_t differ = 0, bad = 0;
    const int ip = b->j.rule == ANN_PRUNE_IP;
    for (int64_t i = 0; i < b->j.n_lists && sg == LOUPE_OK && sc == LOUPE_OK; i++) {
        const int64_t u = b->j.own[i];
        const int gn = g.outn[u], cn = c.outn[u];
        const int32_t *gl = g.out + u * b->j.stride, *cl = c.out + u * b->j.stride;
        const float *gd = g.outd + u * b->j.stride;
        int ok = gn >= 0 && gn <= b->j.keep;
        for (int x = 0; ok && x < gn; x++) {
            ok = gl[x] != u && is_candidate(b, i, gl[x]);
            for (int y = 0; ok && y < x; y++)
                ok = gl[y] != gl[x];
            if (ok && !b->j.cdist) {
                double t = true_dist(ks, u, gl[x], ip);
                ok = fabs(gd[x] - t) <= 1e-4 * (fabs(t) + 1.0);
            }
        }
        for (int x = gn; ok && x < b->j.stride; x++) /* nothing written past the list */
            ok = gl[x] == -7;
        if (!ok && bad++ < 3)
            fprintf(stderr, "%s: list %lld (owner %lld) malformed: %d entries\n", what,
                    (long long)i, (long long)u, gn);
        differ += gn != cn || memcmp(gl, cl, (size_t)(gn > 0 ? gn : 0) * sizeof *gl) != 0;
    }
    for (int64_t u = 0, seen = 0; u < b->j.n && !bad; u++) { /* untouched rows stay untouched */
        int listed = 0;
        for (int64_t i = 0; i < b->j.n_lists && !listed; i++)
            listed = b->j.own[i] == u;
        if (!listed && g.outn[u] != -7 && seen++ < 1) {
            fprintf(stderr, "%s: key %lld owns no list but was written\n", what, (long long)u);
            bad++;
        }
        if (u > 2000)
            break; /* the scan is quadratic: a prefix says enough */
    }
    CHECK_MSG(bad == 0, "%s: %lld malformed lists", what, (long long)bad);
    double frac = b->j.n_lists ? (double)differ / (double)b->j.n_lists : 0.0;
    printf("%-44s %7lld lists, %5.2f%% differ from the CPU's\n", what, (long long)b->j.n_lists,
           100 * frac);
    CHECK_MSG(frac <= 0.02, "%s: %.2f%% of the lists differ from the CPU's", what, 100 * frac);
    free_result(&g);
    free_result(&c);
    return frac;
}

static int case_lists(void)
{
    test_rng r;
    test_rng_seed(&r, g_seed);
    const ann_key_type types[3] = {ANN_KEYS_F32, ANN_KEYS_BF16, ANN_KEYS_INT8};
    const int dims[3] = {128, 64, 96};
    struct {
        ann_prune_rule rule;
        float alpha;
        int keep, fill;
    } rules[4] = {{ANN_PRUNE_L2, 1.0f, 16, 16},
                  {ANN_PRUNE_IP, 1.0f, 16, 16},
                  {ANN_PRUNE_L2, 1.3f, 32, 8},
                  {ANN_PRUNE_IP, 1.0f, 64, 64}};
    for (int t = 0; t < 3; t++) {
        keyset ks = make_keys(&r, 6000, dims[t], types[t]);
        for (int x = 0; x < 4; x++) {
            char what[96];
            snprintf(what, sizeof what, "dim %d type %d rule %d/%.1f keep %d fill %d", dims[t],
                     (int)types[t], (int)rules[x].rule, rules[x].alpha, rules[x].keep,
                     rules[x].fill);
            batch e = explicit_batch(&r, &ks, 3000, x == 0 ? 600 : 200, 0, rules[x].rule,
                                     rules[x].alpha, rules[x].keep, rules[x].fill);
            char w2[128];
            snprintf(w2, sizeof w2, "explicit %s", what);
            compare(w2, &e, &ks);
            e.j.nearest = 50;
            snprintf(w2, sizeof w2, "explicit cut 50 %s", what);
            compare(w2, &e, &ks);
            batch_free(&e);
            batch d = explicit_batch(&r, &ks, 3000, 80, 1, rules[x].rule, rules[x].alpha,
                                     rules[x].keep, rules[x].fill);
            snprintf(w2, sizeof w2, "explicit+dist %s", what);
            compare(w2, &d, &ks);
            batch_free(&d);
            const int K = x == 3 ? 128 : x == 2 ? 20 : 64;
            batch s = shared_batch(&r, &ks, 400, K, 5000, rules[x].rule, rules[x].alpha,
                                   rules[x].keep, rules[x].fill);
            snprintf(w2, sizeof w2, "shared K %d %s", K, what);
            compare(w2, &s, &ks);
            s.j.nearest = K / 3; /* each list cut to its nearest third */
            snprintf(w2, sizeof w2, "shared K %d cut %d %s", K, K / 3, what);
            compare(w2, &s, &ks);
            batch_free(&s);
        }
        free_keys(&ks);
    }
    return 0;
}

static int case_long(void)
{
    test_rng r;
    test_rng_seed(&r, g_seed);
    const ann_key_type types[3] = {ANN_KEYS_BF16, ANN_KEYS_F32, ANN_KEYS_INT8};
    struct {
        ann_prune_rule rule;
        float alpha;
        int keep, fill;
    } rules[3] = {{ANN_PRUNE_IP, 1.0f, 16, 16}, {ANN_PRUNE_L2, 1.2f, 16, 8},
                  {ANN_PRUNE_IP, 1.0f, 64, 64}};
    for (int t = 0; t < 3; t++) {
        keyset ks = make_keys(&r, 12000, 128, types[t]);
        for (int x = 0; x < 3; x++) {
            char what[96], w2[160];
            snprintf(what, sizeof what, "type %d rule %d/%.1f keep %d fill %d", (int)types[t],
                     (int)rules[x].rule, rules[x].alpha, rules[x].keep, rules[x].fill);
            const int Ks[3] = {200, 1024, 2048};
            for (int k = 0; k < 3; k++) {
                batch s = shared_batch(&r, &ks, 60, Ks[k], 3000, rules[x].rule, rules[x].alpha,
                                       rules[x].keep, rules[x].fill);
                snprintf(w2, sizeof w2, "shared K %d %s", Ks[k], what);
                compare(w2, &s, &ks);
                s.j.nearest = 128; /* the runtime's cut of large-k lists */
                snprintf(w2, sizeof w2, "shared K %d cut 128 %s", Ks[k], what);
                compare(w2, &s, &ks);
                if (Ks[k] >= 1024) { /* no repeats, as the runtime's: the selection decides */
                    make_distinct(&r, &s, 60, ks.n);
                    snprintf(w2, sizeof w2, "shared K %d distinct cut 128 %s", Ks[k], what);
                    compare(w2, &s, &ks);
                }
                batch_free(&s);
            }
            batch e = explicit_batch(&r, &ks, 600, 5000, 0, rules[x].rule, rules[x].alpha,
                                     rules[x].keep, rules[x].fill);
            snprintf(w2, sizeof w2, "explicit up to 5000 %s", what);
            compare(w2, &e, &ks);
            e.j.nearest = 128;
            snprintf(w2, sizeof w2, "explicit up to 5000 cut 128 %s", what);
            compare(w2, &e, &ks);
            batch_free(&e);
            batch d = explicit_batch(&r, &ks, 600, 2000, 1, rules[x].rule, rules[x].alpha,
                                     rules[x].keep, rules[x].fill);
            snprintf(w2, sizeof w2, "explicit+dist up to 2000 %s", what);
            compare(w2, &d, &ks);
            batch_free(&d);
        }
        if (t == 0) { /* lists over the GPU's longest, beside long and short ones */
            batch e = explicit_batch(&r, &ks, 40, 9000, 0, ANN_PRUNE_IP, 1.0f, 16, 16);
            compare("explicit up to 9000 (some on the CPU)", &e, &ks);
            batch_free(&e);
        }
        free_keys(&ks);
    }
    return 0;
}

static double recall_of(const ann_index *ix, const float *tq, int nt, int k, const int32_t *truth)
{
    loupe_err err;
    ann_search_ctx *ctx = NULL;
    CHECK(ann_search_ctx_create(ann_keys_count(ann_index_keys(ix)), 512, &ctx, &err) == LOUPE_OK);
    int32_t *ids = malloc((size_t)nt * k * sizeof *ids);
    float *sc = malloc((size_t)nt * k * sizeof *sc);
    ann_search_params p = {.k = k, .ef = 200};
    CHECK(ann_search_batch(ix, &ctx, 1, tq, nt, &p, ids, sc, &err) == LOUPE_OK);
    int64_t hit = 0;
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < k; i++)
            for (int x = 0; x < k; x++)
                if (ids[t * k + i] == truth[t * k + x]) {
                    hit++;
                    break;
                }
    ann_search_ctx_destroy(ctx);
    free(ids);
    free(sc);
    return (double)hit / ((double)nt * k);
}

static int case_graph(void)
{
    enum { N = 16384, D = 128, NT = 200, K = 100 };
    loupe_err err;
    float *K32 = NULL, *BQ = NULL, *TQ = NULL;
    ann_synth_opts so = {.n_keys = N, .n_test = NT, .dim = D, .seed = g_seed, .rope = 1};
    CHECK(ann_synth_generate(&so, &K32, &BQ, &TQ, &err) == LOUPE_OK);
    ann_keys *keys = NULL;
    CHECK(ann_keys_create(K32, N, D, ANN_KEYS_BF16, &keys, &err) == LOUPE_OK);
    int32_t *truth = malloc(sizeof(int32_t) * NT * K);
    float *sc = malloc(sizeof(float) * NT * K);
    CHECK(ann_knn_cpu(NULL, keys, TQ, NT, K, 2, truth, sc, NULL, &err) == LOUPE_OK);
    for (int bk = 64; bk <= 512; bk *= 8) { /* 512: the shared lists take the long kernel */
        double rec[2];
        for (int gpu = 0; gpu < 2; gpu++) {
            ann_build_opts bo;
            ann_build_opts_init(&bo);
            bo.threads = 2;
            bo.seed = g_seed;
            bo.degree = 16;
            bo.build_k = bk;
            bo.prune = ANN_PRUNE_IP;
            bo.knn = rt_cuda_knn;
            if (gpu)
                bo.prune_lists = rt_cuda_prune;
            ann_index *g = NULL;
            ann_build_stats bs;
            CHECK(ann_index_build(ANN_GRAPH, keys, BQ, N, &bo, &g, &bs, &err) == LOUPE_OK);
            CHECK(bs.n_unreachable == 0);
            rec[gpu] = recall_of(g, TQ, NT, K, truth);
            printf("graph, build k %d, %s pruning: projection %.3f s, %lld edges, recall@100 "
                   "(ef 200) %.4f\n", bk, gpu ? "GPU" : "CPU", bs.projection_s,
                   (long long)bs.n_edges, rec[gpu]);
            ann_index_destroy(g);
        }
        CHECK_MSG(fabs(rec[0] - rec[1]) <= 0.02, "build k %d: recall %.4f (GPU) vs %.4f (CPU)",
                  bk, rec[1], rec[0]);
    }
    ann_keys_destroy(keys);
    free(K32);
    free(BQ);
    free(TQ);
    free(truth);
    free(sc);
    return 0;
}

typedef struct {
    batch b;
    keyset *ks;
    double frac;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    a->frac = compare("threads: one of four at once", &a->b, a->ks);
    return NULL;
}

static int case_threads(void)
{
    test_rng r;
    test_rng_seed(&r, g_seed);
    keyset ks = make_keys(&r, 8000, 128, ANN_KEYS_BF16);
    thread_arg ta[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ta[i].ks = &ks;
        ta[i].b = i % 2 ? explicit_batch(&r, &ks, 4000, 100, i == 3, ANN_PRUNE_IP, 1.0f, 16, 16)
                        : shared_batch(&r, &ks, 500, 64, 6000, ANN_PRUNE_L2, 1.0f, 16, 16);
    }
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, thread_main, &ta[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        batch_free(&ta[i].b);
    }
    free_keys(&ks);
    return 0;
}

static int case_shapes(void)
{
    test_rng r;
    test_rng_seed(&r, g_seed);
    loupe_err err;
    loupe_status st;
    keyset big = make_keys(&r, 300, 300, ANN_KEYS_F32);
    batch b = explicit_batch(&r, &big, 50, 20, 0, ANN_PRUNE_L2, 1.0f, 16, 16);
    CHECK(rt_cuda_prune(NULL, &b.j, &err) == LOUPE_ERR_UNSUPPORTED); /* dim 300 */
    batch_free(&b);
    free_keys(&big);
    keyset ks = make_keys(&r, 3000, 64, ANN_KEYS_BF16);
    b = explicit_batch(&r, &ks, 50, 100, 0, ANN_PRUNE_L2, 1.0f, 65, 65);
    CHECK(rt_cuda_prune(NULL, &b.j, &err) == LOUPE_ERR_UNSUPPORTED); /* keep 65 */
    batch_free(&b);
    b = shared_batch(&r, &ks, 4, 8193, 20, ANN_PRUNE_L2, 1.0f, 16, 16);
    CHECK(rt_cuda_prune(NULL, &b.j, &err) == LOUPE_ERR_UNSUPPORTED); /* shared lists of 8193 */
    batch_free(&b);
    b = explicit_batch(&r, &ks, 0, 10, 0, ANN_PRUNE_L2, 1.0f, 16, 16);
    result res = run_job(b.j, 1, &st);
    CHECK(st == LOUPE_OK); /* nothing to do */
    free_result(&res);
    batch_free(&b);
    b = explicit_batch(&r, &ks, 500, 2, 0, ANN_PRUNE_L2, 1.0f, 16, 16); /* lists of 0..2 */
    compare("explicit lists of 0 to 2", &b, &ks);
    batch_free(&b);
    b = explicit_batch(&r, &ks, 200, 1000, 0, ANN_PRUNE_IP, 1.0f, 16, 16); /* short and long */
    compare("explicit lists up to 1000", &b, &ks);
    batch_free(&b);
    b = shared_batch(&r, &ks, 3, 64, 2000, ANN_PRUNE_L2, 1.0f, 16, 16); /* long runs */
    compare("shared: 3 lists, 2000 owners", &b, &ks);
    batch_free(&b);
    int dev = 99;
    b = explicit_batch(&r, &ks, 10, 10, 0, ANN_PRUNE_L2, 1.0f, 16, 16);
    CHECK(rt_cuda_prune(&dev, &b.j, &err) == LOUPE_ERR_UNSUPPORTED);
    batch_free(&b);
    free_keys(&ks);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_cuda_prune lists|long|graph|threads|shapes\n");
        return 2;
    }
    cuda_test_require_device();
    g_seed = test_seed();
    printf("seed %llu\n", (unsigned long long)g_seed);
    if (!strcmp(argv[1], "lists"))
        case_lists();
    else if (!strcmp(argv[1], "long"))
        case_long();
    else if (!strcmp(argv[1], "graph"))
        case_graph();
    else if (!strcmp(argv[1], "threads"))
        case_threads();
    else if (!strcmp(argv[1], "shapes"))
        case_shapes();
    else {
        fprintf(stderr, "unknown case %s\n", argv[1]);
        return 2;
    }
    return test_summary("test_cuda_prune");
}
