/*
 * anns — vector indexes over one attention head's keys, and the status codes every loupe module
 * returns.
 *
 * The status enum and the error context live here, at the bottom of the dependency graph
 * (app → ui → sessions → runtime → anns), because every module returns them. Rules:
 *   - every fallible function returns a loupe_status (LOUPE_OK = 0) and, on failure, writes one
 *     human sentence into the caller's loupe_err with loupe_fail();
 *   - nothing below app/ prints, exits or aborts; the caller decides how to show the sentence;
 *   - values are never renumbered (they may be logged or stored).
 */
#ifndef LOUPE_ANNS_H
#define LOUPE_ANNS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Status codes ------------------------------------------------------------------------ */

/* X(name, value, message): the one table of statuses; loupe_status_str() reads the messages. */
#define LOUPE_STATUS_TABLE(X)                                                       \
    X(LOUPE_OK,              0,  "success")                                         \
    X(LOUPE_ERR_NOMEM,       1,  "out of memory")                                   \
    X(LOUPE_ERR_IO,          2,  "input/output error")                              \
    X(LOUPE_ERR_FORMAT,      3,  "malformed file")                                  \
    X(LOUPE_ERR_UNSUPPORTED, 4,  "not supported")                                   \
    X(LOUPE_ERR_INVALID,     5,  "invalid argument")                                \
    X(LOUPE_ERR_RANGE,       6,  "value out of range")                              \
    X(LOUPE_ERR_NOT_FOUND,   7,  "not found")                                       \
    X(LOUPE_ERR_NETWORK,     8,  "network error")                                   \
    X(LOUPE_ERR_TIMEOUT,     9,  "timed out")                                       \
    X(LOUPE_ERR_TOO_LONG,    10, "input longer than the context allows")            \
    X(LOUPE_ERR_GPU,         11, "GPU error")                                       \
    X(LOUPE_ERR_GPU_MEMORY,  12, "not enough GPU memory")                           \
    X(LOUPE_ERR_CANCELLED,   13, "cancelled")                                       \
    X(LOUPE_ERR_INTERNAL,    14, "internal error")

typedef enum {
#define LOUPE_STATUS_ENUM(name, value, msg) name = value,
    LOUPE_STATUS_TABLE(LOUPE_STATUS_ENUM)
#undef LOUPE_STATUS_ENUM
} loupe_status;

/* The fixed message of a status ("malformed file"); never NULL. */
const char *loupe_status_str(loupe_status st);

/* ---- Error context ----------------------------------------------------------------------- */

#define LOUPE_ERR_MSG_MAX 512

/* Caller-owned. Zero-initialise (or loupe_err_clear) before use; on failure `msg` holds the
 * sentence for the user, e.g. "model.gguf: tensor 'blk.0.attn_q.weight' ends past the end of the
 * file (offset 123 + 4096 bytes > 2048)". */
typedef struct {
    loupe_status status;
    char msg[LOUPE_ERR_MSG_MAX];
} loupe_err;

void loupe_err_clear(loupe_err *err);

/* Records `st` and a printf-formatted sentence in `err` (which may be NULL) and returns `st`, so a
 * failure reads `return loupe_fail(err, LOUPE_ERR_FORMAT, "%s: bad magic", path);`. */
loupe_status loupe_fail(loupe_err *err, loupe_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the sentence already in `err` with printf-formatted context ("loading x.gguf: ..."). */
void loupe_err_prefix(loupe_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The sentence in `err`, or the status's fixed message when none was written. */
const char *loupe_err_message(const loupe_err *err);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_ANNS_H */
