"""Conjugate gradient for symmetric positive definite operators spread over ranks.

The solver knows nothing of how a product is formed: an operator is a callable
``apply(v, out)`` that writes A v and returns v^T A v (summed over whatever ranks
share v), and ``allsum(values)`` sums the residual norm the same way. Vector
updates are the fused kernels.

Two drivers share one iteration (`CGState`):

* `conjugate_gradient` -- one system over all ranks (the full Gauss-Newton matrix);
* `block_conjugate_gradient` -- one independent system per block (the block-diagonal
  approximation): no communication while iterating, except the completion vote
  that lets an iteration stop once a fraction of the blocks is done (`sync`).
"""

from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from .errors import NumericalError, everywhere


@dataclass
class CGResult:
    """x, A x (tracked by the recurrence), iterations, final ||r||, why it stopped."""

    x: np.ndarray
    Ax: np.ndarray
    iterations: int
    residual_norm: float
    reason: str  # "converged" | "iteration_limit" | "sync_cutoff"


class CGState:
    """One CG run from x = 0 on A x = b, advanced one iteration at a time.

    Parameters
    ----------
    b : (n,) local part of the right-hand side.
    tol : float
        Stop when ||b - A x|| <= tol.
    max_iterations : int
    allsum : callable (list of float) -> array
        Sum over the ranks sharing the vectors (identity for a local system).
    """

    def __init__(self, b, tol, max_iterations, allsum):
        self.x = np.zeros_like(b)
        self.Ax = np.zeros_like(b)
        self.r = b.copy()
        self.p = b.copy()
        self.q = np.empty_like(b)
        self.tol = tol
        self.max_iterations = max_iterations
        self.allsum = allsum
        self.iterations = 0
        (self.rr,) = allsum([K.dot(self.r, self.r)])
        self.reason = "converged" if np.sqrt(self.rr) <= tol else None

    @property
    def done(self):
        return self.reason is not None

    def step(self, apply):
        """One CG iteration; sets `reason` when the run has stopped."""
        k = self.iterations + 1
        pAp = apply(self.p, self.q)
        if not np.isfinite(pAp) or pAp <= 0.0:
            raise everywhere(
                NumericalError(
                    f"conjugate gradient: curvature p'Ap = {pAp:.3g} at iteration {k} "
                    "(the Gauss-Newton matrix must be positive definite; non-finite "
                    "weights or data?)"
                )
            )
        alpha = self.rr / pAp
        (rr_next,) = self.allsum([K.cg_step(self.x, self.r, self.p, self.q, self.Ax, alpha)])
        self.iterations = k
        if np.sqrt(rr_next) <= self.tol:
            self.reason = "converged"
        elif k >= self.max_iterations:
            self.reason = "iteration_limit"
        else:
            K.cg_direction(self.p, self.r, rr_next / self.rr)
        self.rr = rr_next

    def result(self):
        return CGResult(self.x, self.Ax, self.iterations, float(np.sqrt(self.rr)), self.reason)


def conjugate_gradient(apply, b, tol, max_iterations, allsum):
    """Solve A x = b from x = 0 until ||b - A x|| <= tol or `max_iterations`.

    Every decision uses globally reduced values, so all ranks iterate alike.
    """
    state = CGState(b, tol, max_iterations, allsum)
    while not state.done:
        state.step(apply)
    return state.result()


def _local_sum(values):
    return np.asarray(values, dtype=np.float64)


def block_conjugate_gradient(applies, rhs, tols, max_iterations, vote):
    """Solve one local system per block, stopping once `vote` says enough are done.

    Parameters
    ----------
    applies : list of callables (v, out) -> v^T A v, one per local block (no MPI).
    rhs, tols : the blocks' right-hand sides and tolerances.
    max_iterations : int
    vote : sync.CompletionVote
        Collective completion count across ranks; polled between CG iterations.

    Blocks on this rank advance round-robin, one CG iteration each, so none of
    them starves. A block still running when the vote passes keeps its current
    iterate and reports ``"sync_cutoff"``.
    """
    states = [CGState(b, tol, max_iterations, _local_sum) for b, tol in zip(rhs, tols)]

    def n_done():
        return sum(s.done for s in states)

    stop = False
    while not stop:
        running = [(s, apply) for s, apply in zip(states, applies) if not s.done]
        if not running:
            stop = vote.wait(n_done())
            continue
        for state, apply in running:
            state.step(apply)
            if vote.poll(n_done()):
                stop = True
                break
    for state in states:
        if not state.done:
            state.reason = "sync_cutoff"
    return [s.result() for s in states]
