/*
 * Rotary position embedding as GGUF files expect it.
 *
 * Pair i (0 ≤ i < rope_dim/2) rotates by θ_i(p) = p · base^(−2i/rope_dim) / f_i, f_i being
 * rope_freqs.weight[i] when the file has one (Llama-3.1) and 1 otherwise. Which dims form a pair
 * depends on the architecture: `llama` files store Q/K permuted by the converter so that pairs are
 * adjacent, (x[2i], x[2i+1]) (ggml's "normal" mode); `qwen2` pairs halves, (x[i], x[i+rope_dim/2])
 * (NeoX mode). Dims past rope_dim are left alone.
 *
 * Scaling follows llama.cpp: linear divides positions by the factor (freq_scale = 1/factor);
 * YaRN mixes the interpolated angle θ·freq_scale with the extrapolated θ by a ramp over pair index
 * between the correction dims of beta_fast and beta_slow, and scales cos/sin by
 * mscale = attn_factor · (1 + 0.1 ln(factor)), which scales attention logits by mscale².
 * Angles are computed in double so long positions keep their precision.
 */
#include "runtime/model_impl.h"

#include <math.h>
#include <stdlib.h>

/* Pair index at which the rotation of frequency `n_rot` turns fewer than n_rot times over the
 * original context (llama.cpp's ggml_rope_yarn_corr_dim). */
static double yarn_corr_dim(double n_dims, double n_ctx_orig, double n_rot, double base)
{
    return n_dims * log(n_ctx_orig / (n_rot * 2 * M_PI)) / (2 * log(base));
}

loupe_status rt_rope_init(rt_rope *r, const rt_hparams *hp, const float *rope_freqs,
                          loupe_err *err)
{
    uint32_t dims = hp->rope_dim ? hp->rope_dim : hp->head_dim;
    double base = hp->rope_freq_base > 0 ? hp->rope_freq_base : 10000.0;
    r->n_pairs = dims / 2;
    r->style = hp->rope_style;
    r->inv_freq = malloc((r->n_pairs ? r->n_pairs : 1) * sizeof *r->inv_freq);
    if (!r->inv_freq)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for RoPE tables");
    for (uint32_t i = 0; i < r->n_pairs; i++) {
        double f = pow(base, -2.0 * i / dims);
        if (rope_freqs)
            f /= rope_freqs[i];
        r->inv_freq[i] = f;
    }
    r->freq_scale = 1.0;
    r->ext_factor = 0.0;
    r->corr_lo = r->corr_hi = 0.0;
    r->mscale = 1.0;
    double factor = hp->rope_scale_factor > 0 ? hp->rope_scale_factor : 1.0;
    if (hp->rope_scaling == RT_ROPE_SCALING_LINEAR) {
        r->freq_scale = 1.0 / factor;
    } else if (hp->rope_scaling == RT_ROPE_SCALING_YARN) {
        r->freq_scale = 1.0 / factor;
        r->ext_factor = hp->yarn_ext_factor >= 0 ? hp->yarn_ext_factor : 1.0;
        double attn = hp->yarn_attn_factor > 0 ? hp->yarn_attn_factor : 1.0;
        double fast = hp->yarn_beta_fast > 0 ? hp->yarn_beta_fast : 32.0;
        double slow = hp->yarn_beta_slow > 0 ? hp->yarn_beta_slow : 1.0;
        double orig = hp->rope_orig_ctx ? hp->rope_orig_ctx : hp->n_ctx_train;
        double lo = floor(yarn_corr_dim(dims, orig, fast, base));
        double hi = ceil(yarn_corr_dim(dims, orig, slow, base));
        r->corr_lo = lo > 0 ? lo : 0;
        r->corr_hi = hi < dims - 1 ? hi : dims - 1;
        r->mscale = attn;
        if (r->ext_factor != 0)
            r->mscale *= 1.0 + 0.1 * log(factor);
    }
    return LOUPE_OK;
}

void rt_rope_free(rt_rope *r)
{
    free(r->inv_freq);
    r->inv_freq = NULL;
}

void rt_rope_angles(const rt_rope *r, uint32_t pos, float *cs)
{
    for (uint32_t i = 0; i < r->n_pairs; i++) {
        double extrap = (double)pos * r->inv_freq[i];
        double theta = extrap * r->freq_scale;
        if (r->ext_factor != 0) {
            double span = r->corr_hi - r->corr_lo;
            double y = (i - r->corr_lo) / (span > 0.001 ? span : 0.001);
            double ramp = (1.0 - fmin(1.0, fmax(0.0, y))) * r->ext_factor;
            theta = theta * (1 - ramp) + extrap * ramp;
        }
        cs[2 * i] = (float)(cos(theta) * r->mscale);
        cs[2 * i + 1] = (float)(sin(theta) * r->mscale);
    }
}

void rt_rope_apply(const rt_rope *r, const float *cs, float *x, uint32_t head_dim)
{
    (void)head_dim;
    uint32_t n = r->n_pairs;
    uint32_t step = r->style == RT_ROPE_NEOX ? 1 : 2;  /* first element of pair i */
    uint32_t off = r->style == RT_ROPE_NEOX ? n : 1;   /* distance to its partner */
    for (uint32_t i = 0; i < n; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        float *a = x + i * step, *b = a + off;
        float x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
    }
}
