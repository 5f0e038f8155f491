/* libFuzzer target for the GGUF reader: any input either opens (and then every accessor, the
 * hyperparameters and the dequantisation of each supported tensor's first rows stay inside the
 * buffer) or fails with a message naming the buffer. Built with -DLOUPE_FUZZ=ON under clang with
 * ASan and UBSan; seeds come from gguf_make_corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const rt_gguf *g)
{
    volatile double sink = 0;
    for (int64_t i = 0; i < rt_gguf_n_kv(g); i++) {
        rt_gguf_str k = rt_gguf_key(g, i);
        char key[256];
        size_t n = k.len < sizeof key - 1 ? (size_t)k.len : sizeof key - 1;
        memcpy(key, k.ptr, n);
        key[n] = '\0';
        uint64_t u;
        int64_t s;
        double d;
        bool b;
        rt_gguf_str str;
        if (rt_gguf_get_u64(g, key, &u, NULL) == LOUPE_OK) sink += (double)u;
        if (rt_gguf_get_i64(g, key, &s, NULL) == LOUPE_OK) sink += (double)s;
        if (rt_gguf_get_f64(g, key, &d, NULL) == LOUPE_OK) sink += d;
        if (rt_gguf_get_bool(g, key, &b, NULL) == LOUPE_OK) sink += b;
        if (rt_gguf_get_str(g, key, &str, NULL) == LOUPE_OK && str.len) sink += str.ptr[str.len - 1];
        uint64_t raw_n;
        const uint8_t *raw = rt_gguf_kv_raw(g, i, &raw_n);
        if (raw && raw_n) sink += raw[raw_n - 1];
        uint64_t len = rt_gguf_arr_len(g, i);
        for (uint64_t j = 0; j < len; j += 1 + len / 16) {
            if (rt_gguf_arr_i64(g, i, j, &s, NULL) == LOUPE_OK) sink += (double)s;
            if (rt_gguf_arr_f64(g, i, j, &d, NULL) == LOUPE_OK) sink += d;
            if (rt_gguf_arr_str(g, i, j, &str, NULL) == LOUPE_OK && str.len)
                sink += str.ptr[str.len - 1];
        }
        size_t es;
        const uint8_t *ad = rt_gguf_arr_data(g, i, &es);
        if (ad && len) sink += ad[len * es - 1];
    }
    float row[4096];
    for (int64_t i = 0; i < rt_gguf_n_tensors(g); i++) {
        const rt_gguf_tensor *t = rt_gguf_tensor_at(g, i);
        if (rt_gguf_find_tensor(g, t->name) != t)
            abort(); /* names are unique, so lookup finds this very tensor */
        const uint8_t *p = t->data;
        sink += p[t->n_bytes - 1];
        if (!rt_type_supported(t->type))
            continue;
        size_t rb = rt_type_row_bytes(t->type, (size_t)t->ne[0]);
        uint64_t rows = t->n_elems / t->ne[0];
        for (uint64_t r = 0; r < rows && r < 4 && t->ne[0] <= 4096; r++) {
            rt_dequantize(t->type, p + r * rb, row, (size_t)t->ne[0]);
            sink += row[0];
        }
    }
    rt_hparams hp;
    if (rt_hparams_load(g, &hp, NULL) == LOUPE_OK)
        sink += hp.n_layer;
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_gguf *g = NULL;
    loupe_err err = {0};
    loupe_status st = rt_gguf_open_buffer(data, size, "fuzz.gguf", &g, &err);
    if (st == LOUPE_OK) {
        walk(g);
        rt_gguf_close(g);
    } else if (g || strncmp(err.msg, "fuzz.gguf: ", 11) != 0) {
        abort(); /* a failure must leave no handle and name the file */
    }
    return 0;
}
