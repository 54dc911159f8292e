"""Threads per rank: the kernels' BLAS (and OpenMP loops) get them, NumPy's own BLAS one.

NumPy's and SciPy's wheels each bundle an OpenBLAS with its own thread pool. The
kernels call SciPy's (`scipy.linalg.cython_blas`); NumPy's serves only small
vector operations here. An OpenBLAS pool whose threads have just worked keeps
them spinning for a while, so two pools with as many threads as cores fight for
the cores: measured on the reference run, 2 threads per pool made one rank 40%
slower than 1 thread. So NumPy's pool is held at one thread whenever it is a
library of its own, and every other pool (SciPy's BLAS, OpenMP) gets the threads.
"""

import os
from contextlib import ExitStack, contextmanager


def default_threads(n_ranks):
    """Threads per rank when the user gives none: 1 with several ranks (one rank per
    core is the usual launch), else None (the libraries' own default: all cores)."""
    return 1 if n_ranks > 1 else None


@contextmanager
def compute_threads(threads):
    """Run the block with `threads` threads (None: the libraries' default) in the
    kernels' BLAS and OpenMP pools and one in NumPy's own BLAS."""
    import numpy
    from threadpoolctl import ThreadpoolController

    # Loads the BLAS the kernels use (scipy.linalg.cython_blas) and their OpenMP
    # runtime, if any.
    from .. import _kernels  # noqa: F401

    controller = ThreadpoolController()
    numpy_dir = os.path.dirname(os.path.dirname(numpy.__file__))
    own = [os.path.join(numpy_dir, "numpy.libs"), os.path.dirname(numpy.__file__)]
    numpy_only = [lib.filepath for lib in controller.lib_controllers
                  if lib.user_api == "blas" and any(lib.filepath.startswith(d) for d in own)]
    with ExitStack() as stack:
        if threads is not None:
            stack.enter_context(controller.limit(limits=threads))
        for path in numpy_only:
            stack.enter_context(controller.select(filepath=path).limit(limits=1))
        yield
