"""bench/waits.py under mpiexec: the run trains as usual and rank 0 prints, per
phase and payload, both ranks' barrier and sum times; the payloads are those of
the layout's sums."""

from pathlib import Path

import pytest
from helpers import read_log, run_python

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench

WAITS = Path(__file__).resolve().parents[1] / "bench" / "waits.py"


@pytest.mark.mpi
def test_waits_splits_the_sums_of_a_two_rank_run(tmp_path):
    log = tmp_path / "run.jsonl"
    proc = run_python(2, [WAITS, "train", "digits", "--hidden", "16,12", "--partitions",
                          "1,2,1,1", "--iterations", "3", "--quiet", "--log", log])
    assert len(read_log(log)) == 4
    rows = [line.split("|") for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith(("| phase", "| ---"))]
    phases = {row[1].strip() for row in rows}
    assert {"forward", "backward", "gauss_newton"} <= phases
    assert all(int(row[2]) % 8 == 0 for row in rows)  # whole float64 arrays
    totals = [line for line in proc.stdout.splitlines() if line.startswith("rank ")]
    assert len(totals) == 2 and all("ms in the sums" in line for line in totals)
