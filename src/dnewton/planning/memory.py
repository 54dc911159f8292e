"""Memory per rank of a layout, from the layout alone (no MPI, no data).

The run's own formulas (`model.memory`), rank by rank:

* the Gauss-Newton data of |S| instances (`model.memory.gauss_newton_bytes`);
* the two stores of kept forward passes (`model.memory.kept_bytes`);
* the parameter-shaped vectors of a solver (`model.memory.parameter_bytes`);
* the rank's feature blocks (l |a| numbers per input group a it needs, l the
  instances of its replica; CSR: by the stored entries) and, on output ranks, the
  labels (8 bytes per instance).
"""

from ..constants import FLOAT64
from ..model import memory
from .volume import GroupMembers


class RankMemory:
    """Per-rank memory figures of `layout` (one replica)."""

    def __init__(self, layout, groups=None):
        self.layout = layout
        self.groups = groups or GroupMembers(layout)
        n_ranks = layout.n_ranks
        self.blocks = [[] for _ in range(n_ranks)]
        for blk in layout.blocks:
            self.blocks[int(layout.owner[blk.index])].append(blk)
        # (m, b) of the hidden groups each rank joins, m < L
        self.joined = [[] for _ in range(n_ranks)]
        for (m, b), members in self.groups.forward.items():
            for r in members:
                self.joined[r].append((m, b))
        self.outputs = set(self.groups.output)

    def parameters(self, rank):
        return sum(blk.size for blk in self.blocks[rank])

    def hidden_widths(self, rank):
        """|b| of the hidden groups (m, b) whose F(m, b) `rank` is in."""
        return [self.layout.width(m, b) for m, b in self.joined[rank]]

    def pass_numbers(self, rank):
        """Numbers per instance of a forward pass on `rank` (`model.memory.pass_numbers`)."""
        return memory.pass_numbers(self.hidden_widths(rank),
                                   self.layout.widths[-1] if rank in self.outputs else 0)

    def gauss_newton_bytes(self, rank, n_subset, jacobian="stored", itemsize=FLOAT64,
                           input_bytes=None):
        """`model.memory.gauss_newton_bytes` of `rank` for |S| = n_subset."""
        return memory.gauss_newton_bytes(n_subset, self.blocks[rank], self.hidden_widths(rank),
                                         self.layout.widths[-1], itemsize, jacobian,
                                         input_bytes)

    def kept_bytes(self, rank, n_instances, itemsize=FLOAT64):
        """`model.memory.kept_bytes`: two stores of a pass over all l instances."""
        return memory.kept_bytes(n_instances, self.pass_numbers(rank), itemsize)

    def parameter_bytes(self, rank, itemsize=FLOAT64):
        return memory.parameter_bytes(self.parameters(rank), itemsize)

    def data_bytes(self, rank, n_instances, itemsize=FLOAT64, density=None):
        """The feature blocks of the input groups `rank` needs for `n_instances` (its
        replica's share), and its labels: dense, or with `density` (stored entries per
        number) as CSR, a value and an int32 index per entry."""
        inputs = {blk.row for blk in self.blocks[rank] if blk.layer == 1}
        numbers = n_instances * sum(self.layout.width(0, a) for a in inputs)
        if density is None:
            features = itemsize * numbers
        else:
            features = (itemsize + 4) * density * numbers + 4 * (n_instances + 1) * len(inputs)
        return features + (FLOAT64 * n_instances if rank in self.outputs else 0)

    def total(self, rank, n_instances, n_subset, jacobian="stored", itemsize=FLOAT64,
              keep=True):
        """All of the above for `rank`, by part (bytes)."""
        parts = {
            "parameters": self.parameter_bytes(rank, itemsize),
            "data": self.data_bytes(rank, n_instances, itemsize),
            "gauss_newton": self.gauss_newton_bytes(rank, n_subset, jacobian, itemsize),
            "kept_passes": self.kept_bytes(rank, n_instances, itemsize) if keep else 0,
        }
        parts["total"] = sum(parts.values())
        return parts

    def largest(self, n_instances, n_subset, jacobian="stored", itemsize=FLOAT64, keep=True):
        """The parts of the rank with the largest total."""
        return max((self.total(r, n_instances, n_subset, jacobian, itemsize, keep)
                    for r in range(self.layout.n_ranks)), key=lambda parts: parts["total"])
