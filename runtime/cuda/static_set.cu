/*
 * The retrieval layout's static set on the GPU (static_set.cuh) and its public controls
 * (rt_cuda.h): filling the slots after each prefill layer, dropping the oldest tail slots when
 * the caller moves them to its host set, the host callbacks and the co-execution statistics.
 *
 * Slot copies are device→device 2D copies whose rows are (layer, KV head) pairs: every pair's
 * slots are contiguous and kv_slots · head_dim elements apart, so one copy moves a run of slots
 * for all heads (and, when dropping, all layers) at once.
 */
#include <string.h>

#include "runtime/cuda/static_set.cuh"

namespace {

/* Slots [dst, dst + count) ← positions/slots [src, src + count) of `rows` rows: destination rows
 * dst_pitch bytes apart, source rows src_pitch apart (both in row-element units of one slot). */
loupe_status copy_runs(rt_cuda_engine *e, void *dst_base, size_t dst_pitch, const void *src_base,
                       size_t src_pitch, uint32_t dst, uint32_t src, uint32_t count, size_t rows)
{
    if (count == 0)
        return LOUPE_OK;
    const size_t slot = (size_t)e->m->hp.head_dim * rt_cuda_act_bytes(e->act);
    return rt_cuda_status(cudaMemcpy2DAsync(static_cast<uint8_t *>(dst_base) + dst * slot, dst_pitch,
                                     static_cast<const uint8_t *>(src_base) + src * slot,
                                     src_pitch, (size_t)count * slot, rows,
                                     cudaMemcpyDeviceToDevice, e->stream));
}

} // namespace

loupe_status rt_cuda_static_fill(rt_cuda_engine *e, uint32_t il, uint32_t n, const char **op)
{
    const rt_hparams *hp = &e->m->hp;
    const size_t slot = (size_t)hp->head_dim * rt_cuda_act_bytes(e->act);
    const size_t src_pitch = (size_t)e->p.n_ctx * slot, dst_pitch = (size_t)e->kv_slots * slot;
    const size_t layer = (size_t)hp->n_head_kv * dst_pitch;
    const uint32_t tail = n - e->host_end;
    *op = "static set copy";
    void *kd = static_cast<uint8_t *>(e->k_cache) + il * layer;
    void *vd = static_cast<uint8_t *>(e->v_cache) + il * layer;
    loupe_status st;
    if ((st = copy_runs(e, kd, dst_pitch, e->k_layer, src_pitch, 0, 0, e->sinks_kept,
                        hp->n_head_kv)) ||
        (st = copy_runs(e, vd, dst_pitch, e->v_layer, src_pitch, 0, 0, e->sinks_kept,
                        hp->n_head_kv)) ||
        (st = copy_runs(e, kd, dst_pitch, e->k_layer, src_pitch, e->sinks_kept, e->host_end, tail,
                        hp->n_head_kv)) ||
        (st = copy_runs(e, vd, dst_pitch, e->v_layer, src_pitch, e->sinks_kept, e->host_end, tail,
                        hp->n_head_kv)))
        return st;
    return LOUPE_OK;
}

extern "C" loupe_status rt_cuda_static_drop(rt_cuda_engine *e, uint32_t n, loupe_err *err)
{
    if (!e->coexec)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "only the retrieval layout has a static set to drop tokens from");
    const uint32_t tail = e->n_static - e->sinks_kept;
    if (n > tail)
        return loupe_fail(err, LOUPE_ERR_RANGE,
                          "cannot drop %u tokens from a static tail of %u", n, tail);
    if (n == 0)
        return LOUPE_OK;
    const rt_hparams *hp = &e->m->hp;
    const size_t pitch = (size_t)e->kv_slots * hp->head_dim * rt_cuda_act_bytes(e->act);
    const size_t rows = (size_t)hp->n_layer * hp->n_head_kv;
    const uint32_t keep = tail - n, base = e->sinks_kept;
    /* Shift slots [base + n, n_static) down by n, in pieces of at most n slots so that no piece
     * overlaps itself; the pieces run in order on the stream. */
    loupe_status st = LOUPE_OK;
    for (uint32_t i = 0; i < keep && !st; i += n) {
        const uint32_t len = keep - i < n ? keep - i : n;
        st = copy_runs(e, e->k_cache, pitch, e->k_cache, pitch, base + i, base + n + i, len, rows);
        if (!st)
            st = copy_runs(e, e->v_cache, pitch, e->v_cache, pitch, base + i, base + n + i, len,
                           rows);
    }
    if (!st)
        st = rt_cuda_status(cudaStreamSynchronize(e->stream));
    if (st)
        return rt_cuda_op_fail(err, st, "static set shift");
    e->n_static -= n;
    e->host_end += n;
    return LOUPE_OK;
}

extern "C" loupe_status rt_cuda_set_host_attn(rt_cuda_engine *e, rt_cuda_host_attn_fn fn,
                                              void *user, loupe_err *err)
{
    if (fn && !e->coexec)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "a host attention callback needs the retrieval layout (static_slots)");
    e->host_fn = fn;
    e->host_user = fn ? user : nullptr;
    return LOUPE_OK;
}

extern "C" loupe_status rt_cuda_set_host_kv(rt_cuda_engine *e, const rt_cuda_host_kv *kv,
                                            loupe_err *err)
{
    if (!kv || (!kv->k && !kv->v)) {
        e->host_kv = rt_cuda_host_kv{};
        return LOUPE_OK;
    }
    if (!e->coexec)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "host K/V arrays are written by the retrieval layout's prefill only");
    if (kv->ld < e->p.n_ctx)
        return loupe_fail(err, LOUPE_ERR_INVALID,
                          "host K/V rows per head (%zu) must cover the context (%u)", kv->ld,
                          e->p.n_ctx);
    if (kv->type != ANN_KEYS_F32 && kv->type != ANN_KEYS_BF16 && kv->type != ANN_KEYS_INT8)
        return loupe_fail(err, LOUPE_ERR_INVALID, "unknown host K/V type %d", (int)kv->type);
    if (kv->type == ANN_KEYS_INT8 && ((kv->k && !kv->k_scale) || (kv->v && !kv->v_scale)))
        return loupe_fail(err, LOUPE_ERR_INVALID, "int8 host K/V need their row scales");
    e->host_kv = *kv;
    return LOUPE_OK;
}

extern "C" void rt_cuda_set_layer_done(rt_cuda_engine *e, rt_cuda_layer_fn fn, void *user)
{
    e->layer_fn = fn;
    e->layer_user = fn ? user : nullptr;
}

extern "C" void rt_cuda_coexec_stats_get(const rt_cuda_engine *e, rt_cuda_coexec_stats *out)
{
    *out = e->cx;
}
