"""Derivatives: the forward pass against a dense network, the gradient against
finite differences, and the Gauss-Newton product against an explicitly formed
J^T B J, for every loss and activation and several block layouts.

These run in one process (all blocks on one rank) and under mpiexec (the blocks
spread over the ranks); every comparison is in global coordinates, so the same
expected values hold for every layout and rank count.
"""

import numpy as np
import pytest
from helpers import (
    LAYOUTS,
    N_CLASSES,
    N_INSTANCES,
    central_differences,
    dense,
    global_vector,
    in_global,
    local_vector,
    make_problem,
    n_global,
    outputs,
    random_theta,
    synthetic,
)

from dnewton.app.training import solve
from dnewton.model.activations import HIDDEN_ACTIVATIONS
from dnewton.model.losses import LOSSES
from dnewton.solvers.newton import NewtonOptions

ACT = {"relu": lambda s: np.maximum(s, 0), "sigmoid": lambda s: 1 / (1 + np.exp(-s)),
       "tanh": np.tanh}


@pytest.fixture
def problem(request):
    """The problem the test's parameters ask for, closed after the test."""
    params = request.node.callspec.params
    problem = make_problem(params.get("loss", "squared"), params.get("activation", "tanh"),
                           params.get("partitions"))
    yield problem
    problem.close()


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_forward_matches_dense_network(problem, partitions, activation):
    theta = random_theta(problem)
    weights, biases = dense(problem, theta)
    z = synthetic().X
    for m, (W, b) in enumerate(zip(weights, biases), start=1):
        z = z @ W + b
        if m < len(weights):
            z = ACT[activation](z)
    np.testing.assert_allclose(outputs(problem, theta, slice(None)), z, rtol=1e-12, atol=1e-12)


def objective_by_hand(problem, theta, out):
    loss = LOSSES[problem.objective.loss.name]()
    y = synthetic().y.astype(int)
    vec = global_vector(problem, theta)
    return vec @ vec * problem.objective.regularization / 2 + loss.value(out, y) / N_INSTANCES


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradient_matches_finite_differences(problem, partitions, loss, activation):
    theta = random_theta(problem)
    f, g = problem.objective.value_and_gradient(theta)
    out = outputs(problem, theta, slice(None))
    assert f == pytest.approx(objective_by_hand(problem, theta, out), rel=1e-12)
    assert problem.objective.value(theta) == pytest.approx(f, rel=1e-12)
    numeric = central_differences(in_global(problem, problem.objective.value),
                                  global_vector(problem, theta))
    np.testing.assert_allclose(global_vector(problem, g), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gauss_newton_product_matches_explicit_matrix(problem, partitions, loss, activation):
    theta = random_theta(problem)
    subset = np.array([0, 3, 4, 9])
    J = central_differences(in_global(problem, lambda th: outputs(problem, th, subset)),
                            global_vector(problem, theta))
    out = outputs(problem, theta, subset)
    if loss == "squared":
        B = np.broadcast_to(2 * np.eye(N_CLASSES), (4, N_CLASSES, N_CLASSES))
    else:
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        B = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    damping = 0.3
    n = J.shape[-1]
    G = np.einsum("iak,iab,ibl->kl", J, B, J) / len(subset)
    G += np.eye(n) * problem.objective.regularization

    operator = problem.objective.gauss_newton(theta, subset, damping)
    v = np.random.default_rng(7).standard_normal(n)
    Gv = np.empty(problem.network.n_params)
    vGv = operator.apply(local_vector(problem, v), Gv)
    expected = G @ v + damping * v
    np.testing.assert_allclose(global_vector(problem, Gv), expected, rtol=1e-6, atol=1e-8)
    assert vGv == pytest.approx(v @ expected, rel=1e-6)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_layouts_agree_after_newton_iterations(loss):
    """Several ways of cutting the blocks: the same trajectory."""
    finals = []
    for partitions in LAYOUTS:
        problem = make_problem(loss, "relu", partitions)
        result = solve(problem, NewtonOptions(iterations=4, gn_ratio=0.5, seed=3))
        problem.close()
        finals.append([rec.f for rec in result.history])
    for other in finals[1:]:
        np.testing.assert_allclose(other, finals[0], rtol=1e-10)
    assert finals[0][-1] < finals[0][0]


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_float32_gives_the_float64_values_to_its_precision(partitions, loss):
    """f, the gradient, a Gauss-Newton product and four Newton iterations in float32
    against float64 from the same point, on every layout: the same numbers to
    float32's accuracy, with the vectors float32 and f, v'Gv float64 sums."""
    single = make_problem(loss, "tanh", partitions, dtype="float32")
    double = make_problem(loss, "tanh", partitions)
    try:
        theta = random_theta(double)
        f64, g64 = double.objective.value_and_gradient(theta)
        f32, g32 = single.objective.value_and_gradient(theta.astype(np.float32))
        assert g32.dtype == np.float32 and isinstance(f32, float)
        assert f32 == pytest.approx(f64, rel=1e-5)
        scale = np.abs(global_vector(double, g64)).max()
        np.testing.assert_allclose(global_vector(single, g32), global_vector(double, g64),
                                   rtol=1e-4, atol=1e-5 * scale)
        subset = np.array([0, 3, 4, 9])
        v = local_vector(double, np.random.default_rng(7).standard_normal(n_global(double)))
        Gv64, Gv32 = np.empty_like(v), np.empty(v.size, dtype=np.float32)
        vGv64 = double.objective.gauss_newton(theta, subset, 0.3).apply(v, Gv64)
        vGv32 = single.objective.gauss_newton(theta.astype(np.float32), subset, 0.3).apply(
            v.astype(np.float32), Gv32)
        assert vGv32 == pytest.approx(vGv64, rel=1e-5)
        np.testing.assert_allclose(global_vector(single, Gv32), global_vector(double, Gv64),
                                   rtol=1e-4, atol=1e-5 * np.abs(Gv64).max())
        options = NewtonOptions(iterations=4, gn_ratio=0.5, seed=3)
        f_double = [r.f for r in solve(double, options).history]
        f_single = [r.f for r in solve(single, options).history]
        np.testing.assert_allclose(f_single, f_double, rtol=1e-4)
    finally:
        single.close()
        double.close()


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_the_recomputed_product_is_the_stored_one(partitions, loss, activation):
    """J v by the tangent pass and J^T q by the backward sweep: the stored
    Jacobian's product and quadratic form, on every layout."""
    stored = make_problem(loss, activation, partitions)
    recomputed = make_problem(loss, activation, partitions)
    recomputed.objective.jacobian = "recomputed"
    try:
        theta = random_theta(stored)
        subset = np.array([0, 3, 4, 9])
        v = local_vector(stored, np.random.default_rng(7).standard_normal(n_global(stored)))
        products = []
        for problem in (stored, recomputed):
            out = np.empty_like(v)
            quadratic = problem.objective.gauss_newton(theta, subset, 0.3).apply(v, out)
            products.append((global_vector(problem, out), quadratic))
        np.testing.assert_allclose(products[1][0], products[0][0], rtol=1e-12, atol=1e-13)
        assert products[1][1] == pytest.approx(products[0][1], rel=1e-12)
    finally:
        stored.close()
        recomputed.close()
