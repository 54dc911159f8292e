/* Plain C hot loops of dnewton: element-wise activations, the per-instance small
 * products of the Jacobian kernels, and the fused CG vector updates.
 * All arrays are dense, row-major, float64; no allocation, no error paths. */
#ifndef DN_LOOPS_H
#define DN_LOOPS_H

#include <stddef.h>

enum { DN_RELU = 0, DN_SIGMOID = 1, DN_TANH = 2, DN_IDENTITY = 3 };

/* z = sigma(s), n elements. */
void dn_activation_forward(int kind, const double *s, double *z, size_t n);

/* g[i, j, :] *= sigma'(s[i, :]) for i < rows, j < repeat; s, z are (rows, k),
 * g is (rows, repeat, k). The derivative uses z where that is cheaper. */
void dn_activation_scale(int kind, const double *s, const double *z, double *g,
                         size_t rows, size_t repeat, size_t k);

/* out[i, :] += D[i] @ u[i]: D (n, nl, k), u (n, k), out (n, nl). */
void dn_batched_matvec(const double *D, const double *u, double *out,
                       size_t n, size_t nl, size_t k);

/* t[i, :] = D[i]^T @ q[i]: D (n, nl, k), q (n, nl), t (n, k). */
void dn_batched_matvec_t(const double *D, const double *q, double *t,
                         size_t n, size_t nl, size_t k);

/* out[i, :] += row for i < n: out (n, k). */
void dn_add_row(double *out, const double *row, size_t n, size_t k);

/* sums += scale * sum_i a[i, :]: a (n, k). */
void dn_add_column_sums(const double *a, double *sums, double scale, size_t n, size_t k);

/* x += alpha p; r -= alpha q; ax += alpha q; returns r.r (one pass). */
double dn_cg_step(double *x, double *r, const double *p, const double *q, double *ax,
                  double alpha, size_t n);

/* p = r + beta p. */
void dn_cg_direction(double *p, const double *r, double beta, size_t n);

double dn_dot(const double *a, const double *b, size_t n);

#endif
