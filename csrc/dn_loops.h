/* Plain C hot loops of dnewton: element-wise activations, the per-instance small
 * products of the Jacobian kernels, the fused CG vector updates, and the
 * products of a CSR input block with a dense matrix (layer 1 on sparse data).
 *
 * Every loop exists in two precisions, suffix _d (double) and _f (float), made
 * from one body (dn_loops_real.c). Arrays are dense and row-major; no allocation,
 * no error paths. What must stay accurate is float64 in both: the per-instance
 * J v (it is summed over ranks and meets the loss curvature), CG step lengths
 * and every dot product's sum. */
#ifndef DN_LOOPS_H
#define DN_LOOPS_H

#include <stddef.h>
#include <stdint.h>

enum { DN_RELU = 0, DN_SIGMOID = 1, DN_TANH = 2, DN_IDENTITY = 3 };

#define DN_DECLARE(REAL, S)                                                           \
    /* z = sigma(s), n elements. */                                                    \
    void dn_activation_forward_##S(int kind, const REAL *s, REAL *z, size_t n);        \
    /* g[i, j, :] *= sigma'(s[i, :]) for i < rows, j < repeat; s, z (rows, k),         \
     * g (rows, repeat, k). The derivative uses z where that is cheaper. */            \
    void dn_activation_scale_##S(int kind, const REAL *s, const REAL *z, REAL *g,      \
                                 size_t rows, size_t repeat, size_t k);                \
    /* out[i, :] += D[i] @ u[i]: D (n, nl, k), u (n, k), out (n, nl) float64. */        \
    void dn_batched_matvec_##S(const REAL *D, const REAL *u, double *out,              \
                               size_t n, size_t nl, size_t k);                         \
    /* t[i, :] = D[i]^T @ q[i]: D (n, nl, k), q (n, nl) float64, t (n, k). */           \
    void dn_batched_matvec_t_##S(const REAL *D, const double *q, REAL *t,              \
                                 size_t n, size_t nl, size_t k);                       \
    /* out[i, :] += row for i < n: out (n, k). */                                      \
    void dn_add_row_##S(REAL *out, const REAL *row, size_t n, size_t k);               \
    /* sums += scale * sum_i a[i, :]: a (n, k). */                                     \
    void dn_add_column_sums_##S(const REAL *a, REAL *sums, double scale, size_t n,     \
                                size_t k);                                             \
    /* x += alpha p; r -= alpha q; ax += alpha q; returns r.r (one pass). */           \
    double dn_cg_step_##S(REAL *x, REAL *r, const REAL *p, const REAL *q, REAL *ax,    \
                          double alpha, size_t n);                                     \
    /* p = r + beta p. */                                                              \
    void dn_cg_direction_##S(REAL *p, const REAL *r, double beta, size_t n);           \
    /* a . b, summed in float64. */                                                    \
    double dn_dot_##S(const REAL *a, const REAL *b, size_t n);                         \
    /* out = [out +] Z W: Z CSR (n, a) as data, indices, indptr (n + 1); W (a, b),      \
     * out (n, b). */                                                                  \
    void dn_csr_matmul_##S(const REAL *data, const int32_t *indices,                   \
                           const int32_t *indptr, size_t n, const REAL *W, size_t b,   \
                           REAL *out, int accumulate);                                 \
    /* out += scale Z^T T: Z CSR (n, a), T (n, b), out (a, b). */                      \
    void dn_csr_t_matmul_##S(const REAL *data, const int32_t *indices,                 \
                             const int32_t *indptr, size_t n, const REAL *T, size_t b, \
                             REAL *out, double scale);

DN_DECLARE(double, d)
DN_DECLARE(float, f)

#undef DN_DECLARE

#endif
