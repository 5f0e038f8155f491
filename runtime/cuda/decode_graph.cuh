/*
 * Decode as a CUDA graph (forward.cu): the single-token decode step (embedding, every layer,
 * the logits) is captured once per engine on its second decode call and replayed with
 * cudaGraphLaunch afterwards; the token and position live in device memory (one small copy per
 * step), which the decode kernels read when they run. With LOUPE_CUDA_GRAPHS=0 in the
 * environment (read on the first decode call), or when capture fails, the same launches run
 * without a graph; the logits are bit for bit the same either way.
 */
#ifndef LOUPE_CUDA_DECODE_GRAPH_CUH
#define LOUPE_CUDA_DECODE_GRAPH_CUH

#include "runtime/rt_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the engine's decode steps replay a captured graph, else 0 (not yet captured, turned
 * off, or capture failed). For tests and benchmarks. */
int rt_cuda_decode_graph_active(const rt_cuda_engine *e);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_CUDA_DECODE_GRAPH_CUH */
