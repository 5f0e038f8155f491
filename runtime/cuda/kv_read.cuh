/*
 * Reading the KV cache back as float32 (rt_cuda_kv_read, the public half, is in kv_read.cu).
 *
 * The op: a cache layer holds (n_head_kv, n_ctx, head_dim) elements of the engine's KV type; the
 * launcher converts a run of `len` consecutive elements of each of `n_head` heads to fp32 into a
 * packed device buffer, from which one contiguous device→host copy per head lands in the caller's
 * layout. Chunked by the caller so the device buffer stays small (it borrows engine scratch).
 */
#ifndef LOUPE_CUDA_KV_READ_CUH
#define LOUPE_CUDA_KV_READ_CUH

#include <cuda_runtime_api.h>

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For h < n_head, j < len: out[h · len + j] = (float)src[h · head_pitch + j], src of kv_type
 * (elements, not bytes, for head_pitch). bf16 → fp32 is exact, so the result equals the CPU
 * conversion bit for bit. out: (n_head, len) fp32 on the device. */
loupe_status rt_cuda_kv_to_f32(const void *src, size_t head_pitch, uint32_t n_head, size_t len,
                               rt_cuda_dtype kv_type, float *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_KV_READ_CUH */
