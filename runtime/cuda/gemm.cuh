/*
 * Matrix-matrix product for prefill through cuBLAS: dense weights (bf16 or fp32) times a chunk of
 * token activations of the same type, fp32 accumulation and output. With bf16 operands cuBLAS
 * runs it on the tensor cores; with fp32 operands it stays in full fp32 (the handle's math mode
 * must not allow TF32: the engine creates it with CUBLAS_DEFAULT_MATH).
 */
#ifndef LOUPE_CUDA_GEMM_CUH
#define LOUPE_CUDA_GEMM_CUH

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[t*ld_out + r] = beta · out[t*ld_out + r] + Σ_i W[r][i] · x[t*ld_x + i]
 * for r < n_out, t < n_tok. W: n_out rows of n_in elements of `type`, ld_w elements apart; x:
 * n_tok rows of `type`; out fp32. beta = 1 fuses a residual add. Runs on `stream` (the handle's
 * stream is set to it). Fails with LOUPE_ERR_GPU when cuBLAS does. */
loupe_status rt_cuda_gemm(cublasHandle_t blas, rt_cuda_dtype type, const void *w, size_t ld_w,
                          uint32_t n_out, uint32_t n_in, const void *x, size_t ld_x,
                          uint32_t n_tok, float beta, float *out, size_t ld_out,
                          cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_GEMM_CUH */
