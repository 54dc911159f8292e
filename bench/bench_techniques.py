"""Full versus block-diagonal Gauss-Newton, and the synchronization fraction q with
one deliberately slowed rank, on the shared MNIST subset (docs/design.md, "The
paper's techniques").

    python bench/bench_techniques.py [--ranks 4] [--iterations 100] [--slow 0.02]

Runs ``mpiexec -n RANKS python -m dnewton train ...`` for each configuration,
reads the JSON logs and prints a markdown table: median time per Newton iteration
(with min-max), bytes per iteration by phase, iterations to reach f within 1% of
the full method's final value, and the final test accuracy.

Timing caveat: with more ranks than cores, waiting ranks spin in MPI and steal
time from working ones; compare rows of one run with each other, never with a run
on another rank count.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import EMBEDDED_DATA as DATA
from common import dnewton_command, one_thread_environment, read_log

SLOW_RANK_VARIABLE = "DNEWTON_TEST_SLOW_RANK"


def run(ranks, extra, log, env_extra=None, iterations=100, partitions="2,2,2,1"):
    cmd = dnewton_command(ranks, [
        "train", str(DATA / "mnist-demo.svm.gz"), "--test", str(DATA / "mnist-demo.t.svm.gz"),
        "--hidden", "300,300", "--feature-scale", "255", "--center", "--paper", "--quiet",
        "--iterations", str(iterations), "--partitions", partitions, "--log", str(log),
        *extra,
    ])
    env = one_thread_environment(MPIEXEC_TIMEOUT="3000", **(env_extra or {}))
    subprocess.run(cmd, check=True, env=env)
    return read_log(log)


def summarize(name, log, target):
    records = log[1:]
    times = np.array([r["iteration_time"] for r in records])
    phases = ("forward", "backward", "gauss_newton", "sync")
    per_iter = {p: np.mean([r["bytes"].get(p, 0) for r in records]) for p in phases}
    reach = next((r["iter"] for r in log if r["f"] <= target), None)
    cut = sum(r["sync_stopped_blocks"] for r in records)
    return (
        f"| {name} | {np.median(times):.3f} ({times.min():.3f}-{times.max():.3f}) | "
        + " | ".join(f"{per_iter[p] / 2**20:.2f}" for p in phases)
        + f" | {reach if reach is not None else '> ' + str(len(records))} | {cut} | "
        f"{log[-1]['f']:.4f} | {100 * log[-1]['test_accuracy']:.1f}% |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--partitions", default="2,2,2,1",
                        help="layout (10 blocks by default, so q = 0.9 can cut one)")
    parser.add_argument("--slow", type=float, default=0.1,
                        help="seconds the slowed rank sleeps per block CG iteration")
    parser.add_argument("--slow-rank", type=int, default=1)
    parser.add_argument("--xi", default="0.001",
                        help="CG tolerance: tighter than the default 0.1, so that CG runs "
                        "long enough for a straggler to matter")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if not (DATA / "mnist-demo.svm.gz").exists():
        sys.exit(f"the MNIST subset is missing from {DATA}")

    slow_env = {SLOW_RANK_VARIABLE: f"{args.slow_rank}:{args.slow}"}
    configs = [
        ("full", [], None),
        ("diagonal, q = 1", ["--diagonal"], None),
        (f"diagonal, q = 1, rank {args.slow_rank} slowed", ["--diagonal"], slow_env),
        (f"diagonal, q = 0.9, rank {args.slow_rank} slowed",
         ["--diagonal", "--sync-fraction", "0.9"], slow_env),
        (f"diagonal, q = 0.7, rank {args.slow_rank} slowed",
         ["--diagonal", "--sync-fraction", "0.7"], slow_env),
    ]
    logs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra, env) in enumerate(configs):
            print(f"running: {name}", file=sys.stderr, flush=True)
            logs[name] = run(args.ranks, [*extra, "--xi", args.xi], Path(tmp) / f"{i}.jsonl",
                             env, args.iterations, args.partitions)
    target = 1.01 * logs["full"][-1]["f"]
    lines = [
        f"MNIST subset, 784-300-300-10 ReLU, squared loss, {args.ranks} ranks, partitions "
        f"{args.partitions}, xi = {args.xi}, {args.iterations} iterations; slowed rank sleeps "
        f"{args.slow} s per block CG iteration.",
        "",
        "| configuration | s / iteration, median (min-max) | forward MiB/it | backward "
        "MiB/it | Gauss-Newton MiB/it | sync MiB/it | iterations to f <= 1.01 f_full | "
        "blocks cut | final f | test accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [summarize(name, log, target) for name, log in logs.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
