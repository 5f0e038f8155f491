/*
 * An independent reference forward pass for the CPU backend's tests: plain C, double precision,
 * naive loops. It reads the GGUF metadata keys itself (not rt_hparams) and the weights only through
 * rt_dequantize, so a bug in the backend's binding, RoPE, attention or matmul cannot hide in it.
 */
#ifndef LOUPE_TEST_REF_FORWARD_H
#define LOUPE_TEST_REF_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

typedef struct ref_model ref_model;

/* Loads and dequantises every tensor of `g` to double; NULL on failure (reason on stderr). */
ref_model *ref_model_load(const rt_gguf *g);
void ref_model_free(ref_model *r);
int ref_model_n_vocab(const ref_model *r);

/* Logits of every position of ids[0..n) into out (n, n_vocab). */
void ref_forward(const ref_model *r, const int32_t *ids, size_t n, double *out);

/* max |a - b| / max |b| over a row of n (a = backend, b = reference). */
double ref_rel_err(const float *a, const double *b, size_t n);

#endif
