"""Choosing C (``-C auto``): successive halving over a grid of C, on a held-out
split, with warm starts, at a budget that is a fraction of the run.

The training set is split, stratified and seeded, into a part to fit and a
held-out part (`ModelConfig.holdout` of it). On the fitted part:

1. a trunk: the network is fitted at the grid's middle C (`trunk_C`: 1 for
   the default grid) for `schedule`'s trunk iterations, from the seeded
   initialisation;
2. round 1: every C of the grid branches from the trunk (a warm start: the
   trunk's iterate, damping and sample generator; Newton's moving average of
   the iterates starts again) and is fitted for r iterations, then scored on
   the held-out part;
3. every further round keeps the better half by held-out accuracy (ties: the
   C nearer the trunk's, which the held-out part cannot yet tell from it) and
   continues each kept fit where it ended, for twice the iterations of the
   round before, until one C is left; of the last round, the best wins (ties:
   the smaller C, the simpler model).

The caller then continues the winner's fitted network on the whole training set
for the run's iterations less those the winner has had (trunk and its own
rounds): the search adds to a plain run only the iterations of the fits it
discarded, and the scoring and starting of each fit. `schedule` keeps these
within `ModelConfig.search_budget` times the run's iterations, costing the
scoring and starting in iterations by the FLOPs measured on the trunk.

The trunk is a moderately regularized fit, and every C starts from a trained
network: a strongly regularized one sits near theta = 0, a saddle point where
ReLU layers have no gradient, and warm starts from there stay there (tried on an
upward path: every C then scored at chance). A trunk at the largest C was tried
too: its large weights took the small Cs more iterations to shrink than the
rounds give, and the final fit from them ended 1.3 points below a plain run on
digits (300-300, full Newton); from the middle of the grid it does not.

Every rank takes the same split and runs the same fits: the search is
collective, like training.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError, agreed
from ..io.data import RawData
from ..io.model_file import Model
from ..parallel.gather_scatter import broadcast_arrays
from ..parallel.phases import Phase
from .problem import Problem


@dataclass
class PathPoint:
    """One stretch of the search: a fit of one C for some iterations, and how it did
    on the held-out part after them."""

    C: float
    holdout_accuracy: float
    f: float  # on the fitted part, with this C (with sampling: the last sample's)
    iterations: int  # of this stretch (SGD, Adam: epochs)
    seconds: float
    flops: float = 0.0  # the stretch's training FLOPs and the held-out scoring's, all ranks
    round: int = 1  # 0: the trunk; 1: every C branched from it; then the kept half

    def as_dict(self):
        return {"C": self.C, "holdout_accuracy": self.holdout_accuracy, "f": self.f,
                "iterations": self.iterations, "seconds": self.seconds, "flops": self.flops,
                "round": self.round}


def schedule(n_C, units, budget, overhead=0.0):
    """(trunk, rounds): the iterations of the trunk and, per round, of each C fitted
    in it, for a grid of `n_C` values and a run of `units` iterations (epochs).

    Round j fits ``ceil(n_C / 2**j)`` values for ``r 2**j`` iterations each
    (successive halving). What the search adds to the run is the iterations of
    every fit but the winner's, and `overhead` iterations' worth of work (scoring
    the held-out part, starting the fit) for each fit and the trunk; r is the
    largest whole number that keeps this within ``budget * units``, and at least 1
    (a budget too small for the grid then costs more). The trunk brings the
    winner's iterations (trunk and rounds) to about half the run, leaving the other
    half to the final fit on the whole training set; it is at least 1 iteration.
    """
    sizes = [n_C]
    while sizes[-1] > 1:
        sizes.append(-(-sizes[-1] // 2))
    sizes = sizes[:-1]  # the values fitted in each round (none for a one-value grid)

    def rounds(r):
        return [r * 2**j for j in range(len(sizes))]

    def added(per_round):
        return (sum((size - 1) * each for size, each in zip(sizes, per_round))
                + overhead * (sum(sizes) + 1))

    r = 1
    while added(rounds(r + 1)) <= budget * units:
        r += 1
    per_round = rounds(r)
    if added(per_round) > budget * units:  # not even r = 1 fits: one iteration a round
        per_round = [1] * len(sizes)
    trunk = max(1, units // 2 - sum(per_round))  # (at least one: it measures the costs)
    return trunk, per_round


def trunk_C(grid):
    """The C of the trunk: of the grid, the nearest to its middle on a log scale
    (ties: the larger); 1, the default C, for the default grid."""
    lo, hi = math.log(min(grid)), math.log(max(grid))
    return min(grid, key=lambda C: (abs(math.log(C) - (lo + hi) / 2), -C))


def _distance(C, other):
    return abs(math.log(C) - math.log(other))


def winner_iterations(path):
    """The iterations the chosen C's fitted network has had: the trunk's and the
    winner's own in every round (points as `PathPoint` or their dicts)."""
    points = [p if isinstance(p, PathPoint) else PathPoint(**p) for p in path]
    C = best_C(points)
    return sum(p.iterations for p in points if p.round == 0 or p.C == C)


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


def search_C(comm, train_raw, config, units, seed, fit, report=None, announce=None):
    """Successive halving over ``config.C_grid`` on a held-out split (seeded by
    `seed`), for a run of `units` iterations (epochs); returns ``(path, model)``:
    the path, a list of `PathPoint` in the order fitted, and the winner's fitted
    network, a dense `io.model_file.Model` on every rank (collective over `comm`).

    ``fit(problem, start, iterations, branch)`` fits ``problem`` (its C set) for
    `iterations` more, from `start`: None (the seeded initialisation) or a fit it
    returned before, `branch` when that fit was of another C. It returns an object
    with ``result`` (a `RunResult`), ``flops`` (its training FLOPs) and
    ``start_flops`` (those of starting it). `report(point)`, if given, is called
    after each stretch, `announce(trunk, rounds)` once the rounds' iterations are
    known (rank 0 prints).
    """
    with agreed(comm):
        fit_raw, held_raw = split_rows(train_raw, config.holdout, seed, "-C auto")
    grid = sorted(set(config.C_grid), reverse=True)
    trunk_iterations, rounds = schedule(len(grid), units, config.search_budget)
    middle = trunk_C(grid)
    problem = Problem.build(comm, fit_raw, held_raw, replace(config, C=middle))
    path = []
    try:
        ledger, score = problem.groups.ledger, problem.test_accuracy()

        def stretch(C, start, iterations, branch, round_):
            problem.set_C(C)
            done = fit(problem, start, iterations, branch)
            result = done.result
            ledger.collect(problem.world)  # (the fit's costs are in `done.flops`)
            accuracy = float(score(result.theta))
            scoring = sum(ledger.collect(problem.world)["flops"].values())
            point = PathPoint(C, accuracy, float(result.f),
                              result.iterations - (start.result.iterations if start else 0),
                              done.seconds, done.flops + scoring, round_)
            path.append(point)
            if report is not None:
                report(point)
            return done, scoring

        trunk, scoring = stretch(middle, None, trunk_iterations, False, 0)
        # The rounds' length, now that the cost of an iteration, of starting a fit
        # and of scoring one is known (FLOP counts, the same on every rank)
        if trunk.result.iterations and trunk.flops > trunk.start_flops:
            per_iteration = (trunk.flops - trunk.start_flops) / trunk.result.iterations
            overhead = (scoring + trunk.start_flops) / per_iteration
            _, rounds = schedule(len(grid), units, config.search_budget, overhead)
        if announce is not None:
            announce(trunk_iterations, rounds)
        alive = {C: (trunk, True) for C in grid}  # C -> (where its fit goes on from, branch)
        for round_, iterations in enumerate(rounds, start=1):
            scored = {}
            for C in sorted(alive, reverse=True):
                start, branch = alive[C]
                scored[C] = (stretch(C, start, iterations, branch, round_)[0],
                             path[-1].holdout_accuracy)
                kept = sorted(scored, key=lambda C: (-scored[C][1], _distance(C, middle), C))
            kept = kept[:-(-len(scored) // 2)]
            alive = {C: (scored[C][0], False) for C in kept}
        (winner, _), = alive.values()
        model = problem.gather_model(winner.result.theta)
        arrays = broadcast_arrays(problem.world, model.arrays() if model else None)
        return path, Model.from_arrays(arrays, "the fit -C auto chose")
    finally:
        problem.close()


def phase_flops(flops):
    """The FLOPs of training in a record's `flops` (by phase): all but monitoring's
    (``evaluation``), the cost of a run apart from the machine's load."""
    return float(sum(value for phase, value in flops.items() if phase != Phase.EVALUATION.value))


def training_flops(history):
    """The FLOPs of training in the records `history` (`phase_flops` of each)."""
    return sum(phase_flops(record.flops) for record in history)


def best_C(path):
    """The C the search chose: of the last round's fits, the best held-out accuracy;
    ties go to the smaller C (points as `PathPoint`)."""
    last = max(point.round for point in path)
    best = max((point for point in path if point.round == last),
               key=lambda point: (point.holdout_accuracy, -point.C))
    return best.C
