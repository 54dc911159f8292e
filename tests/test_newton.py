"""The iteration itself: CG, the line search and the Newton loop each stop for a
stated reason and never loop without bound; the loop runs on a NumPy-only
inner-product space as well as on the distributed one."""

import numpy as np
import pytest
from helpers import make_problem

from dnewton.app.training import SolverRun, make_solver, solve
from dnewton.errors import ParameterError
from dnewton.parallel.space import LocalSpace
from dnewton.run_records import RunStatus
from dnewton.solvers.cg import CGReason, conjugate_gradient
from dnewton.solvers.direction import FullCG
from dnewton.solvers.line_search import LineSearchReason, line_search
from dnewton.solvers.newton import NewtonOptions, NewtonSolver

LOCAL = LocalSpace()


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
    res = conjugate_gradient(apply, b, 1e-10 * np.linalg.norm(b), 100, LOCAL)
    assert res.reason == CGReason.CONVERGED
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-8)
    np.testing.assert_allclose(res.Ax, A @ res.x, rtol=1e-8)
    assert res.residual_norm <= 1e-10 * np.linalg.norm(b)


def test_cg_stops_at_iteration_limit():
    _, apply = spd_operator(30)
    res = conjugate_gradient(apply, np.ones(30), 0.0, 3, LOCAL)
    assert (res.reason, res.iterations) == (CGReason.ITERATION_LIMIT, 3)


@pytest.mark.parametrize("curvature, reason", [(-1.0, CGReason.INDEFINITE),
                                               (np.nan, CGReason.NOT_FINITE)])
def test_cg_reports_bad_curvature_as_a_reason(curvature, reason):
    def apply(v, out):
        out[:] = curvature * v
        return float(v @ out)

    res = conjugate_gradient(apply, np.ones(4), 1e-8, 10, LOCAL)
    assert res.reason == reason and res.reason.failed and res.iterations == 0
    assert "curvature p'Ap" in res.failure() and "iteration 1" in res.failure()


def test_line_search_refuses_ascent_direction():
    calls = []
    res = line_search(lambda th: calls.append(th) or 0.0, np.zeros(2), np.ones(2), 1.0, 0.5,
                      1e-4, 20)
    assert (res.reason, res.trials, res.alpha, calls) == (LineSearchReason.NOT_DESCENT, 0,
                                                          0.0, [])


def test_line_search_gives_up_after_bounded_halvings():
    calls = []
    res = line_search(lambda th: calls.append(th) or 2.0, np.zeros(2), -np.ones(2), 1.0, -1.0,
                      1e-4, 7)
    assert res.reason == LineSearchReason.TOO_MANY_HALVINGS
    assert res.trials == len(calls) == 8
    assert res.alpha == 0.0 and res.f == 1.0


def test_line_search_takes_no_step_that_leaves_f_unchanged():
    # eta alpha g'd = -1e-24 vanishes beside f = 1 (f + it == f): a step that changes
    # nothing f can see is no decrease, however small the promised one
    res = line_search(lambda th: 1.0, np.zeros(2), -np.ones(2), 1.0, -1e-20, 1e-4, 5)
    assert res.reason == LineSearchReason.TOO_MANY_HALVINGS and res.alpha == 0.0


def test_line_search_halves_until_sufficient_decrease():
    # f(x) = x^2 from x = 1 along d = -4: alpha = 1 overshoots, 1/2 lands on 1 - 2 = -1,
    # 1/4 lands on 0.
    res = line_search(lambda th: float(th[0] ** 2), np.array([1.0]), np.array([-4.0]), 1.0,
                      -8.0, 1e-4, 20)
    assert (res.reason, res.alpha, res.trials, res.f) == (LineSearchReason.SUFFICIENT_DECREASE,
                                                          0.25, 3, 0.0)


class Point:
    def __init__(self, theta, f):
        self.theta, self.f = theta, f

    def __float__(self):
        return self.f


class Quadratic:
    """f(x) = x'Ax/2 - b'x, with its exact Hessian as the "Gauss-Newton" operator."""

    n_instances = 10

    def __init__(self, n=6, seed=3):
        self.A, _ = spd_operator(n, seed)
        self.b = np.arange(1.0, n + 1)
        self.subsets = []

    def evaluate(self, x):
        return Point(x, float(x @ self.A @ x / 2 - self.b @ x))

    def gradient(self, point):
        return self.A @ point.theta - self.b

    def gauss_newton(self, point, subset, damping):
        self.subsets.append(subset)
        A = self.A

        class Operator:
            def apply(self, v, out):
                out[:] = A @ v + damping * v
                return float(v @ out)

        return Operator()


def test_newton_loop_runs_on_a_numpy_only_space():
    # No MPI anywhere: the loop sees the problem only through callables. With
    # lambda = 0 and an exact CG, one Newton step lands on the minimiser.
    problem = Quadratic()
    options = NewtonOptions(iterations=3, damping=0.0, xi=1e-12, gn_size=4, seed=5)
    solver = NewtonSolver(problem, LOCAL, FullCG(LOCAL, options.xi, 50), options)
    record = solver.start(np.zeros(6))
    assert record.iter == 0 and record.f == 0.0
    record = solver.step()
    x_star = np.linalg.solve(problem.A, problem.b)
    np.testing.assert_allclose(solver.theta, x_star, rtol=1e-10)
    assert record.alpha == 1.0 and record.cg_reason == CGReason.CONVERGED
    assert record.rho == pytest.approx(1.0, rel=1e-8)
    assert record.lambda_ == 0.0
    # The subsets are drawn from the seeded stream: sorted, without repetition.
    assert len(problem.subsets[0]) == 4 and np.all(np.diff(problem.subsets[0]) > 0)
    # From the minimiser steps only shuffle rounding: the loop ends at its limit, or
    # sooner where a line search finds no decrease at all, and stays there.
    while not solver.done:
        solver.step()
    assert solver.status in (RunStatus.ITERATION_LIMIT, RunStatus.LINE_SEARCH_FAILED)
    assert solver.iteration <= 3
    np.testing.assert_allclose(solver.theta, x_star, rtol=1e-10)


def test_damping_follows_the_reduction_ratio():
    # rho = 1 every step (an exact quadratic model): lambda shrinks by `drop` each time.
    problem = Quadratic()
    options = NewtonOptions(iterations=3, damping=1.0, xi=1e-12, gn_size=4)
    solver = NewtonSolver(problem, LOCAL, FullCG(LOCAL, options.xi, 50), options)
    solver.start(np.zeros(6))
    lambdas = [solver.step().lambda_ for _ in range(3)]
    np.testing.assert_allclose(lambdas, [1.0, 2 / 3, 4 / 9])


@pytest.fixture
def problem(request):
    loss, activation = request.param
    problem = make_problem(loss, activation)
    yield problem
    problem.close()


@pytest.mark.parametrize("problem", [("squared", "relu")], indirect=True)
def test_zero_damping_runs_and_every_loop_reports_why_it_stopped(problem):
    result = solve(problem, NewtonOptions(iterations=6, damping=0.0, gn_ratio=0.5))
    assert result.status == RunStatus.ITERATION_LIMIT and result.iterations == 6
    for rec in result.history[1:]:
        assert rec.lambda_ == 0.0
        assert rec.cg_reason in (CGReason.CONVERGED, CGReason.ITERATION_LIMIT)
        assert rec.line_search_reason == LineSearchReason.SUFFICIENT_DECREASE
    assert result.history[-1].f < result.history[0].f


def run_with(problem, options, decorate_direction=None):
    """`solve`, with the solver's direction decorated."""
    solver = make_solver(problem, options)
    if decorate_direction is not None:
        solver.direction = decorate_direction(solver.direction)
    run = SolverRun(problem, solver)
    run.start(problem.network.initial_parameters(options.seed))
    return run.finish()


@pytest.mark.parametrize("problem", [("softmax", "tanh")], indirect=True)
def test_non_descent_direction_ends_the_run_with_the_reason(problem):
    def uphill(direction):
        def solve_uphill(operator, g, gnorm):
            step = direction(operator, g, gnorm)
            step.d, step.Ad = -step.d, -step.Ad
            return step

        return solve_uphill

    result = run_with(problem, NewtonOptions(iterations=50, gn_ratio=0.5), uphill)
    assert result.status == RunStatus.LINE_SEARCH_FAILED
    assert "not a descent direction" in result.message
    assert result.iterations == 1 and len(result.history) == 2
    assert result.history[-1].line_search_reason == LineSearchReason.NOT_DESCENT
    assert result.f == result.history[0].f


@pytest.mark.parametrize("problem", [("squared", "tanh")], indirect=True)
def test_failed_direction_ends_the_run_with_a_numerical_error(problem):
    def failing(direction):
        def solve_badly(operator, g, gnorm):
            step = direction(operator, g, gnorm)
            step.cg_reason, step.failure = CGReason.INDEFINITE, "curvature -1"
            return step

        return solve_badly

    result = run_with(problem, NewtonOptions(iterations=5, gn_ratio=0.5), failing)
    assert result.status == RunStatus.NUMERICAL_ERROR
    assert result.message == "iteration 1: curvature -1"
    assert len(result.history) == 1 and result.f == result.history[0].f


@pytest.mark.parametrize("problem", [("squared", "sigmoid")], indirect=True)
def test_stalled_line_search_ends_the_run(problem, monkeypatch):
    # Every point after the start looks worse than it is: no step can be accepted.
    evaluate, calls = problem.objective.evaluate, []

    def worse(theta):
        point = evaluate(theta)
        point.f += 1e3 if calls else 0.0
        calls.append(theta)
        return point

    monkeypatch.setattr(problem.objective, "evaluate", worse)
    result = solve(problem, NewtonOptions(iterations=50, gn_ratio=0.5))
    assert result.status == RunStatus.LINE_SEARCH_FAILED
    assert "20 halvings" in result.message
    assert result.history[-1].line_search_trials == 21


@pytest.mark.parametrize(
    "field, value, message",
    [("gn_ratio", 1.5, "gn_ratio must be in (0, 1]"), ("xi", 0.0, "xi must be in (0, 1)"),
     ("damping", -1.0, "damping must be >= 0"), ("cg_max", 0, "cg_max must be >= 1"),
     ("sync_fraction", 0.5, "sync_fraction needs diagonal")],
)
def test_nonsensical_options_are_refused_by_parameter_name(field, value, message):
    with pytest.raises(ParameterError) as caught:
        NewtonOptions(**{field: value}).check()
    assert str(caught.value) == message
    # A front end names the parameter its own way, from the same error.
    assert caught.value.render(lambda p: f"--{p}").startswith(f"--{field}")


@pytest.mark.parametrize("problem", [("squared", "tanh")], indirect=True)
def test_non_finite_gradient_stops_and_keeps_the_last_good_iterate(problem, monkeypatch):
    objective = problem.objective
    real = objective.gradient
    calls = []

    def poisoned(point):
        calls.append(point.theta.copy())
        g = real(point)
        if len(calls) == 3:  # the gradient after iteration 2's step
            g = g * np.nan
        return g

    monkeypatch.setattr(objective, "gradient", poisoned)
    result = solve(problem, NewtonOptions(iterations=10, gn_ratio=0.5))
    assert result.status == RunStatus.NUMERICAL_ERROR and "iteration 2" in result.message
    assert len(result.history) == 2  # iterations 0 and 1: both good
    np.testing.assert_array_equal(result.theta, calls[1])
    assert np.isfinite(result.f) and result.f == result.history[-1].f


def test_the_solvers_import_no_mpi():
    # The solvers reduce through the space they are handed; MPI is the caller's.
    import subprocess
    import sys

    code = ("import sys, dnewton.solvers.newton, dnewton.solvers.sgd, "
            "dnewton.solvers.direction; print(sorted(m for m in sys.modules if 'mpi4py' in m))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "[]"
