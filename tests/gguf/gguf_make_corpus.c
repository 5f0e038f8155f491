/* Writes the fuzzer's seed corpus into DIR: small valid GGUF files made by the real writer (a
 * tiny llama and qwen2 model with tokenizer keys, every metadata type, every tensor type), plus
 * v2 and nested-array variants. Run as a test so the corpus is always fresh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/runtime.h"

static int failures = 0;

static void check(loupe_status st, const loupe_err *e)
{
    if (st) {
        fprintf(stderr, "gguf_make_corpus: %s\n", loupe_err_message(e));
        failures++;
    }
}

/* A model with `layers` layers of width 32 (F32 except one Q8_0 matrix) and a 300-token vocab. */
static void write_model(const char *path, const char *arch, bool bias, rt_type wt)
{
    loupe_err e = {0};
    rt_gguf_writer *w = NULL;
    char key[96];
    check(rt_gguf_writer_create(path, &w, &e), &e);
    if (!w)
        return;
    check(rt_gguf_writer_set_str(w, "general.architecture", arch, &e), &e);
    const char *keys[] = {"block_count", "embedding_length", "attention.head_count",
                          "attention.head_count_kv", "feed_forward_length", "context_length"};
    const uint32_t vals[] = {1, 32, 2, 1, 32, 64};
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, keys[i]);
        check(rt_gguf_writer_set_u32(w, key, vals[i], &e), &e);
    }
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    check(rt_gguf_writer_set_f32(w, key, 1e-5f, &e), &e);
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    check(rt_gguf_writer_set_str(w, key, "linear", &e), &e);
    const char *toks[8] = {"a", "b", "<|eot_id|>", "\xc4\xa0the", "x", "y", "z", "w"};
    int32_t types[8] = {1, 1, 3, 1, 1, 1, 1, 1};
    check(rt_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", &e), &e);
    check(rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 8, &e), &e);
    check(rt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", RT_GGUF_INT32, types, 8, &e), &e);
    const char *merges[1] = {"a b"};
    check(rt_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 1, &e), &e);
    struct { const char *name; uint64_t ne0, ne1; bool weight; } t[] = {
        {"token_embd.weight", 32, 8, true}, {"output_norm.weight", 32, 1, false},
        {"blk.0.attn_norm.weight", 32, 1, false}, {"blk.0.attn_q.weight", 32, 32, true},
        {"blk.0.attn_k.weight", 32, 16, true}, {"blk.0.attn_v.weight", 32, 16, true},
        {"blk.0.attn_q.bias", 32, 1, false}, {"blk.0.attn_k.bias", 16, 1, false},
        {"blk.0.attn_v.bias", 16, 1, false}, {"blk.0.attn_output.weight", 32, 32, true},
        {"blk.0.ffn_norm.weight", 32, 1, false}, {"blk.0.ffn_gate.weight", 32, 32, true},
        {"blk.0.ffn_up.weight", 32, 32, true}, {"blk.0.ffn_down.weight", 32, 32, true},
    };
    int n = sizeof t / sizeof t[0];
    for (int i = 0; i < n; i++) {
        if (!bias && strstr(t[i].name, ".bias"))
            continue;
        uint64_t ne[2] = {t[i].ne0, t[i].ne1};
        check(rt_gguf_writer_add_tensor(w, t[i].name, t[i].weight ? wt : RT_TYPE_F32,
                                        t[i].ne1 > 1 ? 2 : 1, ne, &e), &e);
    }
    float x[32 * 32];
    uint8_t q[32 * 32 * 4];
    for (int i = 0; i < n; i++) {
        if (!bias && strstr(t[i].name, ".bias"))
            continue;
        size_t ne = (size_t)(t[i].ne0 * t[i].ne1);
        for (size_t k = 0; k < ne; k++)
            x[k] = (float)((k * 2654435761u) % 1000) / 1000.0f - 0.5f;
        rt_type ty = t[i].weight ? wt : RT_TYPE_F32;
        rt_quantize(ty, x, q, ne);
        check(rt_gguf_writer_write(w, q, rt_type_row_bytes(ty, (size_t)t[i].ne0) * t[i].ne1, &e),
              &e);
    }
    check(rt_gguf_writer_finish(w, &e), &e);
    rt_gguf_writer_destroy(w);
}

/* Metadata of every kind and one tensor of each type. */
static void write_kitchen_sink(const char *path)
{
    loupe_err e = {0};
    rt_gguf_writer *w = NULL;
    check(rt_gguf_writer_create(path, &w, &e), &e);
    if (!w)
        return;
    uint8_t b = 1;
    int64_t i64 = -5;
    double f64 = 2.5;
    check(rt_gguf_writer_set_u32(w, "general.alignment", 16, &e), &e);
    check(rt_gguf_writer_set_scalar(w, "b", RT_GGUF_BOOL, &b, &e), &e);
    check(rt_gguf_writer_set_scalar(w, "i64", RT_GGUF_INT64, &i64, &e), &e);
    check(rt_gguf_writer_set_scalar(w, "f64", RT_GGUF_FLOAT64, &f64, &e), &e);
    check(rt_gguf_writer_set_scalar(w, "u8", RT_GGUF_UINT8, &b, &e), &e);
    int16_t arr[4] = {1, -2, 3, -4};
    check(rt_gguf_writer_set_arr(w, "arr", RT_GGUF_INT16, arr, 4, &e), &e);
    /* A nested array [[9u32]]: outer type and count, then the inner type, count and value. */
    uint8_t nest2[32];
    size_t nn = 0;
    uint32_t t_arr = RT_GGUF_ARRAY, t_u32 = RT_GGUF_UINT32, nine = 9;
    uint64_t one = 1;
    memcpy(nest2 + nn, &t_arr, 4), nn += 4;
    memcpy(nest2 + nn, &one, 8), nn += 8;
    memcpy(nest2 + nn, &t_u32, 4), nn += 4;
    memcpy(nest2 + nn, &one, 8), nn += 8;
    memcpy(nest2 + nn, &nine, 4), nn += 4;
    check(rt_gguf_writer_set_raw(w, "nested", RT_GGUF_ARRAY, nest2, nn, &e), &e);
    const rt_type types[] = {RT_TYPE_F32, RT_TYPE_F16, RT_TYPE_BF16, RT_TYPE_Q8_0, RT_TYPE_Q4_K,
                             RT_TYPE_Q6_K, RT_TYPE_Q4_0, RT_TYPE_Q5_K};
    char name[16];
    for (int i = 0; i < 8; i++) {
        uint64_t ne[1] = {256};
        snprintf(name, sizeof name, "t%d", i);
        check(rt_gguf_writer_add_tensor(w, name, types[i], 1, ne, &e), &e);
    }
    uint8_t data[1024];
    for (int i = 0; i < 1024; i++)
        data[i] = (uint8_t)(i * 37);
    for (int i = 0; i < 8; i++)
        check(rt_gguf_writer_write(w, data, rt_type_row_bytes(types[i], 256), &e), &e);
    check(rt_gguf_writer_finish(w, &e), &e);
    rt_gguf_writer_destroy(w);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gguf_make_corpus DIR\n");
        return 2;
    }
    mkdir(argv[1], 0755);
    char path[1024];
    snprintf(path, sizeof path, "%s/llama.gguf", argv[1]);
    write_model(path, "llama", false, RT_TYPE_F32);
    snprintf(path, sizeof path, "%s/qwen2.gguf", argv[1]);
    write_model(path, "qwen2", true, RT_TYPE_Q8_0);
    snprintf(path, sizeof path, "%s/kitchen_sink.gguf", argv[1]);
    write_kitchen_sink(path);
    /* A v2 copy of the llama model (the formats only differ in the version field). */
    snprintf(path, sizeof path, "%s/llama.gguf", argv[1]);
    FILE *f = fopen(path, "rb");
    static uint8_t buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    if (n > 8) {
        buf[4] = 2;
        snprintf(path, sizeof path, "%s/llama_v2.gguf", argv[1]);
        f = fopen(path, "wb");
        if (!f || fwrite(buf, 1, n, f) != n)
            failures++;
        if (f)
            fclose(f);
    }
    if (!failures)
        fprintf(stderr, "gguf_make_corpus: wrote 4 seeds to %s\n", argv[1]);
    return failures ? 1 : 0;
}
