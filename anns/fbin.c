/*
 * big-ann-benchmarks vector files: .fbin (f32) and .ibin (i32), each u32 n, u32 d (little-endian)
 * then n·d row-major elements. Readers trust nothing: the file size must be exactly what the
 * header claims, and n, d must be sane, before anything is allocated.
 */
#include "anns/ann_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static loupe_status bin_read(const char *path, void **data, int64_t *n, int *d, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    unsigned char hdr[8];
    void *buf = NULL;
    struct stat st;
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) != 0) {
        rc = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    if (fread(hdr, 1, 8, f) != 8) {
        rc = loupe_fail(err, LOUPE_ERR_FORMAT, "%s: shorter than the 8-byte header", path);
        goto done;
    }
    uint32_t un, ud;
    memcpy(&un, hdr, 4);
    memcpy(&ud, hdr + 4, 4);
    if (un == 0 || un > INT32_MAX || ud == 0 || ud > 65536) {
        rc = loupe_fail(err, LOUPE_ERR_FORMAT,
                        "%s: header claims %u vectors of dimension %u (need 1..%d and 1..65536)",
                        path, un, ud, INT32_MAX);
        goto done;
    }
    uint64_t bytes = (uint64_t)un * ud * 4;
    if ((uint64_t)st.st_size != 8 + bytes) {
        rc = loupe_fail(err, LOUPE_ERR_FORMAT,
                        "%s: %u × %u vectors need %llu bytes, the file has %lld", path, un, ud,
                        (unsigned long long)(8 + bytes), (long long)st.st_size);
        goto done;
    }
    buf = malloc(bytes);
    if (!buf) {
        rc = loupe_fail(err, LOUPE_ERR_NOMEM, "%s: no memory for %llu bytes", path,
                        (unsigned long long)bytes);
        goto done;
    }
    if (fread(buf, 1, bytes, f) != bytes) {
        rc = loupe_fail(err, LOUPE_ERR_IO, "%s: short read", path);
        goto done;
    }
    *data = buf;
    buf = NULL;
    *n = un;
    *d = (int)ud;
done:
    free(buf);
    if (f)
        fclose(f);
    return rc;
}

loupe_status ann_fbin_read(const char *path, float **data, int64_t *n, int *d, loupe_err *err)
{
    void *p = NULL;
    loupe_status rc = bin_read(path, &p, n, d, err);
    if (rc == LOUPE_OK) {
        float *v = p;
        for (int64_t i = 0; i < *n * *d; i++)
            if (!isfinite(v[i])) {
                free(p);
                return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: value %lld is not finite", path,
                                  (long long)i);
            }
    }
    *data = p;
    return rc;
}

loupe_status ann_ibin_read(const char *path, int32_t **data, int64_t *n, int *d, loupe_err *err)
{
    void *p = NULL;
    loupe_status rc = bin_read(path, &p, n, d, err);
    *data = p;
    return rc;
}

static loupe_status bin_write(const char *path, const void *data, int64_t n, int d,
                              loupe_err *err)
{
    if (n <= 0 || n > INT32_MAX || d <= 0 || d > 65536)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: cannot write %lld vectors of dimension %d",
                          path, (long long)n, d);
    FILE *f = fopen(path, "wb");
    uint32_t hdr[2] = {(uint32_t)n, (uint32_t)d};
    size_t count = (size_t)n * (size_t)d;
    if (!f || fwrite(hdr, 4, 2, f) != 2 || fwrite(data, 4, count, f) != count) {
        loupe_status rc = loupe_fail(err, LOUPE_ERR_IO, "%s: cannot write: %s", path,
                                     strerror(errno));
        if (f)
            fclose(f);
        return rc;
    }
    if (fclose(f) != 0)
        return loupe_fail(err, LOUPE_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return LOUPE_OK;
}

loupe_status ann_fbin_write(const char *path, const float *data, int64_t n, int d, loupe_err *err)
{
    return bin_write(path, data, n, d, err);
}

loupe_status ann_ibin_write(const char *path, const int32_t *data, int64_t n, int d,
                            loupe_err *err)
{
    return bin_write(path, data, n, d, err);
}
