"""Mini-batch SGD with momentum: the baseline the paper compares Newton with.

It minimises the same f as `newton` (SPEC section 1) on the same partitioned
network: every mini-batch runs the distributed forward and backward passes of
`network`, with the same groups, kernels and byte accounting. Every rank draws
the same mini-batches from a generator seeded like Newton's, so the trajectory
does not depend on the layout (up to rounding).

One step on the mini-batch B (drawn without replacement within an epoch)::

    g = theta / (C l) + (1/|B|) sum_{i in B} grad loss_i     (unbiased for grad f)
    v = mu v + g                                            (heavy ball; v_0 = 0)
    theta = theta - eta_e v,   eta_e = eta / (1 + decay (e - 1)) in epoch e

After every epoch f and ||grad f|| are evaluated on the whole training set for
the log; that pass (and the test accuracy) is monitoring, so neither its time
nor its bytes count as training (its bytes go to the ``evaluation`` phase).
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from .errors import InputError, NumericalError, agreed, everywhere
from .newton import IterationRecord, NewtonResult


@dataclass
class SGDOptions:
    """Hyperparameters of `sgd`; f's C is shared with Newton."""

    C: float = 0.01  # regularization: theta'theta / (2 C l)
    learning_rate: float = 0.01  # eta
    momentum: float = 0.9  # mu; 0 is plain SGD
    batch_size: int = 128  # instances per mini-batch
    epochs: int = 20
    decay: float = 0.0  # eta_e = eta / (1 + decay (e - 1))
    seed: int = 0

    def check(self):
        """Raise InputError naming the first nonsensical value."""
        rules = [
            (self.C > 0 and math.isfinite(self.C), "-C must be a positive number"),
            (self.learning_rate > 0 and math.isfinite(self.learning_rate),
             "--learning-rate must be a positive number"),
            (0 <= self.momentum < 1, "--momentum must be in [0, 1)"),
            (self.batch_size >= 1, "--mini-batch must be >= 1"),
            (self.epochs >= 0, "--epochs must be >= 0"),
            (self.decay >= 0 and math.isfinite(self.decay), "--lr-decay must be >= 0"),
        ]
        for ok, message in rules:
            if not ok:
                raise InputError(message)


def minibatches(n_instances, batch_size, rng):
    """One epoch's mini-batches: a random permutation cut into sorted index arrays."""
    order = rng.permutation(n_instances)
    for start in range(0, n_instances, batch_size):
        yield np.sort(order[start:start + batch_size])


def sgd(objective, theta, options, monitor=None, evaluate=None):
    """Minimise `objective` from `theta` (this rank's parameters) by mini-batch SGD.

    Parameters
    ----------
    objective : objective.Objective
    theta : (n,) local parameters; not modified.
    options : SGDOptions
    monitor : callable(IterationRecord) or None
        Called on every rank for epoch 0 (the start) and after every epoch. The
        record's ``iter`` is the epoch and ``alpha`` the epoch's learning rate.
    evaluate : callable(theta) -> float or None
        Test accuracy, collective; called after every epoch when given.

    Returns
    -------
    newton.NewtonResult
        ``status`` is "iteration_limit" after the last epoch, or "numerical_error"
        when f or the gradient became non-finite; ``theta`` is then the last epoch
        end at which both were finite.
    """
    groups = objective.groups
    with agreed(groups.world):
        options.check()
    counter = groups.counter
    batches = np.random.default_rng(np.random.SeedSequence(options.seed, spawn_key=(3,)))
    theta = theta.copy()
    velocity = np.zeros_like(theta)
    history = []
    clock = 0.0  # training seconds: monitoring excluded

    def measure(record, trained):
        """Fill the record's monitoring fields; `trained` is the epoch's bytes."""
        record.f, g = objective.value_and_gradient(theta)
        (gg,) = groups.allsum([np.dot(g, g)], "evaluation")
        record.gnorm = float(np.sqrt(gg))
        if evaluate is not None:
            record.test_accuracy = float(evaluate(theta))
        monitoring = counter.collect(groups.world)
        trained["evaluation"] += sum(monitoring.values())
        record.bytes = trained
        return np.isfinite(record.f) and np.isfinite(record.gnorm)

    record = IterationRecord(0, math.nan, math.nan)
    if not measure(record, counter.collect(groups.world)):
        raise everywhere(NumericalError(
            f"the starting point has f = {record.f}, ||g|| = {record.gnorm}: are the "
            "features scaled (--feature-scale, --center)?"
        ))
    history.append(record)
    if monitor is not None:
        monitor(record)
    last_good = (theta.copy(), record)
    status, message = "iteration_limit", "reached the epoch limit"
    for epoch in range(1, options.epochs + 1):
        began = time.perf_counter()
        rate = options.learning_rate / (1.0 + options.decay * (epoch - 1))
        for rows in minibatches(objective.n_instances, options.batch_size, batches):
            g = objective.batch_gradient(theta, rows)
            velocity *= options.momentum
            velocity += g
            theta -= rate * velocity
        seconds = time.perf_counter() - began
        clock += seconds
        record = IterationRecord(epoch, math.nan, math.nan, alpha=rate, time=clock,
                                 iteration_time=seconds)
        if not measure(record, counter.collect(groups.world)):
            # Reduced values: every rank takes this branch together.
            status = "numerical_error"
            message = (f"epoch {epoch}: f = {record.f}, ||g|| = {record.gnorm} (the "
                       "learning rate is too large?); kept the model of epoch "
                       f"{last_good[1].iter}")
            theta = last_good[0]
            break
        history.append(record)
        if monitor is not None:
            monitor(record)
        last_good = (theta.copy(), record)
    final = history[-1]
    return NewtonResult(theta, final.f, final.gnorm, final.iter, status, message, history)
