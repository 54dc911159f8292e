"""The Newton direction: CG on (G_S + lambda I) d = -g, full or block-diagonal.

Full: one CG over all ranks (SPEC section 2, step 3). Block-diagonal (SPEC
section 4): every block p solves (G_pp + lambda I) d_p = -g_p on its own, with its
own stopping rule ||r_p|| <= xi ||g_p||, and the ranks only vote on when to stop
(`sync.CompletionVote`).
"""

import os
import time
from dataclasses import dataclass

import numpy as np

from .cg import block_conjugate_gradient, conjugate_gradient
from .sync import CompletionVote

# Test-only hook: "RANK:SECONDS" makes that rank sleep SECONDS in every
# block-diagonal CG iteration, to play a straggler.
SLOW_RANK_VARIABLE = "DNEWTON_TEST_SLOW_RANK"


@dataclass
class Direction:
    d: np.ndarray  # local part of the direction
    Ad: np.ndarray  # (G + lambda I) d, same layout (block-diagonal G in that mode)
    cg_iters: int  # the most any block spent
    cg_reason: str  # "converged" | "iteration_limit" | "sync_cutoff"
    cg_iters_per_block: list  # [min, median, max] over all blocks
    sync_stopped_blocks: int  # blocks cut off by the synchronization


def full_direction(operator, g, gnorm, options, groups):
    """One CG over all ranks with the full subsampled Gauss-Newton matrix."""
    cg = conjugate_gradient(
        operator.apply, -g, options.xi * gnorm, options.cg_max,
        lambda values: groups.allsum(values, "gauss_newton"),
    )
    spread = [cg.iterations] * 3
    return Direction(cg.x, cg.Ax, cg.iterations, cg.reason, spread, 0)


def _slowdown(rank):
    spec = os.environ.get(SLOW_RANK_VARIABLE)
    if not spec:
        return 0.0
    slow_rank, seconds = spec.split(":")
    return float(seconds) if int(slow_rank) == rank else 0.0


def _slowed(apply, seconds):
    def slow_apply(v, out):
        time.sleep(seconds)
        return apply(v, out)

    return slow_apply


def block_diagonal_direction(operator, g, options, groups):
    """Independent CG per block on the diagonal blocks G_pp, stopped by vote."""
    network = operator.network
    slices = [network.block_slice(i) for i in range(len(network.blocks))]
    applies = [operator.block_apply(i) for i in range(len(network.blocks))]
    delay = _slowdown(groups.world.rank)
    if delay:
        applies = [_slowed(apply, delay) for apply in applies]
    rhs = [-g[s] for s in slices]
    tols = [options.xi * np.linalg.norm(b) for b in rhs]
    n_blocks = len(network.layout.blocks)
    vote = CompletionVote(groups.world, n_blocks, options.sync_fraction, groups.counter)
    results = block_conjugate_gradient(applies, rhs, tols, options.cg_max, vote)

    # Per-block outcomes, gathered for the log in one small reduction.
    summary = np.zeros(3 * n_blocks)
    for blk, res in zip(network.blocks, results):
        summary[blk.index] = res.iterations
        summary[n_blocks + blk.index] = res.reason == "sync_cutoff"
        summary[2 * n_blocks + blk.index] = res.reason == "iteration_limit"
    summary = groups.allsum(summary, "other")
    iterations = summary[:n_blocks]
    stopped = int(summary[n_blocks : 2 * n_blocks].sum())
    if stopped:
        reason = "sync_cutoff"
    elif summary[2 * n_blocks :].any():
        reason = "iteration_limit"
    else:
        reason = "converged"
    return Direction(
        np.concatenate([res.x for res in results]),
        np.concatenate([res.Ax for res in results]),
        int(iterations.max()),
        reason,
        [int(iterations.min()), float(np.median(iterations)), int(iterations.max())],
        stopped,
    )
