/*
 * GGUF reader: maps a file read-only (or takes a caller's buffer), validates all of it once, and
 * then serves metadata and tensors from the mapping without further checks.
 *
 * File layout (GGUF v2/v3, little-endian):
 *   "GGUF" u32 version  u64 n_tensors  u64 n_kv
 *   n_kv × (string key, u32 type, value)        string = u64 length + bytes (no NUL)
 *   n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset)
 *   zero padding to general.alignment (default 32), then the data section; tensor offsets are
 *   relative to its start and aligned.
 *
 * Invariants after a successful open (what makes the accessors safe without checks):
 *   - every key, string and array (nested ones included) lies inside the buffer; string arrays have
 *     an offset table so element i is found in O(1);
 *   - keys and tensor names are unique and non-empty; tensor names contain no NUL;
 *   - every tensor has 1..4 dims, each >= 1, a known type, ne[0] a multiple of the block size, an
 *     element and byte count that do not overflow, an aligned offset, data inside the buffer, and
 *     no two tensors' data overlap.
 * Every count read from the file is checked against the bytes left *before* anything is allocated
 * for it, so a hostile header cannot cause a huge allocation; nesting depth is bounded so it
 * cannot exhaust the stack.
 */
#include "runtime/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    GGUF_DEFAULT_ALIGNMENT = 32,
    GGUF_MAX_NESTING = 8,        /* arrays of arrays deeper than this are rejected */
    GGUF_MAX_NAME = 1024,        /* tensor names longer than this are surely garbage */
    GGUF_MIN_KV_BYTES = 8 + 4 + 1,                /* key length, type, u8 value */
    GGUF_MIN_TENSOR_BYTES = 8 + 1 + 4 + 8 + 4 + 8 /* name length, name, n_dims, ne, type, off */
};

typedef struct {
    rt_gguf_str key;
    rt_gguf_vtype type;
    const uint8_t *val;    /* the encoded value; for arrays, the first element */
    uint64_t val_bytes;    /* size of the encoded value (for arrays including type and count) */
    rt_gguf_vtype arr_type;
    uint64_t arr_len;
    uint64_t *str_off;     /* (arr_len) string arrays: offset of element i from val */
} gguf_kv;

/* Open-addressing table of names → index, for duplicate checks and lookups. */
typedef struct {
    const char *s;
    uint64_t len;
    int64_t idx; /* -1 = empty slot */
} name_slot;

struct rt_gguf {
    char *path;
    const uint8_t *base; /* (size) the file */
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    gguf_kv *kv;          /* (n_kv) */
    int64_t n_tensors;
    rt_gguf_tensor *tensors; /* (n_tensors) */
    char *name_arena;     /* NUL-terminated tensor names */
    name_slot *key_tab;   /* (key_mask + 1) */
    uint64_t key_mask;
    name_slot *tensor_tab; /* (tensor_mask + 1) */
    uint64_t tensor_mask;
};

/* ==== Small helpers ========================================================================= */

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Size of a fixed-size value type; 0 for strings, arrays and unknown types. */
static size_t vtype_size(uint32_t t)
{
    switch (t) {
    case RT_GGUF_UINT8: case RT_GGUF_INT8: case RT_GGUF_BOOL: return 1;
    case RT_GGUF_UINT16: case RT_GGUF_INT16: return 2;
    case RT_GGUF_UINT32: case RT_GGUF_INT32: case RT_GGUF_FLOAT32: return 4;
    case RT_GGUF_UINT64: case RT_GGUF_INT64: case RT_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_known(uint32_t t) { return t <= RT_GGUF_FLOAT64; }

static bool vtype_is_int(rt_gguf_vtype t)
{
    return t == RT_GGUF_UINT8 || t == RT_GGUF_INT8 || t == RT_GGUF_UINT16 || t == RT_GGUF_INT16 ||
           t == RT_GGUF_UINT32 || t == RT_GGUF_INT32 || t == RT_GGUF_UINT64 || t == RT_GGUF_INT64;
}

static bool vtype_is_signed(rt_gguf_vtype t)
{
    return t == RT_GGUF_INT8 || t == RT_GGUF_INT16 || t == RT_GGUF_INT32 || t == RT_GGUF_INT64;
}

const char *rt_gguf_vtype_name(rt_gguf_vtype t)
{
    static const char *const names[] = {"uint8", "int8",   "uint16", "int16", "uint32",
                                        "int32", "float32", "bool",  "string", "array",
                                        "uint64", "int64", "float64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* An integer value of type t at p, as a sign flag and magnitude-preserving u64/i64 pair. */
static void read_int(rt_gguf_vtype t, const uint8_t *p, bool *neg, uint64_t *u, int64_t *s)
{
    int64_t sv = 0;
    uint64_t uv = 0;
    switch (t) {
    case RT_GGUF_UINT8: uv = p[0]; break;
    case RT_GGUF_INT8: sv = (int8_t)p[0]; break;
    case RT_GGUF_UINT16: uv = (uint16_t)(p[0] | (p[1] << 8)); break;
    case RT_GGUF_INT16: sv = (int16_t)(uint16_t)(p[0] | (p[1] << 8)); break;
    case RT_GGUF_UINT32: uv = rd32(p); break;
    case RT_GGUF_INT32: sv = (int32_t)rd32(p); break;
    case RT_GGUF_UINT64: uv = rd64(p); break;
    case RT_GGUF_INT64: memcpy(&sv, p, 8); break;
    default: break;
    }
    if (vtype_is_signed(t)) {
        *neg = sv < 0;
        *u = sv < 0 ? 0 : (uint64_t)sv;
        *s = sv;
    } else {
        *neg = false;
        *u = uv;
        *s = uv > INT64_MAX ? INT64_MAX : (int64_t)uv;
    }
}

static double read_float(rt_gguf_vtype t, const uint8_t *p)
{
    if (t == RT_GGUF_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    double d;
    memcpy(&d, p, 8);
    return d;
}

static uint64_t hash_name(const char *s, uint64_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

/* A table with room for n names at load factor <= 1/2; NULL on allocation failure. */
static name_slot *names_create(uint64_t n, uint64_t *mask)
{
    uint64_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    name_slot *t = malloc(cap * sizeof *t);
    if (!t)
        return NULL;
    for (uint64_t i = 0; i < cap; i++)
        t[i].idx = -1;
    *mask = cap - 1;
    return t;
}

static int64_t names_find(const name_slot *t, uint64_t mask, const char *s, uint64_t len)
{
    if (!t)
        return -1;
    for (uint64_t i = hash_name(s, len) & mask;; i = (i + 1) & mask) {
        if (t[i].idx < 0)
            return -1;
        if (t[i].len == len && memcmp(t[i].s, s, len) == 0)
            return t[i].idx;
    }
}

/* Inserts; returns the index of an existing equal name instead (a duplicate), or -1. */
static int64_t names_insert(name_slot *t, uint64_t mask, const char *s, uint64_t len, int64_t idx)
{
    uint64_t i = hash_name(s, len) & mask;
    for (; t[i].idx >= 0; i = (i + 1) & mask)
        if (t[i].len == len && memcmp(t[i].s, s, len) == 0)
            return t[i].idx;
    t[i] = (name_slot){s, len, idx};
    return -1;
}

/* ==== Parsing =============================================================================== */

typedef struct {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    const char *name; /* file name for messages */
    loupe_err *err;
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->pos; }

/* Fails unless n more bytes are available; `what` names what was being read. */
static loupe_status need(cursor *c, uint64_t n, const char *what)
{
    if (n <= left(c))
        return LOUPE_OK;
    return loupe_fail(c->err, LOUPE_ERR_FORMAT,
                      "%s: file is truncated: %s needs %" PRIu64 " bytes at offset %" PRIu64
                      " but only %" PRIu64 " remain",
                      c->name, what, n, c->pos, left(c));
}

static loupe_status get_u32(cursor *c, uint32_t *v, const char *what)
{
    loupe_status st = need(c, 4, what);
    if (st)
        return st;
    *v = rd32(c->base + c->pos);
    c->pos += 4;
    return LOUPE_OK;
}

static loupe_status get_u64(cursor *c, uint64_t *v, const char *what)
{
    loupe_status st = need(c, 8, what);
    if (st)
        return st;
    *v = rd64(c->base + c->pos);
    c->pos += 8;
    return LOUPE_OK;
}

static loupe_status get_str(cursor *c, rt_gguf_str *s, const char *what)
{
    uint64_t len;
    loupe_status st = get_u64(c, &len, what);
    if (st)
        return st;
    if (len > left(c))
        return loupe_fail(c->err, LOUPE_ERR_FORMAT,
                          "%s: %s has length %" PRIu64 ", past the end of the file (offset %" PRIu64
                          ", %" PRIu64 " bytes left)",
                          c->name, what, len, c->pos, left(c));
    s->ptr = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += len;
    return LOUPE_OK;
}

/* Length printed in messages for names read from the file (they may be long or binary). */
static int shown(uint64_t len) { return len > 64 ? 64 : (int)len; }

/* Validates and skips one value of type t. `what` names the key for messages. */
static loupe_status skip_value(cursor *c, uint32_t t, int depth, const char *what)
{
    loupe_status st = LOUPE_OK;
    if (!vtype_known(t))
        return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s has unknown value type %" PRIu32,
                          c->name, what, t);
    size_t sz = vtype_size(t);
    if (t == RT_GGUF_BOOL) {
        if ((st = need(c, 1, what)))
            return st;
        if (c->base[c->pos] > 1)
            return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s is a bool with value %u (not 0/1)",
                              c->name, what, c->base[c->pos]);
        c->pos++;
        return LOUPE_OK;
    }
    if (sz) {
        if ((st = need(c, sz, what)))
            return st;
        c->pos += sz;
        return LOUPE_OK;
    }
    if (t == RT_GGUF_STRING) {
        rt_gguf_str s;
        return get_str(c, &s, what);
    }
    /* Array: element type, count, elements. */
    if (depth >= GGUF_MAX_NESTING)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s nests arrays deeper than %d levels",
                          c->name, what, GGUF_MAX_NESTING);
    uint32_t et;
    uint64_t n;
    if ((st = get_u32(c, &et, what)) || (st = get_u64(c, &n, what)))
        return st;
    if (!vtype_known(et))
        return loupe_fail(c->err, LOUPE_ERR_FORMAT,
                          "%s: %s is an array of unknown element type %" PRIu32, c->name, what, et);
    uint64_t min = vtype_size(et) ? vtype_size(et) : et == RT_GGUF_STRING ? 8 : 12;
    if (n > left(c) / min)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT,
                          "%s: %s claims %" PRIu64 " %s elements, more than the %" PRIu64
                          " bytes left in the file could hold",
                          c->name, what, n, rt_gguf_vtype_name((rt_gguf_vtype)et), left(c));
    if (vtype_size(et) && et != RT_GGUF_BOOL) {
        c->pos += n * vtype_size(et);
        return LOUPE_OK;
    }
    for (uint64_t i = 0; i < n && !st; i++)
        st = skip_value(c, et, depth + 1, what);
    return st;
}

static loupe_status parse_kvs(rt_gguf *g, cursor *c)
{
    loupe_status st = LOUPE_OK;
    char what[160];
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        snprintf(what, sizeof what, "key #%" PRId64, i);
        if ((st = get_str(c, &kv->key, what)))
            return st;
        if (kv->key.len == 0 || memchr(kv->key.ptr, 0, kv->key.len))
            return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: key #%" PRId64 " is %s", c->name, i,
                              kv->key.len ? "not text (contains a NUL byte)" : "empty");
        snprintf(what, sizeof what, "key '%.*s'", shown(kv->key.len), kv->key.ptr);
        int64_t dup = names_insert(g->key_tab, g->key_mask, kv->key.ptr, kv->key.len, i);
        if (dup >= 0)
            return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s appears twice (#%" PRId64
                              " and #%" PRId64 ")", c->name, what, dup, i);
        uint32_t t;
        if ((st = get_u32(c, &t, what)))
            return st;
        uint64_t start = c->pos;
        if ((st = skip_value(c, t, 0, what)))
            return st;
        kv->type = (rt_gguf_vtype)t;
        kv->val = c->base + start;
        kv->val_bytes = c->pos - start;
        if (t != RT_GGUF_ARRAY)
            continue;
        kv->arr_type = (rt_gguf_vtype)rd32(kv->val);
        kv->arr_len = rd64(kv->val + 4);
        kv->val += 12;
        if (kv->arr_type != RT_GGUF_STRING || kv->arr_len == 0)
            continue;
        /* skip_value proved each element takes >= 8 bytes, so this is at most the file size. */
        kv->str_off = malloc(kv->arr_len * sizeof *kv->str_off);
        if (!kv->str_off)
            return loupe_fail(c->err, LOUPE_ERR_NOMEM, "%s: out of memory indexing %s", c->name,
                              what);
        uint64_t off = 0;
        for (uint64_t j = 0; j < kv->arr_len; j++) {
            kv->str_off[j] = off;
            off += 8 + rd64(kv->val + off);
        }
    }
    return st;
}

static loupe_status parse_tensor(rt_gguf *g, cursor *c, int64_t i, rt_gguf_str *name)
{
    loupe_status st;
    char what[160];
    rt_gguf_tensor *t = &g->tensors[i];
    snprintf(what, sizeof what, "the name of tensor #%" PRId64, i);
    if ((st = get_str(c, name, what)))
        return st;
    if (name->len == 0 || name->len > GGUF_MAX_NAME || memchr(name->ptr, 0, name->len))
        return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: tensor #%" PRId64 " has %s", c->name, i,
                          name->len == 0 ? "an empty name"
                          : name->len > GGUF_MAX_NAME ? "a name longer than 1024 bytes"
                                                       : "a name containing a NUL byte");
    snprintf(what, sizeof what, "tensor '%.*s'", shown(name->len), name->ptr);
    int64_t dup = names_insert(g->tensor_tab, g->tensor_mask, name->ptr, name->len, i);
    if (dup >= 0)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s appears twice (#%" PRId64
                          " and #%" PRId64 ")", c->name, what, dup, i);
    uint32_t n_dims, type;
    if ((st = get_u32(c, &n_dims, what)))
        return st;
    if (n_dims < 1 || n_dims > 4)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s has %" PRIu32
                          " dimensions (1 to 4 allowed)", c->name, what, n_dims);
    t->n_dims = n_dims;
    uint64_t elems = 1;
    for (int d = 0; d < 4; d++) {
        t->ne[d] = 1;
        if ((uint32_t)d >= n_dims)
            continue;
        if ((st = get_u64(c, &t->ne[d], what)))
            return st;
        if (t->ne[d] == 0 || t->ne[d] > INT64_MAX)
            return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s has dimension %d of size %" PRIu64,
                              c->name, what, d, t->ne[d]);
        if (elems > (uint64_t)INT64_MAX / t->ne[d])
            return loupe_fail(c->err, LOUPE_ERR_FORMAT,
                              "%s: %s has too many elements (its dimensions overflow 63 bits)",
                              c->name, what);
        elems *= t->ne[d];
    }
    if ((st = get_u32(c, &type, what)) || (st = get_u64(c, &t->offset, what)))
        return st;
    t->type = (rt_type)type;
    size_t be = type < RT_TYPE_COUNT_ ? rt_type_block_elems(t->type) : 0;
    if (!be)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s has unknown type %" PRIu32, c->name,
                          what, type);
    if (t->ne[0] % be)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT,
                          "%s: %s has rows of %" PRIu64 " elements, not a multiple of the %s block "
                          "size %zu",
                          c->name, what, t->ne[0], rt_type_name(t->type), be);
    uint64_t blocks = elems / be, bb = rt_type_block_bytes(t->type);
    if (blocks > UINT64_MAX / bb)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT, "%s: %s is too large", c->name, what);
    t->n_elems = elems;
    t->n_bytes = blocks * bb;
    return LOUPE_OK;
}

typedef struct {
    uint64_t offset, n_bytes;
    int64_t idx;
} extent;

static int extent_cmp(const void *a, const void *b)
{
    const extent *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Places the data section and checks every tensor's data lies in it without overlaps. */
static loupe_status check_data(rt_gguf *g, cursor *c)
{
    loupe_status st = LOUPE_OK;
    uint64_t a = g->alignment;
    uint64_t pad = (a - c->pos % a) % a;
    g->data_offset = c->pos + pad; /* pos <= size, so no overflow */
    if (g->n_tensors == 0)
        return LOUPE_OK;
    if (g->data_offset > g->size)
        return loupe_fail(c->err, LOUPE_ERR_FORMAT,
                          "%s: file ends before its data section (which starts at %" PRIu64
                          ", file size %" PRIu64 ")",
                          c->name, g->data_offset, g->size);
    uint64_t data_size = g->size - g->data_offset;
    extent *ext = malloc((size_t)g->n_tensors * sizeof *ext);
    if (!ext)
        return loupe_fail(c->err, LOUPE_ERR_NOMEM, "%s: out of memory", c->name);
    for (int64_t i = 0; i < g->n_tensors && !st; i++) {
        rt_gguf_tensor *t = &g->tensors[i];
        if (t->offset % a)
            st = loupe_fail(c->err, LOUPE_ERR_FORMAT,
                            "%s: tensor '%s' data offset %" PRIu64 " is not a multiple of the "
                            "alignment %" PRIu64,
                            c->name, t->name, t->offset, a);
        else if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            st = loupe_fail(c->err, LOUPE_ERR_FORMAT,
                            "%s: tensor '%s' data ends past the end of the file (offset %" PRIu64
                            " + %" PRIu64 " + %" PRIu64 " bytes > file size %" PRIu64 ")",
                            c->name, t->name, g->data_offset, t->offset, t->n_bytes, g->size);
        if (!st)
            t->data = g->base + g->data_offset + t->offset;
        ext[i] = (extent){t->offset, t->n_bytes, i};
    }
    if (!st) {
        qsort(ext, (size_t)g->n_tensors, sizeof *ext, extent_cmp);
        for (int64_t i = 1; i < g->n_tensors && !st; i++)
            if (ext[i - 1].offset + ext[i - 1].n_bytes > ext[i].offset)
                st = loupe_fail(c->err, LOUPE_ERR_FORMAT,
                                "%s: tensors '%s' and '%s' overlap (data at %" PRIu64 "+%" PRIu64
                                " and %" PRIu64 ")",
                                c->name, g->tensors[ext[i - 1].idx].name,
                                g->tensors[ext[i].idx].name, ext[i - 1].offset,
                                ext[i - 1].n_bytes, ext[i].offset);
    }
    free(ext);
    return st;
}

/* general.alignment: any integer width, a power of two that fits in 32 bits. */
static loupe_status read_alignment(rt_gguf *g, loupe_err *err)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = rt_gguf_find_key(g, "general.alignment");
    if (i < 0)
        return LOUPE_OK;
    const gguf_kv *kv = &g->kv[i];
    if (!vtype_is_int(kv->type))
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: general.alignment is a %s, not an integer",
                          g->path, rt_gguf_vtype_name(kv->type));
    bool neg;
    uint64_t u;
    int64_t s;
    read_int(kv->type, kv->val, &neg, &u, &s);
    if (neg || u == 0 || (u & (u - 1)) || u > (1u << 31))
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: general.alignment is %" PRId64 ", not a power of two up to 2^31",
                          g->path, neg ? s : (int64_t)(u > INT64_MAX ? INT64_MAX : u));
    g->alignment = (uint32_t)u;
    return LOUPE_OK;
}

static loupe_status parse(rt_gguf *g, loupe_err *err)
{
    loupe_status st;
    cursor c = {g->base, g->size, 0, g->path, err};
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: not a GGUF file (%s)", g->path,
                          g->size < 4 ? "shorter than the 4-byte magic" : "bad magic");
    c.pos = 4;
    if ((st = get_u32(&c, &g->version, "the version")))
        return st;
    if (g->version == 1)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: GGUF version 1 is not supported (only versions 2 and 3); "
                          "re-convert the model with a current llama.cpp", g->path);
    if (g->version == 0x02000000 || g->version == 0x03000000)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: big-endian GGUF files are not supported", g->path);
    if (g->version != 2 && g->version != 3)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: unknown GGUF version %" PRIu32 " (loupe reads versions 2 and 3)",
                          g->path, g->version);
    uint64_t n_tensors, n_kv;
    if ((st = get_u64(&c, &n_tensors, "the tensor count")) ||
        (st = get_u64(&c, &n_kv, "the metadata count")))
        return st;
    if (n_kv > left(&c) / GGUF_MIN_KV_BYTES)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: header claims %" PRIu64 " metadata keys, more than the file's %"
                          PRIu64 " bytes could hold", g->path, n_kv, g->size);
    if (n_tensors > left(&c) / GGUF_MIN_TENSOR_BYTES)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: header claims %" PRIu64 " tensors, more than the file's %" PRIu64
                          " bytes could hold", g->path, n_tensors, g->size);
    g->n_kv = (int64_t)n_kv;
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->key_tab = names_create(n_kv, &g->key_mask);
    if (!g->kv || !g->key_tab)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory for %" PRIu64 " keys", g->path,
                          n_kv);
    if ((st = parse_kvs(g, &c)) || (st = read_alignment(g, err)))
        return st;

    /* Tensor infos: names are copied (NUL-terminated) once all are known to be valid. */
    if (n_tensors > left(&c) / GGUF_MIN_TENSOR_BYTES)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: header claims %" PRIu64 " tensors, more than the %" PRIu64
                          " bytes after the metadata could hold", g->path, n_tensors, left(&c));
    g->n_tensors = (int64_t)n_tensors;
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    rt_gguf_str *names = calloc(n_tensors ? n_tensors : 1, sizeof *names);
    g->tensor_tab = names_create(n_tensors, &g->tensor_mask);
    if (!g->tensors || !names || !g->tensor_tab) {
        free(names);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory for %" PRIu64 " tensors",
                          g->path, n_tensors);
    }
    uint64_t name_bytes = 0;
    st = LOUPE_OK;
    for (int64_t i = 0; i < g->n_tensors && !st; i++) {
        st = parse_tensor(g, &c, i, &names[i]);
        name_bytes += names[i].len + 1;
    }
    if (!st) {
        g->name_arena = malloc(name_bytes ? name_bytes : 1);
        if (!g->name_arena)
            st = loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory for tensor names", g->path);
    }
    if (!st) {
        char *p = g->name_arena;
        for (int64_t i = 0; i < g->n_tensors; i++) {
            memcpy(p, names[i].ptr, names[i].len);
            p[names[i].len] = '\0';
            g->tensors[i].name = p;
            p += names[i].len + 1;
        }
        st = check_data(g, &c);
    }
    free(names);
    return st;
}

/* ==== Open / close ========================================================================== */

static loupe_status open_common(rt_gguf *g, rt_gguf **out, loupe_err *err)
{
    loupe_status st = parse(g, err);
    if (st) {
        rt_gguf_close(g);
        return st;
    }
    *out = g;
    return LOUPE_OK;
}

loupe_status rt_gguf_open_buffer(const void *buf, size_t size, const char *name, rt_gguf **out,
                                 loupe_err *err)
{
    *out = NULL;
    rt_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(name ? name : "<buffer>"))) {
        free(g);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", name ? name : "<buffer>");
    }
    g->base = buf;
    g->size = size;
    return open_common(g, out, err);
}

loupe_status rt_gguf_open(const char *path, rt_gguf **out, loupe_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return loupe_fail(err, errno == ENOENT ? LOUPE_ERR_NOT_FOUND : LOUPE_ERR_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        return loupe_fail(err, LOUPE_ERR_IO, "%s: %s", path,
                          S_ISDIR(sb.st_mode) ? "is a directory, not a GGUF file"
                          : e                  ? strerror(e)
                                               : "is not a regular file");
    }
    if (sb.st_size == 0) {
        close(fd);
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: not a GGUF file (it is empty)", path);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return loupe_fail(err, LOUPE_ERR_IO, "%s: cannot map the file: %s", path, strerror(e));
    rt_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        munmap(m, (size_t)sb.st_size);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", path);
    }
    g->base = m;
    g->size = (uint64_t)sb.st_size;
    g->mapped = true;
    return open_common(g, out, err);
}

void rt_gguf_close(rt_gguf *g)
{
    if (!g)
        return;
    if (g->mapped)
        munmap((void *)g->base, (size_t)g->size);
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++)
            free(g->kv[i].str_off);
    free(g->kv);
    free(g->tensors);
    free(g->name_arena);
    free(g->key_tab);
    free(g->tensor_tab);
    free(g->path);
    free(g);
}

/* ==== Accessors ============================================================================= */

uint32_t rt_gguf_version(const rt_gguf *g) { return g->version; }
const char *rt_gguf_path(const rt_gguf *g) { return g->path; }
uint64_t rt_gguf_file_size(const rt_gguf *g) { return g->size; }
uint32_t rt_gguf_alignment(const rt_gguf *g) { return g->alignment; }
uint64_t rt_gguf_data_offset(const rt_gguf *g) { return g->data_offset; }
int64_t rt_gguf_n_kv(const rt_gguf *g) { return g->n_kv; }
int64_t rt_gguf_n_tensors(const rt_gguf *g) { return g->n_tensors; }

int64_t rt_gguf_find_key(const rt_gguf *g, const char *key)
{
    return names_find(g->key_tab, g->key_mask, key, strlen(key));
}

static const gguf_kv *kv_at(const rt_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

rt_gguf_str rt_gguf_key(const rt_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? kv->key : (rt_gguf_str){"", 0};
}

rt_gguf_vtype rt_gguf_kv_type(const rt_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? kv->type : RT_GGUF_UINT8;
}

rt_gguf_vtype rt_gguf_arr_type(const rt_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == RT_GGUF_ARRAY ? kv->arr_type : RT_GGUF_UINT8;
}

uint64_t rt_gguf_arr_len(const rt_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == RT_GGUF_ARRAY ? kv->arr_len : 0;
}

const void *rt_gguf_kv_raw(const rt_gguf *g, int64_t i, uint64_t *n_bytes)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv) {
        *n_bytes = 0;
        return NULL;
    }
    *n_bytes = kv->val_bytes;
    return kv->type == RT_GGUF_ARRAY ? kv->val - 12 : kv->val;
}

/* The key's entry, or a failure naming what is wrong. */
static loupe_status find_kv(const rt_gguf *g, const char *key, const gguf_kv **out,
                            loupe_err *err)
{
    int64_t i = rt_gguf_find_key(g, key);
    if (i < 0)
        return loupe_fail(err, LOUPE_ERR_NOT_FOUND, "%s: key '%s' is missing", g->path, key);
    *out = &g->kv[i];
    return LOUPE_OK;
}

static loupe_status wrong_type(const rt_gguf *g, const char *key, rt_gguf_vtype t,
                               const char *expected, loupe_err *err)
{
    return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: key '%s' is a%s %s, expected %s", g->path, key,
                      t == RT_GGUF_INT8 || t == RT_GGUF_INT16 || t == RT_GGUF_INT32 ||
                              t == RT_GGUF_INT64 || t == RT_GGUF_ARRAY
                          ? "n" : "",
                      rt_gguf_vtype_name(t), expected);
}

/* The integer value of `key` in both readings (see read_int); fails when absent or not an
 * integer. Shared by the integer getters, which differ only in the range they accept. */
static loupe_status get_int(const rt_gguf *g, const char *key, bool *is_signed, bool *neg,
                            uint64_t *u, int64_t *s, loupe_err *err)
{
    const gguf_kv *kv = NULL;
    loupe_status st = find_kv(g, key, &kv, err);
    if (st)
        return st;
    if (!vtype_is_int(kv->type))
        return wrong_type(g, key, kv->type, "an integer", err);
    *is_signed = vtype_is_signed(kv->type);
    read_int(kv->type, kv->val, neg, u, s);
    return LOUPE_OK;
}

loupe_status rt_gguf_get_u64(const rt_gguf *g, const char *key, uint64_t *out, loupe_err *err)
{
    bool is_signed = false, neg = false;
    uint64_t u = 0;
    int64_t s = 0;
    loupe_status st = get_int(g, key, &is_signed, &neg, &u, &s, err);
    if (st)
        return st;
    if (neg)
        return loupe_fail(err, LOUPE_ERR_RANGE, "%s: key '%s' is %" PRId64
                          ", expected a non-negative value", g->path, key, s);
    *out = u;
    return LOUPE_OK;
}

loupe_status rt_gguf_get_i64(const rt_gguf *g, const char *key, int64_t *out, loupe_err *err)
{
    bool is_signed = false, neg = false;
    uint64_t u = 0;
    int64_t s = 0;
    loupe_status st = get_int(g, key, &is_signed, &neg, &u, &s, err);
    if (st)
        return st;
    if (!is_signed && u > INT64_MAX)
        return loupe_fail(err, LOUPE_ERR_RANGE, "%s: key '%s' is %" PRIu64
                          ", too large for a signed 64-bit integer", g->path, key, u);
    *out = s;
    return LOUPE_OK;
}

loupe_status rt_gguf_get_f64(const rt_gguf *g, const char *key, double *out, loupe_err *err)
{
    const gguf_kv *kv = NULL;
    loupe_status st = find_kv(g, key, &kv, err);
    if (st)
        return st;
    if (kv->type == RT_GGUF_FLOAT32 || kv->type == RT_GGUF_FLOAT64) {
        *out = read_float(kv->type, kv->val);
        return LOUPE_OK;
    }
    if (!vtype_is_int(kv->type))
        return wrong_type(g, key, kv->type, "a number", err);
    bool neg;
    uint64_t u;
    int64_t s;
    read_int(kv->type, kv->val, &neg, &u, &s);
    *out = neg ? (double)s : (double)u;
    return LOUPE_OK;
}

loupe_status rt_gguf_get_bool(const rt_gguf *g, const char *key, bool *out, loupe_err *err)
{
    const gguf_kv *kv = NULL;
    loupe_status st = find_kv(g, key, &kv, err);
    if (st)
        return st;
    if (kv->type != RT_GGUF_BOOL)
        return wrong_type(g, key, kv->type, "a bool", err);
    *out = kv->val[0] != 0;
    return LOUPE_OK;
}

loupe_status rt_gguf_get_str(const rt_gguf *g, const char *key, rt_gguf_str *out, loupe_err *err)
{
    const gguf_kv *kv = NULL;
    loupe_status st = find_kv(g, key, &kv, err);
    if (st)
        return st;
    if (kv->type != RT_GGUF_STRING)
        return wrong_type(g, key, kv->type, "a string", err);
    out->len = rd64(kv->val);
    out->ptr = (const char *)kv->val + 8;
    return LOUPE_OK;
}

/* The array entry at kv with element idx in range, or a failure. */
static loupe_status arr_elem(const rt_gguf *g, int64_t kv_i, uint64_t idx, const gguf_kv **out,
                             loupe_err *err)
{
    const gguf_kv *kv = kv_at(g, kv_i);
    if (!kv)
        return loupe_fail(err, LOUPE_ERR_RANGE, "%s: no key #%" PRId64, g->path, kv_i);
    if (kv->type != RT_GGUF_ARRAY)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: key '%.*s' is a %s, not an array", g->path,
                          shown(kv->key.len), kv->key.ptr, rt_gguf_vtype_name(kv->type));
    if (idx >= kv->arr_len)
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "%s: index %" PRIu64 " is past the end of array '%.*s' (%" PRIu64
                          " elements)", g->path, idx, shown(kv->key.len), kv->key.ptr, kv->arr_len);
    *out = kv;
    return LOUPE_OK;
}

loupe_status rt_gguf_arr_i64(const rt_gguf *g, int64_t kv_i, uint64_t idx, int64_t *out,
                             loupe_err *err)
{
    const gguf_kv *kv = NULL;
    loupe_status st = arr_elem(g, kv_i, idx, &kv, err);
    if (st)
        return st;
    if (!vtype_is_int(kv->arr_type) && kv->arr_type != RT_GGUF_BOOL)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: array '%.*s' holds %s, not integers",
                          g->path, shown(kv->key.len), kv->key.ptr,
                          rt_gguf_vtype_name(kv->arr_type));
    const uint8_t *p = kv->val + idx * vtype_size(kv->arr_type);
    if (kv->arr_type == RT_GGUF_BOOL) {
        *out = p[0];
        return LOUPE_OK;
    }
    bool neg;
    uint64_t u;
    int64_t s;
    read_int(kv->arr_type, p, &neg, &u, &s);
    if (!vtype_is_signed(kv->arr_type) && u > INT64_MAX)
        return loupe_fail(err, LOUPE_ERR_RANGE, "%s: element %" PRIu64 " of '%.*s' is too large",
                          g->path, idx, shown(kv->key.len), kv->key.ptr);
    *out = s;
    return LOUPE_OK;
}

loupe_status rt_gguf_arr_f64(const rt_gguf *g, int64_t kv_i, uint64_t idx, double *out,
                             loupe_err *err)
{
    const gguf_kv *kv = NULL;
    loupe_status st = arr_elem(g, kv_i, idx, &kv, err);
    if (st)
        return st;
    const uint8_t *p = kv->val + idx * vtype_size(kv->arr_type);
    if (kv->arr_type == RT_GGUF_FLOAT32 || kv->arr_type == RT_GGUF_FLOAT64) {
        *out = read_float(kv->arr_type, p);
        return LOUPE_OK;
    }
    if (!vtype_is_int(kv->arr_type))
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: array '%.*s' holds %s, not numbers",
                          g->path, shown(kv->key.len), kv->key.ptr,
                          rt_gguf_vtype_name(kv->arr_type));
    bool neg;
    uint64_t u;
    int64_t s;
    read_int(kv->arr_type, p, &neg, &u, &s);
    *out = neg ? (double)s : (double)u;
    return LOUPE_OK;
}

loupe_status rt_gguf_arr_str(const rt_gguf *g, int64_t kv_i, uint64_t idx, rt_gguf_str *out,
                             loupe_err *err)
{
    const gguf_kv *kv = NULL;
    loupe_status st = arr_elem(g, kv_i, idx, &kv, err);
    if (st)
        return st;
    if (kv->arr_type != RT_GGUF_STRING)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: array '%.*s' holds %s, not strings",
                          g->path, shown(kv->key.len), kv->key.ptr,
                          rt_gguf_vtype_name(kv->arr_type));
    const uint8_t *p = kv->val + kv->str_off[idx];
    out->len = rd64(p);
    out->ptr = (const char *)p + 8;
    return LOUPE_OK;
}

const void *rt_gguf_arr_data(const rt_gguf *g, int64_t kv_i, size_t *elem_size)
{
    const gguf_kv *kv = kv_at(g, kv_i);
    if (!kv || kv->type != RT_GGUF_ARRAY || !vtype_size(kv->arr_type)) {
        *elem_size = 0;
        return NULL;
    }
    *elem_size = vtype_size(kv->arr_type);
    return kv->val;
}

const rt_gguf_tensor *rt_gguf_tensor_at(const rt_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const rt_gguf_tensor *rt_gguf_find_tensor(const rt_gguf *g, const char *name)
{
    int64_t i = names_find(g->tensor_tab, g->tensor_mask, name, strlen(name));
    return i >= 0 ? &g->tensors[i] : NULL;
}
