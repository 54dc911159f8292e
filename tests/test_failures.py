"""Every bad input ends every rank with one clear message and a non-zero exit,
within a timeout, without damaging an earlier output file."""

import numpy as np
import pytest
from helpers import run_dnewton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_runs import SharedRuns

from dnewton.errors import InputError
from dnewton.fault_injection import MEMORY_LIMIT
from dnewton.io import libsvm

TIMEOUT = 60
SMALL = ["--hidden", "8", "--iterations", "2", "--quiet"]
MINI_BATCH_SMALL = ["--hidden", "8", "--epochs", "2", "--quiet"]  # with --solver sgd, adam
GOOD = "".join(f"{i % 3} 1:{i / 40:.3f} 2:{(i * 7 % 11) / 11:.3f} 4:0.5\n" for i in range(40))


def write(path, text):
    path.write_text(text)
    return path


# name -> (training file text, extra arguments or a test file text, expected message)
CASES = {
    "malformed value": (
        "0 1:0.5\n1 1:abc\n",
        [],
        "bad.svm: line 2: value of feature 1 'abc' is not a number",
    ),
    "malformed token": (
        "0 1:0.5\n\n1 2:1 7\n",
        [],
        "bad.svm: line 3: '7' is not index:value",
    ),
    "index zero": (
        "0 1:0.5\n1 0:1 2:3\n",
        [],
        "bad.svm: line 2: feature index 0 (indices start at 1)",
    ),
    "out of order": (
        "0 3:1 2:3\n",
        [],
        "bad.svm: line 1: feature index 2 after 3 (indices must increase)",
    ),
    "non-finite value": (
        "0 1:0.5\n# comment\n1 1:nan 2:1\n",
        [],
        "bad.svm: line 3: value of feature 1 nan is not finite",
    ),
    "bad label": (
        "zero 1:0.5\n",
        [],
        "bad.svm: line 1: label 'zero' is not a number",
    ),
    "empty file": (
        "",
        [],
        "bad.svm: the file holds no instances",
    ),
    "one class": (
        "1 1:0.5\n1 2:0.5\n",
        [],
        "the training set has 1 class(es); need at least 2",
    ),
    "unseen test label": (
        GOOD,
        "0 1:0.5\n7 2:0.5\n",
        "label 7 (instance 2) was never seen in training",
    ),
    "test has more features": (
        GOOD,
        "0 1:0.5\n1 9:0.5\n",
        "test.svm: line 2: feature index 9 beyond the model's 4 features",
    ),
    "training index beyond --features": (
        GOOD,
        ["--features", "3"],
        "bad.svm: line 1: feature index 4 beyond --features 3",
    ),
    "features < 1": (
        GOOD,
        ["--features", "0"],
        "--features must be >= 1",
    ),
    "partitions vs widths": (
        GOOD,
        ["--partitions", "1,9,1"],
        "layer 1 has 8 neurons and cannot be split into 9",
    ),
    "partitions vs ranks": (
        GOOD,
        ["--partitions", "1,1,1"],
        "2 weight blocks but the job has 3 ranks",
    ),
    "partitions count": (
        GOOD,
        ["--partitions", "1,1"],
        "--partitions needs 3 counts",
    ),
    "C <= 0": (
        GOOD,
        ["-C", "0"],
        "-C must be a positive number",
    ),
    "ratio > 1": (
        GOOD,
        ["--gn-ratio", "1.5"],
        "--gn-ratio must be in (0, 1]",
    ),
    "gn-size > l": (
        GOOD,
        ["--gn-size", "41"],
        "--gn-size 41 exceeds the 40 training instances",
    ),
    "sync without diagonal": (
        GOOD,
        ["--sync-fraction", "0.5"],
        "--sync-fraction applies only with --diagonal",
    ),
    "feature scale": (
        GOOD,
        ["--feature-scale", "0"],
        "--feature-scale must be positive",
    ),
    "sgd learning rate": (
        GOOD,
        ["--solver", "sgd", "--learning-rate", "-1"],
        "--learning-rate must be a positive number",
    ),
    "sgd momentum": (
        GOOD,
        ["--solver", "sgd", "--momentum", "1"],
        "--momentum must be in [0, 1)",
    ),
    "newton option with sgd": (
        GOOD,
        ["--solver", "sgd", "--diagonal"],
        "--diagonal applies to --solver newton only, not to sgd",
    ),
    "memory": (
        GOOD,
        ["--gn-size", "40", "--replicas", "1"],  # one copy of the parameters
        "more than the 0 MiB available",
    ),
}


def bad_input_run(runs, folder, case):
    """Declare the run of `case` in `folder`; returns (key, the earlier log it must keep)."""
    train_text, extra, _ = CASES[case]
    folder.mkdir()
    train = write(folder / "bad.svm", train_text)
    if isinstance(extra, str):
        extra = ["--test", write(folder / "test.svm", extra)]
    # Room for the parameters (6 KiB on the node), not for the Gauss-Newton data.
    env = {MEMORY_LIMIT: "10000"} if case == "memory" else None
    log = write(folder / "previous.jsonl", '{"iter": 0}\n')
    small = SMALL if "--solver" not in extra else MINI_BATCH_SMALL
    return runs.add(case, 3, ["train", train, *small, *extra, "--log", log], env), log


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs of this module's tests, in shared jobs (shared_runs.py)."""
    folder = tmp_path_factory.mktemp("failures")
    runs = SharedRuns(folder, TIMEOUT)
    runs.logs = {case: bad_input_run(runs, folder / f"case{i}", case)[1]
                 for i, case in enumerate(CASES)}
    features_runs(runs, folder / "features")
    train = write(folder / "good.svm", GOOD)
    runs.add("unwritable log", 2, ["train", train, *SMALL, "--log",
                                   folder / "no" / "log.jsonl"])
    huge = write(folder / "huge.svm", "".join(f"{i % 2} 1:1e200 2:{i}\n" for i in range(10)))
    runs.add("overflow", 2, ["train", huge, *SMALL])
    for name in ("a", "b"):
        runs.add(f"twice {name}", 3, ["train", train, "--hidden", "8,6", "--iterations", "4",
                                      "--quiet", "--partitions", "2,1,2,1", "--log",
                                      folder / f"{name}.jsonl"])
    runs.run()
    features_runs_after(runs, folder / "features")
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_all_ranks_with_one_message(runs, case):
    proc = runs[case]
    assert proc.returncode == 2 and proc.statuses == [2, 2, 2], proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert CASES[case][2] in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert runs.logs[case].read_text() == '{"iter": 0}\n'


def features_runs(runs, folder):
    folder.mkdir()
    train = write(folder / "train.svm", GOOD)
    wide = write(folder / "wide.svm", "0 1:0.5\n1 2:0.5 9:1\n")
    model = folder / "model.npz"
    runs.add("features: train", 3, ["train", train, *SMALL, "--features", "6", "--test", wide,
                                    "--model", model])
    runs.add("features: predict", 3, ["predict", model, wide, "--features", "6"])
    # without --features the wider file is refused, once, naming file, line and index
    runs.add("features: predict refused", 3, ["predict", model, wide])
    runs.add("features: train refused", 3, ["train", train, *SMALL, "--test", wide])


def features_runs_after(runs, folder):
    runs.add("features: other count", 2, ["predict", folder / "model.npz", folder / "wide.svm",
                                          "--features", "5"])


@pytest.mark.mpi
def test_explicit_features_cut_test_and_prediction_files_with_one_warning(runs):
    warning = "wide.svm: feature indices up to 9; only the first 6 are used (--features 6)"
    for key in ("features: train", "features: predict"):
        proc = runs.checked(key)
        assert proc.stderr.count("warning") == 1 and warning in proc.stderr, proc.stderr
    assert np.load(runs.scratch / "features" / "model.npz")["widths"][0] == 6
    assert runs["features: predict"].stdout.count("2 instances, accuracy") == 1
    for key in ("features: predict refused", "features: train refused"):
        proc = runs[key]
        assert proc.returncode == 2 and proc.stderr.count("dnewton: error") == 1, proc.stderr
        assert "wide.svm: line 2: feature index 9 beyond the model's" in proc.stderr
    proc = runs["features: other count"]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("--features 5 differs from the model's 6 features") == 1


@pytest.mark.mpi
def test_missing_and_directory_inputs(tmp_path):
    for path, message in [(tmp_path / "nope.svm", "nope.svm: no such file"),
                          (tmp_path, "is a directory, not a data file")]:
        proc = run_dnewton(2, ["train", path, *SMALL], TIMEOUT, check=False)
        assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr


@pytest.mark.mpi
def test_unwritable_log(runs):
    proc = runs["unwritable log"]
    assert proc.returncode == 2 and proc.stderr.count("cannot write the log") == 1, proc.stderr


def test_reader_accepts_compressed_and_pads_features(tmp_path):
    import gzip

    path = tmp_path / "good.svm.gz"
    with gzip.open(path, "wt") as f:
        f.write(GOOD)
    X, y, _ = libsvm.load(path, n_features=6)
    assert X.shape == (40, 6) and len(y) == 40


lines = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.text(alphabet="0123456789 :.-+eE#\tnaif\n", max_size=30).map(str.encode),
        st.builds(
            lambda label, pairs: " ".join([label, *(f"{i}:{v}" for i, v in pairs)]).encode(),
            st.sampled_from(["0", "1", "-1", "2.5", "x", "nan"]),
            st.lists(st.tuples(st.integers(-2, 9),
                               st.sampled_from(["1", "0.5", "-3e2", "inf", "", "a"])),
                     max_size=4),
        ),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines)
def test_reader_loads_or_raises_input_error(tmp_path, content):
    path = tmp_path / "fuzz.svm"
    path.write_bytes(b"\n".join(content))
    try:
        X, y, _ = libsvm.load(path)
    except InputError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert X.shape[0] == len(y) > 0
        assert np.isfinite(X.data).all() and np.isfinite(y).all()


@pytest.mark.mpi
def test_overflowing_data_stops_with_a_numerical_message(runs):
    proc = runs["overflow"]
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("the starting point has f = ") == 1, proc.stderr


CRASH = """
import sys
from mpi4py import MPI
from dnewton.errors import run_main

def main(argv):
    if MPI.COMM_WORLD.rank == 1:
        raise RuntimeError("boom on rank 1")
    MPI.COMM_WORLD.Barrier()  # the other ranks wait here for rank 1, forever

sys.exit(run_main(main))
"""


@pytest.mark.mpi
def test_uncaught_exception_on_one_rank_aborts_the_job(tmp_path):
    import subprocess
    import sys

    from helpers import mpiexec_path

    script = write(tmp_path / "crash.py", CRASH)
    proc = subprocess.run([mpiexec_path(), "-n", "3", sys.executable, str(script)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert "internal error on rank 1" in proc.stderr and "boom on rank 1" in proc.stderr


@pytest.mark.mpi
def test_same_command_twice_gives_identical_logs(runs):
    import json

    from helpers import without_timings

    for name in ("a", "b"):
        runs.checked(f"twice {name}")
    logs = [(runs.scratch / f"{name}.jsonl").read_text() for name in ("a", "b")]
    records = [[json.loads(line) for line in log.splitlines()] for log in logs]
    assert without_timings(records[0]) == without_timings(records[1])
    assert logs[0] != logs[1]  # the timings, which do differ


def _rank_pids(marker):
    """PIDs of the Python ranks whose command line mentions `marker`."""
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        launcher = any(b"mpiexec" in a or b"proxy" in a for a in argv)
        if not launcher and any(marker.encode() in a for a in argv) and b"dnewton" in argv:
            pids.append(int(proc.name))
    return sorted(pids)


@pytest.mark.mpi
@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="needs /proc")
def test_killed_rank_ends_the_job_and_resume_matches_the_uninterrupted_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import mpiexec_path, read_log

    run = ["train", "digits", "--hidden", "64,48", "--feature-scale", "16", "--center",
           "--iterations", "40", "--quiet", "--seed", "4", "--dtype", "float64"]
    whole = tmp_path / "whole.jsonl"
    run_dnewton(3, [*run, "--log", whole], TIMEOUT)

    killed_log, ckpt = tmp_path / "killed.jsonl", tmp_path / "ckpt"
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(TIMEOUT), OPENBLAS_NUM_THREADS="1")
    job = subprocess.Popen(
        [mpiexec_path(), "-n", "3", sys.executable, "-m", "dnewton", *run,
         "--checkpoint", str(ckpt), "--checkpoint-every", "3", "--log", str(killed_log)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while not (killed_log.exists() and len(killed_log.read_text().splitlines()) > 8):
        assert job.poll() is None and time.monotonic() < deadline, "the run ended too soon"
        time.sleep(0.05)
    os.kill(_rank_pids(str(killed_log))[1], signal.SIGKILL)
    job.communicate(timeout=30)  # the whole job must end, not hang
    assert job.returncode != 0
    assert len(read_log(killed_log)) < 41

    # Resume on another rank count: the same end as the run that was never killed.
    resumed = tmp_path / "resumed.jsonl"
    run_dnewton(2, [*run, "--resume", ckpt, "--log", resumed], TIMEOUT)
    want, got = read_log(whole), read_log(resumed)
    assert [r["iter"] for r in got] == [r["iter"] for r in want]
    np.testing.assert_allclose([r["f"] for r in got], [r["f"] for r in want], rtol=1e-9)


def test_read_dataset_pads_refuses_or_cuts_to_n_features(tmp_path):
    from dnewton.io.data import read_dataset

    path = tmp_path / "five.npz"
    np.savez(path, X=np.arange(10.0).reshape(2, 5), y=np.array([0.0, 1.0]))
    with pytest.raises(InputError, match="five.npz: 5 features, more than features 3"):
        read_dataset(path, 3, limit="{features} 3")
    cut, _ = read_dataset(path, 3, cut=True)
    assert cut.X.shape == (2, 3) and cut.cut_from == 5
    np.testing.assert_array_equal(cut.X, [[0, 1, 2], [5, 6, 7]])
    train, test = read_dataset("digits", 70)
    assert train.n_features == test.n_features == 70 and not train.X[:, 64:].any()
