"""Sparse inputs: seconds per Newton iteration and peak memory, CSR blocks against
the same data densified (what io/data.partition did before).

    python bench/bench_sparse.py [--rows 2000] [--features 100000] [--nnz 50]
        [--hidden 16] [--ranks 2] [--iterations 5] [--modes sparse,dense] [--json out.json]

Each mode runs in its own ``mpiexec -n RANKS`` job (so peak RSS is that mode's
alone): every rank draws the same random CSR matrix (`nnz` features per row,
labels from a few of them), builds the problem and runs `iterations` Newton
iterations. ``dense`` hands `partition` the CSR matrix behind a wrapper that is
not ``scipy.sparse``, so each rank densifies its column blocks, as before sparse
inputs. Reported: the mean seconds of the Newton iterations (iteration 0, f and g,
excluded), the largest rank's peak RSS (``ru_maxrss``), the largest rank's
feature bytes and f after the last iteration (the two modes agree to rounding).
BLAS runs on one thread per rank.
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import mpi_command, one_thread_environment


def wide_data(rows, features, nnz, classes=3, seed=0):
    """A CSR (rows, features) matrix of `nnz` entries per row and its labels."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    cols = np.stack([np.sort(rng.choice(features, nnz, replace=False)) for _ in range(rows)])
    values = rng.random((rows, nnz)) + 1e-3
    X = sparse.csr_matrix((values.ravel(), cols.ravel(), np.arange(0, rows * nnz + 1, nnz)),
                          shape=(rows, features))
    y = (cols[:, :5].sum(axis=1) // 7) % classes
    return X, y.astype(np.float64)


class Densified:
    """A CSR matrix that `io.data.partition` does not recognise as sparse: it cuts
    the columns and densifies them, the path without sparse inputs."""

    def __init__(self, X):
        self.X = X
        self.shape = X.shape

    def __getitem__(self, key):
        return self.X[key]


def worker(args):
    from mpi4py import MPI

    from dnewton.app.problem import ModelConfig, Problem
    from dnewton.app.training import solve
    from dnewton.io.data import RawData
    from dnewton.solvers.newton import NewtonOptions

    world = MPI.COMM_WORLD
    X, y = wide_data(args.rows, args.features, args.nnz)
    raw = RawData(X if args.worker == "sparse" else Densified(X), y, args.worker)
    config = ModelConfig(hidden=(args.hidden,), activation="relu", loss="softmax", C=1.0)
    problem = Problem.build(world, raw, None, config)
    data = problem.objective.data
    feature_bytes = data.stored_bytes()
    result = solve(problem, NewtonOptions(iterations=args.iterations, seed=1))
    problem.close()
    seconds = [record.iteration_time for record in result.history[1:]]
    report = world.gather({
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "feature_mib": feature_bytes / 2**20,
    })
    if world.rank == 0:
        print(json.dumps({
            "mode": args.worker, "ranks": world.size,
            "seconds_per_iteration": float(np.mean(seconds)),
            "peak_rss_mib": max(r["maxrss_mib"] for r in report),
            "feature_mib": max(r["feature_mib"] for r in report),
            "f": result.history[-1].f,
        }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--features", type=int, default=100_000)
    parser.add_argument("--nnz", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--modes", default="sparse,dense")
    parser.add_argument("--json")
    parser.add_argument("--worker", choices=["sparse", "dense"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    env = one_thread_environment()
    dense_mib = args.rows * args.features * 8 / 2**20
    print(f"{args.rows} rows x {args.features:,} features, {args.nnz} non-zeros per row, "
          f"network {args.features}-{args.hidden}-3 on {args.ranks} rank(s); densified the "
          f"data would take {dense_mib:,.0f} MiB over the ranks' blocks")
    results = []
    for mode in args.modes.split(","):
        cmd = mpi_command(args.ranks, [__file__, "--worker", mode, *(
            f"--{k}={getattr(args, k)}" for k in ("rows", "features", "nnz", "hidden",
                                                   "iterations"))])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"{mode}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{mode:>6}: {result['seconds_per_iteration']:.3f} s per iteration, peak RSS "
              f"{result['peak_rss_mib']:,.0f} MiB (largest rank), features "
              f"{result['feature_mib']:,.1f} MiB, f = {result['f']:.10e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
