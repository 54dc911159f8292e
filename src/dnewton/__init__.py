"""dnewton: distributed Newton methods for deep fully connected networks.

The model is split into blocks of its weight matrices over MPI ranks (see
`dnewton.layout`); training is subsampled Gauss-Newton with conjugate gradient,
Levenberg-Marquardt damping and a backtracking line search (`dnewton.newton`).
Run it as ``mpiexec -n K dnewton train ...``, or from Python through
`NewtonClassifier` (scikit-learn's estimator interface).
"""

__version__ = "0.1.0"
__all__ = ["NewtonClassifier"]


def __getattr__(name):
    # Imported on first use: the command line should not pay for scikit-learn's
    # estimator machinery, nor start MPI, before it knows what it runs.
    if name == "NewtonClassifier":
        from .estimator import NewtonClassifier

        return NewtonClassifier
    raise AttributeError(f"module 'dnewton' has no attribute {name!r}")
