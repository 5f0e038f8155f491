/*
 * The batch pruning (ann_prune_cpu, anns/prune.c) against pruning each list alone
 * (ann_prune_list), for explicit lists (with and without the owner distances given) and lists
 * over shared lists (repeats, -1 entries, owners inside and outside their list); and the graph
 * build's plug (ann_build_opts.prune_lists): called for its three batches, a plug that declines
 * (LOUPE_ERR_UNSUPPORTED) leaves the graph exactly as the CPU builds it, a plug that fails fails
 * the build with its sentence.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "anns/ann_impl.h"
#include "common/test_util.h"

enum { N = 3000, D = 64, KEEP = 16, STRIDE = 20 };

static float F[N * D];

static float dist(int64_t a, int64_t b, int ip)
{
    double s = 0;
    for (int i = 0; i < D; i++)
        s += ip ? (double)F[a * D + i] * F[b * D + i]
                : ((double)F[a * D + i] - F[b * D + i]) * ((double)F[a * D + i] - F[b * D + i]);
    return (float)(ip ? -s : s);
}

/* The prune's own distance between rows a and b (prune.c computes it bit for bit as
 * ann_l2sq_f32 / ann_dot_f32 do): what ann_prune_list would compute for itself. */
static float prune_dist(int64_t a, int64_t b, int ip)
{
    return ip ? -ann_dot_f32(F + a * D, F + b * D, D) : ann_l2sq_f32(F + a * D, F + b * D, D);
}

/* ann_prune_list over ids (m) for owner u: the reference. */
static int reference(ann_prune_rule rule, float alpha, int fill, int32_t u, const int32_t *ids,
                     int m, int32_t *out)
{
    ann_prune_cand *tmp = malloc((size_t)(m + KEEP + 1) * sizeof *tmp);
    int32_t work[2 * KEEP];
    int k = ann_prune_list(rule, alpha, KEEP, fill, D, F + (int64_t)u * D, F, ids, ids, m, tmp,
                           work, out);
    free(tmp);
    return k;
}

static void check_batch(const ann_prune_job *j0, const char *what)
{
    ann_prune_job j = *j0;
    int32_t *out = malloc(sizeof(int32_t) * N * STRIDE);
    float *outd = malloc(sizeof(float) * N * STRIDE);
    int *outn = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++)
        outn[i] = -1;
    j.out = out;
    j.outd = outd;
    j.outn = outn;
    loupe_err err;
    CHECK(ann_prune_cpu(NULL, &j, &err) == LOUPE_OK);
    int64_t bad = 0;
    for (int64_t i = 0; i < j.n_lists; i++) {
        const int32_t u = j.own[i];
        int32_t ids[1024], ref[KEEP]; /* the longest list of a batch here: 700 */
        int m = 0;
        if (j.shared) {
            const int32_t *l = j.shared + (int64_t)j.lst[i] * j.K;
            for (int x = 0; x < j.K; x++) {
                int rep = 0;
                for (int y = 0; y < x; y++)
                    rep |= l[y] == l[x];
                if (l[x] >= 0 && l[x] != u && !rep)
                    ids[m++] = l[x];
            }
        } else {
            m = j.len[i];
            memcpy(ids, j.cid + j.start[i], (size_t)m * sizeof *ids);
        }
        if (j.nearest > 0 && m > j.nearest) { /* the owner's nearest, by (distance, id) */
            const int ip = j.rule == ANN_PRUNE_IP;
            for (int x = 1; x < m; x++) {
                int32_t v = ids[x];
                float dv = dist(u, v, ip);
                int y = x;
                for (; y > 0; y--) {
                    float dy = dist(u, ids[y - 1], ip);
                    if (dy < dv || (dy == dv && ids[y - 1] < v))
                        break;
                    ids[y] = ids[y - 1];
                }
                ids[y] = v;
            }
            m = j.nearest;
        }
        int k = reference(j.rule, j.alpha, j.fill, u, ids, m, ref);
        int ok = outn[u] == k && memcmp(out + (int64_t)u * STRIDE, ref, (size_t)k * 4) == 0;
        for (int x = 0; ok && x < k; x++) /* distances to the owner beside the ids */
            ok = fabsf(outd[(int64_t)u * STRIDE + x] - dist(u, ref[x], j.rule == ANN_PRUNE_IP)) <=
                 1e-4f * (1.0f + fabsf(outd[(int64_t)u * STRIDE + x]));
        if (!ok && bad++ < 3)
            fprintf(stderr, "%s: list %lld (owner %d) differs: %d vs %d kept\n", what,
                    (long long)i, u, outn[u], k);
    }
    int64_t touched = 0;
    for (int u = 0; u < N; u++)
        touched += outn[u] != -1;
    /* Cut lists: the reference ranks in double precision, the prune in float, so a list whose
     * cut falls between two near-equal distances may differ; a few such are allowed. */
    const int64_t allowed = j.nearest > 0 ? j.n_lists / 50 : 0;
    CHECK_MSG(bad <= allowed, "%s: %lld lists differ from ann_prune_list's", what,
              (long long)bad);
    CHECK_MSG(touched == j.n_lists, "%s: %lld rows written for %lld lists", what,
              (long long)touched, (long long)j.n_lists);
    free(out);
    free(outd);
    free(outn);
}

static void lists(test_rng *r, ann_prune_rule rule, float alpha, int fill)
{
    enum { NL = 400, NQ = 50, K = 64 };
    static int32_t own[N], len[NL], cid[NL * 600], shared[NQ * K], lst[NL];
    static int64_t start[NL];
    static float cdist[NL * 600];
    for (int i = 0; i < N; i++)
        own[i] = i;
    for (int i = 0; i < NL; i++) { /* distinct owners: a shuffled prefix */
        int k = i + (int)(test_rng_u64(r) % (uint64_t)(N - i)), t = own[i];
        own[i] = own[k];
        own[k] = t;
    }
    ann_prune_job j = {0};
    j.F = F;
    j.n = N;
    j.dim = D;
    j.rule = rule;
    j.alpha = alpha;
    j.keep = KEEP;
    j.fill = fill;
    j.stride = STRIDE;
    j.threads = 2;
    j.n_lists = NL;
    j.own = own;
    /* Explicit: 0..600 distinct candidates, never the owner. */
    int64_t at = 0;
    for (int i = 0; i < NL; i++) {
        len[i] = (int)(test_rng_u64(r) % 601);
        start[i] = at;
        for (int x = 0; x < len[i]; x++) {
            int32_t v;
            int rep;
            do {
                v = (int32_t)(test_rng_u64(r) % N);
                rep = v == own[i];
                for (int y = 0; y < x && !rep; y++)
                    rep = cid[at + y] == v;
            } while (rep);
            cid[at + x] = v;
            cdist[at + x] = prune_dist(own[i], v, rule == ANN_PRUNE_IP);
        }
        at += len[i];
    }
    j.start = start;
    j.len = len;
    j.cid = cid;
    check_batch(&j, "explicit");
    j.nearest = 600; /* no list is longer: nothing is cut */
    check_batch(&j, "explicit, cut at 600");
    j.nearest = 24;
    check_batch(&j, "explicit, cut to the nearest 24");
    j.nearest = 0;
    j.cdist = cdist; /* the same distances given: the same lists */
    check_batch(&j, "explicit, distances given");
    /* Shared: lists with -1 and repeats; owners sorted by list, some inside it. */
    j.cdist = NULL;
    for (int x = 0; x < NQ * K; x++) {
        uint64_t z = test_rng_u64(r) % 100;
        shared[x] = z < 4 ? -1 : (int32_t)(test_rng_u64(r) % N);
        if (z >= 4 && z < 8 && x % K > 0)
            shared[x] = shared[x - 1];
    }
    for (int i = 0; i < NL; i++)
        lst[i] = i * NQ / NL;
    for (int i = 0; i < NL; i += 4)
        shared[lst[i] * K + (int)(test_rng_u64(r) % K)] = own[i];
    j.shared = shared;
    j.K = K;
    j.lst = lst;
    check_batch(&j, "shared");
    j.nearest = 24;
    check_batch(&j, "shared, cut to the nearest 24");
    j.nearest = 0;
    /* Shared lists past the pair cache (a large build k): distances computed per owner. */
    enum { NQL = 8, KL = 700 };
    static int32_t sl[NQL * KL];
    for (int x = 0; x < NQL * KL; x++) {
        uint64_t z = test_rng_u64(r) % 100;
        sl[x] = z < 2 ? -1 : (int32_t)(test_rng_u64(r) % N);
    }
    for (int i = 0; i < NL; i++)
        lst[i] = i * NQL / NL;
    for (int i = 0; i < NL; i += 5)
        sl[lst[i] * KL + (int)(test_rng_u64(r) % KL)] = own[i];
    j.shared = sl;
    j.K = KL;
    check_batch(&j, "shared, lists of 700");
}

/* The build's plug: counts its batches and answers `answer`. */
typedef struct {
    int calls;
    loupe_status answer;
} plug;

static loupe_status plug_fn(void *user, const ann_prune_job *job, loupe_err *err)
{
    plug *p = user;
    p->calls++;
    (void)job;
    if (p->answer == LOUPE_ERR_GPU)
        return loupe_fail(err, LOUPE_ERR_GPU, "the plug broke");
    return loupe_fail(err, p->answer, "the plug declines");
}

static void build_plug(test_rng *r)
{
    enum { NK = 4000, DIM = 32, NQ = 2000 };
    float *keys = malloc(sizeof(float) * NK * DIM), *q = malloc(sizeof(float) * NQ * DIM);
    for (int i = 0; i < NK * DIM; i++)
        keys[i] = test_rng_normal(r);
    for (int i = 0; i < NQ * DIM; i++)
        q[i] = test_rng_normal(r) + 0.5f;
    loupe_err err;
    ann_keys *k = NULL;
    CHECK(ann_keys_create(keys, NK, DIM, ANN_KEYS_BF16, &k, &err) == LOUPE_OK);
    ann_build_opts bo;
    ann_build_opts_init(&bo);
    bo.threads = 2;
    bo.degree = 16;
    ann_index *a = NULL, *b = NULL, *c = NULL;
    CHECK(ann_index_build(ANN_GRAPH, k, q, NQ, &bo, &a, NULL, &err) == LOUPE_OK);
    plug p = {0, LOUPE_ERR_UNSUPPORTED};
    bo.prune_lists = plug_fn;
    bo.prune_user = &p;
    CHECK(ann_index_build(ANN_GRAPH, k, q, NQ, &bo, &b, NULL, &err) == LOUPE_OK);
    CHECK_MSG(p.calls == 3, "the plug saw %d batches, not 3", p.calls);
    /* Declined: the CPU's graph, edge for edge (same results for every query). */
    ann_search_ctx *ctx = NULL;
    CHECK(ann_search_ctx_create(NK, 128, &ctx, &err) == LOUPE_OK);
    ann_search_params sp = {.k = 20, .ef = 64};
    int same = 1;
    for (int t = 0; t < 50 && ctx; t++) {
        int32_t ia[20], ib[20];
        float sa[20], sb[20];
        int na = 0, nb = 0;
        CHECK(ann_search(a, ctx, q + t * DIM, &sp, ia, sa, &na, &err) == LOUPE_OK);
        CHECK(ann_search(b, ctx, q + t * DIM, &sp, ib, sb, &nb, &err) == LOUPE_OK);
        same &= na == nb && memcmp(ia, ib, sizeof(int32_t) * (size_t)na) == 0;
    }
    CHECK(same);
    CHECK(ann_index_build_stats(a)->n_edges == ann_index_build_stats(b)->n_edges);
    p = (plug){0, LOUPE_ERR_GPU};
    CHECK(ann_index_build(ANN_GRAPH, k, q, NQ, &bo, &c, NULL, &err) == LOUPE_ERR_GPU);
    CHECK(c == NULL);
    CHECK(strstr(err.msg, "the plug broke") != NULL);
    ann_search_ctx_destroy(ctx);
    ann_index_destroy(a);
    ann_index_destroy(b);
    ann_keys_destroy(k);
    free(keys);
    free(q);
}

int main(void)
{
    test_rng r;
    test_rng_seed(&r, test_seed());
    for (int i = 0; i < N * D; i++)
        F[i] = test_rng_normal(&r) + (i % 3 == 0 ? 0.4f : 0.0f);
    lists(&r, ANN_PRUNE_L2, 1.0f, KEEP);
    lists(&r, ANN_PRUNE_L2, 1.3f, 8);
    lists(&r, ANN_PRUNE_IP, 1.0f, KEEP);
    build_plug(&r);
    return test_summary("test_anns_prune");
}
