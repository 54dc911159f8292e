"""Inner-product spaces: how a solver forms dots and norms of vectors that may be
split over ranks, without knowing that they are.

A solver holds a space and calls ``dot``, ``dots`` (several dots in one
reduction, as PETSc's VecMDot) and ``norm`` on its local vectors; ``sum`` adds
up partial sums it formed itself (CG's fused update returns r.r of the local
part). `LocalSpace` is NumPy alone, for vectors that live whole in one process;
`GroupSpace` sums the local parts over a communication group, one in-place
allreduce per call, with its bytes counted in the phase it was made for. The
caller picks the group and the phase; the solver sees neither.
"""

import math

import numpy as np

from .. import _kernels as K
from .phases import Phase


def local_dot(x, y):
    """x . y of two local vectors as a float64 sum, whatever their precision
    (float32 vectors would otherwise be summed in float32)."""
    if x.dtype == np.float64:
        return float(np.dot(x, y))
    return K.dot(x, y)


class LocalSpace:
    """Vectors that live whole in this process: no communication."""

    def sum(self, partials):
        """The totals of `partials` (a sequence of floats), as a float64 array."""
        return np.array(partials, dtype=np.float64)

    def dot(self, x, y):
        """x . y"""
        return float(self.dots([(x, y)])[0])

    def dots(self, pairs):
        """[x . y for (x, y) in pairs], as an array, in one reduction."""
        return self.sum([local_dot(x, y) for x, y in pairs])

    def norm(self, x):
        """||x||"""
        return math.sqrt(self.dot(x, x))


class GroupSpace(LocalSpace):
    """Vectors split over the ranks of `group` (a `groups.Group`).

    Every call is collective over the group: each rank passes its own part.
    `phase` is the `Phase` the reductions are counted in.
    """

    def __init__(self, group, phase):
        self.group = group
        self.phase = Phase(phase)

    def sum(self, partials):
        totals = np.array(partials, dtype=np.float64)
        self.group.allreduce(totals, self.phase)
        return totals
