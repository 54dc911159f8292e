# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled kernels of dnewton: BLAS through scipy.linalg.cython_blas, plain C loops.

Every array is float64 and C-contiguous (row-major); shapes use n instances, a rows
and b columns of a weight block, n_L outputs. Kernels never allocate: callers pass
outputs and workspaces. Shapes are checked here, with the GIL; the work itself
runs without it.
"""

from scipy.linalg.cython_blas cimport dgemm

cdef extern from "dn_loops.h" nogil:
    void dn_activation_forward(int kind, const double *s, double *z, size_t n)
    void dn_activation_scale(int kind, const double *s, const double *z, double *g,
                             size_t rows, size_t repeat, size_t k)
    void dn_batched_matvec(const double *D, const double *u, double *out,
                           size_t n, size_t nl, size_t k)
    void dn_batched_matvec_t(const double *D, const double *q, double *t,
                             size_t n, size_t nl, size_t k)
    void dn_add_row(double *out, const double *row, size_t n, size_t k)
    void dn_add_column_sums(const double *a, double *sums, double scale, size_t n, size_t k)
    double dn_cg_step(double *x, double *r, const double *p, const double *q, double *ax,
                      double alpha, size_t n)
    void dn_cg_direction(double *p, const double *r, double beta, size_t n)
    double dn_dot(const double *a, const double *b, size_t n)

RELU = 0
SIGMOID = 1
TANH = 2
IDENTITY = 3

cdef double ZERO = 0.0


cdef void _gemm(bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                const double *A, int lda, const double *B, int ldb, double beta,
                double *C, int ldc) noexcept nogil:
    """Row-major C (m, n) = alpha op(A) op(B) + beta C; lda, ldb, ldc are row lengths.

    A row-major matrix is its column-major transpose, so this is the column-major
    product C^T = op(B)^T op(A)^T.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int i, total
    if m == 0 or n == 0:
        return
    if k == 0:
        total = m * n
        for i in range(total):
            C[i] = beta * C[i] if beta != 0.0 else 0.0
        return
    lda = lda if lda > 1 else 1
    ldb = ldb if ldb > 1 else 1
    ldc = ldc if ldc > 1 else 1
    dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>B, &ldb, <double *>A, &lda, &beta, C, &ldc)


cdef inline double *_p1(const double[::1] a) noexcept nogil:
    return <double *>&a[0] if a is not None and a.shape[0] else NULL


cdef inline double *_p2(const double[:, ::1] a) noexcept nogil:
    return <double *>&a[0, 0] if a is not None and a.shape[0] and a.shape[1] else NULL


cdef inline double *_p3(const double[:, :, ::1] a) noexcept nogil:
    return <double *>&a[0, 0, 0] if a.shape[0] and a.shape[1] and a.shape[2] else NULL


cdef _check(str name, tuple got, tuple want):
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")


def gemm(const double[:, ::1] A, const double[:, ::1] B, double[:, ::1] C,
         bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0):
    """C = alpha op(A) @ op(B) + beta C, with op(X) = X.T when trans_x."""
    cdef int m = A.shape[1] if trans_a else A.shape[0]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef int n = B.shape[0] if trans_b else B.shape[1]
    _check("B", ((B.shape[1] if trans_b else B.shape[0]), n), (k, n))
    _check("C", (C.shape[0], C.shape[1]), (m, n))
    with nogil:
        _gemm(trans_a, trans_b, m, n, k, alpha, _p2(A), A.shape[1],
              _p2(B), B.shape[1], beta,
              _p2(C), n)


def block_forward(const double[:, ::1] Z, const double[:, ::1] W, const double[::1] bias,
                  double[:, ::1] out, bint accumulate):
    """out = [out +] Z (n, a) @ W (a, b) [+ bias (b,) on every row]."""
    cdef int n = Z.shape[0], a = Z.shape[1], b = W.shape[1]
    _check("W", (W.shape[0], W.shape[1]), (a, b))
    _check("out", (out.shape[0], out.shape[1]), (n, b))
    if bias is not None:
        _check("bias", (bias.shape[0],), (b,))
    with nogil:
        _gemm(False, False, n, b, a, 1.0, _p2(Z), a,
              _p2(W), b, 1.0 if accumulate else 0.0,
              _p2(out), b)
        if bias is not None and n and b:
            dn_add_row(&out[0, 0], &bias[0], n, b)


def activation_forward(int kind, const double[:, ::1] S, double[:, ::1] Z):
    """Z = sigma(S), (n, k); kind: RELU, SIGMOID, TANH or IDENTITY."""
    _check("Z", (Z.shape[0], Z.shape[1]), (S.shape[0], S.shape[1]))
    if S.shape[0] and S.shape[1]:
        with nogil:
            dn_activation_forward(kind, &S[0, 0], &Z[0, 0], S.shape[0] * S.shape[1])


def activation_backward(int kind, const double[:, ::1] S, const double[:, ::1] Z,
                        double[:, ::1] G):
    """G *= sigma'(S) element-wise; S, Z = sigma(S), G all (n, k)."""
    _check("Z", (Z.shape[0], Z.shape[1]), (S.shape[0], S.shape[1]))
    _check("G", (G.shape[0], G.shape[1]), (S.shape[0], S.shape[1]))
    if S.shape[0] and S.shape[1]:
        with nogil:
            dn_activation_scale(kind, &S[0, 0], &Z[0, 0], &G[0, 0], S.shape[0], 1, S.shape[1])


def activation_backward_jacobian(int kind, const double[:, ::1] S, const double[:, ::1] Z,
                                 double[:, :, ::1] G):
    """G[i, j, :] *= sigma'(S[i, :]); S, Z (n, k), G (n, n_L, k)."""
    _check("Z", (Z.shape[0], Z.shape[1]), (S.shape[0], S.shape[1]))
    _check("G", (G.shape[0], G.shape[2]), (S.shape[0], S.shape[1]))
    if _p3(G) != NULL:
        with nogil:
            dn_activation_scale(kind, &S[0, 0], &Z[0, 0], &G[0, 0, 0], G.shape[0], G.shape[1],
                                G.shape[2])


def block_backward(const double[:, ::1] Z, const double[:, ::1] W, const double[:, ::1] dS,
                   double[:, ::1] gradW, double[::1] gradb, double[:, ::1] dZ, double scale):
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
        _gemm(True, False, a, b, n, scale, _p2(Z), a,
              _p2(dS), b, 1.0, _p2(gradW), b)
        if gradb is not None and n and b:
            dn_add_column_sums(&dS[0, 0], &gradb[0], scale, n, b)
        if dZ is not None:
            _gemm(False, True, n, a, b, 1.0, _p2(dS), b,
                  _p2(W), b, 1.0, _p2(dZ), a)


def jacobian_backward(const double[:, :, ::1] D, const double[:, ::1] W, double[:, :, ::1] dZ):
    """dZ += D @ W^T: D (n, n_L, b), W (a, b), dZ (n, n_L, a); one GEMM on (n n_L) rows."""
    cdef int rows = D.shape[0] * D.shape[1], a = W.shape[0], b = W.shape[1]
    _check("D", (D.shape[2],), (b,))
    _check("dZ", (dZ.shape[0], dZ.shape[1], dZ.shape[2]), (D.shape[0], D.shape[1], a))
    with nogil:
        _gemm(False, True, rows, a, b, 1.0, _p3(D), b,
              _p2(W), b, 1.0, _p3(dZ), a)


def jacobian_vector_product(const double[:, ::1] Z, const double[:, ::1] V,
                            const double[::1] vbias, const double[:, :, ::1] D,
                            double[:, ::1] U, double[:, ::1] out):
    """out[i] += D[i] @ (Z[i] @ V [+ vbias]) for every instance i: J_{i,p} v_p.

    Z (n, a), V (a, b), vbias (b,) or None, D (n, n_L, b), U (n, b) workspace,
    out (n, n_L), accumulated into.
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
        _gemm(False, False, n, b, a, 1.0, _p2(Z), a,
              _p2(V), b, 0.0, &U[0, 0], b)
        if vbias is not None:
            dn_add_row(&U[0, 0], &vbias[0], n, b)
        dn_batched_matvec(&D[0, 0, 0], &U[0, 0], &out[0, 0], n, nl, b)


def jacobian_transpose_product(const double[:, ::1] Z, const double[:, :, ::1] D,
                               const double[:, ::1] Q, double[:, ::1] T, double[:, ::1] out,
                               double[::1] outbias, double scale):
    """out += scale Z^T T and outbias += scale sum_i T[i], with T[i] = D[i]^T Q[i].

    Z (n, a), D (n, n_L, b), Q (n, n_L), T (n, b) workspace, out (a, b),
    outbias (b,) or None: J_{.,p}^T q summed over instances.
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
        dn_batched_matvec_t(_p3(D), _p2(Q), &T[0, 0], n, nl, b)
        _gemm(True, False, a, b, n, scale, _p2(Z), a, &T[0, 0], b,
              1.0, _p2(out), b)
        if outbias is not None:
            dn_add_column_sums(&T[0, 0], &outbias[0], scale, n, b)


def cg_step(double[::1] x, double[::1] r, const double[::1] p, const double[::1] q,
            double[::1] Ax, double alpha):
    """x += alpha p; r -= alpha q; Ax += alpha q; returns r.r -- one fused pass."""
    cdef size_t n = x.shape[0]
    cdef double rr = 0.0
    _check("r", (r.shape[0],), (n,))
    _check("p", (p.shape[0],), (n,))
    _check("q", (q.shape[0],), (n,))
    _check("Ax", (Ax.shape[0],), (n,))
    if n:
        with nogil:
            rr = dn_cg_step(&x[0], &r[0], &p[0], &q[0], &Ax[0], alpha, n)
    return rr


def cg_direction(double[::1] p, const double[::1] r, double beta):
    """p = r + beta p."""
    _check("r", (r.shape[0],), (p.shape[0],))
    if p.shape[0]:
        with nogil:
            dn_cg_direction(&p[0], &r[0], beta, p.shape[0])


def dot(const double[::1] a, const double[::1] b):
    """a . b of two 1-D arrays."""
    cdef double result = 0.0
    _check("b", (b.shape[0],), (a.shape[0],))
    if a.shape[0]:
        with nogil:
            result = dn_dot(&a[0], &b[0], a.shape[0])
    return result
