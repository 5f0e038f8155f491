/* rt_ids: a growable array of token ids (see rt_tokenizer.h). */
#include "runtime/runtime.h"

#include <stdlib.h>

void rt_ids_init(rt_ids *v)
{
    v->ids = NULL;
    v->n = 0;
    v->cap = 0;
}

void rt_ids_free(rt_ids *v)
{
    if (!v)
        return;
    free(v->ids);
    rt_ids_init(v);
}

loupe_status rt_ids_reserve(rt_ids *v, size_t cap, loupe_err *err)
{
    if (cap <= v->cap)
        return LOUPE_OK;
    if (cap > SIZE_MAX / sizeof *v->ids)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "token array of %zu ids is too large", cap);
    int32_t *p = realloc(v->ids, cap * sizeof *p);
    if (!p)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory growing a token array to %zu ids",
                          cap);
    v->ids = p;
    v->cap = cap;
    return LOUPE_OK;
}

loupe_status rt_ids_push(rt_ids *v, int32_t id, loupe_err *err)
{
    if (v->n == v->cap) {
        loupe_status st = rt_ids_reserve(v, v->cap ? v->cap * 2 : 256, err);
        if (st)
            return st;
    }
    v->ids[v->n++] = id;
    return LOUPE_OK;
}
