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
# next (time the reference run with OMP_WAIT_POLICY=ACTIVE to see it). Read when
# libgomp loads, so set here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _load_blas():
    """Load ``scipy.linalg.cython_blas``, the BLAS the kernels call (`_kernels`
    cimports it), as a module of its own.

    Imported the usual way it first runs ``scipy.linalg``'s ``__init__``, which loads
    every LAPACK wrapper and decomposition of SciPy, memory and start-up time on
    every rank, none of it used by dnewton. A later ``import scipy.linalg`` works
    as usual (it does not load this module again). Should this ever fail, nothing
    is loaded and the usual import happens when the kernels ask.
    """
    import sys

    name = "scipy.linalg.cython_blas"
    if name in sys.modules or "scipy.linalg" in sys.modules:
        return
    try:
        import importlib.machinery
        import importlib.util

        import scipy

        folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
        spec = importlib.machinery.PathFinder.find_spec(name, [folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 -- any failure: the usual import, later
        sys.modules.pop(name, None)


_load_blas()


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
