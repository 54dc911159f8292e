"""Threads per rank: the kernels' BLAS gets them, NumPy's own BLAS keeps one."""

import os

import numpy
from threadpoolctl import threadpool_info

from dnewton.app.threads import compute_threads, default_threads


def blas_threads():
    """(NumPy's own BLAS pools, the others): thread counts by library file."""
    numpy_libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
    mine, others = [], []
    for lib in threadpool_info():
        if lib["user_api"] == "blas":
            (mine if lib["filepath"].startswith(numpy_libs) else others).append(
                lib["num_threads"])
    return mine, others


def test_numpy_blas_keeps_one_thread_and_the_kernels_blas_gets_them():
    with compute_threads(2):
        mine, others = blas_threads()
        assert others and all(n == 2 for n in others)
        assert all(n == 1 for n in mine)
    with compute_threads(1):
        assert all(n == 1 for group in blas_threads() for n in group)


def test_one_thread_per_rank_under_mpi_by_default():
    assert default_threads(2) == 1 and default_threads(1) is None
