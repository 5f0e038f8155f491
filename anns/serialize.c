/*
 * Index serialisation: the index's arrays, written flat so that a mapped file IS the index.
 *
 * Layout (little-endian, every array 64-byte aligned):
 *   header  (64 bytes)  magic "LOUPEANN", u32 version, u32 type, u64 n, u32 dim, u32 degree,
 *                       u32 n_entry, u32 nlist, u32 n_arrays, u32 reserved, u64 checksum of
 *                       every byte after the header, u64 total size
 *   table   n_arrays × {u32 tag, u32 elem_size, u64 offset, u64 count}
 *   arrays  ADJ_OFF u32 (n+1) · ADJ i32 (adj_off[n]) · ENTRY i32 (n_entry) · CENTROIDS f32
 *           (nlist, dim) · LIST_OFF u32 (nlist+1) · LIST_IDS i32 (n) · STATS f64 (9) ·
 *           PARAMS u32 (6: build_k, degree, fill, pivot_cap, prune rule, alpha's f32 bits; graphs)
 * Versions: 1 had no PARAMS (a graph read from it grows with the default build options and the
 * header's degree); 2 adds them. Both are read; 2 is written.
 * A grown graph (grow.c: lists in regions padded with -1) is written compacted to CSR, so a file
 * never holds -1 and a reader cannot tell a grown index from a built one.
 * Loading checks everything a search would trust: magic, version, sizes, offsets inside the
 * buffer, the checksum, monotone offsets ending where they must, every id inside [0, n). A file
 * that passes cannot make a search read out of bounds.
 */
#include "anns/ann_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ANN_MAGIC "LOUPEANN"
enum { ANN_VERSION = 2, ANN_HDR = 64, ANN_ENTRY_SZ = 24, ANN_MAX_ARRAYS = 16, ANN_NSTATS = 9,
       ANN_NPARAMS = 6 };
enum { T_ADJ_OFF = 1, T_ADJ, T_ENTRY, T_CENTROIDS, T_LIST_OFF, T_LIST_IDS, T_STATS, T_PARAMS };

typedef struct {
    uint32_t tag, elem;
    uint64_t off, count;
    const void *src;
} arr_desc;

static uint64_t checksum(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* The arrays of ix in file order; returns their count. stats_buf (ANN_NSTATS) and params_buf
 * (ANN_NPARAMS) are filled. A grown graph's lists have no source (src NULL): they are compacted
 * while writing. */
static int describe(const ann_index *ix, arr_desc *a, double *stats_buf, uint32_t *params_buf)
{
    int na = 0;
    if (ix->type == ANN_GRAPH || ix->type == ANN_KEYGRAPH) {
        uint64_t edges = 0;
        if (ix->grow)
            for (int64_t u = 0; u < ix->n; u++)
                edges += (uint64_t)ann_graph_degree(ix, u);
        else
            edges = ix->adj_off[ix->n];
        a[na++] = (arr_desc){T_ADJ_OFF, 4, 0, (uint64_t)ix->n + 1, ix->grow ? NULL : ix->adj_off};
        a[na++] = (arr_desc){T_ADJ, 4, 0, edges, ix->grow ? NULL : ix->adj};
        a[na++] = (arr_desc){T_ENTRY, 4, 0, (uint64_t)ix->n_entry, ix->entry};
    } else if (ix->type == ANN_IVF) {
        a[na++] = (arr_desc){T_CENTROIDS, 4, 0, (uint64_t)ix->nlist * (uint64_t)ix->dim,
                             ix->centroids};
        a[na++] = (arr_desc){T_LIST_OFF, 4, 0, (uint64_t)ix->nlist + 1, ix->list_off};
        a[na++] = (arr_desc){T_LIST_IDS, 4, 0, (uint64_t)ix->n, ix->list_ids};
    }
    const ann_build_stats *s = &ix->stats;
    double v[ANN_NSTATS] = {s->knn_s, s->projection_s, s->repair_s, s->total_s,
                            (double)s->n_build_queries, (double)s->n_untouched,
                            (double)s->n_repaired, (double)s->n_unreachable, (double)s->n_edges};
    memcpy(stats_buf, v, sizeof v);
    a[na++] = (arr_desc){T_STATS, 8, 0, ANN_NSTATS, stats_buf};
    /* PARAMS last: a version-1 file is this one less its last array. */
    if (ix->type == ANN_GRAPH || ix->type == ANN_KEYGRAPH) {
        const ann_graph_params *gp = &ix->gp;
        uint32_t alpha;
        memcpy(&alpha, &gp->alpha, 4);
        uint32_t pv[ANN_NPARAMS] = {(uint32_t)gp->build_k, (uint32_t)gp->degree,
                                    (uint32_t)gp->fill, (uint32_t)gp->pivot_cap,
                                    (uint32_t)gp->prune, alpha};
        memcpy(params_buf, pv, sizeof pv);
        a[na++] = (arr_desc){T_PARAMS, 4, 0, ANN_NPARAMS, params_buf};
    }
    size_t pos = align64(ANN_HDR + (size_t)na * ANN_ENTRY_SZ);
    for (int i = 0; i < na; i++) {
        a[i].off = pos;
        pos = align64(pos + a[i].count * a[i].elem);
    }
    return na;
}

size_t ann_index_serialized_size(const ann_index *ix)
{
    arr_desc a[ANN_MAX_ARRAYS];
    double st[ANN_NSTATS];
    uint32_t gp[ANN_NPARAMS];
    int na = describe(ix, a, st, gp);
    return align64(a[na - 1].off + a[na - 1].count * a[na - 1].elem);
}

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Writes a grown graph's lists as CSR: offsets (tag T_ADJ_OFF) or the ids (T_ADJ). */
static void write_compacted(const ann_index *ix, uint32_t tag, unsigned char *dst)
{
    uint32_t pos = 0;
    for (int64_t u = 0; u < ix->n; u++) {
        int deg = ann_graph_degree(ix, u);
        if (tag == T_ADJ_OFF)
            put32(dst + 4 * (size_t)u, pos);
        else
            memcpy(dst + 4 * (size_t)pos, ix->adj + ix->adj_off[u], 4 * (size_t)deg);
        pos += (uint32_t)deg;
    }
    if (tag == T_ADJ_OFF)
        put32(dst + 4 * (size_t)ix->n, pos);
}

loupe_status ann_index_serialize(const ann_index *ix, void *buf, size_t size, loupe_err *err)
{
    arr_desc a[ANN_MAX_ARRAYS];
    double st[ANN_NSTATS];
    uint32_t gp[ANN_NPARAMS];
    int na = describe(ix, a, st, gp);
    size_t need = ann_index_serialized_size(ix);
    if (size < need)
        return loupe_fail(err, LOUPE_ERR_INVALID, "index serialisation needs %zu bytes, got %zu",
                          need, size);
    unsigned char *p = buf;
    memset(p, 0, need);
    memcpy(p, ANN_MAGIC, 8);
    put32(p + 8, ANN_VERSION);
    put32(p + 12, (uint32_t)ix->type);
    put64(p + 16, (uint64_t)ix->n);
    put32(p + 24, (uint32_t)ix->dim);
    put32(p + 28, (uint32_t)ix->degree);
    put32(p + 32, (uint32_t)ix->n_entry);
    put32(p + 36, (uint32_t)ix->nlist);
    put32(p + 40, (uint32_t)na);
    put64(p + 56, need);
    for (int i = 0; i < na; i++) {
        unsigned char *e = p + ANN_HDR + (size_t)i * ANN_ENTRY_SZ;
        put32(e, a[i].tag);
        put32(e + 4, a[i].elem);
        put64(e + 8, a[i].off);
        put64(e + 16, a[i].count);
        if (a[i].src)
            memcpy(p + a[i].off, a[i].src, a[i].count * a[i].elem);
        else
            write_compacted(ix, a[i].tag, p + a[i].off);
    }
    put64(p + 48, checksum(p + ANN_HDR, need - ANN_HDR));
    return LOUPE_OK;
}

loupe_status ann_index_save(const ann_index *ix, const char *path, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    size_t size = ann_index_serialized_size(ix);
    char tmp[4096];
    FILE *f = NULL;
    void *buf = malloc(size);
    if (!buf)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: no memory for %zu bytes of index", path,
                          size);
    if ((rc = ann_index_serialize(ix, buf, size, err)) != LOUPE_OK)
        goto done;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        rc = loupe_fail(err, LOUPE_ERR_INVALID, "%s: path too long", path);
        goto done;
    }
    f = fopen(tmp, "wb");
    if (!f || fwrite(buf, 1, size, f) != size || fflush(f) != 0) {
        rc = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
        goto done;
    }
    if (fclose(f) != 0) {
        f = NULL;
        rc = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
        goto done;
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        rc = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot rename into place: %s", path,
                        strerror(errno));
done:
    if (f) {
        fclose(f);
        remove(tmp);
    }
    free(buf);
    return rc;
}

/* ---- Loading ----------------------------------------------------------------------------- */

static loupe_status check_offsets(const uint32_t *off, uint64_t count, uint64_t end,
                                  const char *what, const char *name, loupe_err *err)
{
    if (off[0] != 0 || off[count - 1] != end)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: %s offsets run from %u to %u, expected 0 to %llu", what, name,
                          off[0], off[count - 1], (unsigned long long)end);
    for (uint64_t i = 1; i < count; i++)
        if (off[i] < off[i - 1])
            return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: %s offsets decrease at %llu", what,
                              name, (unsigned long long)i);
    return LOUPE_OK;
}

static loupe_status check_ids(const int32_t *ids, uint64_t count, int64_t n, const char *what,
                              const char *name, loupe_err *err)
{
    for (uint64_t i = 0; i < count; i++)
        if (ids[i] < 0 || ids[i] >= n)
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: %s entry %llu is %d, outside the %lld keys", what, name,
                              (unsigned long long)i, ids[i], (long long)n);
    return LOUPE_OK;
}

/* The graph's build options for growth (PARAMS), range-checked. */
static loupe_status read_params(const unsigned char *a, uint64_t count, const char *what,
                                ann_graph_params *gp, loupe_err *err)
{
    uint32_t v[ANN_NPARAMS];
    if (count != ANN_NPARAMS)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: %llu graph parameters, expected %d", what,
                          (unsigned long long)count, ANN_NPARAMS);
    memcpy(v, a, sizeof v);
    float alpha;
    memcpy(&alpha, &v[5], 4);
    if (v[0] < 1 || v[0] > 65536 || v[1] < 1 || v[1] > 65536 || v[2] > v[1] ||
        v[3] > INT32_MAX || v[4] > ANN_PRUNE_IP || !(alpha > 0 && alpha < 1e30f))
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: graph parameters out of range (top-k %u, degree %u, fill %u, "
                          "pivot cap %u, prune rule %u)",
                          what, v[0], v[1], v[2], v[3], v[4]);
    gp->build_k = (int)v[0];
    gp->degree = (int)v[1];
    gp->fill = (int)v[2];
    gp->pivot_cap = (int)v[3];
    gp->prune = (ann_prune_rule)v[4];
    gp->alpha = alpha;
    return LOUPE_OK;
}

loupe_status ann_index_from_buffer(const void *buf, size_t size, const char *what,
                                   const ann_keys *keys, ann_index **out, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    const unsigned char *p = buf;
    ann_index *ix = NULL;
    const void *arr[T_PARAMS + 1] = {0};
    uint64_t cnt[T_PARAMS + 1] = {0};
    *out = NULL;
    ann_graph_params gp;
    ann_graph_params_init(&gp, NULL);
    if (size < ANN_HDR || memcmp(p, ANN_MAGIC, 8) != 0)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: not a loupe index (%s)", what,
                          size < ANN_HDR ? "shorter than its header" : "bad magic");
    if ((uintptr_t)buf % 8)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: index buffer is not 8-byte aligned", what);
    uint32_t version = get32(p + 8), type = get32(p + 12), dim = get32(p + 24);
    uint32_t degree = get32(p + 28), n_entry = get32(p + 32), nlist = get32(p + 36);
    uint32_t na = get32(p + 40);
    uint64_t n = get64(p + 16), sum = get64(p + 48), total = get64(p + 56);
    if (version < 1 || version > ANN_VERSION)
        return loupe_fail(err, LOUPE_ERR_UNSUPPORTED,
                          "%s: index format version %u, this build reads versions 1 to %d", what,
                          version, ANN_VERSION);
    uint32_t last_tag = version >= 2 ? T_PARAMS : T_STATS;
    if (degree >= 1 && degree <= 65536) { /* version 1: the build's degree, default options */
        gp.degree = (int)degree;
        gp.fill = gp.fill < gp.degree ? gp.fill : gp.degree;
    }
    if (total != size)
        return loupe_fail(err, LOUPE_ERR_FORMAT,
                          "%s: truncated or padded: header says %llu bytes, found %zu", what,
                          (unsigned long long)total, size);
    if (type > ANN_KEYGRAPH || na > ANN_MAX_ARRAYS ||
        ANN_HDR + (uint64_t)na * ANN_ENTRY_SZ > size)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: bad header (type %u, %u arrays)", what,
                          type, na);
    if (n != (uint64_t)keys->n || dim != (uint32_t)keys->dim)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "%s: index is over %llu keys of dimension %u, the keys given are %lld "
                          "of dimension %d",
                          what, (unsigned long long)n, dim, (long long)keys->n, keys->dim);
    if (checksum(p + ANN_HDR, size - ANN_HDR) != sum)
        return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: checksum mismatch (corrupt file)", what);
    for (uint32_t i = 0; i < na; i++) {
        const unsigned char *e = p + ANN_HDR + (size_t)i * ANN_ENTRY_SZ;
        uint32_t tag = get32(e), elem = get32(e + 4);
        uint64_t off = get64(e + 8), count = get64(e + 16);
        uint32_t want_elem = tag == T_STATS ? 8 : 4;
        if (tag < T_ADJ_OFF || tag > last_tag || elem != want_elem || off % 8 ||
            off < ANN_HDR || off > size || count > (size - off) / elem || arr[tag])
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: array %u (tag %u, %u-byte elements, %llu at offset %llu) does "
                              "not fit the %zu-byte file or repeats",
                              what, i, tag, elem, (unsigned long long)count,
                              (unsigned long long)off, size);
        arr[tag] = p + off;
        cnt[tag] = count;
    }
    if (type == ANN_GRAPH || type == ANN_KEYGRAPH) {
        if (!arr[T_ADJ_OFF] || !arr[T_ADJ] || !arr[T_ENTRY] || cnt[T_ADJ_OFF] != n + 1 ||
            cnt[T_ENTRY] != n_entry || n_entry == 0)
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: graph arrays missing or of the wrong length", what);
        if ((rc = check_offsets(arr[T_ADJ_OFF], n + 1, cnt[T_ADJ], what, "neighbour", err)) ||
            (rc = check_ids(arr[T_ADJ], cnt[T_ADJ], (int64_t)n, what, "neighbour", err)) ||
            (rc = check_ids(arr[T_ENTRY], n_entry, (int64_t)n, what, "entry point", err)))
            return rc;
        if (arr[T_PARAMS] && (rc = read_params(arr[T_PARAMS], cnt[T_PARAMS], what, &gp, err)))
            return rc;
    } else if (type == ANN_IVF) {
        if (!arr[T_CENTROIDS] || !arr[T_LIST_OFF] || !arr[T_LIST_IDS] || nlist == 0 ||
            nlist > n || cnt[T_CENTROIDS] != (uint64_t)nlist * dim ||
            cnt[T_LIST_OFF] != (uint64_t)nlist + 1 || cnt[T_LIST_IDS] != n)
            return loupe_fail(err, LOUPE_ERR_FORMAT,
                              "%s: IVF arrays missing or of the wrong length", what);
        if ((rc = check_offsets(arr[T_LIST_OFF], nlist + 1ull, n, what, "list", err)) ||
            (rc = check_ids(arr[T_LIST_IDS], n, (int64_t)n, what, "list", err)))
            return rc;
    }
    ix = calloc(1, sizeof *ix);
    if (!ix)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: no memory for an index", what);
    ix->type = (ann_type)type;
    ix->keys = keys;
    ix->n = (int64_t)n;
    ix->dim = (int)dim;
    ix->degree = (int)degree;
    ix->n_entry = arr[T_ENTRY] ? (int)n_entry : 0;
    ix->entry = arr[T_ENTRY];
    ix->adj_off = arr[T_ADJ_OFF];
    ix->adj = arr[T_ADJ];
    ix->gp = gp;
    ix->nlist = arr[T_CENTROIDS] ? (int)nlist : 0;
    ix->centroids = arr[T_CENTROIDS];
    ix->list_off = arr[T_LIST_OFF];
    ix->list_ids = arr[T_LIST_IDS];
    if (arr[T_STATS] && cnt[T_STATS] >= ANN_NSTATS) {
        double v[ANN_NSTATS];
        memcpy(v, arr[T_STATS], sizeof v);
        ann_build_stats *s = &ix->stats;
        s->knn_s = v[0];
        s->projection_s = v[1];
        s->repair_s = v[2];
        s->total_s = v[3];
        s->n_build_queries = (int64_t)v[4];
        s->n_untouched = (int64_t)v[5];
        s->n_repaired = (int64_t)v[6];
        s->n_unreachable = (int64_t)v[7];
        s->n_edges = (int64_t)v[8];
    }
    *out = ix;
    return LOUPE_OK;
}

loupe_status ann_index_map(const char *path, const ann_keys *keys, ann_index **out,
                           loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    void *base = MAP_FAILED;
    size_t size = 0;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    size = (size_t)st.st_size;
    if (size < ANN_HDR) {
        rc = loupe_fail(err, LOUPE_ERR_FORMAT,
                        "%s: %zu bytes is too short for a loupe index (header is %d)", path, size,
                        ANN_HDR);
        goto done;
    }
    base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
        rc = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        goto done;
    }
    if ((rc = ann_index_from_buffer(base, size, path, keys, out, err)) != LOUPE_OK)
        goto done;
    (*out)->map_base = base;
    (*out)->map_size = size;
    base = MAP_FAILED;
done:
    if (base != MAP_FAILED)
        munmap(base, size);
    if (fd >= 0)
        close(fd);
    return rc;
}
