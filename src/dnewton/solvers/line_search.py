"""Backtracking line search with the sufficient-decrease (Armijo) test."""

from dataclasses import dataclass

from ..constants import Name


class LineSearchReason(Name):
    """Why a line search stopped."""

    SUFFICIENT_DECREASE = "sufficient_decrease"  # a step was accepted
    NOT_DESCENT = "not_descent"  # g'd >= 0: no step along d can decrease f
    TOO_MANY_HALVINGS = "too_many_halvings"  # every step tried failed the test


@dataclass
class LineSearchResult:
    alpha: float  # accepted step (0 when it failed)
    f: float  # f(theta + alpha d) (f(theta) when it failed)
    trials: int  # function evaluations spent
    reason: LineSearchReason
    point: object = None  # what `evaluate` returned at the accepted step


def line_search(evaluate, theta, d, f, gd, eta, max_halvings):
    """Backtracking: alpha = 1, 1/2, ... until f(theta + alpha d) <= f + eta alpha g'd.

    ``evaluate(theta)`` gives f, as a float or as anything ``float()`` turns into f
    (the objective's evaluation, which the caller reuses at the accepted step). A
    direction with g'd >= 0 is refused at once (no step can satisfy the test with
    a decrease); otherwise at most ``max_halvings + 1`` values are tried.
    """
    if not gd < 0:
        return LineSearchResult(0.0, f, 0, LineSearchReason.NOT_DESCENT)
    alpha = 1.0
    for trial in range(1, max_halvings + 2):
        point = evaluate(theta + alpha * d)
        f_trial = float(point)
        # The decrease, not f + eta alpha g'd: near a minimum that sum rounds to f, and
        # a step too small to change f (float32 weights) would pass for a decrease.
        if f_trial - f <= eta * alpha * gd:  # False for NaN: keep halving
            return LineSearchResult(alpha, f_trial, trial, LineSearchReason.SUFFICIENT_DECREASE,
                                    point)
        alpha /= 2.0
    return LineSearchResult(0.0, f, max_halvings + 1, LineSearchReason.TOO_MANY_HALVINGS)
