"""bench/overlap.py under mpiexec: every case gets a row of timings, the overlapped
sums are checked against the blocking one, and bad sizes are usage errors."""

from pathlib import Path

import pytest
from helpers import run_python

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench

OVERLAP = Path(__file__).resolve().parents[1] / "bench" / "overlap.py"


def table(stdout):
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in stdout.splitlines()
            if line.startswith("| ") and not line.startswith(("| run", "| ---"))]


@pytest.mark.mpi
def test_overlap_times_every_case_and_checks_the_sums():
    proc = run_python(2, ["-m", "mpi4py", OVERLAP, "--sum", "64x8", "--gemm", "16x64x8",
                          "--blocks", "1,3", "--repeat", "3"])
    rows = table(proc.stdout)
    labels = [row[0] for row in rows]
    assert labels == [
        "the GEMM alone", "the GEMM in 3 blocks alone", "the sum alone",
        "blocking: the sum, then the GEMM", "overlapped: Iallreduce, the GEMM, Wait",
        "overlapped: Iallreduce, the GEMM in 3 blocks with a Test after each, Wait"]
    for row in rows:
        median = float(row[1].split()[0])
        assert median >= 0.0
        assert (row[2] != "") == row[0].startswith("overlapped")
    assert "over 2 rank(s)" in proc.stdout
    # two ranks: a + b either way, so the overlapped sums are the same numbers
    assert "largest difference 0.0e+00" in proc.stdout


@pytest.mark.mpi
@pytest.mark.parametrize("args, message", [
    (["--gemm", "3x4"], "expected 3 positive integers"),
    (["--gemm", "4x8x8", "--blocks", "5"], "at most M = 4 row blocks"),
    (["--blocks", "0"], "expected positive integers"),
])
def test_overlap_refuses_bad_sizes(args, message):
    proc = run_python(2, ["-m", "mpi4py", OVERLAP, *args], check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
