"""The iteration itself: CG, the line search and the Newton loop each stop for a
stated reason, and never loop without bound."""

import numpy as np
import pytest
from test_derivatives import make_problem

import dnewton.errors
import dnewton.newton
from dnewton.cg import conjugate_gradient
from dnewton.newton import NewtonOptions, line_search


def serial_sum(values):
    return np.array(values, dtype=float)


def spd_operator(n, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    A = M @ M.T + n * np.eye(n)

    def apply(v, out):
        out[:] = A @ v
        return float(v @ out)

    return A, apply


def test_cg_solves_spd_system():
    A, apply = spd_operator(30)
    b = np.random.default_rng(1).standard_normal(30)
    res = conjugate_gradient(apply, b, 1e-10 * np.linalg.norm(b), 100, serial_sum)
    assert res.reason == "converged"
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-8)
    np.testing.assert_allclose(res.Ax, A @ res.x, rtol=1e-8)
    assert res.residual_norm <= 1e-10 * np.linalg.norm(b)


def test_cg_stops_at_iteration_limit():
    _, apply = spd_operator(30)
    b = np.ones(30)
    res = conjugate_gradient(apply, b, 0.0, 3, serial_sum)
    assert (res.reason, res.iterations) == ("iteration_limit", 3)


def test_cg_refuses_indefinite_operator():
    def apply(v, out):
        out[:] = -v
        return float(v @ out)

    with pytest.raises(dnewton.errors.NumericalError, match="curvature"):
        conjugate_gradient(apply, np.ones(4), 1e-8, 10, serial_sum)


def test_line_search_refuses_ascent_direction():
    calls = []
    res = line_search(lambda th: calls.append(th) or 0.0, np.zeros(2), np.ones(2), 1.0, 0.5,
                      1e-4, 20)
    assert (res.reason, res.trials, res.alpha, calls) == ("not_descent", 0, 0.0, [])


def test_line_search_gives_up_after_bounded_halvings():
    calls = []
    res = line_search(lambda th: calls.append(th) or 2.0, np.zeros(2), -np.ones(2), 1.0, -1.0,
                      1e-4, 7)
    assert res.reason == "too_many_halvings"
    assert res.trials == len(calls) == 8
    assert res.alpha == 0.0 and res.f == 1.0


def test_line_search_halves_until_sufficient_decrease():
    # f(x) = x^2 from x = 1 along d = -4: alpha = 1 overshoots, 1/2 lands on 1 - 2 = -1,
    # 1/4 lands on 0.
    res = line_search(lambda th: float(th[0] ** 2), np.array([1.0]), np.array([-4.0]), 1.0,
                      -8.0, 1e-4, 20)
    assert (res.reason, res.alpha, res.trials, res.f) == ("sufficient_decrease", 0.25, 3, 0.0)


def test_zero_damping_runs_and_every_loop_reports_why_it_stopped():
    problem = make_problem("squared", "relu")
    result = problem.fit(NewtonOptions(iterations=6, damping=0.0, gn_ratio=0.5, C=0.7))
    assert result.status == "iteration_limit" and result.iterations == 6
    for rec in result.history[1:]:
        assert rec.lambda_ == 0.0
        assert rec.cg_reason in ("converged", "iteration_limit")
        assert rec.line_search_reason == "sufficient_decrease"
    assert result.history[-1].f < result.history[0].f


def test_non_descent_direction_ends_the_run_with_the_reason(monkeypatch):
    real_direction = dnewton.newton.full_direction

    def uphill(*args, **kwargs):
        step = real_direction(*args, **kwargs)
        step.d, step.Ad = -step.d, -step.Ad
        return step

    monkeypatch.setattr(dnewton.newton, "full_direction", uphill)
    problem = make_problem("softmax", "tanh")
    result = problem.fit(NewtonOptions(iterations=50, gn_ratio=0.5, C=0.7))
    assert result.status == "line_search_failed"
    assert "not a descent direction" in result.message
    assert result.iterations == 1 and len(result.history) == 2
    assert result.history[-1].line_search_reason == "not_descent"
    assert result.f == result.history[0].f


def test_stalled_line_search_ends_the_run(monkeypatch):
    problem = make_problem("squared", "sigmoid")
    value = problem.objective.value
    monkeypatch.setattr(problem.objective, "value", lambda th: value(th) + 1.0)
    result = problem.fit(NewtonOptions(iterations=50, gn_ratio=0.5, C=0.7))
    assert result.status == "line_search_failed"
    assert "20 halvings" in result.message
    assert result.history[-1].line_search_trials == 21


@pytest.mark.parametrize(
    "field, value, message",
    [("C", 0.0, "-C"), ("gn_ratio", 1.5, "--gn-ratio"), ("xi", 0.0, "--xi"),
     ("damping", -1.0, "--lambda"), ("cg_max", 0, "--cg-max")],
)
def test_nonsensical_options_are_refused(field, value, message):
    with pytest.raises(dnewton.errors.InputError, match=message):
        NewtonOptions(**{field: value}).check()


def test_non_finite_gradient_stops_and_keeps_the_last_good_iterate(monkeypatch):
    problem = make_problem("squared", "tanh")
    objective = problem.objective
    real = objective.value_and_gradient
    calls = []

    def poisoned(theta):
        calls.append(theta.copy())
        f, g = real(theta)
        if len(calls) == 3:  # the gradient after iteration 2's step
            g = g * np.nan
        return f, g

    monkeypatch.setattr(objective, "value_and_gradient", poisoned)
    result = problem.fit(NewtonOptions(iterations=10, gn_ratio=0.5, C=0.7))
    assert result.status == "numerical_error" and "iteration 2" in result.message
    assert len(result.history) == 2  # iterations 0 and 1: both good
    np.testing.assert_array_equal(result.theta, calls[1])
    assert np.isfinite(result.f) and result.f == result.history[-1].f
