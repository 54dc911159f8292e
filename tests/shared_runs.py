"""Command-line runs that share one ``mpiexec`` job: several ``dnewton`` commands,
each a test's own, run one after the other in one MPI job of N ranks.

Starting a job costs seconds (every rank imports NumPy, SciPy, scikit-learn and
MPI); most runs of the suite take less than that. A test module declares its runs
up front (`SharedRuns.add`), a module-scoped fixture starts them (`SharedRuns.run`),
and each test asserts on its own run's result, so a wrong result still fails its
test alone. The jobs outlive the module: one job per rank count serves the runs
of every module of the session (`_JOBS`), waiting for the next plan without
using a core (it polls a folder), until the session ends.

In the job, every rank calls the command line's entry point (`dnewton.app.cli.main`,
the code ``python -m dnewton`` runs) for each run in turn, with that run's
environment variables set and its standard output and error written to files of
its own. A run's exit status is the one ``main`` exits with: an error that every
rank agreed on ends the command on every rank with its status, as it ends the
process in a job of its own. The ranks meet in a barrier after each run, so a
rank that returned while another still waits in a collective hangs the job, and
the run's time limit fails that run (below).

Anything that ends the job instead -- ``MPI_Abort`` after an error not agreed on,
a killed rank -- fails the run it happened in, with what the ranks and ``mpiexec``
printed; the runs after it start in a new job, so they keep their own results. A
run still going when its time is up (the k-th run of a plan: k timeouts after
the plan started) has the job killed, and fails the same way.

``DNEWTON_TESTS_ONE_JOB_PER_RUN=1`` starts a job for every run instead (to rule
out that runs sharing a process disturb each other).

Run as a script, this module is that job: ``mpiexec -n N python shared_runs.py
PLAN.json FIRST`` runs one plan from its run FIRST on, and ``... shared_runs.py
serve FOLDER PID`` runs the plans named in FOLDER's requests in turn, until FOLDER
holds a file "quit" or the process PID (the tests' session) is gone. The results
go to each plan's folder.
"""

import json
import os
import sys
from pathlib import Path

SEPARATE = "DNEWTON_TESTS_ONE_JOB_PER_RUN"


# -- the job ------------------------------------------------------------------------------


def _status(code):
    """The exit status of ``sys.exit(code)``."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _one_run(run, folder, rank):
    import time
    import warnings

    from dnewton.app import cli

    saved = {name: os.environ.get(name) for name in run["env"]}
    os.environ.update(run["env"])
    base = folder / f"{run['index']}.rank{rank}"
    streams = sys.stdout, sys.stderr
    # Line-buffered files: what a rank printed before the job ended is kept.
    with open(f"{base}.out", "w", buffering=1) as out, \
         open(f"{base}.err", "w", buffering=1) as err, warnings.catch_warnings():
        # catch_warnings: a fresh "once per place" record of warnings, as a new
        # process starts with, so that each run shows the warnings it causes.
        sys.stdout, sys.stderr = out, err
        began = time.monotonic()
        try:
            cli.main(run["args"])
            status = 0
        except SystemExit as exc:
            status = _status(exc.code)
        finally:
            sys.stdout, sys.stderr = streams
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    # Whole when it appears: a serving job's runs are read while the job goes on.
    Path(f"{base}.status.tmp").write_text(f"{status} {time.monotonic() - began}\n")
    os.replace(f"{base}.status.tmp", f"{base}.status")


def job(plan_path, first):
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    plan = json.loads(Path(plan_path).read_text())
    folder = Path(plan["folder"])
    for run in plan["runs"][first:]:
        _one_run(run, folder, world.rank)
        world.Barrier()


POLL = 0.02  # seconds between looks at the requests folder of an idle job


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def serve(control, parent):
    """Run the plans of the requests "0.json", "1.json", ... that appear in the folder
    `control`, in turn. Every rank waits by polling the folder, not in a collective:
    MPI's waits spin, and an idle job would take cores from the tests."""
    import time

    control, number = Path(control), 0
    while True:
        request = control / f"{number}.json"
        while not request.exists():
            if (control / "quit").exists() or not _alive(parent):
                return
            time.sleep(POLL)
        plan = json.loads(request.read_text())
        job(plan["plan"], plan["first"])
        number += 1


# -- the tests' side ----------------------------------------------------------------------


class SharedRuns:
    """Runs declared by a test module, started in as few jobs as their rank counts
    allow. `add` returns a key; after `run`, ``self[key]`` is the run's result: a
    `subprocess.CompletedProcess` as `helpers.run_dnewton` returns it (the output of
    every rank in rank order), with ``statuses``, each rank's exit status, and
    ``seconds``, how long the slowest rank took."""

    def __init__(self, scratch, timeout=120):
        self.scratch = Path(scratch)  # the runs' files, the jobs' in its folder "jobs"
        self.folder = self.scratch / "jobs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.pending = []  # (key, n_ranks, args, env)
        self.results = {}
        self.jobs = 0  # the mpiexec jobs the runs ran in

    def add(self, key, n_ranks, args, env=None):
        """Declare the run ``dnewton ARGS`` on `n_ranks` ranks, with the variables
        `env` set; runs of one rank count run in the order they were added."""
        if key in self.results or any(key == p[0] for p in self.pending):
            raise ValueError(f"two runs named {key!r}")
        self.pending.append((key, n_ranks, [str(a) for a in args], dict(env or {})))
        return key

    def run(self):
        """Start the pending runs: one job per rank count, in the order the counts
        first appear (see the module doc). A run that needs the outputs of runs on
        another rank count is added after this returns, and started by the next
        call."""
        import pytest
        from helpers import WORLD, mpiexec_path

        if WORLD.size > 1:
            pytest.skip("starts mpiexec itself: runs in the one-process suite only")
        if mpiexec_path() is None:
            pytest.skip("no mpiexec found (pip install mpich, or load your MPI)")
        pending, self.pending = self.pending, []
        for n_ranks in dict.fromkeys(p[1] for p in pending):  # in order of appearance
            group = [p for p in pending if p[1] == n_ranks]
            if os.environ.get(SEPARATE):
                for one in group:
                    self._run_group(n_ranks, [one])
            else:
                self._run_group(n_ranks, group)
        return self

    def __getitem__(self, key):
        return self.results[key]

    def checked(self, key):
        """The result of `key`, which must have exited 0 on every rank."""
        proc = self.results[key]
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(proc.args)} exited {proc.returncode}"
                                 f"\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        return proc

    def log_path(self, key):
        """A path in the scratch folder for the log of the run `key` (``--log``)."""
        import hashlib
        import re

        slug = re.sub(r"[^\w.,-]+", "_", str(key))[:60]
        return self.scratch / f"{slug}-{hashlib.sha1(str(key).encode()).hexdigest()[:8]}.jsonl"

    def log(self, key):
        """The records of the log at `log_path(key)`, written by the run `key`, which
        must have exited 0."""
        from helpers import read_log

        self.checked(key)
        return read_log(self.log_path(key))

    def _run_group(self, n_ranks, group):
        import subprocess
        import time

        tag = f"job{len(list(self.folder.glob('job*')))}"
        folder = self.folder / tag
        folder.mkdir()
        runs = [{"index": i, "key": str(key), "args": args, "env": env}
                for i, (key, _, args, env) in enumerate(group)]
        plan = folder / "plan.json"
        plan.write_text(json.dumps({"folder": str(folder), "runs": runs}))
        first = 0
        while first < len(group):
            server = _server(n_ranks, self.folder)
            self.jobs += 1
            printed = server.submit(plan, first)
            started = time.monotonic()
            for index in range(first, len(group)):
                key, _, args, _ = group[index]
                deadline = started + self.timeout * (index - first + 1)
                ended = server.wait(lambda: all(
                    (folder / f"{index}.rank{rank}.status").exists() for rank in range(n_ranks)),
                    deadline)
                statuses = [self._read(folder, index, rank, "status") for rank in range(n_ranks)]
                out = "".join(self._read(folder, index, rank, "out") or ""
                              for rank in range(n_ranks))
                err = "".join(self._read(folder, index, rank, "err") or ""
                              for rank in range(n_ranks))
                shown = ["mpiexec", "-n", str(n_ranks), "dnewton", *args]
                if ended is None and all(s is not None for s in statuses):
                    seconds = max(float(s.split()[1]) for s in statuses)
                    statuses = [int(s.split()[0]) for s in statuses]
                    # as mpiexec reports a job whose ranks exit differently: not 0
                    status = statuses[0] if len(set(statuses)) == 1 else max(statuses) or 1
                    result = subprocess.CompletedProcess(shown, status, out, err)
                    result.statuses, result.seconds = statuses, seconds
                    self.results[key] = result
                    continue
                # The job ended in this run: it fails with everything printed.
                stdout, stderr = printed()
                self.results[key] = subprocess.CompletedProcess(
                    shown, f"the shared job ended in this run (mpiexec: {ended})",
                    out + stdout, err + "\n--- mpiexec\n" + stderr)
                self.results[key].statuses, self.results[key].seconds = statuses, None
                first = index + 1
                break
            else:
                first = len(group)

    @staticmethod
    def _read(folder, index, rank, kind):
        path = folder / f"{index}.rank{rank}.{kind}"
        try:
            return path.read_text()
        except FileNotFoundError:
            return None


class _Job:
    """A job of `n_ranks` ranks started by the tests' side: one that serves plans
    until the session ends, or (`serving` false, ``DNEWTON_TESTS_ONE_JOB_PER_RUN``)
    one that runs a single plan and ends."""

    # MPIEXEC_TIMEOUT of a job, a last resort: `wait` ends a run that is over its time.
    LIFETIME = 6 * 3600

    def __init__(self, n_ranks, scratch, serving=True):
        import tempfile

        self.control = Path(tempfile.mkdtemp(prefix="server-", dir=scratch))
        self.n_ranks, self.serving, self.requests, self.proc = n_ranks, serving, 0, None
        self.printed = self.control / "mpiexec.out", self.control / "mpiexec.err"
        if serving:
            self._start(["serve", self.control, os.getpid()])

    def _start(self, args):
        import subprocess

        from helpers import mpiexec_path, run_environment

        # Appending: mpiexec's output of every plan, each read from its own offset.
        with open(self.printed[0], "ab") as out, open(self.printed[1], "ab") as err:
            self.proc = subprocess.Popen(
                [mpiexec_path(), "-n", str(self.n_ranks), sys.executable, __file__,
                 *map(str, args)], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=run_environment(self.LIFETIME))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def submit(self, plan, first):
        """Start the plan's runs from `first` on; returns a function that gives what
        mpiexec printed since, (stdout, stderr)."""
        offsets = [path.stat().st_size if path.exists() else 0 for path in self.printed]
        if self.serving:
            request = self.control / f"{self.requests}.json"
            temporary = request.with_suffix(".tmp")
            temporary.write_text(json.dumps({"plan": str(plan), "first": first}))
            temporary.rename(request)  # whole when the ranks see it
            self.requests += 1
        else:
            self._start([plan, first])

        def printed():
            texts = []
            for path, offset in zip(self.printed, offsets):
                with open(path, "rb") as f:
                    f.seek(offset)
                    texts.append(f.read().decode(errors="replace"))
            return tuple(texts)

        return printed

    def wait(self, done, deadline):
        """Wait until `done()`, the job's end or `deadline` (then the job is killed):
        None if done, else how the job ended."""
        import time

        while not done():
            if self.proc.poll() is not None:
                return None if done() else self.proc.returncode
            if time.monotonic() > deadline:
                self.close(kill=True)
                return f"killed at the run's time limit, {self.proc.returncode}"
            time.sleep(POLL)
        return None

    def close(self, kill=False):
        import subprocess

        if not self.alive():
            return
        if not kill:
            (self.control / "quit").write_text("")
            try:
                self.proc.wait(10)
                return
            except subprocess.TimeoutExpired:
                pass
        self.proc.kill()  # mpiexec ends the ranks when it is killed
        self.proc.wait()


_JOBS = {}  # n_ranks -> the serving _Job of the session


def _server(n_ranks, scratch):
    """A job of `n_ranks` ranks ready for a plan: the session's serving one, started
    now if there is none or the last one ended."""
    if os.environ.get(SEPARATE):
        return _Job(n_ranks, scratch, serving=False)
    if n_ranks not in _JOBS or not _JOBS[n_ranks].alive():
        if not _JOBS:
            import atexit

            atexit.register(_close_all)
        _JOBS[n_ranks] = _Job(n_ranks, scratch)
    return _JOBS[n_ranks]


def _close_all():
    for server in _JOBS.values():
        server.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        job(sys.argv[1], int(sys.argv[2]))
