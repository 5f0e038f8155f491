/*
 * Attention partials on the CPU: softmax attention of one query over a subset of keys, returning
 * the output and the log-sum-exp of the scores, and the exact merge of two such partials.
 *
 * A partial is computed with an online softmax over blocks of RT_ATTN_BLOCK keys: the block's
 * scores go to a stack array, the running maximum is raised once per block (rescaling the
 * accumulator), then the block's values are added. No heap memory, one pass over K and V, and the
 * result equals the two-pass softmax up to float rounding.
 */
#include "runtime/model_impl.h"

#include <math.h>
#include <string.h>

enum { RT_ATTN_BLOCK = 64 };

void rt_attn_partial(const float *q, const float *k, const float *v, uint32_t head_dim,
                     const int32_t *idx, size_t n, float scale, float *out, float *lse)
{
    memset(out, 0, head_dim * sizeof *out);
    float m = -INFINITY, sum = 0.0f;
    float s[RT_ATTN_BLOCK];
    for (size_t j0 = 0; j0 < n; j0 += RT_ATTN_BLOCK) {
        size_t nb = n - j0 < RT_ATTN_BLOCK ? n - j0 : RT_ATTN_BLOCK;
        float bm = -INFINITY;
        for (size_t j = 0; j < nb; j++) {
            size_t row = idx ? (size_t)idx[j0 + j] : j0 + j;
            s[j] = scale * rt_dot_f32(q, k + row * head_dim, head_dim);
            if (s[j] > bm)
                bm = s[j];
        }
        if (bm > m) {
            float r = expf(m - bm); /* 0 on the first block (m = -inf) */
            sum *= r;
            for (uint32_t d = 0; d < head_dim; d++)
                out[d] *= r;
            m = bm;
        }
        for (size_t j = 0; j < nb; j++) {
            size_t row = idx ? (size_t)idx[j0 + j] : j0 + j;
            float p = expf(s[j] - m);
            const float *vr = v + row * head_dim;
            sum += p;
            for (uint32_t d = 0; d < head_dim; d++)
                out[d] += p * vr[d];
        }
    }
    if (n == 0 || !(sum > 0)) {
        *lse = -INFINITY;
        return;
    }
    float inv = 1.0f / sum;
    for (uint32_t d = 0; d < head_dim; d++)
        out[d] *= inv;
    *lse = m + logf(sum);
}

void rt_attn_merge(const float *o1, float l1, const float *o2, float l2, uint32_t head_dim,
                   float *out, float *lse)
{
    if (l1 == -INFINITY && l2 == -INFINITY) {
        for (uint32_t d = 0; d < head_dim; d++)
            out[d] = 0.0f;
        *lse = -INFINITY;
        return;
    }
    float m = l1 > l2 ? l1 : l2;
    float w1 = expf(l1 - m), w2 = expf(l2 - m); /* the larger is exactly 1 */
    float inv = 1.0f / (w1 + w2);
    float a = w1 * inv, b = w2 * inv;
    for (uint32_t d = 0; d < head_dim; d++)
        out[d] = a * o1[d] + b * o2[d];
    *lse = m + logf(w1 + w2);
}
