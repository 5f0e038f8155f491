/* .fbin / .ibin: round trip, and refusal (with a sentence) of truncated, padded, absurd and
 * non-finite files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anns/anns.h"
#include "common/test_util.h"

static void write_raw(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(p, 1, n, f) == n);
    fclose(f);
}

int main(void)
{
    test_rng r;
    test_rng_seed(&r, test_seed());
    loupe_err err;
    loupe_err_clear(&err);
    char path[512];
    snprintf(path, sizeof path, "%s/anns_fbin_%d.fbin", test_tmpdir(),
             (int)(test_rng_u64(&r) % 100000));
    enum { N = 37, D = 5 };
    float v[N * D], *back = NULL;
    int32_t iv[N * D], *iback = NULL;
    for (int i = 0; i < N * D; i++) {
        v[i] = test_rng_normal(&r);
        iv[i] = (int32_t)(test_rng_u64(&r) % 100000);
    }
    int64_t n = 0;
    int d = 0;
    CHECK(ann_fbin_write(path, v, N, D, &err) == LOUPE_OK);
    CHECK(ann_fbin_read(path, &back, &n, &d, &err) == LOUPE_OK);
    CHECK(n == N && d == D && back && !memcmp(back, v, sizeof v));
    free(back);
    back = NULL;
    CHECK(ann_ibin_write(path, iv, N, D, &err) == LOUPE_OK);
    CHECK(ann_ibin_read(path, &iback, &n, &d, &err) == LOUPE_OK);
    CHECK(iback && !memcmp(iback, iv, sizeof iv));
    free(iback);

    unsigned char buf[8 + sizeof v + 4];
    uint32_t hdr[2] = {N, D};
    memcpy(buf, hdr, 8);
    memcpy(buf + 8, v, sizeof v);
    write_raw(path, buf, 8 + sizeof v - 4); /* truncated */
    CHECK(ann_fbin_read(path, &back, &n, &d, &err) == LOUPE_ERR_FORMAT && !back);
    CHECK(strstr(err.msg, "bytes") != NULL);
    write_raw(path, buf, sizeof buf); /* trailing bytes */
    CHECK(ann_fbin_read(path, &back, &n, &d, &err) == LOUPE_ERR_FORMAT && !back);
    write_raw(path, buf, 5); /* shorter than the header */
    CHECK(ann_fbin_read(path, &back, &n, &d, &err) == LOUPE_ERR_FORMAT && !back);
    uint32_t absurd[2] = {0xFFFFFFF0u, 0xFFFFu * 16};
    memcpy(buf, absurd, 8);
    write_raw(path, buf, sizeof buf);
    CHECK(ann_fbin_read(path, &back, &n, &d, &err) == LOUPE_ERR_FORMAT && !back);
    CHECK(strstr(err.msg, "header claims") != NULL);
    memcpy(buf, hdr, 8);
    float nan = NAN;
    memcpy(buf + 8 + 4 * 7, &nan, 4);
    write_raw(path, buf, 8 + sizeof v);
    CHECK(ann_fbin_read(path, &back, &n, &d, &err) == LOUPE_ERR_FORMAT && !back);
    CHECK(strstr(err.msg, "not finite") != NULL);
    CHECK(ann_fbin_read("/nonexistent/x.fbin", &back, &n, &d, &err) == LOUPE_ERR_IO);
    remove(path);
    return test_summary("test_anns_fbin");
}
