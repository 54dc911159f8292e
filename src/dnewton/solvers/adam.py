"""Adam (Kingma and Ba, 2015): the second first-order baseline.

The step rule on the mini-batch gradient g, the t-th step of the run, in the
epoch loop of `minibatch` (powers and quotients elementwise)::

    m = beta1 m + (1 - beta1) g                      (m_0 = 0)
    v = beta2 v + (1 - beta2) g^2                    (v_0 = 0)
    theta = theta - eta_e (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

m and v are parameter-shaped like theta (each rank its own blocks, in theta's
dtype); being elementwise, the rule sends nothing. t goes on across epochs.
"""

import math
from dataclasses import dataclass

import numpy as np

from .minibatch import MiniBatchOptions, MiniBatchSolver


@dataclass
class AdamOptions(MiniBatchOptions):
    """Hyperparameters of Adam (the paper's defaults)."""

    learning_rate: float = 1e-3  # eta
    beta1: float = 0.9  # decay of the first moment m
    beta2: float = 0.999  # decay of the second moment v
    eps: float = 1e-8  # added to sqrt(v_hat), so a step stays bounded where v is 0

    NAME = "adam"
    RULES = MiniBatchOptions.RULES + (
        ("beta1", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("beta2", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("eps", lambda v: v > 0 and math.isfinite(v), "must be a positive number"),
    )

    def describe(self):
        return (f"Adam, mini-batches of {self.mini_batch}, learning rate "
                f"{self.learning_rate:g}, beta1 {self.beta1:g}, beta2 {self.beta2:g}, "
                f"eps {self.eps:g}")


class AdamSolver(MiniBatchSolver):
    """Adam (`minibatch.MiniBatchSolver` says how to call it)."""

    VECTORS = ("m", "v")

    def update(self, g, rate):
        options, t = self.options, self.steps
        m, v = self.vectors["m"], self.vectors["v"]
        m *= options.beta1
        m += (1.0 - options.beta1) * g
        v *= options.beta2
        g *= g  # g is ours (a fresh array per mini-batch): square it in place
        g *= 1.0 - options.beta2
        v += g
        # The step in g's memory: one parameter-sized temporary per step is enough.
        step = np.divide(v, 1.0 - options.beta2 ** t, out=g)
        np.sqrt(step, out=step)
        step += options.eps
        np.divide(m, step, out=step)
        step *= rate / (1.0 - options.beta1 ** t)
        self.theta -= step
