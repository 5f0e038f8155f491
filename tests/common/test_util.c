/* Shared test helpers (see test_util.h). */
#include "common/test_util.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

int test_failures = 0;

void test_rng_seed(test_rng *r, uint64_t seed)
{
    r->s = seed ? seed : 0x9E3779B97F4A7C15ull;
}

uint64_t test_rng_u64(test_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float test_rng_uniform(test_rng *r)
{
    return (float)(test_rng_u64(r) >> 40) / (float)(1ull << 24);
}

float test_rng_normal(test_rng *r)
{
    float u1 = test_rng_uniform(r), u2 = test_rng_uniform(r);
    if (u1 < 1e-7f)
        u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

uint64_t test_seed(void)
{
    const char *s = getenv("LOUPE_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    fprintf(stderr, "seed %llu (set LOUPE_TEST_SEED to replay)\n", (unsigned long long)seed);
    return seed;
}

const char *test_tmpdir(void)
{
    const char *d = getenv("LOUPE_TEST_TMP");
    return d && *d ? d : "/tmp";
}

int test_summary(const char *name)
{
    if (test_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
        return 1;
    }
    fprintf(stderr, "%s: ok\n", name);
    return 0;
}

double test_rel_diff(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return mb > 0 ? md / mb : md;
}
