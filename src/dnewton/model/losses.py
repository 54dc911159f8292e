"""Losses on the linear output z^L, with the Gauss-Newton weight B of each.

Each loss is a small object with one interface, so the objective and the
Gauss-Newton product never ask which loss they hold. Arrays: ``z`` is (n, n_L)
outputs, ``y`` is (n,) class indices in 0..n_L-1 (the squared loss also takes
(n, n_L) real targets: regression). Whatever the network's
precision, losses, their derivatives and B are float64: they are few numbers
(n_L per instance), and f is a long sum.
"""

import numpy as np

from ..errors import ParameterError


def _wide(z):
    return np.asarray(z, dtype=np.float64)


class SquaredLoss:
    """``||z - t||^2`` per instance, t = onehot(y) for class indices y (the
    reference's loss) or t = y for real targets y (n, n_L); B = 2 I."""

    name = "squared"
    constant_curvature = True

    @staticmethod
    def _residual(z, y):
        r = np.array(z, dtype=np.float64)
        if np.ndim(y) == 2:
            r -= y
        else:
            r[np.arange(len(y)), y] -= 1.0
        return r

    def value(self, z, y):
        """Sum of the per-instance losses."""
        r = self._residual(z, y)
        return float(np.einsum("ij,ij->", r, r))

    def gradient(self, z, y):
        """d loss_i / d z_i, (n, n_L)."""
        r = self._residual(z, y)
        r *= 2.0
        return r

    def curvature(self, z):
        """What `apply_curvature` needs of the outputs: nothing, B is constant."""
        return None

    @staticmethod
    def probabilities(z):
        """The Euclidean projection of every row of z onto the probability simplex.

        Least squares against one-hot labels makes z estimate the class
        probabilities, but not within [0, 1]. The projection max(z - tau, 0), tau
        chosen per row so it sums to 1, is the nearest probability vector and keeps
        the order of the outputs (so the same argmax).
        """
        descending = -np.sort(-z, axis=1)
        excess = np.cumsum(descending, axis=1) - 1.0
        count = np.arange(1, z.shape[1] + 1)
        support = np.sum(descending - excess / count > 0, axis=1)  # >= 1 for every row
        tau = excess[np.arange(len(z)), support - 1] / support
        return np.maximum(z - tau[:, None], 0.0)

    def apply_curvature(self, state, u):
        """B_i u_i for every instance, (n, n_L)."""
        return 2.0 * u


class SoftmaxLoss:
    """Softmax cross-entropy ``-log p_y``, p = softmax(z); B = diag(p) - p p^T."""

    name = "softmax"
    constant_curvature = False

    @staticmethod
    def probabilities(z):
        """softmax of every row of z."""
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def value(self, z, y):
        z = _wide(z)
        zmax = z.max(axis=1)
        log_norm = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
        return float(np.sum(log_norm - z[np.arange(len(y)), y]))

    def gradient(self, z, y):
        g = self.probabilities(_wide(z))
        g[np.arange(len(y)), y] -= 1.0
        return g

    def curvature(self, z):
        return np.ascontiguousarray(self.probabilities(_wide(z)))

    def apply_curvature(self, p, u):
        return p * (u - np.einsum("ij,ij->i", p, u)[:, None])


LOSSES = {cls.name: cls for cls in (SquaredLoss, SoftmaxLoss)}


def make_loss(name):
    """The loss called `name` ("squared" or "softmax")."""
    if name not in LOSSES:
        raise ParameterError(f"{{loss}} {name!r} is unknown; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]()
