"""The mini-batch epoch loop that the first-order baselines (SGD, Adam) share.

They minimise the same f as `newton` on the same partitioned network: every
mini-batch runs the distributed forward and backward passes, with the same
groups, kernels and byte accounting. Every rank draws the same mini-batches from
a generator seeded like Newton's, so the trajectory does not depend on the
layout (up to rounding); SGD and Adam with the same seed see the same batches.

One epoch e: the training set in a fresh random order, cut into mini-batches B
(without replacement), and for each of them the step rule applied to

    g = theta / (C l) + (1/|B|) sum_{i in B} grad loss_i     (unbiased for grad f)

with the epoch's learning rate eta_e = eta / (1 + decay (e - 1)). A solver is a
subclass that says what its step rule keeps (`VECTORS`, parameter-shaped, each
rank its own blocks' part) and how it moves theta (`update`). The rules are
elementwise, so they communicate nothing beyond the gradient's passes.

f and ||grad f|| on the whole training set are not part of the methods:
`measure` computes them for the log, and the caller counts that as monitoring
(its time and bytes apart from training).
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..constants import Stream, random_stream
from ..errors import NumericalError, alike_everywhere, check_parameters, everywhere
from ..run_records import IterationRecord, RunStatus, SolverState


@dataclass
class MiniBatchOptions:
    """What every mini-batch solver takes; subclasses add their step rule's."""

    learning_rate: float = 0.01  # eta (each solver has its own default)
    mini_batch: int = 128  # instances per mini-batch
    epochs: int = 20
    lr_decay: float = 0.0  # eta_e = eta / (1 + lr_decay (e - 1))
    seed: int = 0

    NAME = None  # the solver's name on the command line and in checkpoints
    RULES = (
        ("learning_rate", lambda v: v > 0 and math.isfinite(v), "must be a positive number"),
        ("mini_batch", lambda v: v >= 1, "must be >= 1"),
        ("epochs", lambda v: v >= 0, "must be >= 0"),
        ("lr_decay", lambda v: v >= 0 and math.isfinite(v), "must be >= 0"),
        ("seed", lambda v: isinstance(v, numbers.Integral) and v >= 0,
         "must be a whole number >= 0"),
    )

    def check(self):
        """Raise ParameterError naming the first nonsensical value."""
        check_parameters(self, self.RULES)

    @property
    def iterations(self):
        """Epochs: the unit of one `MiniBatchSolver.step`."""
        return self.epochs

    def rate(self, epoch):
        """eta_e, the learning rate of epoch `epoch` (1, 2, ...)."""
        return self.learning_rate / (1.0 + self.lr_decay * (epoch - 1))


def minibatches(n_instances, batch_size, rng):
    """One epoch's mini-batches: a random permutation cut into sorted index arrays."""
    order = rng.permutation(n_instances)
    for start in range(0, n_instances, batch_size):
        yield np.sort(order[start:start + batch_size])


class MiniBatchSolver:
    """Minimise an objective by mini-batch steps, one epoch per `step`.

    Parameters
    ----------
    objective : model.objective.Objective (``n_instances``, ``value(theta)``,
        ``value_and_gradient(theta)``, ``batch_gradient(theta, rows)``)
    space : parallel.space space
        Where the parameter vector lives (for ||g||).
    options : MiniBatchOptions

    Records: ``iter`` is the epoch, ``alpha`` the epoch's learning rate.
    Subclasses set `VECTORS` and implement `update`.
    """

    VECTORS = ()  # names of the step rule's state vectors, zero at the start

    def __init__(self, objective, space, options):
        with alike_everywhere():  # the same options on every rank
            options.check()
        self.objective = objective
        self.space = space
        self.options = options
        self.batches = random_stream(options.seed, Stream.MINIBATCHES)
        self.status = None
        self.message = None

    def update(self, g, rate):
        """One step from the mini-batch gradient `g` (this rank's part, theta's shape
        and dtype) with learning rate `rate`; ``self.steps`` already counts it."""
        raise NotImplementedError

    def start(self, theta):
        """Start from `theta`; returns the record of epoch 0 (to `measure`)."""
        self.theta = theta.copy()
        # In theta's dtype: a float32 network keeps float32 state.
        self.vectors = {name: np.zeros_like(self.theta) for name in self.VECTORS}
        self.steps = 0  # mini-batch steps taken (Adam's bias correction counts them)
        self.iteration = 0
        self._last_good = None
        return IterationRecord(0, math.nan, math.nan)

    def resume(self, state, record):
        """Continue from a `run_records.SolverState` after epoch ``state.iteration``, whose
        log record is `record`: what follows is what the uninterrupted run did."""
        self.theta = state.theta.copy()
        self.vectors = {name: state.vectors[name].astype(self.theta.dtype)
                        for name in self.VECTORS}
        self.iteration = state.iteration
        # Checkpoints of SGD runs from before the count was kept lack it; every
        # epoch takes the same number of steps, so it follows from the epoch.
        per_epoch = -(-self.objective.n_instances // self.options.mini_batch)
        self.steps = int(state.scalars.get("steps", self.iteration * per_epoch))
        self.batches.bit_generator.state = state.generator
        self._last_good = (self.theta.copy(), record)
        # f again, so that a resumption on other data is caught (`Checkpoint.check_f`).
        self.f, self.gnorm = self.objective.value(self.theta), record.gnorm
        if self.iteration >= self.options.epochs:
            self.status, self.message = RunStatus.ITERATION_LIMIT, "reached the epoch limit"

    def state(self):
        """The `run_records.SolverState` after the last completed epoch."""
        return SolverState(self.iteration, self.theta, self.batches.bit_generator.state,
                           scalars={"steps": self.steps}, vectors=self.vectors)

    @property
    def done(self):
        return self.status is not None

    @property
    def model(self):
        """The network the run scores and returns: the iterate."""
        return self.theta

    def step(self):
        """One epoch of mini-batch steps; returns its record (to `measure`)."""
        self.iteration += 1
        epoch = self.iteration
        rate = self.options.rate(epoch)
        for rows in minibatches(self.objective.n_instances, self.options.mini_batch,
                                self.batches):
            g = self.objective.batch_gradient(self.theta, rows)
            self.steps += 1
            self.update(g, rate)
        return IterationRecord(epoch, math.nan, math.nan, alpha=rate)

    def measure(self, record):
        """Monitoring: f and ||g|| of the whole training set into `record`.

        Returns the record, or None when a value is not finite (diverged): the
        run then stops with the parameters of the last good epoch. Every rank
        takes the same branch (the values are reduced).
        """
        record.f, g = self.objective.value_and_gradient(self.theta)
        record.gnorm = self.space.norm(g)
        good = np.isfinite(record.f) and np.isfinite(record.gnorm)
        if not good and self._last_good is None:
            raise everywhere(NumericalError.naming(
                f"the starting point has f = {record.f}, ||g|| = {record.gnorm}: are the "
                "features scaled ({feature_scale}, {center}), and is {C} sensible?"
            ))
        if not good:
            self.theta, last = self._last_good
            self.iteration = last.iter  # the run's result is the last good epoch
            self.status = RunStatus.NUMERICAL_ERROR
            self.message = (f"epoch {record.iter}: f = {record.f}, ||g|| = {record.gnorm} "
                            "(the learning rate is too large?); kept the model of epoch "
                            f"{last.iter}")
            return None
        self._last_good = (self.theta.copy(), record)
        # f again, so that a resumption on other data is caught (`Checkpoint.check_f`).
        self.f, self.gnorm = self.objective.value(self.theta), record.gnorm
        if self.iteration >= self.options.epochs:
            self.status, self.message = RunStatus.ITERATION_LIMIT, "reached the epoch limit"
        return record
