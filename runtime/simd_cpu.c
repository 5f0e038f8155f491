/*
 * Run-time detection of the CPU backend's SIMD kernels (see simd_cpu.h).
 *
 * cpuid via <cpuid.h> rather than __builtin_cpu_supports("f16c"), which clang 14 rejects. The
 * answer is computed once and kept in an atomic: every thread that races on the first call
 * computes the same value, so the cache needs no lock.
 */
#include "runtime/simd_cpu.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef RT_HAVE_X86_SIMD
#include <cpuid.h>

static bool detect_avx2_fma_f16c(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    if (!(c & bit_FMA) || !(c & bit_F16C) || !(c & bit_AVX) || !(c & bit_OSXSAVE))
        return false;
    /* The OS must save the SSE and AVX register state (XCR0 bits 1 and 2). */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 6) != 6)
        return false;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & bit_AVX2) != 0;
}
#endif

bool rt_cpu_simd(void)
{
    static atomic_int state; /* 0 unknown, 1 portable, 2 AVX2 */
    int s = atomic_load_explicit(&state, memory_order_relaxed);
    if (s == 0) {
        bool on = false;
#ifdef RT_HAVE_X86_SIMD
        const char *env = getenv("LOUPE_CPU_SIMD");
        on = !(env && strcmp(env, "0") == 0) && detect_avx2_fma_f16c();
#endif
        s = on ? 2 : 1;
        atomic_store_explicit(&state, s, memory_order_relaxed);
    }
    return s == 2;
}
