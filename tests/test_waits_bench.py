"""bench/waits.py: the run trains as usual with the ledger's synchronized timing,
and the script prints, per phase, the barrier and the collective apart."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import WORLD, mpiexec_path, read_log, run_environment

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench

WAITS = Path(__file__).resolve().parents[1] / "bench" / "waits.py"


@pytest.mark.mpi
def test_waits_splits_the_sums_of_a_two_rank_run(tmp_path):
    if WORLD.size > 1 or mpiexec_path() is None:
        pytest.skip("starts mpiexec itself: one-process suite, with an mpiexec")
    log = tmp_path / "run.jsonl"
    proc = subprocess.run(
        [sys.executable, WAITS, "--ranks", "2", "train", "digits", "--hidden", "16,12",
         "--partitions", "1,2,1,1", "--iterations", "3", "--quiet", "--log", log],
        capture_output=True, text=True, env=run_environment(120), timeout=150)
    assert proc.returncode == 0, proc.stderr
    records = read_log(log)
    assert len(records) == 4
    assert all("barrier" in records[1]["seconds"][phase]
               for phase in ("forward", "backward", "gauss_newton"))
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith(("| phase", "| ---"))]
    assert {"forward", "backward", "gauss_newton"} <= {row[0] for row in rows}
    assert all(float(row[2]) >= 0 and float(row[3]) >= 0 for row in rows)
    assert "ms waiting for the others" in proc.stdout.splitlines()[-1]
