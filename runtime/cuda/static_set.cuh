/*
 * Private to runtime/cuda: the retrieval layout's static set (rt_cuda.h, "Retrieval attention").
 *
 * The static cache has the full cache's shape with slots for positions: (n_layer, n_head_kv,
 * kv_slots, head_dim). Slots [0, sinks_kept) hold positions [0, sinks_kept); slots
 * [sinks_kept, n_static) hold positions [host_end, n_past). Keys are stored after RoPE at their
 * true positions, so attention over slots needs no position at all.
 */
#ifndef LOUPE_CUDA_STATIC_SET_CUH
#define LOUPE_CUDA_STATIC_SET_CUH

#include "runtime/cuda/engine.cuh"

/* After layer il of a retrieval-layout prefill of n tokens (positions [0, n) in the one-layer
 * buffer): that layer's K/V of every position as float32 into the host arrays (when set; in
 * kv_read.cu, which owns the conversion), then the static positions into the layer's slots.
 * *op names the step that failed. */
loupe_status rt_cuda_layer_spill(rt_cuda_engine *e, uint32_t il, uint32_t n, const char **op);
loupe_status rt_cuda_static_fill(rt_cuda_engine *e, uint32_t il, uint32_t n, const char **op);

#endif /* LOUPE_CUDA_STATIC_SET_CUH */
