"""What the waiting in `--log-view` is made of: the sums themselves, or ranks
arriving apart.

    python bench/waits.py [--ranks 2] train DATA [dnewton train's options ...]

Runs ``mpiexec -n RANKS dnewton train ...`` with the ledger's synchronized timing
(DNEWTON_LOG_SYNC=1, see dnewton/parallel/ledger.py): every blocking collective
over the layout's groups (the passes' sums, the Gauss-Newton products', CG's and
the line search's scalars, softmax's broadcast) is preceded by a barrier on the
same communicator, timed apart. The barrier is the time until the last rank of the
group arrives (imbalance, jitter), the collective after it the sum alone. From the
run's log it prints, per phase, the bytes and both times in ms per Newton
iteration (mean over the ranks). The barriers add a meeting point each, so the run
itself is slower: read the split, not the total. Not split: the non-blocking sums
of ``--pipeline``, the block-diagonal CG's completion vote and the monitoring.
Diagnostics only; the training is the ordinary one.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import dnewton_command, one_thread_environment, read_log

from dnewton.parallel.ledger import SYNC_VARIABLE


def split(records):
    """[(phase, bytes, wait, barrier)] per Newton iteration (seconds; iterations 1
    onwards, or iteration 0 alone), for the phases whose waiting the log splits."""
    iterations = [r for r in records if r["iter"] > 0] or records
    rows = []
    for phase, spent in iterations[0]["seconds"].items():
        if "barrier" not in spent:
            continue
        n = len(iterations)
        nbytes = sum(r["bytes"][phase] for r in iterations) / n
        wait, barrier = (sum(r["seconds"][phase][part] for r in iterations) / n
                         for part in ("wait", "barrier"))
        if nbytes or wait:
            rows.append((phase, nbytes, wait, barrier))
    return rows


def table(rows):
    """The markdown table and the total line of `split`'s rows (ms)."""
    lines = ["ms per iteration, mean over ranks: the barrier (waiting for the others) "
             "and the collective (the sum alone)",
             "| phase | bytes per iteration | barrier | collective |",
             "| --- | --- | --- | --- |"]
    for phase, nbytes, wait, barrier in sorted(rows, key=lambda row: -row[2]):
        lines.append(f"| {phase} | {nbytes:.0f} | {1e3 * barrier:.2f} | "
                     f"{1e3 * (wait - barrier):.2f} |")
    barrier = sum(row[3] for row in rows)
    summed = sum(row[2] for row in rows) - barrier
    lines.append(f"all phases: {1e3 * barrier:.1f} ms waiting for the others, "
                 f"{1e3 * summed:.1f} ms in the collectives, per iteration")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks of the run")
    parser.add_argument("train", nargs=argparse.REMAINDER,
                        help="train DATA and dnewton train's options")
    args = parser.parse_args(argv)
    if args.train[:1] != ["train"] or len(args.train) < 2:
        parser.error("give the run: train DATA [dnewton train's options ...]")
    with tempfile.TemporaryDirectory(prefix="dnewton-waits-") as folder:
        run = list(args.train)
        if "--log" in run:
            log = Path(run[run.index("--log") + 1])
        else:
            log = Path(folder) / "run.jsonl"
            run += ["--log", str(log)]
        env = one_thread_environment(**{SYNC_VARIABLE: "1"})
        status = subprocess.run(dnewton_command(args.ranks, run), env=env).returncode
        if status != 0:
            return status
        print()
        print(table(split(read_log(log))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
