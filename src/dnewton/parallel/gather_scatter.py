"""Collectives between rank 0 and the ranks: a network's blocks gathered into its
dense form and cut back into a layout's, per-input-group values gathered into one
vector, and arrays rank 0 read broadcast to every rank.

The dense order of a parameter-shaped vector is W^1 row-major, b^1, W^2, b^2, ...
(what a model file and a checkpoint store).
"""

import numpy as np
from mpi4py import MPI


def gather_parameters(layout, world, theta, root=0):
    """Collective: dense (weights, biases) of every layer on `root`, None elsewhere.

    `theta` is the calling rank's parameter vector under `layout`.
    """
    counts = [layout.parameters(r).size for r in range(world.size)]
    flat = np.empty(sum(counts), dtype=theta.dtype) if world.rank == root else None
    world.Gatherv(np.ascontiguousarray(theta), (flat, counts) if flat is not None else None,
                  root=root)
    if flat is None:
        return None
    widths = layout.widths
    weights = [np.zeros((widths[m - 1], widths[m]), dtype=theta.dtype)
               for m in range(1, len(widths))]
    biases = [np.zeros(widths[m], dtype=theta.dtype) for m in range(1, len(widths))]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for r in range(world.size):
        layout.parameters(r).gather(flat[offsets[r] : offsets[r + 1]], weights, biases)
    return weights, biases


def gather_vector(layout, world, vec, root=0):
    """Collective: a parameter-shaped vector (each rank's part) as one dense flat
    array on `root`, None elsewhere."""
    dense = gather_parameters(layout, world, vec, root)
    if dense is None:
        return None
    return np.concatenate([part.ravel() for pair in zip(*dense) for part in pair])


def scatter_vector(layout, rank, flat):
    """`rank`'s part, in `layout`, of a dense flat vector from `gather_vector`."""
    widths, weights, biases, offset = layout.widths, [], [], 0
    for m in range(1, len(widths)):
        n = widths[m - 1] * widths[m]
        weights.append(flat[offset : offset + n].reshape(widths[m - 1], widths[m]))
        biases.append(flat[offset + n : offset + n + widths[m]])
        offset += n + widths[m]
    return layout.parameters(rank).scatter(weights, biases, flat.dtype)


def gather_input_groups(layout, world, per_group, root=0):
    """Collective: (n_0,) on `root` from each rank's {input group a: (|a|,)} (None elsewhere).

    Each input group's values come from its lowest owning rank alone, so the sum
    that assembles them adds only zeros and is exact.
    """
    dense = np.zeros(layout.widths[0])
    for a, values in per_group.items():
        if min(layout.row_owners(1, a)) == world.rank:
            dense[layout.group(0, a)] = values
    if world.rank == root:
        world.Reduce(MPI.IN_PLACE, dense, op=MPI.SUM, root=root)
        return dense
    world.Reduce(dense, None, op=MPI.SUM, root=root)
    return None


def broadcast_arrays(world, arrays, root=0):
    """Collective: `root`'s dict of arrays on every rank.

    Numeric arrays travel as MPI buffers; scalars and strings in one small pickle.
    """
    if world.size == 1:
        return arrays
    meta = None
    if world.rank == root:
        meta = {
            key: ("buffer", a.shape, a.dtype.str) if a.ndim and a.dtype.kind in "biuf"
            else ("value", a)
            for key, a in arrays.items()
        }
    meta = world.bcast(meta, root=root)
    received = {}
    for key, (kind, *rest) in meta.items():
        if kind == "value":
            received[key] = rest[0]
            continue
        shape, dtype = rest
        buf = np.ascontiguousarray(arrays[key]) if world.rank == root else np.empty(
            shape, dtype
        )
        world.Bcast(buf, root=root)
        received[key] = buf
    return received
