"""Stopping when told to: a signal to the launcher or to one rank, or the time
budget, ends the job within seconds with status 75 and a checkpoint at the
iteration reached; resuming gives the log of the run that was never stopped."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mpiexec_path, read_log, run_dnewton, run_environment, without_timings
from shared_runs import SharedRuns

from dnewton.app.stop_requests import (
    EXIT_NOTHING_SAVED,
    EXIT_RESUMABLE,
    StopRequests,
    parse_duration,
)
from dnewton.errors import ParameterError
from dnewton.io.checkpoint import Checkpoint

TIMEOUT = 120
# A run that outlasts the time limit of 2 s on an idle machine (about 3.5 s of
# training: 64,48 took 1.7 s for its 800 iterations); float64: in float32 this run
# reaches its precision's floor, and stops there, sooner
NEWTON = ["train", "digits", "--hidden", "128,96", "--feature-scale", "16", "--center",
          "--iterations", "800", "--quiet", "--seed", "4", "--dtype", "float64"]
SGD = ["train", "digits", "--solver", "sgd", "--hidden", "32", "--feature-scale", "16",
       "--center", "--epochs", "200", "--mini-batch", "32", "--quiet", "--seed", "4"]


@pytest.mark.parametrize("text, seconds", [("90", 90), ("2.5", 2.5), ("1:30", 90),
                                           ("2:00:00", 7200), ("1-00:00:10", 86410),
                                           ("1-2", 93600)])
def test_time_limits_in_seconds_or_as_slurm_writes_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5", "abc", "1:2:3:4", "inf"])
def test_bad_time_limits_are_refused_by_name(text):
    with pytest.raises(ParameterError, match="^time_limit"):
        parse_duration(text)


def test_the_time_budget_counts_the_next_iteration():
    stops = StopRequests(time_limit=10.0, started=time.perf_counter() - 8.0)
    assert stops.local_reason([0.5, 1.0]) == 0
    assert stops.local_reason([0.5, 2.5]) == 2  # 8 s + the slowest recent 2.5 s > 10 s
    assert stops.local_reason([0.5, 1.0], checkpoint_seconds=1.5) == 2
    stops.signal = signal.SIGUSR1
    assert stops.local_reason([]) == 1 and "SIGUSR1" in stops.describe(1)


def _rank_pids(job):
    """PIDs of the ranks (the Python processes) started by the launcher `job`."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.append((parent, int(entry)))
    family, frontier = set(), {job.pid}
    while frontier:
        frontier = {pid for parent, pid in children if parent in frontier} - family
        family |= frontier
    ranks = []
    for pid in family:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"dnewton" in f.read() and b"mpiexec" not in open(
                        f"/proc/{pid}/cmdline", "rb").read():
                    ranks.append(pid)
        except OSError:
            pass
    return sorted(ranks)


def interrupted_run(tmp_path, args, deliver, n_ranks=2):
    """Start a checkpointed run, `deliver(job)` a signal once it has logged a few
    iterations; returns (process, seconds from the signal to the end, log, folder)."""
    if mpiexec_path() is None:
        pytest.skip("no mpiexec found")
    folder, log = tmp_path / "ck", tmp_path / "run.jsonl"
    job = subprocess.Popen([mpiexec_path(), "-n", str(n_ranks), sys.executable, "-m",
                            "dnewton", *args, "--checkpoint", str(folder), "--log", str(log)],
                           env=run_environment(TIMEOUT), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while not (log.exists() and len(log.read_text().splitlines()) > 5):
        assert job.poll() is None and time.monotonic() < deadline, "the run ended too soon"
        time.sleep(0.02)
    deliver(job)
    sent = time.monotonic()
    stdout, stderr = job.communicate(timeout=TIMEOUT)
    done = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    return done, time.monotonic() - sent, log, folder


def check_stopped_and_resumed(tmp_path, job, seconds, log, folder, args, whole, message):
    assert job.returncode == EXIT_RESUMABLE, job.stderr
    assert seconds < 10
    out = job.stdout + job.stderr
    assert out.count("dnewton: ") == 1 and message in out, out
    assert f"continue with --resume {folder}" in out
    records = read_log(log)
    checkpoint = Checkpoint.load(__import__("mpi4py.MPI").MPI.COMM_WORLD, folder)
    assert checkpoint.iteration == records[-1]["iter"] < len(whole) - 1
    assert records[-1]["checkpoint_seconds"] > 0
    # Resume on the same ranks: the log of the run never stopped, timings apart.
    run_dnewton(2, [*args, "--resume", folder, "--log", log], TIMEOUT)
    assert without_timings(read_log(log)) == without_timings(whole)


C_SEARCH = ["train", "digits", "--hidden", "64,64", "--feature-scale", "16", "--iterations",
            "30", "-C", "auto", "--search-budget", "400", "--time-limit", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs of this module that no test signals nor resumes, in one shared job
    (shared_runs.py): the runs never stopped, and the -C auto search the time limit
    stops."""
    runs = SharedRuns(tmp_path_factory.mktemp("stopping"), TIMEOUT)
    tmp = runs.scratch
    for name, args in (("newton", NEWTON), ("sgd", SGD)):
        runs.add(name, 2, [*args, "--log", runs.log_path(name)])
    runs.add("C search", 2, [*C_SEARCH, "--checkpoint", tmp / "c-search"])
    return runs.run()


@pytest.fixture
def whole_runs(runs):
    return {name: runs.log(name) for name in ("newton", "sgd")}


@pytest.mark.mpi
def test_sigterm_to_the_launcher_ends_in_a_checkpoint(tmp_path, whole_runs):
    job, seconds, log, folder = interrupted_run(tmp_path, NEWTON,
                                                lambda job: job.send_signal(signal.SIGTERM))
    check_stopped_and_resumed(tmp_path, job, seconds, log, folder, NEWTON,
                              whole_runs["newton"], "interrupted by SIGTERM after iteration")


@pytest.mark.mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks in /proc")
def test_sigusr1_to_one_rank_only_stops_every_rank(tmp_path, whole_runs):
    def to_rank_1(job):
        os.kill(_rank_pids(job)[1], signal.SIGUSR1)

    job, seconds, log, folder = interrupted_run(tmp_path, NEWTON, to_rank_1)
    # Rank 1 heard it; rank 0, which prints, learnt it from the agreement.
    check_stopped_and_resumed(tmp_path, job, seconds, log, folder, NEWTON,
                              whole_runs["newton"], "interrupted by a signal on another rank")


@pytest.mark.mpi
def test_sgd_stops_and_resumes_too(tmp_path, whole_runs):
    job, seconds, log, folder = interrupted_run(tmp_path, SGD,
                                                lambda job: job.send_signal(signal.SIGINT))
    check_stopped_and_resumed(tmp_path, job, seconds, log, folder, SGD, whole_runs["sgd"],
                              "interrupted by SIGINT after epoch")


@pytest.mark.mpi
def test_the_time_limit_ends_in_a_checkpoint(tmp_path, whole_runs):
    folder, log = tmp_path / "ck", tmp_path / "run.jsonl"
    began = time.monotonic()
    proc = run_dnewton(2, [*NEWTON, "--time-limit", "0:02", "--checkpoint", folder,
                           "--log", log], TIMEOUT, check=False)
    assert time.monotonic() - began < 2 + 10
    check_stopped_and_resumed(tmp_path, proc, 0.0, log, folder, NEWTON, whole_runs["newton"],
                              "the next iteration would pass the time limit of 2 s")


SECOND_SIGNAL = """
import os, signal, time
from dnewton.app.stop_requests import StopRequests
with StopRequests().installed():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
print("not reached")
"""


def test_a_second_signal_ends_at_once():
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM again: stopping at once" in proc.stderr
    assert "not reached" not in proc.stdout and time.monotonic() - began < 4


# -- a stop in every phase ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["UNLIMITED", "unlimited", "INFINITE"])
def test_no_time_limit_as_squeue_prints_it(text):
    assert parse_duration(text) is None


def _digits_run(tmp_path, C=1.0, solver="newton", **outputs):
    from dnewton.app.problem import ModelConfig
    from dnewton.app.training import Outputs, train
    from dnewton.io.data import read_dataset
    from dnewton.solvers.newton import NewtonOptions
    from dnewton.solvers.sgd import SGDOptions

    train_raw, test_raw = read_dataset("digits")
    config = ModelConfig(hidden=(16,), feature_scale=16.0, C=C, C_grid=(10.0, 1.0))
    options = NewtonOptions(iterations=4) if solver == "newton" else SGDOptions(epochs=3)
    return train(train_raw, test_raw, config, options, Outputs(**outputs))


@pytest.mark.parametrize("solver", ["newton", "sgd"])
def test_a_stop_during_start_up_keeps_iteration_0_which_resumes(tmp_path, solver):
    """A signal noted before training (the command line notes them from its first
    line) stops the run at iteration 0 with a checkpoint of it; resuming gives the
    run that was never stopped."""
    from dnewton.run_records import RunStatus

    whole = _digits_run(tmp_path, solver=solver)
    early = StopRequests()
    with early.installed():
        early.signal = signal.SIGTERM  # as if it came while the data were read
        stopped = _digits_run(tmp_path, solver=solver, checkpoint=tmp_path / "ck")
    assert stopped.status == RunStatus.INTERRUPTED and stopped.iterations == 0
    assert early.settled == EXIT_RESUMABLE  # a signal now would end with 75 at once
    resumed = _digits_run(tmp_path, solver=solver, checkpoint=tmp_path / "ck",
                          resume=tmp_path / "ck")
    assert resumed.status == whole.status and resumed.iterations == whole.iterations
    assert [r.f for r in resumed.history] == [r.f for r in whole.history]


def test_a_stop_during_the_C_search_says_there_is_nothing_to_resume(tmp_path):
    from dnewton.errors import StoppedEarly

    early = StopRequests()
    with early.installed(), pytest.raises(StoppedEarly, match="-C auto search") as caught:
        early.signal = signal.SIGUSR1
        _digits_run(tmp_path, C="auto", checkpoint=tmp_path / "ck")
    assert caught.value.agreed and caught.value.exit_status == EXIT_NOTHING_SAVED
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


@pytest.mark.mpi
def test_the_time_limit_during_the_C_search_ends_with_nothing_claimed(runs):
    proc = runs["C search"]
    assert proc.returncode == EXIT_NOTHING_SAVED, proc.stderr
    assert set(proc.statuses) == {EXIT_NOTHING_SAVED}, proc.stderr
    assert proc.stderr.count("dnewton: stopped: ") == 1, proc.stderr
    assert "nothing to resume from" in proc.stderr and "--resume" not in proc.stderr
    assert not (runs.scratch / "c-search" / "checkpoint.npz").exists()


SETTLED = """
import os, signal, time
from dnewton.app.stop_requests import StopRequests
stops = StopRequests()
with stops.installed():
    os.kill(os.getpid(), signal.SIGTERM)
    stops.settle(75)  # the stop wrote its checkpoint and model
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
print("not reached")
"""

BEFORE_TRAINING = """
import os, signal, time
from dnewton.app.stop_requests import note_from_start, release_from_start
note_from_start()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.1)
release_from_start()  # a command that does not train: the signal acts as by default
time.sleep(5)
print("not reached")
"""


def test_a_second_signal_after_the_stop_wrote_everything_keeps_its_status():
    proc = subprocess.run([sys.executable, "-c", SETTLED], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == EXIT_RESUMABLE and "not reached" not in proc.stdout


def test_commands_that_do_not_train_act_on_a_signal_noted_at_start():
    proc = subprocess.run([sys.executable, "-c", BEFORE_TRAINING], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout


@pytest.mark.mpi
def test_sigterm_at_random_times_ends_as_documented():
    """bench/studies/sigterm_trials.py with 3 trials (the lead runs 20): start-up, a checkpoint
    write, the model write; each ends with 75 and a resumable checkpoint, 76 and
    nothing claimed, or 0 with everything written."""
    if mpiexec_path() is None:
        pytest.skip("no mpiexec found")
    script = Path(__file__).resolve().parents[1] / "bench" / "studies" / "sigterm_trials.py"
    proc = subprocess.run([sys.executable, script, "--trials", "3", "--seed", "1",
                           "--phases", "startup,checkpoint,model", "--timeout", str(TIMEOUT)],
                          capture_output=True, text=True, timeout=10 * TIMEOUT,
                          env=run_environment(TIMEOUT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 of 3 trials ended as documented" in proc.stdout


AT_EXIT = """
import os, signal
from dnewton.app import stop_requests
stop_requests.note_from_start()
with stop_requests.StopRequests().installed() as stops:
    stops.settle(0)  # the run wrote everything
stop_requests.settled_at_exit()
os.kill(os.getpid(), signal.SIGTERM)  # as while Python shuts down and MPI finalises
print("kept the run's status")
"""


def test_a_signal_while_a_settled_run_exits_keeps_its_status():
    proc = subprocess.run([sys.executable, "-c", AT_EXIT], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "kept the run's status" in proc.stdout, proc.stderr
