/*
 * Streaming GGUF v3 writer.
 *
 * State machine:  COLLECT ──first write()──► DATA ──finish()──► DONE
 *   COLLECT: metadata is encoded into an in-memory buffer and tensor infos are kept in a list
 *            (offsets assigned as tensors are added, each aligned);
 *   DATA:    the header (magic, counts, metadata, tensor infos, padding) has been written; bytes
 *            are appended to the current tensor and each tensor is padded to the alignment when
 *            complete, so the data section is written exactly once, in order;
 *   DONE:    flushed, fsynced and renamed from the temporary name into place.
 * Any I/O error moves the writer to a failed state where every call fails; destroy() removes the
 * temporary file unless finish() succeeded, so a crash or error never leaves a half-written file
 * under the final name. Memory use is the metadata plus one tensor-info entry per tensor.
 */
#include "runtime/runtime.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *name;
    rt_type type;
    uint32_t n_dims;
    uint64_t ne[4];   /* unused dims are 1 */
    uint64_t n_bytes;
    uint64_t offset;  /* from the start of the data section */
} w_tensor;

struct rt_gguf_writer {
    char *path;
    char *tmp_path;
    FILE *f;
    uint8_t *kv_buf;      /* (kv_len) encoded metadata */
    size_t kv_len, kv_cap;
    char **keys;          /* (n_kv) copies, for duplicate checks */
    uint64_t n_kv;
    w_tensor *tensors;    /* (n_tensors) */
    uint64_t n_tensors, tensors_cap;
    uint64_t data_bytes;  /* data section size so far, padded */
    uint32_t alignment;
    bool in_data, done, failed;
    uint64_t cur;         /* tensor being written */
    uint64_t cur_written; /* bytes of it written */
    uint64_t written;     /* bytes written to the file */
};

/* ==== Buffer helpers ======================================================================== */

static bool buf_put(rt_gguf_writer *w, const void *p, size_t n)
{
    if (n == 0)
        return true; /* p may be NULL for empty arrays */
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n)
            cap *= 2;
        uint8_t *nb = realloc(w->kv_buf, cap);
        if (!nb)
            return false;
        w->kv_buf = nb;
        w->kv_cap = cap;
    }
    memcpy(w->kv_buf + w->kv_len, p, n);
    w->kv_len += n;
    return true;
}

static bool buf_u32(rt_gguf_writer *w, uint32_t v) { return buf_put(w, &v, 4); }
static bool buf_u64(rt_gguf_writer *w, uint64_t v) { return buf_put(w, &v, 8); }

static bool buf_str(rt_gguf_writer *w, const char *s, uint64_t len)
{
    return buf_u64(w, len) && buf_put(w, s, (size_t)len);
}

static size_t scalar_size(rt_gguf_vtype t)
{
    switch (t) {
    case RT_GGUF_UINT8: case RT_GGUF_INT8: case RT_GGUF_BOOL: return 1;
    case RT_GGUF_UINT16: case RT_GGUF_INT16: return 2;
    case RT_GGUF_UINT32: case RT_GGUF_INT32: case RT_GGUF_FLOAT32: return 4;
    case RT_GGUF_UINT64: case RT_GGUF_INT64: case RT_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* ==== Create / destroy ====================================================================== */

loupe_status rt_gguf_writer_create(const char *path, rt_gguf_writer **out, loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    *out = NULL;
    rt_gguf_writer *w = calloc(1, sizeof *w);
    size_t n = strlen(path) + 16;
    if (!w || !(w->path = strdup(path)) || !(w->tmp_path = malloc(n))) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    w->alignment = 32;
    /* Same directory as the target, so rename() is atomic. */
    snprintf(w->tmp_path, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(w->tmp_path);
    if (fd < 0) {
        st = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(w->tmp_path);
        w->tmp_path = NULL;
        goto fail;
    }
    (void)fchmod(fd, 0644); /* mkstemp makes 0600; a model file is meant to be shared */
    w->f = fdopen(fd, "wb");
    if (!w->f) {
        st = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    setvbuf(w->f, NULL, _IOFBF, 1 << 20);
    *out = w;
    return LOUPE_OK;
fail:
    rt_gguf_writer_destroy(w);
    return st;
}

void rt_gguf_writer_destroy(rt_gguf_writer *w)
{
    if (!w)
        return;
    if (w->f)
        fclose(w->f);
    if (w->tmp_path && !w->done)
        unlink(w->tmp_path);
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w->kv_buf);
    free(w->tmp_path);
    free(w->path);
    free(w);
}

uint64_t rt_gguf_writer_total_bytes(const rt_gguf_writer *w)
{
    uint64_t header = 4 + 4 + 8 + 8 + w->kv_len;
    for (uint64_t i = 0; i < w->n_tensors; i++)
        header += 8 + strlen(w->tensors[i].name) + 4 + 8 * w->tensors[i].n_dims + 4 + 8;
    return (w->n_tensors ? align_up(header, w->alignment) : header) + w->data_bytes;
}

uint64_t rt_gguf_writer_bytes_written(const rt_gguf_writer *w) { return w->written; }

/* ==== Metadata ============================================================================== */

/* Common checks before adding a key; on success the key has been appended to kv_buf with its
 * type, and recorded for duplicate checks. */
static loupe_status begin_kv(rt_gguf_writer *w, const char *key, rt_gguf_vtype type,
                             loupe_err *err)
{
    if (w->failed || w->done)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: the writer has %s", w->path,
                          w->done ? "already finished" : "failed");
    if (w->in_data)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: key '%s' added after tensor data began (metadata comes first)",
                          w->path, key);
    if (!key || !*key)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: empty metadata key", w->path);
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key))
            return loupe_fail(err, LOUPE_ERR_INVALID, "%s: key '%s' is set twice", w->path, key);
    char **nk = realloc(w->keys, (w->n_kv + 1) * sizeof *nk);
    if (!nk)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", w->path);
    w->keys = nk;
    if (!(nk[w->n_kv] = strdup(key)))
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", w->path);
    if (!buf_str(w, key, strlen(key)) || !buf_u32(w, (uint32_t)type)) {
        free(nk[w->n_kv]);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", w->path);
    }
    w->n_kv++;
    return LOUPE_OK;
}

static loupe_status nomem(rt_gguf_writer *w, loupe_err *err)
{
    w->failed = true; /* kv_buf holds a half-encoded key now */
    return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory encoding metadata", w->path);
}

/* general.alignment set by the caller changes the writer's alignment: checked here, applied once
 * the key is stored. */
static loupe_status check_alignment(rt_gguf_writer *w, uint64_t v, bool neg, loupe_err *err)
{
    if (neg || v == 0 || (v & (v - 1)) || v > (1u << 31))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: general.alignment must be a power of two up to 2^31", w->path);
    if (w->n_tensors)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: general.alignment must be set before adding tensors", w->path);
    return LOUPE_OK;
}

loupe_status rt_gguf_writer_set_scalar(rt_gguf_writer *w, const char *key, rt_gguf_vtype type,
                                       const void *v, loupe_err *err)
{
    size_t sz = scalar_size(type);
    if (!sz)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: key '%s': %s is not a scalar type",
                          w->path, key, rt_gguf_vtype_name(type));
    if (type == RT_GGUF_BOOL && *(const uint8_t *)v > 1)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: key '%s': a bool must be 0 or 1", w->path,
                          key);
    bool is_align = !strcmp(key, "general.alignment");
    uint64_t u = 0;
    if (is_align && (type == RT_GGUF_UINT32 || type == RT_GGUF_UINT64 || type == RT_GGUF_INT32)) {
        bool neg = false;
        if (type == RT_GGUF_UINT32) {
            uint32_t x;
            memcpy(&x, v, 4);
            u = x;
        } else if (type == RT_GGUF_UINT64) {
            memcpy(&u, v, 8);
        } else {
            int32_t x;
            memcpy(&x, v, 4);
            neg = x < 0;
            u = neg ? 0 : (uint64_t)x;
        }
        loupe_status st = check_alignment(w, u, neg, err);
        if (st)
            return st;
    } else if (is_align) {
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: write general.alignment as uint32, uint64 or int32", w->path);
    }
    loupe_status st = begin_kv(w, key, type, err);
    if (st)
        return st;
    if (!buf_put(w, v, sz))
        return nomem(w, err);
    if (is_align)
        w->alignment = (uint32_t)u;
    return LOUPE_OK;
}

loupe_status rt_gguf_writer_set_u32(rt_gguf_writer *w, const char *key, uint32_t v, loupe_err *err)
{
    return rt_gguf_writer_set_scalar(w, key, RT_GGUF_UINT32, &v, err);
}

loupe_status rt_gguf_writer_set_i32(rt_gguf_writer *w, const char *key, int32_t v, loupe_err *err)
{
    return rt_gguf_writer_set_scalar(w, key, RT_GGUF_INT32, &v, err);
}

loupe_status rt_gguf_writer_set_u64(rt_gguf_writer *w, const char *key, uint64_t v, loupe_err *err)
{
    return rt_gguf_writer_set_scalar(w, key, RT_GGUF_UINT64, &v, err);
}

loupe_status rt_gguf_writer_set_f32(rt_gguf_writer *w, const char *key, float v, loupe_err *err)
{
    return rt_gguf_writer_set_scalar(w, key, RT_GGUF_FLOAT32, &v, err);
}

loupe_status rt_gguf_writer_set_bool(rt_gguf_writer *w, const char *key, bool v, loupe_err *err)
{
    uint8_t b = v ? 1 : 0;
    return rt_gguf_writer_set_scalar(w, key, RT_GGUF_BOOL, &b, err);
}

loupe_status rt_gguf_writer_set_str(rt_gguf_writer *w, const char *key, const char *v,
                                    loupe_err *err)
{
    loupe_status st = begin_kv(w, key, RT_GGUF_STRING, err);
    if (st)
        return st;
    return buf_str(w, v, strlen(v)) ? LOUPE_OK : nomem(w, err);
}

loupe_status rt_gguf_writer_set_arr(rt_gguf_writer *w, const char *key, rt_gguf_vtype type,
                                    const void *data, uint64_t n, loupe_err *err)
{
    size_t sz = scalar_size(type);
    if (!sz)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: key '%s': arrays of %s need rt_gguf_writer_set_arr_str/set_raw",
                          w->path, key, rt_gguf_vtype_name(type));
    if (n > SIZE_MAX / sz)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: key '%s': array too large", w->path, key);
    if (type == RT_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((const uint8_t *)data)[i] > 1)
                return loupe_fail(err, LOUPE_ERR_INVALID,
                                  "%s: key '%s': element %" PRIu64 " is a bool other than 0/1",
                                  w->path, key, i);
    loupe_status st = begin_kv(w, key, RT_GGUF_ARRAY, err);
    if (st)
        return st;
    if (!buf_u32(w, (uint32_t)type) || !buf_u64(w, n) || !buf_put(w, data, (size_t)(n * sz)))
        return nomem(w, err);
    return LOUPE_OK;
}

loupe_status rt_gguf_writer_set_arr_str(rt_gguf_writer *w, const char *key,
                                        const char *const *strs, const uint64_t *lens,
                                        uint64_t n, loupe_err *err)
{
    loupe_status st = begin_kv(w, key, RT_GGUF_ARRAY, err);
    if (st)
        return st;
    if (!buf_u32(w, RT_GGUF_STRING) || !buf_u64(w, n))
        return nomem(w, err);
    for (uint64_t i = 0; i < n; i++)
        if (!buf_str(w, strs[i], lens ? lens[i] : strlen(strs[i])))
            return nomem(w, err);
    return LOUPE_OK;
}

loupe_status rt_gguf_writer_set_raw(rt_gguf_writer *w, const char *key, rt_gguf_vtype type,
                                    const void *bytes, uint64_t n_bytes, loupe_err *err)
{
    /* Validated by the real reader: a one-key GGUF in memory; the reader ignores bytes after the
     * metadata of a file without tensors, so the consumed size must equal n_bytes too. */
    loupe_status st;
    if (n_bytes > SIZE_MAX - 64)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: key '%s': value too large", w->path, key);
    uint64_t total = 4 + 4 + 8 + 8 + 8 + 1 + 4 + n_bytes;
    uint8_t *tmp = malloc((size_t)total);
    if (!tmp)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", w->path);
    uint32_t ver = 3, t = (uint32_t)type;
    uint64_t zero = 0, one = 1, klen = 1;
    memcpy(tmp, "GGUF", 4);
    memcpy(tmp + 4, &ver, 4);
    memcpy(tmp + 8, &zero, 8);
    memcpy(tmp + 16, &one, 8);
    memcpy(tmp + 24, &klen, 8);
    tmp[32] = 'k';
    memcpy(tmp + 33, &t, 4);
    memcpy(tmp + 37, bytes, (size_t)n_bytes);
    rt_gguf *g = NULL;
    loupe_err e2 = {0};
    st = rt_gguf_open_buffer(tmp, (size_t)total, "value", &g, &e2);
    uint64_t used = 0;
    if (!st)
        rt_gguf_kv_raw(g, 0, &used);
    rt_gguf_close(g);
    free(tmp);
    if (st || used != n_bytes)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: key '%s': not a valid encoded %s (%s)",
                          w->path, key, rt_gguf_vtype_name(type),
                          st ? loupe_err_message(&e2) : "trailing bytes");
    if (!strcmp(key, "general.alignment"))
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: set general.alignment with set_u32",
                          w->path);
    if ((st = begin_kv(w, key, type, err)))
        return st;
    return buf_put(w, bytes, (size_t)n_bytes) ? LOUPE_OK : nomem(w, err);
}

/* ==== Tensors =============================================================================== */

loupe_status rt_gguf_writer_add_tensor(rt_gguf_writer *w, const char *name, rt_type type,
                                       uint32_t n_dims, const uint64_t *ne, loupe_err *err)
{
    if (w->failed || w->done || w->in_data)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: tensor '%s' added %s", w->path, name,
                          w->in_data ? "after tensor data began" : "to a finished/failed writer");
    if (!name || !*name || strlen(name) > 1024)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: tensor names must be 1 to 1024 bytes",
                          w->path);
    size_t be = (unsigned)type < RT_TYPE_COUNT_ ? rt_type_block_elems(type) : 0;
    if (!be)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: tensor '%s' has unknown type %d", w->path,
                          name, (int)type);
    if (n_dims < 1 || n_dims > 4)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: tensor '%s' has %" PRIu32
                          " dimensions (1 to 4 allowed)", w->path, name, n_dims);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || ne[d] > (uint64_t)INT64_MAX / elems)
            return loupe_fail(err, LOUPE_ERR_INVALID, "%s: tensor '%s' has a bad dimension %"
                              PRIu32 " (%" PRIu64 ")", w->path, name, d, ne[d]);
        elems *= ne[d];
    }
    if (ne[0] % be)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: tensor '%s': rows of %" PRIu64 " are not a multiple of the %s "
                          "block size %zu", w->path, name, ne[0], rt_type_name(type), be);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return loupe_fail(err, LOUPE_ERR_INVALID, "%s: tensor '%s' added twice", w->path,
                              name);
    if (w->n_tensors == w->tensors_cap) {
        uint64_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        w_tensor *nt = realloc(w->tensors, cap * sizeof *nt);
        if (!nt)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", w->path);
        w->tensors = nt;
        w->tensors_cap = cap;
    }
    w_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", w->path);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++)
        t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->n_bytes = elems / be * rt_type_block_bytes(type);
    t->offset = w->data_bytes;
    w->data_bytes += align_up(t->n_bytes, w->alignment);
    w->n_tensors++;
    return LOUPE_OK;
}

/* ==== Data ================================================================================== */

static loupe_status io_fail(rt_gguf_writer *w, loupe_err *err)
{
    w->failed = true;
    return loupe_fail(err, LOUPE_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
}

static loupe_status put(rt_gguf_writer *w, const void *p, size_t n, loupe_err *err)
{
    if (n && fwrite(p, 1, n, w->f) != n)
        return io_fail(w, err);
    w->written += n;
    return LOUPE_OK;
}

static loupe_status put_zeros(rt_gguf_writer *w, uint64_t n, loupe_err *err)
{
    static const uint8_t zeros[64];
    loupe_status st = LOUPE_OK;
    while (n && !st) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        st = put(w, zeros, k, err);
        n -= k;
    }
    return st;
}

static loupe_status write_header(rt_gguf_writer *w, loupe_err *err)
{
    loupe_status st;
    uint32_t ver = 3;
    if ((st = put(w, "GGUF", 4, err)) || (st = put(w, &ver, 4, err)) ||
        (st = put(w, &w->n_tensors, 8, err)) || (st = put(w, &w->n_kv, 8, err)) ||
        (st = put(w, w->kv_buf, w->kv_len, err)))
        return st;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const w_tensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name);
        uint32_t type = (uint32_t)t->type;
        if ((st = put(w, &len, 8, err)) || (st = put(w, t->name, len, err)) ||
            (st = put(w, &t->n_dims, 4, err)) || (st = put(w, t->ne, 8 * t->n_dims, err)) ||
            (st = put(w, &type, 4, err)) || (st = put(w, &t->offset, 8, err)))
            return st;
    }
    if (w->n_tensors)
        st = put_zeros(w, align_up(w->written, w->alignment) - w->written, err);
    w->in_data = true;
    return st;
}

loupe_status rt_gguf_writer_write(rt_gguf_writer *w, const void *data, size_t n, loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    if (w->failed || w->done)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: write to a %s writer", w->path,
                          w->done ? "finished" : "failed");
    if (!w->in_data && (st = write_header(w, err)))
        return st;
    const uint8_t *p = data;
    while (n) {
        if (w->cur >= w->n_tensors) {
            w->failed = true;
            return loupe_fail(err, LOUPE_ERR_INVALID,
                              "%s: %zu bytes of data written past the last tensor", w->path, n);
        }
        const w_tensor *t = &w->tensors[w->cur];
        uint64_t room = t->n_bytes - w->cur_written;
        size_t k = n < room ? n : (size_t)room;
        if ((st = put(w, p, k, err)))
            return st;
        p += k;
        n -= k;
        w->cur_written += k;
        if (w->cur_written == t->n_bytes) {
            if ((st = put_zeros(w, align_up(t->n_bytes, w->alignment) - t->n_bytes, err)))
                return st;
            w->cur++;
            w->cur_written = 0;
        }
    }
    return LOUPE_OK;
}

loupe_status rt_gguf_writer_finish(rt_gguf_writer *w, loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    if (w->failed || w->done)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: finish on a %s writer", w->path,
                          w->done ? "finished" : "failed");
    if (!w->in_data && (st = write_header(w, err)))
        return st;
    if (w->cur < w->n_tensors)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: tensor '%s' got %" PRIu64 " of its %" PRIu64 " bytes (and %" PRIu64
                          " tensors after it none)", w->path, w->tensors[w->cur].name,
                          w->cur_written, w->tensors[w->cur].n_bytes,
                          w->n_tensors - w->cur - 1);
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0)
        return io_fail(w, err);
    int rc = fclose(w->f);
    w->f = NULL;
    if (rc != 0)
        return io_fail(w, err);
    if (rename(w->tmp_path, w->path) != 0) {
        w->failed = true;
        return loupe_fail(err, LOUPE_ERR_IO, "%s: cannot rename %s into place: %s", w->path,
                          w->tmp_path, strerror(errno));
    }
    w->done = true;
    return LOUPE_OK;
}
