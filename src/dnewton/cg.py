"""Conjugate gradient for a symmetric positive definite operator spread over ranks.

The solver knows nothing of how the product is formed: it calls ``apply(v, out)``,
which writes A v and returns the global v^T A v, and ``allsum(values)``, which sums
local scalars over ranks in one collective. Vector updates are the fused kernels.
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
    reason: str  # "converged" | "iteration_limit"


def conjugate_gradient(apply, b, tol, max_iterations, allsum):
    """Solve A x = b from x = 0 until ||b - A x|| <= tol or `max_iterations`.

    Parameters
    ----------
    apply : callable (v, out) -> float
        out = A v; returns v^T A v summed over ranks.
    b : (n,) local part of the right-hand side.
    tol : float
        Absolute tolerance on the global residual norm.
    max_iterations : int
    allsum : callable (list of float) -> array
        Sum over ranks.

    Every decision uses globally reduced values, so all ranks iterate alike.
    """
    x = np.zeros_like(b)
    Ax = np.zeros_like(b)
    r = b.copy()
    p = b.copy()
    q = np.empty_like(b)
    (rr,) = allsum([K.dot(r, r)])
    if np.sqrt(rr) <= tol:
        return CGResult(x, Ax, 0, float(np.sqrt(rr)), "converged")
    for k in range(1, max_iterations + 1):
        pAp = apply(p, q)
        if not np.isfinite(pAp) or pAp <= 0.0:
            raise everywhere(
                NumericalError(
                    f"conjugate gradient: curvature p'Ap = {pAp:.3g} at iteration {k} "
                    "(the Gauss-Newton matrix must be positive definite; non-finite "
                    "weights or data?)"
                )
            )
        alpha = rr / pAp
        (rr_next,) = allsum([K.cg_step(x, r, p, q, Ax, alpha)])
        if np.sqrt(rr_next) <= tol:
            return CGResult(x, Ax, k, float(np.sqrt(rr_next)), "converged")
        K.cg_direction(p, r, rr_next / rr)
        rr = rr_next
    return CGResult(x, Ax, max_iterations, float(np.sqrt(rr)), "iteration_limit")
