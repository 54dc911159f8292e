"""Fixtures and hooks; shared helpers live in helpers.py.

The in-process tests run on one process and, unchanged, under
``mpiexec -n 3 python -m pytest -m "not mpi" ...`` (as mpi4py's own suite does):
there, each rank runs the whole session, every test reaches every collective,
and the first failure on any rank aborts the job (a failed rank would otherwise
leave the others waiting in a collective). Tests marked ``mpi`` start mpiexec
themselves and run only in the one-process session.
"""

import sys
import tempfile

import pytest
from helpers import MNIST_DATA, WORLD


@pytest.hookimpl(trylast=True)  # after the terminal reporter exists
def pytest_configure(config):
    if WORLD.size > 1:
        # Each rank its own temporary folder; one cache and one example database
        # would be written by every rank at once.
        config.option.basetemp = tempfile.mkdtemp(prefix=f"dnewton-tests-rank{WORLD.rank}-")
        from hypothesis import settings

        settings.register_profile("mpi", database=None)
        settings.load_profile("mpi")
        if WORLD.rank > 0:  # one report, from rank 0
            reporter = config.pluginmanager.getplugin("terminalreporter")
            if reporter is not None:
                config.pluginmanager.unregister(reporter)


def pytest_collection_modifyitems(config, items):
    if WORLD.size > 1:
        skip = pytest.mark.skip(reason="starts mpiexec itself: one-process suite only")
        for item in items:
            if "mpi" in item.keywords:
                item.add_marker(skip)


def pytest_runtest_logreport(report):
    """Under mpiexec, end the whole job at the first failure on any rank."""
    if WORLD.size > 1 and report.failed:
        sys.stderr.write(f"\n[rank {WORLD.rank}] {report.nodeid} failed ({report.when}):\n"
                         f"{report.longreprtext}\n")
        sys.stderr.flush()
        WORLD.Abort(1)


@pytest.fixture(scope="session")
def mnist_data():
    """The folder of the MNIST subset shipped with the package."""
    return MNIST_DATA
