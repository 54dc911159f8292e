/* The loops of dn_loops.h, made from dn_loops_real.c once per precision. */
#include "dn_loops.h"

#include <math.h>

/* Without -ffast-math the compiler keeps a sum's order, so a reduction stays
 * scalar; `omp simd` (honoured with -fopenmp-simd, no OpenMP runtime needed)
 * lets just that loop be reassociated. Only in float32: the float64 loops keep
 * their order, so float64 results stay bit for bit those of earlier versions. */
#if defined(_OPENMP) || defined(DN_OPENMP_SIMD)
#define DN_REASSOCIATED_SUM _Pragma("omp simd reduction(+:acc)")
#else
#define DN_REASSOCIATED_SUM
#endif

/* With DN_TARGET_CLONES (meson checks that the compiler and the loader support
 * it), every loop is compiled twice, for AVX2 and for the baseline x86-64 (SSE2
 * only), and the loader picks the version the CPU can run (GCC's target_clones,
 * an ifunc): one portable build, vector width where the CPU has it (the per-
 * instance loops of the Jacobian kernels gain most; bench/bench_kernels.py times
 * the kernels).
 * Under -ffp-contract=off and without reassociation, float64 results are the
 * same bits in either version; float32's reassociated sums may differ in their
 * last bits (wider vectors, another order of the partial sums). */
#ifdef DN_TARGET_CLONES
#define DN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DN_CLONES
#endif

/* Loops over instances (or elements) whose iterations are independent run on
 * the rank's OpenMP threads when built with OpenMP and the loop is long enough
 * to repay starting them; each thread then does the same arithmetic in the same
 * order as one would, so the results do not depend on the thread count. */
#define DN_PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
#define DN_PARALLEL_MIN 32768
#define DN_PARALLEL_FOR(work) \
    DN_PRAGMA(omp parallel for schedule(static) if ((work) >= DN_PARALLEL_MIN))
#else
#define DN_PARALLEL_FOR(work)
#endif

#define DN_SIMD_REDUCTION
#define DN_ORDERED_SUMS
#define REAL double
#define NAME(x) x##_d
#define EXP exp
#define TANH tanh
#include "dn_loops_real.c"
#undef REAL
#undef NAME
#undef EXP
#undef TANH
#undef DN_SIMD_REDUCTION
#undef DN_ORDERED_SUMS

#define DN_SIMD_REDUCTION DN_REASSOCIATED_SUM
#define REAL float
#define NAME(x) x##_f
#define EXP expf
#define TANH tanhf
#include "dn_loops_real.c"
#undef REAL
#undef NAME
#undef EXP
#undef TANH
