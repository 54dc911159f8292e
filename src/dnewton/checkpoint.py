"""Checkpoints: the whole optimizer state, written atomically, to resume a run exactly.

``DIR/checkpoint.npz`` is a model file (`model_io`, so ``dnewton predict`` reads it)
with the state of `newton.NewtonState` added: ``iteration`` k, ``damping`` (lambda
for iteration k+1), ``subsets`` (the subset generator's ``bit_generator.state``),
``history`` (the log records of iterations 0..k) and ``settings`` (what a resumed
run may not change), the last three as JSON text. The weights are dense, so a run
may resume on another number of ranks with another layout.

Writing: rank 0 writes ``checkpoint.npz.tmp``, fsyncs it and renames it over the
previous checkpoint, so a kill at any moment leaves the previous checkpoint or the
new one, whole; a leftover ``.tmp`` is never read and the next write replaces it.

Resuming: parameters, lambda, the generator and the history are restored, and f
and g at the iterate recomputed (f must match the record: `Checkpoint.check_data`),
so the iterations that follow are those of the uninterrupted run -- bit for bit on
the same layout, up to rounding on another. The log is rewritten from the stored records and the new
ones appended, so it equals the uninterrupted run's log (apart from timings) even
when the killed run had logged iterations past its last checkpoint.
"""

import json
import math
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, agreed, everywhere
from .model_io import (
    Model,
    commit,
    gather_model,
    read_arrays_everywhere,
    write_temporary,
)
from .newton import IterationRecord, NewtonState

NAME = "checkpoint.npz"

# Test-only hooks, read on rank 0: "K" makes it SIGKILL itself right after writing
# checkpoint K (a crash between checkpoints), or between writing checkpoint K's
# temporary file and renaming it (a crash in the middle of a write).
KILL_AFTER_VARIABLE = "DNEWTON_TEST_KILL_AFTER"
KILL_IN_WRITE_VARIABLE = "DNEWTON_TEST_KILL_IN_WRITE"

_STATE_KEYS = ("iteration", "damping", "subsets", "history", "settings")


def run_settings(problem, options):
    """What a resumed run must share with the checkpointed one, as stored (JSON types).

    Everything that changes the iterates beyond rounding: the optimizer's options
    except the iteration count, the network, the preprocessing and the training
    set's size and classes. The layout and the batch size may change.
    """
    config = problem.config
    settings = {key: value for key, value in asdict(options).items() if key != "iterations"}
    settings.update(
        widths=list(problem.layout.widths), activation=config.activation, loss=config.loss,
        feature_scale=config.feature_scale, center=config.center,
        n_instances=problem.objective.n_instances, classes=problem.classes.labels.tolist(),
    )
    return json.loads(json.dumps(settings))


@dataclass
class Checkpoint:
    """A checkpoint as read back (the same on every rank)."""

    model: Model
    iteration: int
    damping: float
    subsets: dict
    history: list  # log records (dicts) of iterations 0..iteration
    settings: dict

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
                state = {key: json.loads(str(arrays[key])) for key in
                         ("subsets", "history", "settings")}
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: damaged optimizer state ({exc})") from None
        return cls(model, int(arrays["iteration"]), float(arrays["damping"]), **state)

    def check(self, settings):
        """Raise InputError naming the first setting this run changes."""
        for key, value in self.settings.items():
            if settings.get(key) != value:
                raise InputError(
                    f"--resume: the checkpoint was made with {key} = {value}, this run has "
                    f"{settings.get(key)}; resume with the same settings (only --iterations, "
                    "--partitions, --batch-size and the output options may change)"
                )

    def check_data(self, problem, state):
        """Collective: refuse training data on which `state` does not give the recorded f.

        Another layout or batch size changes f only by rounding; another data set
        or preprocessing changes it for real.
        """
        f, last = problem.objective.value(state.theta), state.history[-1]
        if not math.isclose(f, last.f, rel_tol=1e-8, abs_tol=0.0):
            raise everywhere(InputError(
                f"--resume: the checkpoint has f = {last.f:.12e} at iteration {last.iter}, "
                f"but its parameters give f = {f:.12e} on this training set: is it the "
                "same data?"
            ))

    def state(self, layout, rank):
        """The `newton.NewtonState` to resume from, cut into `layout`'s blocks for `rank`."""
        history = [IterationRecord.from_dict(record) for record in self.history]
        return NewtonState(self.iteration, self.model.local_parameters(layout, rank),
                           self.damping, self.subsets, history)


def _test_hook(variable, iteration):
    if os.environ.get(variable) == str(iteration):
        os.kill(os.getpid(), signal.SIGKILL)


class Checkpointer:
    """`newton`'s checkpoint callback: writes every `every` iterations and at the last.

    Collective to build (rank 0 creates `directory`) and to call.

    Parameters
    ----------
    problem : trainer.Problem
    options : newton.NewtonOptions
    directory : str or Path
    every : int
    """

    def __init__(self, problem, options, directory, every):
        self.problem = problem
        self.path = Path(directory) / NAME
        self.every = every
        self.last = options.iterations
        self.settings = run_settings(problem, options)
        world = problem.world
        with agreed(world):
            if every < 1:
                raise InputError("--checkpoint-every must be >= 1")
            if world.rank == 0:
                try:
                    Path(directory).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise InputError(
                        f"--checkpoint {directory}: cannot create it ({exc.strerror})"
                    ) from None
                if not os.access(directory, os.W_OK | os.X_OK):
                    raise InputError(f"--checkpoint {directory}: cannot write in it")

    def __call__(self, state):
        if state.iteration % self.every and state.iteration != self.last:
            return
        model = gather_model(self.problem, state.theta)
        with agreed(self.problem.world):
            if self.problem.world.rank == 0:
                self._write(model, state)

    def _write(self, model, state):
        arrays = model.arrays()
        arrays.update(
            iteration=np.array(state.iteration),
            damping=np.array(state.damping),
            subsets=np.array(json.dumps(state.subsets)),
            history=np.array(json.dumps([record.as_dict() for record in state.history])),
            settings=np.array(json.dumps(self.settings)),
        )
        try:
            temporary = write_temporary(self.path, arrays)
            _test_hook(KILL_IN_WRITE_VARIABLE, state.iteration)
            commit(temporary, self.path)
        except OSError as exc:
            raise InputError(
                f"{self.path}: cannot write the checkpoint ({exc.strerror or exc})"
            ) from None
        _test_hook(KILL_AFTER_VARIABLE, state.iteration)
