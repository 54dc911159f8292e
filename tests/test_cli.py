"""The command line: its help, and a run that trains and logs what SPEC section 5 asks."""

import numpy as np
import pytest
from conftest import read_log, run_dnewton

SMALL = ["--hidden", "8", "--iterations", "2", "--quiet"]


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def tiny_libsvm(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        feats = " ".join(f"{j + 1}:{rng.uniform(0, 1):.4f}" for j in range(6))
        lines.append(f"{i % 3} {feats}")
    return write(tmp_path / "tiny.svm", "\n".join(lines) + "\n")


def test_help_answers():
    proc = run_dnewton(1, ["train", "--help"])
    for option in ("--partitions", "--gn-ratio", "--feature-scale", "--log", "--lambda"):
        assert option in proc.stdout


@pytest.mark.mpi
def test_trains_a_libsvm_file_on_two_ranks(tiny_libsvm, tmp_path):
    log = tmp_path / "log.jsonl"
    proc = run_dnewton(2, ["train", tiny_libsvm, "--test", tiny_libsvm, *SMALL, "--log", log])
    assert proc.stdout == ""  # --quiet
    records = read_log(log)
    assert [r["iter"] for r in records] == [0, 1, 2]
    for key in ("f", "gnorm", "cg_iters", "alpha", "lambda", "time", "test_accuracy", "bytes"):
        assert key in records[-1]
    assert set(records[-1]["bytes"]) >= {"forward", "backward", "gauss_newton"}
    assert 0 <= records[-1]["test_accuracy"] <= 1
