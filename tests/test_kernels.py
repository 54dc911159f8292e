"""Every compiled kernel against a plain NumPy statement of what it computes."""

import numpy as np
import pytest

from dnewton import _kernels as K

ACTIVATIONS = {
    K.RELU: (lambda s: np.maximum(s, 0.0), lambda s, z: (s > 0).astype(float)),
    K.SIGMOID: (lambda s: 1 / (1 + np.exp(-s)), lambda s, z: z * (1 - z)),
    K.TANH: (np.tanh, lambda s, z: 1 - z * z),
    K.IDENTITY: (lambda s: s.copy(), lambda s, z: np.ones_like(s)),
}
# (n, a, b, n_L): square, tall, wide, single, and empty dimensions.
SHAPES = [(7, 5, 3, 4), (1, 1, 1, 1), (20, 2, 9, 10), (3, 8, 1, 2), (0, 4, 3, 2), (5, 0, 3, 2),
          (5, 4, 0, 2)]


def rand(rng, *shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", [(3, 4, 5), (1, 1, 1), (6, 2, 0), (0, 3, 2)])
def test_gemm(trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(0)
    A = rand(rng, *((k, m) if trans_a else (m, k)))
    B = rand(rng, *((n, k) if trans_b else (k, n)))
    C = rand(rng, m, n)
    expected = 0.5 * (A.T if trans_a else A) @ (B.T if trans_b else B) + 2.0 * C
    K.gemm(A, B, C, trans_a, trans_b, 0.5, 2.0)
    np.testing.assert_allclose(C, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_block_forward(n, a, b, nl, with_bias, accumulate):
    rng = np.random.default_rng(1)
    Z, W, bias, out = rand(rng, n, a), rand(rng, a, b), rand(rng, b), rand(rng, n, b)
    expected = Z @ W + (bias if with_bias else 0) + (out if accumulate else 0)
    K.block_forward(Z, W, bias if with_bias else None, out, accumulate)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_activations_and_derivatives(kind):
    rng = np.random.default_rng(2)
    S = rand(rng, 6, 5) * 3
    S[0, :2] = [800.0, -800.0]  # sigmoid must not overflow
    f, df = ACTIVATIONS[kind]
    Z = np.empty_like(S)
    with np.errstate(over="ignore"):
        K.activation_forward(kind, S, Z)
        np.testing.assert_allclose(Z, f(S), rtol=1e-12, atol=1e-300)
    G = rand(rng, 6, 5)
    expected = G * df(S, Z)
    K.activation_backward(kind, S, Z, G)
    np.testing.assert_allclose(G, expected, rtol=1e-12)
    G3 = rand(rng, 6, 3, 5)
    expected3 = G3 * df(S, Z)[:, None, :]
    K.activation_backward_jacobian(kind, S, Z, G3)
    np.testing.assert_allclose(G3, expected3, rtol=1e-12)


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
def test_block_backward(n, a, b, nl, with_bias, with_dz):
    rng = np.random.default_rng(3)
    Z, W, dS = rand(rng, n, a), rand(rng, a, b), rand(rng, n, b)
    gW, gb, dZ = rand(rng, a, b), rand(rng, b), rand(rng, n, a)
    want_gW, want_gb, want_dZ = gW + 0.3 * Z.T @ dS, gb + 0.3 * dS.sum(0), dZ + dS @ W.T
    K.block_backward(Z, W, dS, gW, gb if with_bias else None, dZ if with_dz else None, 0.3)
    np.testing.assert_allclose(gW, want_gW, rtol=1e-12, atol=1e-12)
    if with_bias:
        np.testing.assert_allclose(gb, want_gb, rtol=1e-12, atol=1e-12)
    if with_dz:
        np.testing.assert_allclose(dZ, want_dZ, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
def test_jacobian_backward(n, a, b, nl):
    rng = np.random.default_rng(4)
    D, W, dZ = rand(rng, n, nl, b), rand(rng, a, b), rand(rng, n, nl, a)
    expected = dZ + D @ W.T
    K.jacobian_backward(D, W, dZ)
    np.testing.assert_allclose(dZ, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_jacobian_vector_product(n, a, b, nl, with_bias):
    rng = np.random.default_rng(5)
    Z, V, vb, D, out = rand(rng, n, a), rand(rng, a, b), rand(rng, b), rand(rng, n, nl, b), rand(
        rng, n, nl)
    U = np.empty((n, b))
    u = Z @ V + (vb if with_bias else 0)
    expected = out + np.einsum("ijk,ik->ij", D, u)
    K.jacobian_vector_product(Z, V, vb if with_bias else None, D, U, out)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, a, b, nl", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_jacobian_transpose_product(n, a, b, nl, with_bias):
    rng = np.random.default_rng(6)
    Z, D, Q = rand(rng, n, a), rand(rng, n, nl, b), rand(rng, n, nl)
    out, ob, T = rand(rng, a, b), rand(rng, b), np.empty((n, b))
    t = np.einsum("ijk,ij->ik", D, Q)
    want_out, want_ob = out + 0.25 * Z.T @ t, ob + 0.25 * t.sum(0)
    K.jacobian_transpose_product(Z, D, Q, T, out, ob if with_bias else None, 0.25)
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
    if with_bias:
        np.testing.assert_allclose(ob, want_ob, rtol=1e-12, atol=1e-12)


def test_jacobian_products_are_adjoint():
    """<J v, q> = <v, J^T q>: the two kernels are transposes of each other."""
    rng = np.random.default_rng(7)
    n, a, b, nl = 9, 6, 4, 3
    Z, D, V, vb, Q = rand(rng, n, a), rand(rng, n, nl, b), rand(rng, a, b), rand(rng, b), rand(
        rng, n, nl)
    Jv = np.zeros((n, nl))
    K.jacobian_vector_product(Z, V, vb, D, np.empty((n, b)), Jv)
    out, ob = np.zeros((a, b)), np.zeros(b)
    K.jacobian_transpose_product(Z, D, Q, np.empty((n, b)), out, ob, 1.0)
    assert np.sum(Jv * Q) == pytest.approx(np.sum(V * out) + vb @ ob, rel=1e-12)


@pytest.mark.parametrize("n", [0, 1, 17])
def test_cg_updates(n):
    rng = np.random.default_rng(8)
    x, r, p, q, Ax = (rand(rng, n) for _ in range(5))
    want = (x + 0.7 * p, r - 0.7 * q, Ax + 0.7 * q)
    rr = K.cg_step(x, r, p, q, Ax, 0.7)
    for got, expected in zip((x, r, Ax), want):
        np.testing.assert_allclose(got, expected, rtol=1e-14)
    assert rr == pytest.approx(want[1] @ want[1], rel=1e-13, abs=0)
    expected_p = r + 0.4 * p
    K.cg_direction(p, r, 0.4)
    np.testing.assert_allclose(p, expected_p, rtol=1e-14)
    assert K.dot(x, r) == pytest.approx(x @ r, rel=1e-13, abs=1e-300)


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


def test_kernels_refuse_wrong_dtype_and_layout():
    with pytest.raises(ValueError):
        K.dot(np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError):
        K.gemm(np.ones((3, 3))[:, ::2], np.ones((2, 2)), np.ones((3, 2)))
