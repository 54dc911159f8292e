"""Does a non-blocking sum pay on this machine? A pass's sum started before an
unrelated GEMM and progressed between blocks of it, against the same sum done
blocking after the GEMM.

    mpiexec -n 2 python -m mpi4py bench/overlap.py [--sum 2000x300] [--gemm 300x2000x150]
                                                    [--blocks 1,4,8] [--repeat 30]

The question behind `--pipeline` and behind any reordering of the passes to start
a sum early: an MPI whose sums move without the CPU (an RDMA network, a progress
thread) hides them under computation; through shared memory a sum is the ranks'
own copying and adding, done inside MPI calls, so starting it early only moves
that work. The defaults are the reference run's case (layout 2,1,2,1): the
backward pass's sum of 2,000 x 300 numbers, and the layer-2 gradient GEMM
Z^T dS (300 x 2000 x 150) that could run while it moves.

Every repetition runs, in alternation and each after a barrier:
  the GEMM alone, in one call and in B blocks of its rows;
  the sum alone (in-place Allreduce);
  blocking: the sum, then the GEMM;
  overlapped: Iallreduce, the GEMM in B blocks with MPI_Test after each, then Wait.
Rank 0 prints its medians and interquartile ranges in ms, and the time left
in Wait; every overlapped sum is checked against the blocking one. BLAS runs on
one thread per rank: start one rank per core, never more.
"""

import argparse
import sys
import time

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits


def shape(text, parts):
    """'2000x300' -> (2000, 300), with `parts` positive integers."""
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) != parts or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected {parts} positive integers joined by 'x', got {text!r}")
    return values


def block_counts(text):
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,4,8, got {text!r}")
    return counts


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sum", type=lambda t: shape(t, 2), default=(2000, 300),
                        metavar="ROWSxCOLS", help="the summed float64 array")
    parser.add_argument("--gemm", type=lambda t: shape(t, 3), default=(300, 2000, 150),
                        metavar="MxKxN", help="C (M x N) = Z^T dS, Z (K x M), dS (K x N)")
    parser.add_argument("--blocks", type=block_counts, default=[1, 4, 8],
                        metavar="B1,B2,...", help="row blocks of the overlapped GEMM")
    parser.add_argument("--repeat", type=int, default=30)
    return parser


class Case:
    """The buffers of one rank: the sum's, and the GEMM's operands."""

    def __init__(self, comm, sum_shape, gemm_shape):
        rng = np.random.default_rng(comm.rank)
        m, k, n = gemm_shape
        self.comm = comm
        self.base = rng.standard_normal(sum_shape)
        self.buf = np.empty_like(self.base)
        self.Z = rng.standard_normal((k, m))
        self.dS = rng.standard_normal((k, n))
        self.C = np.empty((m, n))

    def gemm(self, blocks=1, request=None):
        """C = Z^T dS, `blocks` row blocks of C one after another (the same
        arithmetic per entry as one call); MPI_Test on `request` after each."""
        for rows in np.array_split(np.arange(self.C.shape[0]), blocks):
            lo, hi = rows[0], rows[-1] + 1
            np.matmul(self.Z[:, lo:hi].T, self.dS, out=self.C[lo:hi])
            if request is not None:
                request.Test()

    def run(self, mode, blocks=1):
        """Seconds of one `mode` ('gemm', 'sum', 'blocking' or 'overlapped', the
        GEMM in `blocks` row blocks), and of its final Wait (0 when there is none)."""
        self.buf[...] = self.base
        self.comm.Barrier()
        start = time.perf_counter()
        waited = 0.0
        if mode == "gemm":
            self.gemm(blocks)
        elif mode == "sum":
            self.comm.Allreduce(MPI.IN_PLACE, self.buf, op=MPI.SUM)
        elif mode == "blocking":
            self.comm.Allreduce(MPI.IN_PLACE, self.buf, op=MPI.SUM)
            self.gemm()
        else:
            request = self.comm.Iallreduce(MPI.IN_PLACE, self.buf, op=MPI.SUM)
            self.gemm(blocks, request)
            began = time.perf_counter()
            request.Wait()
            waited = time.perf_counter() - began
        return time.perf_counter() - start, waited


def label(mode, blocks):
    gemm = "the GEMM" if blocks == 1 else f"the GEMM in {blocks} blocks"
    return {"gemm": f"{gemm} alone", "sum": "the sum alone",
            "blocking": "blocking: the sum, then the GEMM",
            "overlapped": f"overlapped: Iallreduce, {gemm}"
                          + (" with a Test after each" if blocks > 1 else "") + ", Wait"}[mode]


def summary(seconds):
    q1, median, q3 = np.percentile(np.asarray(seconds) * 1e3, [25, 50, 75])
    return f"{median:.2f} ({q1:.2f}-{q3:.2f})"


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if max(args.blocks) > args.gemm[0]:
        parser.error(f"--blocks: at most M = {args.gemm[0]} row blocks")
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    comm = MPI.COMM_WORLD
    case = Case(comm, args.sum, args.gemm)
    modes = [("gemm", 1), *(("gemm", b) for b in args.blocks if b > 1), ("sum", 1),
             ("blocking", 1), *(("overlapped", b) for b in args.blocks)]
    times = {mode: [] for mode in modes}
    waits = {mode: [] for mode in modes}
    worst = 0.0
    with threadpool_limits(1):
        case.run("blocking")  # warm-up: page in, let MPI set up its channels
        expected = case.buf.copy()
        scale = np.abs(expected).max() or 1.0
        for rep in range(args.repeat):
            for mode in (modes if rep % 2 == 0 else modes[::-1]):
                spent, waited = case.run(*mode)
                times[mode].append(spent)
                waits[mode].append(waited)
                if mode[0] == "overlapped":
                    worst = max(worst, float(np.abs(case.buf - expected).max() / scale))
    worst = comm.allreduce(worst, op=MPI.MAX)
    if comm.rank != 0:
        return 0
    rows, cols = args.sum
    m, k, n = args.gemm
    print(f"sum: {rows} x {cols} float64 ({8 * rows * cols / 1e6:.1f} MB) over {comm.size} "
          f"rank(s); GEMM {m} x {k} x {n} ({2 * m * k * n / 1e9:.3f} GFLOP); "
          f"{args.repeat} repetitions; ms on rank 0, median (interquartile range)")
    print("| run | whole | left in Wait |")
    print("| --- | --- | --- |")
    for mode, blocks in modes:
        print(f"| {label(mode, blocks)} | {summary(times[(mode, blocks)])} | "
              f"{summary(waits[(mode, blocks)]) if mode == 'overlapped' else ''} |")
    print(f"overlapped sums against the blocking one: largest difference {worst:.1e} "
          f"of the largest entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
