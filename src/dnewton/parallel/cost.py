"""A cost estimate of a layout, per training instance, to choose a default layout.

Layers run one after another (without the pipeline), and within a layer every
rank works on its own blocks at once, so a layer takes as long as its busiest
rank: the computation's critical path is the sum over layers of the largest
per-rank work. Communication is the volume of the allreduces the layout's groups
need, a ring allreduce of N numbers over k ranks moving 2 (k-1)/k N of them per
rank. Both are per instance of a forward and backward pass, the bulk of an
iteration; the Gauss-Newton products have the same structure on |S| instances.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    """Rates of one rank (documented defaults: a core of a current x86 node)."""

    flop_rate: float = 40e9  # FLOP/s of a rank's GEMMs
    bandwidth: float = 4e9  # bytes/s a rank moves through an allreduce


def seconds_per_instance(layout, machine=Machine()):
    """Estimated seconds of one forward and backward pass per instance."""
    ranks = range(layout.n_ranks)
    compute = 0.0
    for m in range(1, layout.n_layers + 1):
        work = dict.fromkeys(ranks, 0.0)
        for blk in layout.blocks:
            if blk.layer == m:
                # forward 2ab, the gradient 2ab, and 2ab more to reach the layer below
                work[int(layout.owner[blk.index])] += (6 if m > 1 else 4) * blk.size
        compute += max(work.values())
    numbers = 0.0
    for members, width in _reductions(layout):
        k = len(members)
        if k > 1:
            numbers += 2 * (k - 1) / k * width
    return compute / machine.flop_rate + 8 * numbers / machine.bandwidth


def _reductions(layout):
    """(members, numbers per instance) of every reduction of a forward and backward pass."""
    for m in range(1, layout.n_layers):
        for b in range(layout.partitions[m]):
            group = layout.group(m, b)
            yield layout.forward_group(m, b), group.stop - group.start
    yield layout.output_group, layout.widths[-1]
    for m in range(2, layout.n_layers + 1):
        for a in range(layout.partitions[m - 1]):
            group = layout.group(m - 1, a)
            yield layout.backward_group(m, a), group.stop - group.start
