/*
 * Part of runtime.h: GGUF model files — tensor types and dequantisation, the memory-mapped reader,
 * the streaming writer, and the model hyperparameters read from metadata.
 *
 * Reader invariants: after rt_gguf_open() succeeds every key, string, array and tensor has been
 * range-checked against the file size, so accessors never read outside the mapping; tensor data
 * pointers point into the read-only mapping and live until rt_gguf_close().
 */
#ifndef LOUPE_RT_GGUF_H
#define LOUPE_RT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anns/anns.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Tensor types (ggml's numbering, as stored in GGUF) --------------------------------- */

typedef enum {
    RT_TYPE_F32 = 0,
    RT_TYPE_F16 = 1,
    RT_TYPE_Q4_0 = 2,
    RT_TYPE_Q4_1 = 3,
    RT_TYPE_Q5_0 = 6,
    RT_TYPE_Q5_1 = 7,
    RT_TYPE_Q8_0 = 8,
    RT_TYPE_Q8_1 = 9,
    RT_TYPE_Q2_K = 10,
    RT_TYPE_Q3_K = 11,
    RT_TYPE_Q4_K = 12,
    RT_TYPE_Q5_K = 13,
    RT_TYPE_Q6_K = 14,
    RT_TYPE_Q8_K = 15,
    RT_TYPE_BF16 = 30,
    RT_TYPE_COUNT_ = 40 /* upper bound on ids the reader will look up */
} rt_type;

/* "F32", "Q4_K", ...; "unknown" for ids loupe does not know. */
const char *rt_type_name(rt_type t);
/* Parses "f32", "F16", "bf16", "q8_0", "Q4_K", "q6_k" (case-insensitive); false if unknown. */
bool rt_type_parse(const char *name, rt_type *out);
/* True for the types loupe can compute with: F32, F16, BF16, Q8_0, Q4_K, Q6_K. Other known ids
 * may appear in a file (model-info lists them) but cannot be dequantised. */
bool rt_type_supported(rt_type t);
/* Elements per block (1 for F32/F16/BF16, 32 for Q8_0, 256 for K-quants); 0 if unknown. */
size_t rt_type_block_elems(rt_type t);
/* Bytes per block; 0 if unknown. */
size_t rt_type_block_bytes(rt_type t);
/* Bytes of a row of n elements; n must be a multiple of the block size. */
size_t rt_type_row_bytes(rt_type t, size_t n);

/* Dequantises n elements (a multiple of the block size) from `src` (stored type t) into `dst`. */
void rt_dequantize(rt_type t, const void *src, float *dst, size_t n);
/* Quantises n floats into type t (F32, F16, BF16, Q8_0, Q4_K, Q6_K); for the writer/mkmodel.
 * n must be a multiple of the block size. Returns LOUPE_ERR_UNSUPPORTED for other types. */
loupe_status rt_quantize(rt_type t, const float *src, void *dst, size_t n);

/* Scalar conversions used everywhere. */
float rt_f16_to_f32(uint16_t h);
uint16_t rt_f32_to_f16(float f);
float rt_bf16_to_f32(uint16_t h);
uint16_t rt_f32_to_bf16(float f); /* round to nearest even */

/* ---- Metadata values -------------------------------------------------------------------- */

typedef enum {
    RT_GGUF_UINT8 = 0,
    RT_GGUF_INT8 = 1,
    RT_GGUF_UINT16 = 2,
    RT_GGUF_INT16 = 3,
    RT_GGUF_UINT32 = 4,
    RT_GGUF_INT32 = 5,
    RT_GGUF_FLOAT32 = 6,
    RT_GGUF_BOOL = 7,
    RT_GGUF_STRING = 8,
    RT_GGUF_ARRAY = 9,
    RT_GGUF_UINT64 = 10,
    RT_GGUF_INT64 = 11,
    RT_GGUF_FLOAT64 = 12,
} rt_gguf_vtype;

const char *rt_gguf_vtype_name(rt_gguf_vtype t);

/* A string inside the mapping: NOT NUL-terminated. */
typedef struct {
    const char *ptr;
    uint64_t len;
} rt_gguf_str;

/* ---- Reader ----------------------------------------------------------------------------- */

typedef struct rt_gguf rt_gguf;

typedef struct {
    const char *name;     /* NUL-terminated copy owned by the rt_gguf */
    rt_type type;
    uint32_t n_dims;      /* 1..4 */
    uint64_t ne[4];       /* elements per dimension, ne[0] = row length; unused dims are 1 */
    uint64_t n_elems;
    uint64_t offset;      /* from the start of the data section */
    uint64_t n_bytes;
    const void *data;     /* into the mapping */
} rt_gguf_tensor;

/* Opens and validates `path` (memory-mapped, read-only). On failure *out is NULL and err names
 * the file and the problem. Free with rt_gguf_close(). */
loupe_status rt_gguf_open(const char *path, rt_gguf **out, loupe_err *err);
/* Same over a caller-owned buffer (used by the fuzzer and tests); `buf` must outlive the rt_gguf.
 * `name` is used in error messages. */
loupe_status rt_gguf_open_buffer(const void *buf, size_t size, const char *name, rt_gguf **out,
                                 loupe_err *err);
void rt_gguf_close(rt_gguf *g); /* NULL is fine */

uint32_t rt_gguf_version(const rt_gguf *g);
const char *rt_gguf_path(const rt_gguf *g);
uint64_t rt_gguf_file_size(const rt_gguf *g);
uint32_t rt_gguf_alignment(const rt_gguf *g);

/* Metadata: keys are indexed 0..n_kv-1 in file order. */
int64_t rt_gguf_n_kv(const rt_gguf *g);
int64_t rt_gguf_find_key(const rt_gguf *g, const char *key); /* -1 if absent */
rt_gguf_str rt_gguf_key(const rt_gguf *g, int64_t i);
rt_gguf_vtype rt_gguf_kv_type(const rt_gguf *g, int64_t i);
/* For arrays: the element type and count (nested arrays report RT_GGUF_ARRAY). */
rt_gguf_vtype rt_gguf_arr_type(const rt_gguf *g, int64_t i);
uint64_t rt_gguf_arr_len(const rt_gguf *g, int64_t i);

/* Typed getters by key, converting between integer widths where the value fits; they fail with a
 * sentence naming the key when the key is missing, has another type, or does not fit. */
loupe_status rt_gguf_get_u64(const rt_gguf *g, const char *key, uint64_t *out, loupe_err *err);
loupe_status rt_gguf_get_i64(const rt_gguf *g, const char *key, int64_t *out, loupe_err *err);
loupe_status rt_gguf_get_f64(const rt_gguf *g, const char *key, double *out, loupe_err *err);
loupe_status rt_gguf_get_bool(const rt_gguf *g, const char *key, bool *out, loupe_err *err);
loupe_status rt_gguf_get_str(const rt_gguf *g, const char *key, rt_gguf_str *out, loupe_err *err);

/* Array elements by key index and element index (bounds-checked; scalar arrays of any integer
 * or float width convert). For string arrays use rt_gguf_arr_str. */
loupe_status rt_gguf_arr_i64(const rt_gguf *g, int64_t kv, uint64_t idx, int64_t *out,
                             loupe_err *err);
loupe_status rt_gguf_arr_f64(const rt_gguf *g, int64_t kv, uint64_t idx, double *out,
                             loupe_err *err);
loupe_status rt_gguf_arr_str(const rt_gguf *g, int64_t kv, uint64_t idx, rt_gguf_str *out,
                             loupe_err *err);
/* Raw data of a scalar array of fixed-size elements (e.g. int32 token types): pointer into the
 * mapping (may be unaligned: memcpy from it) and element size; NULL for string/nested arrays. */
const void *rt_gguf_arr_data(const rt_gguf *g, int64_t kv, size_t *elem_size);

/* The encoded bytes of key i's value as stored in the file (for arrays: element type, count and
 * elements, nested arrays included), so a value can be copied to a writer with
 * rt_gguf_writer_set_raw(); NULL and 0 bytes for a bad index. */
const void *rt_gguf_kv_raw(const rt_gguf *g, int64_t i, uint64_t *n_bytes);

/* Tensors. */
int64_t rt_gguf_n_tensors(const rt_gguf *g);
/* Offset of the data section from the start of the file (tensor offsets are relative to it). */
uint64_t rt_gguf_data_offset(const rt_gguf *g);
const rt_gguf_tensor *rt_gguf_tensor_at(const rt_gguf *g, int64_t i);
const rt_gguf_tensor *rt_gguf_find_tensor(const rt_gguf *g, const char *name); /* NULL if absent */

/* ---- Writer (streaming) ----------------------------------------------------------------- */
/*
 * Usage: create → set metadata → add every tensor's name/type/shape → write each tensor's data in
 * the order added (in as many rt_gguf_writer_write calls as you like) → finish. Data is streamed to
 * disk, so a 16 GB file needs no 16 GB of RAM. The file is written under a temporary name and
 * renamed by finish(); destroy() without finish() removes the temporary file. Writes GGUF v3.
 */
typedef struct rt_gguf_writer rt_gguf_writer;

loupe_status rt_gguf_writer_create(const char *path, rt_gguf_writer **out, loupe_err *err);
void rt_gguf_writer_destroy(rt_gguf_writer *w); /* NULL is fine; discards an unfinished file */

loupe_status rt_gguf_writer_set_u32(rt_gguf_writer *w, const char *key, uint32_t v, loupe_err *err);
loupe_status rt_gguf_writer_set_i32(rt_gguf_writer *w, const char *key, int32_t v, loupe_err *err);
loupe_status rt_gguf_writer_set_u64(rt_gguf_writer *w, const char *key, uint64_t v, loupe_err *err);
loupe_status rt_gguf_writer_set_f32(rt_gguf_writer *w, const char *key, float v, loupe_err *err);
loupe_status rt_gguf_writer_set_bool(rt_gguf_writer *w, const char *key, bool v, loupe_err *err);
loupe_status rt_gguf_writer_set_str(rt_gguf_writer *w, const char *key, const char *v,
                                    loupe_err *err);
/* Arrays of fixed-size scalars (type is the element type; data holds n elements). */
loupe_status rt_gguf_writer_set_arr(rt_gguf_writer *w, const char *key, rt_gguf_vtype type,
                                    const void *data, uint64_t n, loupe_err *err);
/* Arrays of strings (each NUL-terminated, or with lengths if `lens` is non-NULL). */
loupe_status rt_gguf_writer_set_arr_str(rt_gguf_writer *w, const char *key,
                                        const char *const *strs, const uint64_t *lens,
                                        uint64_t n, loupe_err *err);

/* A scalar of any fixed-size type (`v` points at one value of that type; bools are one byte). */
loupe_status rt_gguf_writer_set_scalar(rt_gguf_writer *w, const char *key, rt_gguf_vtype type,
                                       const void *v, loupe_err *err);
/* A value already encoded as GGUF stores it (as rt_gguf_kv_raw returns it): the way to write
 * nested arrays or copy a key from another file. The encoding is validated. */
loupe_status rt_gguf_writer_set_raw(rt_gguf_writer *w, const char *key, rt_gguf_vtype type,
                                    const void *bytes, uint64_t n_bytes, loupe_err *err);
/* Setting general.alignment (any integer type, a power of two) changes the writer's alignment.
 * Keys and tensor names must be unique; metadata and tensors can only be added before the first
 * rt_gguf_writer_write(). */

/* Total bytes the finished file will have (known once all tensors are added). */
uint64_t rt_gguf_writer_total_bytes(const rt_gguf_writer *w);
/* Bytes written so far (header and padding included), for progress reports. */
uint64_t rt_gguf_writer_bytes_written(const rt_gguf_writer *w);

loupe_status rt_gguf_writer_add_tensor(rt_gguf_writer *w, const char *name, rt_type type,
                                       uint32_t n_dims, const uint64_t *ne, loupe_err *err);
/* Appends bytes to the current tensor's data (tensors in the order added); moves on to the next
 * tensor when the current one is complete, padding to the alignment. */
loupe_status rt_gguf_writer_write(rt_gguf_writer *w, const void *data, size_t n, loupe_err *err);
/* Checks every tensor was fully written, flushes, fsyncs and renames into place. */
loupe_status rt_gguf_writer_finish(rt_gguf_writer *w, loupe_err *err);

/* ---- Model hyperparameters -------------------------------------------------------------- */

typedef enum { RT_ARCH_LLAMA, RT_ARCH_QWEN2 } rt_arch;
typedef enum { RT_ROPE_NORM, RT_ROPE_NEOX } rt_rope_style; /* interleaved pairs / halves */
typedef enum { RT_ROPE_SCALING_NONE, RT_ROPE_SCALING_LINEAR, RT_ROPE_SCALING_YARN } rt_rope_scaling;

typedef struct {
    rt_arch arch;
    char arch_name[32];
    char name[128];          /* general.name, may be empty */
    uint32_t n_layer;
    uint32_t n_embd;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;       /* n_embd / n_head unless attention.key_length says otherwise */
    uint32_t n_ff;
    uint32_t n_vocab;
    uint32_t n_ctx_train;
    float norm_eps;          /* attention.layer_norm_rms_epsilon */
    float rope_freq_base;
    uint32_t rope_dim;       /* rope.dimension_count (defaults to head_dim) */
    rt_rope_style rope_style;
    rt_rope_scaling rope_scaling;
    float rope_scale_factor; /* rope.scaling.factor (1 if none) */
    uint32_t rope_orig_ctx;  /* rope.scaling.original_context_length */
    float yarn_ext_factor;   /* defaults per llama.cpp when absent */
    float yarn_attn_factor;
    float yarn_beta_fast;
    float yarn_beta_slow;
    bool has_rope_freqs;     /* rope_freqs.weight present (Llama-3.1 style divisors) */
    bool tied_output;        /* output.weight absent: the embedding matrix is reused */
    bool has_qkv_bias;
} rt_hparams;

/* Reads and checks the hyperparameters of a `llama` or `qwen2` file (architecture named in
 * general.architecture; keys prefixed with it). Unsupported architectures fail clearly. */
loupe_status rt_hparams_load(const rt_gguf *g, rt_hparams *hp, loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_RT_GGUF_H */
