"""The run log: JSON lines, one object per iteration (epoch), iteration 0 first.

Each object is an `IterationRecord` as `IterationRecord.as_dict` gives it
(docs/design.md, "What a run reports"); a checkpoint's ``history`` holds the same
objects. `RunLogWriter` writes the log (rank 0 only), `read_log` reads it back
(``dnewton plot``, the benches).
"""

import json

from ..errors import InputError
from .text_output import open_text

REQUIRED = {"iter", "time", "f", "gnorm"}  # the keys every record of a log has


class RunLogWriter:
    """A log being written: each record is one line, flushed as it is written, so a
    run that dies keeps every iteration it finished.

    Opening replaces the file at `path` and writes `previous` first (the records,
    as dicts, of the iterations before a resumption); InputError if it cannot.
    `write` and `close` raise OSError (a full disk): the caller decides what a
    failed write means for the run.
    """

    def __init__(self, path, previous=()):
        self.path = path
        self.file = open_text(path, "log")  # a pipe nobody reads is refused, not waited on
        try:
            for record in previous:
                self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as exc:
            raise InputError(f"{path}: cannot write the log ({exc.strerror})") from None

    def write(self, record):
        """Append `record` (a dict, `IterationRecord.as_dict`) and flush it."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def read_log(path):
    """The records (dicts) of the log at `path`; InputError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the log ({exc.strerror})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}: line {number} is not JSON") from None
        if not (isinstance(record, dict) and REQUIRED <= set(record)):
            raise InputError(f"{path}: line {number} is not a dnewton log record")
        records.append(record)
    if not records:
        raise InputError(f"{path}: the log holds no iterations")
    return records
