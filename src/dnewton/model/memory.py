"""Bytes a rank's model arrays take, from their shapes alone (no MPI, no arrays).

The one statement of these formulas: the run's own estimates (`Network.pass_numbers`,
`Objective.kept_bytes`, `gauss_newton.stored_bytes`, `app.problem`'s memory checks)
and the planner's, rank by rank of a layout (`planning.memory.RankMemory`), both
call them. `hidden_widths` are
the widths |b| of the hidden groups (m, b), m < L, whose forward group F(m, b) the
rank is in: it holds s_b^m and z_b^m of each.
"""

from ..constants import FLOAT64, PARAMETER_COPIES


def pass_numbers(hidden_widths, n_outputs=0):
    """Numbers per instance of a forward pass: s and z of every hidden group the rank
    joins, and the n_L outputs (`n_outputs`: n_L on the output group's ranks, else 0)."""
    return 2 * sum(hidden_widths) + n_outputs


def parameter_bytes(n_params, itemsize):
    """Bytes of the `PARAMETER_COPIES` parameter-shaped vectors of `n_params` numbers
    a solver holds at once."""
    return PARAMETER_COPIES * itemsize * n_params


def kept_bytes(n_instances, numbers, itemsize):
    """Bytes of the two stores of kept forward passes of `n_instances` each, a pass
    holding `numbers` per instance (`pass_numbers`)."""
    return 2 * itemsize * n_instances * numbers


def gauss_newton_bytes(n_subset, blocks, hidden_widths, n_outputs, itemsize,
                       jacobian="stored", input_bytes=None):
    """Bytes a rank keeps for the Gauss-Newton operator on |S| = n_subset.

    The forward pass over S (s and z of the hidden groups, the inputs of the layer-1
    `blocks`, the rank's `parallel.layout.Block`s, once per block: more than is held
    where blocks share an input group) and, with the stored Jacobian,
    D_b^m for every column group b it owns a block of (n_L |b| numbers per instance),
    the kernels' workspaces (|b| per block) and J v twice (n_L each, float64);
    recomputed, the tangents and the backward sweep's sums (about twice the pass) and
    three n_L float64 vectors instead: linear in |S| either way. `input_bytes` (bytes
    per instance of the layer-1 inputs, for sparse data) replaces the dense |a|
    numbers per layer-1 block.
    """
    numbers = pass_numbers(hidden_widths)
    if input_bytes is None:
        input_bytes = itemsize * sum(blk.shape[0] for blk in blocks if blk.layer == 1)
    if jacobian == "recomputed":
        return n_subset * (itemsize * 2 * numbers + input_bytes + FLOAT64 * 3 * n_outputs)
    columns = {(blk.layer, blk.col): blk.shape[1] for blk in blocks}
    per_instance = numbers + n_outputs * sum(columns.values())
    per_instance += sum(blk.shape[1] for blk in blocks)
    return n_subset * (itemsize * per_instance + input_bytes + FLOAT64 * 2 * n_outputs)
