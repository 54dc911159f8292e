"""A machine description for the cost model: compute rates, memory bandwidth, MPI.

The default `Machine` describes a typical cluster node and network (assumptions,
also in docs/scaling.md):

* a core runs a large DGEMM at about 40 GFLOP/s (a 2.5 GHz core with AVX2 FMA at
  ~80% of its 32 FLOP/cycle peak... rounded down) and a thin one, whose smallest
  dimension is 8, at a fifth of that (`gemm`);
* 40 cores and 40 ranks per node, ~100 GB/s of node memory bandwidth, of which one
  core alone streams about 10 GB/s (elementwise loops, the Jacobian D);
* MPI inside a node: 0.5 us latency, 10 GB/s; between nodes a 25 Gb/s-class
  network: 2 us latency, 3 GB/s;
* a few microseconds of interpreter time per kernel call and a millisecond per
  Newton iteration of bookkeeping (drawing S, the records); inside a real pass the
  kernels reach 80% of their rates in isolation (`pass_efficiency`).

`dnewton calibrate` measures this machine's figures (`planning.calibrate`) and
writes them as JSON; `load` reads such a file back and refuses, with one message,
anything that is not a complete description.
"""

import functools
import json
import math
from dataclasses import asdict, dataclass, fields, replace

from ..errors import InputError

# Fields that must be positive numbers (all but `gemm`, `source` and the counts).
_RATES = ("small_product_rate", "stream_bandwidth", "node_bandwidth", "thread_efficiency",
          "latency_intra", "bandwidth_intra", "latency_inter", "bandwidth_inter",
          "call_overhead", "iteration_overhead", "pass_efficiency")
_COUNTS = ("cores_per_node", "ranks_per_node")


@dataclass(frozen=True)
class Machine:
    """Rates of one core, one node and the network (SI units: FLOP/s, bytes/s, s).

    gemm : tuple of (smallest dimension, FLOP/s) pairs
        One core's GEMM rate for an (m x k) by (k x n) product by min(m, k, n),
        interpolated log-linearly between the points and flat beyond them.
    small_product_rate : FLOP/s of one core on the per-instance n_L x |b|
        products with the stored Jacobian D (memory-bound loops).
    stream_bandwidth : bytes/s one core moves in an elementwise loop.
    node_bandwidth : bytes/s of a node's memory, shared by its ranks.
    cores_per_node, ranks_per_node : a job of one rank threads its BLAS over the
        node's cores; with several ranks, each runs one thread, ranks_per_node per
        node (world rank r on node r // ranks_per_node).
    thread_efficiency : each BLAS thread beyond the first adds this share of a core.
    latency_*, bandwidth_* : MPI point-to-point latency (s) and bandwidth (bytes/s)
        inside a node (intra) and between nodes (inter).
    call_overhead : seconds of interpreter and dispatch per kernel call or collective.
    iteration_overhead : seconds per Newton iteration outside the kernels.
    pass_efficiency : the share of the rates above that kernels reach inside a real
        pass (caches shared between kernels, interpreter time): computation is
        divided by it.
    """

    gemm: tuple = ((8, 8e9), (32, 20e9), (128, 32e9), (512, 40e9))
    small_product_rate: float = 5e9
    stream_bandwidth: float = 10e9
    node_bandwidth: float = 100e9
    cores_per_node: int = 40
    ranks_per_node: int = 40
    thread_efficiency: float = 0.8
    latency_intra: float = 0.5e-6
    bandwidth_intra: float = 10e9
    latency_inter: float = 2e-6
    bandwidth_inter: float = 3e9
    call_overhead: float = 5e-6
    iteration_overhead: float = 1e-3
    pass_efficiency: float = 0.8
    source: str = "default (a typical cluster node: docs/scaling.md)"

    # -- rates ---------------------------------------------------------------------

    def gemm_rate(self, m, k, n, threads=1):
        """FLOP/s of an (m x k) by (k x n) GEMM on `threads` threads of one rank."""
        d = max(min(m, k, n), 1)
        points = sorted(self.gemm)
        if d <= points[0][0]:
            rate = points[0][1]
        elif d >= points[-1][0]:
            rate = points[-1][1]
        else:
            for (d0, r0), (d1, r1) in zip(points, points[1:]):
                if d0 <= d <= d1:
                    t = math.log(d / d0) / math.log(d1 / d0)
                    rate = r0 + t * (r1 - r0)
                    break
        return rate * self.speedup(threads) * self.pass_efficiency

    def speedup(self, threads):
        return 1.0 + (max(threads, 1) - 1) * self.thread_efficiency

    def gemm_seconds(self, m, k, n, threads=1):
        """Seconds of one GEMM call of these sizes (0 for an empty one)."""
        return _gemm_seconds(self, m, k, n, threads)

    def stream_seconds(self, nbytes, ranks_on_node=1):
        """Seconds to stream `nbytes` through one core's elementwise loop while
        `ranks_on_node` ranks share the node's memory."""
        share = self.node_bandwidth / max(ranks_on_node, 1)
        return nbytes / (min(self.stream_bandwidth, share) * self.pass_efficiency)

    def node_of(self, rank):
        return rank // self.ranks_per_node

    def allreduce_seconds(self, nbytes, members):
        """An allreduce of `nbytes` over the world ranks `members` (0 for one rank):
        2 ceil(log2 k) latency + 2 (k-1)/k nbytes / bandwidth, the network's
        figures when the members span nodes (docs/design.md's cost note)."""
        if len(members) <= 1:
            return 0.0
        # nodes hold contiguous ranks: the members span nodes iff the extremes do
        return self.sum_seconds(nbytes, len(members),
                                self.node_of(min(members)) != self.node_of(max(members)))

    def sum_seconds(self, nbytes, k, across):
        """`allreduce_seconds` over k ranks, on the network when `across` nodes."""
        if k <= 1:
            return 0.0
        if across:
            latency, bandwidth = self.latency_inter, self.bandwidth_inter
        else:
            latency, bandwidth = self.latency_intra, self.bandwidth_intra
        return (2 * math.ceil(math.log2(k)) * latency + 2 * (k - 1) / k * nbytes / bandwidth
                + self.call_overhead)

    # -- files ---------------------------------------------------------------------

    def to_json(self):
        record = asdict(self)
        record["gemm"] = [list(point) for point in self.gemm]
        return record

    def text(self):
        """The machine file's JSON text."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, record, where="the machine description"):
        """A Machine from a dict as `to_json` writes it; InputError naming the first
        missing, unknown or nonsensical field."""
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object of machine figures")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise InputError(f"{where}: unknown field {unknown[0]!r}")
        missing = [name for name in ("gemm", *_RATES, *_COUNTS) if name not in record]
        if missing:
            raise InputError(f"{where}: missing field {missing[0]!r}")
        values = {}
        for name in (*_RATES, *_COUNTS):
            value = record[name]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise InputError(f"{where}: {name} must be a positive number, got {value!r}")
            if name in _COUNTS and value != int(value):
                raise InputError(f"{where}: {name} must be a whole number, got {value!r}")
            values[name] = int(value) if name in _COUNTS else float(value)
        gemm = record["gemm"]
        ok = isinstance(gemm, list) and gemm and all(
            isinstance(p, list) and len(p) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                    and math.isfinite(x) and x > 0 for x in p)
            for p in gemm)
        if not ok:
            raise InputError(f"{where}: gemm must be a list of [smallest dimension, FLOP/s] "
                             "pairs of positive numbers")
        values["gemm"] = tuple((float(d), float(r)) for d, r in gemm)
        values["source"] = str(record.get("source", where))
        return cls(**values)

    @classmethod
    def load(cls, path):
        """The Machine in the JSON file `path` (as `dnewton calibrate` writes it)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the machine file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a text file, so not a machine file") from None
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{path}: not a valid JSON machine file ({exc})") from None
        try:
            machine = cls.from_json(record, str(path))
        except OverflowError:  # a whole number beyond any float
            raise InputError(f"{path}: a figure of the machine file is out of range") from None
        return replace(machine, source=str(path))


@functools.lru_cache(maxsize=65536)
def _gemm_seconds(machine, m, k, n, threads):
    # Layouts repeat a few block shapes thousands of times: computed once each.
    if min(m, k, n) <= 0:
        return 0.0
    return 2.0 * m * k * n / machine.gemm_rate(m, k, n, threads) + machine.call_overhead


DEFAULT = Machine()
