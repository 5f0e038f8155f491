/*
 * runtime — the model: GGUF files, tokenizer, chat formats, forward pass (CPU reference and CUDA),
 * KV store, decode loop with retrieval attention, sampling.
 *
 * This is the module's one public header. The API is long, so it is split by idea into the
 * rt_*.h parts below; other modules include only this file.
 */
#ifndef LOUPE_RUNTIME_H
#define LOUPE_RUNTIME_H

#include "anns/anns.h"
#include "runtime/rt_gguf.h"
#include "runtime/rt_tokenizer.h"
#include "runtime/rt_chat.h"
#include "runtime/rt_model.h"
#include "runtime/rt_cuda.h"
#include "runtime/rt_runner.h"

#endif /* LOUPE_RUNTIME_H */
