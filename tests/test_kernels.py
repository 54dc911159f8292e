"""Every compiled kernel against a plain NumPy statement of what it computes, in both
precisions (`real`: float64 and float32; J v and Q stay float64 in both)."""

import numpy as np
import pytest
from scipy import sparse

from dnewton import _kernels as K
from dnewton.io.data import csr_rows

ACTIVATIONS = {
    K.RELU: (lambda s: np.maximum(s, 0.0), lambda s, z: (s > 0).astype(float)),
    K.SIGMOID: (lambda s: 1 / (1 + np.exp(-s)), lambda s, z: z * (1 - z)),
    K.TANH: (np.tanh, lambda s, z: 1 - z * z),
    K.IDENTITY: (lambda s: s.copy(), lambda s, z: np.ones_like(s)),
}
# (n, a, b, n_L): square, tall, wide, single, and empty dimensions.
# n_L of 17 and 3 meet every branch of the per-instance products (8 rows, 2, then 1).
SHAPES = [(7, 5, 3, 4), (1, 1, 1, 1), (20, 2, 9, 10), (3, 8, 1, 2), (0, 4, 3, 2), (5, 0, 3, 2),
          (5, 4, 0, 2), (4, 6, 5, 17), (3, 2, 7, 3)]


# Relative tolerances of a kernel's result in each precision: float32 keeps about
# 7 digits, and the sums here are short.
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def real(request):
    return request.param


def rand(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


def close(got, expected, real, scale=1.0):
    tol = TOLERANCE[real]
    np.testing.assert_allclose(got, expected, rtol=tol * scale, atol=tol * scale)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", [(3, 4, 5), (1, 1, 1), (6, 2, 0), (0, 3, 2)])
def test_gemm(trans_a, trans_b, m, n, k, real):
    rng = np.random.default_rng(0)
    A = rand(rng, real, *((k, m) if trans_a else (m, k)))
    B = rand(rng, real, *((n, k) if trans_b else (k, n)))
    C = rand(rng, real, m, n)
    expected = 0.5 * (A.T if trans_a else A) @ (B.T if trans_b else B) + 2.0 * C
    K.gemm(A, B, C, trans_a, trans_b, 0.5, 2.0)
    close(C, expected, real)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_block_forward(n, a, b, nl, with_bias, accumulate, real):
    rng = np.random.default_rng(1)
    Z, W, bias, out = (rand(rng, real, *shape) for shape in [(n, a), (a, b), (b,), (n, b)])
    expected = Z @ W + (bias if with_bias else 0) + (out if accumulate else 0)
    K.block_forward(Z, W, bias if with_bias else None, out, accumulate)
    close(out, expected, real)


@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_activations_and_derivatives(kind, real):
    rng = np.random.default_rng(2)
    S = rand(rng, real, 6, 5) * 3
    S[0, :2] = [800.0, -800.0]  # sigmoid must not overflow
    f, df = ACTIVATIONS[kind]
    Z = np.empty_like(S)
    with np.errstate(over="ignore"):
        K.activation_forward(kind, S, Z)
        np.testing.assert_allclose(Z, f(S), rtol=TOLERANCE[real], atol=1e-300)
    G = rand(rng, real, 6, 5)
    expected = G * df(S, Z)
    K.activation_backward(kind, S, Z, G)
    np.testing.assert_allclose(G, expected, rtol=TOLERANCE[real])
    G3 = rand(rng, real, 6, 3, 5)
    expected3 = G3 * df(S, Z)[:, None, :]
    K.activation_backward_jacobian(kind, S, Z, G3)
    np.testing.assert_allclose(G3, expected3, rtol=TOLERANCE[real])


@pytest.mark.parametrize("kind", [K.SIGMOID, K.TANH, K.RELU])
def test_activation_derivative_matches_finite_differences(kind):
    S = np.linspace(-3, 3, 13).reshape(1, -1) + 0.05  # avoid ReLU's kink at 0
    eps = 1e-6
    zp, zm, Z = (np.empty_like(S) for _ in range(3))
    K.activation_forward(kind, S + eps, zp)
    K.activation_forward(kind, S - eps, zm)
    K.activation_forward(kind, S, Z)
    G = np.ones_like(S)
    K.activation_backward(kind, S, Z, G)
    np.testing.assert_allclose(G, (zp - zm) / (2 * eps), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_dz", [False, True])
def test_block_backward(n, a, b, nl, with_bias, with_dz, real):
    rng = np.random.default_rng(3)
    Z, W, dS = rand(rng, real, n, a), rand(rng, real, a, b), rand(rng, real, n, b)
    gW, gb, dZ = rand(rng, real, a, b), rand(rng, real, b), rand(rng, real, n, a)
    want_gW, want_gb, want_dZ = gW + 0.3 * Z.T @ dS, gb + 0.3 * dS.sum(0), dZ + dS @ W.T
    K.block_backward(Z, W, dS, gW, gb if with_bias else None, dZ if with_dz else None, 0.3)
    close(gW, want_gW, real)
    if with_bias:
        close(gb, want_gb, real)
    if with_dz:
        close(dZ, want_dZ, real)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
def test_jacobian_backward(n, a, b, nl, real):
    rng = np.random.default_rng(4)
    D, W, dZ = rand(rng, real, n, nl, b), rand(rng, real, a, b), rand(rng, real, n, nl, a)
    expected = dZ + D @ W.T
    K.jacobian_backward(D, W, dZ)
    close(dZ, expected, real)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_jacobian_vector_product(n, a, b, nl, with_bias, real):
    rng = np.random.default_rng(5)
    Z, V, vb, D = (rand(rng, real, *shape) for shape in [(n, a), (a, b), (b,), (n, nl, b)])
    out = rand(rng, np.float64, n, nl)  # J v is float64 in both precisions
    U = np.empty((n, b), dtype=real)
    u = Z @ V + (vb if with_bias else 0)
    expected = out + np.einsum("ijk,ik->ij", D, u)
    K.jacobian_vector_product(Z, V, vb if with_bias else None, D, U, out)
    close(out, expected, real)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_jacobian_transpose_product(n, a, b, nl, with_bias, real):
    rng = np.random.default_rng(6)
    Z, D, Q = rand(rng, real, n, a), rand(rng, real, n, nl, b), rand(rng, np.float64, n, nl)
    out, ob, T = rand(rng, real, a, b), rand(rng, real, b), np.empty((n, b), dtype=real)
    t = np.einsum("ijk,ij->ik", D, Q)
    want_out, want_ob = out + 0.25 * Z.T @ t, ob + 0.25 * t.sum(0)
    K.jacobian_transpose_product(Z, D, Q, T, out, ob if with_bias else None, 0.25)
    close(out, want_out, real)
    if with_bias:
        close(ob, want_ob, real)


def test_jacobian_products_are_adjoint(real):
    """<J v, q> = <v, J^T q>: the two kernels are transposes of each other."""
    rng = np.random.default_rng(7)
    n, a, b, nl = 9, 6, 4, 3
    Z, D, V, vb = (rand(rng, real, *shape) for shape in [(n, a), (n, nl, b), (a, b), (b,)])
    Q = rand(rng, np.float64, n, nl)
    Jv = np.zeros((n, nl))
    K.jacobian_vector_product(Z, V, vb, D, np.empty((n, b), dtype=real), Jv)
    out, ob = np.zeros((a, b), dtype=real), np.zeros(b, dtype=real)
    K.jacobian_transpose_product(Z, D, Q, np.empty((n, b), dtype=real), out, ob, 1.0)
    assert np.sum(Jv * Q) == pytest.approx(np.sum(V * out) + vb @ ob, rel=TOLERANCE[real] * 10)


@pytest.mark.parametrize("n", [0, 1, 17, 1001])  # 1001: vector body and tail
def test_cg_updates(n, real):
    rng = np.random.default_rng(8)
    x, r, p, q, Ax = (rand(rng, real, n) for _ in range(5))
    want = (x + 0.7 * p, r - 0.7 * q, Ax + 0.7 * q)
    rr = K.cg_step(x, r, p, q, Ax, 0.7)
    for got, expected in zip((x, r, Ax), want):
        close(got, expected, real)
    # The sums are float64 in both precisions: exact for the vectors as stored.
    wide = r.astype(np.float64)
    assert rr == pytest.approx(wide @ wide, rel=1e-13, abs=0)
    expected_p = r + real(0.4) * p
    K.cg_direction(p, r, 0.4)
    close(p, expected_p, real)
    assert K.dot(x, r) == pytest.approx(x.astype(np.float64) @ r, rel=1e-13, abs=1e-300)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: K.gemm(np.ones((2, 3)), np.ones((4, 2)), np.ones((2, 2))), "B"),
        (lambda: K.block_forward(np.ones((2, 3)), np.ones((3, 4)), None, np.ones((2, 5)), False),
         "out"),
        (lambda: K.jacobian_vector_product(np.ones((2, 3)), np.ones((3, 4)), None,
                                           np.ones((2, 5, 4)), np.ones((2, 4)), np.ones((2, 4))),
         "out"),
        (lambda: K.cg_step(*(np.ones(3) for _ in range(4)), np.ones(2), 1.0), "Ax"),
    ],
)
def test_shape_mismatch_is_refused(call, name):
    with pytest.raises(ValueError, match=f"^{name} has shape"):
        call()


def test_kernels_refuse_mixed_or_other_dtypes_and_layout():
    with pytest.raises((ValueError, TypeError)):
        K.dot(np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float64))
    with pytest.raises((ValueError, TypeError)):
        K.dot(np.ones(3, dtype=np.int64), np.ones(3, dtype=np.int64))
    with pytest.raises(ValueError):
        K.gemm(np.ones((3, 3))[:, ::2], np.ones((2, 2)), np.ones((3, 2)))


# -- layer 1 on CSR input blocks -------------------------------------------------------


def random_csr(rng, real, n, a, density=0.3):
    """A random CSR (n, a) of precision `real` with int32 indices, as io/data.py keeps
    them; row 0 and column 0 are empty (when they exist) so both cases are met."""
    Z = sparse.random(n, a, density=density, format="csr", random_state=rng, dtype=np.float64)
    Z = Z.toarray()
    if n:
        Z[0] = 0
    if a:
        Z[:, 0] = 0
    Z = sparse.csr_matrix(Z.astype(real))
    Z.indices, Z.indptr = Z.indices.astype(np.int32), Z.indptr.astype(np.int32)
    return Z


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_csr_block_forward(n, a, b, nl, with_bias, accumulate, real):
    rng = np.random.default_rng(11)
    Z = random_csr(rng, real, n, a)
    W, bias, out = (rand(rng, real, *shape) for shape in [(a, b), (b,), (n, b)])
    expected = Z.toarray() @ W + (bias if with_bias else 0) + (out if accumulate else 0)
    K.csr_block_forward(Z, W, bias if with_bias else None, out, accumulate)
    close(out, expected, real)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_csr_block_backward(n, a, b, nl, with_bias, real):
    rng = np.random.default_rng(12)
    Z = random_csr(rng, real, n, a)
    dS, gW, gb = rand(rng, real, n, b), rand(rng, real, a, b), rand(rng, real, b)
    want_gW, want_gb = gW + 0.3 * (Z.T @ dS), gb + 0.3 * dS.sum(0)
    K.csr_block_backward(Z, dS, gW, gb if with_bias else None, 0.3)
    close(gW, want_gW, real)
    if with_bias:
        close(gb, want_gb, real)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_csr_jacobian_products_match_the_dense_kernels(n, a, b, nl, with_bias, real):
    rng = np.random.default_rng(13)
    Z = random_csr(rng, real, n, a)
    V, vb, D = rand(rng, real, a, b), rand(rng, real, b), rand(rng, real, n, nl, b)
    Q = rand(rng, np.float64, n, nl)
    U = np.empty((n, b), dtype=real)
    vbias = vb if with_bias else None
    dense_Jv, sparse_Jv = (rand(np.random.default_rng(0), np.float64, n, nl) for _ in range(2))
    K.jacobian_vector_product(np.ascontiguousarray(Z.toarray()), V, vbias, D, U, dense_Jv)
    K.csr_jacobian_vector_product(Z, V, vbias, D, U, sparse_Jv)
    close(sparse_Jv, dense_Jv, real)
    dense_out, dense_ob = rand(rng, real, a, b), rand(rng, real, b)
    sparse_out, sparse_ob = dense_out.copy(), dense_ob.copy()
    K.jacobian_transpose_product(np.ascontiguousarray(Z.toarray()), D, Q, U, dense_out,
                                 dense_ob if with_bias else None, 0.25)
    K.csr_jacobian_transpose_product(Z, D, Q, U, sparse_out, sparse_ob if with_bias else None,
                                     0.25)
    close(sparse_out, dense_out, real)
    close(sparse_ob, dense_ob, real)


def test_csr_rows_of_a_partition_feed_the_kernels(real):
    """A slice of rows shares the block's arrays (no copy); an index array copies rows."""
    rng = np.random.default_rng(14)
    Z = random_csr(rng, real, 30, 8)
    W = rand(rng, real, 8, 3)
    for index in (slice(5, 17), slice(29, 40), slice(3, 3), np.array([0, 4, 4, 29])):
        part = csr_rows(Z, index)
        assert part.indices.dtype == np.int32 and part.dtype == real
        out = np.empty((part.shape[0], 3), dtype=real)
        K.csr_block_forward(part, W, None, out, False)
        close(out, Z.toarray()[index] @ W, real)
    assert np.shares_memory(csr_rows(Z, slice(5, 17)).data, Z.data)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda Z: K.csr_block_forward(Z, np.ones((4, 2)), None, np.ones((3, 2)), False),
         "^W has shape"),
        (lambda Z: K.csr_block_forward(Z, np.ones((5, 2)), None, np.ones((2, 2)), False),
         "^out has shape"),
        (lambda Z: K.csr_block_backward(Z, np.ones((3, 2)), np.ones((4, 2)), None, 1.0),
         "^gradW has shape"),
        (lambda Z: K.csr_block_backward(Z, np.ones((2, 2)), np.ones((5, 2)), None, 1.0),
         "^dS has shape"),
        (lambda Z: K.csr_jacobian_vector_product(Z, np.ones((5, 2)), None, np.ones((3, 4, 2)),
                                                 np.ones((3, 2)), np.ones((3, 3))),
         "^out has shape"),
        (lambda Z: K.csr_jacobian_transpose_product(Z, np.ones((3, 4, 2)), np.ones((3, 4)),
                                                    np.ones((3, 3)), np.ones((5, 2)), None, 1.0),
         "^T has shape"),
    ],
)
def test_csr_shape_mismatch_is_refused(call, message):
    Z = random_csr(np.random.default_rng(15), np.float64, 3, 5, density=0.5)
    with pytest.raises(ValueError, match=message):
        call(Z)


def test_csr_kernels_refuse_what_they_cannot_read():
    Z = random_csr(np.random.default_rng(16), np.float64, 3, 5, density=0.5)
    with pytest.raises(TypeError, match="CSR"):
        K.csr_block_forward(Z.toarray(), np.ones((5, 2)), None, np.ones((3, 2)), False)
    with pytest.raises((ValueError, TypeError)):  # int64 indices: not the kernels' int32
        wide = Z.copy()
        wide.indices = wide.indices.astype(np.int64)
        K.csr_block_forward(wide, np.ones((5, 2)), None, np.ones((3, 2)), False)
    with pytest.raises((ValueError, TypeError)):  # float32 values with float64 weights
        K.csr_block_forward(Z.astype(np.float32), np.ones((5, 2)), None, np.ones((3, 2)),
                            False)
    broken = sparse.csr_matrix(Z, copy=True)
    broken.indptr = broken.indptr.copy()
    broken.indptr[-1] = broken.nnz + 5
    with pytest.raises(ValueError, match="not a valid CSR"):
        K.csr_block_forward(broken, np.ones((5, 2)), None, np.ones((3, 2)), False)
