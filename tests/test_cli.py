"""The command line under mpiexec: a bad input ends every rank with one clear
message and a non-zero exit, quickly; a good one trains."""

import numpy as np
import pytest
from conftest import read_log, run_dnewton

TIMEOUT = 60
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


def assert_fails_once(proc, message, status=2):
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.count(message) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


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


@pytest.mark.mpi
def test_missing_file(tmp_path):
    proc = run_dnewton(3, ["train", tmp_path / "nope.svm", *SMALL], TIMEOUT, check=False)
    assert_fails_once(proc, "nope.svm: no such file")


@pytest.mark.mpi
def test_layout_that_does_not_fit_the_rank_count(tiny_libsvm):
    proc = run_dnewton(4, ["train", tiny_libsvm, *SMALL, "--partitions", "1,1,1"],
                       TIMEOUT, check=False)
    assert_fails_once(proc, "2 weight blocks but the job has 4 ranks")


@pytest.mark.mpi
def test_non_finite_feature_names_the_instance(tmp_path):
    bad = write(tmp_path / "bad.svm", "0 1:0.5 2:1\n1 1:nan 2:0.25\n0 2:1\n")
    proc = run_dnewton(2, ["train", bad, *SMALL], TIMEOUT, check=False)
    assert_fails_once(proc, "instance 2 has a non-finite feature value")


@pytest.mark.mpi
def test_test_label_never_seen_in_training(tiny_libsvm, tmp_path):
    test = write(tmp_path / "test.svm", "0 1:0.5\n7 2:0.5\n")
    # Only the output ranks read labels: the others must learn of the error too.
    proc = run_dnewton(3, ["train", tiny_libsvm, "--test", test, *SMALL,
                           "--partitions", "3,1,1"], TIMEOUT, check=False)
    assert_fails_once(proc, "label 7 (instance 2) was never seen in training")


@pytest.mark.mpi
def test_nonsensical_hyperparameter(tiny_libsvm):
    proc = run_dnewton(2, ["train", tiny_libsvm, *SMALL, "-C", "-1"], TIMEOUT, check=False)
    assert_fails_once(proc, "-C must be a positive number")
