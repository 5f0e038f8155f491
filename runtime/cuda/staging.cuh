/*
 * Page-locked staging of the graph build's GPU calls (knn.cu, knn_wide.cu, prune.cu): their
 * inputs and outputs are the build's ordinary (pageable) arrays. Internal to runtime/cuda.
 *
 * Why: a copy from or to pageable memory is staged by the driver through a small page-locked
 * buffer of its own, chunk by chunk, on the calling thread; while the build keeps every core
 * busy those copies ran at about 1 GB/s (docs/BENCHMARKS.md, "Graph build on the GPU"). A call
 * instead copies its inputs into a page-locked block with memcpy and the DMA runs from there;
 * downloads land in the block and are copied out once the stream has finished. A pruning call's
 * downloads went from ~5 ms to 0.2, the calls became 14-19% shorter ("The GPU build of large-k
 * graphs, measured"). Page-locking memory costs milliseconds per tens of MB, so the blocks are
 * pooled for the process and reused by later calls (at most POOL_MAX_BYTES kept; a block beyond
 * that is freed when its lease ends).
 *
 * Memory already page-locked (the runtime's host keys, rt_cuda_host_pin) is copied directly, and
 * so are small copies. When no page-locked memory can be had every copy is direct, as before.
 */
#ifndef LOUPE_CUDA_STAGING_CUH
#define LOUPE_CUDA_STAGING_CUH

#include <cuda_runtime.h>
#include <stddef.h>

namespace rtc {

/* Page-locked bytes the pool keeps between calls, at most. */
constexpr size_t POOL_MAX_BYTES = (size_t)1 << 30;

/* One call's lease on pooled page-locked blocks and the downloads waiting to be copied out.
 * Use: upload/download on the call's stream, then after the stream is synchronised complete()
 * (downloads reach their destinations; the lease's space is free for the next copies), and
 * give_back() (or the destructor) once nothing is in flight. Not shared between threads. */
class HostStage {
  public:
    HostStage() = default;
    HostStage(const HostStage &) = delete;
    HostStage &operator=(const HostStage &) = delete;
    ~HostStage() { give_back(); }

    /* bytes from host src to device dst, asynchronously on s. src may be reused at return. */
    cudaError_t upload(void *dst, const void *src, size_t bytes, cudaStream_t s);
    /* bytes from device src to host dst, asynchronously on s; dst holds them after s is
     * synchronised and complete() has run. */
    cudaError_t download(void *dst, const void *src, size_t bytes, cudaStream_t s);
    /* After s is synchronised: the staged downloads copied to their destinations. */
    void complete();
    /* The blocks back to the pool. Only when no copy through them is in flight. */
    void give_back();

  private:
    static constexpr int MAX_BLOCKS = 8, MAX_PENDING = 16;
    struct Block {
        unsigned char *p;
        size_t size;
    };
    struct Pending {
        void *dst;
        const void *src;
        size_t bytes;
    };
    /* bytes of page-locked space (256-byte aligned) until complete(), or NULL. */
    void *take(size_t bytes);

    Block blk_[MAX_BLOCKS] = {};
    int nblk_ = 0, cur_ = 0;
    size_t off_ = 0; /* used bytes of blk_[cur_] */
    Pending pend_[MAX_PENDING] = {};
    int npend_ = 0;
};

} // namespace rtc

#endif /* LOUPE_CUDA_STAGING_CUH */
