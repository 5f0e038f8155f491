/* Tiny test harness shared by the unit tests: CHECK macros that count failures, a seeded RNG,
 * and a temporary directory. A test's main() returns test_summary(): 0 pass, 1 fail, 77 skip. */
#ifndef LOUPE_TEST_UTIL_H
#define LOUPE_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int test_failures;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            test_failures++;                                                            \
        }                                                                               \
    } while (0)

#define CHECK_MSG(cond, ...)                                                            \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            test_failures++;                                                            \
        }                                                                               \
    } while (0)

/* xorshift64* — deterministic per seed; tests print their seed so a failure can be replayed. */
typedef struct {
    uint64_t s;
} test_rng;

void test_rng_seed(test_rng *r, uint64_t seed);
uint64_t test_rng_u64(test_rng *r);
float test_rng_uniform(test_rng *r); /* [0, 1) */
float test_rng_normal(test_rng *r);

/* Seed from $LOUPE_TEST_SEED or the clock, printed to stderr. */
uint64_t test_seed(void);
/* A directory for this test's files ($LOUPE_TEST_TMP or /tmp). */
const char *test_tmpdir(void);

/* max|a − b| / max|b| over n values (max|a − b| when b is all zero); infinity if a has a NaN or
 * an infinity. The relative error the logits and attention checks use. */
double test_rel_diff(const float *a, const float *b, size_t n);

int test_summary(const char *name);

#endif /* LOUPE_TEST_UTIL_H */
