/* Shared double-precision attention reference (see attn_ref.h). */
#include "cpu/attn_ref.h"

#include <math.h>
#include <stdlib.h>

/* Double-precision reference over rows idx (or 0..n-1). */
void ref_attn(const float *q, const float *k, const float *v, int d, const int32_t *idx,
                     size_t n, double scale, double *out, double *lse)
{
    double mx = -INFINITY, sum = 0;
    double *s = malloc((n ? n : 1) * sizeof *s);
    for (size_t j = 0; j < n; j++) {
        size_t r = idx ? (size_t)idx[j] : j;
        double acc = 0;
        for (int i = 0; i < d; i++)
            acc += (double)q[i] * k[r * d + i];
        s[j] = acc * scale;
        mx = fmax(mx, s[j]);
    }
    for (int i = 0; i < d; i++)
        out[i] = 0;
    for (size_t j = 0; j < n; j++) {
        size_t r = idx ? (size_t)idx[j] : j;
        double p = exp(s[j] - mx);
        sum += p;
        for (int i = 0; i < d; i++)
            out[i] += p * v[r * d + i];
    }
    for (int i = 0; i < d && n; i++)
        out[i] /= sum;
    *lse = n ? mx + log(sum) : -INFINITY;
    free(s);
}

double max_rel(const float *a, const double *b, int d)
{
    double md = 0, mb = 0;
    for (int i = 0; i < d; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        md = fmax(md, fabs(a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0 ? md / mb : md;
}
