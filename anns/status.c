/* Status strings and the error context (see anns.h). */
#include "anns/anns.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *loupe_status_str(loupe_status st)
{
    switch (st) {
#define LOUPE_STATUS_CASE(name, value, msg) case name: return msg;
        LOUPE_STATUS_TABLE(LOUPE_STATUS_CASE)
#undef LOUPE_STATUS_CASE
    }
    return "unknown status";
}

void loupe_err_clear(loupe_err *err)
{
    if (err) {
        err->status = LOUPE_OK;
        err->msg[0] = '\0';
    }
}

loupe_status loupe_fail(loupe_err *err, loupe_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = st;
    }
    return st;
}

void loupe_err_prefix(loupe_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[LOUPE_ERR_MSG_MAX];
    char old[LOUPE_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t pl = strlen(prefix), ol = strnlen(old, sizeof old - 1);
    if (ol > sizeof err->msg - 1 - pl)
        ol = sizeof err->msg - 1 - pl; /* pl < sizeof msg: vsnprintf bounded it */
    memcpy(err->msg, prefix, pl);
    memcpy(err->msg + pl, old, ol);
    err->msg[pl + ol] = '\0';
}

const char *loupe_err_message(const loupe_err *err)
{
    if (!err)
        return "unknown error";
    return err->msg[0] ? err->msg : loupe_status_str(err->status);
}
