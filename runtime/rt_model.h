/*
 * Part of runtime.h: the model — weights bound to a GGUF mapping, the forward pass (CPU reference
 * backend, later CUDA), KV cache and sampling. Defined by the CPU-inference issue.
 */
#ifndef LOUPE_RT_MODEL_H
#define LOUPE_RT_MODEL_H

#include "anns/anns.h"
#include "runtime/rt_gguf.h"

#endif /* LOUPE_RT_MODEL_H */
