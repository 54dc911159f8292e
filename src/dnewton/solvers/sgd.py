"""Mini-batch SGD with momentum: the baseline the paper compares Newton with.

It minimises the same f as `newton` on the same partitioned network: every
mini-batch runs the distributed forward and backward passes, with the same
groups, kernels and byte accounting. Every rank draws the same mini-batches
from a generator seeded like Newton's, so the trajectory does not depend on the
layout (up to rounding).

One step on the mini-batch B (drawn without replacement within an epoch)::

    g = theta / (C l) + (1/|B|) sum_{i in B} grad loss_i     (unbiased for grad f)
    v = mu v + g                                            (heavy ball; v_0 = 0)
    theta = theta - eta_e v,   eta_e = eta / (1 + decay (e - 1)) in epoch e

`SGDSolver` runs one epoch per `step`. f and ||grad f|| on the whole training
set are not part of the method: `measure` computes them for the log, and the
caller counts that as monitoring (its time and bytes apart from training).
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..constants import Stream, random_stream
from ..errors import NumericalError, alike_everywhere, check_parameters, everywhere
from .records import IterationRecord, RunStatus, SolverState


@dataclass
class SGDOptions:
    """Hyperparameters of SGD."""

    learning_rate: float = 0.01  # eta
    momentum: float = 0.9  # mu; 0 is plain SGD
    mini_batch: int = 128  # instances per mini-batch
    epochs: int = 20
    lr_decay: float = 0.0  # eta_e = eta / (1 + lr_decay (e - 1))
    seed: int = 0

    RULES = (
        ("learning_rate", lambda v: v > 0 and math.isfinite(v), "must be a positive number"),
        ("momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
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
        """Epochs: the unit of one `SGDSolver.step`."""
        return self.epochs


def minibatches(n_instances, batch_size, rng):
    """One epoch's mini-batches: a random permutation cut into sorted index arrays."""
    order = rng.permutation(n_instances)
    for start in range(0, n_instances, batch_size):
        yield np.sort(order[start:start + batch_size])


class SGDSolver:
    """Minimise an objective by mini-batch SGD, one epoch per `step`.

    Parameters
    ----------
    objective : model.objective.Objective (``n_instances``, ``value(theta)``,
        ``value_and_gradient(theta)``, ``batch_gradient(theta, rows)``)
    space : parallel.space space
        Where the parameter vector lives (for ||g||).
    options : SGDOptions

    Records: ``iter`` is the epoch, ``alpha`` the epoch's learning rate.
    """

    def __init__(self, objective, space, options):
        with alike_everywhere():  # the same options on every rank
            options.check()
        self.objective = objective
        self.space = space
        self.options = options
        self.batches = random_stream(options.seed, Stream.SGD_MINIBATCHES)
        self.status = None
        self.message = None

    def start(self, theta):
        """Start from `theta`; returns the record of epoch 0 (to `measure`)."""
        self.theta = theta.copy()
        self.velocity = np.zeros_like(self.theta)
        self.iteration = 0
        self._last_good = None
        return IterationRecord(0, math.nan, math.nan)

    def resume(self, state, record):
        """Continue from a `records.SolverState` after epoch ``state.iteration``, whose
        log record is `record`: what follows is what the uninterrupted run did."""
        self.theta, self.velocity = state.theta.copy(), state.vectors["velocity"].copy()
        self.iteration = state.iteration
        self.batches.bit_generator.state = state.generator
        self._last_good = (self.theta.copy(), record)
        # f again, so that a resumption on other data is caught (`Checkpoint.check_f`).
        self.f, self.gnorm = self.objective.value(self.theta), record.gnorm
        if self.iteration >= self.options.epochs:
            self.status, self.message = RunStatus.ITERATION_LIMIT, "reached the epoch limit"

    def state(self):
        """The `records.SolverState` after the last completed epoch."""
        return SolverState(self.iteration, self.theta, self.batches.bit_generator.state,
                           vectors={"velocity": self.velocity})

    @property
    def done(self):
        return self.status is not None

    def step(self):
        """One epoch of mini-batch steps; returns its record (to `measure`)."""
        options = self.options
        self.iteration += 1
        epoch = self.iteration
        rate = options.learning_rate / (1.0 + options.lr_decay * (epoch - 1))
        for rows in minibatches(self.objective.n_instances, options.mini_batch, self.batches):
            g = self.objective.batch_gradient(self.theta, rows)
            self.velocity *= options.momentum
            self.velocity += g
            self.theta -= rate * self.velocity
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
