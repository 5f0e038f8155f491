/*
 * Exact query→key top-k on the GPU (the kNN step of anns' graph build): the options and the
 * report behind rt_cuda_knn (rt_cuda.h), for tests and benchmarks that want to steer or watch
 * it. C-callable; no CUDA types. How it works and how exact it is: the header of knn.cu.
 */
#ifndef LOUPE_CUDA_KNN_CUH
#define LOUPE_CUDA_KNN_CUH

#include <stdint.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int device;        /* CUDA device index (0) */
    int margin;        /* candidates kept per query and key split beyond k; < 0: max(32, k/4) */
    int nsplit;        /* key splits scanned by separate blocks; 0: enough to fill the GPU */
    int64_t max_chunk; /* queries per pass (bounds device memory); 0: 131072 */
} rt_cuda_knn_opts;

void rt_cuda_knn_opts_init(rt_cuda_knn_opts *o);

typedef struct {
    int cpu_only;          /* 1: the shape has no GPU path (no stream-ordered allocation, or
                              k above 8192) and ann_knn_cpu computed everything */
    int wide;              /* 1: k (or dim) too large for the fused scan's buffers: the wide
                              path (knn_wide.cu) computed it */
    int wide_sampled;      /* 1: the wide path selected by a sampled threshold (rows long
                              against k) */
    int64_t wide_redo;     /* queries the sampled threshold left undecided (the radix selection
                              took them) */
    int64_t n_fallback;    /* queries whose GPU result could not be certified exact and were
                              recomputed with ann_knn_cpu */
    int nsplit;            /* key splits used */
    int kkeep;             /* candidates kept per query and split (k + margin, k capped at n) */
    int bcap;              /* candidate slots per query in shared memory */
    int rows_per_warp;     /* queries per warp of the scan kernel (16 or 32) */
    int64_t n_chunks;      /* passes over the keys (query chunks) */
    uint64_t device_bytes; /* device memory the call allocated (peak) */
    double gpu_s;          /* seconds from the first upload to the last download */
    double kernel_s;       /* seconds of the kernels (CUDA events), summed over chunks */
    double prep_s;         /* wide path: seconds (CUDA events) of the keys' upload and widening,
                              from the call's first copy to its first chunk's kernels */
} rt_cuda_knn_info;

/* rt_cuda_knn with options (NULL: defaults) and a report (info may be NULL). Same contract. */
loupe_status rt_cuda_knn_run(const rt_cuda_knn_opts *opts, const ann_keys *keys,
                             const float *queries, int64_t nq, int k, int threads, int32_t *ids,
                             float *scores, int32_t *key_best_query, rt_cuda_knn_info *info,
                             loupe_err *err);

/* The bound E(q) the GPU certifies with (knn.cu, "Exactness"): |bf16 tensor-core score − fp32
 * score| <= E(q) for every key, given w_max = max ||key|| and r_max = max ||key − bf16(key)||
 * (0 unless the keys are f32) over the stored keys widened to f32. In double, for tests. */
double rt_cuda_knn_bound(const float *q, int dim, double w_max, double r_max);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_KNN_CUH */
