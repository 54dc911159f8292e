"""Stopping when told to: signals from the scheduler and a time budget.

Slurm, PBS and LSF end a job by sending SIGTERM (or, ahead of time, SIGUSR1 with
``sbatch --signal``) to the launcher, which forwards it to the ranks; Ctrl-C
sends SIGINT. While a run is in `StopRequests`, these signals only note that a
stop was asked for. The training loop folds every rank's note into a reduction
it makes anyway after each iteration, so all ranks agree at once and nothing is
added per iteration; the run then writes its checkpoint and model, and exits
with `EXIT_RESUMABLE`. A second signal while stopping ends the process at once.

The time budget (`--time-limit`) stops the run the same way when the next
iteration, estimated from those so far, would not end in time.
"""

import os
import re
import signal
import sys
import time
from contextlib import contextmanager

from ..errors import ParameterError

# Exit status of a run that stopped early and can resume from its checkpoint
# (sysexits' EX_TEMPFAIL): 0 is "finished", 2 and 3 "failed" (input, numerics).
EXIT_RESUMABLE = 75

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

# How many recent iterations the time estimate looks at (the slowest of them).
_RECENT = 5


def parse_duration(text):
    """Seconds of a duration given as seconds (``"3600"``, ``"90.5"``) or as Slurm
    writes it: ``[D-]HH:MM:SS``, ``MM:SS`` or ``D-HH[:MM]``."""
    text = str(text).strip()
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

    @contextmanager
    def installed(self):
        """Catch `SIGNALS` inside the block (main thread only), as notes."""
        previous = {}
        try:
            for number in SIGNALS:
                previous[number] = signal.signal(number, self._note)
        except ValueError:  # not the main thread: leave the signals alone
            pass
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _note(self, number, frame):
        if self.signal is None:
            self.signal = number
            return
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


def flush_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
