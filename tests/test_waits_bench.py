"""bench/waits.py under mpiexec: the run trains as usual and rank 0 prints, per
phase and payload, both ranks' barrier and sum times; the payloads are those of
the layout's sums."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import WORLD, mpiexec_path, run_environment

WAITS = Path(__file__).resolve().parents[1] / "bench" / "waits.py"


@pytest.mark.mpi
def test_waits_splits_the_sums_of_a_two_rank_run(tmp_path):
    if WORLD.size > 1:
        pytest.skip("starts mpiexec itself: runs in the one-process suite only")
    launcher = mpiexec_path()
    if launcher is None:
        pytest.skip("no mpiexec found (pip install mpich, or load your MPI)")
    log = tmp_path / "run.jsonl"
    cmd = [launcher, "-n", "2", sys.executable, str(WAITS), "train", "digits",
           "--hidden", "16,12", "--partitions", "1,2,1,1", "--iterations", "3", "--quiet",
           "--log", str(log)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150,
                          env=run_environment(120))
    assert proc.returncode == 0, proc.stderr
    assert len([line for line in log.read_text().splitlines() if '"f"' in line]) == 4
    rows = [line.split("|") for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith(("| phase", "| ---"))]
    phases = {row[1].strip() for row in rows}
    assert {"forward", "backward", "gauss_newton"} <= phases
    assert all(int(row[2]) % 8 == 0 for row in rows)  # whole float64 arrays
    totals = [line for line in proc.stdout.splitlines() if line.startswith("rank ")]
    assert len(totals) == 2 and all("ms in the sums" in line for line in totals)
