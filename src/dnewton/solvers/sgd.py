"""Mini-batch SGD with momentum: the baseline the paper compares Newton with.

The step rule on the mini-batch gradient g, in the epoch loop of `minibatch`::

    v = mu v + g                                            (heavy ball; v_0 = 0)
    theta = theta - eta_e v
"""

from dataclasses import dataclass

from .minibatch import MiniBatchOptions, MiniBatchSolver


@dataclass
class SGDOptions(MiniBatchOptions):
    """Hyperparameters of SGD."""

    learning_rate: float = 0.01  # eta
    momentum: float = 0.9  # mu; 0 is plain SGD

    NAME = "sgd"
    RULES = MiniBatchOptions.RULES + (
        ("momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    )

    def describe(self):
        return (f"SGD, mini-batches of {self.mini_batch}, learning rate "
                f"{self.learning_rate:g}, momentum {self.momentum:g}")


class SGDSolver(MiniBatchSolver):
    """Mini-batch SGD with momentum (`minibatch.MiniBatchSolver` says how to call it)."""

    VECTORS = ("velocity",)

    def update(self, g, rate):
        velocity = self.vectors["velocity"]
        velocity *= self.options.momentum
        velocity += g
        self.theta -= rate * velocity
