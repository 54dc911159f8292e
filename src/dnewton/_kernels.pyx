# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled kernels of dnewton: BLAS through scipy.linalg.cython_blas, plain C loops.

Every kernel takes float64 or float32 arrays (`real`; one precision per call) and
C-contiguous (row-major) ones; shapes use n instances, a rows and b columns of a
weight block, n_L outputs. What the precision does not change: J v per instance
and the curvature-applied Q are float64, and so are the sums of dot products and
CG step lengths. Kernels never allocate: callers pass outputs and workspaces.
Shapes are checked here, with the GIL; the work itself runs without it.

The ``csr_*`` kernels are the layer-1 kernels on a sparse input block Z: a
``scipy.sparse.csr_matrix`` (n, a) of the network's precision with int32 indices
(`io.data.partition` makes it so), used in place of the dense Z (n, a).
"""

from libc.stdint cimport int32_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

ctypedef fused real:
    float
    double

cdef extern from "dn_loops.h" nogil:
    void dn_activation_forward_d(int kind, const double *s, double *z, size_t n)
    void dn_activation_forward_f(int kind, const float *s, float *z, size_t n)
    void dn_activation_scale_d(int kind, const double *s, const double *z, double *g,
                               size_t rows, size_t repeat, size_t k)
    void dn_activation_scale_f(int kind, const float *s, const float *z, float *g,
                               size_t rows, size_t repeat, size_t k)
    void dn_batched_matvec_d(const double *D, const double *u, double *out,
                             size_t n, size_t nl, size_t k)
    void dn_batched_matvec_f(const float *D, const float *u, double *out,
                             size_t n, size_t nl, size_t k)
    void dn_batched_matvec_t_d(const double *D, const double *q, double *t,
                               size_t n, size_t nl, size_t k)
    void dn_batched_matvec_t_f(const float *D, const double *q, float *t,
                               size_t n, size_t nl, size_t k)
    void dn_add_row_d(double *out, const double *row, size_t n, size_t k)
    void dn_add_row_f(float *out, const float *row, size_t n, size_t k)
    void dn_add_column_sums_d(const double *a, double *sums, double scale, size_t n,
                              size_t k)
    void dn_add_column_sums_f(const float *a, float *sums, double scale, size_t n, size_t k)
    double dn_cg_step_d(double *x, double *r, const double *p, const double *q, double *ax,
                        double alpha, size_t n)
    double dn_cg_step_f(float *x, float *r, const float *p, const float *q, float *ax,
                        double alpha, size_t n)
    void dn_cg_direction_d(double *p, const double *r, double beta, size_t n)
    void dn_cg_direction_f(float *p, const float *r, double beta, size_t n)
    double dn_dot_d(const double *a, const double *b, size_t n)
    double dn_dot_f(const float *a, const float *b, size_t n)
    void dn_csr_matmul_d(const double *data, const int32_t *indices, const int32_t *indptr,
                         size_t n, const double *W, size_t b, double *out, int accumulate)
    void dn_csr_matmul_f(const float *data, const int32_t *indices, const int32_t *indptr,
                         size_t n, const float *W, size_t b, float *out, int accumulate)
    void dn_csr_t_matmul_d(const double *data, const int32_t *indices, const int32_t *indptr,
                           size_t n, const double *T, size_t b, double *out, double scale)
    void dn_csr_t_matmul_f(const float *data, const int32_t *indices, const int32_t *indptr,
                           size_t n, const float *T, size_t b, float *out, double scale)
    enum:
        DN_RELU
        DN_SIGMOID
        DN_TANH
        DN_IDENTITY

# The activation codes, as csrc/dn_loops.h defines them.
RELU = DN_RELU
SIGMOID = DN_SIGMOID
TANH = DN_TANH
IDENTITY = DN_IDENTITY


cdef void _gemm(bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                const real *A, int lda, const real *B, int ldb, double beta,
                real *C, int ldc) noexcept nogil:
    """Row-major C (m, n) = alpha op(A) op(B) + beta C; lda, ldb, ldc are row lengths.

    A row-major matrix is its column-major transpose, so this is the column-major
    product C^T = op(B)^T op(A)^T.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int i, total
    cdef real alpha_r = <real>alpha, beta_r = <real>beta
    if m == 0 or n == 0:
        return
    if k == 0:
        total = m * n
        for i in range(total):
            C[i] = beta_r * C[i] if beta != 0.0 else 0
        return
    lda = lda if lda > 1 else 1
    ldb = ldb if ldb > 1 else 1
    ldc = ldc if ldc > 1 else 1
    if real is double:
        dgemm(&tb, &ta, &n, &m, &k, &alpha_r, <double *>B, &ldb, <double *>A, &lda,
              &beta_r, C, &ldc)
    else:
        sgemm(&tb, &ta, &n, &m, &k, &alpha_r, <float *>B, &ldb, <float *>A, &lda,
              &beta_r, C, &ldc)


cdef inline real *_p1(const real[::1] a) noexcept nogil:
    return <real *>&a[0] if a is not None and a.shape[0] else NULL


cdef inline real *_p2(const real[:, ::1] a) noexcept nogil:
    return <real *>&a[0, 0] if a is not None and a.shape[0] and a.shape[1] else NULL


cdef inline real *_p3(const real[:, :, ::1] a) noexcept nogil:
    return <real *>&a[0, 0, 0] if a.shape[0] and a.shape[1] and a.shape[2] else NULL


cdef inline double *_d2(const double[:, ::1] a) noexcept nogil:
    return <double *>&a[0, 0] if a.shape[0] and a.shape[1] else NULL


cdef _check(str name, tuple got, tuple want):
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")


def gemm(const real[:, ::1] A, const real[:, ::1] B, real[:, ::1] C,
         bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0):
    """C = alpha op(A) @ op(B) + beta C, with op(X) = X.T when trans_x."""
    cdef int m = A.shape[1] if trans_a else A.shape[0]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef int n = B.shape[0] if trans_b else B.shape[1]
    _check("B", ((B.shape[1] if trans_b else B.shape[0]), n), (k, n))
    _check("C", (C.shape[0], C.shape[1]), (m, n))
    with nogil:
        _gemm(trans_a, trans_b, m, n, k, alpha, _p2(A), A.shape[1],
              _p2(B), B.shape[1], beta, _p2(C), n)


def block_forward(const real[:, ::1] Z, const real[:, ::1] W, const real[::1] bias,
                  real[:, ::1] out, bint accumulate):
    """out = [out +] Z (n, a) @ W (a, b) [+ bias (b,) on every row]."""
    cdef int n = Z.shape[0], a = Z.shape[1], b = W.shape[1]
    _check("W", (W.shape[0], W.shape[1]), (a, b))
    _check("out", (out.shape[0], out.shape[1]), (n, b))
    if bias is not None:
        _check("bias", (bias.shape[0],), (b,))
    with nogil:
        _gemm(False, False, n, b, a, 1.0, _p2(Z), a, _p2(W), b,
              1.0 if accumulate else 0.0, _p2(out), b)
        if bias is not None and n and b:
            if real is double:
                dn_add_row_d(&out[0, 0], &bias[0], n, b)
            else:
                dn_add_row_f(&out[0, 0], &bias[0], n, b)


def activation_forward(int kind, const real[:, ::1] S, real[:, ::1] Z):
    """Z = sigma(S), (n, k); kind: RELU, SIGMOID, TANH or IDENTITY."""
    _check("Z", (Z.shape[0], Z.shape[1]), (S.shape[0], S.shape[1]))
    if S.shape[0] and S.shape[1]:
        with nogil:
            if real is double:
                dn_activation_forward_d(kind, &S[0, 0], &Z[0, 0], S.shape[0] * S.shape[1])
            else:
                dn_activation_forward_f(kind, &S[0, 0], &Z[0, 0], S.shape[0] * S.shape[1])


def activation_backward(int kind, const real[:, ::1] S, const real[:, ::1] Z,
                        real[:, ::1] G):
    """G *= sigma'(S) element-wise; S, Z = sigma(S), G all (n, k)."""
    _check("Z", (Z.shape[0], Z.shape[1]), (S.shape[0], S.shape[1]))
    _check("G", (G.shape[0], G.shape[1]), (S.shape[0], S.shape[1]))
    if S.shape[0] and S.shape[1]:
        with nogil:
            if real is double:
                dn_activation_scale_d(kind, &S[0, 0], &Z[0, 0], &G[0, 0], S.shape[0], 1,
                                      S.shape[1])
            else:
                dn_activation_scale_f(kind, &S[0, 0], &Z[0, 0], &G[0, 0], S.shape[0], 1,
                                      S.shape[1])


def activation_backward_jacobian(int kind, const real[:, ::1] S, const real[:, ::1] Z,
                                 real[:, :, ::1] G):
    """G[i, j, :] *= sigma'(S[i, :]); S, Z (n, k), G (n, n_L, k)."""
    _check("Z", (Z.shape[0], Z.shape[1]), (S.shape[0], S.shape[1]))
    _check("G", (G.shape[0], G.shape[2]), (S.shape[0], S.shape[1]))
    if _p3(G) != NULL:
        with nogil:
            if real is double:
                dn_activation_scale_d(kind, &S[0, 0], &Z[0, 0], &G[0, 0, 0], G.shape[0],
                                      G.shape[1], G.shape[2])
            else:
                dn_activation_scale_f(kind, &S[0, 0], &Z[0, 0], &G[0, 0, 0], G.shape[0],
                                      G.shape[1], G.shape[2])


def block_backward(const real[:, ::1] Z, const real[:, ::1] W, const real[:, ::1] dS,
                   real[:, ::1] gradW, real[::1] gradb, real[:, ::1] dZ, double scale):
    """gradW += scale Z^T dS; gradb += scale sum_i dS[i]; dZ += dS W^T (unscaled).

    Z (n, a), W (a, b), dS (n, b), gradW (a, b), gradb (b,) or None, dZ (n, a) or None.
    """
    cdef int n = Z.shape[0], a = Z.shape[1], b = W.shape[1]
    _check("W", (W.shape[0], W.shape[1]), (a, b))
    _check("dS", (dS.shape[0], dS.shape[1]), (n, b))
    _check("gradW", (gradW.shape[0], gradW.shape[1]), (a, b))
    if gradb is not None:
        _check("gradb", (gradb.shape[0],), (b,))
    if dZ is not None:
        _check("dZ", (dZ.shape[0], dZ.shape[1]), (n, a))
    with nogil:
        _gemm(True, False, a, b, n, scale, _p2(Z), a, _p2(dS), b, 1.0, _p2(gradW), b)
        if gradb is not None and n and b:
            if real is double:
                dn_add_column_sums_d(&dS[0, 0], &gradb[0], scale, n, b)
            else:
                dn_add_column_sums_f(&dS[0, 0], &gradb[0], scale, n, b)
        if dZ is not None:
            _gemm(False, True, n, a, b, 1.0, _p2(dS), b, _p2(W), b, 1.0, _p2(dZ), a)


def jacobian_backward(const real[:, :, ::1] D, const real[:, ::1] W, real[:, :, ::1] dZ):
    """dZ += D @ W^T: D (n, n_L, b), W (a, b), dZ (n, n_L, a); one GEMM on (n n_L) rows."""
    cdef int rows = D.shape[0] * D.shape[1], a = W.shape[0], b = W.shape[1]
    _check("D", (D.shape[2],), (b,))
    _check("dZ", (dZ.shape[0], dZ.shape[1], dZ.shape[2]), (D.shape[0], D.shape[1], a))
    with nogil:
        _gemm(False, True, rows, a, b, 1.0, _p3(D), b, _p2(W), b, 1.0, _p3(dZ), a)


def jacobian_vector_product(const real[:, ::1] Z, const real[:, ::1] V,
                            const real[::1] vbias, const real[:, :, ::1] D,
                            real[:, ::1] U, double[:, ::1] out):
    """out[i] += D[i] @ (Z[i] @ V [+ vbias]) for every instance i: J_{i,p} v_p.

    Z (n, a), V (a, b), vbias (b,) or None, D (n, n_L, b), U (n, b) workspace,
    out (n, n_L) float64 in either precision, accumulated into.
    """
    cdef int n = Z.shape[0], a = Z.shape[1], b = V.shape[1], nl = D.shape[1]
    _check("V", (V.shape[0], V.shape[1]), (a, b))
    _check("D", (D.shape[0], D.shape[2]), (n, b))
    _check("U", (U.shape[0], U.shape[1]), (n, b))
    _check("out", (out.shape[0], out.shape[1]), (n, nl))
    if vbias is not None:
        _check("vbias", (vbias.shape[0],), (b,))
    if n == 0 or b == 0 or nl == 0:
        return
    with nogil:
        _gemm(False, False, n, b, a, 1.0, _p2(Z), a, _p2(V), b, 0.0, &U[0, 0], b)
        if real is double:
            if vbias is not None:
                dn_add_row_d(&U[0, 0], &vbias[0], n, b)
            dn_batched_matvec_d(&D[0, 0, 0], &U[0, 0], &out[0, 0], n, nl, b)
        else:
            if vbias is not None:
                dn_add_row_f(&U[0, 0], &vbias[0], n, b)
            dn_batched_matvec_f(&D[0, 0, 0], &U[0, 0], &out[0, 0], n, nl, b)


def jacobian_transpose_product(const real[:, ::1] Z, const real[:, :, ::1] D,
                               const double[:, ::1] Q, real[:, ::1] T, real[:, ::1] out,
                               real[::1] outbias, double scale):
    """out += scale Z^T T and outbias += scale sum_i T[i], with T[i] = D[i]^T Q[i].

    Z (n, a), D (n, n_L, b), Q (n, n_L) float64 in either precision, T (n, b)
    workspace, out (a, b), outbias (b,) or None: J_{.,p}^T q summed over instances.
    """
    cdef int n = Z.shape[0], a = Z.shape[1], nl = D.shape[1], b = D.shape[2]
    _check("D", (D.shape[0],), (n,))
    _check("Q", (Q.shape[0], Q.shape[1]), (n, nl))
    _check("T", (T.shape[0], T.shape[1]), (n, b))
    _check("out", (out.shape[0], out.shape[1]), (a, b))
    if outbias is not None:
        _check("outbias", (outbias.shape[0],), (b,))
    if n == 0 or b == 0:
        return
    with nogil:
        if real is double:
            dn_batched_matvec_t_d(_p3(D), _d2(Q), &T[0, 0], n, nl, b)
        else:
            dn_batched_matvec_t_f(_p3(D), _d2(Q), &T[0, 0], n, nl, b)
        _gemm(True, False, a, b, n, scale, _p2(Z), a, &T[0, 0], b, 1.0, _p2(out), b)
        if outbias is not None:
            if real is double:
                dn_add_column_sums_d(&T[0, 0], &outbias[0], scale, n, b)
            else:
                dn_add_column_sums_f(&T[0, 0], &outbias[0], scale, n, b)


def cg_step(real[::1] x, real[::1] r, const real[::1] p, const real[::1] q,
            real[::1] Ax, double alpha):
    """x += alpha p; r -= alpha q; Ax += alpha q; returns r.r (float64) -- one fused pass."""
    cdef size_t n = x.shape[0]
    cdef double rr = 0.0
    _check("r", (r.shape[0],), (n,))
    _check("p", (p.shape[0],), (n,))
    _check("q", (q.shape[0],), (n,))
    _check("Ax", (Ax.shape[0],), (n,))
    if n:
        with nogil:
            if real is double:
                rr = dn_cg_step_d(&x[0], &r[0], &p[0], &q[0], &Ax[0], alpha, n)
            else:
                rr = dn_cg_step_f(&x[0], &r[0], &p[0], &q[0], &Ax[0], alpha, n)
    return rr


def cg_direction(real[::1] p, const real[::1] r, double beta):
    """p = r + beta p."""
    _check("r", (r.shape[0],), (p.shape[0],))
    if p.shape[0]:
        with nogil:
            if real is double:
                dn_cg_direction_d(&p[0], &r[0], beta, p.shape[0])
            else:
                dn_cg_direction_f(&p[0], &r[0], beta, p.shape[0])


def dot(const real[::1] a, const real[::1] b):
    """a . b of two 1-D arrays, summed in float64."""
    cdef double result = 0.0
    _check("b", (b.shape[0],), (a.shape[0],))
    if a.shape[0]:
        with nogil:
            if real is double:
                result = dn_dot_d(&a[0], &b[0], a.shape[0])
            else:
                result = dn_dot_f(&a[0], &b[0], a.shape[0])
    return result


# -- layer 1 on a CSR input block -------------------------------------------------------


cdef _csr_check(int nnz, const int32_t[::1] indices, const int32_t[::1] indptr, int n):
    """Refuse index arrays the loops would read out of bounds with (O(1) checks)."""
    _check("Z.indptr", (indptr.shape[0],), (n + 1,))
    if indices.shape[0] != nnz or indptr[0] != 0 or indptr[n] > nnz:
        raise ValueError(f"Z is not a valid CSR matrix (indptr[0] = {indptr[0]}, "
                         f"indptr[-1] = {indptr[n]}, {nnz} stored values)")


def _csr_parts(Z):
    """(data, indices, indptr, n, a) of a CSR matrix, refusing anything else."""
    if getattr(Z, "format", None) != "csr":
        raise TypeError(f"Z must be a scipy.sparse CSR matrix, not {type(Z).__name__}")
    return Z.data, Z.indices, Z.indptr, Z.shape[0], Z.shape[1]


def _csr_forward(const real[::1] data, const int32_t[::1] indices, const int32_t[::1] indptr,
                 int n, int a, const real[:, ::1] W, const real[::1] bias, real[:, ::1] out,
                 bint accumulate):
    cdef int b = W.shape[1]
    _csr_check(data.shape[0], indices, indptr, n)
    _check("W", (W.shape[0], W.shape[1]), (a, b))
    _check("out", (out.shape[0], out.shape[1]), (n, b))
    if bias is not None:
        _check("bias", (bias.shape[0],), (b,))
    if n == 0 or b == 0:
        return
    with nogil:
        if real is double:
            dn_csr_matmul_d(_p1(data), &indices[0] if data.shape[0] else NULL, &indptr[0], n,
                            _p2(W), b, &out[0, 0], accumulate)
            if bias is not None:
                dn_add_row_d(&out[0, 0], &bias[0], n, b)
        else:
            dn_csr_matmul_f(_p1(data), &indices[0] if data.shape[0] else NULL, &indptr[0], n,
                            _p2(W), b, &out[0, 0], accumulate)
            if bias is not None:
                dn_add_row_f(&out[0, 0], &bias[0], n, b)


def _csr_transpose(const real[::1] data, const int32_t[::1] indices,
                   const int32_t[::1] indptr, int n, int a, const real[:, ::1] T,
                   real[:, ::1] out, real[::1] outbias, double scale):
    cdef int b = T.shape[1]
    _csr_check(data.shape[0], indices, indptr, n)
    _check("dS", (T.shape[0], T.shape[1]), (n, b))
    _check("gradW", (out.shape[0], out.shape[1]), (a, b))
    if outbias is not None:
        _check("gradb", (outbias.shape[0],), (b,))
    if n == 0 or b == 0:
        return
    with nogil:
        if real is double:
            dn_csr_t_matmul_d(_p1(data), &indices[0] if data.shape[0] else NULL, &indptr[0], n,
                              &T[0, 0], b, _p2(out), scale)
            if outbias is not None:
                dn_add_column_sums_d(&T[0, 0], &outbias[0], scale, n, b)
        else:
            dn_csr_t_matmul_f(_p1(data), &indices[0] if data.shape[0] else NULL, &indptr[0], n,
                              &T[0, 0], b, _p2(out), scale)
            if outbias is not None:
                dn_add_column_sums_f(&T[0, 0], &outbias[0], scale, n, b)


def csr_block_forward(Z, W, bias, out, bint accumulate):
    """out = [out +] Z (n, a) CSR @ W (a, b) [+ bias (b,) on every row]: `block_forward`."""
    _csr_forward(*_csr_parts(Z), W, bias, out, accumulate)


def csr_block_backward(Z, dS, gradW, gradb, double scale):
    """gradW += scale Z^T dS; gradb += scale sum_i dS[i]: `block_backward` without dZ
    (layer 1 has nothing below). Z (n, a) CSR, dS (n, b), gradW (a, b), gradb (b,) or None.
    """
    _csr_transpose(*_csr_parts(Z), dS, gradW, gradb, scale)


def csr_jacobian_vector_product(Z, V, vbias, const real[:, :, ::1] D, real[:, ::1] U,
                                double[:, ::1] out):
    """out[i] += D[i] @ (Z[i] @ V [+ vbias]): `jacobian_vector_product` with Z (n, a) CSR."""
    cdef int n = Z.shape[0], nl = D.shape[1], b = D.shape[2]
    _check("D", (D.shape[0],), (n,))
    _check("out", (out.shape[0], out.shape[1]), (n, nl))
    _csr_forward(*_csr_parts(Z), V, vbias, U, False)
    if n == 0 or b == 0 or nl == 0:
        return
    with nogil:
        if real is double:
            dn_batched_matvec_d(&D[0, 0, 0], &U[0, 0], &out[0, 0], n, nl, b)
        else:
            dn_batched_matvec_f(&D[0, 0, 0], &U[0, 0], &out[0, 0], n, nl, b)


def csr_jacobian_transpose_product(Z, const real[:, :, ::1] D, const double[:, ::1] Q,
                                   real[:, ::1] T, out, outbias, double scale):
    """out += scale Z^T T and outbias += scale sum_i T[i], with T[i] = D[i]^T Q[i]:
    `jacobian_transpose_product` with Z (n, a) CSR."""
    cdef int n = Z.shape[0], nl = D.shape[1], b = D.shape[2]
    _check("D", (D.shape[0],), (n,))
    _check("Q", (Q.shape[0], Q.shape[1]), (n, nl))
    _check("T", (T.shape[0], T.shape[1]), (n, b))
    if n and b:
        with nogil:
            if real is double:
                dn_batched_matvec_t_d(_p3(D), _d2(Q), &T[0, 0], n, nl, b)
            else:
                dn_batched_matvec_t_f(_p3(D), _d2(Q), &T[0, 0], n, nl, b)
    _csr_transpose(*_csr_parts(Z), T, out, outbias, scale)
