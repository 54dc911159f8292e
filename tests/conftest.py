"""Shared test helpers: running dnewton under mpiexec in a subprocess.

Multi-rank tests run ``mpiexec`` from a serial pytest with a timeout, so a hang
fails one test instead of blocking the suite; ``MPIEXEC_TIMEOUT`` is a second
guard inside MPICH. BLAS is pinned to one thread per rank.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mpiexec_path():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def run_dnewton(n_ranks, args, timeout=120, check=True):
    """Run ``mpiexec -n n_ranks python -m dnewton ARGS``; returns CompletedProcess."""
    mpiexec = mpiexec_path()
    if mpiexec is None:
        pytest.skip("no mpiexec found (pip install mpich, or load your MPI)")
    env = dict(os.environ)
    env.update(
        MPIEXEC_TIMEOUT=str(timeout), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )
    cmd = [mpiexec, "-n", str(n_ranks), sys.executable, "-m", "dnewton", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
            f"\n--- stderr\n{proc.stderr}"
        )
    return proc


def read_log(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def shared_data():
    if not (SHARED_DATA / "mnist-demo.svm").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
