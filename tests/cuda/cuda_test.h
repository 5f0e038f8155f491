/*
 * Helpers shared by the CUDA tests: the skip rule (exit 77 with "no CUDA device: skipped" when
 * no device is usable) and small device-memory wrappers that count failures as test failures.
 * Tests of runtime/cuda's ops include the ops' headers and the CUDA runtime API directly: they
 * are the unit tests of runtime's private GPU code.
 */
#ifndef LOUPE_TESTS_CUDA_TEST_H
#define LOUPE_TESTS_CUDA_TEST_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/test_util.h"

/* Exits 77 (CTest's SKIP_RETURN_CODE) when there is no usable CUDA device. */
static inline void cuda_test_require_device(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("no CUDA device: skipped (%s)\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        exit(77);
    }
}

#define CUDA_OK(call)                                                                     \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,               \
                    cudaGetErrorString(e_));                                              \
            test_failures++;                                                              \
        }                                                                                 \
    } while (0)

/* Device copy of n bytes of host memory (or n uninitialised bytes when src is NULL, poisoned
 * with 0xff so unwritten outputs show up as NaN). Never returns NULL: exits on failure. */
static inline void *dev_from(const void *src, size_t n)
{
    void *d = NULL;
    if (cudaMalloc(&d, n ? n : 1) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc of %zu bytes failed\n", n);
        exit(1);
    }
    if (src)
        CUDA_OK(cudaMemcpy(d, src, n, cudaMemcpyHostToDevice));
    else
        CUDA_OK(cudaMemset(d, 0xff, n));
    return d;
}

static inline void dev_to(void *dst, const void *d, size_t n)
{
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(dst, d, n, cudaMemcpyDeviceToHost));
}

#endif /* LOUPE_TESTS_CUDA_TEST_H */
