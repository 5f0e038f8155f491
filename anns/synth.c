/*
 * Synthetic attention-like vectors for tests and benchmarks, until vectors dumped from a model
 * are available. What it imitates, and why each part matters for an index:
 *   - hidden states = topic (a sticky Markov chain over topics) + span (an AR(1) walk, so nearby
 *     tokens share content) + noise: attention is content-addressed, so a query's top keys share
 *     its content and cluster in spans of text;
 *   - separate query and key projections (W_k = 0.8 W_q + 0.6 R): q·k is large for related
 *     content, but keys and queries are different distributions;
 *   - per-channel key scales g (lognormal) with query channels scaled 1/g: q·k is unchanged but
 *     key-space geometry (what IVF and a key-only graph see) is distorted — the OOD effect;
 *   - a large key bias and a query bias in the low-frequency channels; a few "sink" keys aligned
 *     with the query bias that score high for every query (like the first tokens of a prompt);
 *   - RoPE by position (interleaved pairs, base 500000 as in Llama-3), so scores depend on
 *     relative position;
 *     content weighs most in the low-frequency pairs, which RoPE barely turns at long range.
 * Every row is drawn from its own seeded stream, so output is identical for any thread count.
 */
#include "anns/ann_impl.h"

#include <stdlib.h>

enum { SYN_TOPICS = 48, SYN_SINKS = 4 };

static float rnorm(uint64_t *s)
{
    double u1 = ((double)(ann_rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(ann_rng_next(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void rope(float *v, int d, double pos)
{
    for (int i = 0; i < d / 2; i++) {
        double th = pos * pow(500000.0, -2.0 * i / d);
        float c = (float)cos(th), s = (float)sin(th), a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
    }
}

/* out (d) = W (d, D) · x (D) */
static void matvec(const float *W, const float *x, int d, float *out)
{
    for (int r = 0; r < d; r++)
        out[r] = ann_dot_f32(W + (int64_t)r * d, x, d);
}

loupe_status ann_synth_generate(const ann_synth_opts *o, float **keys_out, float **bq_out,
                                float **tq_out, loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    int64_t n = o->n_keys, nt = o->n_test;
    int d = o->dim;
    *keys_out = *bq_out = *tq_out = NULL;
    if (n <= SYN_SINKS || nt < 0 || d < 8 || d % 2 || d > 4096)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "synthetic set: need more than %d keys, an even dimension 8..4096 "
                          "(got %lld keys, dimension %d)",
                          SYN_SINKS, (long long)n, d);
    int64_t lo = o->test_src_lo, hi = o->test_src_hi;
    if (lo == 0 && hi == 0)
        hi = n;
    if (lo < 0 || hi > n || lo >= hi)
        return loupe_fail(err, LOUPE_ERR_INVALID, "synthetic set: test source range %lld..%lld "
                          "is not inside 0..%lld", (long long)lo, (long long)hi, (long long)n);
    uint64_t s = o->seed * 0x9E3779B97F4A7C15ull + 17;
    float *topics = malloc((size_t)SYN_TOPICS * d * sizeof(float));
    float *Wq = malloc((size_t)d * d * sizeof(float)), *Wk = malloc((size_t)d * d * sizeof(float));
    float *g = malloc((size_t)d * sizeof(float)), *bk = calloc((size_t)d, sizeof(float));
    float *bqv = calloc((size_t)d, sizeof(float));
    int32_t *topic = malloc((size_t)n * sizeof(int32_t));
    float *span = malloc((size_t)n * d * sizeof(float));
    float *K = malloc((size_t)n * d * sizeof(float)), *Q = malloc((size_t)n * d * sizeof(float));
    float *T = malloc((size_t)(nt > 0 ? nt : 1) * d * sizeof(float));
    if (!topics || !Wq || !Wk || !g || !bk || !bqv || !topic || !span || !K || !Q || !T) {
        rc = loupe_fail(err, LOUPE_ERR_NOMEM, "synthetic set: no memory for %lld vectors",
                        (long long)n);
        goto done;
    }
    float inv = 1.0f / sqrtf((float)d);
    for (int i = 0; i < SYN_TOPICS * d; i++)
        topics[i] = rnorm(&s);
    for (int i = 0; i < d * d; i++)
        Wq[i] = rnorm(&s) * inv;
    for (int i = 0; i < d * d; i++)
        Wk[i] = 0.8f * Wq[i] + 0.6f * rnorm(&s) * inv;
    /* Content goes mostly to the low-frequency pairs (output rows 2i, 2i+1 with large i), as in
     * trained models: high-frequency pairs rotate fast with distance and carry position, not
     * meaning, so content placed there would be scrambled by RoPE. */
    for (int r = 0; r < d; r++) {
        float f = (float)(r / 2) / (float)(d / 2), w = 0.2f + 1.6f * f * f;
        for (int c = 0; c < d; c++) {
            Wq[(int64_t)r * d + c] *= w;
            Wk[(int64_t)r * d + c] *= w;
        }
    }
    for (int i = 0; i < d / 2; i++) /* one scale per RoPE pair, so rotation commutes with it */
        g[2 * i] = g[2 * i + 1] = expf(0.6f * rnorm(&s));
    for (int i = 0; i < d; i++)
        bk[i] = 2.0f * rnorm(&s);
    for (int i = 3 * d / 4; i < d; i++) /* low-frequency channels survive RoPE at any distance */
        bqv[i] = 1.0f * rnorm(&s);
    int32_t z = 0;
    for (int64_t t = 0; t < n; t++) {
        if (t == 0 || ann_rng_next(&s) % 256 == 0)
            z = (int32_t)(ann_rng_next(&s) % SYN_TOPICS);
        topic[t] = z;
    }
    /* Span state: an AR(1) walk (correlation ~ 30 tokens), so neighbouring tokens share content
     * the way a sentence or a code block does; attention retrieves such spans. */
    for (int i = 0; i < d; i++)
        span[i] = rnorm(&s);
    for (int64_t t = 1; t < n; t++)
        for (int i = 0; i < d; i++)
            span[t * d + i] = 0.97f * span[(t - 1) * d + i] + 0.243f * rnorm(&s);

#pragma omp parallel
    {
        float *x = malloc((size_t)d * sizeof(float)), *v = malloc((size_t)d * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n + nt; t++) {
            if (!x || !v)
                continue;
            uint64_t r = o->seed ^ ((uint64_t)t * 0xD1B54A32D192ED03ull + 1);
            int test = t >= n;
            int64_t src = -1;
            int32_t zt;
            if (test) {
                uint64_t pick = ann_rng_next(&r);
                src = lo + (int64_t)(pick % (uint64_t)(hi - lo));
                zt = topic[src];
            } else {
                zt = topic[t];
            }
            /* Hidden state: topic + own noise; a test query recalls token src's state. */
            uint64_t rs = o->seed ^ ((uint64_t)(test ? src : t) * 0xD1B54A32D192ED03ull + 1);
            if (test)
                ann_rng_next(&rs);
            const float *sp = span + (test ? src : t) * d;
            for (int i = 0; i < d; i++)
                x[i] = 0.5f * topics[(int64_t)zt * d + i] + 0.7f * sp[i] + 0.5f * rnorm(&rs);
            if (test)
                for (int i = 0; i < d; i++)
                    x[i] += 0.4f * rnorm(&r);
            matvec(Wq, x, d, v);
            for (int i = 0; i < d; i++)
                v[i] = v[i] / g[i] + bqv[i];
            if (o->rope)
                rope(v, d, (double)t);
            memcpy(test ? T + (t - n) * d : Q + t * d, v, (size_t)d * sizeof(float));
            if (test)
                continue;
            matvec(Wk, x, d, v);
            for (int i = 0; i < d; i++)
                v[i] = v[i] * g[i] + bk[i];
            if (t < SYN_SINKS) /* sinks: aligned with every query's bias */
                for (int i = 0; i < d; i++)
                    v[i] = 0.3f * v[i] + 6.0f * bqv[i];
            if (o->rope)
                rope(v, d, (double)t);
            memcpy(K + t * d, v, (size_t)d * sizeof(float));
        }
        free(x);
        free(v);
    }
    *keys_out = K;
    *bq_out = Q;
    *tq_out = T;
    K = Q = T = NULL;
done:
    free(topics);
    free(Wq);
    free(Wk);
    free(g);
    free(bk);
    free(bqv);
    free(topic);
    free(span);
    free(K);
    free(Q);
    free(T);
    return rc;
}
