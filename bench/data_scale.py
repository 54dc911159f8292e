"""Data at scale: peak RSS of every rank, and the seconds from start to the first
iteration, of full Fashion-MNIST (60,000 x 784) read by shares.

    python bench/data_scale.py rss [--ranks 1,2,4] [--out DIR]
    python bench/data_scale.py startup [--ranks 1,2] [--repeats 3] [--out DIR]

Both run ``mpiexec -n N dnewton train fashion-train.npz --hidden 300,300
--feature-scale 255 --center --iterations 1 --sample-size all --replicas N`` (the .npz from
bench/experiment.py's converter, uncompressed uint8, so each rank maps its rows).

* ``rss``: each rank reports its own peak resident set (``ru_maxrss``, a memory
  figure, not a timing: it may be taken on a busy machine); the table gives the
  largest rank and the sum over ranks, each against one rank's peak.
* ``startup``: seconds from launching the job to the start of iteration 1 (the
  job's wall time less the logged seconds of iteration 1; what remains is start-up,
  reading, iteration 0 and the end): the median and the spread of `--repeats` runs
  per rank count, the counts taking turns, and the load average before and after.
  A timing: take it on otherwise idle cores, and never with more ranks than cores.
"""

import argparse
import json
import os
import re
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, fashion_npz, mpi_command, one_thread_environment

# --sample-size all: the paper's method (f, g and S over all instances), which the
# table in docs/scaling.md measures; dnewton's default samples beyond 10,000 instances.
ARGS = ["--hidden", "300,300", "--feature-scale", "255", "--center", "--iterations", "1",
        "--sample-size", "all", "--quiet"]
MARK = "data_scale: peak_rss_kib"


def fashion(out):
    """The path of fashion-train.npz in `out`, converted once."""
    return fashion_npz(Path(out) / "data")["train"]


def launch(n_ranks, train, extra=(), timeout=900):
    """Run the training job on `n_ranks` ranks, each through `rank_main`; returns
    (seconds, stdout, stderr)."""
    cmd = mpi_command(n_ranks, [__file__, "rank", "train", str(train), *ARGS,
                                "--replicas", str(n_ranks), *extra])
    env = one_thread_environment(MPIEXEC_TIMEOUT=str(timeout))
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout + 30)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr}")
    return seconds, proc.stdout, proc.stderr


def rank_main(argv):
    """One rank: dnewton's command line, then this rank's peak RSS on stderr."""
    import atexit
    import resource

    def report():
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        print(f"\n{MARK} {peak}", file=sys.stderr, flush=True)

    atexit.register(report)
    sys.argv = ["dnewton", *argv]
    runpy.run_module("dnewton", run_name="__main__")


def rss(args):
    train = fashion(args.out)
    rows = []
    for n in args.ranks:
        _, _, stderr = launch(n, train)
        peaks = [int(kib) for kib in re.findall(MARK + r" (\d+)", stderr)]
        if len(peaks) != n:
            raise SystemExit(f"{n} ranks reported {len(peaks)} peaks:\n{stderr}")
        rows.append((n, max(peaks) * 1024, sum(peaks) * 1024))
    one = rows[0][1] if rows[0][0] == 1 else None
    print("| ranks (`--replicas` = ranks) | peak RSS, largest rank | total over ranks |"
          + (" largest / one rank | total / one rank |" if one else ""))
    print("| --- | --- | --- |" + (" --- | --- |" if one else ""))
    for n, largest, total in rows:
        line = f"| {n} | {largest / 1e9:.2f} GB | {total / 1e9:.2f} GB |"
        if one:
            line += f" {largest / one:.2f} | {total / one:.2f} |"
        print(line)
    return rows


def startup(args):
    train = fashion(args.out)
    results = {n: [] for n in args.ranks}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "run.jsonl"
        for _ in range(args.repeats):  # the rank counts take turns: a changing load
            for n in args.ranks:       # falls on all of them alike
                wall, _, _ = launch(n, train, ["--log", str(log)])
                records = [json.loads(line) for line in log.read_text().splitlines()]
                first = next(r for r in records if r["iter"] == 1)
                results[n].append(wall - first["iteration_time"])
    load_after = os.getloadavg()
    print(f"{os.cpu_count()} cores; load average (1, 5, 15 min) "
          f"{', '.join(f'{v:.2f}' for v in load_before)} before, "
          f"{', '.join(f'{v:.2f}' for v in load_after)} after")
    print(f"| ranks (`--replicas` = ranks) | seconds to iteration 1 (median of "
          f"{args.repeats}) | spread (min - max) | against one rank |")
    print("| --- | --- | --- | --- |")
    base = statistics.median(results[args.ranks[0]])
    for n, seconds in results.items():
        median = statistics.median(seconds)
        print(f"| {n} | {median:.2f} | {min(seconds):.2f} - {max(seconds):.2f} | "
              f"{median / base:.2f} |")
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "rank":
        return rank_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["rss", "startup"])
    parser.add_argument("--ranks", type=lambda s: [int(n) for n in s.split(",")],
                        default=None, metavar="N,N,...")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"), metavar="DIR",
                        help="where the converted data set is kept")
    args = parser.parse_args(argv)
    if args.ranks is None:
        args.ranks = [1, 2, 4] if args.what == "rss" else [1, 2]
    return rss(args) if args.what == "rss" else startup(args)


if __name__ == "__main__":
    main()
