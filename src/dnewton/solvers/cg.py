"""Conjugate gradient for symmetric positive definite operators, on vectors that
may be split over ranks.

The solver knows nothing of how a product is formed nor where the vectors live:
an operator is a callable ``apply(v, out)`` that writes A v and returns v^T A v
(summed over whatever ranks share v), and an inner-product space
(`parallel.space`) sums the partial r.r that the fused vector update returns.

Every run says why it stopped (`CGReason`). A curvature p'Ap that is not
positive, or not finite, ends the run with that reason instead of an exception:
the caller decides what it means, on every rank alike.

Two drivers share one iteration (`CGState`):

* `conjugate_gradient` -- one system over all ranks (the full Gauss-Newton matrix);
* `block_conjugate_gradient` -- one independent system per block (the block-diagonal
  approximation): no communication while iterating, except the completion vote
  that lets an iteration stop once a fraction of the blocks is done.
"""

from dataclasses import dataclass

import numpy as np

from .. import _kernels as K
from ..constants import Name
from ..parallel.space import LocalSpace


class CGReason(Name):
    """Why a CG run stopped."""

    CONVERGED = "converged"  # ||r|| <= tol
    ITERATION_LIMIT = "iteration_limit"  # max_iterations reached first
    SYNC_CUTOFF = "sync_cutoff"  # enough other blocks were done (block-diagonal mode)
    INDEFINITE = "indefinite"  # p'Ap <= 0: the operator is not positive definite
    NOT_FINITE = "not_finite"  # p'Ap is NaN or infinite

    @property
    def failed(self):
        """True when the iterate cannot be trusted as a direction."""
        return self in (CGReason.INDEFINITE, CGReason.NOT_FINITE)


@dataclass
class CGResult:
    """x, A x (tracked by the recurrence), iterations, final ||r||, why it stopped."""

    x: np.ndarray
    Ax: np.ndarray
    iterations: int
    residual_norm: float
    reason: CGReason
    curvature: float  # the last p'Ap (the offending one when `reason.failed`)

    def failure(self):
        """A sentence for a failed run (`reason.failed`)."""
        return (f"conjugate gradient: curvature p'Ap = {self.curvature:.3g} at iteration "
                f"{self.iterations + 1} (the Gauss-Newton matrix must be positive definite; "
                "non-finite weights or data?)")


class CGState:
    """One CG run from x = 0 on A x = b, advanced one iteration at a time.

    Parameters
    ----------
    b : (n,) local part of the right-hand side.
    tol : float
        Stop when ||b - A x|| <= tol.
    max_iterations : int
    space : parallel.space.LocalSpace or GroupSpace
        Where the vectors live; sums the local r.r.
    work : (5, n) array, optional
        Storage for x, A x, r, p, A p, reused from one run to the next (fresh
        memory costs page faults on every touch); the result's x and A x live
        there until the next run.
    """

    def __init__(self, b, tol, max_iterations, space, work=None):
        if work is None:
            work = np.empty((5, b.size), dtype=b.dtype)
        self.x, self.Ax, self.r, self.p, self.q = work
        self.x[...] = 0.0
        self.Ax[...] = 0.0
        self.r[...] = b
        self.p[...] = b
        self.tol = tol
        self.max_iterations = max_iterations
        self.space = space
        self.iterations = 0
        self.curvature = np.nan
        (self.rr,) = space.sum([K.dot(self.r, self.r)])
        self.reason = CGReason.CONVERGED if np.sqrt(self.rr) <= tol else None

    @property
    def done(self):
        return self.reason is not None

    def step(self, apply):
        """One CG iteration; sets `reason` when the run has stopped."""
        pAp = self.curvature = apply(self.p, self.q)
        if not np.isfinite(pAp):
            self.reason = CGReason.NOT_FINITE
            return
        if pAp <= 0.0:
            self.reason = CGReason.INDEFINITE
            return
        alpha = self.rr / pAp
        (rr_next,) = self.space.sum([K.cg_step(self.x, self.r, self.p, self.q, self.Ax, alpha)])
        self.iterations += 1
        if np.sqrt(rr_next) <= self.tol:
            self.reason = CGReason.CONVERGED
        elif self.iterations >= self.max_iterations:
            self.reason = CGReason.ITERATION_LIMIT
        else:
            K.cg_direction(self.p, self.r, rr_next / self.rr)
        self.rr = rr_next

    def result(self):
        return CGResult(self.x, self.Ax, self.iterations, float(np.sqrt(self.rr)), self.reason,
                        float(self.curvature))


def conjugate_gradient(apply, b, tol, max_iterations, space, work=None):
    """Solve A x = b from x = 0 until ||b - A x|| <= tol or `max_iterations`.

    Every decision uses values summed over `space`, so all ranks iterate alike.
    `work` is as `CGState`'s.
    """
    state = CGState(b, tol, max_iterations, space, work)
    while not state.done:
        state.step(apply)
    return state.result()


def block_conjugate_gradient(applies, rhs, tols, max_iterations, vote):
    """Solve one local system per block, stopping once `vote` says enough are done.

    Parameters
    ----------
    applies : list of callables (v, out) -> v^T A v, one per local block (no MPI).
    rhs, tols : the blocks' right-hand sides and tolerances.
    max_iterations : int
    vote : parallel.vote.CompletionVote
        Collective completion count across ranks; polled between CG iterations.

    Blocks on this rank advance round-robin, one CG iteration each, so none of
    them starves. A block that stops for any reason (a failed one included)
    counts as done; one still running when the vote passes keeps its current
    iterate and reports `CGReason.SYNC_CUTOFF`.
    """
    local = LocalSpace()
    states = [CGState(b, tol, max_iterations, local) for b, tol in zip(rhs, tols)]

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
            state.reason = CGReason.SYNC_CUTOFF
    return [s.result() for s in states]
