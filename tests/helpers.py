"""Helpers shared by the tests; fixtures and pytest hooks live in conftest.py.

Two kinds of test use them:

* in-process tests, which run on one process and, unchanged, under
  ``mpiexec -n 3 python -m pytest`` (see conftest.py): every rank builds the same
  problem and reaches every collective, and comparisons go through *global*
  parameter vectors (the dense W^1, b^1, W^2, ... flattened), which do not
  depend on the layout;
* tests of whole runs, which start ``mpiexec`` in a subprocess with a timeout
  (`run_dnewton`), so that a hang fails one test instead of blocking the suite.
"""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from dnewton.app.problem import ModelConfig, Problem
from dnewton.io.data import EMBEDDED_DATA, RawData, read_dataset
from dnewton.parallel.gather_scatter import gather_parameters
from dnewton.planning import volume
from dnewton.planning.planner import layout_for

WORLD = MPI.COMM_WORLD
# The MNIST subset that ships with the package (src/dnewton/datasets).
MNIST_DATA = EMBEDDED_DATA


def default_subset(n_instances):
    """|S| of `dnewton train` without subset options on l = `n_instances` (at most
    10,000): 5% of l, but at least 200 instances, all of a smaller set."""
    return max(math.ceil(0.05 * n_instances), min(200, n_instances))


def load_bench(name):
    """The module bench/<name>.py ("suite", "studies/stopping"; bench/ is not a
    package): for tests of its pieces. Its folder goes on sys.path, as when Python
    runs the script, for its ``import common``."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- whole runs under mpiexec ----------------------------------------------------------


def mpiexec_path():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def run_environment(timeout, **extra):
    """The environment of a run started by a test: one BLAS thread, a hang guard."""
    env = dict(os.environ)
    env.update(
        MPIEXEC_TIMEOUT=str(timeout), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra,
    )
    return env


def run_dnewton(n_ranks, args, timeout=120, check=True, env=None):
    """Run ``mpiexec -n n_ranks python -m dnewton ARGS``; returns CompletedProcess.

    `env` adds variables (the fault injections of `dnewton.fault_injection`).
    """
    return run_python(n_ranks, ["-m", "dnewton", *args], timeout, check, env)


def run_python(n_ranks, args, timeout=120, check=True, env=None):
    """Run ``mpiexec -n n_ranks python ARGS`` (a module or a script and its
    arguments), as `run_dnewton`."""
    if WORLD.size > 1:
        pytest.skip("starts mpiexec itself: runs in the one-process suite only")
    mpiexec = mpiexec_path()
    if mpiexec is None:
        pytest.skip("no mpiexec found (pip install mpich, or load your MPI)")
    cmd = [mpiexec, "-n", str(n_ranks), sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                          env=run_environment(timeout, **(env or {})))
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
            f"\n--- stderr\n{proc.stderr}"
        )
    return proc


def read_log(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


TIMINGS = ("time", "iteration_time", "seconds", "checkpoint_seconds")


def without_timings(records):
    """Log records without the fields that measure time."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def width(layout, m, g):
    group = layout.group(m, g)
    return group.stop - group.start


# The bytes of one forward pass and one backward sweep (docs/design.md,
# "Communication"): the package's own formulas, which the planner predicts with.
forward_bytes = volume.forward_bytes
backward_bytes = volume.backward_bytes


def check_digits_epochs(log, reference, n_ranks, partitions, hidden, rate):
    """A mini-batch solver's log of a digits run on `n_ranks` ranks and `partitions`
    ("P0,...,PL") against the single-rank run's `reference` log: the same f, and
    per epoch the learning rate `rate` and the bytes of one forward and one backward
    pass over all l instances (each mini-batch runs one of each, and their bytes are
    linear in the batch size), nothing else."""
    assert [rec["iter"] for rec in log] == [rec["iter"] for rec in reference]
    np.testing.assert_allclose([rec["f"] for rec in log], [rec["f"] for rec in reference],
                               rtol=1e-9)
    train, _ = read_dataset("digits")
    layout = layout_for((train.n_features, *hidden, 10), n_ranks,
                        tuple(map(int, partitions.split(","))))
    for rec in log[1:]:
        assert rec["bytes"]["forward"] == forward_bytes(layout, train.n_instances)
        assert rec["bytes"]["backward"] == backward_bytes(layout, train.n_instances, 1)
        assert rec["bytes"]["gauss_newton"] == 0
        assert rec["alpha"] == rate
        assert rec["lambda"] is None and rec["cg_iters"] is None


# -- in-process problems, on any number of ranks -----------------------------------------

N_FEATURES, N_CLASSES, N_INSTANCES = 7, 3, 11
# Default, one group per layer, and two uneven splits (at least 3 blocks each, so
# they fit the 3-rank suite).
LAYOUTS = [None, (1, 1, 1, 1), (2, 3, 2, 1), (3, 1, 2, 3)]


def synthetic(n_instances=N_INSTANCES, n_features=N_FEATURES, n_classes=N_CLASSES, seed=42):
    """A small dense data set, the same on every rank."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_instances, n_features))
    y = np.arange(n_instances) % n_classes
    return RawData(X, y.astype(np.float64), "synthetic")


def make_problem(loss="squared", activation="tanh", partitions=None, C=0.7, batch_size=4,
                 hidden=(5, 4), data=None, dtype="float64"):
    """A 7-5-4-3 network on `synthetic` data, laid out over every rank of the job."""
    config = ModelConfig(hidden=hidden, activation=activation, loss=loss, C=C,
                         partitions=partitions, batch_size=batch_size, dtype=dtype,
                         replicas=1)
    return Problem.build(WORLD, data if data is not None else synthetic(), None, config)


def dense(problem, theta):
    """(weights, biases): the dense W^m, b^m of local parameters `theta`, on every rank."""
    gathered = gather_parameters(problem.layout, problem.world, theta)
    return problem.world.bcast(gathered, root=0)


def flatten(weights, biases):
    """The global parameter vector: W^1 (row-major), b^1, W^2, b^2, ..."""
    return np.concatenate([part.ravel() for W, b in zip(weights, biases) for part in (W, b)])


def unflatten(problem, vec):
    """(weights, biases) from a global parameter vector."""
    widths, weights, biases, offset = problem.layout.widths, [], [], 0
    for m in range(1, len(widths)):
        n = widths[m - 1] * widths[m]
        weights.append(vec[offset : offset + n].reshape(widths[m - 1], widths[m]))
        biases.append(vec[offset + n : offset + n + widths[m]])
        offset += n + widths[m]
    return weights, biases


def global_vector(problem, theta):
    """The global vector of local parameters `theta`, on every rank."""
    return flatten(*dense(problem, theta))


def local_vector(problem, vec):
    """This rank's part of the global parameter vector `vec`."""
    return problem.layout.parameters(problem.world.rank).scatter(*unflatten(problem, vec))


def n_global(problem):
    widths = problem.layout.widths
    return sum(widths[m - 1] * widths[m] + widths[m] for m in range(1, len(widths)))


def random_theta(problem, seed=1, scale=0.5):
    """This rank's part of one random global vector: the same network on any layout."""
    vec = np.random.default_rng(seed).standard_normal(n_global(problem)) * scale
    return local_vector(problem, vec)


def outputs(problem, theta, rows):
    """z^L of the training instances `rows`, (n, n_L), on every rank (collective)."""
    n = len(range(problem.objective.n_instances)[rows]) if isinstance(rows, slice) else len(rows)
    fwd = problem.network.forward(theta, problem.objective.data.rows(rows), n)
    out = fwd.output if fwd.output is not None else np.empty(
        (n, problem.layout.widths[-1]), dtype=problem.network.dtype)  # as the output ranks
    problem.groups.broadcast(out, problem.layout.output_group[0], "evaluation")
    return out


def central_differences(func, x, eps=1e-6):
    """d func / d x by central differences, shape func(x).shape + (x.size,)."""
    columns = []
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = eps
        columns.append((np.asarray(func(x + e)) - np.asarray(func(x - e))) / (2 * eps))
    return np.stack(columns, axis=-1)


def in_global(problem, func):
    """`func` of local parameters, as a function of the global vector (collective)."""
    return lambda vec: func(local_vector(problem, vec))
