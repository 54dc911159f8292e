"""Predicted seconds, bytes and memory per rank of one Newton iteration.

A layout choice (`Choice`: partitions, block-to-rank assignment, replicas,
Jacobian mode) on a problem (`Workload`: widths, l, |S|, precision, counts) and a
machine (`machine.Machine`) gives a `Prediction` per phase (the ledger's phases,
plus ``replicas`` for R > 1 copies).

Time is a critical path, the shape of the unpipelined run (docs/design.md,
"Passes"): a pass walks the layers one after another, and in each layer every rank
does its own blocks' work at once, then the layer's groups sum; so a layer costs
its busiest rank's computation plus the longest chain of sums a rank takes part
in. A rank's computation is its GEMMs at the machine's rate for their shape, its
per-instance products with the stored Jacobian at the small-product rate, and its
elementwise loops (activations, zeroing, CG's vector updates) at the memory
bandwidth it gets; every kernel call and collective adds the machine's call
overhead. A sum of N bytes over k ranks costs 2 ceil(log2 k) latencies and
2 (k-1)/k N / bandwidth, inside a node or across nodes.

Bytes come from `volume` and are exact; memory from `memory`, the largest rank's.
With R replicas the ranks form R contiguous copies of k = ranks / R; a copy works
on its share of l and of S (the largest share sets the time), and the replica
groups (the R ranks at one position of the copies) sum f, the gradient and every
Gauss-Newton product.
"""

import math
from dataclasses import dataclass, field, replace

from ..constants import BATCH_SIZE, FLOAT64
from ..model import memory as model_memory
from ..parallel.layout import Layout, contiguous_share, share_sizes
from ..parallel.phases import PHASES, TRAINING_PHASES
from .machine import DEFAULT
from .memory import RankMemory
from .volume import Counts, GroupMembers, forward_bytes, iteration_bytes, replica_bytes

# Parameter-shaped vector passes per CG iteration (out = shift v; cg_step reads and
# writes x, r, p, q, Ax; cg_direction; v.v) and per Newton iteration outside CG
# (the gradient's start theta / (C l), three dots and ||g||, a trial point per trial).
_CG_VECTOR_PASSES = 14
_NEWTON_VECTOR_PASSES = 10
_TRIAL_VECTOR_PASSES = 3


@dataclass(frozen=True)
class Choice:
    """One candidate layout: what `--partitions`, the assignment, `--replicas` and
    `--jacobian` would set."""

    partitions: tuple
    assignment: str = "balanced"
    replicas: int = 1
    jacobian: str = "stored"

    def label(self):
        return (f"{','.join(map(str, self.partitions))} {self.assignment} R={self.replicas} "
                f"{self.jacobian}")


@dataclass
class Workload:
    """The problem the layout runs: widths n_0..n_L, l, |S| and how it is run."""

    widths: tuple
    n_instances: int
    n_subset: int
    itemsize: int = FLOAT64
    loss: str = "squared"
    batch_size: int = BATCH_SIZE
    diagonal: bool = False
    keep: bool = True  # forward passes kept for reuse (docs/design.md, "Reuse")
    counts: Counts = field(default_factory=Counts)


@dataclass
class Prediction:
    """Per phase: seconds (wall, of the iteration), bytes (the ledger's, all ranks)."""

    choice: Choice
    n_ranks: int
    seconds: dict
    bytes: dict
    memory: dict  # the parts of the rank with the most, bytes
    refused: object = None  # why it cannot run (memory), or None
    communication: dict = None  # per phase, the seconds of sums (latency and bandwidth)

    @property
    def seconds_per_iteration(self):
        return sum(self.seconds[p] for p in TRAINING_PHASES)

    @property
    def bytes_per_iteration(self):
        return sum(self.bytes.values())

    @property
    def memory_per_rank(self):
        return self.memory["total"]

    def to_json(self):
        if self.refused is not None:  # not timed (NaN is no JSON)
            return {"partitions": list(self.choice.partitions),
                    "assignment": self.choice.assignment, "replicas": self.choice.replicas,
                    "jacobian": self.choice.jacobian, "seconds_per_iteration": None,
                    "bytes_per_iteration": self.bytes_per_iteration,
                    "memory_per_rank": self.memory_per_rank, "bytes": dict(self.bytes),
                    "memory": dict(self.memory), "refused": self.refused}
        return {
            "partitions": list(self.choice.partitions),
            "assignment": self.choice.assignment,
            "replicas": self.choice.replicas,
            "jacobian": self.choice.jacobian,
            "seconds_per_iteration": self.seconds_per_iteration,
            "bytes_per_iteration": self.bytes_per_iteration,
            "memory_per_rank": self.memory_per_rank,
            "seconds": dict(self.seconds),
            "bytes": dict(self.bytes),
            "memory": dict(self.memory),
            "communication_seconds": dict(self.communication or {}),
            "refused": self.refused,
        }


def copy_layout(widths, choice, n_ranks):
    """The model-parallel layout of one copy (k = n_ranks / replicas ranks)."""
    k = n_ranks // choice.replicas
    return Layout(widths, choice.partitions, k, choice.assignment)


def predict(workload, choice, n_ranks, machine=DEFAULT, memory_per_rank=None):
    """The `Prediction` of `choice` for `workload` on `n_ranks` ranks of `machine`.

    Raises `errors.ParameterError` (from `Layout`) when the partitions do not fit
    the copy's ranks. With `memory_per_rank` (bytes), a choice whose largest rank
    needs more is marked refused (and not timed: its seconds are NaN); one that
    fits only without the kept passes runs without them (their reuse saves forward
    passes, docs/design.md "Reuse").
    """
    R = choice.replicas
    if R < 1 or n_ranks % R:
        raise ValueError(f"{R} replicas do not divide {n_ranks} ranks")
    layout = copy_layout(workload.widths, choice, n_ranks)
    groups = GroupMembers(layout)
    shares, subsets = share_sizes(workload.n_instances, R), share_sizes(workload.n_subset, R)
    l_c, s_c = shares[0], max(subsets[0], 1)  # the largest copy sets the time
    memory = RankMemory(layout, groups)
    keep = workload.keep
    parts = memory.largest(l_c, s_c, choice.jacobian, workload.itemsize, keep)
    refused = None
    if memory_per_rank is not None and parts["total"] > memory_per_rank and keep:
        keep = False
        parts = memory.largest(l_c, s_c, choice.jacobian, workload.itemsize, keep)
    if memory_per_rank is not None and parts["total"] > memory_per_rank:
        refused = (f"needs {parts['total'] / 2**20:.1f} MiB on its largest rank "
                   f"(Gauss-Newton data {parts['gauss_newton'] / 2**20:.1f} MiB), more than "
                   f"{memory_per_rank / 2**20:.1f} MiB")
    # Bytes: every copy counts its own sums; they are linear in l and |S| but for
    # the per-iteration scalars, so the copies' sum is the formula on the totals
    # plus (R - 1) times the scalar terms.
    counts = workload.counts
    total = {p: 0 for p in PHASES}
    tests = share_sizes(counts.test_instances, R)  # the test set is split like the training set
    copies = {}  # the shares take two or three sizes: each copy's bytes computed once
    for l_i, s_i, t_i in zip(shares, subsets, tests):
        if (l_i, s_i, t_i) not in copies:
            one = iteration_bytes(layout, l_i, s_i, replace(counts, test_instances=0),
                                  world=layout.n_ranks, itemsize=workload.itemsize,
                                  jacobian=choice.jacobian, loss=workload.loss,
                                  diagonal=workload.diagonal, keep=keep, groups=groups)
            if counts.test_instances:  # every copy sums its share's score, even an empty one
                one["evaluation"] += (forward_bytes(layout, t_i, workload.itemsize, groups)
                                      + (FLOAT64 if layout.n_ranks > 1 else 0))
            copies[l_i, s_i, t_i] = one
        for p, value in copies[l_i, s_i, t_i].items():
            total[p] += value
    position_params = [memory.parameters(r) for r in range(layout.n_ranks)]
    total["replicas"] = replica_bytes(position_params, counts, workload.itemsize, R)
    if counts.test_instances and R > 1:  # the copies' scores summed over the replica groups
        total["evaluation"] += FLOAT64 * layout.n_ranks
    total = {p: int(round(v)) if float(v).is_integer() else v for p, v in total.items()}
    if refused is not None:  # not timed: nothing would run
        return Prediction(choice, n_ranks, dict.fromkeys(PHASES, math.nan), total, parts,
                          refused, dict.fromkeys(PHASES, math.nan))
    timer = _Timer(layout, groups, machine, workload, n_ranks, R)
    phases = timer.iteration(l_c, s_c, choice.jacobian, keep, position_params)
    seconds = {p: float(phases[p]) for p in PHASES}
    communication = {p: phases[p].comm if isinstance(phases[p], _Seconds) else 0.0
                     for p in PHASES}
    return Prediction(choice, n_ranks, seconds, total, parts, refused, communication)


def lower_bound(workload, choice, n_ranks, machine=DEFAULT, memo=None):
    """Seconds per iteration that `predict` cannot go below for `choice`, from the
    partitions alone (no `Layout`: O(L) block shapes, not O(blocks)).

    The same pieces as `predict`, each bounded from below: a layer's busiest rank
    does at least its layer's work over the ranks that can hold it, and at least
    its largest block's with that block's group member work; a rank's vectors are at
    least the parameters over the copy's ranks; the model-parallel sums of the
    layers count nothing; the sums over all of a copy's ranks are exact; the replica
    groups sum at least the mean position's parameters; the kept passes are assumed
    (without them the iteration only grows). The planner skips a candidate whose
    bound exceeds what it already has (`planner.search`). `memo`, a dict kept
    between calls on one `machine`, holds the GEMM times already computed.
    """
    R = choice.replicas
    if R < 1 or n_ranks % R:
        raise ValueError(f"{R} replicas do not divide {n_ranks} ranks")
    k = n_ranks // R
    # the first (largest) of the shares, without listing R of them
    l_c = _size(contiguous_share(workload.n_instances, R, 0))
    s_c = max(_size(contiguous_share(workload.n_subset, R, 0)), 1)
    return _Bound(workload, choice.partitions, k, machine, n_ranks, R, memo).iteration(
        l_c, s_c, choice.jacobian)


def _batch_count(n, batch_size):
    """Batches of a pass over n instances (`model.objective`'s), at least one."""
    return max(1, math.ceil(n / batch_size))


def _size(share):
    return share.stop - share.start


def _sizes(width, parts):
    """[(group size, how many groups)] of `width` split in `parts` as
    `parallel.layout.contiguous_share` splits (the larger first), without listing
    the groups: the first and the last group have the two sizes."""
    large, small = (_size(contiguous_share(width, parts, i)) for i in (0, parts - 1))
    n_large = width - small * parts if large > small else parts
    return [(size, count) for size, count in ((large, n_large), (small, parts - n_large))
            if count]


def _replica_sums(machine, replicas, across, params, itemsize, scalars, vectors):
    """Seconds of one replica group's sums per iteration (docs/design.md, "Copies of
    the layout"): `scalars` loss sums (float64), the gradient of `params` numbers and
    `vectors` - 1 Gauss-Newton products of `params` + 1 numbers, in the run's
    precision (`itemsize` bytes), over `replicas` ranks, `across` nodes or not."""
    def sum_of(nbytes):
        return machine.sum_seconds(nbytes, replicas, across)

    return (scalars * sum_of(FLOAT64) + sum_of(params * itemsize)
            + (vectors - 1) * sum_of((params + 1) * itemsize))


class _Bound:
    """`_Timer`'s pieces bounded from below from the partitions' block shapes."""

    def __init__(self, workload, partitions, k, machine, n_ranks, replicas, memo=None):
        self.w, self.machine, self.k = workload, machine, k
        self.gemms = {} if memo is None else memo
        self.n_ranks, self.replicas = n_ranks, replicas
        self.widths = tuple(workload.widths)
        self.parts = tuple(partitions)
        self.L = len(self.widths) - 1
        self.threads = machine.cores_per_node if n_ranks == 1 else 1
        self.on_node = min(n_ranks, machine.ranks_per_node)
        self.itemsize = workload.itemsize
        self.n_out = self.widths[-1]
        self.sizes = [_sizes(w, p) for w, p in zip(self.widths, self.parts)]
        # layer m: [(rows, cols, how many blocks)]
        self.shapes = {m: [(a, b, ca * cb) for a, ca in self.sizes[m - 1]
                           for b, cb in self.sizes[m]] for m in range(1, self.L + 1)}
        self.n_blocks = {m: self.parts[m - 1] * self.parts[m] for m in range(1, self.L + 1)}
        self.n_params = sum(a * b + b for a, b in zip(self.widths[:-1], self.widths[1:]))
        # the largest block: the first row group (the largest, with the bias) by the
        # largest column group
        self.largest_block = max(self.sizes[m - 1][0][0] * self.sizes[m][0][0]
                                 + self.sizes[m][0][0] for m in range(1, self.L + 1))

    def _gemm(self, m, k, n):
        key = (m, k, n, self.threads)
        seconds = self.gemms.get(key)
        if seconds is None:
            seconds = self.gemms[key] = self.machine.gemm_seconds(m, k, n, self.threads)
        return seconds

    def _stream(self, numbers):
        return self.machine.stream_seconds(numbers * self.itemsize, self.on_node)

    def _all(self, nbytes):
        return self.machine.sum_seconds(nbytes, self.k, self.k > self.machine.ranks_per_node)

    def _stage(self, m, block, member_total, member_of):
        """The busiest rank's work in layer m at least: `block(a, b)` a block's work,
        `member_total` the groups' member work with one member each, `member_of(a,
        b)` the member work of the group a block's owner belongs to."""
        shapes = self.shapes[m]
        blocks = sum(n * block(a, b) for a, b, n in shapes)
        return max(blocks / min(self.k, self.n_blocks[m]),
                   (blocks + member_total) / self.k,
                   max(block(a, b) + member_of(a, b) for a, b, _ in shapes))

    def _forward(self, n, tangent=False, batched=True):
        batches = _batch_count(n, self.w.batch_size) if batched else 1
        rows = n / batches
        over = self.machine.call_overhead
        total = 0.0
        for m in range(1, self.L + 1):
            def block(a, b, m=m):
                t = self._gemm(rows, a, b) + self._stream(2 * rows * b)
                return t + self._gemm(rows, a, b) if tangent and m > 1 else t

            if m < self.L:
                def member(width):
                    return self._stream(3 * rows * width) + over

                member_total = sum(c * member(width) for width, c in self.sizes[m])
                total += self._stage(m, block, member_total, lambda a, b: member(b))
            else:
                out = self._stream(3 * rows * self.n_out) + over
                total += self._stage(m, block, out, lambda a, b: out)
        return batches * total

    def _backward(self, n, vectors, gradient=True, batched=True):
        batches = _batch_count(n, self.w.batch_size) if batched else 1
        rows = n / batches
        total = 0.0
        for m in range(self.L, 0, -1):
            def block(a, b, m=m):
                t = 0.0
                if gradient:
                    t += self._gemm(a, rows, b) + self._stream(rows * b)
                if m > 1:
                    t += self._gemm(rows * vectors, b, a)
                if not gradient and m == self.L:
                    t += self._stream(rows * vectors * b)
                return t

            if m > 1:
                def member(width):
                    return self._stream(4 * rows * vectors * width)

                member_total = sum(c * member(width) for width, c in self.sizes[m - 1])
                total += self._stage(m, block, member_total, lambda a, b: member(a))
            else:
                total += self._stage(m, block, 0.0, lambda a, b: 0.0)
        return batches * total

    def _vectors(self, passes):
        return self._stream(passes * max(self.n_params / self.k, self.largest_block))

    def iteration(self, n, s, jacobian):
        w, c, mach = self.w, self.w.counts, self.machine
        t = c.trials
        pass_l = self._forward(n)
        # every hidden group has a member, the output group too
        pass_numbers = model_memory.pass_numbers(self.widths[1:-1], self.n_out) / self.k
        forward = t * (pass_l + self._all(2 * FLOAT64)) + self._stream(2 * s * pass_numbers)
        backward = self._backward(n, 1)
        if jacobian == "stored":
            backward += self._backward(s, self.n_out, gradient=False, batched=False)
        if w.loss == "softmax":
            backward += self._all(s * self.n_out * FLOAT64)
        if jacobian == "stored":
            work = [(self._gemm(s, a, b) + self._gemm(a, s, b)
                     + 4.0 * s * self.n_out * b / (mach.small_product_rate * mach.pass_efficiency),
                     n_blk) for m in self.shapes for a, b, n_blk in self.shapes[m]]
            busiest = max(sum(x * n_blk for x, n_blk in work) / self.k,
                          max(x for x, _ in work))
            product = busiest + self._all((s * self.n_out + 1) * FLOAT64)
        else:
            product = (self._forward(s, tangent=True, batched=False)
                       + self._backward(s, 1, batched=False) + self._all(2 * FLOAT64))
        per_cg = product + self._vectors(_CG_VECTOR_PASSES) + self._all(FLOAT64)
        per_cg += 6 * mach.call_overhead
        sync = 0.0
        if w.diagonal:
            per_cg -= self._all((s * self.n_out + 1) * FLOAT64) + self._all(FLOAT64)
            sync = c.vote_rounds * self._all(FLOAT64)
        gauss_newton = c.cg_iters * per_cg + self._all(FLOAT64)
        other = (self._vectors(_NEWTON_VECTOR_PASSES + t * _TRIAL_VECTOR_PASSES)
                 + self._all(3 * FLOAT64) + self._all(FLOAT64) + mach.iteration_overhead)
        replicas = 0.0
        if self.replicas > 1:
            replicas = self._replicas(t + 1, 1 + c.cg_iters)
        return forward + backward + gauss_newton + other + sync + replicas

    def _replicas(self, scalars, vectors):
        """`_Timer._replica_seconds` at least: the mean position's parameters over the
        cheaper of the positions' networks (all span nodes when the first does)."""
        R, k, mach = self.replicas, self.k, self.machine
        params = self.n_params / k

        def seconds(across):
            return _replica_sums(mach, R, across, params, self.itemsize, scalars, vectors)

        if mach.node_of(0) != mach.node_of((R - 1) * k):  # position 0 spans nodes
            return seconds(True)
        return min(seconds(False), seconds(True))


class _Seconds:
    """Seconds with the part of them spent in sums; adds and scales like a number."""

    __slots__ = ("total", "comm")

    def __init__(self, total=0.0, comm=0.0):
        self.total, self.comm = total, comm

    def __add__(self, other):
        if isinstance(other, _Seconds):
            return _Seconds(self.total + other.total, self.comm + other.comm)
        return _Seconds(self.total + other, self.comm)

    __radd__ = __add__

    def __sub__(self, other):
        return self + (-1.0) * other

    def __mul__(self, factor):
        return _Seconds(self.total * factor, self.comm * factor)

    __rmul__ = __mul__

    def __float__(self):
        return float(self.total)


class _Timer:
    """Seconds of the pieces of an iteration on one copy (critical paths)."""

    def __init__(self, layout, groups, machine, workload, n_ranks, replicas, threads=None):
        self.layout, self.groups, self.machine, self.w = layout, groups, machine, workload
        self.k = layout.n_ranks
        self.n_ranks, self.replicas = n_ranks, replicas
        # one rank threads its BLAS over the node; several run one thread each
        self.threads = threads or (machine.cores_per_node if n_ranks == 1 else 1)
        self.on_node = min(n_ranks, machine.ranks_per_node)
        self.itemsize = workload.itemsize
        self.n_out = layout.widths[-1]
        self.gemms = {}
        self.by_layer = {}
        for blk in layout.blocks:
            self.by_layer.setdefault(blk.layer, []).append(blk)
        self.owner = [int(o) for o in layout.owner]
        self.params = [0] * self.k
        for blk in layout.blocks:
            self.params[self.owner[blk.index]] += blk.size

    # -- pieces ------------------------------------------------------------------

    def _gemm(self, m, k, n):
        key = (m, k, n)  # a layout repeats a few block shapes
        seconds = self.gemms.get(key)
        if seconds is None:
            seconds = self.gemms[key] = self.machine.gemm_seconds(m, k, n, self.threads)
        return seconds

    def _stream(self, numbers, itemsize=None):
        return self.machine.stream_seconds(numbers * (itemsize or self.itemsize), self.on_node)

    def _sum(self, nbytes, members):
        """An allreduce over copy ranks `members` (copy 0's world ranks)."""
        return self.machine.allreduce_seconds(nbytes, members)

    def _stage(self, work, comm):
        waited = max(comm) if comm else 0.0
        return _Seconds(max(work) + waited, waited)

    def _forward(self, n, tangent=False, batched=True):
        """A forward pass (or, `tangent`, the R-operator's pass) over n instances."""
        g, L = self.groups, self.layout.n_layers
        batches = _batch_count(n, self.w.batch_size) if batched else 1
        rows = n / batches
        total = _Seconds()
        for m in range(1, L + 1):
            work, comm = [0.0] * self.k, [0.0] * self.k
            for blk in self.by_layer[m]:
                a, b = blk.shape
                r = self.owner[blk.index]
                work[r] += self._gemm(rows, a, b) + self._stream(2 * rows * b)
                if tangent and m > 1:
                    work[r] += self._gemm(rows, a, b)
            sums = ([((m, b), g.forward[(m, b)]) for b in range(self.layout.partitions[m])]
                    if m < L else [((m, 0), g.output)])
            for (_, b), members in sums:
                width = self.layout.width(m, b) if m < L else self.n_out
                for r in members:  # every member applies sigma (or keeps the output)
                    work[r] += self._stream(3 * rows * width) + self.machine.call_overhead
                t = self._sum(rows * width * self.itemsize, members)
                for r in members:
                    comm[r] += t
            total += self._stage(work, comm)
        return batches * total

    def _backward(self, n, vectors, gradient=True, batched=True):
        """A backward sweep of `vectors` vectors per instance over n instances;
        `gradient`: with the Z^T dS products of every block (the gradient, J^T q)."""
        g, L = self.groups, self.layout.n_layers
        batches = _batch_count(n, self.w.batch_size) if batched else 1
        rows = n / batches
        total = _Seconds()
        for m in range(L, 0, -1):
            work, comm = [0.0] * self.k, [0.0] * self.k
            for blk in self.by_layer[m]:
                a, b = blk.shape
                r = self.owner[blk.index]
                if gradient:
                    work[r] += self._gemm(a, rows, b) + self._stream(rows * b)
                if m > 1:
                    work[r] += self._gemm(rows * vectors, b, a)
                if not gradient and m == L:  # the identity on top of the Jacobian sweep
                    work[r] += self._stream(rows * vectors * b)
            if m > 1:
                for a in range(self.layout.partitions[m - 1]):
                    members, width = g.backward[(m, a)], self.layout.width(m - 1, a)
                    for r in members:  # zero the sum, scale by sigma'
                        work[r] += self._stream(4 * rows * vectors * width)
                    t = self._sum(rows * vectors * width * self.itemsize, members)
                    for r in members:
                        comm[r] += t
            total += self._stage(work, comm)
        return batches * total

    def _vectors(self, passes):
        return max(self._stream(passes * p) for p in self.params)

    def _all(self, nbytes):
        t = self.machine.sum_seconds(nbytes, self.k, self.k > self.machine.ranks_per_node)
        return _Seconds(t, t)

    # -- the iteration -------------------------------------------------------------

    def iteration(self, n, s, jacobian, keep, position_params):
        """Seconds per phase of an iteration on n instances and |S| = s (this copy's)."""
        w, c, mach = self.w, self.w.counts, self.machine
        t = c.trials
        seconds = dict.fromkeys(PHASES, 0.0)
        pass_l = self._forward(n)
        f_sums = self._all(2 * FLOAT64)
        memory = RankMemory(self.layout, self.groups)
        pass_numbers = max(memory.pass_numbers(r) for r in range(self.k))
        rows_s = self._stream(2 * s * pass_numbers)  # S's rows copied out of the kept pass
        seconds["forward"] = t * (pass_l + f_sums) + rows_s
        if not keep:
            seconds["forward"] += self._forward(s, batched=False)
        gradient = self._backward(n, 1)
        if not keep:
            gradient += pass_l
        seconds["backward"] = gradient
        if jacobian == "stored":
            seconds["backward"] += self._backward(s, self.n_out, gradient=False, batched=False)
        if w.loss == "softmax":
            seconds["backward"] += self._all(s * self.n_out * FLOAT64)
        cg = c.cg_iters
        if jacobian == "stored":
            work = [0.0] * self.k
            for blk in self.layout.blocks:
                a, b = blk.shape
                r = self.owner[blk.index]
                work[r] += (self._gemm(s, a, b) + self._gemm(a, s, b)
                            + 4.0 * s * self.n_out * b
                            / (mach.small_product_rate * mach.pass_efficiency))
            product = max(work) + self._all((s * self.n_out + 1) * FLOAT64)
        else:
            product = (self._forward(s, tangent=True, batched=False)
                       + self._backward(s, 1, batched=False) + self._all(2 * FLOAT64))
        per_cg = product + self._vectors(_CG_VECTOR_PASSES) + self._all(FLOAT64)
        per_cg += 6 * mach.call_overhead
        if w.diagonal:  # the blocks' products without the sum; a vote per round
            per_cg -= self._all((s * self.n_out + 1) * FLOAT64) + self._all(FLOAT64)
            seconds["sync"] = c.vote_rounds * self._all(FLOAT64)
        seconds["gauss_newton"] = cg * per_cg + self._all(FLOAT64)
        seconds["other"] = (self._vectors(_NEWTON_VECTOR_PASSES + t * _TRIAL_VECTOR_PASSES)
                            + self._all(3 * FLOAT64) + self._all(FLOAT64)
                            + mach.iteration_overhead)
        if c.test_instances:
            seconds["evaluation"] = self._forward(c.test_instances) + self._all(FLOAT64)
        if self.replicas > 1:
            seconds["replicas"] = self._replica_seconds(position_params, t + 1, 1 + cg)
        return seconds

    def _replica_seconds(self, position_params, scalars, vectors):
        """The replica groups' sums: the slowest position j (ranks j, j + k, ...):
        `scalars` loss sums, the gradient and `vectors` - 1 products, in the
        run's precision."""
        mach, R, worst = self.machine, self.replicas, 0.0
        for j, params in enumerate(position_params):
            # members j, j + k, ..., j + (R-1) k: across nodes iff the extremes are
            across = mach.node_of(j) != mach.node_of(j + (R - 1) * self.k)
            worst = max(worst, _replica_sums(mach, R, across, params, self.itemsize,
                                             scalars, vectors))
        return _Seconds(worst, worst)
