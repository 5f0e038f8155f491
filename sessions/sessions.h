/*
 * sessions — a session on disk: manifest, tokens, static KV, offloaded KV, indexes, transcript;
 * save, load (memory-mapped), list, remove; model fingerprint checks. (Its issue comes later.)
 */
#ifndef LOUPE_SESSIONS_H
#define LOUPE_SESSIONS_H

#include "runtime/runtime.h"

#endif /* LOUPE_SESSIONS_H */
