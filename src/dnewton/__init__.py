"""dnewton: distributed Newton methods for deep fully connected networks.

The model is split into blocks of its weight matrices over MPI ranks (see
`dnewton.layout`); training is subsampled Gauss-Newton with conjugate gradient,
Levenberg-Marquardt damping and a backtracking line search (`dnewton.newton`).
Run it as ``mpiexec -n K dnewton train ...``.
"""

__version__ = "0.1.0"
