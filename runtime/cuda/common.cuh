/*
 * Shared by the CUDA ops (the .cu files of runtime/cuda, device code only; C callers include the ops' own
 * .cuh headers): weight decoding in registers, warp reductions, activation stores, and the
 * launch-status check.
 *
 * Weights on the GPU keep their GGUF bytes (block layouts in runtime/quant.c) EXCEPT Q8_0, which
 * repack.cu rearranges at upload (per row: all quants, 16-byte aligned, then the fp16 scales;
 * read by matvec.cu's Q8_0 kernel and dequant.cu's q8_unit). Each row starts at a multiple of 16
 * bytes (rows are uploaded with a padded pitch), so F32/F16/BF16 units and Q4_K blocks can be read
 * with 16-byte loads; Q6_K (210-byte) blocks are only 2-byte aligned and are read in 2-byte words.
 *
 * A "unit" is 32 consecutive elements of a row: one Q8_0 block, one Q4_K sub-block, one 32-wide
 * quarter-half of a Q6_K block, 32 floats/halves. Decoding a unit reproduces rt_dequantize() up
 * to the rounding of a fused multiply-add.
 */
#ifndef LOUPE_CUDA_COMMON_CUH
#define LOUPE_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/cuda/staging.cuh"
#include "runtime/rt_cuda.h"
#include "runtime/rt_gguf.h"

namespace rtc {

constexpr int WARP = 32;
constexpr int UNIT = 32; /* elements per decoded unit */

static inline unsigned ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

/* Wall-clock seconds (monotonic), for a call's timings. */
static inline double wall_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A CUDA error as loupe's status and sentence "<who>: <what>: <CUDA's words>"; out of device
 * memory is LOUPE_ERR_GPU_MEMORY, anything else LOUPE_ERR_GPU. */
static inline loupe_status cuda_fail(loupe_err *err, cudaError_t e, const char *who,
                                     const char *what)
{
    return loupe_fail(err,
                      e == cudaErrorMemoryAllocation ? LOUPE_ERR_GPU_MEMORY : LOUPE_ERR_GPU,
                      "%s: %s: %s", who, what, cudaGetErrorString(e));
}

/* One host call's stream, events and device buffers (the graph build's GPU calls), allocated
 * stream-ordered and freed the same way, and its host copies staged through page-locked memory
 * (staging.cuh); `who` begins its error sentences. */
struct CallBufs {
    const char *who;
    cudaStream_t stream = nullptr;
    cudaEvent_t ev[4] = {};
    void *buf[16] = {};
    int nbuf = 0;
    uint64_t bytes = 0; /* allocated so far */
    HostStage stage;

    explicit CallBufs(const char *w) : who(w) {}

    template <typename T> loupe_status alloc(T **p, size_t count, loupe_err *err)
    {
        *p = nullptr;
        if (nbuf == (int)(sizeof buf / sizeof buf[0]))
            return loupe_fail(err, LOUPE_ERR_INTERNAL, "%s: too many device buffers", who);
        const size_t b = (count ? count : 1) * sizeof(T);
        const cudaError_t e = cudaMallocAsync(reinterpret_cast<void **>(p), b, stream);
        if (e != cudaSuccess)
            return cuda_fail(err, e, who, "device allocation");
        buf[nbuf++] = *p;
        bytes += b;
        return LOUPE_OK;
    }

    /* alloc, then the host's count elements copied in. */
    template <typename T> loupe_status upload(T **p, const T *src, size_t count, loupe_err *err)
    {
        loupe_status st = alloc(p, count, err);
        if (st || count == 0)
            return st;
        const cudaError_t e = stage.upload(*p, src, count * sizeof(T), stream);
        return e == cudaSuccess ? LOUPE_OK : cuda_fail(err, e, who, "upload");
    }

    /* count elements of device src to host dst: there once sync() has returned. */
    template <typename T>
    loupe_status download(T *dst, const T *src, size_t count, const char *what, loupe_err *err)
    {
        const cudaError_t e = count ? stage.download(dst, src, count * sizeof(T), stream)
                                    : cudaSuccess;
        return e == cudaSuccess ? LOUPE_OK : cuda_fail(err, e, who, what);
    }

    /* Waits for the stream; the downloads so far reach their destinations. */
    loupe_status sync(const char *what, loupe_err *err)
    {
        const cudaError_t e = cudaStreamSynchronize(stream);
        if (e != cudaSuccess)
            return cuda_fail(err, e, who, what);
        stage.complete();
        return LOUPE_OK;
    }

    /* The keys as stored, dense on the device: rows (n, dim) of their type, and for int8 keys
     * their scales (else *scales is NULL). */
    loupe_status upload_keys(const ann_keys *keys, void **rows, float **scales, loupe_err *err)
    {
        const int64_t n = ann_keys_count(keys);
        const int dim = ann_keys_dim(keys);
        const ann_key_type kt = ann_keys_type(keys);
        int64_t stride = 0;
        const float *scales_h = nullptr;
        const void *rows_h = ann_keys_data(keys, &stride, &scales_h);
        const size_t esz = ann_key_type_bytes(kt);
        unsigned char *d = nullptr;
        *rows = nullptr;
        *scales = nullptr;
        loupe_status st = alloc(&d, (size_t)n * dim * esz, err);
        if (st)
            return st;
        *rows = d;
        if (n > 0) {
            const cudaError_t e =
                cudaMemcpy2DAsync(d, (size_t)dim * esz, rows_h, (size_t)stride * esz,
                                  (size_t)dim * esz, (size_t)n, cudaMemcpyHostToDevice, stream);
            if (e != cudaSuccess)
                return cuda_fail(err, e, who, "key upload");
        }
        return kt == ANN_KEYS_INT8 ? upload(scales, scales_h, (size_t)n, err) : LOUPE_OK;
    }

    /* Frees p now (it must be one of buf). */
    void free_now(void *p)
    {
        for (int i = 0; i < nbuf; i++)
            if (buf[i] == p) {
                cudaFreeAsync(p, stream);
                buf[i] = buf[--nbuf];
                return;
            }
    }

    /* Frees everything; errors here are not reported (the first error already was). */
    void release()
    {
        if (stream) {
            for (int i = 0; i < nbuf; i++)
                cudaFreeAsync(buf[i], stream);
            cudaStreamSynchronize(stream);
            cudaStreamDestroy(stream);
        }
        stage.give_back(); /* nothing in flight: the stream is finished or never was */
        for (cudaEvent_t e : ev)
            if (e)
                cudaEventDestroy(e);
        cudaGetLastError();
    }
};

/* Lets kern take as much dynamic shared memory as the current device allows (less its static
 * shared memory). Every call sets the same value, so host threads launching it at once with
 * different sizes cannot undo each other: a per-call size did, and one thread's smaller limit
 * failed another's launch with "invalid argument". */
template <typename K> static inline cudaError_t allow_max_dyn_smem(K *kern)
{
    int dev = 0, optin = 0;
    cudaFuncAttributes fa;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e == cudaSuccess)
        e = cudaFuncGetAttributes(&fa, kern);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 optin - (int)fa.sharedSizeBytes);
    return e;
}

/* Status of the launches so far. Peeks, so the caller that turns a failure into a sentence can
 * still read (and clear) the error with cudaGetLastError(). */
static inline loupe_status launch_status()
{
    return cudaPeekAtLastError() == cudaSuccess ? LOUPE_OK : LOUPE_ERR_GPU;
}

/* True for the stored types the kernels decode. */
static inline bool type_ok(rt_type t)
{
    return t == RT_TYPE_F32 || t == RT_TYPE_F16 || t == RT_TYPE_BF16 || t == RT_TYPE_Q8_0 ||
           t == RT_TYPE_Q4_K || t == RT_TYPE_Q6_K;
}

/* ==== Scalars ============================================================================= */

__device__ __forceinline__ uint16_t ld_u16(const uint8_t *p)
{
    return *reinterpret_cast<const uint16_t *>(p);
}

__device__ __forceinline__ float f16_bits(uint16_t h) { return __half2float(__ushort_as_half(h)); }

__device__ __forceinline__ float bf16_bits(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = WARP / 2; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = WARP / 2; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Activation stores/loads in the engine's dtype. */
__device__ __forceinline__ void store_act(void *out, size_t i, float v, rt_cuda_dtype t)
{
    if (t == RT_CUDA_BF16)
        static_cast<__nv_bfloat16 *>(out)[i] = __float2bfloat16_rn(v);
    else
        static_cast<float *>(out)[i] = v;
}

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* ==== Weight decoding ===================================================================== */

/* Element i of a row of a float type (the tail past the last whole unit). */
template <int T> __device__ __forceinline__ float decode_elem(const uint8_t *row, uint32_t i)
{
    if (T == RT_TYPE_F32)
        return reinterpret_cast<const float *>(row)[i];
    if (T == RT_TYPE_F16)
        return f16_bits(ld_u16(row + 2 * i));
    return bf16_bits(ld_u16(row + 2 * i));
}

/* 6-bit scale and min of Q4_K sub-block j from the 12 packed bytes (quant.c's q4k_scale_min). */
__device__ __forceinline__ void q4k_scale_min(const uint8_t *s, int j, int &sc, int &m)
{
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Decodes unit u (elements 32u .. 32u+31) of a row into v. */
template <int T> __device__ __forceinline__ void decode_unit(const uint8_t *row, uint32_t u,
                                                             float v[UNIT])
{
    if (T == RT_TYPE_F32) {
        const float4 *p = reinterpret_cast<const float4 *>(row) + 8 * u;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 f = p[i];
            v[4 * i] = f.x;
            v[4 * i + 1] = f.y;
            v[4 * i + 2] = f.z;
            v[4 * i + 3] = f.w;
        }
    } else if (T == RT_TYPE_F16 || T == RT_TYPE_BF16) {
        const uint4 *p = reinterpret_cast<const uint4 *>(row) + 4 * u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 w = p[i];
            uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint16_t lo = (uint16_t)(ws[k] & 0xffff), hi = (uint16_t)(ws[k] >> 16);
                v[8 * i + 2 * k] = T == RT_TYPE_F16 ? f16_bits(lo) : bf16_bits(lo);
                v[8 * i + 2 * k + 1] = T == RT_TYPE_F16 ? f16_bits(hi) : bf16_bits(hi);
            }
        }
    } else if (T == RT_TYPE_Q8_0) {
        /* GGUF block layout: for rows in host memory only — uploaded Q8_0 rows are repacked
         * (see the top of this file) and read through dequant.cu's q8_unit. */
        const uint8_t *b = row + 34 * (size_t)u;
        float d = f16_bits(ld_u16(b));
#pragma unroll
        for (int i = 0; i < 16; i++) {
            uint16_t w = ld_u16(b + 2 + 2 * i);
            v[2 * i] = d * (float)(int8_t)(w & 0xff);
            v[2 * i + 1] = d * (float)(int8_t)(w >> 8);
        }
    } else if (T == RT_TYPE_Q4_K) {
        const uint8_t *b = row + 144 * (size_t)(u / 8);
        int j = (int)(u % 8), c = j / 2;
        float d = f16_bits(ld_u16(b)), dmin = f16_bits(ld_u16(b + 2));
        int sc, m;
        q4k_scale_min(b + 4, j, sc, m);
        float ds = d * (float)sc, dm = dmin * (float)m;
        const uint4 *q = reinterpret_cast<const uint4 *>(b + 16 + 32 * c);
        int shift = (j & 1) ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint4 w = q[i];
            uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int k = 0; k < 4; k++)
#pragma unroll
                for (int by = 0; by < 4; by++) {
                    int qv = (int)((ws[k] >> (8 * by + shift)) & 0xf);
                    v[16 * i + 4 * k + by] = ds * (float)qv - dm;
                }
        }
    } else { /* Q6_K: unit u = block u/8, half h = (u%8)/4, quarter k = u%4 */
        const uint8_t *b = row + 210 * (size_t)(u / 8);
        int h = (int)((u % 8) / 4), k = (int)(u % 4);
        float d = f16_bits(ld_u16(b + 208));
        const uint8_t *ql = b + 64 * h + 32 * (k & 1), *qh = b + 128 + 32 * h;
        const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192 + 8 * h + 2 * k);
        int lshift = 4 * (k >> 1), hshift = 2 * k;
        float d0 = d * (float)sc[0], d1 = d * (float)sc[1];
#pragma unroll
        for (int l = 0; l < 32; l += 2) {
            uint16_t wl = ld_u16(ql + l), wh = ld_u16(qh + l);
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int lo = ((e ? wl >> 8 : wl) >> lshift) & 0xf;
                int hi = ((e ? wh >> 8 : wh) >> hshift) & 3;
                v[l + e] = (l < 16 ? d0 : d1) * (float)((lo | (hi << 4)) - 32);
            }
        }
    }
}

/* Calls f.template run<T>() (a functor with a `template <int T> void run() const`) with the stored type as a compile-time constant. */
template <typename F> static inline loupe_status dispatch_type(rt_type t, const F &f)
{
    switch (t) {
    case RT_TYPE_F32: f.template run<RT_TYPE_F32>(); break;
    case RT_TYPE_F16: f.template run<RT_TYPE_F16>(); break;
    case RT_TYPE_BF16: f.template run<RT_TYPE_BF16>(); break;
    case RT_TYPE_Q8_0: f.template run<RT_TYPE_Q8_0>(); break;
    case RT_TYPE_Q4_K: f.template run<RT_TYPE_Q4_K>(); break;
    case RT_TYPE_Q6_K: f.template run<RT_TYPE_Q6_K>(); break;
    default: return LOUPE_ERR_UNSUPPORTED;
    }
    return launch_status();
}

} // namespace rtc

#endif /* LOUPE_CUDA_COMMON_CUH */
