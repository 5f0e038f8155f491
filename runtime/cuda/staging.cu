/*
 * rtc::HostStage (staging.cuh): pooled page-locked blocks for the graph build's GPU copies.
 */
#include <pthread.h>
#include <string.h>

#include "runtime/cuda/staging.cuh"

namespace rtc {
namespace {

constexpr size_t BLOCK_MIN = (size_t)32 << 20; /* a new block's bytes at least */
constexpr size_t DIRECT_MAX = (size_t)64 << 10; /* copies this small go direct */
constexpr size_t ALIGN = 256;
constexpr int POOL_SLOTS = 16;

/* The process's free blocks; `kept` counts the bytes of every block allocated and not freed,
 * leased or free, so the pool never holds more than POOL_MAX_BYTES in all. */
pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
unsigned char *pool_p[POOL_SLOTS];
size_t pool_size[POOL_SLOTS];
int pool_n = 0;
size_t kept = 0;

/* The smallest free block of at least bytes, removed from the pool; else a new one (NULL when
 * none can be page-locked). */
unsigned char *acquire(size_t bytes, size_t *size)
{
    pthread_mutex_lock(&pool_mu);
    int best = -1;
    for (int i = 0; i < pool_n; i++)
        if (pool_size[i] >= bytes && (best < 0 || pool_size[i] < pool_size[best]))
            best = i;
    if (best >= 0) {
        unsigned char *p = pool_p[best];
        *size = pool_size[best];
        pool_p[best] = pool_p[pool_n - 1];
        pool_size[best] = pool_size[pool_n - 1];
        pool_n--;
        pthread_mutex_unlock(&pool_mu);
        return p;
    }
    pthread_mutex_unlock(&pool_mu);
    const size_t want = bytes > BLOCK_MIN ? (bytes + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1)
                                          : BLOCK_MIN;
    void *p = nullptr;
    if (cudaHostAlloc(&p, want, cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: the copies go direct */
        return nullptr;
    }
    pthread_mutex_lock(&pool_mu);
    kept += want;
    pthread_mutex_unlock(&pool_mu);
    *size = want;
    return static_cast<unsigned char *>(p);
}

/* Block p back to the pool, or freed when the pool is full or would keep too many bytes. */
void release(unsigned char *p, size_t size)
{
    pthread_mutex_lock(&pool_mu);
    const bool keep = pool_n < POOL_SLOTS && kept <= POOL_MAX_BYTES;
    if (keep) {
        pool_p[pool_n] = p;
        pool_size[pool_n++] = size;
    } else {
        kept -= size;
    }
    pthread_mutex_unlock(&pool_mu);
    if (!keep)
        cudaFreeHost(p);
}

/* Whether host memory p is page-locked (allocated or registered with CUDA). */
bool page_locked(const void *p)
{
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeHost;
}

} // namespace

void *HostStage::take(size_t bytes)
{
    bytes = (bytes + ALIGN - 1) & ~(ALIGN - 1);
    while (cur_ < nblk_) {
        if (blk_[cur_].size - off_ >= bytes) {
            void *p = blk_[cur_].p + off_;
            off_ += bytes;
            return p;
        }
        cur_++;
        off_ = 0;
    }
    if (nblk_ == MAX_BLOCKS)
        return nullptr;
    size_t size = 0;
    unsigned char *p = acquire(bytes, &size);
    if (!p)
        return nullptr;
    blk_[nblk_++] = Block{p, size};
    cur_ = nblk_ - 1;
    off_ = bytes;
    return p;
}

cudaError_t HostStage::upload(void *dst, const void *src, size_t bytes, cudaStream_t s)
{
    void *p = bytes > DIRECT_MAX && !page_locked(src) ? take(bytes) : nullptr;
    if (!p)
        return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s);
    memcpy(p, src, bytes);
    return cudaMemcpyAsync(dst, p, bytes, cudaMemcpyHostToDevice, s);
}

cudaError_t HostStage::download(void *dst, const void *src, size_t bytes, cudaStream_t s)
{
    void *p = bytes > DIRECT_MAX && npend_ < MAX_PENDING && !page_locked(dst) ? take(bytes)
                                                                              : nullptr;
    if (!p)
        return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s);
    pend_[npend_++] = Pending{dst, p, bytes};
    return cudaMemcpyAsync(p, src, bytes, cudaMemcpyDeviceToHost, s);
}

void HostStage::complete()
{
    for (int i = 0; i < npend_; i++)
        memcpy(pend_[i].dst, pend_[i].src, pend_[i].bytes);
    npend_ = 0;
    cur_ = 0;
    off_ = 0;
}

void HostStage::give_back()
{
    for (int i = 0; i < nblk_; i++)
        release(blk_[i].p, blk_[i].size);
    nblk_ = cur_ = npend_ = 0;
    off_ = 0;
}

} // namespace rtc
