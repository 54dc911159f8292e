"""Stochastic Newton (``sample_size``): the sample's objective is the objective of its
instances, the run does not depend on the layout or the copies, its bytes are the
design's, it resumes exactly, and B = all instances is the paper's method. In
process: on one rank, and under ``mpiexec -n 3`` on three."""

import math

import numpy as np
import pytest
from helpers import (
    LAYOUTS,
    WORLD,
    backward_bytes,
    forward_bytes,
    global_vector,
    make_problem,
    random_theta,
    synthetic,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from dnewton.app.problem import ModelConfig, Problem
from dnewton.app.training import make_solver, solve
from dnewton.errors import ParameterError
from dnewton.io.data import RawData
from dnewton.solvers.newton import NewtonOptions

N = 40  # instances of the synthetic set these tests use
OPTIONS = dict(sample_size=12, sample_growth=1.25, gn_ratio=0.5, iterations=5, cg_max=8,
               seed=4)


def data():
    return synthetic(n_instances=N)


def build(comm, raw, C=0.7, replicas=1, partitions=None, loss="softmax"):
    config = ModelConfig(hidden=(5, 4), activation="tanh", loss=loss, C=C, batch_size=4,
                         partitions=partitions, replicas=replicas, dtype="float64")
    return Problem.build(comm, raw, None, config)


@pytest.mark.parametrize("partitions", LAYOUTS)
def test_a_samples_objective_is_that_of_its_instances(partitions):
    """f_B, its gradient and its Gauss-Newton product equal those of a problem built on
    B's instances alone, with C scaled by l / |B| so that the regularization keeps l."""
    raw = data()
    index = np.array([0, 2, 3, 7, 8, 11, 19, 20, 21, 33, 38])  # every class among them
    C = 0.7
    problem = build(WORLD, raw, C, partitions=partitions)
    alone = build(WORLD, RawData(raw.X[index], raw.y[index], "B"), C * N / len(index),
                  partitions=partitions)
    try:
        theta = random_theta(problem)
        sample = problem.objective.sample(index)
        assert sample.n_instances == len(index)
        point, reference = sample.evaluate(theta), alone.objective.evaluate(theta)
        assert point.f == pytest.approx(reference.f, rel=1e-13)
        np.testing.assert_allclose(global_vector(problem, sample.gradient(point)),
                                   global_vector(alone, alone.objective.gradient(reference)),
                                   rtol=1e-12, atol=1e-15)
        subset = np.array([1, 4, 5, 9])  # positions within B
        v = random_theta(problem, seed=3)
        products = []
        for objective, at in ((sample, point), (alone.objective, reference)):
            out = np.empty_like(v)
            objective.gauss_newton(at, subset, 0.3).apply(v, out)
            products.append(global_vector(problem, out))
        np.testing.assert_allclose(products[0], products[1], rtol=1e-12, atol=1e-15)
    finally:
        problem.close()
        alone.close()


def history(comm, replicas=1, partitions=None, **options):
    """The records and the final network (the dense vector, on every rank) of a run."""
    problem = build(comm, data(), replicas=replicas, partitions=partitions)
    try:
        result = solve(problem, NewtonOptions(**{**OPTIONS, **options}))
        theta = problem.world.bcast(problem.gather_vector(result.theta), root=0)
        return result.history, theta
    finally:
        problem.close()


@pytest.mark.parametrize("partitions", LAYOUTS)
def test_every_layout_gives_the_one_rank_run(partitions):
    """f of every iteration, the sample sizes and the final network of a growing sample
    on the job's ranks equal the one-rank run's (COMM_SELF on every rank)."""
    reference, theta1 = history(MPI.COMM_SELF)
    records, theta = history(WORLD, partitions=partitions)
    assert [r.sample_size for r in records] == [12, 12, 15, 19, 24, 30]
    np.testing.assert_allclose([r.f for r in records], [r.f for r in reference], rtol=1e-10)
    np.testing.assert_allclose(theta, theta1, rtol=1e-9, atol=1e-12)
    assert records[-1].f < records[0].f


def test_copies_of_the_layout_give_the_one_rank_run():
    """With every rank a copy (the sample split over the copies, some with no share
    of it at times), the one-rank run's f."""
    reference, _ = history(MPI.COMM_SELF, sample_size=5)
    records, _ = history(WORLD, replicas=WORLD.size, partitions=(1, 1, 1, 1), sample_size=5)
    np.testing.assert_allclose([r.f for r in records], [r.f for r in reference], rtol=1e-10)


def test_bytes_are_the_designs_formulas():
    """A fixed sample size: per iteration the bytes of a full iteration on |B|
    instances and |S| = ceil(r |B|), plus the next sample's f (one more forward pass)."""
    from dnewton.planning.volume import Counts, iteration_bytes

    problem = build(WORLD, data(), loss="squared")
    try:
        result = solve(problem, NewtonOptions(**{**OPTIONS, "sample_growth": 1.0}))
        layout = problem.layout
        for rec in result.history[1:]:
            counts = Counts(cg_iters=rec.cg_iters, trials=rec.line_search_trials)
            expected = iteration_bytes(layout, 12, math.ceil(0.5 * 12), counts,
                                       world=WORLD.size, sampled=True)
            for phase in ("forward", "backward", "gauss_newton", "other"):
                assert rec.bytes[phase] == expected[phase], phase
            n_out = layout.widths[-1]
            assert rec.bytes["backward"] == (backward_bytes(layout, 12, 1)
                                             + backward_bytes(layout, 6, n_out))
            scalar = 8 if WORLD.size > 1 else 0
            assert rec.bytes["forward"] == (rec.line_search_trials + 1) * (
                forward_bytes(layout, 12) + 2 * scalar)
    finally:
        problem.close()


def test_the_model_is_the_bias_corrected_average_of_the_iterates():
    """With `average`, `model` is (1 - beta) sum_k beta^(t-k) theta_k / (1 - beta^t)
    over the iterates after each step; before the first step, the start."""
    problem = build(WORLD, data())
    try:
        beta = 0.7
        solver = make_solver(problem, NewtonOptions(**OPTIONS, average=beta))
        theta0 = problem.network.initial_parameters(4)
        solver.start(theta0)
        np.testing.assert_array_equal(solver.model, theta0)
        iterates = []
        while not solver.done:
            solver.step()
            iterates.append(solver.theta.copy())
        t = len(iterates)
        expected = sum((1 - beta) * beta ** (t - k) * theta
                       for k, theta in enumerate(iterates, start=1)) / (1 - beta**t)
        np.testing.assert_allclose(solver.model, expected, rtol=1e-12, atol=1e-15)
        result = solve(problem, NewtonOptions(**OPTIONS, average=beta), theta=theta0)
        np.testing.assert_array_equal(result.theta, solver.model)  # the run returns it
    finally:
        problem.close()


def test_a_resumed_run_continues_exactly():
    """Stopped after iteration 2 and resumed from its state by a new solver: the rest is
    the uninterrupted run's, bit for bit (the next sample is drawn again), the moving
    average of the iterates included."""
    problem = build(WORLD, data())
    try:
        options = NewtonOptions(**OPTIONS, average=0.8)
        theta0 = problem.network.initial_parameters(options.seed)
        straight = make_solver(problem, options)
        records = [straight.start(theta0)]
        while not straight.done:
            records.append(straight.step())
        first = make_solver(problem, options)
        first.start(theta0)
        first.step()
        last = first.step()
        state = first.state()
        assert state.scalars["sample_size"] == 19  # the next sample's
        again = make_solver(problem, options)
        again.resume(state, last)
        assert again.f == records[2].f
        resumed = [again.step() for _ in range(3)]
        assert again.done
        assert [r.f for r in resumed] == [r.f for r in records[3:]]
        assert [r.sample_size for r in resumed] == [r.sample_size for r in records[3:]]
        np.testing.assert_array_equal(again.theta, straight.theta)
        np.testing.assert_array_equal(again.model, straight.model)
    finally:
        problem.close()


def test_a_sample_of_every_instance_is_the_papers_method():
    """sample_size >= l draws nothing: the run is the one without sampling, bit for
    bit, and its records carry no sample size (the paper's log is unchanged)."""
    paper, theta = history(WORLD, sample_size=None, sample_growth=1.0)
    everything, theta_all = history(WORLD, sample_size=N, sample_growth=1.0)
    assert [r.f for r in paper] == [r.f for r in everything]
    np.testing.assert_array_equal(theta, theta_all)
    assert all(r.sample_size is None for r in paper)
    assert "sample_size" not in paper[1].as_dict()


@pytest.mark.parametrize("field, value, message", [
    ("sample_size", 0, "sample_size must be >= 1"),
    ("sample_growth", 0.5, "sample_growth must be >= 1"),
    ("sample_growth", 2.0, "sample_growth needs sample_size"),
    ("average", 1.0, "average must be in"),
])
def test_nonsensical_sample_options_are_refused_by_name(field, value, message):
    options = {"sample_size": None, field: value}
    with pytest.raises(ParameterError, match=message):
        NewtonOptions(**options).check()


def test_a_gauss_newton_size_above_the_sample_takes_the_whole_sample():
    """--gn-size larger than |B| (but within l) takes all of B as S."""
    problem = make_problem("softmax", "relu")
    try:
        result = solve(problem, NewtonOptions(sample_size=6, gn_size=9, iterations=2))
        assert [r.sample_size for r in result.history] == [6, 6, 6]
    finally:
        problem.close()


def test_the_recommended_setting_samples_large_sets_only():
    """Beyond STOCHASTIC_FROM instances the unset options are the stochastic setting's;
    what the user sets wins, and a sample size of None is the paper's method."""
    from dnewton.solvers.newton import STOCHASTIC, STOCHASTIC_FROM, SUBSET_FLOOR, recommended

    floor = {"gn_min": SUBSET_FLOOR}
    assert recommended(STOCHASTIC_FROM, {"iterations": 7}) == NewtonOptions(iterations=7,
                                                                             **floor)
    large = recommended(STOCHASTIC_FROM + 1, {"iterations": 7, "cg_max": 3})
    assert large == NewtonOptions(**{**STOCHASTIC, **floor, "iterations": 7, "cg_max": 3})
    assert recommended(STOCHASTIC_FROM + 1, {}) == NewtonOptions(**STOCHASTIC, **floor)
    assert recommended(10**6, {"sample_size": None}) == NewtonOptions()
    assert recommended(10**6, {"sample_size": 50}) == NewtonOptions(sample_size=50)


@pytest.mark.parametrize("n_instances, subset", [(133, 133), (2000, 200), (10_000, 500)])
def test_the_recommended_subset_holds_at_least_the_floor(n_instances, subset):
    """Without a subset option of the user's, S is 5% of l but at least SUBSET_FLOOR
    instances (all of a smaller set); --gn-ratio, --gn-size and the paper's method
    (sample_size None) are taken as given."""
    from dnewton.solvers.newton import SUBSET_FLOOR, recommended

    assert SUBSET_FLOOR == 200  # the cases below are worked out for it
    assert recommended(n_instances, {"gn_size": None}).subset_size(n_instances) == subset
    given = recommended(n_instances, {"gn_ratio": 0.05})
    assert given.subset_size(n_instances) == math.ceil(0.05 * n_instances)
    assert recommended(n_instances, {"gn_size": 7}).subset_size(n_instances) == 7
    paper = recommended(n_instances, {"sample_size": None})
    assert paper.subset_size(n_instances) == math.ceil(0.05 * n_instances)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10**6), ratio=st.floats(1e-6, 1.0), floor=st.integers(1, 5000),
       sample=st.one_of(st.none(), st.integers(1, 10**6)))
def test_the_subset_is_the_ratio_raised_to_the_floor_within_the_instances(n, ratio, floor,
                                                                         sample):
    """|S| = max(ceil(ratio m), min(floor, m)) for the m instances it is drawn from:
    never more than m, never fewer than the ratio's share or the floor allows."""
    m = sample if sample is not None and sample < n else n
    size = NewtonOptions(gn_ratio=ratio, gn_min=floor).subset_size(n, sample)
    assert min(floor, m) <= size <= m
    assert size >= math.ceil(ratio * m)
    assert size == max(math.ceil(ratio * m), min(floor, m))


def test_the_planner_plans_for_fixed_samples_only():
    from dnewton.solvers.newton import STOCHASTIC, STOCHASTIC_FROM, recommended

    large = STOCHASTIC_FROM + 1
    assert recommended(large, {}).fixed_sample(large) == STOCHASTIC["sample_size"]
    assert NewtonOptions(sample_size=50, sample_growth=1.1).fixed_sample(large) is None
    assert NewtonOptions().fixed_sample(large) is None


def test_a_checkpoint_resumes_the_sample_and_the_average(tmp_path):
    """Through a checkpoint folder (the gathered, then scattered state) on the job's
    ranks: the same records and the same returned network as the straight run."""
    from dnewton.app.training import Outputs, train

    raw = data()
    config = ModelConfig(hidden=(5, 4), activation="tanh", C=0.7, replicas=1, dtype="float64")
    options = NewtonOptions(**{**OPTIONS, "iterations": 6}, average=0.8)
    straight = train(raw, None, config, options, Outputs(), comm=WORLD, return_model=True)
    folder = WORLD.bcast(str(tmp_path / "ck") if WORLD.rank == 0 else None)
    first = NewtonOptions(**{**OPTIONS, "iterations": 3}, average=0.8)
    train(raw, None, config, first, Outputs(checkpoint=folder, checkpoint_every=1),
          comm=WORLD)
    resumed = train(raw, None, config, options, Outputs(resume=folder), comm=WORLD,
                    return_model=True)
    assert [r.f for r in resumed.history] == [r.f for r in straight.history]
    for a, b in zip(resumed.model.weights, straight.model.weights):
        np.testing.assert_array_equal(a, b)


def test_a_run_on_samples_is_planned_for_its_sample():
    """The planner times an iteration of stochastic Newton on |B| instances with one
    more forward pass (the next sample's), not on all of them."""
    from dnewton.app.problem import _plan
    from dnewton.planning.planner import choose
    from dnewton.planning.volume import Counts

    widths, config = [784, 300, 300, 10], ModelConfig(hidden=(300, 300), dtype="float32")
    sampled = _plan(WORLD, widths, 60_000, 100, config, n_sample=500)
    whole = _plan(WORLD, widths, 60_000, 100, config)
    expected = choose(widths, 500, 100, WORLD.size, counts=Counts(trials=2), itemsize=4,
                      loss=config.loss, batch_size=config.batch_size, top=1)
    assert sampled[0].choice == expected[0].choice
    assert sampled[0].seconds_per_iteration == expected[0].seconds_per_iteration
    assert sampled[0].seconds_per_iteration < whole[0].seconds_per_iteration / 10
