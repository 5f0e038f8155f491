/*
 * test_retrieval_group MODEL.gguf: grouped search (rt_retrieval_params.search_group) in retrieval
 * attention on the CPU backend, on a random model whose 4 query heads share one KV head.
 *
 * The script of test_retrieval: a prefill of N0 random tokens, an extension of EXT tokens in one
 * batch, DEC teacher-forced decode steps, with a small static tail so the static set moves to the
 * host set (and grows the indexes) several times. With one index per KV head:
 *   1. topk >= every host key (no search) equals full attention for search groups 2 and 4;
 *   2. an exhaustive beam with a small topk: groups of 2 and 4 equal search_group 1 (every head
 *      gets its own exact top-k, through seeds, moves and id mapping);
 *   3. a narrow beam: groups of 2 and 4 are no further from the exact top-k (flat) than
 *      search_group 1 is, count the same searches and attended keys per query head, and scan
 *      fewer key rows (one load per row per group);
 *   4. with one index per query head the option changes nothing (bit for bit);
 *   5. interleaved searches (rt_retrieval_params.interleave 2 and 4, with either kind of index)
 *      give the run of one search at a time bit for bit, with the same searches, rows scanned
 *      and keys attended;
 *   6. narrowing (expand, margin) applies to seeded decode steps only: the context's last token
 *      and the extension batch give the plain search's logits bit for bit, the decode steps
 *      scan fewer rows and their logits change.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "cpu/retrieval_script.h"
#include "runtime/runtime.h"

enum { TOPK = 9 };

static void params(rt_runner_params *p, rt_attn_mode mode, uint32_t topk, uint32_t group)
{
    script_params(p, mode, topk);
    p->retrieval.index_per_kv = true;
    p->retrieval.search_group = group;
}

static double max_row_diff(const float *a, const float *b, uint32_t nv)
{
    return script_max_row_diff(a, b, nv, NULL);
}

/* The mean over rows of their relative error: steadier than the worst row for comparing two
 * approximations. */
static double mean_row_diff(const float *a, const float *b, uint32_t nv)
{
    double d = 0;
    for (int t = 0; t < 1 + EXT + DEC; t++)
        d += test_rel_diff(a + (size_t)t * nv, b + (size_t)t * nv, nv);
    return d / (1 + EXT + DEC);
}

int main(int argc, char **argv)
{
    int32_t *ids = NULL;
    rt_gguf *g = NULL;
    rt_model *m = script_setup(argc, argv, "test_retrieval_group", &g, &ids);
    if (!m)
        return 2;
    loupe_err err = {0};
    const uint32_t nv = rt_model_hparams(m)->n_vocab;
    const size_t rows = SCRIPT_ROWS;
    float *full = malloc(rows * nv * sizeof *full), *got = malloc(rows * nv * sizeof *got);
    float *one = malloc(rows * nv * sizeof *one), *stat = malloc(rows * nv * sizeof *stat);
    float *flat = malloc(rows * nv * sizeof *flat);
    CHECK(full && got && one && stat && flat);
    rt_runner_params p;
    rt_runner_stats st1 = {0}, st = {0};
    params(&p, RT_ATTN_FULL, 0, 1);
    CHECK_MSG(!script_run(m, &p, ids, full, NULL, &err), "full: %s", loupe_err_message(&err));
    params(&p, RT_ATTN_FLAT, TOPK, 1);
    CHECK_MSG(!script_run(m, &p, ids, flat, NULL, &err), "flat: %s", loupe_err_message(&err));
    params(&p, RT_ATTN_RETRIEVAL, 0, 1);
    CHECK_MSG(!script_run(m, &p, ids, stat, NULL, &err), "topk 0: %s", loupe_err_message(&err));
    const double d_static = max_row_diff(stat, full, nv);
    CHECK_MSG(d_static > 1e-3, "the static set alone is within %.3g of full attention",
              d_static);

    for (uint32_t grp = 2; grp <= 4; grp += 2) {
        /* 1. No search: full attention. */
        params(&p, RT_ATTN_RETRIEVAL, 1 << 20, grp);
        loupe_status s = script_run(m, &p, ids, got, NULL, &err);
        CHECK_MSG(!s, "group %u, topk >= host: %s", grp, loupe_err_message(&err));
        double d = s ? INFINITY : max_row_diff(got, full, nv);
        CHECK_MSG(d <= 1e-5, "group %u with topk >= the host set: relative error %.3g vs full",
                  grp, d);

        /* 2. Exhaustive beam: every head's exact top-k, as searched alone. */
        params(&p, RT_ATTN_RETRIEVAL, TOPK, 1);
        p.retrieval.ef = (int)p.n_ctx;
        p.retrieval.expand = (int)p.n_ctx; /* the whole beam: exhaustive */
        CHECK_MSG(!script_run(m, &p, ids, one, NULL, &err), "exhaustive: %s",
                  loupe_err_message(&err));
        p.retrieval.search_group = grp;
        s = script_run(m, &p, ids, got, &st, &err);
        CHECK_MSG(!s, "group %u exhaustive: %s", grp, loupe_err_message(&err));
        d = s ? INFINITY : max_row_diff(got, one, nv);
        CHECK_MSG(d <= 1e-5, "group %u, exhaustive beam: relative error %.3g vs group 1", grp,
                  d);
        CHECK(!s && st.moves >= 1 && st.searches > 0);

        /* 3. A narrow beam (the default, 2·topk): no further from the exact top-k (flat) than
         * one search per head is, and fewer rows. */
        params(&p, RT_ATTN_RETRIEVAL, TOPK, 1);
        CHECK_MSG(!script_run(m, &p, ids, one, &st1, &err), "group 1: %s",
                  loupe_err_message(&err));
        p.retrieval.search_group = grp;
        s = script_run(m, &p, ids, got, &st, &err);
        CHECK_MSG(!s, "group %u: %s", grp, loupe_err_message(&err));
        double d_one = mean_row_diff(one, flat, nv);
        double d_grp = s ? INFINITY : mean_row_diff(got, flat, nv);
        fprintf(stderr, "group %u: logits %.3g from exact top-%d's on average (group 1: %.3g, "
                "static set alone at worst: %.3g); keys scanned %llu vs %llu over %llu "
                "searches\n", grp, d_grp, TOPK, d_one, d_static,
                (unsigned long long)st.keys_scanned, (unsigned long long)st1.keys_scanned,
                (unsigned long long)st.searches);
        /* Over seeds 1-12 d_grp / d_one lay in 0.36-0.86: each head's own pool, widened by its
         * group's expansions, finds more of its exact top-k than it does alone. */
        CHECK_MSG(d_grp <= 1.1 * d_one + 1e-5, "group %u: mean relative error %.3g vs exact "
                  "top-k, group 1 %.3g", grp, d_grp, d_one);
        CHECK(st.searches == st1.searches && st.searches > 0);
        CHECK(st.keys_attended == st1.keys_attended);
        CHECK_MSG(st.keys_scanned < st1.keys_scanned, "group %u scanned %llu rows, group 1 %llu",
                  grp, (unsigned long long)st.keys_scanned,
                  (unsigned long long)st1.keys_scanned);
    }

    /* 4. One index per query head: nothing to group, the same run bit for bit. */
    params(&p, RT_ATTN_RETRIEVAL, TOPK, 1);
    p.retrieval.index_per_kv = false;
    CHECK(!script_run(m, &p, ids, one, &st1, &err));
    p.retrieval.search_group = 4;
    CHECK(!script_run(m, &p, ids, got, &st, &err));
    CHECK(!memcmp(one, got, rows * nv * sizeof *got) && st.keys_scanned == st1.keys_scanned);

    /* 5. Interleaved searches: the same searches, in another order on the thread. */
    for (int per_kv = 0; per_kv <= 1; per_kv++) {
        params(&p, RT_ATTN_RETRIEVAL, TOPK, 1);
        p.retrieval.index_per_kv = per_kv;
        CHECK(!script_run(m, &p, ids, one, &st1, &err));
        for (uint32_t ilv = 2; ilv <= 4; ilv += 2) {
            p.retrieval.interleave = ilv;
            loupe_status s = script_run(m, &p, ids, got, &st, &err);
            CHECK_MSG(!s, "interleave %u: %s", ilv, loupe_err_message(&err));
            CHECK_MSG(!s && !memcmp(one, got, rows * nv * sizeof *got),
                      "interleave %u (index per %s) changed the logits", ilv,
                      per_kv ? "KV head" : "query head");
            CHECK(st.searches == st1.searches && st.keys_scanned == st1.keys_scanned &&
                  st.keys_attended == st1.keys_attended && st.searches > 0);
        }
    }

    /* 6. Narrowing is a decode step's economy: unseeded searches (the extension batch, a
     * question on the bundled model) keep their whole beam, which lost passkey answers at 16K
     * when they did not (docs/BENCHMARKS.md). */
    params(&p, RT_ATTN_RETRIEVAL, TOPK, 1);
    CHECK(!script_run(m, &p, ids, one, &st1, &err));
    p.retrieval.expand = 1;
    p.retrieval.margin = 0.01f;
    {
        loupe_status s = script_run(m, &p, ids, got, &st, &err);
        CHECK_MSG(!s, "narrowed: %s", loupe_err_message(&err));
        const size_t head = (size_t)(1 + EXT) * nv, tail = (size_t)DEC * nv;
        CHECK_MSG(!s && !memcmp(one, got, head * sizeof *got),
                  "narrowing changed the logits of the context's last token or the extension");
        CHECK_MSG(!s && memcmp(one + head, got + head, tail * sizeof *got),
                  "narrowing left every decode step's logits as they were");
        CHECK_MSG(st.keys_scanned < st1.keys_scanned, "narrowed: %llu rows scanned, plain %llu",
                  (unsigned long long)st.keys_scanned, (unsigned long long)st1.keys_scanned);
    }

    free(ids);
    free(full);
    free(got);
    free(one);
    free(stat);
    free(flat);
    rt_model_destroy(m);
    rt_gguf_close(g);
    return test_summary("test_retrieval_group");
}
