/*
 * Key storage: one head's keys as f32, bf16, int8 with a per-row scale or int8 with a per-channel
 * scale (int8c), and the dot products every index scores them with.
 *
 * Invariants: rows are `stride` elements apart (a view can walk a wider KV row); int8 rows carry
 * scale = max|k| / 127 (0 for an all-zero row), so k ≈ scale · k8 with |error| <= scale / 2 per
 * element; int8c rows share one scale per channel, max over the rows / 127 (the same bound; a
 * search copy widens a scale when a new row needs it); bf16 is round-to-nearest-even of the f32
 * (NaN kept NaN). The dot kernels are compiled once per ISA (target_clones) and picked at load
 * time, because the build's flags target the baseline x86-64 and the search is bound by these
 * loops.
 */
#include "anns/ann_impl.h"

#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include <stdlib.h>

/* ---- Dot products ------------------------------------------------------------------------- */

/* Eight lanes of f32 or bf16 keys as f32 (exactly: bf16 is f32's upper half).
 * These return 32-byte vectors, which the baseline x86-64 ABI would return in memory; they are
 * static inline and never cross a call, so GCC's note about that ABI does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef uint16_t u16x8 __attribute__((vector_size(8 * sizeof(uint16_t))));
typedef uint32_t u32x8 __attribute__((vector_size(8 * sizeof(uint32_t))));

static inline ann_lanes8 load8_f32(const float *p)
{
    ann_lanes8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline ann_lanes8 load8_bf16(const uint16_t *p)
{
    u16x8 h;
    memcpy(&h, p, sizeof h);
    u32x8 u = __builtin_convertvector(h, u32x8) << 16;
    ann_lanes8 v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* The products of 16-element blocks go into 16 partial sums (lo: lanes 0-7, hi: 8-15), the tail
 * one element at a time, then ann_lanes_sum: a fixed order (no reassociation by the compiler),
 * whatever the ISA. */
ANN_CLONES float ann_dot_f32(const float *a, const float *b, int d)
{
    ann_lanes8 lo = {0}, hi = {0};
    int i = 0;
    for (; i + ANN_LANES <= d; i += ANN_LANES) {
        lo += load8_f32(a + i) * load8_f32(b + i);
        hi += load8_f32(a + i + 8) * load8_f32(b + i + 8);
    }
    float s = 0;
    for (; i < d; i++)
        s += a[i] * b[i];
    return ann_lanes_sum(&lo, &hi, s);
}

ANN_CLONES float ann_dot_bf16(const float *q, const uint16_t *k, int d)
{
    ann_lanes8 lo = {0}, hi = {0};
    int i = 0;
    for (; i + ANN_LANES <= d; i += ANN_LANES) {
        lo += load8_f32(q + i) * load8_bf16(k + i);
        hi += load8_f32(q + i + 8) * load8_bf16(k + i + 8);
    }
    float s = 0;
    for (; i < d; i++)
        s += q[i] * ann_bf16_to_f32(k[i]);
    return ann_lanes_sum(&lo, &hi, s);
}

/* int8 lanes the old way, a 16-float array the vectoriser fills: GCC's vector conversions
 * turn int8 lanes into floats one at a time (twice as slow). */
ANN_CLONES float ann_dot_i8(const float *q, const int8_t *k, int d)
{
    float acc[ANN_LANES] = {0};
    int i = 0;
    for (; i + ANN_LANES <= d; i += ANN_LANES)
        for (int j = 0; j < ANN_LANES; j++)
            acc[j] += q[i + j] * (float)k[i + j];
    float s = 0;
    for (; i < d; i++)
        s += q[i] * (float)k[i];
    ann_lanes8 lo, hi;
    memcpy(&lo, acc, sizeof lo);
    memcpy(&hi, acc + 8, sizeof hi);
    return ann_lanes_sum(&lo, &hi, s);
}

/* int8c: q_i · scale_i · c_i, the channel scales applied lane by lane (they and q stay in L1
 * through a search; the row is the one memory access). */
ANN_CLONES float ann_dot_i8c(const float *q, const float *scale, const int8_t *k, int d)
{
    float acc[ANN_LANES] = {0};
    int i = 0;
    for (; i + ANN_LANES <= d; i += ANN_LANES)
        for (int j = 0; j < ANN_LANES; j++)
            acc[j] += q[i + j] * scale[i + j] * (float)k[i + j];
    float s = 0;
    for (; i < d; i++)
        s += q[i] * scale[i] * (float)k[i];
    ann_lanes8 lo, hi;
    memcpy(&lo, acc, sizeof lo);
    memcpy(&hi, acc + 8, sizeof hi);
    return ann_lanes_sum(&lo, &hi, s);
}

ANN_CLONES float ann_l2sq_f32(const float *a, const float *b, int d)
{
    ann_lanes8 lo = {0}, hi = {0};
    int i = 0;
    for (; i + ANN_LANES <= d; i += ANN_LANES) {
        ann_lanes8 tl = load8_f32(a + i) - load8_f32(b + i);
        ann_lanes8 th = load8_f32(a + i + 8) - load8_f32(b + i + 8);
        lo += tl * tl;
        hi += th * th;
    }
    float s = 0;
    for (; i < d; i++)
        s += (a[i] - b[i]) * (a[i] - b[i]);
    return ann_lanes_sum(&lo, &hi, s);
}

/* ---- Conversion ------------------------------------------------------------------------- */

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);          /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

/* ---- ann_keys ----------------------------------------------------------------------------- */

void ann_advise_huge_pages(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    const long page = sysconf(_SC_PAGESIZE);
    if (!p || page <= 0 || bytes < ((size_t)4 << 20))
        return;
    const uintptr_t pg = (uintptr_t)page;
    uintptr_t a = ((uintptr_t)p + pg - 1) / pg * pg, e = ((uintptr_t)p + bytes) / pg * pg;
    if (e > a)
        madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p, (void)bytes;
#endif
}

/* ann_rows_alloc's mapping starts one page before the rows: that page holds the mapping's
 * size, so ann_rows_free needs nothing but the pointer. Under AddressSanitizer the rows come
 * from calloc instead, so that its checks cover them (alignment is a speed matter only). */
#ifdef __SANITIZE_ADDRESS__
void *ann_rows_alloc(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }
void ann_rows_free(void *p) { free(p); }
#else
static size_t page_bytes(void)
{
    const long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

void *ann_rows_alloc(size_t bytes)
{
    const size_t pg = page_bytes();
    if (bytes > SIZE_MAX - 2 * pg)
        return NULL;
    const size_t size = pg + (bytes + pg - 1) / pg * pg;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    memcpy(base, &size, sizeof size);
    ann_advise_huge_pages((char *)base + pg, bytes);
    return (char *)base + pg;
}

void ann_rows_free(void *p)
{
    if (!p)
        return;
    char *base = (char *)p - page_bytes();
    size_t size;
    memcpy(&size, base, sizeof size);
    munmap(base, size);
}
#endif

static loupe_status check_shape(int64_t n, int dim, loupe_err *err)
{
    if (n <= 0 || n > INT32_MAX)
        return loupe_fail(err, LOUPE_ERR_INVALID, "key count %lld is outside 1..%d",
                          (long long)n, INT32_MAX);
    if (dim <= 0 || dim > 65536)
        return loupe_fail(err, LOUPE_ERR_INVALID, "key dimension %d is outside 1..65536", dim);
    return LOUPE_OK;
}

void ann_keys_encode_row(ann_key_type type, const float *src, int dim, void *dst, float *scale)
{
    if (type == ANN_KEYS_F32) {
        memcpy(dst, src, (size_t)dim * sizeof(float));
    } else if (type == ANN_KEYS_BF16) {
        uint16_t *d = dst;
        for (int i = 0; i < dim; i++)
            d[i] = f32_to_bf16(src[i]);
    } else {
        int8_t *d = dst;
        float amax = 0;
        for (int i = 0; i < dim; i++)
            amax = fmaxf(amax, fabsf(src[i]));
        float inv = amax > 0 ? 127.0f / amax : 0.0f;
        for (int i = 0; i < dim; i++) {
            float v = nearbyintf(src[i] * inv);
            d[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
        *scale = amax / 127.0f;
    }
}

static bool known_type(ann_key_type type)
{
    return type == ANN_KEYS_F32 || type == ANN_KEYS_BF16 || type == ANN_KEYS_INT8 ||
           type == ANN_KEYS_INT8C;
}

/* A new ann_keys of `type` owning room for `room` rows (n of them counted) and its scales (per
 * row for int8, per channel for int8c, zeroed). */
static loupe_status alloc_owned(ann_key_type type, int64_t n, int64_t room, int dim,
                                ann_keys **out, loupe_err *err)
{
    ann_keys *k = calloc(1, sizeof *k);
    const size_t n_scales = type == ANN_KEYS_INT8    ? (size_t)room
                            : type == ANN_KEYS_INT8C ? (size_t)dim
                                                     : 0;
    if (!k || !(k->owned_data = ann_rows_alloc((size_t)room * (size_t)dim *
                                               ann_key_type_bytes(type))) ||
        (n_scales && !(k->owned_scales = calloc(n_scales, sizeof(float))))) {
        ann_keys_destroy(k);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "no memory for %lld keys of dimension %d",
                          (long long)room, dim);
    }
    k->type = type;
    k->n = n;
    k->room = room;
    k->dim = dim;
    k->stride = dim;
    k->data = k->owned_data;
    k->scales = k->owned_scales;
    *out = k;
    return LOUPE_OK;
}

/* One f32 row into int8c lanes under the channel scales (a channel of scale 0 stores 0). */
static void encode_channels(const float *src, int dim, const float *scale, int8_t *dst)
{
    for (int i = 0; i < dim; i++) {
        float v = scale[i] > 0 ? nearbyintf(src[i] / scale[i]) : 0.0f;
        dst[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
}

loupe_status ann_keys_create(const float *keys, int64_t n, int dim, ann_key_type type,
                             ann_keys **out, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    ann_keys *k = NULL;
    *out = NULL;
    if ((rc = check_shape(n, dim, err)) != LOUPE_OK)
        goto done;
    if (!known_type(type)) {
        rc = loupe_fail(err, LOUPE_ERR_INVALID, "unknown key storage type %d", (int)type);
        goto done;
    }
    if (type == ANN_KEYS_INT8C) { /* channel scales from every row: a search copy of them */
        ann_keys *f32 = NULL;
        if ((rc = ann_keys_view(ANN_KEYS_F32, keys, NULL, n, dim, dim, &f32, err)) == LOUPE_OK)
            rc = ann_keys_search_copy(f32, n, out, err);
        ann_keys_destroy(f32);
        return rc;
    }
    if ((rc = alloc_owned(type, n, n, dim, &k, err)) != LOUPE_OK)
        goto done;
    const size_t row_bytes = (size_t)dim * ann_key_type_bytes(type);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++)
        ann_keys_encode_row(type, keys + r * dim, dim, (char *)k->owned_data + r * row_bytes,
                            type == ANN_KEYS_INT8 ? &k->owned_scales[r] : NULL);
    *out = k;
    k = NULL;
done:
    ann_keys_destroy(k);
    return rc;
}

loupe_status ann_keys_view(ann_key_type type, const void *data, const float *scales, int64_t n,
                           int dim, int64_t row_stride, ann_keys **out, loupe_err *err)
{
    *out = NULL;
    loupe_status rc = check_shape(n, dim, err);
    if (rc != LOUPE_OK)
        return rc;
    const bool scaled = type == ANN_KEYS_INT8 || type == ANN_KEYS_INT8C;
    if (!data || row_stride < dim || scaled != (scales != NULL) || !known_type(type))
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "key view: need rows, a stride >= dimension %d (got %lld), and scales "
                          "exactly for int8 and int8c",
                          dim, (long long)row_stride);
    ann_keys *k = calloc(1, sizeof *k);
    if (!k)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "no memory for a key view");
    k->type = type;
    k->n = k->room = n;
    k->dim = dim;
    k->stride = row_stride;
    k->data = data;
    k->scales = scales;
    *out = k;
    return LOUPE_OK;
}

loupe_status ann_keys_set_count(ann_keys *keys, int64_t n, loupe_err *err)
{
    if (keys->owned_data)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "key count: only a view over the caller's rows can change its count");
    loupe_status rc = check_shape(n, keys->dim, err);
    if (rc != LOUPE_OK)
        return rc;
    keys->n = n;
    return LOUPE_OK;
}

void ann_keys_destroy(ann_keys *keys)
{
    if (!keys)
        return;
    ann_rows_free(keys->owned_data);
    free(keys->owned_scales);
    free(keys);
}

int64_t ann_keys_count(const ann_keys *keys) { return keys->n; }
int ann_keys_dim(const ann_keys *keys) { return keys->dim; }
ann_key_type ann_keys_type(const ann_keys *keys) { return keys->type; }

const char *ann_key_type_name(ann_key_type type)
{
    switch (type) {
    case ANN_KEYS_F32: return "f32";
    case ANN_KEYS_BF16: return "bf16";
    case ANN_KEYS_INT8: return "int8";
    case ANN_KEYS_INT8C: return "int8c";
    }
    return "?";
}

const void *ann_keys_data(const ann_keys *keys, int64_t *row_stride, const float **scales)
{
    if (row_stride)
        *row_stride = keys->stride;
    if (scales)
        *scales = keys->scales;
    return keys->data;
}

size_t ann_keys_bytes(const ann_keys *keys)
{
    size_t esz = ann_key_type_bytes(keys->type);
    return (size_t)keys->n * (size_t)keys->dim * esz +
           (keys->type == ANN_KEYS_INT8    ? (size_t)keys->n * sizeof(float)
            : keys->type == ANN_KEYS_INT8C ? (size_t)keys->dim * sizeof(float)
                                           : 0);
}

loupe_status ann_keys_search_copy(const ann_keys *src, int64_t cap, ann_keys **out,
                                  loupe_err *err)
{
    *out = NULL;
    if (cap < src->n)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "search copy: room for %lld rows is less than the %lld keys",
                          (long long)cap, (long long)src->n);
    ann_keys *k = NULL;
    loupe_status rc = alloc_owned(ANN_KEYS_INT8C, 0, cap, src->dim, &k, err);
    if (!rc && (rc = ann_keys_search_copy_sync(k, src, err)) != LOUPE_OK) /* scales from 0 */
        ann_keys_destroy(k);
    else if (!rc)
        *out = k;
    return rc;
}

loupe_status ann_keys_search_copy_sync(ann_keys *copy, const ann_keys *src, loupe_err *err)
{
    if (copy->type != ANN_KEYS_INT8C || !copy->owned_data || src->dim != copy->dim ||
        src->n > copy->room || src->n < copy->n)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "search copy of %lld rows (room %lld, dimension %d) cannot follow %lld "
                          "keys of dimension %d",
                          (long long)copy->n, (long long)copy->room, copy->dim,
                          (long long)src->n, src->dim);
    const int d = copy->dim;
    int64_t from = copy->n;
    const int64_t to = src->n;
    /* A new row past a channel's range widens that channel's scale, and every row is encoded
     * again: saturating instead cost RoPE'd synthetic keys 1-2.5 points of recall (keys at new
     * positions turn some channel pairs further than the copied rows did). */
    float *amax = calloc((size_t)d * 2, sizeof *amax), *wide = amax + d;
    if (!amax)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "no memory to encode a search copy's rows");
    for (int64_t r = from; r < to; r++) {
        ann_keys_row(src, r, wide);
        for (int i = 0; i < d; i++)
            amax[i] = fmaxf(amax[i], fabsf(wide[i]));
    }
    for (int i = 0; i < d; i++)
        if (amax[i] / 127.0f > copy->owned_scales[i]) {
            copy->owned_scales[i] = amax[i] / 127.0f;
            from = 0;
        }
    free(amax);
    bool failed = false;
#pragma omp parallel if (to - from > 4096)
    {
        float *row = malloc((size_t)d * sizeof *row);
        if (!row) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for schedule(static)
        for (int64_t r = from; r < to; r++)
            if (row) {
                ann_keys_row(src, r, row);
                encode_channels(row, d, copy->scales, (int8_t *)copy->owned_data + r * d);
            }
        free(row);
    }
    if (failed)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "no memory to encode a search copy's rows");
    copy->n = to;
    return LOUPE_OK;
}

float ann_keys_score(const ann_keys *keys, const float *q, int64_t id)
{
    return ann_score(keys, q, id);
}

void ann_keys_row(const ann_keys *keys, int64_t id, float *out)
{
    const void *p = ann_keys_rowptr(keys, id);
    for (int i = 0; i < keys->dim; i++) {
        switch (keys->type) {
        case ANN_KEYS_F32: out[i] = ((const float *)p)[i]; break;
        case ANN_KEYS_BF16: out[i] = ann_bf16_to_f32(((const uint16_t *)p)[i]); break;
        case ANN_KEYS_INT8C: out[i] = keys->scales[i] * (float)((const int8_t *)p)[i]; break;
        default: out[i] = keys->scales[id] * (float)((const int8_t *)p)[i]; break;
        }
    }
}
