"""Progress output: one line per Newton iteration (or SGD/Adam epoch) on rank 0, and the log.

On a terminal the progress is one live line, rewritten in place (carriage return)
after every iteration, with the iteration count and the time left; piped or
redirected, every iteration gets its own plain line. Only rank 0 prints or
writes the log (`io.run_log`).
"""

import shutil
import sys

from ..io.run_log import RunLogWriter


def _scores(rec):
    """The accuracies of a progress line: validation (early stopping) and test."""
    val = "" if rec.validation_score is None else f"  val {100 * rec.validation_score:6.2f}%"
    return val + ("" if rec.test_accuracy is None else f"  acc {100 * rec.test_accuracy:6.2f}%")


def format_record(rec):
    """The progress line of one `IterationRecord`."""
    acc = _scores(rec)
    if rec.iter == 0:
        return f"iter {rec.iter:4d}  f {rec.f:.6e}  |g| {rec.gnorm:.3e}{acc}"
    if rec.lambda_ is None:  # an SGD or Adam epoch: alpha is its learning rate
        return (
            f"epoch {rec.iter:4d}  f {rec.f:.6e}  |g| {rec.gnorm:.3e}  "
            f"lr {rec.alpha:.3g}  {rec.iteration_time:6.3f}s{acc}"
        )
    rho = "   -   " if rec.rho is None else f"{rec.rho:7.3f}"
    return (
        f"iter {rec.iter:4d}  f {rec.f:.6e}  |g| {rec.gnorm:.3e}  "
        f"cg {rec.cg_iters:3d}  alpha {rec.alpha:.3g}  lambda {rec.lambda_:.3e}  "
        f"rho {rho}  {rec.iteration_time:6.3f}s{acc}"
    )


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_live(rec, iterations, seconds_per_iteration):
    """The live line of one `IterationRecord`: progress, f, ||g||, accuracy, time left.

    `iterations` is the planned total (None if unknown); `seconds_per_iteration`
    the mean so far (None before the first iteration).
    """
    of = "" if iterations is None else f"/{iterations}"
    acc = _scores(rec)
    unit = "epoch" if rec.iter > 0 and rec.lambda_ is None else "iter"  # SGD, Adam: epochs
    line = f"{unit} {rec.iter}{of}  f {rec.f:.6e}  |g| {rec.gnorm:.3e}{acc}"
    if seconds_per_iteration is not None:
        line += f"  {seconds_per_iteration:.3g} s/{unit}"
        if iterations is not None:
            line += f"  left {_duration(max(iterations - rec.iter, 0) * seconds_per_iteration)}"
    return line


class Monitor:
    """Callable that reports each iteration; a no-op on ranks other than 0.

    Parameters
    ----------
    rank : int
    quiet : bool
        No progress lines (the log is still written).
    stream : file, default sys.stdout
        A terminal gets the live line, anything else plain lines.
    iterations : int or None
        The planned number of iterations, for the live line's progress and time left.
    """

    def __init__(self, rank, quiet=False, stream=None, iterations=None):
        self.active = rank == 0
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.iterations = iterations
        self.log = None
        self.log_path = None
        self.error = None  # why the log could not be written, once it could not
        self.live = self.active and not quiet and self.stream.isatty()
        self._line_open = False  # a live line is showing, not yet ended by a newline
        self._first = None  # (iter, time) of the first record seen, for the rate

    def open_log(self, path, previous=()):
        """Start the JSON-lines log at `path` (replacing it), one object per iteration.

        `previous` are the records (dicts) of iterations run before a resumption;
        they are written first. Raises InputError (on rank 0 only: agree on it) if
        the log cannot be written.
        """
        if not (self.active and path):
            return
        self.log_path = path
        self.log = RunLogWriter(path, previous)

    def __call__(self, record):
        if not self.active:
            return
        if self.live:
            self._show_live(record)
        elif not self.quiet:
            print(format_record(record), file=self.stream, flush=True)
        if self.log is not None:
            try:
                self.log.write(record.as_dict())
            except OSError as exc:
                self._log_failed(exc)

    def _log_failed(self, exc):
        """Note that the log cannot be written (a full disk, /dev/full); the training
        loop sees `error` and stops every rank (the log is rank 0's alone)."""
        self.error = f"{self.log_path}: cannot write the log ({exc.strerror or exc})"
        try:
            self.log.close()
        except OSError:
            pass
        self.log = None

    def _show_live(self, record):
        if self._first is None:
            self._first = (record.iter, record.time)
        done = record.iter - self._first[0]
        rate = (record.time - self._first[1]) / done if done else None
        # Longer than the terminal, the line would wrap and '\r' could not rewrite it.
        width = shutil.get_terminal_size().columns - 1
        line = format_live(record, self.iterations, rate)[:width]
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()
        self._line_open = True

    def _end_live_line(self):
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False

    def message(self, text):
        """A line of progress (not with `quiet`)."""
        if self.active and not self.quiet:
            self._end_live_line()
            print(text, file=self.stream, flush=True)

    def report(self, text):
        """Something the user asked for by name (``--log-view``): printed even when quiet."""
        if self.active:
            self._end_live_line()
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.active:
            self._end_live_line()
        if self.log is not None:
            try:
                self.log.close()
            except OSError as exc:
                self._log_failed(exc)
            self.log = None
