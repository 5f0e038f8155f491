/*
 * rt_cuda_host_pin / rt_cuda_host_unpin (rt_cuda.h): page-locking host memory that the GPU copies
 * to and from, so the copies are DMA and no CPU thread stages them.
 */
#include <cuda_runtime.h>

#include "runtime/rt_cuda.h"

extern "C" bool rt_cuda_host_pin(void *p, size_t bytes)
{
    if (!p || bytes == 0 || !rt_cuda_available())
        return false;
    if (cudaHostRegister(p, bytes, cudaHostRegisterPortable) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: forget it, the copies stay pageable */
        return false;
    }
    return true;
}

extern "C" void rt_cuda_host_unpin(void *p)
{
    if (p && cudaHostUnregister(p) != cudaSuccess)
        cudaGetLastError();
}
