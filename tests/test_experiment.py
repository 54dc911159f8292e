"""bench/experiment.py end to end on a tiny budget: it runs every method, counts a
diverged SGD run as such, and writes the report and the figure."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import mpiexec_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.mpi
def test_experiment_writes_the_report(tmp_path):
    pytest.importorskip("matplotlib")
    if mpiexec_path() is None:
        pytest.skip("no mpiexec found")
    command = [sys.executable, str(ROOT / "bench" / "experiment.py"), "--datasets", "digits",
               "--seeds", "2", "--ranks", "2", "--hidden", "8", "--rates", "0.05,1000",
               "--iterations", "2", "--epochs", "2", "--out", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "python bench/experiment.py --datasets digits" in report
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
            for line in report.splitlines() if line.startswith("| ") and " | 2 | " in line}
    assert set(rows) == {"Newton, defaults (full G, 5% subset)",
                         "Newton, block-diagonal G, 5% subset", "Newton, full G, 20% subset",
                         "SGD, eta = 0.05", "SGD, eta = 1000"}
    assert rows["SGD, eta = 1000"][2] == "2"  # both seeds diverged
    assert rows["SGD, eta = 0.05"][2] == "0"
    assert rows["Newton, defaults (full G, 5% subset)"][6] == "2 it"
    assert (tmp_path / "accuracy-vs-time.png").stat().st_size > 10_000
    assert len(list((tmp_path / "runs" / "digits").glob("*.jsonl"))) == 10
