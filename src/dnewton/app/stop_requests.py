"""Stopping when told to: signals from the scheduler and a time budget.

Slurm, PBS and LSF end a job by sending SIGTERM (or, ahead of time, SIGUSR1 with
``sbatch --signal``) to the launcher, which forwards it to the ranks; Ctrl-C
sends SIGINT. While a run is in `StopRequests`, these signals only note that a
stop was asked for. The training loop folds every rank's note into a reduction
it makes anyway after each iteration, so all ranks agree at once and nothing is
added per iteration; the run then writes its checkpoint and model, and exits
with `EXIT_RESUMABLE`. A second signal while stopping ends the process at once;
once the stop has written everything, with the status the run earned.

The time budget (`--time-limit`) stops the run the same way when the next
iteration, estimated from those so far, would not end in time.

A stop is honoured in every phase. The command line notes signals from its first
line (`note_from_start`), before the slow imports and the data, and the run
agrees on them at iteration 0; there, with ``--checkpoint``, it writes the
checkpoint of iteration 0, which resumes like any other. A stop during the
``-C auto`` search ends it with `EXIT_NOTHING_SAVED`: no C is chosen yet, so
there is nothing a resumed run could continue.
"""

import os
import re
import signal
import sys
import time
from contextlib import contextmanager

# Exit status of a run that stopped early and can resume from its checkpoint
# (sysexits' EX_TEMPFAIL): 0 is "finished", 2 and 3 "failed" (input, numerics).
EXIT_RESUMABLE = 75
# Exit status of a run stopped before it had anything to resume from (during the
# -C auto search): a requeued job would start again from nothing and, under the
# same time limit, stop at the same place, so a requeue script must not requeue.
# (`errors.StoppedEarly` carries it.)
EXIT_NOTHING_SAVED = 76

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

# How squeue writes the time left of a job without a limit.
_UNLIMITED = ("UNLIMITED", "INFINITE", "NOT_SET")

# How many recent iterations the time estimate looks at (the slowest of them).
_RECENT = 5


def parse_duration(text):
    """Seconds of a duration given as seconds (``"3600"``, ``"90.5"``) or as Slurm
    writes it: ``[D-]HH:MM:SS``, ``MM:SS`` or ``D-HH[:MM]``; None for no limit
    (``UNLIMITED`` or ``INFINITE``, as ``squeue -o %L`` prints a job without one)."""
    from ..errors import ParameterError  # here: this module loads before NumPy

    text = str(text).strip()
    if text.upper() in _UNLIMITED:
        return None
    try:
        seconds = float(text)
    except ValueError:
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not match:
            raise ParameterError(f"{{time_limit}} {text!r} is not seconds nor [D-]H:MM:SS")
        days, *parts = match.groups()
        parts = [int(p) for p in parts if p is not None]
        if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
            parts += [0] * (3 - len(parts))
        elif len(parts) == 2:  # MM:SS
            parts = [0, *parts]
        hours, minutes, secs = parts
        seconds = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + secs
    if not seconds > 0 or seconds == float("inf"):
        raise ParameterError(f"{{time_limit}} must be a positive duration, got {text!r}")
    return seconds


class StopRequests:
    """This rank's reasons to stop: a signal received, the time budget run out.

    Parameters
    ----------
    time_limit : float or None
        Seconds the run may take from `started` (None: no limit).
    started : float
        `time.perf_counter()` at the start of the run.
    """

    def __init__(self, time_limit=None, started=None):
        self.time_limit = time_limit
        self.started = time.perf_counter() if started is None else started
        self.signal = None  # the first signal received
        self.settled = None  # the exit status earned, once everything is written

    @contextmanager
    def installed(self):
        """Catch `SIGNALS` inside the block (main thread only), as notes.

        A signal noted before by an enclosing `StopRequests` (the command line's,
        `note_from_start`) counts as received here, and what is noted here is handed
        back to it at the end.
        """
        previous = {}
        try:
            for number in SIGNALS:
                previous[number] = signal.signal(number, self._note)
        except ValueError:  # not the main thread: leave the signals alone
            pass
        outer = _owner(previous.get(signal.SIGTERM))
        if outer is not None and self.signal is None:
            self.signal = outer.signal
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            if outer is not None:
                outer.signal = outer.signal or self.signal
                outer.settled = self.settled if self.settled is not None else outer.settled

    def settle(self, status):
        """Everything the run had to write is written: a signal from now on ends the
        process at once with `status` (what the run would return anyway)."""
        self.settled = status

    def _note(self, number, frame):
        if self.signal is None and self.settled is None:
            self.signal = number
            return
        if self.settled is not None:  # nothing left to write: end with what was earned
            _flush_streams()
            os._exit(self.settled)
        # A second signal while stopping: end now.
        os.write(2, f"dnewton: {signal.Signals(number).name} again: stopping at "
                    "once\n".encode())
        os._exit(128 + number)

    def local_reason(self, durations, checkpoint_seconds=0.0):
        """0: go on; 1: a signal came; 2: the next iteration would overrun the budget.

        `durations` are the seconds of the iterations so far; the next one is
        estimated as the slowest of the recent ones, plus a checkpoint's write.
        """
        if self.signal is not None:
            return 1
        if self.time_limit is not None and durations:
            elapsed = time.perf_counter() - self.started
            upcoming = max(durations[-_RECENT:]) + checkpoint_seconds
            if elapsed + upcoming > self.time_limit:
                return 2
        return 0

    def describe(self, reason):
        """Why the run stopped, for its last line."""
        if reason == 1 and self.signal is not None:
            return f"interrupted by {signal.Signals(self.signal).name}"
        if reason == 1:
            return "interrupted by a signal on another rank"
        return f"the next iteration would pass the time limit of {self.time_limit:g} s"


def _owner(handler):
    """The `StopRequests` whose handler `handler` is, or None."""
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, StopRequests) else None


_FROM_START = None  # the command line's StopRequests (`note_from_start`)


def note_from_start():
    """Note `SIGNALS` from now on for the whole process (the command line's first
    line, before the slow imports); `train` takes over what was noted."""
    global _FROM_START
    _FROM_START = StopRequests()
    for number in SIGNALS:
        signal.signal(number, _FROM_START._note)


def release_from_start():
    """For commands that do not train: signals act as by default again, and one
    noted meanwhile is acted on now."""
    global _FROM_START
    if _FROM_START is None:
        return
    noted, _FROM_START = _FROM_START.signal, None
    for number in SIGNALS:
        signal.signal(number, signal.default_int_handler if number == signal.SIGINT
                      else signal.SIG_DFL)
    if noted is not None:
        signal.raise_signal(noted)


def settled_at_exit():
    """At the command line's exit: once a run has written everything, the stop
    signals are ignored. Python restores their default action while it shuts down
    (a signal then would end the rank with the signal's status while MPI
    finalises); an ignored signal it leaves ignored, so the status is the run's."""
    if _FROM_START is not None and _FROM_START.settled is not None:
        for number in SIGNALS:
            signal.signal(number, signal.SIG_IGN)


def _flush_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
