"""Errors, and the protocol that keeps every rank in step when one of them fails.

A check that can fail on some ranks only (reading a file, parsing, numerical
trouble) runs inside ``with agreed(comm):``. At the end of the block the ranks
agree, in one small collective, whether any of them failed; if so every rank
raises the same `DNewtonError` (the lowest failing rank's message), so all of them
leave the next collective together and exit with one message.

Anything else that escapes -- a bug, or an error raised where no agreement
follows -- goes to `abort_on_exception`, which ends the whole job with
``MPI_Abort`` instead of leaving the other ranks blocked.
"""

import re
import sys
import traceback
import warnings
from contextlib import contextmanager

import numpy as np


class DNewtonError(Exception):
    """An error dnewton reports to the user (no traceback).

    A message may name parameters as ``{name}`` placeholders (build it with
    `naming`): ``str(error)`` shows the library's names, and a front end renders
    its own with `render` (the command line shows ``--lambda`` for ``damping``).
    """

    exit_status = 2
    label = "error"  # how the command line introduces the message
    agreed = False  # set once every rank knows of it
    template = None  # the message with ``{parameter}`` placeholders, if it names any

    @classmethod
    def naming(cls, template):
        """An error whose message `template` names parameters as ``{name}``."""
        error = cls(_render(template, str))
        error.template = template
        return error

    def render(self, name=str):
        """The message with every ``{parameter}`` shown as ``name(parameter)``."""
        return str(self) if self.template is None else _render(self.template, name)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _render(template, name):
    return _PLACEHOLDER.sub(lambda match: name(match.group(1)), template)


class InputError(DNewtonError, ValueError):
    """Bad input: a file, an option, a layout that does not fit."""


class ParameterError(InputError):
    """A parameter value the library refuses; `template` names it (``"{damping} must
    be >= 0"``, shown by the command line as ``--lambda must be >= 0``)."""

    def __init__(self, template):
        super().__init__(_render(template, str))
        self.template = template


def check_parameters(owner, rules):
    """Raise ParameterError for the first rule that `owner`'s values break.

    `rules` is a declarative table of ``(parameter, test, requirement)``: ``test``
    gets the parameter's value (or `owner` itself when ``parameter`` is None, for
    rules that tie several together) and ``requirement`` completes the sentence
    that starts with the parameter's name (a ``{name}`` placeholder of its own).
    """
    for parameter, test, requirement in rules:
        value = owner if parameter is None else getattr(owner, parameter)
        if not test(value):
            prefix = "" if parameter is None else f"{{{parameter}}} "
            raise ParameterError(prefix + requirement)


class NumericalError(DNewtonError, ArithmeticError):
    """The iteration produced a non-finite value or cannot make progress."""

    exit_status = 3


class StoppedEarly(DNewtonError):
    """A stop request (signal, time limit) honoured before the run had anything to
    resume from: the message says so; the status (`app.stop_requests.EXIT_NOTHING_SAVED`)
    tells a requeue script not to requeue."""

    exit_status = 76
    label = "stopped"


def everywhere(error):
    """Mark `error` as raised identically on every rank (decided from reduced values)."""
    error.agreed = True
    return error


@contextmanager
def alike_everywhere():
    """Run a check whose inputs are the same on every rank: a `DNewtonError` it raises
    is raised on all of them alike, so it is marked agreed without communication."""
    try:
        yield
    except DNewtonError as exc:
        raise everywhere(exc) from None


def agree(comm, error):
    """Collective: raise on every rank the first error any rank passes.

    Parameters
    ----------
    comm : mpi4py communicator
    error : DNewtonError or None
        What this rank caught, if anything.
    """
    if comm is None or comm.size == 1:
        if error is not None:
            error.agreed = True
            raise error
        return
    from mpi4py import MPI

    first = np.array([comm.rank if error is not None else comm.size], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, first, op=MPI.MIN)
    root = int(first[0])
    if root == comm.size:
        return
    # A rare path: pickling the error is fine here. Every rank raises the root's
    # error, so all of them report (and exit with) the same thing.
    shared = comm.bcast(error if comm.rank == root else None, root=root)
    if error is None or comm.rank != root:
        error = shared
    error.agreed = True
    raise error


@contextmanager
def agreed(comm):
    """Run a block whose `DNewtonError` may arise on some ranks only; see module doc."""
    error = None
    try:
        yield
    except DNewtonError as exc:
        error = exc
    agree(comm, error)


def _world():
    if "mpi4py.MPI" not in sys.modules:
        return None
    return sys.modules["mpi4py.MPI"].COMM_WORLD


def describe(error):
    """The message of `error` as the current front end names things (see `run_main`)."""
    return error.render(_parameter_name)


_parameter_name = str


def abort_on_exception(exc_type, exc, tb):
    """`sys.excepthook` that ends every rank of the job, not just this one."""
    world = _world()
    rank = f" on rank {world.rank}" if world is not None and world.size > 1 else ""
    if isinstance(exc, DNewtonError):
        print(f"dnewton: error{rank}: {describe(exc)}", file=sys.stderr, flush=True)
        status = exc.exit_status
    else:
        # One write: the launcher forwards what reached it before the abort ends the
        # job, and a traceback written line by line was seen cut after its first line.
        sys.stderr.write(f"dnewton: internal error{rank}:\n"
                         + "".join(traceback.format_exception(exc_type, exc, tb)))
        sys.stderr.flush()
        status = 1
    if world is not None and world.size > 1:
        world.Abort(status)
    sys.exit(status)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` of the front ends: a warning (NumPy's overflow in a sum,
    say) as one line of dnewton's own, without the code line that raised it."""
    world = _world()
    rank = f" on rank {world.rank}" if world is not None and world.size > 1 else ""
    text = f"dnewton: warning{rank}: {message}\n"
    try:
        (file or sys.stderr).write(text)
    except (OSError, ValueError):
        pass


def run_main(main, argv=None, parameter_name=str):
    """Call ``main(argv)`` with the package's failure rules; return the exit status.

    An agreed `DNewtonError` is printed once (by rank 0) and every rank returns its
    exit status; anything else aborts the job through `abort_on_exception`.
    `parameter_name(parameter)` is how this front end names a parameter in a
    message (the command line: by its flag).
    """
    global _parameter_name
    _parameter_name = parameter_name
    sys.excepthook = abort_on_exception
    warnings.showwarning = show_warning
    try:
        return main(argv) or 0
    except DNewtonError as exc:
        if not exc.agreed:
            abort_on_exception(type(exc), exc, exc.__traceback__)
        world = _world()
        if world is None or world.rank == 0:
            print(f"dnewton: {exc.label}: {describe(exc)}", file=sys.stderr, flush=True)
        return exc.exit_status
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 -- must end every rank
        abort_on_exception(type(exc), exc, exc.__traceback__)
    # SystemExit (argparse's --help and usage errors) passes through: every rank
    # parses the same command line, so all of them exit together.
