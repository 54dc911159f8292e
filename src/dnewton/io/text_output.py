"""Text outputs (the log, predicted labels, a machine file) opened so that no open
can block.

Opening a named pipe for writing waits until some process opens it for reading;
no stop request can end that wait (Python retries the open after each signal
handler). So a path that is not a regular file is opened without waiting: a pipe
that a process reads works, one that nobody reads is refused at once with one
message. A device such as /dev/stdout or /dev/null works as usual.
"""

import errno
import os
import stat

from ..errors import InputError


def open_text(path, what):
    """`path` opened for writing text (created or emptied); InputError naming `what`
    if it cannot be, or if it is a named pipe that no process reads."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise InputError(f"{path}: a named pipe that no process reads: cannot write the "
                             f"{what} (start its reader first, or give a file)") from None
        raise InputError(f"{path}: cannot write the {what} ({exc.strerror})") from None
    os.set_blocking(fd, True)  # a reader is there: write as to any file
    return os.fdopen(fd, "w", encoding="utf-8")


class TextOutput:
    """A text file written in one piece at the end of a command.

    A regular file (or a new path) is opened only when written, so a command that
    fails first leaves the previous file; anything else (a named pipe, a device)
    is opened here, so that a pipe nobody reads is refused before any work.
    """

    def __init__(self, path, what):
        self.path, self.what = path, what
        self.file = None
        try:
            special = not stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            special = False  # a new path: created when written
        if special:
            self.file = open_text(path, what)

    def write(self, text):
        """Write `text` and close; InputError if it cannot be written."""
        file = self.file if self.file is not None else open_text(self.path, self.what)
        self.file = None
        try:
            with file:
                file.write(text)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the {self.what} "
                             f"({exc.strerror or exc})") from None

    def close(self):
        """Close what was opened early (a command that failed before writing)."""
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None
