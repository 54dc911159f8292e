"""The Newton direction: CG on (G_S + lambda I) d = -g, full or block-diagonal.

Both are small objects with one call, ``direction(operator, g, gnorm) ->
Direction``, chosen by the caller and handed to the Newton loop, so a new way of
finding a direction is a new class, not a new branch in the loop.

* `FullCG`: one CG over all ranks with the full subsampled Gauss-Newton matrix.
* `BlockDiagonalCG` (docs/design.md, "The paper's techniques"): every block p
  solves (G_pp + lambda I) d_p = -g_p on its own with its own stopping rule
  ||r_p|| <= xi ||g_p||; the ranks only vote on when to stop and, once, sum a
  per-block summary so that all of them decide alike.
"""

from dataclasses import dataclass

import numpy as np

from .cg import CGReason, block_conjugate_gradient, conjugate_gradient


@dataclass
class Direction:
    d: np.ndarray  # local part of the direction
    Ad: np.ndarray  # (G + lambda I) d, same layout (block-diagonal G in that mode)
    cg_iters: int  # the most any block spent
    cg_reason: CGReason  # a failed reason when any block failed
    cg_iters_per_block: list  # [min, median, max] over all blocks
    sync_stopped_blocks: int  # blocks cut off by the synchronization
    failure: object = None  # what went wrong, when `cg_reason.failed`


class FullCG:
    """One CG over all ranks.

    Parameters
    ----------
    space : parallel.space space
        Where the parameter vector lives (all ranks; the Gauss-Newton phase).
    xi : float
        Stop when ||r|| <= xi ||g||.
    max_iterations : int
    """

    def __init__(self, space, xi, max_iterations):
        self.space = space
        self.xi = xi
        self.max_iterations = max_iterations
        self._work = None  # CG's vectors, kept from one direction to the next

    def __call__(self, operator, g, gnorm):
        if self._work is None or self._work.shape[1] != g.size:
            self._work = np.empty((5, g.size), dtype=g.dtype)
        cg = conjugate_gradient(operator.apply, -g, self.xi * gnorm, self.max_iterations,
                                self.space, self._work)
        failure = cg.failure() if cg.reason.failed else None
        return Direction(cg.x, cg.Ax, cg.iterations, cg.reason, [cg.iterations] * 3, 0, failure)


# Outcome codes of a block in the summary the ranks sum (one number per block).
_CODES = (CGReason.CONVERGED, CGReason.SYNC_CUTOFF, CGReason.ITERATION_LIMIT,
          CGReason.INDEFINITE, CGReason.NOT_FINITE)


class BlockDiagonalCG:
    """Independent CG per block on the diagonal blocks G_pp, stopped by vote.

    Parameters
    ----------
    space : parallel.space space
        Sums the per-block summary over all ranks (once per direction).
    n_blocks : int
        Blocks in the whole layout.
    new_vote : callable () -> parallel.vote.CompletionVote
        A fresh completion vote for each direction.
    xi, max_iterations : as `FullCG`, per block.
    wrap_block : callable (index, apply) -> apply, optional
        Decorates the operator of the block with layout index `index` (used to
        inject faults in tests; see `dnewton.fault_injection`).
    """

    def __init__(self, space, n_blocks, new_vote, xi, max_iterations, wrap_block=None):
        self.space = space
        self.n_blocks = n_blocks
        self.new_vote = new_vote
        self.xi = xi
        self.max_iterations = max_iterations
        self.wrap_block = wrap_block

    def __call__(self, operator, g, gnorm):
        blocks = operator.block_operators()
        applies = [apply if self.wrap_block is None else self.wrap_block(index, apply)
                   for index, _, apply in blocks]
        rhs = [-g[where] for _, where, _ in blocks]
        tols = [self.xi * np.linalg.norm(b) for b in rhs]
        results = block_conjugate_gradient(applies, rhs, tols, self.max_iterations,
                                           self.new_vote())

        # Per-block outcomes in one small reduction: every rank learns them all, so
        # every rank takes the same decision (a failure anywhere fails everywhere).
        n = self.n_blocks
        summary = np.zeros(3 * n)
        for (index, _, _), res in zip(blocks, results):
            summary[index] = res.iterations
            summary[n + index] = _CODES.index(res.reason)
            summary[2 * n + index] = res.curvature if res.reason.failed else 0.0
        summary = self.space.sum(summary)
        iterations, codes = summary[:n], summary[n : 2 * n].astype(int)
        failed = [i for i in range(n) if _CODES[codes[i]].failed]
        stopped = int(np.sum(codes == _CODES.index(CGReason.SYNC_CUTOFF)))
        failure = None
        if failed:
            i = failed[0]
            reason = _CODES[codes[i]]
            failure = (f"conjugate gradient of block {i}: curvature p'Ap = "
                       f"{summary[2 * n + i]:.3g} at iteration {int(iterations[i]) + 1} "
                       "(the Gauss-Newton matrix must be positive definite; non-finite "
                       "weights or data?)")
        elif stopped:
            reason = CGReason.SYNC_CUTOFF
        elif np.any(codes == _CODES.index(CGReason.ITERATION_LIMIT)):
            reason = CGReason.ITERATION_LIMIT
        else:
            reason = CGReason.CONVERGED
        return Direction(
            np.concatenate([res.x for res in results]),
            np.concatenate([res.Ax for res in results]),
            int(iterations.max()),
            reason,
            [int(iterations.min()), float(np.median(iterations)), int(iterations.max())],
            stopped,
            failure,
        )
