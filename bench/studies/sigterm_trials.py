"""SIGTERM at random times: every trial must end as docs/usage.md's fault table says.

    python bench/studies/sigterm_trials.py [--trials 20] [--ranks 2] [--seed 0]
                                           [--phases startup,search,iteration,checkpoint,model]

One uninterrupted run is the reference: the digits set, ``-C auto`` over two values
of C (so the search is a phase of its own), 8 Newton iterations with a checkpoint
after each, a model at the end. Each trial starts the same run under ``mpiexec -n
RANKS`` and sends SIGTERM to the launcher (which forwards it to every rank) in one
of five phases, taken in turn:

============  =====================================================================
startup       a random time before the search's first line
search        a random time within the search (as long as the reference's)
iteration     a random time between the first and the last iteration's line
checkpoint    while a checkpoint's temporary file exists (DNEWTON_TEST_SLOW_WRITE
              holds each write open long enough to be hit)
model         when the line that precedes the model's write appears
============  =====================================================================

A trial passes when the run ends with

* 75, a checkpoint on disk that the message names, and ``--resume`` from it ends
  with 0 and the reference's log (timings apart);
* 76, the message saying there is nothing to resume from and no checkpoint in
  the folder, the signal having come before the first iteration;
* 0, the log the reference's and the model written (the stop came after the
  last iteration: the run was done);
* the signal's own status (15 or 143) with nothing written, the signal having
  come before dnewton's first line ran (the interpreter still starting).

Anything else, a run or resumption that outlives ``--timeout``, or a message that
names a checkpoint not on disk, fails the trial. One line per trial, then a
summary; the exit status is 1 if any trial failed. The reference and the trials
run on a busy machine as well as an idle one: nothing here is a timing.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import dnewton_command, mpiexec, read_log

PHASES = ("startup", "search", "iteration", "checkpoint", "model")
RUN = ["train", "digits", "--hidden", "32", "--feature-scale", "16", "--center",
       "--iterations", "8", "-C", "auto", "--C-grid", "10,1",
       "--checkpoint-every", "1", "--seed", "3"]
TIMINGS = ("time", "iteration_time", "seconds", "checkpoint_seconds")
SLOW_WRITE = "0.3"  # seconds each checkpoint write is held open (a target to hit)


def environment(timeout):
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(timeout), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               DNEWTON_TEST_SLOW_WRITE=SLOW_WRITE)
    return env


class Run:
    """A ``dnewton`` run under mpiexec whose output lines are timed as they come."""

    def __init__(self, ranks, args, timeout):
        self.began = time.monotonic()
        self.process = subprocess.Popen(
            dnewton_command(ranks, args),
            env=environment(timeout), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.lines = []  # (seconds from the start, line)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.began, line.rstrip("\n")))

    def seen(self, text):
        """Seconds from the start when a line containing `text` came, or None."""
        return next((t for t, line in list(self.lines) if text in line), None)

    def wait_for(self, condition, deadline):
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def finish(self, timeout):
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            status = None
        self.reader.join(5)
        return status, "\n".join(line for _, line in self.lines)


def without_timings(records):
    """Records without the fields that measure time (the search path's too)."""
    kept = []
    for record in records:
        record = {k: v for k, v in record.items() if k not in TIMINGS}
        if record.get("regularization_path"):
            record["regularization_path"] = [
                {k: v for k, v in point.items() if k != "seconds"}
                for point in record["regularization_path"]]
        kept.append(record)
    return kept


# Markers of the phases in rank 0's output (train's own lines).
SEARCH_STARTS, SEARCH_ENDS = "-C auto: successive halving", "-C auto chose"
ITERATION, STOPPED = "iter ", "dnewton: stopped after"


def reference(folder, ranks, timeout):
    """The uninterrupted run: its log and when each phase began (seconds)."""
    run = Run(ranks, [*RUN, "--log", folder / "reference.jsonl",
                      "--checkpoint", folder / "reference-ck",
                      "--model", folder / "reference.npz"], timeout)
    status, output = run.finish(timeout)
    if status != 0:
        sys.exit(f"the reference run failed ({status}):\n{output}")
    iterations = [t for t, line in run.lines if line.startswith(ITERATION)]
    marks = {"search": run.seen(SEARCH_STARTS), "chosen": run.seen(SEARCH_ENDS),
             "first": iterations[0], "last": iterations[-1]}
    return read_log(folder / "reference.jsonl"), marks


def stop(run, phase, marks, rng, folder, deadline):
    """Send SIGTERM to `run` in `phase`; returns where it was sent (a note)."""
    if phase == "startup":
        time.sleep(rng.uniform(0, marks["search"]))
    elif phase == "search":
        run.wait_for(lambda: run.seen(SEARCH_STARTS) is not None, deadline)
        time.sleep(rng.uniform(0, marks["chosen"] - marks["search"]))
    elif phase == "iteration":
        run.wait_for(lambda: run.seen(SEARCH_ENDS) is not None, deadline)
        run.wait_for(lambda: any(line.startswith(ITERATION) for _, line in run.lines),
                     deadline)
        time.sleep(rng.uniform(0, marks["last"] - marks["first"]))
    elif phase == "checkpoint":
        writes = rng.randint(1, 6)  # the write to hit
        for _ in range(writes):
            run.wait_for(lambda: list(folder.glob(".checkpoint.npz.*.tmp")), deadline)
            if _ + 1 < writes:
                run.wait_for(lambda: not list(folder.glob(".checkpoint.npz.*.tmp")), deadline)
    elif phase == "model":
        run.wait_for(lambda: run.seen(STOPPED) is not None, deadline)
    when = time.monotonic() - run.began
    if run.process.poll() is None:
        run.process.send_signal(signal.SIGTERM)
    return f"{when:.2f} s"


def judge(status, output, folder, log, model, whole, ranks, timeout):
    """(passed, outcome) of a trial that ended with `status` and printed `output`."""
    checkpoint = folder / "checkpoint.npz"
    if status is None:
        return False, "hung (ended by --timeout)"
    if status == 75:
        if not checkpoint.exists():
            return False, "75, but no checkpoint on disk"
        if f"checkpoint in {folder}: continue with --resume {folder}" not in output:
            return False, "75, but the message does not name the checkpoint"
        resumed = Run(ranks, [*RUN, "--checkpoint", folder, "--resume", folder, "--log", log],
                      timeout)
        again, text = resumed.finish(timeout)
        if again != 0:
            return False, f"75; the resumption ended with {again}:\n{text}"
        if without_timings(read_log(log)) != without_timings(whole):
            return False, "75; the resumed log differs from the reference"
        return True, "75, resumed to the reference log"
    if status == 76:
        if checkpoint.exists():
            return False, "76, but a checkpoint exists"
        if "nothing to resume from" not in output or "--resume" in output:
            return False, "76, but the message does not say there is nothing to resume"
        return True, "76, nothing to resume (before the first iteration)"
    if status == 0:
        if without_timings(read_log(log)) != without_timings(whole) or not model.exists():
            return False, "0, but the log or the model is not the reference's"
        return True, "0, finished before the stop mattered"
    if status in (15, 128 + 15, -15):
        if checkpoint.exists() or log.exists() or "dnewton:" in output:
            return False, f"{status} after dnewton had started"
        return True, f"{status}, before dnewton's first line (nothing written)"
    return False, f"status {status}:\n{output}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="the phases to take in turn (comma-separated)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds after which a run counts as hung")
    args = parser.parse_args(argv)
    phases = args.phases.split(",")
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase {sorted(unknown)[0]!r}; known: {', '.join(PHASES)}")
    if mpiexec() is None:
        sys.exit("no mpiexec found")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="sigterm-trials-"))
    whole, marks = reference(work, args.ranks, args.timeout)
    print(f"reference: search from {marks['search']:.2f} s to {marks['chosen']:.2f} s, "
          f"iterations {marks['first']:.2f} s to {marks['last']:.2f} s", flush=True)
    failed = 0
    for trial in range(args.trials):
        phase = phases[trial % len(phases)]
        folder = work / f"trial{trial}"
        log, model = folder.with_suffix(".jsonl"), folder.with_suffix(".npz")
        run = Run(args.ranks, [*RUN, "--checkpoint", folder, "--log", log, "--model", model],
                  args.timeout)
        sent = stop(run, phase, marks, rng, folder, run.began + args.timeout)
        status, output = run.finish(args.timeout)
        passed, outcome = judge(status, output, folder, log, model, whole, args.ranks,
                                args.timeout)
        failed += not passed
        print(f"trial {trial:2d}  {phase:10s}  SIGTERM at {sent:>8s}  "
              f"{'pass' if passed else 'FAIL'}: {outcome}", flush=True)
    print(f"{args.trials - failed} of {args.trials} trials ended as documented", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
