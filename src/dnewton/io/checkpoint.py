"""Checkpoints: the whole solver state, written atomically, to resume a run exactly.

``DIR/checkpoint.npz`` is a model file (`model_file`, so ``dnewton predict`` reads
it) with the state of `run_records.SolverState` added: ``iteration`` k,
``generator`` (the solver's random stream), ``scalars`` (Newton's damping, the
mini-batch solvers' step count), one dense ``vector_NAME`` per parameter-shaped
vector (SGD's velocity, Adam's m and v), ``history`` (the log records of
iterations 0..k) and ``settings`` (what a resumed run may not change, the solver
among them); generator, scalars, history and settings are JSON text. Parameters
and vectors are dense, so a run may resume on another number of ranks with
another layout.

Writing: rank 0 writes a temporary file (``.checkpoint.npz.XXXXXXXX.tmp``), fsyncs
it and renames it over the previous checkpoint, so a kill at any moment leaves the
previous checkpoint or the new one, whole; a leftover temporary file is never read,
and the next run that takes the folder removes it.

A run holds the folder for its lifetime (`FolderLock`, in ``.lock``): a second run
given the same ``--checkpoint`` is refused with a message naming the first.

Resuming: the state is restored and f recomputed at the iterate (it must match
the record: `Checkpoint.check_f`), so the iterations that follow are those of the
uninterrupted run -- bit for bit on the same layout, up to rounding on another.
The log is rewritten from the stored records and the new ones appended, so it
equals the uninterrupted run's log (apart from timings) even when the killed run
had logged iterations past its last checkpoint.
"""

import fcntl
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import RESUME_F_RTOL
from ..errors import InputError, ParameterError, agreed, everywhere
from ..parallel.gather_scatter import scatter_vector
from ..run_records import IterationRecord, SolverState
from .model_file import Model, check_writable, commit, read_arrays_everywhere, write_temporary

NAME = "checkpoint.npz"
LOCK = ".lock"

_STATE_KEYS = ("iteration", "generator", "scalars", "history", "settings")
_JSON_KEYS = ("generator", "scalars", "history", "settings")
_VECTOR = "vector_"


@dataclass
class Checkpoint:
    """A checkpoint as read back (the same on every rank)."""

    model: Model
    iteration: int
    generator: dict
    scalars: dict
    history: list  # log records (dicts) of iterations 0..iteration
    settings: dict
    vectors: dict  # name -> dense flat vector

    @classmethod
    def load(cls, world, directory):
        """Collective: the checkpoint in `directory`, read by rank 0, on every rank."""
        path = Path(directory) / NAME
        arrays = read_arrays_everywhere(world, path, "checkpoint")
        with agreed(world):
            missing = [key for key in _STATE_KEYS if key not in arrays]
            if missing:
                raise InputError(f"{path}: a model file, not a checkpoint (no {missing[0]})")
            model = Model.from_arrays(arrays, path)
            try:
                state = {key: json.loads(str(arrays[key])) for key in _JSON_KEYS}
            except (json.JSONDecodeError, RecursionError) as exc:
                raise InputError(f"{path}: damaged optimizer state ({exc})") from None
            iteration = _state_problem(arrays, state, model)
            if isinstance(iteration, str):
                raise InputError(f"{path}: damaged optimizer state ({iteration})")
        vectors = {key[len(_VECTOR):]: arrays[key] for key in arrays if key.startswith(_VECTOR)}
        return cls(model, iteration, vectors=vectors, **state)

    def check(self, settings, defaults=None):
        """Raise ParameterError naming the first setting this run changes.

        `defaults` (of `settings`' keys) are the values a checkpoint that does not
        name a setting was made with: it predates the setting, and a setting is
        added with the default that keeps the earlier behaviour.
        """
        made_with = {key: value for key, value in (defaults or {}).items() if key in settings}
        made_with.update(self.settings)
        for key, value in made_with.items():
            if settings.get(key) != value:
                made = "was" if key in self.settings else f"predates {key}, so it was"
                raise ParameterError(
                    f"{{resume}}: the checkpoint {made} made with {key} = {value}, this run has "
                    f"{settings.get(key)}; resume with the same settings (only "
                    "{iterations}, {partitions}, {batch_size} and the outputs may change)"
                )

    def check_f(self, f):
        """Refuse (on every rank: `f` is reduced) a resumption whose recomputed f differs.

        Another layout or batch size changes f only by rounding; another data set
        or preprocessing changes it for real.
        """
        last = self.history[-1]
        rtol = RESUME_F_RTOL[self.settings.get("dtype", "float64")]
        if not math.isclose(f, last["f"], rel_tol=rtol, abs_tol=0.0):
            raise everywhere(ParameterError(
                f"{{resume}}: the checkpoint has f = {last['f']:.12e} at iteration "
                f"{last['iter']}, but its parameters give f = {f:.12e} on this training "
                "set: is it the same data?"
            ))

    def state(self, layout, rank):
        """The `SolverState` to resume from, cut into `layout`'s blocks for `rank`."""
        vectors = {name: scatter_vector(layout, rank, flat)
                   for name, flat in self.vectors.items()}
        return SolverState(self.iteration, self.model.local_parameters(layout, rank),
                           self.generator, self.scalars, vectors)

    def records(self):
        """The log records of iterations 0..iteration, as `IterationRecord`."""
        return [IterationRecord.from_dict(record) for record in self.history]


def _state_problem(arrays, state, model):
    """The iteration of a checkpoint's state, or what is wrong with the state (a str):
    every field of the kind the writer gives it, the history's records complete."""
    iteration = arrays["iteration"]
    if np.ndim(iteration) != 0 or iteration.dtype.kind not in "iu" or int(iteration) < 0:
        return "the iteration is not a whole number >= 0"
    iteration = int(iteration)
    if not all(isinstance(state[key], dict) for key in ("generator", "scalars", "settings")):
        return "the generator, scalars or settings are not records"
    kind = getattr(np.random, str(state["generator"].get("bit_generator")), None)
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        return "the generator names no NumPy bit generator"
    try:
        kind().state = state["generator"]  # what resuming will do
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        return f"the generator's state cannot be restored ({exc})"
    history = state["history"]
    if not (isinstance(history, list) and history and all(isinstance(r, dict)
                                                          for r in history)):
        return "the history is not a list of records"
    try:
        records = [IterationRecord.from_dict(record) for record in history]
    except (TypeError, KeyError) as exc:
        return f"a record of the history is incomplete ({exc})"
    last = records[-1]
    if last.iter != iteration or not isinstance(last.f, (int, float)):
        return f"the history ends at {last.iter!r}, not at iteration {iteration}"
    n_parameters = sum(W.size + b.size for W, b in zip(model.weights, model.biases))
    for name, vector in arrays.items():
        if name.startswith(_VECTOR) and (vector.ndim != 1 or vector.dtype.kind != "f"
                                         or len(vector) != n_parameters):
            return f"{name} is not a vector of the model's parameters"
    return iteration


class FolderLock:
    """Rank 0's hold on a checkpoint folder for the run's lifetime.

    An advisory ``flock`` on ``DIR/.lock``, which names the holder (host, process,
    command line); the system drops it when the process ends, however it ends, so
    it is never stale. On a file system without locks the folder is not locked.
    Raises ParameterError, naming the other run, when another process holds it.
    """

    def __init__(self, directory):
        self.fd = None
        path = Path(directory) / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ParameterError(f"{{checkpoint}} {directory}: cannot write in it "
                                 f"({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another run"
            os.close(fd)
            raise ParameterError(f"{{checkpoint}} {directory} is in use by another run "
                                 f"({holder}): give each run its own folder") from None
        except OSError:  # no locks on this file system: go on unlocked
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}, started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n".encode())
        self.fd = fd
        # Temporary files of runs that died writing: only a holder may write here.
        for leftover in Path(directory).glob(f".{NAME}.*.tmp"):
            try:
                leftover.unlink()
            except OSError:
                pass

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the lock
            self.fd = None


class Checkpointer:
    """The training run's checkpoint writer. Collective to build (rank 0 creates
    `directory`) and to call; the caller decides when (`due`).

    Parameters
    ----------
    world : mpi4py communicator
    gather : callable (theta) -> Model or None
        Collective: the dense model on rank 0 (None elsewhere).
    gather_vector : callable (vector) -> flat array or None
        Collective: a parameter-shaped vector in dense order on rank 0.
    directory : str or Path
    every : int or None
        Iterations between checkpoints; None: by time, every `interval` seconds.
    last : int
        The planned last iteration (always checkpointed).
    interval : float
        Seconds of training between checkpoints when `every` is None.
    settings : dict
        What a resumed run may not change (JSON types).
    before_commit, after_write : callable (iteration) or None
        Called on rank 0 between writing the temporary file and renaming it, and
        after the rename (tests play crashes there; see `dnewton.fault_injection`).
    """

    def __init__(self, world, gather, gather_vector, directory, every, last, settings,
                 interval=300.0, before_commit=None, after_write=None):
        self.world = world
        self.gather = gather
        self.gather_vector = gather_vector
        self.path = Path(directory) / NAME
        self.every = every
        self.last = last
        self.interval = interval
        self.settings = settings
        self.before_commit = before_commit
        self.after_write = after_write
        self.written = time.perf_counter()  # when the last checkpoint was written
        self.saved = None  # the iteration of the last checkpoint this run wrote
        self.lock = None
        with agreed(world):
            if every is not None and every < 1:
                raise ParameterError("{checkpoint_every} must be >= 1")
            if world.rank == 0:
                try:
                    Path(directory).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ParameterError(
                        f"{{checkpoint}} {directory}: cannot create it ({exc.strerror})"
                    ) from None
                if not os.access(directory, os.W_OK | os.X_OK):
                    raise ParameterError(f"{{checkpoint}} {directory}: cannot write in it")
                self.lock = FolderLock(directory)
                try:
                    check_writable(self.path, "checkpoint")
                except ParameterError:
                    self.close()
                    raise

    def close(self):
        """Let the folder go (the run is over)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def due(self, iteration):
        """This rank's view of whether iteration `iteration`'s state is to be written:
        every `every` iterations, or `interval` seconds after the last write, and at
        the last iteration. (By time, ranks may see it differently: agree first.)"""
        if iteration == self.last:
            return True
        if self.every is not None:
            return iteration % self.every == 0
        return time.perf_counter() - self.written >= self.interval

    def __call__(self, state, history):
        """Collective: write `state` (a `SolverState`) with the log records `history`;
        returns the seconds it took."""
        began = time.perf_counter()
        model = self.gather(state.theta)
        vectors = {name: self.gather_vector(vec)
                   for name, vec in sorted(state.vectors.items())}
        with agreed(self.world):
            if self.world.rank == 0:
                self._write(model, vectors, state, history)
        self.written = time.perf_counter()
        self.saved = state.iteration
        return self.written - began

    def _write(self, model, vectors, state, history):
        arrays = model.arrays()
        arrays.update({_VECTOR + name: flat for name, flat in vectors.items()})
        arrays.update(
            iteration=np.array(state.iteration),
            generator=np.array(json.dumps(state.generator)),
            scalars=np.array(json.dumps(state.scalars)),
            history=np.array(json.dumps([record.as_dict() for record in history])),
            settings=np.array(json.dumps(self.settings)),
        )
        try:
            temporary = write_temporary(self.path, arrays)
            if self.before_commit is not None:
                self.before_commit(state.iteration)
            commit(temporary, self.path)
        except OSError as exc:
            raise InputError(
                f"{self.path}: cannot write the checkpoint ({exc.strerror or exc})"
            ) from None
        if self.after_write is not None:
            self.after_write(state.iteration)
