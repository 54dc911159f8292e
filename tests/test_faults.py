"""The fault table of docs/usage.md, a test per row: a hostile user's inputs and
accidents end with one message and a documented status, within seconds, and
destroy nothing (devices, links, earlier outputs)."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import mpiexec_path, read_log, run_dnewton, run_environment, without_timings
from shared_runs import SharedRuns

TIMEOUT = 60
SMALL = ["train", "digits", "--hidden", "8", "--iterations", "2", "--quiet"]


def one_message(proc, status, text):
    """The run ended with `status` on every rank and exactly one message containing
    `text`."""
    assert proc.returncode == status, proc.stderr
    assert set(getattr(proc, "statuses", [status])) == {status}, proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def make_device(path):
    """A character device of our own (a copy of /dev/null's numbers), so that a
    failing test can replace nothing the machine needs; None if this user cannot."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        return None
    return path


PLACES = [
    ("--log", "{tmp}", "cannot write the log"),
    ("--model", "{tmp}", "is a directory"),
    ("--log", "/proc/dnewton.jsonl", "cannot write the log"),
    ("--model", "/proc/dnewton.npz", "cannot write in /proc"),
    ("--checkpoint", "/proc/dnewton", "cannot create it"),
]
EDGES = [
    (["--seed", "-1"], 2, "--seed must be a whole number >= 0"),
    (["-C", "inf"], 2, "-C must be a positive number"),
    (["-C", "nan"], 2, "-C must be a positive number"),
    (["-C", "1e-300"], 3, "and is -C sensible?"),
    (["--lambda", "inf"], 2, "--lambda must be >= 0"),
    (["--lambda=-1e-300"], 2, "--lambda must be >= 0"),
]
# (float32's range ends near 3e38: a damping of 1e300 makes sense in float64 only)
FAR_ENDS = [["-C", "1e300"], ["--lambda", "1e300", "--dtype", "float64"],
            ["--seed", str(2**64)], ["--seed", "0"]]
# A flipped byte in the zip's own bookkeeping (a timestamp, say) changes nothing
# and may pass; one in an array's bytes must be caught (the CRC of every member).
OFFSETS = [None, 10, 100, 300, 1000, 2000, 3000, -40]


def damaged(source, destination, offset):
    data = bytearray(source.read_bytes())
    if offset is None:
        data = data[: len(data) // 2]  # truncated
    else:
        data[offset if offset >= 0 else len(data) + offset] ^= 0xFF
    destination.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs of this module's tests, in shared jobs (shared_runs.py): a model and
    a checkpoint saved on one rank, then every run on two ranks."""
    folder = tmp_path_factory.mktemp("faults")
    runs = SharedRuns(folder, TIMEOUT)
    saved = folder / "saved"
    saved.mkdir()
    runs.add("saved", 1, [*SMALL, "--model", saved / "model.npz", "--checkpoint", saved / "ck"])
    runs.run()
    runs.checked("saved")

    for option in ("--model", "--checkpoint"):
        place = folder / f"device{option}"
        place.mkdir()
        device = make_device(place / "device")
        if device is not None:
            target = device if option == "--model" else place
            if option == "--checkpoint":  # the checkpoint file inside the folder is the device
                (place / "checkpoint.npz").symlink_to(device)
            runs.add(f"device {option}", 2, [*SMALL, option, target])
    real, link = folder / "real.npz", folder / "link.npz"
    real.write_text("old")
    link.symlink_to(real)
    runs.add("link", 2, [*SMALL, "--model", link])
    runs.add("/dev/full", 2, [*SMALL, "--iterations", "50", "--log", "/dev/full",
                              "--model", folder / "full-model.npz"])
    for i, (option, path, _) in enumerate(PLACES):
        runs.add(f"place {i}", 2, [*SMALL, option, path.format(tmp=folder)])
    runs.add("too big", 2, ["train", "digits", "--hidden", "100000,100000", "--iterations", "1"])
    for i, (args, _, _) in enumerate(EDGES):
        runs.add(f"edge {i}", 2, [*SMALL, *args])
    for i, args in enumerate(FAR_ENDS):
        runs.add(f"far end {i}", 2, [*SMALL, *args, "--log", folder / f"far{i}.jsonl"])

    runs.add("intact predict", 2, ["predict", saved / "model.npz", "digits"])
    runs.add("intact resume", 2, [*SMALL, "--iterations", "4", "--resume", saved / "ck",
                                  "--log", folder / "intact.jsonl"])
    for offset in OFFSETS:
        case = folder / f"damaged{offset}"
        case.mkdir()
        damaged(saved / "model.npz", case / "model.npz", offset)
        runs.add(f"damaged model {offset}", 2, ["predict", case / "model.npz", "digits"])
        (case / "ck").mkdir()
        damaged(saved / "ck" / "checkpoint.npz", case / "ck" / "checkpoint.npz", offset)
        write_text(case / "kept.jsonl", '{"iter": 0}\n')
        runs.add(f"damaged checkpoint {offset}", 2, [*SMALL, "--iterations", "4", "--resume",
                                                     case / "ck", "--log", case / "kept.jsonl"])
    runs.add("other network", 2, [*SMALL, "--hidden", "9", "--resume", saved / "ck"])
    with np.load(saved / "model.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["widths"] = np.array([64, 10**9, 10])  # terabytes, were it believed
    np.savez(folder / "crafted.npz", **arrays)
    runs.add("crafted", 2, ["predict", folder / "crafted.npz", "digits"])

    fifo = folder / "fifo"
    os.mkfifo(fifo)
    runs.add("pipe: train", 2, [*SMALL, "--log", fifo])
    runs.add("pipe: predict", 2, ["predict", saved / "model.npz", "digits", "--output", fifo])
    damaged_gz = _damaged_gz(folder)
    for name, args in (("train", [*SMALL[:1], damaged_gz, *SMALL[2:]]),
                       ("plan", ["plan", damaged_gz, "--ranks", "2"]),
                       ("predict", ["predict", saved / "model.npz", damaged_gz])):
        runs.add(f"damaged gz: {name}", 2, args)
    big = write_text(folder / "big.svm",
                     "1 1:1e300 2:3\n2 1:-1e300 2:1\n1 1:5e299 2:2\n2 1:1 2:-1e308\n")
    runs.add("overflow", 2, ["train", big, "--hidden", "4", "--iterations", "2", "--quiet"])
    return runs.run()


def write_text(path, text):
    path.write_text(text)
    return path


@pytest.mark.mpi
@pytest.mark.parametrize("option", ["--model", "--checkpoint"])
def test_an_output_that_is_a_device_is_refused_and_kept(runs, option):
    device = runs.scratch / f"device{option}" / "device"
    if not device.exists():
        pytest.skip("cannot create a device node here (needs root)")
    one_message(runs[f"device {option}"], 2, "is a character device")
    assert stat.S_ISCHR(device.stat().st_mode)


@pytest.mark.mpi
def test_a_model_path_that_is_a_link_is_written_through(runs):
    real, link = runs.scratch / "real.npz", runs.scratch / "link.npz"
    runs.checked("link")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes()[:2] == b"PK"  # the model, a zip archive, replaced the target


@pytest.mark.mpi
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_that_cannot_be_written_ends_the_run_with_one_message(runs):
    one_message(runs["/dev/full"], 2, "/dev/full: cannot write the log (No space left on device)")
    assert stat.S_ISCHR(Path("/dev/full").stat().st_mode)
    # the run stopped, but what it trained is kept
    assert (runs.scratch / "full-model.npz").stat().st_size > 0


@pytest.mark.mpi
@pytest.mark.parametrize("place", range(len(PLACES)),
                         ids=[f"{option} {path}" for option, path, _ in PLACES])
def test_outputs_in_a_directory_or_a_place_that_cannot_be_written(runs, place):
    one_message(runs[f"place {place}"], 2, PLACES[place][2])


@pytest.mark.mpi
def test_a_network_too_big_for_memory_is_refused_before_allocating(runs):
    proc = runs["too big"]
    one_message(proc, 2, "parameters need about")
    assert "--hidden" in proc.stderr and proc.seconds < 30


@pytest.mark.mpi
@pytest.mark.parametrize("edge", range(len(EDGES)), ids=[" ".join(a) for a, _, _ in EDGES])
def test_values_at_the_edges_of_their_ranges_are_refused(runs, edge):
    _, status, message = EDGES[edge]
    one_message(runs[f"edge {edge}"], status, message)


@pytest.mark.mpi
@pytest.mark.parametrize("far_end", range(len(FAR_ENDS)), ids=[" ".join(a) for a in FAR_ENDS])
def test_values_at_the_far_ends_that_make_sense_train(runs, far_end):
    runs.checked(f"far end {far_end}")
    assert all(np.isfinite(r["f"]) for r in read_log(runs.scratch / f"far{far_end}.jsonl"))


@pytest.mark.mpi
@pytest.mark.parametrize("offset", OFFSETS)
def test_a_damaged_model_file_is_refused_or_harmless(runs, offset):
    intact = runs.checked("intact predict")
    proc = runs[f"damaged model {offset}"]
    if proc.returncode == 0:
        assert proc.stdout == intact.stdout
    else:
        one_message(proc, 2, "not a readable model file")


@pytest.mark.mpi
@pytest.mark.parametrize("offset", OFFSETS)
def test_a_damaged_checkpoint_is_refused_or_harmless_and_the_log_kept(runs, offset):
    runs.checked("intact resume")
    intact = runs.scratch / "intact.jsonl"
    log = runs.scratch / f"damaged{offset}" / "kept.jsonl"
    proc = runs[f"damaged checkpoint {offset}"]
    if proc.returncode == 0:
        assert without_timings(read_log(log)) == without_timings(read_log(intact))
    else:
        one_message(proc, 2, "not a readable checkpoint")
        assert log.read_text() == '{"iter": 0}\n'


@pytest.mark.mpi
def test_a_checkpoint_of_another_network_is_refused(runs):
    one_message(runs["other network"], 2, "the checkpoint was made with widths")


@pytest.mark.mpi
def test_a_crafted_model_with_enormous_widths_is_refused_before_allocating(runs):
    proc = runs["crafted"]
    one_message(proc, 2, "array shapes do not match the widths")
    assert proc.seconds < 30


@pytest.mark.mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks in /proc")
def test_a_rank_stopped_for_a_while_and_continued_changes_nothing(tmp_path):
    from test_stopping import _rank_pids

    args = ["train", "digits", "--hidden", "32", "--feature-scale", "16", "--center",
            "--iterations", "300", "--quiet", "--seed", "2"]
    whole = tmp_path / "whole.jsonl"
    run_dnewton(2, [*args, "--log", whole], TIMEOUT)
    log = tmp_path / "run.jsonl"
    job = subprocess.Popen([mpiexec_path(), "-n", "2", sys.executable, "-m", "dnewton", *args,
                            "--log", str(log)], env=run_environment(TIMEOUT),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (log.exists() and len(log.read_text().splitlines()) > 5):
        assert job.poll() is None, "the run ended too soon"
        time.sleep(0.02)
    rank = _rank_pids(job)[1]
    os.kill(rank, signal.SIGSTOP)
    time.sleep(3)
    os.kill(rank, signal.SIGCONT)
    job.communicate(timeout=TIMEOUT)
    assert job.returncode == 0
    assert without_timings(read_log(log)) == without_timings(read_log(whole))


# -- outputs that are not regular files ---------------------------------------------------


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _read_in_background(path):
    """Open `path` for reading in a thread (as `cat fifo` would); returns what it read."""
    import threading

    got = []
    reader = threading.Thread(target=lambda: got.append(Path(path).read_text()), daemon=True)
    reader.start()
    return reader, got


@pytest.mark.parametrize("what", ["log", "labels", "machine file"])
def test_a_named_pipe_nobody_reads_is_refused_at_once(fifo, what):
    from dnewton.app.monitor import Monitor
    from dnewton.errors import InputError
    from dnewton.io.text_output import TextOutput

    began = time.monotonic()
    with pytest.raises(InputError, match="a named pipe that no process reads"):
        if what == "log":
            Monitor(0).open_log(str(fifo))
        else:
            TextOutput(fifo, what)
    assert time.monotonic() - began < 2


def test_a_named_pipe_that_a_process_reads_works(fifo):
    from dnewton.io.text_output import TextOutput

    reader, got = _read_in_background(fifo)
    deadline = time.monotonic() + 10
    while True:  # the reader's open may not have happened yet
        try:
            output = TextOutput(fifo, "labels")
            break
        except Exception:  # noqa: BLE001 -- until the reader is there
            assert time.monotonic() < deadline
            time.sleep(0.01)
    output.write("1\n2\n")
    reader.join(10)
    assert got == ["1\n2\n"]


@pytest.mark.mpi
def test_train_and_predict_outputs_on_a_pipe_nobody_reads_end_at_once(runs):
    for key in ("pipe: train", "pipe: predict"):
        one_message(runs[key], 2, "a named pipe that no process reads")
        assert runs[key].seconds < TIMEOUT


# -- tracebacks that became messages ------------------------------------------------------


def _damaged_gz(tmp_path):
    import gzip

    text = "".join(f"{i % 2} 1:{i} 3:{i / 3:.5f}\n" for i in range(400)).encode()
    data = bytearray(gzip.compress(text))
    data[len(data) // 2] ^= 0xFF  # inside the deflate stream: zlib.error, not OSError
    path = tmp_path / "damaged.svm.gz"
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_gz_is_one_input_error(tmp_path):
    from dnewton.errors import InputError
    from dnewton.io.data import read_dataset

    with pytest.raises(InputError, match="damaged.svm.gz: cannot be read"):
        read_dataset(_damaged_gz(tmp_path))


@pytest.mark.parametrize("fraction", [0.999, 0.995])
def test_a_holdout_that_leaves_the_fit_without_every_class_is_refused(fraction):
    from dnewton.app.regularization import holdout_split
    from dnewton.errors import InputError
    from dnewton.io.data import read_dataset

    y = read_dataset("digits")[0].y
    with pytest.raises(InputError, match="fewer than the 10 classes") as caught:
        holdout_split(y, fraction, 0)
    assert caught.value.render(lambda p: "--" + p).endswith("give a smaller --holdout")
    fit, held = holdout_split(y, 0.99, 0)  # 14 left to fit: every class on both sides
    assert len(np.unique(y[fit])) == len(np.unique(y[held])) == 10


@pytest.mark.mpi
def test_damaged_gz_and_overflowing_data_end_in_messages_not_tracebacks(runs):
    for name in ("train", "plan", "predict"):
        one_message(runs[f"damaged gz: {name}"], 2, "cannot be read")
    proc = runs["overflow"]
    one_message(proc, 3, "the starting point has f")
    assert "RuntimeWarning" not in proc.stderr and "dnewton: warning" in proc.stderr
    assert all(line.startswith("dnewton: ") for line in proc.stderr.splitlines()), proc.stderr


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [-5, 0])
def test_blas_threads_below_one_are_refused_by_name(threads):
    from dnewton.app.training import train
    from dnewton.errors import ParameterError
    from dnewton.io.data import read_dataset

    with pytest.raises(ParameterError, match="blas_threads must be a whole number >= 1") as e:
        train(read_dataset("digits")[0], blas_threads=threads)
    assert e.value.agreed  # raised alike on every rank


def test_the_library_injects_no_faults_from_the_environment(monkeypatch):
    """Only ``dnewton train`` reads the fault variables: `train` ignores them unless
    handed the `Faults` they ask for."""
    from dnewton.app.training import train
    from dnewton.errors import ParameterError
    from dnewton.fault_injection import MEMORY_LIMIT, Faults
    from dnewton.io.data import read_dataset
    from dnewton.solvers.newton import NewtonOptions

    monkeypatch.setenv(MEMORY_LIMIT, "10000")  # far too little for digits
    raw, options = read_dataset("digits")[0], NewtonOptions(iterations=1)
    assert train(raw, options=options).iterations == 1
    with pytest.raises(ParameterError, match="more than the 9.8 KiB available"):
        train(raw, options=options, faults=Faults.from_environment())


def test_the_time_left_that_squeue_prints_for_a_job_without_a_limit_is_accepted():
    from dnewton.app.cli import build_parser

    args = build_parser().parse_args(["train", "digits", "--time-limit", "UNLIMITED"])
    assert args.time_limit is None
