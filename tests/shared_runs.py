"""Command-line runs that share one ``mpiexec`` job: several ``dnewton`` commands,
each a test's own, run one after the other in one MPI job of N ranks.

Starting a job costs seconds (every rank imports NumPy, SciPy, scikit-learn and
MPI); most runs of the suite take less than that. A test module declares its runs
up front (`SharedRuns.add`), a module-scoped fixture starts them (`SharedRuns.run`:
one job per rank count), and each test asserts on its own run's result, so a
wrong result still fails its test alone.

In the job, every rank calls the command line's entry point (`dnewton.app.cli.main`,
the code ``python -m dnewton`` runs) for each run in turn, with that run's
environment variables set and its standard output and error written to files of
its own. A run's exit status is the one ``main`` exits with: an error that every
rank agreed on ends the command on every rank with its status, as it ends the
process in a job of its own. The ranks meet in a barrier after each run, so a
rank that returned while another still waits in a collective hangs the job, and
the job's time limit (``MPIEXEC_TIMEOUT``) fails that run.

Anything that ends the job instead -- ``MPI_Abort`` after an error not agreed on,
a killed rank, the time limit -- fails the run it happened in, with what the
ranks and ``mpiexec`` printed; the runs after it start in a new job, so they keep
their own results.

``DNEWTON_TESTS_ONE_JOB_PER_RUN=1`` starts a job for every run instead (to rule
out that runs sharing a process disturb each other).

Run as a script (``mpiexec -n N python shared_runs.py PLAN.json FIRST``), this
module is that job; its results go to the plan's folder.
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
    Path(f"{base}.status").write_text(f"{status} {time.monotonic() - began}\n")


def job(plan_path, first):
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    plan = json.loads(Path(plan_path).read_text())
    folder = Path(plan["folder"])
    for run in plan["runs"][first:]:
        _one_run(run, folder, world.rank)
        world.Barrier()


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
        self.jobs = 0  # mpiexec jobs started

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

        from helpers import mpiexec_path, run_environment

        tag = f"job{len(list(self.folder.glob('job*')))}"
        folder = self.folder / tag
        folder.mkdir()
        runs = [{"index": i, "key": str(key), "args": args, "env": env}
                for i, (key, _, args, env) in enumerate(group)]
        plan = folder / "plan.json"
        plan.write_text(json.dumps({"folder": str(folder), "runs": runs}))
        first = 0
        while first < len(group):
            timeout = self.timeout * (len(group) - first)
            cmd = [mpiexec_path(), "-n", str(n_ranks), sys.executable, __file__, str(plan),
                   str(first)]
            self.jobs += 1
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                                      env=run_environment(timeout))
            except subprocess.TimeoutExpired as exc:
                proc = subprocess.CompletedProcess(cmd, "timed out", exc.stdout or "",
                                                   exc.stderr or "")
            for index in range(first, len(group)):
                key, _, args, _ = group[index]
                statuses = [self._read(folder, index, rank, "status") for rank in range(n_ranks)]
                out = "".join(self._read(folder, index, rank, "out") or ""
                              for rank in range(n_ranks))
                err = "".join(self._read(folder, index, rank, "err") or ""
                              for rank in range(n_ranks))
                shown = ["mpiexec", "-n", str(n_ranks), "dnewton", *args]
                if all(s is not None for s in statuses):
                    seconds = max(float(s.split()[1]) for s in statuses)
                    statuses = [int(s.split()[0]) for s in statuses]
                    # as mpiexec reports a job whose ranks exit differently: not 0
                    status = statuses[0] if len(set(statuses)) == 1 else max(statuses) or 1
                    result = subprocess.CompletedProcess(shown, status, out, err)
                    result.statuses, result.seconds = statuses, seconds
                    self.results[key] = result
                    continue
                # The job ended in this run: it fails with everything printed.
                self.results[key] = subprocess.CompletedProcess(
                    shown, f"the shared job ended in this run (mpiexec: {proc.returncode})",
                    out + proc.stdout, err + "\n--- mpiexec\n" + proc.stderr)
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


if __name__ == "__main__":
    job(sys.argv[1], int(sys.argv[2]))
