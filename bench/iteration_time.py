"""Seconds per iteration of dnewton runs, alternated, against their FLOP bound.

    python bench/iteration_time.py                    # the reference run
    python bench/iteration_time.py --set fashion --iterations 60 \
        --variant "planner=" --variant "2,1,2,1=--partitions 2,1,2,1"

The reference run is the MNIST subset shipped with the package, ``--hidden 300,300
--feature-scale 255 --center --paper``, 30 iterations on 2 ranks (float64); ``--set
fashion`` is full Fashion-MNIST with dnewton's defaults, its recommended stochastic
Newton (float32). Each ``--variant NAME=OPTIONS`` adds options to the set's; every
repetition runs every variant once, in turn, so the machine's drift spreads over all
of them. Per variant: the median over repetitions of each run's median iteration time
(iterations 2 on; the log's training seconds), the run medians' min-max, the
training GFLOP per iteration (the log's, every phase but evaluation), and the time
over the FLOP bound, FLOPs / the 2-thread GEMM rate of the run's precision (2000^3,
measured before and after the runs; their median). Time on an idle machine, with
no more ranks than cores.
"""

import argparse
import shlex
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import (
    ROOT,
    dnewton_command,
    fashion_npz,
    gemm_rate,
    one_thread_environment,
    read_log,
    training_flops,
)

NETWORK = ["--hidden", "300,300", "--feature-scale", "255", "--center", "--quiet"]


def sets(out):
    """name -> (training set, options, precision of the runs)."""
    return {
        "reference": (lambda: "mnist-demo", ["--paper"], "float64"),
        "fashion": (lambda: str(fashion_npz(out)["train"]), [], "float32"),
    }


def run_median(train, options, ranks, iterations, log):
    """(median seconds per iteration from iteration 2 on, training FLOPs per iteration)."""
    command = dnewton_command(ranks, ["train", train, *NETWORK, *options,
                                      "--iterations", str(iterations), "--log", str(log)])
    subprocess.run(command, check=True, env=one_thread_environment(),
                   stderr=subprocess.DEVNULL)
    records = [r for r in read_log(log) if r["iter"] >= 2]
    return statistics.median(r["iteration_time"] for r in records), training_flops(records)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["reference", "fashion"], default="reference")
    parser.add_argument("--variant", action="append", metavar="NAME=OPTIONS",
                        help="a named run with these options added (default: one, "
                        "'default=', the set's options alone)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT / "docs" / "time-to-accuracy" / "data",
                        help="where Fashion-MNIST's .npz files are made (once)")
    args = parser.parse_args(argv)
    variants = [v.partition("=") for v in (args.variant or ["default="])]
    variants = [(name, shlex.split(options)) for name, _, options in variants]
    train, base, precision = sets(args.data)[args.set]
    train = train()
    rates = [gemm_rate(2, precision)]
    times = {name: [] for name, _ in variants}
    flops = {}
    with tempfile.TemporaryDirectory() as folder:
        for repetition in range(args.repeat):
            for index, (name, options) in enumerate(variants):
                log = Path(folder) / f"{index}-{repetition}.jsonl"
                seconds, flops[name] = run_median(train, [*base, *options], args.ranks,
                                                  args.iterations, log)
                times[name].append(seconds)
    rates.append(gemm_rate(2, precision))
    rate = statistics.median(rates)
    print(f"{args.set}, {args.ranks} ranks, {args.iterations} iterations, {args.repeat} "
          f"repetitions; 2-thread GEMM ({precision}) {' and '.join(f'{r:.0f}' for r in rates)} "
          "GFLOP/s before and after")
    print("| variant | options | ms per iteration, median (min-max) | GFLOP per iteration "
          "| time / FLOP bound |")
    print("| --- | --- | --- | --- | --- |")
    for name, options in variants:
        median = statistics.median(times[name])
        bound = flops[name] / (rate * 1e9)
        print(f"| {name} | {shlex.join([*base, *options]) or '(defaults)'} | "
              f"{1e3 * median:.1f} ({1e3 * min(times[name]):.1f}-{1e3 * max(times[name]):.1f}) "
              f"| {flops[name] / 1e9:.2f} | {median / bound:.2f} |")


if __name__ == "__main__":
    main()
