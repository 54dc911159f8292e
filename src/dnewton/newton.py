"""The subsampled Gauss-Newton method with Levenberg-Marquardt damping (SPEC section 2).

Three pieces, each stopping for a stated reason: `conjugate_gradient` solves for
the direction, `line_search` backtracks along it, and `newton` runs the outer
loop and the damping update. Every decision is taken from values reduced over
all ranks, so the ranks never disagree about what to do next.
"""

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .direction import block_diagonal_direction, full_direction
from .errors import InputError, NumericalError, agreed, everywhere


@dataclass
class NewtonOptions:
    """Hyperparameters; the defaults are the reference's (SPEC section 2)."""

    C: float = 0.01  # regularization: theta'theta / (2 C l)
    gn_ratio: float = 0.05  # |S| = ceil(gn_ratio * l)
    gn_size: object = None  # |S| as a number of instances, instead of gn_ratio
    diagonal: bool = False  # block-diagonal Gauss-Newton (SPEC section 4)
    sync_fraction: float = 1.0  # with diagonal: stop CG once this fraction of blocks is done
    iterations: int = 100
    cg_max: int = 250
    xi: float = 0.1  # CG stops when ||r|| <= xi ||g||
    damping: float = 1.0  # lambda_0
    eta: float = 1e-4  # sufficient-decrease constant
    max_halvings: int = 20  # line search gives up after alpha = 2^-max_halvings
    boost: float = 1.5  # lambda *= boost when rho < 0.25
    drop: float = 2.0 / 3.0  # lambda *= drop when rho >= 0.75
    seed: int = 0

    def check(self):
        """Raise InputError naming the first nonsensical value."""
        rules = [
            (self.C > 0 and math.isfinite(self.C), "-C must be a positive number"),
            (0 < self.gn_ratio <= 1, "--gn-ratio must be in (0, 1]"),
            (self.gn_size is None or self.gn_size >= 1, "--gn-size must be >= 1"),
            (0 < self.sync_fraction <= 1, "--sync-fraction must be in (0, 1]"),
            (self.sync_fraction == 1 or self.diagonal, "--sync-fraction needs --diagonal"),
            (self.iterations >= 0, "--iterations must be >= 0"),
            (self.cg_max >= 1, "--cg-max must be >= 1"),
            (0 < self.xi < 1, "--xi must be in (0, 1)"),
            (self.damping >= 0 and math.isfinite(self.damping), "--lambda must be >= 0"),
            (0 < self.eta < 1, "eta must be in (0, 1)"),
            (self.max_halvings >= 0, "max_halvings must be >= 0"),
            (self.boost >= 1 and 0 < self.drop <= 1, "need boost >= 1 and 0 < drop <= 1"),
        ]
        for ok, message in rules:
            if not ok:
                raise InputError(message)


@dataclass
class LineSearchResult:
    alpha: float  # accepted step (0 when it failed)
    f: float  # f(theta + alpha d) (f(theta) when it failed)
    trials: int  # function evaluations spent
    reason: str  # "sufficient_decrease" | "not_descent" | "too_many_halvings"


def line_search(value, theta, d, f, gd, eta, max_halvings):
    """Backtracking: alpha = 1, 1/2, ... until f(theta + alpha d) <= f + eta alpha g'd.

    A direction with g'd >= 0 is refused at once (no step can satisfy the test
    with a decrease); otherwise at most ``max_halvings + 1`` values are tried.
    """
    if not gd < 0:
        return LineSearchResult(0.0, f, 0, "not_descent")
    alpha = 1.0
    for trial in range(1, max_halvings + 2):
        f_trial = value(theta + alpha * d)
        if f_trial <= f + eta * alpha * gd:  # False for NaN: keep halving
            return LineSearchResult(alpha, f_trial, trial, "sufficient_decrease")
        alpha /= 2.0
    return LineSearchResult(0.0, f, max_halvings + 1, "too_many_halvings")


@dataclass
class IterationRecord:
    """One line of the run log (SPEC section 5); iteration 0 is the starting point."""

    iter: int
    f: float  # objective at the iterate reached
    gnorm: float  # ||g|| there
    cg_iters: object = None
    cg_reason: object = None
    cg_iters_per_block: object = None  # [min, median, max] over all blocks
    sync_stopped_blocks: object = None  # blocks whose CG the synchronization cut off
    alpha: object = None
    line_search_trials: object = None
    line_search_reason: object = None
    lambda_: object = None  # damping used in this iteration's CG
    rho: object = None  # actual / predicted reduction
    time: float = 0.0  # training seconds since the start (test scoring excluded)
    iteration_time: float = 0.0  # training seconds of this iteration
    test_accuracy: object = None
    bytes: dict = field(default_factory=dict)

    def as_dict(self):
        record = asdict(self)
        record["lambda"] = record.pop("lambda_")
        return record

    @classmethod
    def from_dict(cls, record):
        """The inverse of `as_dict` (for a history read back from a checkpoint)."""
        record = dict(record)
        record["lambda_"] = record.pop("lambda")
        return cls(**record)


@dataclass
class NewtonState:
    """Where a run stands after iteration `iteration`: enough to continue it exactly.

    The run's f and ||g|| there are ``history[-1]``; g itself is recomputed from
    `theta` on resumption, so a state holds no gradient.
    """

    iteration: int
    theta: np.ndarray  # this rank's parameters
    damping: float  # lambda for the next iteration
    subsets: dict  # ``bit_generator.state`` of the subset generator
    history: list  # IterationRecord of iterations 0..iteration


@dataclass
class NewtonResult:
    """Final parameters (this rank's part) and how the run ended."""

    theta: np.ndarray
    f: float
    gnorm: float
    iterations: int
    status: str  # "iteration_limit" | "line_search_failed" | "numerical_error"
    message: str
    history: list


_STOP_MESSAGES = {
    "iteration_limit": "reached the iteration limit",
    "not_descent": "the CG direction is not a descent direction (g'd >= 0)",
    "too_many_halvings": "the line search found no sufficient decrease after {n} halvings",
}


def newton(objective, theta, options, monitor=None, evaluate=None, resume=None,
           checkpoint=None):
    """Minimise `objective` from `theta` (this rank's parameter vector).

    Parameters
    ----------
    objective : objective.Objective
    theta : (n,) local parameters; not modified. Unused (may be None) with `resume`.
    options : NewtonOptions
    monitor : callable(IterationRecord) or None
        Called on every rank after every iteration (and for iteration 0).
    evaluate : callable(theta) -> float or None
        Test accuracy, collective; called after every iteration when given.
    resume : NewtonState or None
        Continue from this state: the iterations that follow, and their records,
        are those the uninterrupted run would have produced.
    checkpoint : callable(NewtonState) or None
        Called on every rank after every completed iteration (it may be collective).

    Returns
    -------
    NewtonResult
    """
    groups = objective.groups
    with agreed(groups.world):
        options.check()
    counter = groups.counter
    subsets = np.random.default_rng(np.random.SeedSequence(options.seed, spawn_key=(2,)))
    start = time.perf_counter()
    if resume is None:
        theta, damping, history = theta.copy(), options.damping, []
    else:
        theta, damping, history = resume.theta.copy(), resume.damping, list(resume.history)
        subsets.bit_generator.state = resume.subsets
        start -= history[-1].time  # the run's clock goes on from the checkpoint

    def finish_record(record, began):
        nonlocal start
        now = time.perf_counter()
        record.time, record.iteration_time = now - start, now - began
        if evaluate is not None:
            # Monitoring, not training: the clock stops while the test set is scored.
            record.test_accuracy = float(evaluate(theta))
            start += time.perf_counter() - now
        record.bytes = counter.collect(groups.world)
        history.append(record)
        if monitor is not None:
            monitor(record)

    n_subset = objective.subset_size(options.gn_ratio, options.gn_size)
    f, g = objective.value_and_gradient(theta)
    gnorm = _norm(groups, g)
    if not (np.isfinite(f) and np.isfinite(gnorm)):
        raise everywhere(NumericalError(
            f"the starting point has f = {f}, ||g|| = {gnorm}: are the features scaled "
            "(--feature-scale, --center)?"
        ))
    if resume is None:
        finish_record(IterationRecord(0, f, gnorm), start)
    else:
        # The bytes so far (this re-evaluation, the caller's checks) belong to no
        # iteration: the uninterrupted run evaluated f and g here in the iteration
        # the checkpoint ends with, and counted them there.
        counter.collect(groups.world)
    status, message = "iteration_limit", _STOP_MESSAGES["iteration_limit"]
    k = done = len(history) - 1  # iterations already run (0 unless resuming)
    for k in range(done + 1, options.iterations + 1):
        began = time.perf_counter()
        subset = np.sort(subsets.choice(objective.n_instances, n_subset, replace=False))
        operator = objective.gauss_newton(theta, subset)
        operator.damping = damping
        try:
            if options.diagonal:
                step = block_diagonal_direction(operator, g, options, groups)
            else:
                step = full_direction(operator, g, gnorm, options, groups)
        except NumericalError as exc:  # raised on every rank alike (reduced values)
            status, message = "numerical_error", f"iteration {k}: {exc}"
            break
        d = step.d
        gd, dd, dAd = groups.allsum([np.dot(g, d), np.dot(d, d), np.dot(d, step.Ad)])
        search = line_search(
            objective.value, theta, d, f, gd, options.eta, options.max_halvings
        )
        record = IterationRecord(
            k, f, gnorm, step.cg_iters, step.cg_reason, step.cg_iters_per_block,
            step.sync_stopped_blocks, search.alpha, search.trials, search.reason, damping,
        )
        if search.alpha == 0.0:
            status = "line_search_failed"
            message = _STOP_MESSAGES[search.reason].format(n=options.max_halvings)
            finish_record(record, began)
            break
        # rho = actual / predicted reduction, predicted with G_S (no damping term).
        dGd = dAd - damping * dd
        predicted = search.alpha * gd + 0.5 * search.alpha**2 * dGd
        rho = (search.f - f) / predicted
        if rho < 0.25:
            damping *= options.boost
        elif rho >= 0.75:
            damping *= options.drop
        theta_next = theta + search.alpha * d
        f_next, g_next = objective.value_and_gradient(theta_next)
        gnorm_next = _norm(groups, g_next)
        if not (np.isfinite(f_next) and np.isfinite(gnorm_next)):
            # Keep the last good iterate: the caller can still save it.
            status = "numerical_error"
            message = f"iteration {k}: f = {f_next}, ||g|| = {gnorm_next} after the step"
            break
        theta, f, g, gnorm = theta_next, f_next, g_next, gnorm_next
        record.f, record.gnorm, record.rho = f, gnorm, float(rho)
        finish_record(record, began)
        if checkpoint is not None:
            checkpoint(NewtonState(k, theta, damping, subsets.bit_generator.state, history))
    return NewtonResult(theta, f, gnorm, k, status, message, history)


def _norm(groups, v):
    (vv,) = groups.allsum([np.dot(v, v)], "other")
    return float(np.sqrt(vv))
