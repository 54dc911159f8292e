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

TIMEOUT = 60
SMALL = ["train", "digits", "--hidden", "8", "--iterations", "2", "--quiet"]


def one_message(proc, status, text):
    """The run ended with `status` and exactly one message containing `text`."""
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def device(tmp_path):
    """A character device of our own (a copy of /dev/null's numbers), so that a
    failing test can replace nothing the machine needs."""
    path = tmp_path / "device"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here (needs root)")
    return path


@pytest.mark.mpi
@pytest.mark.parametrize("option", ["--model", "--checkpoint"])
def test_an_output_that_is_a_device_is_refused_and_kept(device, option):
    target = device if option == "--model" else device.parent
    if option == "--checkpoint":  # the checkpoint file inside the folder is the device
        (device.parent / "checkpoint.npz").symlink_to(device)
    proc = run_dnewton(2, [*SMALL, option, target], TIMEOUT, check=False)
    one_message(proc, 2, "is a character device")
    assert stat.S_ISCHR(device.stat().st_mode)


@pytest.mark.mpi
def test_a_model_path_that_is_a_link_is_written_through(tmp_path):
    real, link = tmp_path / "real.npz", tmp_path / "link.npz"
    real.write_text("old")
    link.symlink_to(real)
    run_dnewton(2, [*SMALL, "--model", link], TIMEOUT)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes()[:2] == b"PK"  # the model, a zip archive, replaced the target


@pytest.mark.mpi
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_that_cannot_be_written_ends_the_run_with_one_message(tmp_path):
    model = tmp_path / "model.npz"
    proc = run_dnewton(2, [*SMALL, "--iterations", "50", "--log", "/dev/full",
                           "--model", model], TIMEOUT, check=False)
    one_message(proc, 2, "/dev/full: cannot write the log (No space left on device)")
    assert stat.S_ISCHR(Path("/dev/full").stat().st_mode)
    assert model.stat().st_size > 0  # the run stopped, but what it trained is kept


@pytest.mark.mpi
@pytest.mark.parametrize("option, path, message", [
    ("--log", "{tmp}", "cannot write the log"),
    ("--model", "{tmp}", "is a directory"),
    ("--log", "/proc/dnewton.jsonl", "cannot write the log"),
    ("--model", "/proc/dnewton.npz", "cannot write in /proc"),
    ("--checkpoint", "/proc/dnewton", "cannot create it"),
])
def test_outputs_in_a_directory_or_a_place_that_cannot_be_written(tmp_path, option, path,
                                                                  message):
    proc = run_dnewton(2, [*SMALL, option, path.format(tmp=tmp_path)], TIMEOUT, check=False)
    one_message(proc, 2, message)


@pytest.mark.mpi
def test_a_network_too_big_for_memory_is_refused_before_allocating():
    began = time.monotonic()
    proc = run_dnewton(2, ["train", "digits", "--hidden", "100000,100000", "--iterations", "1"],
                       TIMEOUT, check=False)
    one_message(proc, 2, "parameters need about")
    assert "--hidden" in proc.stderr and time.monotonic() - began < 30


@pytest.mark.mpi
@pytest.mark.parametrize("args, status, message", [
    (["--seed", "-1"], 2, "--seed must be a whole number >= 0"),
    (["-C", "inf"], 2, "-C must be a positive number"),
    (["-C", "nan"], 2, "-C must be a positive number"),
    (["-C", "1e-300"], 3, "and is -C sensible?"),
    (["--lambda", "inf"], 2, "--lambda must be >= 0"),
    (["--lambda=-1e-300"], 2, "--lambda must be >= 0"),
])
def test_values_at_the_edges_of_their_ranges_are_refused(args, status, message):
    one_message(run_dnewton(2, [*SMALL, *args], TIMEOUT, check=False), status, message)


@pytest.mark.mpi
@pytest.mark.parametrize("args", [["-C", "1e300"], ["--lambda", "1e300"],
                                  ["--seed", str(2**64)], ["--seed", "0"]])
def test_values_at_the_far_ends_that_make_sense_train(tmp_path, args):
    log = tmp_path / "run.jsonl"
    run_dnewton(2, [*SMALL, *args, "--log", log], TIMEOUT)
    assert all(np.isfinite(r["f"]) for r in read_log(log))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    run_dnewton(1, [*SMALL, "--model", folder / "model.npz", "--checkpoint", folder / "ck"],
                TIMEOUT)
    return folder


def damaged(source, destination, offset):
    data = bytearray(source.read_bytes())
    if offset is None:
        data = data[: len(data) // 2]  # truncated
    else:
        data[offset if offset >= 0 else len(data) + offset] ^= 0xFF
    destination.write_bytes(bytes(data))


# A flipped byte in the zip's own bookkeeping (a timestamp, say) changes nothing
# and may pass; one in an array's bytes must be caught (the CRC of every member).
OFFSETS = [None, 10, 100, 300, 1000, 2000, 3000, -40]


@pytest.mark.mpi
@pytest.mark.parametrize("offset", OFFSETS)
def test_a_damaged_model_file_is_refused_or_harmless(saved, tmp_path, offset):
    intact = run_dnewton(2, ["predict", saved / "model.npz", "digits"], TIMEOUT)
    path = tmp_path / "model.npz"
    damaged(saved / "model.npz", path, offset)
    proc = run_dnewton(2, ["predict", path, "digits"], TIMEOUT, check=False)
    if proc.returncode == 0:
        assert proc.stdout == intact.stdout
    else:
        one_message(proc, 2, "not a readable model file")


@pytest.mark.mpi
@pytest.mark.parametrize("offset", OFFSETS)
def test_a_damaged_checkpoint_is_refused_or_harmless_and_the_log_kept(saved, tmp_path, offset):
    intact = tmp_path / "intact.jsonl"
    run_dnewton(2, [*SMALL, "--iterations", "4", "--resume", saved / "ck", "--log", intact],
                TIMEOUT)
    folder = tmp_path / "ck"
    folder.mkdir()
    damaged(saved / "ck" / "checkpoint.npz", folder / "checkpoint.npz", offset)
    log = tmp_path / "kept.jsonl"
    log.write_text('{"iter": 0}\n')
    proc = run_dnewton(2, [*SMALL, "--iterations", "4", "--resume", folder, "--log", log],
                       TIMEOUT, check=False)
    if proc.returncode == 0:
        assert without_timings(read_log(log)) == without_timings(read_log(intact))
    else:
        one_message(proc, 2, "not a readable checkpoint")
        assert log.read_text() == '{"iter": 0}\n'


@pytest.mark.mpi
def test_a_checkpoint_of_another_network_is_refused(saved):
    proc = run_dnewton(2, [*SMALL, "--hidden", "9", "--resume", saved / "ck"], TIMEOUT,
                       check=False)
    one_message(proc, 2, "the checkpoint was made with widths")


@pytest.mark.mpi
def test_a_crafted_model_with_enormous_widths_is_refused_before_allocating(saved, tmp_path):
    with np.load(saved / "model.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["widths"] = np.array([64, 10**9, 10])  # terabytes, were it believed
    np.savez(tmp_path / "crafted.npz", **arrays)
    began = time.monotonic()
    proc = run_dnewton(2, ["predict", tmp_path / "crafted.npz", "digits"], TIMEOUT,
                       check=False)
    one_message(proc, 2, "array shapes do not match the widths")
    assert time.monotonic() - began < 30


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
def test_train_and_predict_outputs_on_a_pipe_nobody_reads_end_at_once(tmp_path, fifo, saved):
    began = time.monotonic()
    one_message(run_dnewton(2, [*SMALL, "--log", fifo], TIMEOUT, check=False), 2,
                "a named pipe that no process reads")
    one_message(run_dnewton(2, ["predict", saved / "model.npz", "digits", "--output", fifo],
                            TIMEOUT, check=False), 2, "a named pipe that no process reads")
    assert time.monotonic() - began < TIMEOUT


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
def test_damaged_gz_and_overflowing_data_end_in_messages_not_tracebacks(tmp_path, saved):
    damaged_gz = _damaged_gz(tmp_path)
    for args in ([*SMALL[:1], damaged_gz, *SMALL[2:]], ["plan", damaged_gz, "--ranks", "2"],
                 ["predict", saved / "model.npz", damaged_gz]):
        one_message(run_dnewton(2, args, TIMEOUT, check=False), 2, "cannot be read")
    big = tmp_path / "big.svm"
    big.write_text("1 1:1e300 2:3\n2 1:-1e300 2:1\n1 1:5e299 2:2\n2 1:1 2:-1e308\n")
    proc = run_dnewton(2, ["train", big, "--hidden", "4", "--iterations", "2", "--quiet"],
                       TIMEOUT, check=False)
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


def test_the_time_left_that_squeue_prints_for_a_job_without_a_limit_is_accepted():
    from dnewton.app.cli import build_parser

    args = build_parser().parse_args(["train", "digits", "--time-limit", "UNLIMITED"])
    assert args.time_limit is None
