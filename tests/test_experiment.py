"""bench/experiment.py end to end on a tiny budget: it runs every method, counts a
diverged SGD run as such, and writes the report and the figure; and its pieces:
the runs --methods names, and -C auto's path counted in a run's time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_bench, mpiexec_path

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench

ROOT = Path(__file__).resolve().parents[1]


def load_experiment():
    return load_bench("experiment")


def test_methods_expands_the_families_in_order():
    experiment = load_experiment()
    found = experiment.methods(["mlp-lbfgs", "adam", "newton-auto", "sgd"], [0.1],
                               [0.0003, 0.001], iterations=7, epochs=3, batch=64,
                               momentum=0.5)
    assert [m.key for m in found] == ["mlp-lbfgs", "adam-0.0003", "adam-0.001",
                                      "newton-auto", "sgd-0.1"]
    adam = found[2].options
    assert adam[adam.index("--solver") + 1] == "adam"
    assert adam[adam.index("--learning-rate") + 1] == "0.001"
    assert "--momentum" not in adam and adam[adam.index("--epochs") + 1] == "3"
    assert found[3].options == ["--iterations", "7", "-C", "auto"]
    assert [m.unit for m in found] == ["it", "ep", "ep", "it", "ep"]
    assert experiment.methods(["mlp-adam"], [], [], 1, 1, 1, 0)[0].unit == "ep"
    with pytest.raises(SystemExit, match="unknown method 'lbfgs'"):
        experiment.methods(["lbfgs"], [], [], 1, 1, 1, 0)
    assert "fashion" in experiment.datasets(Path("/nowhere"), Path("/tmp/out"))


def test_auto_C_path_counts_in_the_time():
    experiment = load_experiment()
    nothing = {"forward": 0}
    path = [{"C": c, "holdout_accuracy": a, "f": 1.0, "iterations": 4, "seconds": 1.5}
            for c, a in ((10.0, 0.5), (1.0, 0.8), (0.1, 0.8))]
    records = [{"iter": 0, "f": 2.0, "time": 0.1, "test_accuracy": 0.1, "bytes": nothing,
                "regularization_path": path},
               {"iter": 1, "f": 1.0, "time": 0.6, "test_accuracy": 0.7,
                "bytes": {"forward": 2**20, "replicas": 2**20, "evaluation": 2**20}}]
    outcome = experiment.Outcome.from_log(records, 0)
    assert outcome.curve[0] == pytest.approx([4.6, 5.1]) and outcome.time == pytest.approx(5.1)
    assert outcome.path_steps == 12 and outcome.C == 0.1  # a tie goes to the smaller C
    assert outcome.mib == 2  # training phases, replicas included; not the test scoring


@pytest.mark.mpi
def test_experiment_writes_the_report(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    if mpiexec_path() is None:
        pytest.skip("no mpiexec found")
    command = [sys.executable, str(ROOT / "bench" / "experiment.py"), "--datasets", "digits",
               "--seeds", "2", "--ranks", "2", "--hidden", "8", "--rates", "0.05,1000",
               "--adam-rates", "0.01", "--methods",
               "newton,newton-diagonal,newton-gn20,sgd,adam,mlp-adam",
               "--iterations", "2", "--epochs", "2", "--mlp-max-iter", "2",
               "--out", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "python bench/experiment.py --datasets digits" in report
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
            for line in report.splitlines() if line.startswith("| ") and " | 2 | " in line}
    assert set(rows) == {"Newton, defaults (full G, 5% subset)",
                         "Newton, block-diagonal G, 5% subset", "Newton, full G, 20% subset",
                         "SGD, eta = 0.05", "SGD, eta = 1000", "Adam, eta = 0.01",
                         "scikit-learn MLPClassifier, adam"}
    assert rows["SGD, eta = 1000"][2] == "2"  # both seeds diverged
    assert rows["SGD, eta = 0.05"][2] == "0"
    assert rows["Newton, defaults (full G, 5% subset)"][6] == "2 it"
    assert rows["Adam, eta = 0.01"][6] == "2 ep"
    mlp = rows["scikit-learn MLPClassifier, adam"]
    assert mlp[4].endswith("(MLP loss)") and mlp[6] == "2 ep" and mlp[7] == "- |"
    assert (tmp_path / "accuracy-vs-time.png").stat().st_size > 10_000
    assert len(list((tmp_path / "runs" / "digits").glob("*.jsonl"))) == 12
    results = sorted((tmp_path / "runs" / "digits").glob("mlp-adam-seed*.json"))
    assert len(results) == 2 and 0 < json.loads(results[0].read_text())["test_accuracy"] <= 1

    # --resume runs nothing again: the MLP results are kept like the logs.
    stamps = [path.stat().st_mtime_ns for path in results]
    proc = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [path.stat().st_mtime_ns for path in results] == stamps
