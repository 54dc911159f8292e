"""Early stopping on a validation split, with scikit-learn's names and meanings.

``early_stopping`` sets aside `EarlyStopping.validation_fraction` of the training
set (stratified, seeded by the run's seed) and trains on the rest. After every
epoch the model's accuracy on the set-aside part is its validation score
(`app.training.SolverRun.validates` says which records end an epoch). As in
`sklearn.neural_network.MLPClassifier`:

* a score above the best so far makes that model the best (it is kept);
* a score below best + `tol` counts as no improvement, anything else resets
  the count;
* the run stops once the count exceeds `n_iter_no_change`, and whatever ends
  the run, the model it returns is the best validated one.

The scores are reduced over the ranks before they are compared, so every rank
takes the same decision.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import check_parameters


@dataclass
class EarlyStopping:
    """When to stop for lack of progress on held-out data (scikit-learn's defaults)."""

    validation_fraction: float = 0.1  # share of the training set set aside
    n_iter_no_change: int = 10  # epochs (validations) without improvement tolerated
    tol: float = 1e-4  # an improvement is a score above best + tol

    RULES = (
        ("validation_fraction", lambda v: 0 < v < 1, "must be a fraction between 0 and 1"),
        ("n_iter_no_change", lambda v: isinstance(v, numbers.Integral) and v >= 1,
         "must be a whole number >= 1"),
        ("tol", lambda v: v >= 0 and math.isfinite(v), "must be >= 0"),
    )

    def check(self):
        """Raise ParameterError naming the first nonsensical value."""
        check_parameters(self, self.RULES)


class BestModel:
    """The best validated parameters so far, and whether to stop.

    `theta` is this rank's part of the parameter vector (a copy is kept).
    """

    def __init__(self, options):
        self.options = options
        self.score = -math.inf  # the best validation score
        self.iteration = None  # where it was reached
        self.theta = None
        self.no_improvement = 0

    def update(self, iteration, score, theta):
        """Take the validation `score` of the model `theta` after `iteration` (the
        end of an epoch); returns True when the run should stop."""
        if score < self.score + self.options.tol:
            self.no_improvement += 1
        else:
            self.no_improvement = 0
        if score > self.score:
            self.score, self.iteration, self.theta = score, iteration, theta.copy()
        return self.no_improvement > self.options.n_iter_no_change

    def message(self):
        """Why the run stopped, for the log and the result."""
        return (f"the validation score has not risen by {self.options.tol:g} for "
                f"{self.no_improvement} epoch(s) (more than "
                f"{self.options.n_iter_no_change}); kept the best validated model, "
                f"{100 * self.score:.2f}% at iteration {self.iteration}")

    # -- checkpoints: the tracker's state beside the solver's ------------------------

    def state(self):
        """(scalars, vectors) to store in a checkpoint."""
        scalars = {"best_score": self.score, "best_iteration": self.iteration,
                   "no_improvement": self.no_improvement}
        return scalars, ({} if self.theta is None else {"best_theta": self.theta})

    def restore(self, scalars, vectors):
        """Take back what `state` stored (removing it from `scalars` and `vectors`)."""
        self.score = scalars.pop("best_score", -math.inf)
        self.iteration = scalars.pop("best_iteration", None)
        self.no_improvement = scalars.pop("no_improvement", 0)
        theta = vectors.pop("best_theta", None)
        self.theta = None if theta is None else np.array(theta)
