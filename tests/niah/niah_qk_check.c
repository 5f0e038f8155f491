/*
 * Checks the files `loupe dump-qk` wrote for one layer (driven by dump_qk.sh):
 *   - shapes: keys (n_keys, head_dim) per KV head, queries (n_q, head_dim) per query head with
 *     n_q positions in queries.pos.ibin, decode (N, head_dim), n_keys + N = the tokens;
 *   - keys equal rt_ctx_keys of that layer and queries equal a fresh capture, on a prefill of the
 *     same tokens here (one thread, another chunk size), and capture does not change the logits;
 *   - the softmax of q·k/sqrt(d) over keys 0..p, applied to the cached values, reproduces the
 *     attention output rt_attn_partial computes for that query;
 *   - for layer 0, queries and keys equal an independent computation from the weights:
 *     RoPE(W · rmsnorm(embedding)) in double, interleaved pairs, base^(-2i/d).
 * usage: niah_qk_check MODEL DIR LAYER N_DECODE
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

static float *read_f(const char *dir, const char *name, int64_t *n, int *d)
{
    char p[4096];
    loupe_err err = {0};
    float *x = NULL;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (ann_fbin_read(p, &x, n, d, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    return x;
}

static double max_rel(const float *a, const float *b, size_t n)
{
    double m = 0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return m / s;
}

/* A matrix row of tensor `name` (ne = [n_in, n_out]) as doubles. */
static void tensor_row(const rt_gguf *g, const char *name, uint64_t row, double *out)
{
    const rt_gguf_tensor *t = rt_gguf_find_tensor(g, name);
    size_t n = t->ne[0];
    float *tmp = malloc(n * sizeof *tmp);
    rt_dequantize(t->type, (const unsigned char *)t->data + row * rt_type_row_bytes(t->type, n),
                  tmp, n);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[i];
    free(tmp);
}

/* Projection `w` (blk.0.attn_q / attn_k) of token `id` at `pos`, head `h`, after RoPE. */
static void ref_layer0(const rt_gguf *g, const rt_hparams *hp, const char *w, int32_t id,
                       uint32_t pos, uint32_t h, double *out)
{
    uint32_t E = hp->n_embd, hd = hp->head_dim;
    double *x = malloc(E * sizeof *x), *nw = malloc(E * sizeof *nw), *row = malloc(E * sizeof *row);
    tensor_row(g, "token_embd.weight", (uint64_t)id, x);
    tensor_row(g, "blk.0.attn_norm.weight", 0, nw);
    double ss = 0;
    for (uint32_t i = 0; i < E; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / E + hp->norm_eps);
    for (uint32_t i = 0; i < E; i++)
        x[i] *= inv * nw[i];
    for (uint32_t j = 0; j < hd; j++) {
        tensor_row(g, w, (uint64_t)h * hd + j, row);
        double s = 0;
        for (uint32_t i = 0; i < E; i++)
            s += row[i] * x[i];
        out[j] = s;
    }
    for (uint32_t i = 0; i < hd / 2; i++) {
        double th = pos * pow((double)hp->rope_freq_base, -2.0 * i / hd);
        double a = out[2 * i], b = out[2 * i + 1];
        out[2 * i] = a * cos(th) - b * sin(th);
        out[2 * i + 1] = a * sin(th) + b * cos(th);
    }
    free(x);
    free(nw);
    free(row);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: niah_qk_check MODEL DIR LAYER N_DECODE\n");
        return 2;
    }
    const char *dir = argv[2];
    uint32_t L = (uint32_t)strtoul(argv[3], NULL, 10);
    int64_t n_dec = strtoll(argv[4], NULL, 10);
    test_rng r;
    test_rng_seed(&r, test_seed());
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    rt_ctx *c = NULL, *c2 = NULL;
    if (rt_gguf_open(argv[1], &g, &err) || rt_model_load(g, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const rt_hparams *hp = rt_model_hparams(m);
    const uint32_t hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv;
    char name[256];
    int64_t n_tok = 0, n_pos = 0, n, nr;
    int d;
    int32_t *tok = NULL, *pos = NULL;
    snprintf(name, sizeof name, "%s/L%u.tokens.ibin", dir, L);
    CHECK(ann_ibin_read(name, &tok, &n_tok, &d, &err) == LOUPE_OK && d == 1);
    snprintf(name, sizeof name, "%s/L%u.queries.pos.ibin", dir, L);
    CHECK(ann_ibin_read(name, &pos, &n_pos, &d, &err) == LOUPE_OK && d == 1);
    if (!tok || !pos)
        return test_summary("niah_qk_check");
    int64_t n_keys = n_tok - n_dec;
    fprintf(stderr, "layer %u: %lld tokens, %lld keys, %lld queries, %lld decode\n", L,
            (long long)n_tok, (long long)n_keys, (long long)n_pos, (long long)n_dec);

    /* The same prefill here, with capture, and once without to compare logits. */
    rt_ctx_params cp;
    rt_ctx_params_init(&cp);
    cp.n_ctx = (uint32_t)n_tok;
    cp.n_threads = 1;
    cp.n_batch = 96;
    float *cap = malloc((size_t)n_tok * nh * hd * sizeof *cap);
    uint32_t n_vocab = hp->n_vocab;
    float *l1 = malloc(n_vocab * sizeof *l1);
    CHECK(rt_ctx_create(m, &cp, &c, &err) == LOUPE_OK);
    CHECK(rt_ctx_create(m, &cp, &c2, &err) == LOUPE_OK);
    CHECK(rt_ctx_set_capture(c, hp->n_layer, cap, &err) == LOUPE_ERR_RANGE);
    CHECK(rt_ctx_set_capture(c, L, cap, &err) == LOUPE_OK);
    CHECK(rt_ctx_prefill(c, tok, (size_t)n_tok, NULL, &err) == LOUPE_OK);
    CHECK(rt_ctx_prefill(c2, tok, (size_t)n_tok, NULL, &err) == LOUPE_OK);
    memcpy(l1, rt_ctx_logits(c), n_vocab * sizeof *l1);
    CHECK(!memcmp(l1, rt_ctx_logits(c2), n_vocab * sizeof *l1));

    for (uint32_t gk = 0; gk < nkv; gk++) {
        snprintf(name, sizeof name, "L%u.kvh%u.keys.fbin", L, gk);
        float *k = read_f(dir, name, &n, &d);
        CHECK(k && n == n_keys && d == (int)hd);
        if (k && n == n_keys)
            CHECK_MSG(max_rel(k, rt_ctx_keys(c, L, gk), (size_t)n * hd) < 1e-5, "keys kvh%u", gk);
        free(k);
    }
    int checked_attn = 0;
    for (uint32_t h = 0; h < nh; h++) {
        snprintf(name, sizeof name, "L%u.qh%u.queries.fbin", L, h);
        float *q = read_f(dir, name, &n, &d);
        CHECK(q && n == n_pos && d == (int)hd);
        if (!q || n != n_pos) {
            free(q);
            continue;
        }
        const float *K = rt_ctx_keys(c, L, h / (nh / nkv)), *V = rt_ctx_values(c, L, h / (nh / nkv));
        for (int64_t i = 0; i < n; i++) {
            CHECK(pos[i] >= 0 && pos[i] < n_keys && (i == 0 || pos[i] > pos[i - 1]));
            const float *want = cap + ((size_t)pos[i] * nh + h) * hd;
            if (max_rel(q + i * hd, want, hd) >= 1e-5) {
                CHECK_MSG(0, "query qh%u row %lld (position %d) differs", h, (long long)i, pos[i]);
                break;
            }
        }
        /* Attention weights from the files' vectors reproduce the attention output. */
        for (int t = 0; t < 4; t++) {
            int64_t i = (int64_t)(test_rng_uniform(&r) * (float)n);
            size_t p = (size_t)pos[i];
            double *w = malloc((p + 1) * sizeof *w), mx = -INFINITY, sum = 0;
            for (size_t j = 0; j <= p; j++) {
                double s = 0;
                for (uint32_t e = 0; e < hd; e++)
                    s += (double)q[i * hd + e] * K[j * hd + e];
                w[j] = s / sqrt((double)hd);
                mx = fmax(mx, w[j]);
            }
            for (size_t j = 0; j <= p; j++)
                sum += (w[j] = exp(w[j] - mx));
            float o_ref[512], o[512], lse;
            for (uint32_t e = 0; e < hd; e++) {
                double s = 0;
                for (size_t j = 0; j <= p; j++)
                    s += w[j] / sum * V[j * hd + e];
                o_ref[e] = (float)s;
            }
            rt_attn_partial(q + i * hd, K, V, hd, NULL, p + 1, 1.0f / sqrtf((float)hd), o, &lse);
            CHECK_MSG(max_rel(o, o_ref, hd) < 1e-4, "attention of qh%u at %zu", h, p);
            CHECK(fabs(lse - (mx + log(sum))) < 1e-3 * fmax(1.0, fabs(lse)));
            checked_attn++;
            free(w);
        }
        if (L == 0) { /* independent: from the weights */
            double ref[512];
            for (int t = 0; t < 3; t++) {
                int64_t i = (int64_t)(test_rng_uniform(&r) * (float)n);
                uint32_t p = (uint32_t)pos[i];
                ref_layer0(g, hp, "blk.0.attn_q.weight", tok[p], p, h, ref);
                float rf[512];
                for (uint32_t e = 0; e < hd; e++)
                    rf[e] = (float)ref[e];
                CHECK_MSG(max_rel(q + i * hd, rf, hd) < 1e-4, "layer-0 query qh%u at %u", h, p);
                ref_layer0(g, hp, "blk.0.attn_k.weight", tok[p], p, h / (nh / nkv), ref);
                for (uint32_t e = 0; e < hd; e++)
                    rf[e] = (float)ref[e];
                CHECK_MSG(max_rel(K + (size_t)p * hd, rf, hd) < 1e-4, "layer-0 key at %u", p);
            }
        }
        free(q);
        if (n_dec > 0) {
            snprintf(name, sizeof name, "L%u.qh%u.decode.fbin", L, h);
            float *dq = read_f(dir, name, &nr, &d);
            CHECK(dq && nr == n_dec && d == (int)hd);
            if (dq && nr == n_dec)
                for (int64_t i = 0; i < nr; i++)
                    CHECK(max_rel(dq + i * hd, cap + ((size_t)(n_keys + i) * nh + h) * hd, hd) <
                          1e-5);
            free(dq);
        }
    }
    CHECK(checked_attn == (int)nh * 4);
    free(cap);
    free(l1);
    free(tok);
    free(pos);
    rt_ctx_destroy(c);
    rt_ctx_destroy(c2);
    rt_model_destroy(m);
    rt_gguf_close(g);
    return test_summary("niah_qk_check");
}
