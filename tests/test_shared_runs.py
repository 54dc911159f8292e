"""Runs that share an mpiexec job (shared_runs.py) keep their own results: statuses
and outputs per run, and a run that ends the job fails alone."""

import os

import pytest
from shared_runs import SEPARATE, SharedRuns

from dnewton.fault_injection import KILL_AFTER

SMALL = ["train", "digits", "--hidden", "8", "--iterations", "2", "--quiet"]


@pytest.mark.mpi
def test_each_run_has_its_own_status_and_output_and_a_job_ended_by_one_goes_on(tmp_path):
    runs = SharedRuns(tmp_path, 60)
    runs.add("refused", 2, [*SMALL, "-C", "0"])
    runs.add("killed", 2, [*SMALL, "--checkpoint", tmp_path / "ck", "--checkpoint-every", "1"],
             {KILL_AFTER: "1"})
    runs.add("after", 2, [*SMALL, "--log", runs.log_path("after")])
    runs.add("help", 2, ["train", "--help"])
    runs.run()
    # the kill ended the first job; the rest ran in a second one (or each in its own)
    assert runs.jobs == (4 if os.environ.get(SEPARATE) else 2)

    refused = runs["refused"]
    assert refused.returncode == 2 and refused.statuses == [2, 2]
    assert refused.stderr.count("dnewton: error") == 1 and "-C must be" in refused.stderr
    assert refused.stdout == ""

    killed = runs["killed"]
    assert str(killed.returncode).startswith("the shared job ended in this run")
    assert "--- mpiexec" in killed.stderr
    with pytest.raises(AssertionError, match="shared job ended in this run"):
        runs.checked("killed")

    assert [r["iter"] for r in runs.log("after")] == [0, 1, 2]
    assert runs["after"].statuses == [0, 0] and runs["after"].seconds > 0
    help_text = runs.checked("help").stdout
    assert help_text.count("usage: dnewton train") == 1  # rank 0's, as on its own


def test_a_run_is_declared_once(tmp_path):
    runs = SharedRuns(tmp_path)
    runs.add("a", 1, ["datasets"])
    with pytest.raises(ValueError, match="two runs named 'a'"):
        runs.add("a", 2, ["datasets"])
