/*
 * The graph build's pruning on the GPU: rt_cuda_prune (rt_cuda.h) with a report of where a call's
 * time goes, for benchmarks. C-callable; no CUDA types. How it works: the header of prune.cu.
 */
#ifndef LOUPE_CUDA_PRUNE_CUH
#define LOUPE_CUDA_PRUNE_CUH

#include <stdint.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t n_gpu;      /* lists pruned on the GPU */
    int64_t n_long;     /* of which by the long-list kernel */
    int64_t n_cpu;      /* lists pruned by ann_prune_cpu on the calling thread meanwhile */
    double wall_s;      /* the whole call */
    double upload_s;    /* keys, lists (CUDA events, from the first upload to the first kernel) */
    double kernel_s;    /* the kernels */
    double download_s;  /* the results */
} rt_cuda_prune_info;

/* rt_cuda_prune on CUDA device `device` with a report (info may be NULL). Same contract. */
loupe_status rt_cuda_prune_run(int device, const ann_prune_job *job, rt_cuda_prune_info *info,
                               loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_PRUNE_CUH */
