"""bench/studies/stopping.py: the early-stopping rule it simulates, and a short run on iris
whose two paired runs on the same 90% must agree to the bit."""

import pytest
from helpers import load_bench

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


def test_early_stop_keeps_the_first_best_and_stops_after_patience():
    stopping = load_bench("studies/stopping")
    held_out = [0.5, 0.7, 0.7, 0.6, 0.8, 0.8, 0.8, 0.79, 0.8]
    # best 0.8 first at 4; no improvement at 5, 6, 7: patience 3 stops at 7, keeps 4
    assert stopping.early_stop(held_out, 3) == (7, 4)
    # patience 2 stops at 3 (0.7 at 1, not improved at 2 and 3), keeps 1
    assert stopping.early_stop(held_out, 2) == (3, 1)
    # never out of patience: runs to the end, keeps the first best
    assert stopping.early_stop(held_out, 10) == (8, 4)


@pytest.mark.mpi  # runs dnewton in subprocesses: not from inside an MPI job
def test_short_run_on_iris(capsys):
    stopping = load_bench("studies/stopping")
    stopping.main(["--sets", "iris", "--iterations", "12", "--patience", "2,50"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| iris |")]
    assert len(lines) == 2
    fixed, early = lines
    assert fixed.count("% in ") == 1  # of the checkpoints, only 10 is within 12 iterations
    # patience 50 never runs out: the run stops at its last record (iteration 12)
    assert "stopped 12," in early.split("|")[3]
