/*
 * rt_cuda_gemm: row-major W (n_out, n_in) is column-major (n_in, n_out), so out (row-major
 * (n_tok, n_out), i.e. column-major (n_out, n_tok)) = Wᵀ_cm · X_cm: one cublasGemmEx with
 * op(A) = T, op(B) = N, m = n_out, n = n_tok, k = n_in.
 */
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/gemm.cuh"

extern "C" loupe_status rt_cuda_gemm(cublasHandle_t blas, rt_cuda_dtype type, const void *w,
                                     size_t ld_w, uint32_t n_out, uint32_t n_in, const void *x,
                                     size_t ld_x, uint32_t n_tok, float beta, float *out,
                                     size_t ld_out, cudaStream_t stream)
{
    if (n_out == 0 || n_tok == 0)
        return LOUPE_OK;
    if (ld_w > INT32_MAX || ld_x > INT32_MAX || ld_out > INT32_MAX)
        return LOUPE_ERR_RANGE;
    if (cublasSetStream(blas, stream) != CUBLAS_STATUS_SUCCESS)
        return LOUPE_ERR_GPU;
    const cudaDataType_t dt = type == RT_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const float alpha = 1.0f;
    cublasStatus_t st =
        cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)n_tok, (int)n_in, &alpha, w,
                     dt, (int)ld_w, x, dt, (int)ld_x, &beta, out, CUDA_R_32F, (int)ld_out,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? LOUPE_OK : LOUPE_ERR_GPU;
}
