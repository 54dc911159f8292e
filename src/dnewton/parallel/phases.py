"""The phases of a run that communication is counted in (bytes, and seconds).

Kept apart from `groups` so that code which only names a phase (the
inner-product spaces, the solvers' callers) does not need MPI.
"""

from ..constants import Name


class Phase(Name):
    """What a collective serves; bytes (and times) are counted per phase."""

    FORWARD = "forward"  # sums of the forward passes, and f's sums
    BACKWARD = "backward"  # sums of the gradient and Jacobian passes
    GAUSS_NEWTON = "gauss_newton"  # the Gauss-Newton products and CG's reductions
    SYNC = "sync"  # the completion vote of the block-diagonal CG
    OTHER = "other"  # the Newton step's scalars: g'd, d'd, d'Ad, ||g||
    EVALUATION = "evaluation"  # monitoring: test accuracy, SGD's and Adam's f and ||g||
    REPLICAS = "replicas"  # --replicas: sums of f, g and each product over the copies


# Every phase, as the ledger and the log name them, and those that make up an
# iteration's time (evaluation is monitoring, outside it).
PHASES = tuple(p.value for p in Phase)
TRAINING_PHASES = tuple(p for p in PHASES if p != Phase.EVALUATION)
