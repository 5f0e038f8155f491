/* Serialisation: save → map → identical ids and scores for graph, IVF and flat; the buffer form
 * round-trips; truncated, corrupted, wrong-version and mismatched files fail with a sentence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "common/test_util.h"

enum { N = 3000, D = 64, NT = 50, K = 10 };

static void search_all(const ann_index *ix, ann_search_ctx *ctx, const float *q, int32_t *ids,
                       float *sc)
{
    loupe_err err;
    ann_search_params p = {.k = K, .ef = 40, .nprobe = 4};
    int nf;
    for (int t = 0; t < NT; t++)
        CHECK(ann_search(ix, ctx, q + t * D, &p, ids + t * K, sc + t * K, &nf, &err) ==
              LOUPE_OK);
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long s = ftell(f);
    fclose(f);
    return s;
}

/* Rewrites byte `at` of path (xor with `x`), or truncates it to `at` bytes when x == 0. */
static void damage(const char *src, const char *dst, long at, unsigned char x)
{
    long n = file_size(src);
    unsigned char *b = malloc((size_t)n);
    FILE *f = fopen(src, "rb");
    CHECK(f && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    if (x)
        b[at] ^= x;
    f = fopen(dst, "wb");
    fwrite(b, 1, (size_t)(x ? n : at), f);
    fclose(f);
    free(b);
}

int main(void)
{
    uint64_t seed = test_seed();
    loupe_err err;
    loupe_err_clear(&err);
    float *kf = NULL, *bq = NULL, *tq = NULL;
    ann_synth_opts so = {.n_keys = N, .n_test = NT, .dim = D, .seed = seed, .rope = 1};
    CHECK(ann_synth_generate(&so, &kf, &bq, &tq, &err) == LOUPE_OK);
    ann_keys *keys = NULL, *other = NULL;
    CHECK(ann_keys_create(kf, N, D, ANN_KEYS_INT8, &keys, &err) == LOUPE_OK);
    CHECK(ann_keys_create(kf, N - 1, D, ANN_KEYS_INT8, &other, &err) == LOUPE_OK);
    ann_search_ctx *ctx = NULL;
    CHECK(ann_search_ctx_create(N, 64, &ctx, &err) == LOUPE_OK);
    ann_build_opts bo;
    ann_build_opts_init(&bo);
    bo.seed = seed;
    bo.threads = 2;
    char path[512], bad[600];
    snprintf(path, sizeof path, "%s/anns_test_%llu.idx", test_tmpdir(), (unsigned long long)seed);
    snprintf(bad, sizeof bad, "%s.bad", path);
    int32_t ids0[NT * K], ids1[NT * K];
    float sc0[NT * K], sc1[NT * K];

    for (int ty = ANN_FLAT; ty <= ANN_KEYGRAPH; ty++) {
        ann_index *ix = NULL, *mapped = NULL, *fromb = NULL;
        CHECK(ann_index_build((ann_type)ty, keys, bq, N, &bo, &ix, NULL, &err) == LOUPE_OK);
        search_all(ix, ctx, tq, ids0, sc0);
        CHECK(ann_index_save(ix, path, &err) == LOUPE_OK);
        CHECK(ann_index_map(path, keys, &mapped, &err) == LOUPE_OK);
        if (!mapped)
            break;
        CHECK(ann_index_type(mapped) == (ann_type)ty);
        CHECK(ann_index_bytes(mapped) == ann_index_bytes(ix));
        CHECK(ann_index_build_stats(mapped)->n_edges == ann_index_build_stats(ix)->n_edges);
        search_all(mapped, ctx, tq, ids1, sc1);
        CHECK_MSG(!memcmp(ids0, ids1, sizeof ids0) && !memcmp(sc0, sc1, sizeof sc0),
                  "%s: mapped index answers differently", ann_type_name((ann_type)ty));
        /* Buffer form. */
        size_t sz = ann_index_serialized_size(ix);
        void *buf = aligned_alloc(64, (sz + 63) / 64 * 64);
        CHECK(ann_index_serialize(ix, buf, sz, &err) == LOUPE_OK);
        CHECK(ann_index_from_buffer(buf, sz, "buffer", keys, &fromb, &err) == LOUPE_OK);
        if (fromb) {
            search_all(fromb, ctx, tq, ids1, sc1);
            CHECK(!memcmp(ids0, ids1, sizeof ids0));
        }
        ann_index_destroy(fromb);
        free(buf);

        /* Damage: the wrong keys, truncation, a flipped byte in the header or arrays. */
        ann_index *x = NULL;
        CHECK(ann_index_map(path, other, &x, &err) == LOUPE_ERR_INVALID && !x);
        CHECK(strstr(err.msg, "keys given") != NULL);
        long fs = file_size(path);
        damage(path, bad, fs - 1, 0);
        CHECK(ann_index_map(bad, keys, &x, &err) == LOUPE_ERR_FORMAT && !x);
        CHECK(strstr(err.msg, "truncated") != NULL);
        damage(path, bad, 30, 0);
        CHECK(ann_index_map(bad, keys, &x, &err) == LOUPE_ERR_FORMAT && !x);
        damage(path, bad, 0, 0x20);
        CHECK(ann_index_map(bad, keys, &x, &err) == LOUPE_ERR_FORMAT && !x);
        CHECK(strstr(err.msg, "magic") != NULL);
        damage(path, bad, 8, 0x02); /* version 1 → 3 */
        CHECK(ann_index_map(bad, keys, &x, &err) == LOUPE_ERR_UNSUPPORTED && !x);
        CHECK(strstr(err.msg, "version") != NULL);
        damage(path, bad, fs - 80, 0x40); /* payload byte: checksum */
        CHECK(ann_index_map(bad, keys, &x, &err) == LOUPE_ERR_FORMAT && !x);
        fprintf(stderr, "%s: %ld bytes; corrupt payload: %s\n", ty == 0 ? "flat" : ty == 1 ? "ivf"
                : ty == 2 ? "graph" : "keygraph", fs, loupe_err_message(&err));
        ann_index_destroy(mapped);
        ann_index_destroy(ix);
    }
    CHECK(ann_index_map("/nonexistent/loupe.idx", keys, &(ann_index *){NULL}, &err) ==
          LOUPE_ERR_IO);
    remove(path);
    remove(bad);
    ann_search_ctx_destroy(ctx);
    ann_keys_destroy(keys);
    ann_keys_destroy(other);
    free(kf);
    free(bq);
    free(tq);
    return test_summary("test_anns_serialize");
}
