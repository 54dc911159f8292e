"""Progress output: one line per Newton iteration on rank 0, and the JSON-lines log.

Only rank 0 prints or writes. Each log line is flushed as it is written, so a run
that dies keeps every iteration it finished.
"""

import json
import sys

from .errors import InputError


def format_record(rec):
    """The progress line of one `IterationRecord`."""
    acc = "" if rec.test_accuracy is None else f"  acc {100 * rec.test_accuracy:6.2f}%"
    if rec.iter == 0:
        return f"iter {rec.iter:4d}  f {rec.f:.6e}  |g| {rec.gnorm:.3e}{acc}"
    rho = "   -   " if rec.rho is None else f"{rec.rho:7.3f}"
    return (
        f"iter {rec.iter:4d}  f {rec.f:.6e}  |g| {rec.gnorm:.3e}  "
        f"cg {rec.cg_iters:3d}  alpha {rec.alpha:.3g}  lambda {rec.lambda_:.3e}  "
        f"rho {rho}  {rec.iteration_time:6.3f}s{acc}"
    )


class Monitor:
    """Callable that reports each iteration; a no-op on ranks other than 0.

    Parameters
    ----------
    rank : int
    quiet : bool
        No progress lines (the log is still written).
    stream : file, default sys.stdout
    """

    def __init__(self, rank, quiet=False, stream=None):
        self.active = rank == 0
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.log = None

    def open_log(self, path, previous=()):
        """Start the JSON-lines log at `path` (replacing it), one object per iteration.

        `previous` are the records (dicts) of iterations run before a resumption;
        they are written first. Raises InputError (on rank 0 only: agree on it) if
        the log cannot be written.
        """
        if not (self.active and path):
            return
        try:
            self.log = open(path, "w", encoding="utf-8")
            for record in previous:
                self.log.write(json.dumps(record) + "\n")
            self.log.flush()
        except OSError as exc:
            raise InputError(f"{path}: cannot write the log ({exc.strerror})") from None

    def __call__(self, record):
        if not self.active:
            return
        if not self.quiet:
            print(format_record(record), file=self.stream, flush=True)
        if self.log is not None:
            self.log.write(json.dumps(record.as_dict()) + "\n")
            self.log.flush()

    def message(self, text):
        if self.active and not self.quiet:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.log is not None:
            self.log.close()
            self.log = None
