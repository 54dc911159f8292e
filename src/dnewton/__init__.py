"""dnewton: distributed Newton methods for deep fully connected networks.

The model is split into blocks of its weight matrices over MPI ranks
(`dnewton.parallel.layout`); training is subsampled Gauss-Newton with conjugate
gradient, Levenberg-Marquardt damping and a backtracking line search
(`dnewton.solvers.newton`). Run it as ``mpiexec -n K dnewton train ...``, or from
Python through `train` (`dnewton.app.training`) or `NewtonClassifier` and
`NewtonRegressor` (scikit-learn's estimator interface). docs/design.md explains the design.
"""

import os

__version__ = "0.1.0"
__all__ = ["NewtonClassifier", "NewtonRegressor", "train"]

# Built with -Dopenmp=enabled, the kernels' C loops use OpenMP threads, which by
# default spin after each loop and take the core from the BLAS threads that run
# next: measured on the reference run, 1 rank x 2 threads took 0.54 s per
# iteration with spinning, 0.11 s without. Read when libgomp loads, so set here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name):
    # Imported on first use: the command line should not pay for scikit-learn's
    # estimator machinery, nor start MPI, before it knows what it runs.
    if name in ("NewtonClassifier", "NewtonRegressor"):
        from .app import estimator

        return getattr(estimator, name)
    if name == "train":
        from .app.training import train

        return train
    raise AttributeError(f"module 'dnewton' has no attribute {name!r}")
