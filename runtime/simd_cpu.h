/*
 * Private to runtime/: which SIMD kernels the CPU backend may use, decided once at run time.
 *
 * The binary is built for baseline x86-64 (no -march flags); the AVX2 kernels carry their own
 * target attribute (RT_SIMD_AVX2) and are only called when rt_cpu_simd() says the CPU and the OS
 * support AVX2, FMA and F16C. Elsewhere (other CPUs, other architectures, or LOUPE_CPU_SIMD=0 in
 * the environment, which forces the portable path for testing) the plain C kernels run.
 */
#ifndef LOUPE_RT_SIMD_CPU_H
#define LOUPE_RT_SIMD_CPU_H

#include <stdbool.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define RT_HAVE_X86_SIMD 1
/* Functions with this attribute may use AVX2, FMA and F16C instructions; call them only when
 * rt_cpu_simd() is true. */
#define RT_SIMD_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

/* True when the AVX2 + FMA + F16C kernels may run: the CPU has them, the OS saves the YMM
 * registers, and LOUPE_CPU_SIMD is not "0". Cheap after the first call. */
bool rt_cpu_simd(void);

#endif /* LOUPE_RT_SIMD_CPU_H */
