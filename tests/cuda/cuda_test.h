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
#include <string.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

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

/* n normal values × scale from rng, malloc'd (at least one element). */
static inline float *cuda_test_rand_vec(test_rng *rng, size_t n, float scale)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = scale * test_rng_normal(rng);
    return v;
}

/* A random layer cache of n_kv heads × n_ctx keys (all filled), stored as bf16 or f32 on the
 * device, with the host float values as stored (bf16-rounded for bf16): the input of the
 * attention kernels' tests. */
typedef struct {
    uint32_t n_kv, n_ctx, hd;
    rt_cuda_dtype type;
    float *k, *v;  /* host values as stored */
    void *dk, *dv; /* device */
} cuda_test_cache;

static inline void cuda_test_cache_make(test_rng *rng, cuda_test_cache *c, uint32_t n_kv,
                                        uint32_t n_ctx, uint32_t hd, int bf)
{
    c->n_kv = n_kv;
    c->n_ctx = n_ctx;
    c->hd = hd;
    c->type = bf ? RT_CUDA_BF16 : RT_CUDA_F32;
    const size_t n = (size_t)n_kv * n_ctx * hd, esz = bf ? 2 : 4;
    c->k = cuda_test_rand_vec(rng, n, 1.0f);
    c->v = cuda_test_rand_vec(rng, n, 1.0f);
    unsigned char *hk = malloc(n * esz), *hv = malloc(n * esz);
    for (size_t i = 0; i < n; i++) {
        if (bf) {
            uint16_t a = rt_f32_to_bf16(c->k[i]), b = rt_f32_to_bf16(c->v[i]);
            c->k[i] = rt_bf16_to_f32(a);
            c->v[i] = rt_bf16_to_f32(b);
            memcpy(hk + 2 * i, &a, 2);
            memcpy(hv + 2 * i, &b, 2);
        } else {
            memcpy(hk + 4 * i, &c->k[i], 4);
            memcpy(hv + 4 * i, &c->v[i], 4);
        }
    }
    c->dk = dev_from(hk, n * esz);
    c->dv = dev_from(hv, n * esz);
    free(hk);
    free(hv);
}

static inline void cuda_test_cache_free(cuda_test_cache *c)
{
    cudaFree(c->dk);
    cudaFree(c->dv);
    free(c->k);
    free(c->v);
}

#endif /* LOUPE_TESTS_CUDA_TEST_H */
