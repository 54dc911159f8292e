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

#define DN_SIMD_REDUCTION
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
