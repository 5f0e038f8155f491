/*
 * The reference forward pass (see ref_forward.h). Deliberately simple and slow: every matrix is
 * dequantised whole into doubles, attention is recomputed from scratch for every position with a
 * two-pass softmax, RoPE angles come straight from the formula. Written from the GGUF conventions,
 * not from the backend's code:
 *   - weights W of GGUF shape [n_in, n_out]: y[r] = Σ_i W[r*n_in + i] x[i];
 *   - llama rotates adjacent pairs (x[2i], x[2i+1]); qwen2 rotates (x[i], x[i + d/2]);
 *   - θ_i = p / (base^(2i/d) · f_i); linear scaling: θ/factor; YaRN: ramp between the correction
 *     dims of beta_fast/beta_slow and mscale = attn_factor(1 + 0.1 ln factor) on cos and sin.
 */
#include "cpu/ref_forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *ffn_norm, *wg, *wu, *wd;
} ref_layer;

struct ref_model {
    int qwen2;
    int n_layer, n_embd, n_head, n_kv, hd, n_ff, n_vocab, rope_dim;
    double eps, base, freq_scale, ext, mscale, corr_lo, corr_hi;
    double *embd, *out_norm, *out, *rope_freqs;
    ref_layer *L;
};

/* ---- Reading ------------------------------------------------------------------------------ */

static double *deq(const rt_gguf *g, const char *name, size_t want, int optional)
{
    const rt_gguf_tensor *t = rt_gguf_find_tensor(g, name);
    if (!t) {
        if (!optional)
            fprintf(stderr, "ref: missing tensor %s\n", name);
        return NULL;
    }
    if (t->n_elems != want) {
        fprintf(stderr, "ref: tensor %s has %llu elements, want %zu\n", name,
                (unsigned long long)t->n_elems, want);
        return NULL;
    }
    float *f = malloc(want * sizeof *f);
    double *d = malloc(want * sizeof *d);
    rt_dequantize(t->type, t->data, f, want);
    for (size_t i = 0; i < want; i++)
        d[i] = f[i];
    free(f);
    return d;
}

static double key_num(const rt_gguf *g, const char *arch, const char *suffix, double dflt)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    double v;
    if (rt_gguf_find_key(g, key) < 0 || rt_gguf_get_f64(g, key, &v, NULL) != LOUPE_OK)
        return dflt;
    return v;
}

ref_model *ref_model_load(const rt_gguf *g)
{
    rt_gguf_str s;
    if (rt_gguf_get_str(g, "general.architecture", &s, NULL) != LOUPE_OK || s.len > 30) {
        fprintf(stderr, "ref: no architecture\n");
        return NULL;
    }
    char arch[32];
    memcpy(arch, s.ptr, s.len);
    arch[s.len] = '\0';
    ref_model *r = calloc(1, sizeof *r);
    r->qwen2 = !strcmp(arch, "qwen2");
    r->n_layer = (int)key_num(g, arch, "block_count", 0);
    r->n_embd = (int)key_num(g, arch, "embedding_length", 0);
    r->n_head = (int)key_num(g, arch, "attention.head_count", 0);
    r->n_kv = (int)key_num(g, arch, "attention.head_count_kv", r->n_head);
    r->hd = (int)key_num(g, arch, "attention.key_length", r->n_embd / r->n_head);
    r->n_ff = (int)key_num(g, arch, "feed_forward_length", 0);
    r->rope_dim = (int)key_num(g, arch, "rope.dimension_count", r->hd);
    r->eps = key_num(g, arch, "attention.layer_norm_rms_epsilon", 1e-5);
    r->base = key_num(g, arch, "rope.freq_base", 10000.0);
    double n_ctx_train = key_num(g, arch, "context_length", 0);
    const rt_gguf_tensor *te = rt_gguf_find_tensor(g, "token_embd.weight");
    r->n_vocab = te ? (int)te->ne[1] : 0;

    r->freq_scale = 1;
    r->ext = 0;
    r->mscale = 1;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (rt_gguf_get_str(g, key, &s, NULL) == LOUPE_OK) {
        double factor = key_num(g, arch, "rope.scaling.factor", 1.0);
        if (s.len == 6 && !memcmp(s.ptr, "linear", 6)) {
            r->freq_scale = 1.0 / factor;
        } else if (s.len == 4 && !memcmp(s.ptr, "yarn", 4)) {
            double orig = key_num(g, arch, "rope.scaling.original_context_length", n_ctx_train);
            double fast = key_num(g, arch, "rope.scaling.yarn_beta_fast", 32.0);
            double slow = key_num(g, arch, "rope.scaling.yarn_beta_slow", 1.0);
            double attn = key_num(g, arch, "rope.scaling.yarn_attn_factor",
                                  key_num(g, arch, "rope.scaling.attn_factor", 1.0));
            r->freq_scale = 1.0 / factor;
            r->ext = key_num(g, arch, "rope.scaling.yarn_ext_factor", 1.0);
            /* the pair index where a frequency completes n_rot turns over orig positions */
            double d = r->rope_dim;
            double lo = floor(d * log(orig / (fast * 2 * M_PI)) / (2 * log(r->base)));
            double hi = ceil(d * log(orig / (slow * 2 * M_PI)) / (2 * log(r->base)));
            r->corr_lo = lo < 0 ? 0 : lo;
            r->corr_hi = hi > d - 1 ? d - 1 : hi;
            r->mscale = attn * (1 + 0.1 * log(factor));
        }
    }

    size_t E = r->n_embd, nq = (size_t)r->n_head * r->hd, nkv = (size_t)r->n_kv * r->hd;
    size_t F = r->n_ff, V = r->n_vocab;
    int ok = r->n_layer > 0 && E > 0 && V > 0;
    ok = ok && (r->embd = deq(g, "token_embd.weight", E * V, 0));
    ok = ok && (r->out_norm = deq(g, "output_norm.weight", E, 0));
    if (ok) {
        r->out = deq(g, "output.weight", E * V, 1);
        r->rope_freqs = deq(g, "rope_freqs.weight", (size_t)r->rope_dim / 2, 1);
    }
    r->L = calloc((size_t)(r->n_layer > 0 ? r->n_layer : 1), sizeof *r->L);
    for (int l = 0; ok && l < r->n_layer; l++) {
        ref_layer *L = &r->L[l];
        char n[96];
#define T(s, size, opt) (snprintf(n, sizeof n, "blk.%d." s, l), deq(g, n, size, opt))
        ok = (L->attn_norm = T("attn_norm.weight", E, 0)) && (L->wq = T("attn_q.weight", E * nq, 0)) &&
             (L->wk = T("attn_k.weight", E * nkv, 0)) && (L->wv = T("attn_v.weight", E * nkv, 0)) &&
             (L->wo = T("attn_output.weight", nq * E, 0)) &&
             (L->ffn_norm = T("ffn_norm.weight", E, 0)) &&
             (L->wg = T("ffn_gate.weight", E * F, 0)) && (L->wu = T("ffn_up.weight", E * F, 0)) &&
             (L->wd = T("ffn_down.weight", F * E, 0));
        if (ok) {
            L->bq = T("attn_q.bias", nq, 1);
            L->bk = T("attn_k.bias", nkv, 1);
            L->bv = T("attn_v.bias", nkv, 1);
        }
#undef T
    }
    if (!ok) {
        ref_model_free(r);
        return NULL;
    }
    return r;
}

void ref_model_free(ref_model *r)
{
    if (!r)
        return;
    for (int l = 0; r->L && l < r->n_layer; l++) {
        ref_layer *L = &r->L[l];
        double *all[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq,
                         L->bk, L->bv, L->ffn_norm, L->wg, L->wu, L->wd};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free(all[i]);
    }
    free(r->L);
    free(r->embd);
    free(r->out_norm);
    free(r->out);
    free(r->rope_freqs);
    free(r);
}

int ref_model_n_vocab(const ref_model *r) { return r->n_vocab; }

/* ---- Computing ---------------------------------------------------------------------------- */

static void matvec(const double *W, const double *x, int n_in, int n_out, double *y)
{
    for (int r = 0; r < n_out; r++) {
        double s = 0;
        for (int i = 0; i < n_in; i++)
            s += W[(size_t)r * n_in + i] * x[i];
        y[r] = s;
    }
}

static void rmsnorm(const double *x, const double *w, int n, double eps, double *y)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * inv * w[i];
}

static void rope(const ref_model *r, double *v, int pos)
{
    int d = r->rope_dim;
    for (int i = 0; i < d / 2; i++) {
        double extrap = pos / pow(r->base, 2.0 * i / d);
        if (r->rope_freqs)
            extrap /= r->rope_freqs[i];
        double theta = extrap * r->freq_scale;
        if (r->ext != 0) {
            double y = (i - r->corr_lo) / fmax(0.001, r->corr_hi - r->corr_lo);
            double mix = (1 - fmin(1, fmax(0, y))) * r->ext;
            theta = theta * (1 - mix) + extrap * mix;
        }
        double c = cos(theta) * r->mscale, s = sin(theta) * r->mscale;
        int a = r->qwen2 ? i : 2 * i, b = r->qwen2 ? i + d / 2 : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

void ref_forward(const ref_model *r, const int32_t *ids, size_t n, double *out)
{
    int E = r->n_embd, hd = r->hd, nq = r->n_head * hd, nkv = r->n_kv * hd, F = r->n_ff;
    double *x = calloc(n * E, sizeof *x);
    double *K = calloc(n * nkv, sizeof *K), *Vc = calloc(n * nkv, sizeof *Vc);
    double *h = malloc(E * sizeof *h), *q = malloc(nq * sizeof *q), *a = malloc(nq * sizeof *a);
    double *o = malloc(E * sizeof *o), *g = malloc(F * sizeof *g), *u = malloc(F * sizeof *u);
    double *sc = malloc(n * sizeof *sc);
    for (size_t t = 0; t < n; t++)
        memcpy(x + t * E, r->embd + (size_t)ids[t] * E, E * sizeof *x);
    for (int l = 0; l < r->n_layer; l++) {
        const ref_layer *L = &r->L[l];
        /* Keys and values of every position first, then each position's attention. */
        for (size_t t = 0; t < n; t++) {
            rmsnorm(x + t * E, L->attn_norm, E, r->eps, h);
            matvec(L->wk, h, E, nkv, K + t * nkv);
            matvec(L->wv, h, E, nkv, Vc + t * nkv);
            for (int i = 0; L->bk && i < nkv; i++) {
                K[t * nkv + i] += L->bk[i];
                Vc[t * nkv + i] += L->bv[i];
            }
            for (int kh = 0; kh < r->n_kv; kh++)
                rope(r, K + t * nkv + kh * hd, (int)t);
        }
        for (size_t t = 0; t < n; t++) {
            rmsnorm(x + t * E, L->attn_norm, E, r->eps, h);
            matvec(L->wq, h, E, nq, q);
            for (int i = 0; L->bq && i < nq; i++)
                q[i] += L->bq[i];
            for (int qh = 0; qh < r->n_head; qh++) {
                double *qv = q + qh * hd;
                rope(r, qv, (int)t);
                int kh = qh / (r->n_head / r->n_kv);
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j <= t; j++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += qv[d] * K[j * nkv + kh * hd + d];
                    sc[j] = s / sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (size_t j = 0; j <= t; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (size_t j = 0; j <= t; j++)
                        acc += sc[j] * Vc[j * nkv + kh * hd + d];
                    a[qh * hd + d] = acc / sum;
                }
            }
            matvec(L->wo, a, nq, E, o);
            for (int i = 0; i < E; i++)
                x[t * E + i] += o[i];
            rmsnorm(x + t * E, L->ffn_norm, E, r->eps, h);
            matvec(L->wg, h, E, F, g);
            matvec(L->wu, h, E, F, u);
            for (int i = 0; i < F; i++)
                g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            matvec(L->wd, g, F, E, o);
            for (int i = 0; i < E; i++)
                x[t * E + i] += o[i];
        }
    }
    const double *W = r->out ? r->out : r->embd;
    for (size_t t = 0; t < n; t++) {
        rmsnorm(x + t * E, r->out_norm, E, r->eps, h);
        matvec(W, h, E, r->n_vocab, out + t * r->n_vocab);
    }
    free(x);
    free(K);
    free(Vc);
    free(h);
    free(q);
    free(a);
    free(o);
    free(g);
    free(u);
    free(sc);
}

double ref_rel_err(const float *a, const double *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY; /* fmax would skip a NaN */
        md = fmax(md, fabs(a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0 ? md / mb : md;
}
