"""Derivatives on one process: the forward pass against a dense network, the
gradient against finite differences, and the Gauss-Newton product against an
explicitly formed J^T B J, for every loss and activation and several block layouts.

All blocks sit on this one rank here, so the block bookkeeping is exercised
without MPI; tests/test_mpi.py runs the same code over several ranks.
"""

import numpy as np
import pytest
from mpi4py import MPI

from dnewton.activations import ACTIVATIONS
from dnewton.data import RawData
from dnewton.losses import LOSSES
from dnewton.trainer import ModelConfig, Problem

N_FEATURES, N_CLASSES, N_INSTANCES = 7, 3, 11
LAYOUTS = [None, (1, 1, 1, 1), (2, 3, 2, 1), (3, 1, 2, 3)]


def make_problem(loss="squared", activation="tanh", partitions=None, C=0.7, batch_size=4):
    rng = np.random.default_rng(42)
    X = rng.standard_normal((N_INSTANCES, N_FEATURES))
    y = np.arange(N_INSTANCES) % N_CLASSES
    config = ModelConfig(
        hidden=(5, 4), activation=activation, loss=loss, partitions=partitions,
        batch_size=batch_size,
    )
    return Problem.build(MPI.COMM_WORLD, RawData(X, y, "synthetic"), None, config, C)


def random_theta(problem, seed=1):
    return np.random.default_rng(seed).standard_normal(problem.network.n_params) * 0.5


def dense_weights(problem, theta):
    """Full W^m and b^m assembled from the block views."""
    widths = problem.layout.widths
    Ws = [np.zeros((widths[m - 1], widths[m])) for m in range(1, len(widths))]
    bs = [np.zeros(widths[m]) for m in range(1, len(widths))]
    for blk, (W, bias) in zip(problem.network.blocks, problem.network.split(theta)):
        Ws[blk.layer - 1][blk.rows, blk.cols] = W
        if bias is not None:
            bs[blk.layer - 1][blk.cols] = bias
    return Ws, bs


ACT = {"relu": lambda s: np.maximum(s, 0), "sigmoid": lambda s: 1 / (1 + np.exp(-s)),
       "tanh": np.tanh}


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_forward_matches_dense_network(partitions, activation):
    problem = make_problem(activation=activation, partitions=partitions)
    theta = random_theta(problem)
    Ws, bs = dense_weights(problem, theta)
    data = problem.objective.data
    z = np.hstack([data.features[a] for a in sorted(data.features)])
    for m, (W, b) in enumerate(zip(Ws, bs), start=1):
        z = z @ W + b
        if m < len(Ws):
            z = ACT[activation](z)
    out = problem.network.forward(theta, data.rows(slice(None)), N_INSTANCES).output
    np.testing.assert_allclose(out, z, rtol=1e-12, atol=1e-12)


def objective_by_hand(problem, theta, out):
    loss = LOSSES[problem.objective.loss.name]()
    y = problem.objective.data.labels
    reg = problem.objective.regularization
    return theta @ theta * reg / 2 + loss.value(out, y) / N_INSTANCES


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_gradient_matches_finite_differences(partitions, loss, activation):
    problem = make_problem(loss, activation, partitions)
    theta = random_theta(problem)
    f, g = problem.objective.value_and_gradient(theta)
    data = problem.objective.data
    out = problem.network.forward(theta, data.rows(slice(None)), N_INSTANCES).output
    assert f == pytest.approx(objective_by_hand(problem, theta, out), rel=1e-12)
    assert problem.objective.value(theta) == pytest.approx(f, rel=1e-12)
    numeric = central_differences(problem.objective.value, theta)
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


def central_differences(func, theta, eps=1e-6):
    """d func / d theta by central differences, shape func(theta).shape + (theta.size,)."""
    columns = []
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = eps
        columns.append((np.asarray(func(theta + e)) - np.asarray(func(theta - e))) / (2 * eps))
    return np.stack(columns, axis=-1)


def numeric_output_jacobian(problem, theta, subset):
    """d z^L_i / d theta for i in `subset` by central differences, (|S|, n_L, n)."""
    rows = problem.objective.data.rows(subset)
    return central_differences(
        lambda th: problem.network.forward(th, rows, len(subset)).output, theta
    )


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_gauss_newton_product_matches_explicit_matrix(partitions, loss, activation):
    problem = make_problem(loss, activation, partitions)
    theta = random_theta(problem)
    subset = np.array([0, 3, 4, 9])
    J = numeric_output_jacobian(problem, theta, subset)
    out = problem.network.forward(theta, problem.objective.data.rows(subset), 4).output
    if loss == "squared":
        B = np.broadcast_to(2 * np.eye(N_CLASSES), (4, N_CLASSES, N_CLASSES))
    else:
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        B = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    damping = 0.3
    G = np.einsum("iak,iab,ibl->kl", J, B, J) / len(subset)
    G += np.eye(theta.size) * problem.objective.regularization

    operator = problem.objective.gauss_newton(theta, subset)
    operator.damping = damping
    v = np.random.default_rng(7).standard_normal(theta.size)
    Gv = np.empty_like(v)
    vGv = operator.apply(v, Gv)
    expected = G @ v + damping * v
    np.testing.assert_allclose(Gv, expected, rtol=1e-6, atol=1e-8)
    assert vGv == pytest.approx(v @ expected, rel=1e-6)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_layouts_agree_after_newton_iterations(loss):
    """All blocks on one rank, several ways of cutting them: the same trajectory."""
    from dnewton.newton import NewtonOptions

    finals = []
    for partitions in LAYOUTS:
        problem = make_problem(loss, "relu", partitions)
        result = problem.fit(NewtonOptions(iterations=4, gn_ratio=0.5, C=0.7, seed=3))
        finals.append([rec.f for rec in result.history])
    for other in finals[1:]:
        np.testing.assert_allclose(other, finals[0], rtol=1e-10)
    assert finals[0][-1] < finals[0][0]
