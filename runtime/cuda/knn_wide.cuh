/*
 * rt_cuda_knn's path for k beyond the fused scan's candidate buffers (knn.cu): large build k
 * (top-1024 or more per build query) for the graph build. How it works: the header of
 * knn_wide.cu. Internal to runtime/cuda.
 */
#ifndef LOUPE_CUDA_KNN_WIDE_CUH
#define LOUPE_CUDA_KNN_WIDE_CUH

#include "runtime/cuda/knn.cuh"

namespace rtc_knn {

/* The largest k the wide path takes. */
constexpr int WIDE_K_MAX = 8192;

/* rt_cuda_knn_run's contract (ids, scores (nq, k) best first; key_best_query (n) or NULL) for
 * 1 <= k <= WIDE_K_MAX on `device`, already current. Fills info's wide, n_chunks, device_bytes,
 * gpu_s, kernel_s, n_fallback. */
loupe_status knn_wide(int device, const ann_keys *keys, const float *queries, int64_t nq, int k,
                      int threads, int32_t *ids, float *scores, int32_t *key_best_query,
                      rt_cuda_knn_info *info, loupe_err *err);

} // namespace rtc_knn

#endif /* LOUPE_CUDA_KNN_WIDE_CUH */
