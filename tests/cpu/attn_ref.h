/* Double-precision attention reference shared by the CPU attention tests. */
#ifndef LOUPE_TEST_ATTN_REF_H
#define LOUPE_TEST_ATTN_REF_H

#include <stddef.h>
#include <stdint.h>

/* Two-pass softmax of q (d) over key/value rows idx[0..n-1] (or 0..n-1 when idx is NULL):
 * out (d) and its log-sum-exp; n = 0 gives zeros and -inf. */
void ref_attn(const float *q, const float *k, const float *v, int d, const int32_t *idx, size_t n,
              double scale, double *out, double *lse);
/* max|a - b| / max|b| over d elements (absolute when b is all zero); inf if a is not finite. */
double max_rel(const float *a, const double *b, int d);

#endif /* LOUPE_TEST_ATTN_REF_H */
