"""Checkpoints: a run killed at any moment resumes to the log and the iterates of the
run that was never interrupted, on the same layout or another.

The kills use the fault injection of `dnewton.fault_injection`: rank 0 SIGKILLs
itself right after writing checkpoint k, or between writing its temporary file
and the rename; mpiexec then ends the other ranks.
"""

import os

import numpy as np
import pytest
from helpers import read_log, run_dnewton, without_timings
from mpi4py import MPI

from dnewton.app.problem import ModelConfig
from dnewton.fault_injection import KILL_AFTER, KILL_IN_WRITE
from dnewton.io.checkpoint import NAME, Checkpoint

TIMEOUT = 120
ITERATIONS = 6
RUN = ["train", "digits", "--hidden", "16,12", "--iterations", str(ITERATIONS),
       "--feature-scale", "16", "--center", "--quiet", "--seed", "7"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The log of the whole run on 2 ranks, layout 1,2,1,1, checkpointing every iteration."""
    folder = tmp_path_factory.mktemp("whole")
    log = folder / "run.jsonl"
    run_dnewton(2, [*RUN, "--partitions", "1,2,1,1", "--checkpoint", folder / "ck",
                    "--checkpoint-every", "1", "--log", log], TIMEOUT)
    return read_log(log)


def killed_run(tmp_path, variable, k, every, n_ranks=2, partitions="1,2,1,1"):
    """Run until the injected fault kills rank 0 at checkpoint k; returns (folder, log)."""
    folder, log = tmp_path / "ck", tmp_path / "run.jsonl"
    proc = run_dnewton(n_ranks, [*RUN, "--partitions", partitions, "--checkpoint", folder,
                                 "--checkpoint-every", str(every), "--log", log],
                       TIMEOUT, check=False, env={variable: str(k)})
    assert proc.returncode != 0, "the fault did not kill the run"
    return folder, log


@pytest.mark.mpi
@pytest.mark.parametrize("k", [1, 3])
def test_resume_after_a_kill_reproduces_the_uninterrupted_log(uninterrupted, tmp_path, k):
    folder, log = killed_run(tmp_path, KILL_AFTER, k, every=1)
    # Iteration k's record is logged after its checkpoint (it says how long the
    # checkpoint took), so the kill came before it.
    assert [r["iter"] for r in read_log(log)] == list(range(k))
    run_dnewton(2, [*RUN, "--partitions", "1,2,1,1", "--checkpoint", folder,
                    "--checkpoint-every", "1", "--resume", folder, "--log", log], TIMEOUT)
    resumed = read_log(log)
    assert without_timings(resumed) == without_timings(uninterrupted)
    times = [r["time"] for r in resumed]
    assert times == sorted(times)  # the run's clock goes on from the checkpoint


@pytest.mark.mpi
def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(uninterrupted, tmp_path):
    # Checkpoints at 2 and 4; the run dies after writing 4's temporary file, having
    # logged iterations 0..3. The resumption goes back to 2 and rewrites the log.
    folder, log = killed_run(tmp_path, KILL_IN_WRITE, 4, every=2)
    assert len(list(folder.glob(f".{NAME}.*.tmp"))) == 1
    assert [r["iter"] for r in read_log(log)] == [0, 1, 2, 3]
    checkpoint = Checkpoint.load(MPI.COMM_WORLD, folder)
    assert checkpoint.iteration == 2
    proc = run_dnewton(1, [*RUN, "--partitions", "1,1,1,1", "--checkpoint", folder,
                           "--checkpoint-every", "2", "--resume", folder, "--log", log],
                       TIMEOUT)
    assert proc.returncode == 0
    resumed = read_log(log)
    assert [r["iter"] for r in resumed] == list(range(ITERATIONS + 1))
    assert without_timings(resumed[:3]) == without_timings(uninterrupted[:3])
    assert not list(folder.glob(f".{NAME}.*.tmp"))  # the resumed run removed it
    assert Checkpoint.load(MPI.COMM_WORLD, folder).iteration == ITERATIONS


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, partitions", [(1, "1,1,1,1"), (3, "2,1,1,1"),
                                                 (4, "1,2,2,1")])
def test_resume_on_another_layout_ends_at_the_same_f(uninterrupted, tmp_path, n_ranks,
                                                     partitions):
    folder, log = tmp_path / "ck", tmp_path / "run.jsonl"
    first = [*RUN, "--iterations", "3", "--checkpoint", folder, "--log", log]
    run_dnewton(2, [*first, "--partitions", "1,2,1,1"], TIMEOUT)
    run_dnewton(n_ranks, [*RUN, "--partitions", partitions, "--resume", folder, "--log", log],
                TIMEOUT)
    resumed = read_log(log)
    assert [r["iter"] for r in resumed] == list(range(ITERATIONS + 1))
    np.testing.assert_allclose([r["f"] for r in resumed], [r["f"] for r in uninterrupted],
                               rtol=1e-9)
    assert [r["cg_iters"] for r in resumed] == [r["cg_iters"] for r in uninterrupted]


@pytest.mark.mpi
@pytest.mark.parametrize("change, message", [
    (["--hidden", "16,11"], "widths = [64, 16, 12, 10], this run has [64, 16, 11, 10]"),
    (["--seed", "8"], "seed = 7, this run has 8"),
    (["-C", "0.1"], f"C = {ModelConfig.C}, this run has 0.1"),
    (["--feature-scale", "15"], "feature_scale = 16.0, this run has 15.0"),
    (["--dtype", "float32"], "dtype = float64, this run has float32"),
])
def test_resume_refuses_changed_settings(tmp_path, change, message):
    folder = tmp_path / "ck"
    run_dnewton(2, [*RUN, "--iterations", "1", "--checkpoint", folder], TIMEOUT)
    log = tmp_path / "kept.jsonl"
    log.write_text('{"iter": 0}\n')
    proc = run_dnewton(2, [*RUN, *change, "--resume", folder, "--log", log], TIMEOUT,
                       check=False)
    assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr
    assert log.read_text() == '{"iter": 0}\n'


@pytest.mark.mpi
def test_a_float32_run_resumes_to_the_uninterrupted_log(tmp_path):
    single = [*RUN, "--dtype", "float32"]
    whole, log = tmp_path / "whole.jsonl", tmp_path / "run.jsonl"
    run_dnewton(2, [*single, "--log", whole], TIMEOUT)
    folder = tmp_path / "ck"
    run_dnewton(2, [*single, "--iterations", "3", "--checkpoint", folder, "--log", log],
                TIMEOUT)
    run_dnewton(2, [*single, "--checkpoint", folder, "--resume", folder, "--log", log],
                TIMEOUT)
    assert without_timings(read_log(log)) == without_timings(read_log(whole))
    assert str(np.load(folder / NAME)["dtype"]) == "float32"


@pytest.mark.mpi
def test_resume_refuses_other_training_data(tmp_path):
    # Same size, classes and settings, one value changed: only f gives it away.
    lines = [f"{i % 3} 1:{i / 40:.3f} 2:{(i * 7 % 11) / 11:.3f} 4:0.5" for i in range(40)]
    train = tmp_path / "train.svm"
    train.write_text("\n".join(lines) + "\n")
    folder = tmp_path / "ck"
    small = ["train", train, "--hidden", "6", "--iterations", "2", "--quiet"]
    run_dnewton(2, [*small, "--checkpoint", folder], TIMEOUT)
    lines[5] = lines[5].replace("4:0.5", "4:0.7")
    train.write_text("\n".join(lines) + "\n")
    log = tmp_path / "kept.jsonl"
    log.write_text('{"iter": 0}\n')
    proc = run_dnewton(2, [*small, "--iterations", "4", "--resume", folder, "--log", log],
                       TIMEOUT, check=False)
    assert proc.returncode == 2 and proc.stderr.count("is it the same data?") == 1, proc.stderr
    assert log.read_text() == '{"iter": 0}\n'


@pytest.mark.mpi
@pytest.mark.parametrize("setup, message", [
    (lambda folder: None, "checkpoint.npz: no such checkpoint"),
    (lambda folder: (folder / NAME).write_text("junk"), "not a readable checkpoint"),
])
def test_resume_from_a_missing_or_damaged_checkpoint(tmp_path, setup, message):
    folder = tmp_path / "ck"
    folder.mkdir()
    setup(folder)
    proc = run_dnewton(3, [*RUN, "--resume", folder], TIMEOUT, check=False)
    assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr


@pytest.mark.mpi
def test_a_checkpoint_is_a_model_file(tmp_path):
    folder = tmp_path / "ck"
    run_dnewton(2, [*RUN, "--iterations", "2", "--checkpoint", folder,
                    "--model", tmp_path / "model.npz"], TIMEOUT)
    outputs = []
    for model in (folder / NAME, tmp_path / "model.npz"):
        proc = run_dnewton(1, ["predict", model, "digits"], TIMEOUT)
        outputs.append(proc.stdout.split("accuracy")[1])
    assert outputs[0] == outputs[1]


def test_a_checkpoint_folder_is_held_by_one_run_at_a_time(tmp_path):
    from dnewton.errors import ParameterError
    from dnewton.io.checkpoint import FolderLock

    (tmp_path / f".{NAME}.abcd1234.tmp").write_bytes(b"a run died writing this")
    first = FolderLock(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))  # the holder cleared what a dead run left
    with pytest.raises(ParameterError, match=rf"in use by another run \(process {os.getpid()}"):
        FolderLock(tmp_path)
    first.release()
    FolderLock(tmp_path).release()  # free again


def test_a_write_that_fails_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    import numpy as np

    from dnewton.errors import InputError
    from dnewton.io import model_file

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(InputError, match="No space left on device"):
        model_file.save_arrays(tmp_path / "model.npz", {"a": np.zeros(3)}, "model")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.mpi
def test_a_second_run_on_a_held_folder_is_refused_naming_the_first(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from helpers import mpiexec_path, run_environment

    folder, log = tmp_path / "ck", tmp_path / "first.jsonl"
    first = subprocess.Popen([mpiexec_path(), "-n", "1", sys.executable, "-m", "dnewton",
                              *RUN, "--iterations", "100000", "--checkpoint", folder,
                              "--log", log], env=run_environment(TIMEOUT),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (log.exists() and log.read_text()):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = run_dnewton(1, [*RUN, "--checkpoint", folder], TIMEOUT, check=False)
        assert second.returncode == 2, second.stderr
        assert f"--checkpoint {folder} is in use by another run (process" in second.stderr
        assert second.stderr.count("dnewton: error") == 1
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(TIMEOUT)
    assert first.returncode == 75
