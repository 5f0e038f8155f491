/*
 * Private to runtime/cuda: the struct behind rt_cuda_engine, shared by engine.cu (planning,
 * allocation, upload) and forward.cu (prefill, decode, logits).
 *
 * Memory: everything lives in one device allocation (`arena`), carved by the same layout walk
 * that rt_cuda_plan() uses to count bytes, so the plan is exactly what is allocated (cuBLAS gets
 * its workspace from the arena too; only the CUDA context and the cuBLAS handle's own small
 * state are outside it).
 *
 * Activation buffers that hold "act" data (bf16 or fp32 by precision) are sized for fp32, so
 * decode can use the same buffers in fp32.
 *
 * Between evaluations the scratch holds nothing that is needed later (each prefill and decode
 * step starts from the embedding; the logits have their own buffer), so rt_cuda_kv_read borrows
 * x or hb as its conversion buffer (kv_read.cu).
 */
#ifndef LOUPE_CUDA_ENGINE_CUH
#define LOUPE_CUDA_ENGINE_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "runtime/cuda/rope.cuh"

extern "C" { /* model_impl.h is a C header without linkage guards */
#include "runtime/model_impl.h"
}

/* A weight matrix on the GPU in its stored type: n_out rows `pitch` bytes apart (row_bytes
 * rounded up to 16). */
typedef struct {
    const uint8_t *data;
    rt_type type;
    uint32_t n_in, n_out;
    size_t pitch;
} rt_cuda_mat;

typedef struct {
    float *attn_norm, *ffn_norm;     /* (n_embd) */
    float *bq, *bk, *bv;             /* (nq), (nkv), (nkv) or NULL */
    rt_cuda_mat wq, wk, wv, wo, w_gate, w_up, w_down;
} rt_cuda_layer;

/* What changes from one decode token to the next, in device memory: the host writes it with one
 * copy before each step, and the decode kernels read it when they run, so one captured CUDA
 * graph serves every position. */
typedef struct {
    int32_t id;      /* the token */
    uint32_t pos;    /* its position (n_past before the step) */
    uint32_t n_keys; /* keys attention sees: pos + 1, or n_static + 1 in the retrieval layout */
    uint32_t slot;   /* where its K/V go: pos, or n_static in the retrieval layout */
} rt_cuda_decode_step;

/* Decode graph: captured on the second decode step (the first runs the launches eagerly, so
 * every kernel is loaded and configured before capture), then replayed; OFF after a failed
 * capture or with LOUPE_CUDA_GRAPHS=0 (both then use the same launches without a graph). */
enum { RT_CUDA_GRAPH_UNTRIED = 0, RT_CUDA_GRAPH_WARM, RT_CUDA_GRAPH_READY, RT_CUDA_GRAPH_OFF };

enum {
    RT_CUDA_LOGIT_ROWS = 32,  /* tokens per output GEMM when every position's logits are wanted */
    RT_CUDA_MAX_SPLITS = 256, /* flash-decoding splits */
};

struct rt_cuda_engine {
    const rt_model *m;
    rt_cuda_params p;     /* defaults resolved */
    rt_cuda_mem_plan plan;
    rt_cuda_dtype act;    /* prefill GEMM operands and KV cache */
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;

    uint8_t *arena;       /* the one device allocation, plan.total bytes */

    /* weights */
    rt_cuda_mat tok_embd; /* (n_vocab, n_embd) */
    rt_cuda_mat output;   /* (n_vocab, n_embd); == tok_embd when tied */
    float *output_norm;   /* (n_embd) */
    rt_cuda_layer *layers; /* host array (n_layer) of device pointers */
    rt_rope rope;         /* host constants */
    double *inv_freq;     /* (n_pairs) device */
    rt_cuda_rope_desc rd;

    /* KV cache, (n_layer, n_head_kv, kv_slots, head_dim) of act: kv_slots = n_ctx positions,
     * or static_slots slots in the retrieval layout (rt_cuda.h) */
    void *k_cache, *v_cache;
    uint32_t kv_slots;
    /* retrieval layout only (NULL otherwise): one layer's K/V for n_ctx positions, (n_head_kv,
     * n_ctx, head_dim) of act, where the context's prefill attends; the host half's partial
     * on the device, (n_head · hd) outputs then (n_head) lse */
    void *k_layer, *v_layer;
    float *hpart;

    /* scratch */
    float *x;             /* (n_seg, n_embd) residual stream of a prefill segment; row 0 in decode */
    void *xb;             /* (n_batch, n_embd) normed input: act in prefill, fp32 in decode */
    float *q;             /* (n_batch, n_head·hd) */
    float *k, *v;         /* (n_batch, n_head_kv·hd) */
    void *att;            /* (n_batch, n_head·hd) attention output: act / fp32 */
    float *hb, *hb2;      /* (n_batch, n_ff) gate, up */
    void *hg;             /* (n_batch, n_ff) silu(gate)·up: act / fp32 */
    void *dense;          /* (dense_elems) of act: a layer's dequantised matrices */
    size_t dense_elems;
    float *part;          /* flash-decoding partials */
    float *lse;           /* (n_head) */
    float *logits;        /* (RT_CUDA_LOGIT_ROWS, n_vocab); row 0 = the last token's */
    int32_t *ids;         /* (n_seg) */
    int32_t *best;        /* (1) argmax */
    rt_cuda_decode_step *step; /* (1) the decode step's token and position */
    void *blas_ws;
    size_t blas_ws_bytes;

    /* decode graph (RT_CUDA_GRAPH_*); graph and graph_exec are set only when READY */
    int graph_state;
    cudaGraph_t graph;
    cudaGraphExec_t graph_exec;

    /* query capture (rt_cuda_set_q_capture; prefill only): off while q_fn is NULL. q_host and
     * q_ready are made by the first set that turns it on and kept until destroy. */
    rt_cuda_q_fn q_fn;
    void *q_user;
    uint32_t q_stride;    /* >= 1 */
    uint32_t q_from;      /* also every position >= q_from (UINT32_MAX: none) */
    float *q_host;        /* (n_batch, n_head·hd) pinned host staging: a chunk's captured rows */
    cudaEvent_t q_ready;  /* recorded after the staging copy, so the host waits for that only */
    bool in_q_fn;         /* the callback is running: the engine is mid-prefill */

    /* retrieval layout (static_slots > 0): slots [0, n_static) hold positions [0, sinks_kept)
     * then [host_end, n_past) */
    bool coexec;
    uint32_t n_static, sinks_kept, host_end;
    rt_cuda_host_attn_fn host_fn;
    void *host_user;
    rt_cuda_layer_fn layer_fn; /* after each retrieval-layout prefill layer, or NULL */
    void *layer_user;
    rt_cuda_host_kv host_kv; /* rt_cuda_set_host_kv (k, v NULL: none) */
    float *qkv_host;        /* pinned: q (n_head·hd), k, v (n_head_kv·hd) of the decode token */
    float *hpart_host;      /* pinned: the host half's out (n_head·hd) then lse (n_head) */
    cudaEvent_t qkv_ready;
    rt_cuda_coexec_stats cx;

    /* host side */
    rt_cuda_decode_step step_host; /* source of the step copy; lives as long as the engine */
    float *logits_host;   /* (n_vocab) */
    bool logits_copied;   /* logits_host holds the last evaluation's logits */
    bool have_logits;     /* something was evaluated since the last reset */
    uint32_t n_past;
};

/* True when `t` can be used by cuBLAS in place for activations of type `act`. */
static inline bool rt_cuda_direct(rt_type t, rt_cuda_dtype act)
{
    return (act == RT_CUDA_BF16 && t == RT_TYPE_BF16) || (act == RT_CUDA_F32 && t == RT_TYPE_F32);
}

/* Turns a failed launcher status into a sentence naming the op and the CUDA error (read and
 * cleared here). Returns st. */
loupe_status rt_cuda_op_fail(loupe_err *err, loupe_status st, const char *op);

/* Bytes of one element of the engine's activations / KV cache. */
static inline size_t rt_cuda_act_bytes(rt_cuda_dtype t) { return t == RT_CUDA_BF16 ? 2 : 4; }

/* A CUDA runtime call's result as a status (LOUPE_ERR_GPU on any error; rt_cuda_op_fail then
 * reads the error itself). */
static inline loupe_status rt_cuda_status(cudaError_t ce)
{
    return ce == cudaSuccess ? LOUPE_OK : LOUPE_ERR_GPU;
}

#endif /* LOUPE_CUDA_ENGINE_CUH */
