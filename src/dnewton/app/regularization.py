"""Choosing C (``-C auto``): a regularization path with warm starts on a held-out split.

The training set is split, stratified and seeded, into a part to fit and a
held-out part (`ModelConfig.holdout` of it). The network is trained on the first
part for each C of the grid, each fit starting where the previous one ended (a
warm start), for `ModelConfig.path_iterations` iterations; the C with the best
held-out accuracy wins (ties: the smaller C, the simpler model). The caller then
trains on the whole training set with it.

The path runs from the largest C down. LIBLINEAR's search goes up from a small
C, which suits a convex f; a network's f is not, and a strongly regularized fit
drives the weights to about 0, a saddle point where ReLU layers have no gradient:
warm starts from there stay there (tried: every C then scored at chance). From a
trained network, more regularization only shrinks the weights step by step.

Every rank takes the same split and runs the same fits: the search is collective,
like training.
"""

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError, agreed
from ..io.data import RawData
from ..solvers.newton import NewtonOptions
from .problem import Problem


@dataclass
class PathPoint:
    """One C of the path: where its fit ended and how it did on the held-out part."""

    C: float
    holdout_accuracy: float
    f: float  # on the fitted part, with this C
    iterations: int
    seconds: float
    flops: float = 0.0  # the fit's training FLOPs and the held-out scoring's, all ranks

    def as_dict(self):
        return {"C": self.C, "holdout_accuracy": self.holdout_accuracy, "f": self.f,
                "iterations": self.iterations, "seconds": self.seconds, "flops": self.flops}


def holdout_split(y, fraction, seed, purpose="-C auto"):
    """(fit, held-out) sorted instance indices: a stratified, seeded split of labels `y`.

    Raises InputError when a class has fewer than two instances (it could not be
    on both sides), or when `fraction` leaves either side fewer instances than
    there are classes: each side must hold every class. The message names
    `purpose`, what the split is for.
    """
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        raise InputError(
            f"{purpose} holds out part of the training set per class, but class "
            f"{classes[counts.argmin()]:g} has {counts.min()} instance"
            + ("; give a number for C" if purpose == "-C auto" else "")
        )
    index = np.arange(len(y))
    n_held = max(len(classes), int(round(fraction * len(y))))
    parameter = "{holdout}" if purpose == "-C auto" else "{validation_fraction}"
    if len(y) - n_held < len(classes):
        raise InputError.naming(
            f"{purpose}: holding out {fraction:g} of the {len(y)} training instances leaves "
            f"{len(y) - n_held} to fit, fewer than the {len(classes)} classes; give a smaller "
            + parameter)
    fit, held = train_test_split(index, test_size=n_held, stratify=y, random_state=seed)
    for part, rows in (("fitted", fit), ("held-out", held)):
        if len(np.unique(y[rows])) < len(classes):
            raise InputError.naming(f"{purpose}: the {part} part of the training set lacks "
                                    f"a class at {parameter} {fraction:g}; give a fraction "
                                    "nearer 0.2")
    return np.sort(fit), np.sort(held)


def split_rows(raw, fraction, seed, purpose):
    """(fitted part, held-out part) of `raw`, split by `holdout_split`: `RawData`,
    or of a set read by shares (`io.shards.ShardedData`) two such sets (collective)."""
    fit, held = holdout_split(raw.y, fraction, seed, purpose)
    return _rows(raw, fit, "fitted part"), _rows(raw, held, "held out")


def _rows(raw, index, part):
    if not isinstance(raw, RawData):
        return raw.take(index, f"{raw.source} ({part})")
    return RawData(raw.X[index], raw.y[index], f"{raw.source} ({part})")


def regularization_path(comm, train_raw, config, options, run_fit, report=None):
    """Fit every C of ``config.C_grid`` on a held-out split; returns the path, a
    list of `PathPoint` from the largest C down (collective over `comm`).

    ``run_fit(problem, options, theta)`` runs one fit from `theta` (None for the
    first: the seeded initialisation) and returns its `RunResult`; `report(point)`,
    if given, is called after each fit (rank 0 prints).
    """
    with agreed(comm):
        fit_raw, held_raw = split_rows(train_raw, config.holdout, options.seed, "-C auto")
    if isinstance(options, NewtonOptions):
        short = replace(options, iterations=config.path_iterations)
    else:
        short = replace(options, epochs=config.path_iterations)
    path, theta = [], None
    for C in sorted(config.C_grid, reverse=True):
        problem = Problem.build(comm, fit_raw, held_raw, replace(config, C=C))
        try:
            result = run_fit(problem, short, theta)
            problem.groups.ledger.collect(problem.world)  # (the fit's are in its records)
            accuracy = problem.test_accuracy()(result.theta)
            scoring = problem.groups.ledger.collect(problem.world)
        finally:
            problem.close()
        theta = result.theta
        point = PathPoint(C, float(accuracy), float(result.f), result.iterations,
                          sum(record.iteration_time for record in result.history),
                          training_flops(result.history) + sum(scoring["flops"].values()))
        path.append(point)
        if report is not None:
            report(point)
    return path


def training_flops(history):
    """The FLOPs of training in the records `history`, summed over their phases but
    monitoring's (``evaluation``): the cost of a run apart from the machine's load."""
    return float(sum(value for record in history for phase, value in record.flops.items()
                     if phase != "evaluation"))


def best_C(path):
    """The C of the path with the best held-out accuracy; ties go to the smaller C."""
    best = max(path, key=lambda point: (point.holdout_accuracy, -point.C))
    return best.C
