"""`dnewton calibrate`: measure this machine's `Machine` figures in about 30 seconds.

What it times (each figure the median of repetitions; BLAS on one thread through
threadpoolctl, as one rank per core runs):

* the package's own GEMM kernel (`block_forward`, Z (n x a) by W (a x b)) at
  smallest dimensions 8, 32, 128 and 512: the `gemm` table; the largest shape
  once more on all cores: `thread_efficiency`;
* the Jacobian kernels (`jacobian_vector_product` and its transpose) less their
  GEMMs: `small_product_rate`;
* an elementwise NumPy loop over arrays far larger than the caches:
  `stream_bandwidth`; `node_bandwidth` is the sum over the ranks measuring at once
  under mpiexec, else one core's times the cores (an upper bound: said so);
* a kernel call on a 1 x 1 block: `call_overhead`;
* a forward pass and a gradient sweep of the reference network on one thread,
  against what the figures above predict for them: `pass_efficiency`;
* under mpiexec with at least 2 ranks, an 8-byte and a 4 MiB allreduce over all
  ranks: the intra-node latency and bandwidth. Between nodes nothing can be
  measured here: the default network figures stay (and the report says so).

Every rank measures at the same time (so the rates are those of a busy node);
rank 0's figures are kept. The only MPI calls of the planning package are here.
"""

import math
import os
import time
from dataclasses import replace

import numpy as np

from ..constants import BATCH_SIZE
from .machine import DEFAULT

GEMM_DIMS = (8, 32, 128, 512)


def _median_seconds(fn, budget, least=3):
    """Median seconds of `fn` over repetitions that take about `budget` seconds."""
    fn()  # warm-up: page in, let the clock settle
    samples, started = [], time.perf_counter()
    while len(samples) < least or time.perf_counter() - started < budget:
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
        if len(samples) >= 1000:
            break
    return float(np.median(samples))


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def measure(seconds=30.0, comm=None, log=print):
    """A `Machine` of this machine, measured in about `seconds` (collective over
    `comm` when given). `log(text)` hears what was measured and what was assumed."""
    from threadpoolctl import threadpool_limits

    from .. import _kernels as K

    budget = max(seconds, 1.0) / 17.0  # 17 timed pieces below
    rng = np.random.default_rng(0)
    n_ranks = 1 if comm is None else comm.size
    cores = _cores()
    notes = []

    def barrier():
        if comm is not None and comm.size > 1:
            comm.Barrier()

    with threadpool_limits(limits=1):
        gemm = []
        n, a = BATCH_SIZE, 1024  # a batch of rows, past the caches as in a pass
        for d in GEMM_DIMS:
            Z, W = rng.standard_normal((n, a)), rng.standard_normal((a, d))
            out = np.empty((n, d))
            barrier()
            t = _median_seconds(lambda Z=Z, W=W, out=out: K.block_forward(Z, W, None, out,
                                                                          False), budget)
            gemm.append((d, 2.0 * n * a * d / t))
        # the Jacobian kernels at the reference's sizes, less their GEMMs (timed alike)
        s, a, b, nl = 200, 300, 300, 10
        Z, V, vb = rng.standard_normal((s, a)), rng.standard_normal((a, b)), np.zeros(b)
        D, U = rng.standard_normal((s, nl, b)), np.empty((s, b))
        Jv, Q = np.zeros((s, nl)), rng.standard_normal((s, nl))
        out_W, out_b = np.zeros((a, b)), np.zeros(b)
        barrier()
        t_jv = _median_seconds(lambda: K.jacobian_vector_product(Z, V, vb, D, U, Jv), budget)
        t_jt = _median_seconds(
            lambda: K.jacobian_transpose_product(Z, D, Q, U, out_W, out_b, 1.0), budget)
        gemm_part = 2 * _median_seconds(lambda: K.block_forward(Z, V, None, U, False), budget)
        small = max(t_jv + t_jt - gemm_part, 0.05 * (t_jv + t_jt))
        small_rate = 4.0 * s * nl * b / small
        # elementwise streaming, far beyond the caches
        x, y = rng.standard_normal(4_000_000), rng.standard_normal(4_000_000)
        z = np.empty_like(x)
        barrier()
        t = _median_seconds(lambda: np.add(x, y, out=z), budget)
        stream = 3 * x.nbytes / t
        # interpreter and dispatch per kernel call
        one, w1, o1 = np.ones((1, 1)), np.ones((1, 1)), np.empty((1, 1))
        t_call = _median_seconds(lambda: K.block_forward(one, w1, None, o1, False),
                                 budget / 4, least=100)
    # the largest GEMM on every core (one rank's BLAS threads)
    threads = cores if n_ranks == 1 else 1
    efficiency = DEFAULT.thread_efficiency
    if threads > 1:
        with threadpool_limits(limits=threads):
            Z, W = rng.standard_normal((2048, 512)), rng.standard_normal((512, 512))
            out = np.empty((2048, 512))
            t = _median_seconds(lambda: K.block_forward(Z, W, None, out, False), budget)
        speedup = 2.0 * 2048 * 512 * 512 / t / gemm[-1][1]
        efficiency = min(max((speedup - 1) / (threads - 1), 0.05), 1.0)
    else:
        notes.append("thread efficiency: not measured under mpiexec (default kept)")
    node_bandwidth = stream * min(n_ranks, cores) if n_ranks > 1 else stream * cores
    if n_ranks == 1:
        notes.append("node bandwidth: one core's stream times the cores (an upper bound)")
    machine = replace(
        DEFAULT, gemm=tuple(gemm), small_product_rate=small_rate, stream_bandwidth=stream,
        node_bandwidth=node_bandwidth, cores_per_node=cores, ranks_per_node=cores,
        thread_efficiency=efficiency, call_overhead=t_call,
        source=f"dnewton calibrate on {os.uname().nodename} ({n_ranks} rank(s), {cores} cores)",
    )
    machine = replace(machine, pass_efficiency=_pass_efficiency(machine, n_ranks, budget))
    if comm is not None and comm.size > 1:
        latency, bandwidth = _mpi(comm, budget)
        machine = replace(machine, latency_intra=latency, bandwidth_intra=bandwidth)
        notes.append("network between nodes: not measurable on one node (defaults kept)")
    else:
        notes.append("MPI: run under mpiexec with >= 2 ranks to measure it (defaults kept)")
    for note in notes:
        log(f"dnewton calibrate: {note}")
    return machine


def _pass_efficiency(machine, n_ranks, budget):
    """Modelled over measured seconds of a forward pass and a gradient sweep of the
    reference network (784-300-300-10, 2,000 instances) on one rank and one thread:
    what the kernels lose inside a real pass (caches shared between kernels,
    interpreter time) against their rates in isolation. At most 1."""
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    from ..model.activations import Activation
    from ..model.network import Network
    from ..parallel.groups import Groups
    from ..parallel.layout import Layout
    from .cost import Workload, _Timer
    from .volume import GroupMembers

    widths, n = (784, 300, 300, 10), 2000
    layout = Layout(widths, (1, 1, 1, 1), 1)
    groups = Groups(MPI.COMM_SELF, layout)
    try:
        network = Network(layout, groups, Activation.hidden("relu"))
        theta = network.initial_parameters(0)
        inputs = {0: np.random.default_rng(1).standard_normal((n, widths[0]))}
        grad = np.zeros_like(theta)

        def passes():
            fwd = network.forward(theta, inputs, n)
            network.backward(theta, fwd, fwd.output / n, grad)

        with threadpool_limits(limits=1):
            measured = _median_seconds(passes, 2 * budget)
    finally:
        groups.free()
    timer = _Timer(layout, GroupMembers(layout), replace(machine, pass_efficiency=1.0),
                   Workload(widths, n, 1), n_ranks, 1, threads=1)
    modelled = float(timer._forward(n) + timer._backward(n, 1))
    return min(modelled / measured, 1.0)


def _mpi(comm, budget):
    """(latency, bandwidth) of allreduces over `comm` (8 bytes; 4 MiB).

    Every rank must run the same number of collectives, so the repetitions are
    fixed by rank 0's first estimate, broadcast, not by each rank's own clock."""
    from mpi4py import MPI

    k = comm.size

    def timed(buf):
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf)
        once = comm.bcast(time.perf_counter() - t, root=0)
        repeat = int(min(max(budget / max(once, 1e-7), 20), 2000))
        samples = []
        for _ in range(repeat):
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf)
            samples.append(time.perf_counter() - t)
        return float(np.median(samples))

    t_small = timed(np.zeros(1))
    large = np.zeros(2**19)
    t_large = timed(large)
    steps = 2 * math.ceil(math.log2(k))
    latency = max(t_small / steps, 1e-8)
    moved = 2 * (k - 1) / k * large.nbytes
    bandwidth = moved / max(t_large - steps * latency, 1e-9)
    # every rank takes rank 0's figures
    latency, bandwidth = comm.bcast((latency, bandwidth), root=0)
    return latency, bandwidth
