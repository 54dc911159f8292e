"""What the waiting in `--log-view` is made of: the sums themselves, or ranks
arriving apart.

    mpiexec -n 2 python bench/waits.py train DATA [dnewton train's options ...]

Runs ``dnewton train`` with every blocking allreduce over the layout's groups (the
passes' sums, the Gauss-Newton products', CG's and the line search's scalars)
preceded by a barrier on the same communicator, and times the two apart: the barrier is the
time until the last rank of the group arrives (imbalance, jitter), the allreduce
after it the sum alone. At the end rank 0 prints, per phase and payload, the
calls and both times of every rank, in ms per Newton iteration. The barriers
add a meeting point each, so the run itself is slower: read the split, not the
total. Not probed: the broadcast of softmax's curvature data and, with
``--pipeline``, the non-blocking sums. Diagnostics only; the training and its log
are the ordinary ones.
"""

import collections
import sys
import time

from mpi4py import MPI

from dnewton.app.cli import build_parser
from dnewton.app.cli import main as dnewton_main
from dnewton.parallel import groups


def probed(stats):
    """Group.allreduce with a barrier before it, both timed into `stats`."""
    plain = groups.Group.allreduce

    def allreduce(self, buf, phase):
        if self.comm is None:
            return plain(self, buf, phase)
        began = time.perf_counter()
        self.comm.Barrier()
        arrived = time.perf_counter()
        plain(self, buf, phase)
        entry = stats[(str(phase), buf.nbytes)]
        entry[0] += 1
        entry[1] += arrived - began
        entry[2] += time.perf_counter() - arrived

    return allreduce


def iterations(argv):
    """The run's --iterations, as the command line reads it (its default included)."""
    return build_parser().parse_args(argv).iterations


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    stats = collections.defaultdict(lambda: [0, 0.0, 0.0])
    groups.Group.allreduce = probed(stats)
    try:
        dnewton_main(argv)
        status = 0
    except SystemExit as done:  # the command line's main always exits
        status = done.code
    everything = MPI.COMM_WORLD.gather(dict(stats), root=0)
    if MPI.COMM_WORLD.rank == 0:
        per = max(iterations(argv), 1)
        keys = sorted({k for s in everything for k in s},
                      key=lambda k: -max(s.get(k, [0, 0, 0])[2] for s in everything))
        ranks = range(len(everything))
        print("\nms per iteration: barrier (waiting for the others) / allreduce (the sum)")
        print("| phase | bytes | calls per iteration | "
              + " | ".join(f"rank {r} barrier / sum" for r in ranks) + " |")
        print("| --- | --- | --- |" + " --- |" * len(everything))
        for phase, nbytes in keys:
            calls = max(s.get((phase, nbytes), [0])[0] for s in everything) / per
            cells = []
            for s in everything:
                n, barrier, summed = s.get((phase, nbytes), [0, 0.0, 0.0])
                cells.append(f"{1e3 * barrier / per:.2f} / {1e3 * summed / per:.2f}")
            print(f"| {phase} | {nbytes} | {calls:.1f} | " + " | ".join(cells) + " |")
        for r, s in enumerate(everything):
            barrier = sum(v[1] for v in s.values()) / per
            summed = sum(v[2] for v in s.values()) / per
            print(f"rank {r}: {1e3 * barrier:.1f} ms waiting for the others, "
                  f"{1e3 * summed:.1f} ms in the sums, per iteration")
    return status


if __name__ == "__main__":
    sys.exit(main())
