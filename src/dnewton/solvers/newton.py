"""Subsampled Gauss-Newton with Levenberg-Marquardt damping and a line search
(docs/design.md, "One Newton iteration"), on all the data or on samples.

With a `sample_size`, every iteration works on a fresh random sample B of the
instances (docs/design.md, "Stochastic Newton"): f, its gradient, the line search
and rho are those of B's objective (`Objective.sample`), the Gauss-Newton subset
S is drawn inside B, and |B| may grow geometrically from one iteration to the
next. Without one (the paper's method) B is always the whole training set.

With `average` > 0 the network the run scores and returns (`model`) is the
exponential moving average of the iterates, bias-corrected as Adam's moments
are: steps on samples jitter around the minimiser, and their average sits closer
to it (Polyak-Ruppert averaging).

`NewtonSolver` runs one iteration per `step`; the caller owns the loop, the
clock, the bytes, the progress output and the checkpoints. The solver sees the
problem only through callables: the objective (f, its gradient, the
Gauss-Newton operator), an inner-product space for its scalars, and a direction
solver (`direction.FullCG` or `direction.BlockDiagonalCG`). Every decision is
taken from values the space has summed, so on many ranks all of them decide
alike, and the same code runs with a NumPy-only space in one process.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..constants import Stream, random_stream
from ..errors import (
    NumericalError,
    ParameterError,
    alike_everywhere,
    check_parameters,
    everywhere,
)
from ..run_records import IterationRecord, RunStatus, SolverState
from .line_search import LineSearchReason, line_search

# Levenberg-Marquardt: the ratio rho of actual to predicted reduction says how far
# the quadratic model can be trusted.
RHO_POOR = 0.25  # below: the model over-promised; damp more (lambda *= boost)
RHO_GOOD = 0.75  # at or above: the model is trustworthy; damp less (lambda *= drop)


@dataclass
class NewtonOptions:
    """Hyperparameters; the defaults are the reference's (docs/design.md)."""

    gn_ratio: float = 0.05  # |S| = ceil(gn_ratio * l)
    gn_size: object = None  # |S| as a number of instances, instead of gn_ratio
    gn_min: int = 1  # with gn_ratio: |S| holds at least min(gn_min, |B| or l) instances
    sample_size: object = None  # |B| of the first iteration; None: all instances
    sample_growth: float = 1.0  # |B| of the next iteration = ceil(growth |B|), at most l
    average: float = 0.0  # beta of the moving average of the iterates (0: the last iterate)
    diagonal: bool = False  # block-diagonal Gauss-Newton
    sync_fraction: float = 1.0  # with diagonal: stop CG once this fraction of blocks is done
    iterations: int = 100
    cg_max: int = 250
    xi: float = 0.1  # CG stops when ||r|| <= xi ||g||
    damping: float = 1.0  # lambda_0
    eta: float = 1e-4  # sufficient-decrease constant
    max_halvings: int = 20  # line search gives up after alpha = 2^-max_halvings
    boost: float = 1.5  # lambda *= boost when rho < RHO_POOR
    drop: float = 2.0 / 3.0  # lambda *= drop when rho >= RHO_GOOD
    seed: int = 0

    NAME = "newton"  # the solver's name on the command line and in checkpoints
    RULES = (
        ("gn_ratio", lambda v: 0 < v <= 1, "must be in (0, 1]"),
        ("gn_size", lambda v: v is None or v >= 1, "must be >= 1"),
        ("gn_min", lambda v: isinstance(v, numbers.Integral) and v >= 1,
         "must be a whole number >= 1"),
        ("sample_size", lambda v: v is None or v >= 1, "must be >= 1"),
        ("sample_growth", lambda v: v >= 1 and math.isfinite(v), "must be >= 1"),
        (None, lambda o: o.sample_growth == 1 or o.sample_size is not None,
         "{sample_growth} needs {sample_size}"),
        ("average", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("sync_fraction", lambda v: 0 < v <= 1, "must be in (0, 1]"),
        (None, lambda o: o.sync_fraction == 1 or o.diagonal, "{sync_fraction} needs {diagonal}"),
        ("iterations", lambda v: v >= 0, "must be >= 0"),
        ("cg_max", lambda v: v >= 1, "must be >= 1"),
        ("xi", lambda v: 0 < v < 1, "must be in (0, 1)"),
        ("damping", lambda v: v >= 0 and math.isfinite(v), "must be >= 0"),
        ("eta", lambda v: 0 < v < 1, "must be in (0, 1)"),
        ("max_halvings", lambda v: v >= 0, "must be >= 0"),
        ("boost", lambda v: v >= 1, "must be >= 1"),
        ("drop", lambda v: 0 < v <= 1, "must be in (0, 1]"),
        ("seed", lambda v: isinstance(v, numbers.Integral) and v >= 0,
         "must be a whole number >= 0"),
    )

    def check(self):
        """Raise ParameterError naming the first nonsensical value."""
        check_parameters(self, self.RULES)

    def samples(self, n_instances):
        """Whether a run on `n_instances` works on samples (fewer than all of them)."""
        return self.sample_size is not None and self.sample_size < n_instances

    def fixed_sample(self, n_instances):
        """|B| of every iteration of a run on `n_instances` that works on samples of
        one size; None when it works on all instances or on a growing sample."""
        if self.samples(n_instances) and self.sample_growth == 1:
            return self.sample_size
        return None

    def largest_subset(self, n_instances):
        """The largest |S| a run on `n_instances` draws (what memory must hold): of
        the first sample, or once a growing one holds them all, of all of them."""
        return self.subset_size(n_instances, self.fixed_sample(n_instances))

    def subset_size(self, n_instances, sample=None):
        """|S| for l = `n_instances`: `gn_size` if given (at most l), else
        ceil(gn_ratio l), at least min(gn_min, l). With a `sample` of |B| instances:
        of |B| (`gn_size` then taken as at most |B|)."""
        if sample is not None and sample < n_instances:
            if self.gn_size is not None:
                return min(int(self.gn_size), sample)
            return max(math.ceil(self.gn_ratio * sample), min(self.gn_min, sample))
        if self.gn_size is not None:
            if self.gn_size > n_instances:
                raise ParameterError(
                    f"{{gn_size}} {self.gn_size} exceeds the {n_instances} training instances"
                )
            return int(self.gn_size)
        return max(math.ceil(self.gn_ratio * n_instances), min(self.gn_min, n_instances))


# The recommended setting for large training sets (bench/time_to_accuracy.py and
# bench/studies/sample_settings.py; the numbers in docs/benchmarks.md): from
# STOCHASTIC_FROM instances on, samples of 2,000, Gauss-Newton subsets of a fifth of
# the sample, CG capped at 10 iterations and the moving average of the iterates,
# 400 iterations, reach a given test accuracy soonest; smaller samples take fewer
# FLOPs but run them slower. On smaller sets the paper's method is the sooner.
STOCHASTIC_FROM = 10_000
STOCHASTIC = {"sample_size": 2000, "gn_ratio": 0.2, "cg_max": 10, "average": 0.95,
              "iterations": 400}

# The recommended setting's Gauss-Newton subset holds at least this many instances
# (all of them on smaller sets): the curvature's sampling error depends on |S|, not
# on |S| / l, and 5% of a few hundred instances is a handful (7 on the suite's wine,
# where one seed of three then ended 7 points lower; all 133 reach 97.78% on every
# seed). 200 keeps the MNIST subset's time to 92% (S 100 -> 200); 400 cost it a
# tenth (docs/benchmarks.md, "Time to a good model"). The stochastic setting's S, a
# fifth of 2,000, is above it.
SUBSET_FLOOR = 200


def subset_floor(given):
    """The recommended ``gn_min`` for the options a user set (a dict): `SUBSET_FLOOR`
    unless `given` names a ``gn_ratio`` or ``gn_size`` of its own, then 1."""
    if "gn_ratio" in given or given.get("gn_size") is not None:
        return 1
    return SUBSET_FLOOR


def recommended(n_instances, given):
    """`NewtonOptions` for a training set of `n_instances`, from `given`, the options a
    user set (a dict; ``sample_size=None`` asks for the paper's method): unless `given`
    names a sample size of its own (or None), beyond `STOCHASTIC_FROM` instances what
    it leaves unset is taken from `STOCHASTIC`, and without a ``gn_ratio`` or
    ``gn_size`` of its own S holds at least `SUBSET_FLOOR` instances."""
    if "sample_size" not in given:
        given = {"gn_min": subset_floor(given), **given}
        if n_instances > STOCHASTIC_FROM:
            given = {**STOCHASTIC, **given}
    return NewtonOptions(**given)


_STOP_MESSAGES = {
    RunStatus.ITERATION_LIMIT: "reached the iteration limit",
    LineSearchReason.NOT_DESCENT: "the CG direction is not a descent direction (g'd >= 0)",
    LineSearchReason.TOO_MANY_HALVINGS:
        "the line search found no sufficient decrease after {n} halvings",
}


class NewtonSolver:
    """Minimise an objective by subsampled Gauss-Newton, one iteration per `step`.

    Parameters
    ----------
    objective : model.objective.Objective, or anything with ``n_instances``,
        ``evaluate(theta) -> point`` (``float(point)`` is f; ``point.theta``),
        ``gradient(point) -> g`` and ``gauss_newton(point, subset, damping)``.
        The point of an accepted step serves its gradient and the next
        Gauss-Newton operator, so the objective can reuse its forward pass.
    space : parallel.space space
        Where the parameter vector lives; sums g'd, d'd, d'Ad and ||g||.
    direction : callable (operator, g, gnorm) -> direction.Direction
    options : NewtonOptions

    After `start` (or `resume`), call `step` until `done`; `status` and
    `message` then say why the run stopped.
    """

    def __init__(self, objective, space, direction, options):
        with alike_everywhere():  # the same options and data size on every rank
            options.check()
            options.subset_size(objective.n_instances)  # refuses a gn_size beyond l
        self.objective = objective
        self.sampling = options.samples(objective.n_instances)
        self.space = space
        self.direction = direction
        self.options = options
        self.subsets = random_stream(options.seed, Stream.GAUSS_NEWTON_SUBSETS)
        self.status = None
        self.message = None

    # -- the run --------------------------------------------------------------------

    def start(self, theta):
        """Evaluate the starting point; returns the record of iteration 0."""
        self.iteration, self.damping = 0, self.options.damping
        self.sample_size = self.options.sample_size
        self.averaged, self.average_steps = np.zeros_like(theta), 0
        self._evaluate_start(theta.copy())
        return IterationRecord(0, self.f, self.gnorm, sample_size=self._logged_sample_size())

    def resume(self, state, record=None):
        """Continue from a `records.SolverState` of this solver: what follows is what
        the uninterrupted run did. f and g are recomputed at the state's theta (the
        log record of that iteration is not needed)."""
        self.iteration, self.damping = state.iteration, state.scalars["damping"]
        self.sample_size = state.scalars.get("sample_size", self.options.sample_size)
        self.average_steps = state.scalars.get("average_steps", 0)
        self.averaged = state.vectors.get("averaged", np.zeros_like(state.theta)).astype(
            state.theta.dtype, copy=True)
        self.subsets.bit_generator.state = state.generator
        self._evaluate_start(state.theta.copy())

    @property
    def done(self):
        return self.status is not None

    def step(self):
        """One Newton iteration; returns its record, or None if it failed before a step."""
        k, options = self.iteration + 1, self.options
        self.iteration = k
        objective = self.current  # B's objective (all instances without sampling)
        operator = objective.gauss_newton(self.point, self._draw_subset(objective.n_instances),
                                          self.damping)
        step = self.direction(operator, self.g, self.gnorm)
        if step.cg_reason.failed:
            return self._stop(RunStatus.NUMERICAL_ERROR, f"iteration {k}: {step.failure}")
        d = step.d
        gd, dd, dAd = self.space.dots([(self.g, d), (d, d), (d, step.Ad)])
        search = line_search(objective.evaluate, self.theta, d, self.f, gd, options.eta,
                             options.max_halvings)
        record = IterationRecord(
            k, self.f, self.gnorm, step.cg_iters, step.cg_reason, step.cg_iters_per_block,
            step.sync_stopped_blocks, search.alpha, search.trials, search.reason, self.damping,
            sample_size=self._logged_sample_size(),
        )
        if search.alpha == 0.0:
            message = _STOP_MESSAGES[search.reason].format(n=options.max_halvings)
            self._stop(RunStatus.LINE_SEARCH_FAILED, message)
            return record
        rho = self._reduction_ratio(search, gd, dd, dAd)
        self.damping = self._next_damping(rho)
        point = search.point
        if self.sampling:  # f and g at the new point on the next iteration's sample
            self.sample_size = min(self.objective.n_instances,
                                   math.ceil(self.sample_size * options.sample_growth))
            objective = self._draw_sample()
            if objective is not self.current:  # (once B is all instances, it stays so)
                point = objective.evaluate(point.theta)
        f, g = float(point), objective.gradient(point)
        gnorm = self.space.norm(g)
        if not (np.isfinite(f) and np.isfinite(gnorm)):
            # Keep the last good iterate: the caller can still save it.
            return self._stop(RunStatus.NUMERICAL_ERROR,
                              f"iteration {k}: f = {f}, ||g|| = {gnorm} after the step")
        self.current = objective
        self.point, self.theta, self.f, self.g, self.gnorm = point, point.theta, f, g, gnorm
        if options.average:
            self.averaged *= options.average
            self.averaged += (1.0 - options.average) * self.theta
            self.average_steps += 1
        record.f, record.gnorm, record.rho = f, gnorm, float(rho)
        if k >= options.iterations:
            self._stop(RunStatus.ITERATION_LIMIT, _STOP_MESSAGES[RunStatus.ITERATION_LIMIT])
        return record

    def measure(self, record):
        """Nothing to measure: Newton's f and ||g|| are part of the method."""
        return record

    @property
    def model(self):
        """The network the run scores and returns: the iterate, or with `average` the
        bias-corrected moving average of the iterates after the first step."""
        if not self.average_steps:
            return self.theta
        return self.averaged / (1.0 - self.options.average ** self.average_steps)

    def state(self):
        """The `records.SolverState` after the last completed iteration. With
        sampling, the generator as it was before the next iteration's sample was
        drawn, and that sample's size: `resume` draws the same sample again."""
        scalars, vectors = {"damping": self.damping}, {}
        if self.options.average:
            scalars["average_steps"] = self.average_steps
            vectors["averaged"] = self.averaged
        if not self.sampling:
            return SolverState(self.iteration, self.theta, self.subsets.bit_generator.state,
                               scalars, vectors)
        scalars["sample_size"] = self.sample_size
        return SolverState(self.iteration, self.theta, self._before_sample, scalars, vectors)

    # -- the named steps ------------------------------------------------------------

    def _evaluate_start(self, theta):
        self.current = self._draw_sample() if self.sampling else self.objective
        self.point, self.theta = self.current.evaluate(theta), theta
        self.f, self.g = float(self.point), self.current.gradient(self.point)
        self.gnorm = self.space.norm(self.g)
        if not (np.isfinite(self.f) and np.isfinite(self.gnorm)):
            raise everywhere(NumericalError.naming(
                f"the starting point has f = {self.f}, ||g|| = {self.gnorm}: are the "
                "features scaled ({feature_scale}, {center}), and is {C} sensible?"
            ))
        if self.iteration >= self.options.iterations:
            self._stop(RunStatus.ITERATION_LIMIT, _STOP_MESSAGES[RunStatus.ITERATION_LIMIT])

    def _draw_subset(self, n_instances):
        """This iteration's Gauss-Newton subset S of `n_instances` (l, or |B| with
        sampling), the same on every rank."""
        size = self.options.subset_size(self.objective.n_instances,
                                        n_instances if self.sampling else None)
        return np.sort(self.subsets.choice(n_instances, size, replace=False))

    def _draw_sample(self):
        """The objective of a fresh sample B of `sample_size` instances (the same on
        every rank); remembers the generator's state before the draw (`state`)."""
        self._before_sample = self.subsets.bit_generator.state
        index = np.sort(self.subsets.choice(self.objective.n_instances, self.sample_size,
                                            replace=False))
        return self.objective.sample(index)

    def _logged_sample_size(self):
        """|B| for the log: None without sampling (the paper's log has no such field)."""
        return self.sample_size if self.sampling else None

    def _reduction_ratio(self, search, gd, dd, dAd):
        """rho = actual / predicted reduction, predicted with G_S (no damping term)."""
        dGd = dAd - self.damping * dd
        predicted = search.alpha * gd + 0.5 * search.alpha**2 * dGd
        return (search.f - self.f) / predicted

    def _next_damping(self, rho):
        """Levenberg-Marquardt: trust the model more or less after this step."""
        if rho < RHO_POOR:
            return self.damping * self.options.boost
        if rho >= RHO_GOOD:
            return self.damping * self.options.drop
        return self.damping

    def _stop(self, status, message):
        self.status, self.message = status, message
