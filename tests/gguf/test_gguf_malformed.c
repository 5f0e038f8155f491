/* Malformed GGUF files are rejected with a sentence naming the file and the problem, and never
 * crash, hang or allocate absurdly: a valid file truncated at every byte of its header and at
 * sampled points of its data, hand-crafted bad headers (magic, version, counts, strings,
 * alignment, offsets, overlaps, types, dims, duplicates, nesting), and random byte mutations.
 * Every buffer is an exact-size heap copy, so under AddressSanitizer any over-read is caught. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

/* ==== A byte builder for crafted files ====================================================== */

typedef struct {
    uint8_t b[8192];
    size_t n;
} buf;

static void put(buf *f, const void *p, size_t n)
{
    if (f->n + n <= sizeof f->b) {
        memcpy(f->b + f->n, p, n);
        f->n += n;
    }
}
static void u32(buf *f, uint32_t v) { put(f, &v, 4); }
static void u64(buf *f, uint64_t v) { put(f, &v, 8); }
static void str(buf *f, const char *s) { u64(f, strlen(s)), put(f, s, strlen(s)); }
static void header(buf *f, uint32_t version, uint64_t nt, uint64_t nkv)
{
    f->n = 0;
    put(f, "GGUF", 4), u32(f, version), u64(f, nt), u64(f, nkv);
}
static void kv_u32(buf *f, const char *k, uint32_t v) { str(f, k), u32(f, RT_GGUF_UINT32), u32(f, v); }
static void tinfo(buf *f, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type,
                  uint64_t off)
{
    str(f, name), u32(f, nd);
    for (uint32_t d = 0; d < nd; d++)
        u64(f, ne[d]);
    u32(f, type), u64(f, off);
}
static void pad(buf *f, size_t a)
{
    while (f->n % a)
        f->b[f->n++] = 0;
}
static void data(buf *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        f->b[f->n++] = (uint8_t)(i * 7 + 1);
}

/* Opens an exact-size copy of bytes [0, n); returns the status, message in err. */
static loupe_status open_bytes(const uint8_t *b, size_t n, loupe_err *err)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, b, n);
    rt_gguf *g = NULL;
    loupe_err_clear(err);
    loupe_status st = rt_gguf_open_buffer(copy, n, "bad.gguf", &g, err);
    CHECK((st == LOUPE_OK) == (g != NULL));
    if (g) {
        /* Walk what a consumer would, to prove the accessors stay in bounds. */
        for (int64_t i = 0; i < rt_gguf_n_kv(g); i++) {
            rt_gguf_str k = rt_gguf_key(g, i);
            CHECK(k.len > 0);
            rt_gguf_str s;
            int64_t v;
            for (uint64_t j = 0; j < rt_gguf_arr_len(g, i) && j < 4; j++)
                if (rt_gguf_arr_str(g, i, j, &s, NULL) == LOUPE_OK)
                    CHECK(s.ptr >= (const char *)copy && s.ptr + s.len <= (const char *)copy + n);
                else
                    (void)rt_gguf_arr_i64(g, i, j, &v, NULL);
        }
        for (int64_t i = 0; i < rt_gguf_n_tensors(g); i++) {
            const rt_gguf_tensor *t = rt_gguf_tensor_at(g, i);
            CHECK((const uint8_t *)t->data + t->n_bytes <= copy + n);
        }
    }
    rt_gguf_close(g);
    free(copy);
    return st;
}

/* Expects rejection with status st (0 = any failure) and a message containing `want`. */
static void expect_bad(const buf *f, loupe_status st, const char *want, int line)
{
    loupe_err e;
    loupe_status got = open_bytes(f->b, f->n, &e);
    if (got == LOUPE_OK || (st && got != st) || strncmp(e.msg, "bad.gguf: ", 10) ||
        !strstr(e.msg, want)) {
        fprintf(stderr, "line %d: expected failure /%s/ (status %d), got status %d: %s\n", line,
                want, (int)st, (int)got, e.msg);
        test_failures++;
    }
}
#define EXPECT_BAD(st, want) expect_bad(&f, st, want, __LINE__)

static void expect_ok(const buf *f, int line)
{
    loupe_err e;
    if (open_bytes(f->b, f->n, &e) != LOUPE_OK) {
        fprintf(stderr, "line %d: expected success, got: %s\n", line, e.msg);
        test_failures++;
    }
}
#define EXPECT_OK() expect_ok(&f, __LINE__)

/* ==== Crafted cases ========================================================================= */

static void test_crafted(void)
{
    buf f;
    const uint64_t ne2[2] = {32, 2}, ne1[1] = {8};
    const uint32_t F = RT_TYPE_F32;

    /* The baseline these cases vary: one key, two F32 tensors. */
    header(&f, 3, 2, 1), kv_u32(&f, "a", 1), tinfo(&f, "x", 2, ne2, F, 0),
        tinfo(&f, "y", 1, ne1, F, 256), pad(&f, 32), data(&f, 256 + 32);
    EXPECT_OK();
    header(&f, 2, 2, 1), kv_u32(&f, "a", 1), tinfo(&f, "x", 2, ne2, F, 0),
        tinfo(&f, "y", 1, ne1, F, 256), pad(&f, 32), data(&f, 256 + 32);
    EXPECT_OK(); /* version 2 reads the same */

    memcpy(f.b, "GGUX", 4);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "not a GGUF file (bad magic)");
    f.n = 3;
    EXPECT_BAD(LOUPE_ERR_FORMAT, "shorter than the 4-byte magic");
    header(&f, 1, 0, 0);
    EXPECT_BAD(LOUPE_ERR_UNSUPPORTED, "GGUF version 1 is not supported");
    header(&f, 4, 0, 0);
    EXPECT_BAD(LOUPE_ERR_UNSUPPORTED, "unknown GGUF version 4");
    header(&f, 0x03000000, 0, 0);
    EXPECT_BAD(LOUPE_ERR_UNSUPPORTED, "big-endian");
    header(&f, 3, 0, 1000000000000ull), kv_u32(&f, "a", 1);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "claims 1000000000000 metadata keys");
    header(&f, 3, UINT64_MAX, 0), data(&f, 100);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensors, more than");
    header(&f, 3, 0, 2), kv_u32(&f, "a", 1);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "header claims 2 metadata keys, more than the file's 41 bytes");
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, RT_GGUF_UINT64), u32(&f, 0);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "file is truncated: key 'k' needs 8 bytes at offset 37 but only 4 "
                                 "remain");

    /* Strings. */
    header(&f, 3, 0, 1), u64(&f, 1ull << 62), put(&f, "abc", 3), u32(&f, 4), u32(&f, 0);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "past the end of the file");
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, RT_GGUF_STRING), u64(&f, 5), put(&f, "abcd", 4);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "key 'k' has length 5, past the end of the file");
    header(&f, 3, 0, 1), str(&f, ""), u32(&f, RT_GGUF_UINT8), data(&f, 1);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "key #0 is empty");
    header(&f, 3, 0, 1), u64(&f, 3), put(&f, "a\0b", 3), u32(&f, RT_GGUF_UINT8), data(&f, 1);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "NUL");

    /* Value types. */
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, 13), data(&f, 8);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "key 'k' has unknown value type 13");
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, RT_GGUF_BOOL), put(&f, "\x02", 1);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "bool with value 2");
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, RT_GGUF_ARRAY), u32(&f, 77), u64(&f, 0);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "array of unknown element type 77");
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, RT_GGUF_ARRAY), u32(&f, RT_GGUF_UINT64),
        u64(&f, 1ull << 60), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "claims 1152921504606846976 uint64 elements");
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, RT_GGUF_ARRAY), u32(&f, RT_GGUF_STRING),
        u64(&f, 3), str(&f, "a"), str(&f, "b"), u64(&f, 99), put(&f, "abcdefgh", 8);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "has length 99, past the end");
    header(&f, 3, 0, 1), str(&f, "k"), u32(&f, RT_GGUF_ARRAY);
    for (int d = 0; d < 9; d++)
        u32(&f, RT_GGUF_ARRAY), u64(&f, 1);
    u32(&f, RT_GGUF_UINT8), u64(&f, 0);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "deeper than 8 levels");
    header(&f, 3, 0, 2), kv_u32(&f, "dup", 1), kv_u32(&f, "dup", 2);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "key 'dup' appears twice");

    /* Alignment. */
    header(&f, 3, 0, 1), kv_u32(&f, "general.alignment", 48);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "general.alignment is 48, not a power of two");
    header(&f, 3, 0, 1), kv_u32(&f, "general.alignment", 0);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "general.alignment is 0");
    header(&f, 3, 0, 1), str(&f, "general.alignment"), u32(&f, RT_GGUF_STRING), str(&f, "32");
    EXPECT_BAD(LOUPE_ERR_FORMAT, "general.alignment is a string, not an integer");
    header(&f, 3, 1, 1), str(&f, "general.alignment"), u32(&f, RT_GGUF_UINT64), u64(&f, 64),
        tinfo(&f, "x", 1, ne1, F, 0), pad(&f, 64), data(&f, 32);
    EXPECT_OK(); /* any integer width */

    /* Tensor infos. */
    header(&f, 3, 1, 0), tinfo(&f, "x", 2, ne2, F, 4), pad(&f, 32), data(&f, 300);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor 'x' data offset 4 is not a multiple of the alignment 32");
    header(&f, 3, 1, 0), tinfo(&f, "blk.0.attn_q.weight", 2, ne2, F, 0), pad(&f, 32),
        data(&f, 255);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor 'blk.0.attn_q.weight' data ends past the end of the file "
                                 "(offset 96 + 0 + 256 bytes > file size 351)");
    header(&f, 3, 1, 0), tinfo(&f, "x", 1, ne1, F, UINT64_MAX - 31), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "data ends past the end of the file");
    header(&f, 3, 2, 0), tinfo(&f, "x", 2, ne2, F, 0), tinfo(&f, "y", 1, ne1, F, 224),
        pad(&f, 32), data(&f, 512);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensors 'x' and 'y' overlap");
    header(&f, 3, 2, 0), tinfo(&f, "x", 2, ne2, F, 0), tinfo(&f, "x", 1, ne1, F, 256),
        pad(&f, 32), data(&f, 512);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor 'x' appears twice");
    header(&f, 3, 1, 0), tinfo(&f, "x", 1, ne1, 4, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor 'x' has unknown type 4");
    header(&f, 3, 1, 0), tinfo(&f, "x", 1, ne1, 100000, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "has unknown type 100000");
    const uint64_t ne5[5] = {1, 1, 1, 1, 1};
    header(&f, 3, 1, 0), tinfo(&f, "x", 5, ne5, F, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor 'x' has 5 dimensions (1 to 4 allowed)");
    header(&f, 3, 1, 0), tinfo(&f, "x", 0, ne5, F, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "has 0 dimensions");
    const uint64_t ne0[2] = {8, 0};
    header(&f, 3, 1, 0), tinfo(&f, "x", 2, ne0, F, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor 'x' has dimension 1 of size 0");
    const uint64_t nebig[3] = {1ull << 32, 1ull << 32, 4};
    header(&f, 3, 1, 0), tinfo(&f, "x", 3, nebig, F, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "overflow");
    const uint64_t nebytes[2] = {1ull << 31, 1ull << 31}; /* 2^62 elements, 2^64 bytes */
    header(&f, 3, 1, 0), tinfo(&f, "x", 2, nebytes, F, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor 'x'");
    const uint64_t ne33[1] = {33};
    header(&f, 3, 1, 0), tinfo(&f, "x", 1, ne33, RT_TYPE_Q8_0, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "rows of 33 elements, not a multiple of the Q8_0 block size 32");
    header(&f, 3, 1, 0), tinfo(&f, "", 1, ne1, F, 0), pad(&f, 32), data(&f, 64);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "tensor #0 has an empty name");
    header(&f, 3, 1, 0), tinfo(&f, "x", 1, ne1, F, 0);
    EXPECT_BAD(LOUPE_ERR_FORMAT, "data");
}

/* ==== Truncation and mutation of a real file ================================================= */

static uint8_t *make_valid(size_t *n, size_t *required, size_t *data_off, test_rng *rng)
{
    char path[512];
    snprintf(path, sizeof path, "%s/test_gguf_malformed-%d.gguf", test_tmpdir(), (int)getpid());
    loupe_err e = {0};
    rt_gguf_writer *w = NULL;
    uint64_t ne[2] = {256, 2};
    const char *toks[] = {"a", "bb", "ccc"};
    int32_t types[3] = {1, 1, 3};
    uint8_t raw[1024];
    CHECK(rt_gguf_writer_create(path, &w, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_str(w, "general.architecture", "llama", &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_u32(w, "llama.block_count", 1, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_f32(w, "llama.rope.freq_base", 5e5f, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", RT_GGUF_INT32, types, 3, &e) ==
          LOUPE_OK);
    CHECK(rt_gguf_writer_add_tensor(w, "a", RT_TYPE_Q4_K, 2, ne, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_add_tensor(w, "b", RT_TYPE_Q8_0, 1, ne, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_add_tensor(w, "c", RT_TYPE_F16, 1, ne, &e) == LOUPE_OK);
    size_t data_bytes = 2 * 144 + 8 * 34 + 512;
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)test_rng_u64(rng);
    for (size_t left = data_bytes; left;) {
        size_t k = left < sizeof raw ? left : sizeof raw;
        CHECK(rt_gguf_writer_write(w, raw, k, &e) == LOUPE_OK);
        left -= k;
    }
    CHECK(rt_gguf_writer_finish(w, &e) == LOUPE_OK);
    rt_gguf_writer_destroy(w);

    rt_gguf *g = NULL;
    CHECK(rt_gguf_open(path, &g, &e) == LOUPE_OK);
    *required = *data_off = 0;
    if (g) {
        *data_off = (size_t)rt_gguf_data_offset(g);
        const rt_gguf_tensor *c = rt_gguf_find_tensor(g, "c");
        *required = (size_t)(rt_gguf_data_offset(g) + c->offset + c->n_bytes);
    }
    rt_gguf_close(g);
    FILE *fp = fopen(path, "rb");
    uint8_t *b = malloc(1 << 16);
    *n = fp ? fread(b, 1, 1 << 16, fp) : 0;
    if (fp)
        fclose(fp);
    unlink(path);
    return b;
}

static void test_truncation_and_mutation(test_rng *rng)
{
    size_t n, required, data_off;
    uint8_t *b = make_valid(&n, &required, &data_off, rng);
    CHECK(n > 0 && required <= n && data_off < required);
    loupe_err e;
    CHECK(open_bytes(b, n, &e) == LOUPE_OK);
    CHECK(open_bytes(b, required, &e) == LOUPE_OK); /* the last tensor's padding is optional */
    /* Every byte of the header and (the file being small) every byte of the data too. */
    int not_rejected = 0, unnamed = 0;
    for (size_t len = 0; len < required; len++) {
        loupe_status st = open_bytes(b, len, &e);
        if (st == LOUPE_OK)
            not_rejected++;
        else if (strncmp(e.msg, "bad.gguf: ", 10) != 0)
            unnamed++;
    }
    CHECK_MSG(not_rejected == 0, "%d truncated files were accepted", not_rejected);
    CHECK_MSG(unnamed == 0, "%d messages do not name the file", unnamed);
    fprintf(stderr, "  truncated at %zu points, e.g. at 40: ", required);
    open_bytes(b, 40, &e);
    fprintf(stderr, "%s\n", e.msg);

    /* Random mutations of the header region: whatever happens, no crash, and a failure names the
     * file. Some mutations (inside names or values) leave a valid file; that is fine. */
    int ok = 0, bad = 0;
    uint8_t *m = malloc(n);
    for (int it = 0; it < 3000; it++) {
        memcpy(m, b, n);
        int flips = 1 + (int)(test_rng_u64(rng) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = test_rng_u64(rng) % data_off;
            uint64_t r = test_rng_u64(rng);
            m[at] = r % 3 == 0 ? (uint8_t)r : r % 3 == 1 ? 0xff : (uint8_t)(m[at] ^ (1u << (r % 8)));
        }
        if (open_bytes(m, n, &e) == LOUPE_OK)
            ok++;
        else if (strncmp(e.msg, "bad.gguf: ", 10) == 0)
            bad++;
    }
    CHECK_MSG(ok + bad == 3000, "%d failures without the file name", 3000 - ok - bad);
    fprintf(stderr, "  mutations: %d still valid, %d rejected\n", ok, bad);
    free(m);
    free(b);
}

static void test_files(void)
{
    loupe_err e = {0};
    rt_gguf *g = NULL;
    CHECK(rt_gguf_open("/nonexistent/model.gguf", &g, &e) == LOUPE_ERR_NOT_FOUND);
    CHECK(g == NULL && strstr(e.msg, "/nonexistent/model.gguf: cannot open") != NULL);
    CHECK(rt_gguf_open(test_tmpdir(), &g, &e) == LOUPE_ERR_IO);
    CHECK(strstr(e.msg, "is a directory") != NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/test_gguf_empty-%d.gguf", test_tmpdir(), (int)getpid());
    FILE *fp = fopen(path, "wb");
    if (fp)
        fclose(fp);
    CHECK(rt_gguf_open(path, &g, &e) == LOUPE_ERR_FORMAT);
    CHECK(strstr(e.msg, "it is empty") != NULL);
    unlink(path);
    rt_gguf_close(NULL);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    test_crafted();
    test_truncation_and_mutation(&rng);
    test_files();
    return test_summary("test_gguf_malformed");
}
