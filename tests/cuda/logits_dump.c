/*
 * logits_dump MODEL.gguf OUT_PREFIX N_DECODE BACKENDS ID [ID...]: writes loupe's logits for the
 * given token ids as .npy files, for comparison with another implementation (hf_parity.py).
 *
 * BACKENDS is a comma list of cpu, cuda-f32, cuda-bf16 (the CUDA engine in RT_CUDA_F32 or
 * RT_CUDA_BF16 precision). For each backend the first n − N_DECODE ids are prefilled (logits of
 * every position kept) and the last N_DECODE ids are decoded one by one, so both code paths
 * appear in the output: row t of OUT_PREFIX-BACKEND.npy, (n, n_vocab) float32, is the logits
 * after ids[0..t]. The model is loaded once; the engines/contexts one after another.
 *
 * A helper program, not a test: it prints one line per file written and exits 1 with the error
 * sentence when a backend fails (e.g. cuda-* in a build without CUDA), after writing the others.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

/* Writes x (rows, cols) float32 as a version-1.0 .npy file (little-endian hosts only). */
static int npy_write(const char *path, const float *x, size_t rows, size_t cols)
{
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }", rows, cols);
    if (n < 0 || n > 100)
        return -1;
    /* Magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, '\n' last. */
    size_t total = 10 + (size_t)n + 1, padded = (total + 63) / 64 * 64;
    memset(hdr + n, ' ', padded - total);
    hdr[padded - 10 - 1] = '\n';
    const uint16_t hlen = (uint16_t)(padded - 10);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    const unsigned char len[2] = {(unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    int ok = fwrite(magic, 1, 8, f) == 8 && fwrite(len, 1, 2, f) == 2 &&
             fwrite(hdr, 1, hlen, f) == hlen && fwrite(x, sizeof *x, rows * cols, f) == rows * cols;
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : -1;
}

/* Logits of ids[0..n) through the CPU backend: prefill n − nd, decode nd. */
static loupe_status run_cpu(const rt_model *m, const int32_t *ids, size_t n, size_t nd, float *out,
                            loupe_err *err)
{
    const size_t V = rt_model_hparams(m)->n_vocab;
    rt_ctx_params cp;
    rt_ctx_params_init(&cp);
    cp.n_ctx = (uint32_t)n;
    rt_ctx *c = NULL;
    loupe_status st = rt_ctx_create(m, &cp, &c, err);
    if (!st)
        st = rt_ctx_prefill(c, ids, n - nd, out, err);
    for (size_t t = n - nd; !st && t < n; t++) {
        st = rt_ctx_decode(c, ids[t], err);
        if (!st)
            memcpy(out + t * V, rt_ctx_logits(c), V * sizeof *out);
    }
    rt_ctx_destroy(c);
    return st;
}

/* The same through the CUDA engine in the given precision. */
static loupe_status run_cuda(const rt_model *m, rt_cuda_dtype prec, const int32_t *ids, size_t n,
                             size_t nd, float *out, loupe_err *err)
{
    const size_t V = rt_model_hparams(m)->n_vocab;
    rt_cuda_params p;
    rt_cuda_params_init(&p);
    p.n_ctx = (uint32_t)n;
    p.precision = prec;
    rt_cuda_engine *e = NULL;
    loupe_status st = rt_cuda_engine_create(m, &p, &e, err);
    if (!st)
        st = rt_cuda_prefill(e, ids, n - nd, out, err);
    for (size_t t = n - nd; !st && t < n; t++) {
        st = rt_cuda_decode(e, ids[t], err);
        const float *lg = st ? NULL : rt_cuda_logits(e, err);
        if (!st && !lg)
            st = LOUPE_ERR_GPU;
        if (lg)
            memcpy(out + t * V, lg, V * sizeof *out);
    }
    rt_cuda_engine_destroy(e);
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: logits_dump MODEL.gguf OUT_PREFIX N_DECODE cpu,cuda-f32,cuda-bf16 "
                        "ID [ID...]\n");
        return 2;
    }
    const size_t n = (size_t)(argc - 5), nd = strtoul(argv[3], NULL, 10);
    if (nd >= n) {
        fprintf(stderr, "logits_dump: N_DECODE (%zu) must be less than the number of ids (%zu)\n",
                nd, n);
        return 2;
    }
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_model *m = NULL;
    int32_t *ids = malloc(n * sizeof *ids);
    float *out = NULL;
    int rc = 0;
    if (!ids || rt_gguf_open(argv[1], &g, &err) || rt_model_load(g, &m, &err)) {
        fprintf(stderr, "logits_dump: %s\n", ids ? loupe_err_message(&err) : "out of memory");
        rc = 1;
        goto done;
    }
    const size_t V = rt_model_hparams(m)->n_vocab;
    for (size_t i = 0; i < n; i++) {
        char *end;
        long v = strtol(argv[5 + i], &end, 10);
        if (*end || v < 0 || (size_t)v >= V) {
            fprintf(stderr, "logits_dump: token id '%s' is not in [0, %zu)\n", argv[5 + i], V);
            rc = 2;
            goto done;
        }
        ids[i] = (int32_t)v;
    }
    out = malloc(n * V * sizeof *out);
    if (!out) {
        fprintf(stderr, "logits_dump: out of memory for %zu x %zu logits\n", n, V);
        rc = 1;
        goto done;
    }
    char list[256];
    snprintf(list, sizeof list, "%s", argv[4]);
    for (char *save = NULL, *b = strtok_r(list, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
        loupe_status st;
        if (!strcmp(b, "cpu")) {
            st = run_cpu(m, ids, n, nd, out, &err);
        } else if (!strcmp(b, "cuda-f32") || !strcmp(b, "cuda-bf16")) {
            st = run_cuda(m, !strcmp(b, "cuda-f32") ? RT_CUDA_F32 : RT_CUDA_BF16, ids, n, nd, out,
                          &err);
        } else {
            fprintf(stderr, "logits_dump: unknown backend '%s' (cpu, cuda-f32, cuda-bf16)\n", b);
            rc = 2;
            continue;
        }
        if (st) {
            fprintf(stderr, "logits_dump: %s: %s\n", b, loupe_err_message(&err));
            rc = 1;
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s-%s.npy", argv[2], b);
        if (npy_write(path, out, n, V)) {
            fprintf(stderr, "logits_dump: cannot write %s\n", path);
            rc = 1;
            continue;
        }
        printf("%s: %zu x %zu logits (%zu prefilled, %zu decoded)\n", path, n, V, n - nd, nd);
    }
done:
    free(ids);
    free(out);
    rt_model_destroy(m);
    rt_gguf_close(g);
    return rc;
}
