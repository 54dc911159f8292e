"""Sums over the replicas, the copies of the layout (``--replicas``; docs/design.md,
"Copies of the layout").

Each replica forms its part of a sum over instances (the gradient, a Gauss-Newton
product) on its share of them; what every replica would add alike (theta / (C l),
the product's shift (1/(C l) + lambda) v) is added by the first replica alone, and
one allreduce over `Groups.replicas` (phase ``replicas``) adds the parts. Without
replicas, `start` is the plain start of the sum and the sums return at once.
"""

import numpy as np

from ..parallel.phases import Phase


class Replicas:
    """The start and the sum over replicas of sums over instances, for `network`'s rank."""

    def __init__(self, network):
        self.groups = network.groups
        self.ledger = network.ledger
        self.active = self.groups.n_replicas > 1
        self._bufs = {}  # by size: the block-diagonal operators sum one block at a time

    def start(self, v, scale, out=None):
        """`out` (or a new array) set to where this replica's part of a sum starts:
        scale v in the first replica, zero in the others."""
        if out is None:
            out = np.empty_like(v)
        if self.active and not self.groups.leads_replicas:
            out[:] = 0.0
        else:
            np.multiply(v, scale, out=out)
        return out

    def sum(self, vec):
        """Sum `vec` over the replicas, in place, in its own precision; returns it."""
        if self.active:
            with self.ledger.phase(Phase.REPLICAS):
                self.groups.replicas.allreduce(vec, Phase.REPLICAS)
        return vec

    def sum_with(self, out, quadratic):
        """Sum `out` over the replicas, in place, and in one more slot of the same
        allreduce, in `out`'s precision (half the bytes in float32), the float
        `quadratic`; returns its sum."""
        if not self.active:
            return quadratic
        buf = self._bufs.get((out.size, out.dtype))
        if buf is None:
            buf = self._bufs[out.size, out.dtype] = np.empty(out.size + 1, dtype=out.dtype)
        buf[:-1] = out
        buf[-1] = quadratic
        self.sum(buf)
        out[:] = buf[:-1]
        return float(buf[-1])
