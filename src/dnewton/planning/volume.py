"""The bytes a run's ledger counts, per phase, from a layout alone (no MPI).

These are exactly the figures `parallel.ledger` reports (docs/design.md,
"Communication"): a collective of N numbers over a group of k > 1 ranks counts
N times the numbers' size once; a group of one rank counts nothing. The passes'
sums move numbers of the run's precision (`itemsize`); f's sums, CG's scalars, J v
and B's probabilities are float64 in either precision.

`GroupMembers` lists the member ranks of every group of a layout (the layout's
own groups, `parallel.layout.Layout.forward_group` and `backward_group`).
"""

from dataclasses import dataclass

from ..constants import FLOAT64


class GroupMembers:
    """Members (sorted rank tuples, copy-local) of every group of `layout`."""

    def __init__(self, layout):
        self.layout = layout
        L = layout.n_layers
        self.forward = {(m, b): layout.forward_group(m, b)
                        for m in range(1, L) for b in range(layout.partitions[m])}
        self.output = layout.output_group
        self.backward = {(m, a): layout.backward_group(m, a)
                         for m in range(2, L + 1) for a in range(layout.partitions[m - 1])}


def forward_bytes(layout, n, itemsize=FLOAT64, groups=None):
    """Bytes of one forward pass over n instances: the F(m, b) sums and the output's."""
    groups = groups or GroupMembers(layout)
    total = sum(n * layout.width(m, b) * itemsize
                for (m, b), members in groups.forward.items() if len(members) > 1)
    if len(groups.output) > 1:
        total += n * layout.widths[-1] * itemsize
    return total


def backward_bytes(layout, n, vectors, itemsize=FLOAT64, groups=None):
    """Bytes of one backward sweep of `vectors` vectors per instance: the K(m, a) sums."""
    groups = groups or GroupMembers(layout)
    return sum(n * vectors * layout.width(m - 1, a) * itemsize
               for (m, a), members in groups.backward.items() if len(members) > 1)


@dataclass
class Counts:
    """What one Newton iteration does, beyond the layout (inputs of the model).

    Defaults are typical of the reference run (MNIST, 784-300-300-10, r = 5%):
    CG takes 4-8 iterations (5 is the median of the first 30 iterations), and the
    line search accepts alpha = 1 at the first trial. Validation passes the counts
    the log records (``cg_iters``, ``line_search_trials``).
    """

    cg_iters: float = 5  # CG iterations (the most any block took, block-diagonal)
    trials: float = 1  # line-search trials = f evaluations after the step
    vote_rounds: float = 0  # block-diagonal mode: completion-vote rounds (sync phase)
    test_instances: int = 0  # the test set, evaluated once per iteration (monitoring)


def iteration_bytes(layout, n_instances, n_subset, counts, *, world, itemsize=FLOAT64,
                    jacobian="stored", loss="squared", diagonal=False, keep=True,
                    groups=None, sampled=False):
    """Bytes per phase of one Newton iteration of ONE model-parallel copy.

    `world` is the copy's rank count (its all-rank sums count only when > 1);
    n_instances and n_subset are the copy's. Keys are the `Phase` values
    (``replicas`` excluded: `replica_bytes`). `sampled`: stochastic Newton on a
    sample of n_instances, the same size from one iteration to the next: f and g
    at the new point are the next sample's, so a forward pass more (docs/design.md,
    "Stochastic Newton").
    """
    groups = groups or GroupMembers(layout)
    many = world > 1
    scalar = FLOAT64 if many else 0
    n_out = layout.widths[-1]
    t = counts.trials + (1 if sampled else 0)
    f_sums = 2 * scalar  # theta'theta and the loss sum, one allreduce
    pass_l = forward_bytes(layout, n_instances, itemsize, groups)
    pass_s = forward_bytes(layout, n_subset, itemsize, groups)
    if keep:
        forward = t * (pass_l + f_sums)
    else:  # the gradient and S each run their own pass (docs/design.md, "Reuse")
        forward = t * (pass_l + f_sums) + pass_l + pass_s
    backward = backward_bytes(layout, n_instances, 1, itemsize, groups)
    if jacobian == "stored":
        backward += backward_bytes(layout, n_subset, n_out, itemsize, groups)
    if loss == "softmax" and many:
        backward += n_subset * n_out * FLOAT64  # B's probabilities, broadcast once
    cg = counts.cg_iters
    if diagonal:
        gauss_newton = 0
        other = 4 * scalar + 3 * scalar * len(layout.blocks)
        sync = counts.vote_rounds * scalar
    else:
        if jacobian == "stored":
            per_cg = (n_subset * n_out + 1) * scalar + scalar  # J v with v.v; then r.r
        else:  # a tangent pass and a backward sweep over S, v.v with v'Gv, r.r
            per_cg = (pass_s + backward_bytes(layout, n_subset, 1, itemsize, groups)
                      + 2 * scalar + scalar)
        gauss_newton = scalar + cg * per_cg  # + the initial r.r
        other = 4 * scalar  # g'd, d'd, d'Ad in one reduction; then ||g||
        sync = 0
    evaluation = 0
    if counts.test_instances:
        evaluation = forward_bytes(layout, counts.test_instances, itemsize, groups) + scalar
    return {"forward": forward, "backward": backward, "gauss_newton": gauss_newton,
            "sync": sync, "other": other, "evaluation": evaluation}


def replica_bytes(position_params, counts, itemsize=FLOAT64, replicas=1):
    """Bytes of the sums over the replica groups per iteration (phase ``replicas``;
    docs/design.md, "Copies of the layout"): one group per position j of a copy,
    R > 1 members each. Per f evaluation the loss sum (8 bytes), per gradient the
    position's parameters in the run's precision, per Gauss-Newton product its
    parameters plus one slot (v'Gv's data term) in the run's precision; summed
    over the k positions: t 8 k + itemsize n + c itemsize (n + k), n all the
    network's parameters.
    (The test accuracy's sum over the copies is the evaluation phase's: 8 k.)
    `position_params` lists the parameters of each position."""
    if replicas <= 1:
        return 0
    k = len(position_params)
    params = sum(position_params)
    return (counts.trials * FLOAT64 * k + itemsize * params
            + counts.cg_iters * itemsize * (params + k))

