"""-C auto: the held-out split, the search's schedule and choice, and the run that
goes on from the chosen fit."""

import io
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
from helpers import WORLD, without_timings
from shared_runs import SharedRuns

from dnewton.app.monitor import Monitor
from dnewton.app.problem import ModelConfig
from dnewton.app.regularization import (
    PathPoint,
    best_C,
    holdout_split,
    schedule,
    trunk_C,
    winner_iterations,
)
from dnewton.app.stop_requests import EXIT_RESUMABLE, StopRequests
from dnewton.app.training import Outputs, train
from dnewton.errors import InputError
from dnewton.io.data import read_dataset
from dnewton.run_records import RunStatus
from dnewton.solvers.newton import NewtonOptions

TIMEOUT = 120
RUN = ["train", "digits", "--hidden", "16", "--feature-scale", "16", "--center",
       "--iterations", "5", "--quiet"]
# C = 1e-6 regularizes the network to chance accuracy, C = 1 learns the digits.
KNOWN = ModelConfig(dtype="float64", hidden=(16,), feature_scale=16.0, center=True, C="auto",
                    C_grid=(1e-6, 1.0))
ITERATIONS = 12  # with the default budget: a trunk of 4 (6 less the round), then each C


def test_the_split_is_stratified_seeded_and_a_partition():
    y = np.repeat([0.0, 1.0, 2.0], [50, 30, 20])
    fit, held = holdout_split(y, 0.2, seed=3)
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(100))
    assert [int(np.sum(y[held] == c)) for c in (0, 1, 2)] == [10, 6, 4]
    again, _ = holdout_split(y, 0.2, seed=3)
    other, _ = holdout_split(y, 0.2, seed=4)
    np.testing.assert_array_equal(fit, again)
    assert not np.array_equal(fit, other)


def test_a_class_too_small_to_hold_out_is_refused():
    with pytest.raises(InputError, match="class 2 has 1 instance"):
        holdout_split(np.array([0.0, 0.0, 1.0, 1.0, 2.0]), 0.4, seed=0)


def test_the_best_held_out_accuracy_of_the_last_round_wins_and_ties_go_to_the_smaller_C():
    def path(*points):
        return [PathPoint(C, accuracy, 0.0, 1, 0.0, round=r) for C, accuracy, r in points]

    assert best_C(path((10, 0.8, 1), (1, 0.9, 1), (0.1, 0.85, 1))) == 1
    assert best_C(path((10, 0.9, 1), (1, 0.9, 1), (0.1, 0.7, 1))) == 1
    # An earlier round's better score is an earlier, shorter fit: the last round decides.
    assert best_C(path((100, None, 0), (10, 0.95, 1), (1, 0.9, 1), (10, 0.8, 2),
                       (1, 0.85, 2))) == 1


@pytest.mark.parametrize("n_C", [2, 3, 5, 6, 9])
@pytest.mark.parametrize("units", [5, 20, 100, 250])
@pytest.mark.parametrize("budget", [0.1, 0.3, 1.0])
def test_the_fits_the_search_discards_stay_within_the_budget(n_C, units, budget):
    trunk, rounds = schedule(n_C, units, budget)
    sizes = [n_C]
    while sizes[-1] > 1:
        sizes.append(-(-sizes[-1] // 2))
    assert len(rounds) == len(sizes) - 1  # halving down to one C
    discarded = sum((size - 1) * each for size, each in zip(sizes, rounds))
    if rounds != [1] * len(rounds):  # one iteration a round is the least there is
        assert discarded <= budget * units
        assert all(b == 2 * a for a, b in zip(rounds, rounds[1:]))  # twice as long each round
        # ...and the largest such: twice as long a first round would be over budget
        assert sum((size - 1) * 2 * each for size, each in zip(sizes, rounds)) > budget * units
    assert trunk >= 1 and trunk + sum(rounds) <= max(units // 2, sum(rounds) + 1)
    # What starting and scoring each fit costs counts too, and can only shorten the rounds
    _, dearer = schedule(n_C, units, budget, overhead=0.5)
    assert all(a <= b for a, b in zip(dearer, rounds))


def test_the_trunk_is_fitted_at_the_middle_of_the_grid():
    assert trunk_C(ModelConfig().C_grid) == 1.0  # the default C
    assert trunk_C((1e-6, 1.0)) == 1.0  # a tie goes to the larger
    assert trunk_C((0.01, 0.1, 1.0)) == 0.1 and trunk_C((5.0,)) == 5.0


def test_the_schedule_on_a_large_set():
    """Full Fashion-MNIST in docs/benchmarks.md: 100 iterations, the default grid and
    budget; starting and scoring a fit there costs about one iteration's FLOPs."""
    assert schedule(6, 100, 0.3) == (36, [2, 4, 8])
    assert schedule(6, 100, 0.3, overhead=1.0)[1] == [1, 2, 4]


# Stochastic Newton, as beyond 10,000 instances: there the chosen fit goes on.
SAMPLES = dict(sample_size=500, gn_ratio=0.2, cg_max=10, average=0.9)


def _digits(config=KNOWN, iterations=ITERATIONS, outputs=None, samples=SAMPLES, **kwargs):
    train_raw, test_raw = read_dataset("digits")
    return train(train_raw, test_raw, config, NewtonOptions(iterations=iterations, **samples),
                 outputs or Outputs(), return_model=True, **kwargs)


def test_auto_chooses_the_known_best_and_goes_on_from_its_fit(tmp_path):
    """The search's bookkeeping, and the run after it: the chosen C's fitted network
    trained on for the run's iterations less those it had in the search."""
    from dnewton.app.training import _choose_C

    auto = _digits()
    path = auto.history[0].regularization_path
    assert [(p["C"], p["round"]) for p in path] == [(1.0, 0), (1.0, 1), (1e-6, 1)]
    trunk, rounds = schedule(2, ITERATIONS, KNOWN.search_budget)
    assert path[0]["iterations"] == trunk  # the trunk at the grid's middle, then each C
    assert path[1]["iterations"] == path[2]["iterations"] <= rounds[0]
    assert path[1]["holdout_accuracy"] > 0.5 > 0.2 > path[2]["holdout_accuracy"]
    searched = winner_iterations(path)
    assert auto.C == 1.0 and searched == trunk + path[1]["iterations"]
    discarded = sum(p["iterations"] for p in path) - searched
    assert discarded <= KNOWN.search_budget * ITERATIONS
    assert auto.iterations == ITERATIONS - searched  # the search's count against the run's
    assert all(p["flops"] > 0 for p in path)
    # The final fit is a run with the chosen C from the chosen fit's network.
    options = NewtonOptions(iterations=ITERATIONS, **SAMPLES)
    _, again, chosen, searched = _choose_C(WORLD, read_dataset("digits")[0], KNOWN, options,
                                           Monitor(WORLD.rank, quiet=True), None)
    assert searched == winner_iterations(again) == winner_iterations(path)
    fixed = _digits(replace(KNOWN, C=1.0), ITERATIONS - searched, initial=chosen)
    records = [record.as_dict() for record in auto.history]
    del records[0]["regularization_path"]
    assert without_timings(records) == without_timings([r.as_dict() for r in fixed.history])
    for name, array in fixed.model.arrays().items():
        np.testing.assert_array_equal(auto.model.arrays()[name], array)


def test_with_newton_on_every_instance_the_run_after_the_search_is_the_plain_run():
    """The paper's method drives each fit to its own part's minimum; the final fit
    starts afresh, exactly as -C <the chosen value> would."""
    auto = _digits(samples={})
    assert auto.C == 1.0 and auto.iterations == ITERATIONS
    fixed = _digits(replace(KNOWN, C=1.0), samples={})
    records = [record.as_dict() for record in auto.history]
    del records[0]["regularization_path"]
    assert without_timings(records) == without_timings([r.as_dict() for r in fixed.history])


def test_a_fit_continued_in_stretches_is_the_fit_in_one():
    """Each round goes on where the C's fit ended: its iterate, damping, moving
    average and sample generator, as a resumed run does (stochastic Newton here)."""
    from dnewton.app.problem import Problem
    from dnewton.app.regularization import split_rows
    from dnewton.app.training import _fit

    fit_raw, held_raw = split_rows(read_dataset("digits")[0], 0.2, 0, "a test")
    config = replace(KNOWN, C=1.0)
    options = NewtonOptions(sample_size=500, gn_ratio=0.2, cg_max=10, average=0.9)
    problem = Problem.build(WORLD, fit_raw, held_raw, config)
    try:
        whole = _fit(problem, options, None, 5, False)
        first = _fit(problem, options, None, 3, False)
        rest = _fit(problem, options, first, 2, False)
        assert rest.result.iterations == whole.result.iterations == 5
        np.testing.assert_array_equal(rest.result.theta, whole.result.theta)
        assert [r.f for r in rest.history] == [r.f for r in whole.history[-2:]]
        # A branch to another C starts the moving average again: the model it scores
        # is its own iterates', not the trunk's.
        problem.set_C(0.01)
        branch = _fit(problem, options, first, 1, True)
        np.testing.assert_allclose(branch.result.theta, branch.state.theta, rtol=1e-12)
        assert rest.flops > 0 and branch.flops > 0
    finally:
        problem.close()


class _StopAfter(Monitor):
    """A monitor that sends its process SIGTERM after iteration `k` (every rank)."""

    def __init__(self, k, stream):
        super().__init__(WORLD.rank, stream=stream)
        self.k = k

    def __call__(self, record):
        super().__call__(record)
        if record.iter == self.k:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_resumed_auto_run_keeps_the_C_and_the_fit_it_chose(tmp_path):
    """A stop during the final fit checkpoints it; --resume goes on without a second
    search (the checkpoint holds the chosen C and the iterations the search gave
    it), to the run that was never stopped."""
    folder = tmp_path / "ck"
    whole = _digits()
    stops = StopRequests()
    with stops.installed():
        stopped = _digits(outputs=Outputs(checkpoint=folder),
                          monitor=_StopAfter(1, io.StringIO()))
    assert stopped.status == RunStatus.INTERRUPTED and stopped.iterations == 2
    assert stops.settled == EXIT_RESUMABLE
    said = io.StringIO()
    resumed = _digits(outputs=Outputs(checkpoint=folder, resume=folder),
                      monitor=Monitor(WORLD.rank, stream=said))
    if WORLD.rank == 0:
        assert "resuming" in said.getvalue() and "successive halving" not in said.getvalue()
    assert resumed.C == 1.0 and resumed.iterations == whole.iterations
    records = [[r.as_dict() for r in run.history] for run in (resumed, whole)]
    for run in records:  # the search's seconds are timings too
        for point in run[0]["regularization_path"]:
            del point["seconds"]
    assert without_timings(records[0]) == without_timings(records[1])


BAD = [
    (["--C-grid", "1,0"], "--C-grid must be positive numbers"),
    (["--C-grid", "1,-3"], "--C-grid must be positive numbers"),
    (["--holdout", "1.5"], "--holdout must be a fraction between 0 and 1"),
    (["--search-budget", "0"], "--search-budget must be > 0"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs of this module that need a whole command line, in one shared job
    (shared_runs.py): settings every rank must refuse alike."""
    runs = SharedRuns(tmp_path_factory.mktemp("regularization"), TIMEOUT)
    for i, (args, _) in enumerate(BAD):
        runs.add(("bad", i), 2, [*RUN, "-C", "auto", *args])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(BAD)), ids=[" ".join(a) for a, _ in BAD])
def test_bad_search_settings_end_every_rank_with_one_message(runs, case):
    proc, message = runs[("bad", case)], BAD[case][1]
    assert proc.returncode == 2 and proc.statuses == [2, 2], proc.stderr
    assert proc.stderr.count("dnewton: error") == 1 and message in proc.stderr, proc.stderr


def test_path_iterations_says_what_replaced_it(capsys):
    from dnewton.app.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["train", "digits", "-C", "auto", "--path-iterations", "5"])
    assert exited.value.code == 2
    assert "--path-iterations is replaced by --search-budget" in capsys.readouterr().err
