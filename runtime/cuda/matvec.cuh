/*
 * Matrix-vector products for decode over weights in their stored type (F32, F16, BF16, Q8_0,
 * Q4_K, Q6_K), dequantised in registers: every weight byte is read once, activations are fp32,
 * accumulation is fp32 in a fixed order (results do not depend on timing).
 *
 * Three launchers share one kernel per stored type: a plain product (optionally `+=`, which fuses
 * the residual add of the output projections), up to three matrices of one type and width in one
 * launch (q, k and v), and gate and up with SwiGLU applied on the way out. The last two can also
 * take the RMSNorm that precedes them in a layer: each block reads all of x anyway, so it sums
 * x² on the way and scales its results, y = W·(x ⊙ g) / rms(x), with no normalised copy of x.
 */
#ifndef LOUPE_CUDA_MATVEC_CUH
#define LOUPE_CUDA_MATVEC_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[r] = (accumulate ? y[r] : 0) + Σ_i W[r][i] · x[i] for r < n_out. W: n_out rows of n_in
 * elements of `type`, `pitch` bytes apart (a multiple of 16, at least the row's bytes); x (n_in),
 * y (n_out) fp32 in device memory, not aliasing; x 16-byte aligned. */
loupe_status rt_cuda_matvec(rt_type type, const void *w, size_t pitch, uint32_t n_out,
                            uint32_t n_in, const float *x, float *y, bool accumulate,
                            cudaStream_t stream);

/* One matrix of a multi-matrix product: n_out rows at w, results to y (n_out). */
typedef struct {
    const void *w;
    float *y;
    uint32_t n_out;
} rt_cuda_mv_out;

enum { RT_CUDA_MV_MAX_MATS = 3 };

/* y_m = W_m · x' for each of n_mats (1..RT_CUDA_MV_MAX_MATS) matrices of the same type, width
 * and pitch, in one launch (q, k and v of a layer); matrices with no rows are skipped. x' = x,
 * or with norm_w (n_in, 16-byte aligned) non-NULL, rt_cuda_rmsnorm(x, norm_w, norm_eps)'s
 * function of x (the same up to rounding). Without a norm the results are bit for bit one
 * rt_cuda_matvec per matrix. */
loupe_status rt_cuda_matvec_multi(rt_type type, size_t pitch, uint32_t n_in,
                                  const rt_cuda_mv_out *mats, uint32_t n_mats, const float *x,
                                  const float *norm_w, float norm_eps, cudaStream_t stream);

/* y[r] = silu(g) · u with g = (W_gate · x')[r], u = (W_up · x')[r], silu(g) = g / (1 + e^-g),
 * for r < n_out: the feed-forward's gate, up and SwiGLU in one launch (x' as for
 * rt_cuda_matvec_multi). Both matrices of one type, width and pitch; y (n_out) fp32, not
 * aliasing x. Without a norm, g and u are bit for bit what rt_cuda_matvec computes; the SwiGLU
 * is rt_cuda_swiglu's formula. */
loupe_status rt_cuda_matvec_swiglu(rt_type type, const void *w_gate, const void *w_up,
                                   size_t pitch, uint32_t n_out, uint32_t n_in, const float *x,
                                   const float *norm_w, float norm_eps, float *y,
                                   cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_MATVEC_CUH */
