"""Checkpoints: a run killed at any moment resumes to the log and the iterates of the
run that was never interrupted, on the same layout or another.

The kills use the fault injection of `dnewton.fault_injection`: rank 0 SIGKILLs
itself right after writing checkpoint k, or between writing its temporary file
and the rename; mpiexec then ends the other ranks.
"""

import json
import os

import numpy as np
import pytest
from helpers import read_log, run_dnewton, without_timings
from mpi4py import MPI
from shared_runs import SharedRuns

from dnewton.app.problem import ModelConfig
from dnewton.fault_injection import KILL_AFTER, KILL_IN_WRITE
from dnewton.io.checkpoint import NAME, Checkpoint

TIMEOUT = 120
ITERATIONS = 6
RUN = ["train", "digits", "--hidden", "16,12", "--iterations", str(ITERATIONS),
       "--feature-scale", "16", "--center", "--quiet", "--seed", "7", "--dtype", "float64"]


LAYOUTS = [(1, "1,1,1,1"), (3, "2,1,1,1"), (4, "1,2,2,1")]
CHANGES = [
    (["--hidden", "16,11"], "widths = [64, 16, 12, 10], this run has [64, 16, 11, 10]"),
    (["--seed", "8"], "seed = 7, this run has 8"),
    (["-C", "0.1"], f"C = {ModelConfig.C}, this run has 0.1"),
    (["--feature-scale", "15"], "feature_scale = 16.0, this run has 15.0"),
    (["--dtype", "float32"], "dtype = float64, this run has float32"),
]
MISSING = [
    (lambda folder: None, "checkpoint.npz: no such checkpoint"),
    (lambda folder: (folder / NAME).write_text("junk"), "not a readable checkpoint"),
]
# A checkpoint older than --gn-min was made with its default, 1; this run's default
# is 200 (the recommended floor of S).
PREDATES = {"defaults": [], "as made": ["--gn-min", "1"]}
KILLS = [1, 3]
KEPT = '{"iter": 0}\n'


def kept_log(path):
    """A log file of an earlier run, which a refused run must leave as it is."""
    path.write_text(KEPT)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module but one, in shared jobs (shared_runs.py): first the
    runs that write checkpoints (and those that rank 0 kills, each of which ends its
    job), then the runs that resume from them."""
    runs = SharedRuns(tmp_path_factory.mktemp("checkpoint"), TIMEOUT)
    tmp = runs.scratch

    def partitioned(partitions, folder, *args):
        return [*RUN, "--partitions", partitions, "--checkpoint", folder, *args]

    runs.add("uninterrupted", 2, partitioned("1,2,1,1", tmp / "whole", "--checkpoint-every",
                                             "1", "--log", tmp / "whole.jsonl"))
    for n_ranks, partitions in LAYOUTS:
        key = ("layout", n_ranks)
        runs.add(("first", *key), 2, [*RUN, "--iterations", "3", "--checkpoint", tmp / str(key),
                                      "--log", runs.log_path(key), "--partitions", "1,2,1,1"])
    for i, _ in enumerate(CHANGES):
        runs.add(("changed", i, "first"), 2, [*RUN, "--iterations", "1", "--checkpoint",
                                               tmp / f"changed{i}"])
    single = [*RUN, "--dtype", "float32"]
    runs.add("float32 whole", 2, [*single, "--log", tmp / "f32-whole.jsonl"])
    runs.add("float32 first", 2, [*single, "--iterations", "3", "--checkpoint", tmp / "f32",
                                  "--log", tmp / "f32.jsonl"])
    runs.add("float32 resumed", 2, [*single, "--checkpoint", tmp / "f32", "--resume",
                                    tmp / "f32", "--log", tmp / "f32.jsonl"])
    # Same size, classes and settings, one value changed (before the resumption):
    # only f gives it away.
    lines = [f"{i % 3} 1:{i / 40:.3f} 2:{(i * 7 % 11) / 11:.3f} 4:0.5" for i in range(40)]
    train = tmp / "train.svm"
    train.write_text("\n".join(lines) + "\n")
    small = ["train", train, "--hidden", "6", "--iterations", "2", "--quiet"]
    runs.add("other data first", 2, [*small, "--checkpoint", tmp / "other-data"])
    runs.add("model file", 2, [*RUN, "--iterations", "2", "--checkpoint", tmp / "as-model",
                               "--model", tmp / "model.npz"])
    runs.add("predates first", 2, [*RUN, "--iterations", "1", "--gn-min", "1",
                                   "--checkpoint", tmp / "predates"])
    for k in KILLS:  # each ends its job: last of the 2-rank runs
        runs.add(("killed", k), 2, partitioned("1,2,1,1", tmp / f"killed{k}",
                                               "--checkpoint-every", "1", "--log",
                                               tmp / f"killed{k}.jsonl"), {KILL_AFTER: str(k)})
    # Checkpoints at 2 and 4; the run dies after writing 4's temporary file, having
    # logged iterations 0..3.
    runs.add("killed in write", 2, partitioned("1,2,1,1", tmp / "in-write", "--checkpoint-every",
                                               "2", "--log", tmp / "in-write.jsonl"),
             {KILL_IN_WRITE: "4"})

    for n_ranks, partitions in LAYOUTS:
        key = ("layout", n_ranks)
        runs.add(key, n_ranks, [*RUN, "--partitions", partitions, "--resume", tmp / str(key),
                                "--log", runs.log_path(key)])
    for i, (change, _) in enumerate(CHANGES):
        runs.add(("changed", i), 2, [*RUN, *change, "--resume", tmp / f"changed{i}", "--log",
                                     kept_log(tmp / f"changed{i}.jsonl")])
    for i, (setup, _) in enumerate(MISSING):
        folder = tmp / f"missing{i}"
        folder.mkdir()
        setup(folder)
        runs.add(("missing", i), 3, [*RUN, "--resume", folder])
    for name in (tmp / "as-model" / NAME, tmp / "model.npz"):
        runs.add(("predict", name.name), 1, ["predict", name, "digits"])
    runs.run()

    # What the kills left, before the resumptions change it.
    runs.killed = {k: read_log(tmp / f"killed{k}.jsonl") for k in KILLS}
    runs.in_write = (read_log(tmp / "in-write.jsonl"),
                     len(list((tmp / "in-write").glob(f".{NAME}.*.tmp"))),
                     Checkpoint.load(MPI.COMM_WORLD, tmp / "in-write").iteration)
    _forget_setting(tmp / "predates" / NAME, "gn_min")
    for case, options in PREDATES.items():
        runs.add(("predates", case), 2, [*RUN, *options, "--resume", tmp / "predates"])
    lines[5] = lines[5].replace("4:0.5", "4:0.7")
    train.write_text("\n".join(lines) + "\n")
    runs.add("other data", 2, [*small, "--iterations", "4", "--resume", tmp / "other-data",
                               "--log", kept_log(tmp / "other-data.jsonl")])
    for k in KILLS:
        runs.add(("resumed", k), 2, partitioned("1,2,1,1", tmp / f"killed{k}",
                                                "--checkpoint-every", "1", "--resume",
                                                tmp / f"killed{k}", "--log",
                                                tmp / f"killed{k}.jsonl"))
    runs.add("resumed in write", 1, partitioned("1,1,1,1", tmp / "in-write", "--checkpoint-every",
                                                "2", "--resume", tmp / "in-write", "--log",
                                                tmp / "in-write.jsonl"))
    return runs.run()


def _forget_setting(path, key):
    """Make the checkpoint at `path` one written before the setting `key` existed."""
    arrays = dict(np.load(path))
    settings = json.loads(str(arrays["settings"]))
    del settings[key]
    arrays["settings"] = np.array(json.dumps(settings))
    np.savez(path, **arrays)


@pytest.fixture
def uninterrupted(runs):
    """The log of the whole run on 2 ranks, layout 1,2,1,1, checkpointing every iteration."""
    runs.checked("uninterrupted")
    return read_log(runs.scratch / "whole.jsonl")


def killed(runs, key):
    """The run `key`, which the injected fault killed."""
    proc = runs[key]
    assert proc.returncode != 0 and proc.returncode != 2, "the fault did not kill the run"
    return proc


@pytest.mark.mpi
@pytest.mark.parametrize("k", KILLS)
def test_resume_after_a_kill_reproduces_the_uninterrupted_log(runs, uninterrupted, k):
    killed(runs, ("killed", k))
    # Iteration k's record is logged after its checkpoint (it says how long the
    # checkpoint took), so the kill came before it.
    assert [r["iter"] for r in runs.killed[k]] == list(range(k))
    runs.checked(("resumed", k))
    resumed = read_log(runs.scratch / f"killed{k}.jsonl")
    assert without_timings(resumed) == without_timings(uninterrupted)
    times = [r["time"] for r in resumed]
    assert times == sorted(times)  # the run's clock goes on from the checkpoint


@pytest.mark.mpi
def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(runs, uninterrupted):
    # The resumption goes back to 2 and rewrites the log.
    killed(runs, "killed in write")
    log, temporary_files, iteration = runs.in_write
    assert temporary_files == 1
    assert [r["iter"] for r in log] == [0, 1, 2, 3]
    assert iteration == 2
    runs.checked("resumed in write")
    folder = runs.scratch / "in-write"
    resumed = read_log(runs.scratch / "in-write.jsonl")
    assert [r["iter"] for r in resumed] == list(range(ITERATIONS + 1))
    assert without_timings(resumed[:3]) == without_timings(uninterrupted[:3])
    assert not list(folder.glob(f".{NAME}.*.tmp"))  # the resumed run removed it
    assert Checkpoint.load(MPI.COMM_WORLD, folder).iteration == ITERATIONS


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, partitions", LAYOUTS)
def test_resume_on_another_layout_ends_at_the_same_f(runs, uninterrupted, n_ranks, partitions):
    runs.checked(("first", "layout", n_ranks))
    resumed = runs.log(("layout", n_ranks))
    assert [r["iter"] for r in resumed] == list(range(ITERATIONS + 1))
    np.testing.assert_allclose([r["f"] for r in resumed], [r["f"] for r in uninterrupted],
                               rtol=1e-9)
    assert [r["cg_iters"] for r in resumed] == [r["cg_iters"] for r in uninterrupted]


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(CHANGES)), ids=[m for _, m in CHANGES])
def test_resume_refuses_changed_settings(runs, case):
    runs.checked(("changed", case, "first"))
    proc = runs[("changed", case)]
    message = CHANGES[case][1]
    assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr
    assert (runs.scratch / f"changed{case}.jsonl").read_text() == KEPT


@pytest.mark.mpi
def test_a_checkpoint_older_than_a_setting_was_made_with_its_default(runs):
    runs.checked("predates first")
    refused = runs[("predates", "defaults")]
    message = "the checkpoint predates gn_min, so it was made with gn_min = 1, this run has 200"
    assert refused.returncode == 2 and refused.stderr.count(message) == 1, refused.stderr
    runs.checked(("predates", "as made"))


@pytest.mark.mpi
def test_a_float32_run_resumes_to_the_uninterrupted_log(runs):
    for key in ("float32 whole", "float32 first", "float32 resumed"):
        runs.checked(key)
    whole, log = runs.scratch / "f32-whole.jsonl", runs.scratch / "f32.jsonl"
    assert without_timings(read_log(log)) == without_timings(read_log(whole))
    assert str(np.load(runs.scratch / "f32" / NAME)["dtype"]) == "float32"


@pytest.mark.mpi
def test_resume_refuses_other_training_data(runs):
    runs.checked("other data first")
    proc = runs["other data"]
    assert proc.returncode == 2 and proc.stderr.count("is it the same data?") == 1, proc.stderr
    assert (runs.scratch / "other-data.jsonl").read_text() == KEPT


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(MISSING)), ids=[m for _, m in MISSING])
def test_resume_from_a_missing_or_damaged_checkpoint(runs, case):
    proc = runs[("missing", case)]
    message = MISSING[case][1]
    assert proc.returncode == 2 and proc.statuses == [2, 2, 2], proc.stderr
    assert proc.stderr.count(message) == 1, proc.stderr


@pytest.mark.mpi
def test_a_checkpoint_is_a_model_file(runs):
    runs.checked("model file")
    outputs = [runs.checked(("predict", name)).stdout.split("accuracy")[1]
               for name in (NAME, "model.npz")]
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
