"""Memory per rank of a layout, from the layout alone (no MPI, no data).

The same formulas as the run's own estimates, rank by rank:

* the Gauss-Newton data of |S| instances: `model.gauss_newton.stored_bytes`
  (the pass over S, the inputs of the layer-1 blocks, D and the workspaces when
  stored; tangents and the sweep's sums when recomputed);
* the two stores of kept forward passes: `model.objective.Objective.kept_bytes`,
  2 itemsize l times the numbers per instance of a pass (`Network.pass_numbers`);
* `PARAMETER_COPIES` parameter-shaped vectors (`app.problem.check_parameter_memory`);
* the rank's feature blocks (l |a| numbers per input group a it needs, l the
  instances of its copy; CSR: by the stored entries) and, on output ranks, the
  labels (8 bytes per instance).
"""

from ..constants import PARAMETER_COPIES
from .volume import FLOAT64, Groups


class RankMemory:
    """Per-rank memory figures of `layout` (one model-parallel copy)."""

    def __init__(self, layout, groups=None):
        self.layout = layout
        self.groups = groups or Groups(layout)
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

    def width(self, m, g):
        return self.groups.width(m, g)

    def parameters(self, rank):
        return sum(blk.size for blk in self.blocks[rank])

    def pass_numbers(self, rank):
        """Numbers per instance of a forward pass on `rank` (`Network.pass_numbers`)."""
        hidden = 2 * sum(self.width(m, b) for m, b in self.joined[rank])
        return hidden + (self.layout.widths[-1] if rank in self.outputs else 0)

    def gauss_newton_bytes(self, rank, n_subset, jacobian="stored", itemsize=FLOAT64,
                           input_bytes=None):
        """`model.gauss_newton.stored_bytes` of `rank` for |S| = n_subset."""
        n_out = self.layout.widths[-1]
        blocks = self.blocks[rank]
        pass_numbers = 2 * sum(self.width(m, b) for m, b in self.joined[rank])
        if input_bytes is None:
            input_bytes = itemsize * sum(self.width(0, blk.row) for blk in blocks
                                         if blk.layer == 1)
        if jacobian == "recomputed":
            return n_subset * (itemsize * 2 * pass_numbers + input_bytes + FLOAT64 * 3 * n_out)
        columns = {(blk.layer, blk.col) for blk in blocks}
        per_instance = pass_numbers + sum(n_out * self.width(m, b) for m, b in columns)
        per_instance += sum(blk.shape[1] for blk in blocks)
        return n_subset * (itemsize * per_instance + input_bytes + FLOAT64 * 2 * n_out)

    def kept_bytes(self, rank, n_instances, itemsize=FLOAT64):
        """`Objective.kept_bytes`: two stores of a pass over all l instances."""
        return 2 * itemsize * n_instances * self.pass_numbers(rank)

    def parameter_bytes(self, rank, itemsize=FLOAT64):
        return PARAMETER_COPIES * itemsize * self.parameters(rank)

    def data_bytes(self, rank, n_instances, itemsize=FLOAT64, density=None):
        """The feature blocks of the input groups `rank` needs for `n_instances` (its
        copy's share), and its labels: dense, or with `density` (stored entries per
        number) as CSR, a value and an int32 index per entry."""
        inputs = {blk.row for blk in self.blocks[rank] if blk.layer == 1}
        numbers = n_instances * sum(self.width(0, a) for a in inputs)
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
