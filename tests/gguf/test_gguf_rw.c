/* GGUF writer → reader round trip: every metadata type (all scalars, strings, arrays of every
 * scalar type, string arrays, empty and nested arrays), every tensor type with random bytes,
 * a custom alignment; the typed getters' conversions and failures; the writer's own checks
 * (duplicates, order, too much / too little data) and that an unfinished file never appears. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

static char path[512];

static bool file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* No "<path>.tmp-*" left next to path. */
static int temp_files_left(void)
{
    const char *dir = test_tmpdir();
    const char *base = strrchr(path, '/') + 1;
    size_t bl = strlen(base);
    int n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, base, bl) && !strncmp(e->d_name + bl, ".tmp-", 5))
            n++;
    closedir(d);
    return n;
}

#define OK(expr)                                                                              \
    do {                                                                                      \
        loupe_err e_ = {0};                                                                   \
        loupe_err *err = &e_;                                                                 \
        loupe_status st_ = (expr);                                                            \
        CHECK_MSG(st_ == LOUPE_OK, "%s -> %s", #expr, loupe_err_message(err));               \
    } while (0)

typedef struct {
    const char *name;
    rt_type type;
    uint32_t n_dims;
    uint64_t ne[4];
    uint8_t *data;
    uint64_t n_bytes;
} tensor_case;

static void test_round_trip(test_rng *rng)
{
    rt_gguf_writer *w = NULL;
    loupe_err e = {0};
    CHECK(rt_gguf_writer_create(path, &w, &e) == LOUPE_OK);
    if (!w)
        return;

    /* Scalars of every type, with random values. */
    uint8_t u8 = (uint8_t)test_rng_u64(rng);
    int8_t i8 = (int8_t)test_rng_u64(rng);
    uint16_t u16 = (uint16_t)test_rng_u64(rng);
    int16_t i16 = (int16_t)-(int)(test_rng_u64(rng) & 0x7fff);
    uint32_t u32 = (uint32_t)test_rng_u64(rng) | 0x80000000u;
    int32_t i32 = -(int32_t)(test_rng_u64(rng) & 0x7fffffff);
    uint64_t u64 = test_rng_u64(rng) | (1ull << 63);
    int64_t i64 = -(int64_t)(test_rng_u64(rng) >> 2);
    float f32 = test_rng_normal(rng) * 1000;
    double f64 = (double)test_rng_normal(rng) * 1e300;
    uint8_t bl = 1;
    OK(rt_gguf_writer_set_scalar(w, "t.u8", RT_GGUF_UINT8, &u8, err));
    OK(rt_gguf_writer_set_scalar(w, "t.i8", RT_GGUF_INT8, &i8, err));
    OK(rt_gguf_writer_set_scalar(w, "t.u16", RT_GGUF_UINT16, &u16, err));
    OK(rt_gguf_writer_set_scalar(w, "t.i16", RT_GGUF_INT16, &i16, err));
    OK(rt_gguf_writer_set_u32(w, "t.u32", u32, err));
    OK(rt_gguf_writer_set_i32(w, "t.i32", i32, err));
    OK(rt_gguf_writer_set_u64(w, "t.u64", u64, err));
    OK(rt_gguf_writer_set_scalar(w, "t.i64", RT_GGUF_INT64, &i64, err));
    OK(rt_gguf_writer_set_f32(w, "t.f32", f32, err));
    OK(rt_gguf_writer_set_scalar(w, "t.f64", RT_GGUF_FLOAT64, &f64, err));
    OK(rt_gguf_writer_set_scalar(w, "t.bool", RT_GGUF_BOOL, &bl, err));
    OK(rt_gguf_writer_set_bool(w, "t.false", false, err));
    OK(rt_gguf_writer_set_str(w, "t.str", "h\xc3\xa9llo, w\xc3\xb6rld", err));
    OK(rt_gguf_writer_set_str(w, "t.empty", "", err));
    OK(rt_gguf_writer_set_u32(w, "general.alignment", 64, err));

    /* Arrays of every fixed-size type: 37 random elements each. */
    static const rt_gguf_vtype arr_types[] = {
        RT_GGUF_UINT8, RT_GGUF_INT8,  RT_GGUF_UINT16, RT_GGUF_INT16,  RT_GGUF_UINT32,
        RT_GGUF_INT32, RT_GGUF_FLOAT32, RT_GGUF_BOOL, RT_GGUF_UINT64, RT_GGUF_INT64,
        RT_GGUF_FLOAT64};
    enum { NA = sizeof arr_types / sizeof arr_types[0], AL = 37 };
    uint8_t arr[NA][AL * 8];
    char key[64];
    for (int a = 0; a < NA; a++) {
        for (int k = 0; k < AL * 8; k++)
            arr[a][k] = (uint8_t)test_rng_u64(rng);
        if (arr_types[a] == RT_GGUF_BOOL)
            for (int k = 0; k < AL; k++)
                arr[a][k] &= 1;
        if (arr_types[a] == RT_GGUF_FLOAT32 || arr_types[a] == RT_GGUF_FLOAT64)
            for (int k = 0; k < AL; k++) {
                if (arr_types[a] == RT_GGUF_FLOAT32) {
                    float v = test_rng_normal(rng);
                    memcpy(arr[a] + 4 * k, &v, 4);
                } else {
                    double v = test_rng_normal(rng);
                    memcpy(arr[a] + 8 * k, &v, 8);
                }
            }
        snprintf(key, sizeof key, "arr.%s", rt_gguf_vtype_name(arr_types[a]));
        OK(rt_gguf_writer_set_arr(w, key, arr_types[a], arr[a], AL, err));
    }
    OK(rt_gguf_writer_set_arr(w, "arr.empty", RT_GGUF_INT32, NULL, 0, err));
    const char *strs[] = {"alpha", "", "\xf0\x9f\x98\x80 emoji", "with\0nul"};
    const uint64_t lens[] = {5, 0, 10, 8};
    OK(rt_gguf_writer_set_arr_str(w, "arr.str", strs, lens, 4, err));

    /* A nested array: [[1u16, 2u16], [], [["x"]]] encoded by hand. */
    uint8_t nested[128];
    size_t nn = 0;
    const uint64_t enc[][2] = {
        {RT_GGUF_ARRAY, 4}, {3, 8},                              /* outer: 3 arrays */
        {RT_GGUF_UINT16, 4}, {2, 8}, {1, 2}, {2, 2},             /* [1, 2] */
        {RT_GGUF_INT8, 4}, {0, 8},                               /* [] */
        {RT_GGUF_ARRAY, 4}, {1, 8}, {RT_GGUF_STRING, 4}, {1, 8}, /* [["x"]] */
        {1, 8}, {'x', 1},
    };
    for (size_t i = 0; i < sizeof enc / sizeof enc[0]; i++) {
        memcpy(nested + nn, &enc[i][0], (size_t)enc[i][1]); /* little-endian host */
        nn += (size_t)enc[i][1];
    }
    OK(rt_gguf_writer_set_raw(w, "arr.nested", RT_GGUF_ARRAY, nested, nn, err));
    /* The raw setter validates: one byte short is rejected. */
    CHECK(rt_gguf_writer_set_raw(w, "arr.bad", RT_GGUF_ARRAY, nested, nn - 1, &e) ==
          LOUPE_ERR_INVALID);

    /* Tensors of every known type with random bytes. */
    tensor_case tc[] = {
        {"f32.3d", RT_TYPE_F32, 3, {5, 3, 2, 1}, NULL, 0},
        {"f16", RT_TYPE_F16, 2, {7, 3, 1, 1}, NULL, 0},
        {"bf16.4d", RT_TYPE_BF16, 4, {2, 3, 2, 2}, NULL, 0},
        {"q8_0", RT_TYPE_Q8_0, 2, {64, 3, 1, 1}, NULL, 0},
        {"q4_k", RT_TYPE_Q4_K, 2, {512, 2, 1, 1}, NULL, 0},
        {"q6_k", RT_TYPE_Q6_K, 1, {256, 1, 1, 1}, NULL, 0},
        {"q4_0", RT_TYPE_Q4_0, 1, {32, 1, 1, 1}, NULL, 0},
        {"q4_1", RT_TYPE_Q4_1, 1, {32, 1, 1, 1}, NULL, 0},
        {"q5_0", RT_TYPE_Q5_0, 1, {32, 1, 1, 1}, NULL, 0},
        {"q5_1", RT_TYPE_Q5_1, 1, {64, 1, 1, 1}, NULL, 0},
        {"q8_1", RT_TYPE_Q8_1, 1, {32, 1, 1, 1}, NULL, 0},
        {"q2_k", RT_TYPE_Q2_K, 1, {256, 1, 1, 1}, NULL, 0},
        {"q3_k", RT_TYPE_Q3_K, 1, {256, 1, 1, 1}, NULL, 0},
        {"q5_k", RT_TYPE_Q5_K, 1, {256, 1, 1, 1}, NULL, 0},
        {"q8_k", RT_TYPE_Q8_K, 1, {256, 1, 1, 1}, NULL, 0},
    };
    enum { NT = sizeof tc / sizeof tc[0] };
    for (int i = 0; i < NT; i++) {
        uint64_t ne = 1;
        for (uint32_t d = 0; d < tc[i].n_dims; d++)
            ne *= tc[i].ne[d];
        tc[i].n_bytes = ne / rt_type_block_elems(tc[i].type) * rt_type_block_bytes(tc[i].type);
        tc[i].data = malloc(tc[i].n_bytes);
        for (uint64_t k = 0; k < tc[i].n_bytes; k++)
            tc[i].data[k] = (uint8_t)test_rng_u64(rng);
        OK(rt_gguf_writer_add_tensor(w, tc[i].name, tc[i].type, tc[i].n_dims, tc[i].ne, err));
    }
    uint64_t total = rt_gguf_writer_total_bytes(w);
    /* Data in uneven pieces that cross tensor boundaries. */
    size_t all = 0;
    for (int i = 0; i < NT; i++)
        all += tc[i].n_bytes;
    uint8_t *cat = malloc(all), *p = cat;
    for (int i = 0; i < NT; i++) {
        memcpy(p, tc[i].data, tc[i].n_bytes);
        p += tc[i].n_bytes;
    }
    for (size_t off = 0; off < all;) {
        size_t k = 1 + test_rng_u64(rng) % 700;
        if (k > all - off)
            k = all - off;
        OK(rt_gguf_writer_write(w, cat + off, k, err));
        off += k;
    }
    free(cat);
    CHECK(rt_gguf_writer_set_u32(w, "late", 1, &e) == LOUPE_ERR_INVALID);
    CHECK(!file_exists(path)); /* nothing under the final name until finish */
    OK(rt_gguf_writer_finish(w, err));
    rt_gguf_writer_destroy(w);
    CHECK(file_exists(path));
    CHECK(temp_files_left() == 0);

    /* Read it all back. */
    rt_gguf *g = NULL;
    CHECK_MSG(rt_gguf_open(path, &g, &e) == LOUPE_OK, "%s", loupe_err_message(&e));
    if (!g)
        return;
    CHECK(rt_gguf_version(g) == 3);
    CHECK(rt_gguf_alignment(g) == 64);
    CHECK(rt_gguf_file_size(g) == total);
    CHECK(rt_gguf_n_kv(g) == 15 + NA + 3);
    CHECK(strcmp(rt_gguf_path(g), path) == 0);
    uint64_t vu;
    int64_t vi;
    double vd;
    bool vb;
    rt_gguf_str s;
    OK(rt_gguf_get_u64(g, "t.u8", &vu, err));
    CHECK(vu == u8);
    OK(rt_gguf_get_i64(g, "t.i8", &vi, err));
    CHECK(vi == i8);
    OK(rt_gguf_get_u64(g, "t.u16", &vu, err));
    CHECK(vu == u16);
    OK(rt_gguf_get_i64(g, "t.i16", &vi, err));
    CHECK(vi == i16);
    OK(rt_gguf_get_u64(g, "t.u32", &vu, err));
    CHECK(vu == u32);
    OK(rt_gguf_get_i64(g, "t.i32", &vi, err));
    CHECK(vi == i32);
    OK(rt_gguf_get_u64(g, "t.u64", &vu, err));
    CHECK(vu == u64);
    OK(rt_gguf_get_i64(g, "t.i64", &vi, err));
    CHECK(vi == i64);
    OK(rt_gguf_get_f64(g, "t.f32", &vd, err));
    CHECK((float)vd == f32);
    OK(rt_gguf_get_f64(g, "t.f64", &vd, err));
    CHECK(vd == f64);
    OK(rt_gguf_get_f64(g, "t.u16", &vd, err)); /* integers read as numbers too */
    CHECK(vd == (double)u16);
    OK(rt_gguf_get_bool(g, "t.bool", &vb, err));
    CHECK(vb);
    OK(rt_gguf_get_bool(g, "t.false", &vb, err));
    CHECK(!vb);
    OK(rt_gguf_get_str(g, "t.str", &s, err));
    CHECK(s.len == 14 && !memcmp(s.ptr, "h\xc3\xa9llo, w\xc3\xb6rld", 14));
    OK(rt_gguf_get_str(g, "t.empty", &s, err));
    CHECK(s.len == 0);
    /* Every key comes back in order with its type. */
    CHECK(rt_gguf_kv_type(g, 0) == RT_GGUF_UINT8 && rt_gguf_kv_type(g, 12) == RT_GGUF_STRING);
    rt_gguf_str k0 = rt_gguf_key(g, 0);
    CHECK(k0.len == 4 && !memcmp(k0.ptr, "t.u8", 4));
    CHECK(rt_gguf_key(g, 999).len == 0);

    /* Failures of the getters. */
    CHECK(rt_gguf_get_u64(g, "t.i32", &vu, &e) == LOUPE_ERR_RANGE); /* negative */
    CHECK(strstr(e.msg, "t.i32") != NULL);
    CHECK(rt_gguf_get_i64(g, "t.u64", &vi, &e) == LOUPE_ERR_RANGE);  /* > INT64_MAX */
    CHECK(rt_gguf_get_u64(g, "t.str", &vu, &e) == LOUPE_ERR_FORMAT);
    CHECK(strstr(e.msg, "'t.str' is a string, expected an integer") != NULL);
    CHECK(rt_gguf_get_str(g, "t.u8", &s, &e) == LOUPE_ERR_FORMAT);
    CHECK(rt_gguf_get_bool(g, "t.u8", &vb, &e) == LOUPE_ERR_FORMAT);
    CHECK(rt_gguf_get_f64(g, "t.str", &vd, &e) == LOUPE_ERR_FORMAT);
    CHECK(rt_gguf_get_u64(g, "nope", &vu, &e) == LOUPE_ERR_NOT_FOUND);
    CHECK(strstr(e.msg, "key 'nope' is missing") && strstr(e.msg, path));

    /* Arrays. */
    for (int a = 0; a < NA; a++) {
        snprintf(key, sizeof key, "arr.%s", rt_gguf_vtype_name(arr_types[a]));
        int64_t ki = rt_gguf_find_key(g, key);
        CHECK(ki >= 0);
        CHECK(rt_gguf_kv_type(g, ki) == RT_GGUF_ARRAY);
        CHECK(rt_gguf_arr_type(g, ki) == arr_types[a]);
        CHECK(rt_gguf_arr_len(g, ki) == AL);
        size_t es = 0;
        const void *d = rt_gguf_arr_data(g, ki, &es);
        CHECK(d && es >= 1 && memcmp(d, arr[a], AL * es) == 0);
        /* Element getters agree with the raw bytes. */
        for (uint64_t k = 0; k < AL; k++) {
            double want;
            switch (arr_types[a]) {
            case RT_GGUF_UINT8: want = arr[a][k]; break;
            case RT_GGUF_INT8: want = (int8_t)arr[a][k]; break;
            case RT_GGUF_BOOL: want = arr[a][k]; break;
            case RT_GGUF_UINT16: { uint16_t v; memcpy(&v, arr[a] + 2 * k, 2); want = v; break; }
            case RT_GGUF_INT16: { int16_t v; memcpy(&v, arr[a] + 2 * k, 2); want = v; break; }
            case RT_GGUF_UINT32: { uint32_t v; memcpy(&v, arr[a] + 4 * k, 4); want = v; break; }
            case RT_GGUF_INT32: { int32_t v; memcpy(&v, arr[a] + 4 * k, 4); want = v; break; }
            case RT_GGUF_FLOAT32: { float v; memcpy(&v, arr[a] + 4 * k, 4); want = v; break; }
            case RT_GGUF_UINT64: { uint64_t v; memcpy(&v, arr[a] + 8 * k, 8); want = (double)v; break; }
            case RT_GGUF_INT64: { int64_t v; memcpy(&v, arr[a] + 8 * k, 8); want = (double)v; break; }
            default: { double v; memcpy(&v, arr[a] + 8 * k, 8); want = v; break; }
            }
            if (arr_types[a] != RT_GGUF_BOOL) {
                OK(rt_gguf_arr_f64(g, ki, k, &vd, err));
                CHECK(vd == want);
            }
            if (arr_types[a] != RT_GGUF_FLOAT32 && arr_types[a] != RT_GGUF_FLOAT64 &&
                arr_types[a] != RT_GGUF_UINT64) {
                OK(rt_gguf_arr_i64(g, ki, k, &vi, err));
                CHECK((double)vi == want);
            }
        }
        CHECK(rt_gguf_arr_i64(g, ki, AL, &vi, &e) == LOUPE_ERR_RANGE);
    }
    int64_t ke = rt_gguf_find_key(g, "arr.empty");
    CHECK(rt_gguf_arr_len(g, ke) == 0 && rt_gguf_arr_type(g, ke) == RT_GGUF_INT32);
    CHECK(rt_gguf_arr_i64(g, ke, 0, &vi, &e) == LOUPE_ERR_RANGE);
    int64_t ks = rt_gguf_find_key(g, "arr.str");
    CHECK(rt_gguf_arr_len(g, ks) == 4 && rt_gguf_arr_type(g, ks) == RT_GGUF_STRING);
    for (uint64_t k = 0; k < 4; k++) {
        OK(rt_gguf_arr_str(g, ks, k, &s, err));
        CHECK(s.len == lens[k] && !memcmp(s.ptr, strs[k], lens[k]));
    }
    size_t es;
    CHECK(rt_gguf_arr_data(g, ks, &es) == NULL && es == 0);
    CHECK(rt_gguf_arr_i64(g, ks, 0, &vi, &e) == LOUPE_ERR_FORMAT);
    int64_t kn = rt_gguf_find_key(g, "arr.nested");
    CHECK(rt_gguf_arr_type(g, kn) == RT_GGUF_ARRAY && rt_gguf_arr_len(g, kn) == 3);
    uint64_t raw_n = 0;
    const void *raw = rt_gguf_kv_raw(g, kn, &raw_n);
    CHECK(raw_n == nn && raw && memcmp(raw, nested, nn) == 0);
    CHECK(rt_gguf_arr_i64(g, kn, 0, &vi, &e) == LOUPE_ERR_FORMAT);
    CHECK(rt_gguf_arr_str(g, kn, 0, &s, &e) == LOUPE_ERR_FORMAT);
    CHECK(rt_gguf_arr_i64(g, rt_gguf_find_key(g, "t.u8"), 0, &vi, &e) == LOUPE_ERR_FORMAT);

    /* Tensors. */
    CHECK(rt_gguf_n_tensors(g) == NT);
    for (int i = 0; i < NT; i++) {
        const rt_gguf_tensor *t = rt_gguf_tensor_at(g, i);
        CHECK(t && rt_gguf_find_tensor(g, tc[i].name) == t);
        if (!t)
            continue;
        CHECK(strcmp(t->name, tc[i].name) == 0 && t->type == tc[i].type);
        CHECK(t->n_dims == tc[i].n_dims && t->n_bytes == tc[i].n_bytes);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == tc[i].ne[d]);
        CHECK(t->offset % 64 == 0);
        CHECK((uintptr_t)t->data % 64 == 0); /* the mapping is page-aligned */
        CHECK(memcmp(t->data, tc[i].data, tc[i].n_bytes) == 0);
        free(tc[i].data);
    }
    CHECK(rt_gguf_find_tensor(g, "nope") == NULL && rt_gguf_tensor_at(g, NT) == NULL);
    rt_gguf_close(g);
}

static void test_writer_errors(test_rng *rng)
{
    loupe_err e = {0};
    rt_gguf_writer *w = NULL;
    CHECK(rt_gguf_writer_create(path, &w, &e) == LOUPE_OK);
    if (!w)
        return;
    uint64_t ne[2] = {32, 2};
    CHECK(rt_gguf_writer_set_u32(w, "a", 1, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_str(w, "a", "x", &e) == LOUPE_ERR_INVALID);
    CHECK(strstr(e.msg, "'a' is set twice") != NULL);
    CHECK(rt_gguf_writer_set_u32(w, "general.alignment", 48, &e) == LOUPE_ERR_INVALID);
    CHECK(rt_gguf_writer_set_scalar(w, "b", RT_GGUF_BOOL, "\x02", &e) == LOUPE_ERR_INVALID);
    CHECK(rt_gguf_writer_set_scalar(w, "b", RT_GGUF_STRING, "x", &e) == LOUPE_ERR_INVALID);
    CHECK(rt_gguf_writer_add_tensor(w, "t", RT_TYPE_Q8_0, 2, ne, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_add_tensor(w, "t", RT_TYPE_F32, 2, ne, &e) == LOUPE_ERR_INVALID);
    ne[0] = 33;
    CHECK(rt_gguf_writer_add_tensor(w, "u", RT_TYPE_Q8_0, 2, ne, &e) == LOUPE_ERR_INVALID);
    CHECK(strstr(e.msg, "not a multiple of the Q8_0 block size 32") != NULL);
    CHECK(rt_gguf_writer_add_tensor(w, "u", RT_TYPE_F32, 5, ne, &e) == LOUPE_ERR_INVALID);
    CHECK(rt_gguf_writer_add_tensor(w, "u", (rt_type)4, 1, ne, &e) == LOUPE_ERR_INVALID);
    ne[0] = 0;
    CHECK(rt_gguf_writer_add_tensor(w, "u", RT_TYPE_F32, 1, ne, &e) == LOUPE_ERR_INVALID);
    /* Too little data: finish names the tensor. */
    uint8_t buf[100];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)test_rng_u64(rng);
    CHECK(rt_gguf_writer_write(w, buf, 50, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_add_tensor(w, "v", RT_TYPE_F32, 1, ne, &e) == LOUPE_ERR_INVALID);
    CHECK(rt_gguf_writer_finish(w, &e) == LOUPE_ERR_INVALID);
    CHECK(strstr(e.msg, "tensor 't' got 50 of its 68 bytes") != NULL);
    /* Too much data. */
    CHECK(rt_gguf_writer_write(w, buf, 19, &e) == LOUPE_ERR_INVALID);
    CHECK(strstr(e.msg, "past the last tensor") != NULL);
    rt_gguf_writer_destroy(w);
    CHECK(!file_exists(path));
    CHECK(temp_files_left() == 0);
    CHECK(rt_gguf_writer_create("/nonexistent-dir/x.gguf", &w, &e) == LOUPE_ERR_IO);
    CHECK(w == NULL && strstr(e.msg, "/nonexistent-dir/x.gguf: cannot create") != NULL);
    rt_gguf_writer_destroy(NULL);

    /* A file with metadata only (no tensors) round-trips and is tiny. */
    CHECK(rt_gguf_writer_create(path, &w, &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_set_str(w, "general.name", "x", &e) == LOUPE_OK);
    CHECK(rt_gguf_writer_finish(w, &e) == LOUPE_OK);
    rt_gguf_writer_destroy(w);
    rt_gguf *g = NULL;
    CHECK(rt_gguf_open(path, &g, &e) == LOUPE_OK);
    CHECK(g && rt_gguf_n_tensors(g) == 0 && rt_gguf_n_kv(g) == 1 && rt_gguf_alignment(g) == 32);
    CHECK(g && rt_gguf_file_size(g) == 24 + 8 + 12 + 4 + 8 + 1);
    rt_gguf_close(g);
    unlink(path);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    snprintf(path, sizeof path, "%s/test_gguf_rw-%d.gguf", test_tmpdir(), (int)getpid());
    test_round_trip(&rng);
    unlink(path);
    test_writer_errors(&rng);
    return test_summary("test_gguf_rw");
}
