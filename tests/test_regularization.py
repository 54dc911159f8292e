"""-C auto: the held-out split, the choice, and the run that follows it."""

import numpy as np
import pytest
from helpers import without_timings
from shared_runs import SharedRuns

from dnewton.app.regularization import PathPoint, best_C, holdout_split
from dnewton.errors import InputError

TIMEOUT = 120
RUN = ["train", "digits", "--hidden", "16", "--feature-scale", "16", "--center",
       "--iterations", "5", "--quiet"]
AUTO = ["-C", "auto", "--path-iterations", "5"]


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


def test_the_best_held_out_accuracy_wins_and_ties_go_to_the_smaller_C():
    def path(*pairs):
        return [PathPoint(C, accuracy, 0.0, 1, 0.0) for C, accuracy in pairs]

    assert best_C(path((10, 0.8), (1, 0.9), (0.1, 0.85))) == 1
    assert best_C(path((10, 0.9), (1, 0.9), (0.1, 0.7))) == 1


RANKS = [1, 2]
BAD = [
    (["--C-grid", "1,0"], "--C-grid must be positive numbers"),
    (["--C-grid", "1,-3"], "--C-grid must be positive numbers"),
    (["--holdout", "1.5"], "--holdout must be a fraction between 0 and 1"),
    (["--path-iterations", "0"], "--path-iterations must be >= 1"),
]
LOUD = [arg for arg in RUN if arg != "--quiet"]
KNOWN = [*AUTO, "--C-grid", "1e-6,1"]  # a grid whose answer is known


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py)."""
    runs = SharedRuns(tmp_path_factory.mktemp("regularization"), TIMEOUT)
    tmp = runs.scratch
    for n_ranks in RANKS:
        runs.add(("auto", n_ranks), n_ranks, [*LOUD, *KNOWN, "--log",
                                              runs.log_path(("auto", n_ranks))])
        runs.add(("fixed", n_ranks), n_ranks, [*RUN, "-C", "1", "--log",
                                               runs.log_path(("fixed", n_ranks))])
    folder, log = tmp / "ck", runs.log_path("resumed")
    runs.add("first", 2, [*RUN, *KNOWN, "--iterations", "2", "--checkpoint", folder,
                          "--log", log])
    runs.add("resumed", 2, [*LOUD, *KNOWN, "--checkpoint", folder, "--resume", folder,
                            "--log", log])
    runs.add("whole", 2, [*RUN, *KNOWN, "--log", runs.log_path("whole")])
    for i, (args, _) in enumerate(BAD):
        runs.add(("bad", i), 2, [*RUN, *AUTO, *args])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks", RANKS)
def test_auto_chooses_the_known_best_and_trains_as_that_C_would(runs, n_ranks):
    """A grid whose answer is known: C = 1e-6 regularizes the network to chance
    accuracy, C = 1 learns the digits. The run after the path is the -C 1 run."""
    proc = runs.checked(("auto", n_ranks))
    records = runs.log(("auto", n_ranks))
    path = records[0]["regularization_path"]
    assert [point["C"] for point in path] == [1.0, 1e-6]  # largest first, warm-started
    assert path[0]["holdout_accuracy"] > 0.5 > 0.2 > path[1]["holdout_accuracy"]
    assert "C = 1, chosen by -C auto" in proc.stdout
    del records[0]["regularization_path"]
    assert without_timings(records) == without_timings(runs.log(("fixed", n_ranks)))


@pytest.mark.mpi
def test_a_resumed_auto_run_keeps_the_C_it_chose(runs):
    runs.checked("first")
    proc = runs.checked("resumed")
    assert "resuming" in proc.stdout and "-C auto: fitting" not in proc.stdout
    resumed, uninterrupted = runs.log("resumed"), runs.log("whole")
    for records in (resumed, uninterrupted):  # the path's seconds are timings too
        for point in records[0]["regularization_path"]:
            del point["seconds"]
    assert without_timings(resumed) == without_timings(uninterrupted)


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(BAD)), ids=[" ".join(a) for a, _ in BAD])
def test_bad_search_settings_end_every_rank_with_one_message(runs, case):
    proc, message = runs[("bad", case)], BAD[case][1]
    assert proc.returncode == 2 and proc.statuses == [2, 2], proc.stderr
    assert proc.stderr.count("dnewton: error") == 1 and message in proc.stderr, proc.stderr
