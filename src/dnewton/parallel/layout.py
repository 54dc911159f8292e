"""The model partition: neuron groups per layer, weight blocks, and blocks -> ranks.

Layer m (0..L) has ``widths[m]`` neurons split into ``partitions[m]`` contiguous
groups. The weights between layers m-1 and m (m = 1..L) form
``partitions[m-1] x partitions[m]`` blocks; block (m, a, b) holds the rows of W^m in
group a of layer m-1 and the columns in group b of layer m. The bias of column
group b lives in block (m, 0, b).

A `Layout` is pure bookkeeping: it knows nothing of MPI, so it can be built and
checked on any process (and in tests) for any rank count. `ParameterLayout` is
the one definition of how a rank's blocks sit in its flat parameter vector.
See docs/design.md, "The partition".
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import InputError, ParameterError


@dataclass(frozen=True)
class Block:
    """One weight block (m, a, b) and its place in the layout."""

    index: int  # position in the layout's block list
    layer: int  # m, 1..L
    row: int  # a, group of layer m-1
    col: int  # b, group of layer m
    rows: slice  # neurons of layer m-1 (rows of W^m)
    cols: slice  # neurons of layer m (columns of W^m)

    @property
    def has_bias(self):
        return self.row == 0

    @property
    def shape(self):
        return (_length(self.rows), _length(self.cols))

    @property
    def size(self):
        """Number of parameters: the weights, plus the bias if it holds one."""
        n_rows, n_cols = self.shape
        return n_rows * n_cols + (n_cols if self.has_bias else 0)


def contiguous_share(total, parts, i):
    """Share i (a slice) of `parts` contiguous shares of range(`total`): sizes differ
    by at most one, the first shares taking the larger ones. The one rule for every
    such split: a layer's neurons into groups, the instances into the replicas' shares."""
    size, extra = divmod(int(total), int(parts))
    start = i * size + min(i, extra)
    return slice(start, start + size + (i < extra))


def share_sizes(total, parts):
    """The sizes of the `parts` shares of `contiguous_share`, in order."""
    return [_length(contiguous_share(total, parts, i)) for i in range(parts)]


def _length(share):
    return share.stop - share.start


class Layout:
    """Neuron groups, weight blocks and the rank that owns each block.

    Parameters
    ----------
    widths : sequence of int, length L+1
        n_0 (features) .. n_L (outputs).
    partitions : sequence of int, length L+1
        P_0 .. P_L, the number of contiguous groups of each layer.
    n_ranks : int
        Number of MPI ranks. There must be at least as many blocks as ranks.
        With exactly as many, each rank owns one block (the paper's layout);
        with fewer ranks, blocks are spread so the per-rank work is balanced.
    assignment : {"balanced", "aligned"}
        How blocks go to ranks: "balanced", longest first to the least-loaded
        rank; "aligned", block (m, a, b) to rank (a P_m + b) mod R, which puts
        column group b of layer m and row group b of layer m+1 on the same rank
        when the layers are split alternately (no communication between them).
        `planning.planner.layout_for` takes the planner's choice of the two.
    """

    def __init__(self, widths, partitions, n_ranks, assignment="balanced"):
        self.widths = tuple(int(w) for w in widths)
        self.partitions = tuple(int(p) for p in partitions)
        self.n_ranks = int(n_ranks)
        self._check()
        self.blocks = []
        for m in range(1, self.n_layers + 1):
            for a in range(self.partitions[m - 1]):
                for b in range(self.partitions[m]):
                    self.blocks.append(
                        Block(len(self.blocks), m, a, b, self.group(m - 1, a), self.group(m, b))
                    )
        self.assignment = assignment
        self.owner = self._assign() if assignment == "balanced" else self._assign_aligned()
        self._parameters = {}

    def _check(self):
        if len(self.widths) < 2:
            raise InputError("a network needs at least an input and an output layer")
        if len(self.partitions) != len(self.widths):
            raise ParameterError(
                f"{{partitions}} needs {len(self.widths)} counts (one per layer, "
                f"inputs to outputs), got {len(self.partitions)}"
            )
        for m, (w, p) in enumerate(zip(self.widths, self.partitions)):
            if not 1 <= p <= w:
                raise ParameterError(
                    f"{{partitions}}: layer {m} has {w} neurons and cannot be split "
                    f"into {p} groups (need 1 <= P_{m} <= {w})"
                )
        if self.n_ranks < 1:
            raise InputError("need at least one rank")
        n_blocks = self.count_blocks(self.partitions)
        if n_blocks < self.n_ranks:
            raise ParameterError(
                f"{{partitions}} {','.join(map(str, self.partitions))} gives {n_blocks} "
                f"weight blocks but the job has {self.n_ranks} ranks; every rank needs "
                f"at least one block: use more partitions or fewer ranks"
            )

    @staticmethod
    def count_blocks(partitions):
        return sum(p * q for p, q in zip(partitions[:-1], partitions[1:]))

    @property
    def n_layers(self):
        """L, the number of weight layers."""
        return len(self.widths) - 1

    def group(self, m, a):
        """Neurons of group a of layer m, as a slice."""
        return contiguous_share(self.widths[m], self.partitions[m], a)

    def width(self, m, a):
        """|a|, the number of neurons of group a of layer m."""
        return _length(self.group(m, a))

    def _cost(self, block):
        # Per-instance flops of the forward/backward GEMMs plus the Jacobian products.
        n_rows, n_cols = block.shape
        return n_rows * n_cols + self.widths[-1] * n_cols

    def _assign_aligned(self):
        """Block (m, a, b) to rank (a P_m + b) mod R: groups of one index on one rank."""
        return np.array([(blk.row * self.partitions[blk.layer] + blk.col) % self.n_ranks
                         for blk in self.blocks], dtype=np.int64)

    def _assign(self):
        """Longest-processing-time-first: deterministic and within 4/3 of optimal."""
        owner = np.empty(len(self.blocks), dtype=np.int64)
        load = np.zeros(self.n_ranks)
        order = sorted(self.blocks, key=lambda blk: (-self._cost(blk), blk.index))
        for blk in order:
            rank = int(np.argmin(load))  # first least-loaded rank
            owner[blk.index] = rank
            load[rank] += self._cost(blk)
        return owner

    def blocks_of(self, rank):
        """Blocks owned by `rank`, in layout order."""
        return [blk for blk in self.blocks if self.owner[blk.index] == rank]

    def parameters(self, rank):
        """The `ParameterLayout` of `rank`'s blocks (the order of its parameter vector)."""
        if rank not in self._parameters:
            self._parameters[rank] = ParameterLayout(self.blocks_of(rank))
        return self._parameters[rank]

    @cached_property
    def _owner_sets(self):
        """({(m, b): owners of (m, ., b)}, {(m, a): owners of (m, a, .)}, {m: owners of
        layer m}) in one sweep over the blocks: layouts of thousands of ranks ask for
        every group, and a scan of all blocks per group would be quadratic."""
        columns, rows, layers = {}, {}, {}
        for blk in self.blocks:
            owner = int(self.owner[blk.index])
            columns.setdefault((blk.layer, blk.col), set()).add(owner)
            rows.setdefault((blk.layer, blk.row), set()).add(owner)
            layers.setdefault(blk.layer, set()).add(owner)
        return columns, rows, layers

    def row_owners(self, m, a):
        """Ranks owning a block (m, a, .)."""
        return set(self._owner_sets[1].get((m, a), ()))

    def forward_group(self, m, b):
        """F(m, b): ranks that sum s_b^m and ranks that need z_b^m (sorted tuple).

        For the output layer all column groups are merged into one group, the owners
        of every layer-L block: the loss (softmax) couples all outputs, and the payload
        is the same n_L numbers per instance.
        """
        if m == self.n_layers:
            return tuple(sorted(self._owner_sets[2][m]))
        columns, rows, _ = self._owner_sets
        return tuple(sorted(columns.get((m, b), set()) | rows.get((m + 1, b), set())))

    def backward_group(self, m, a):
        """K(m, a), m >= 2: ranks that sum d/dz_a^{m-1} and ranks that need it."""
        columns, rows, _ = self._owner_sets
        return tuple(sorted(rows.get((m, a), set()) | columns.get((m - 1, a), set())))

    @cached_property
    def output_group(self):
        return self.forward_group(self.n_layers, 0)

    def describe(self):
        """One line per rank: the blocks it owns."""
        lines = [
            f"layout: widths {'-'.join(map(str, self.widths))}, partitions "
            f"{','.join(map(str, self.partitions))}, {len(self.blocks)} blocks on "
            f"{self.n_ranks} rank(s)"
        ]
        for rank in range(self.n_ranks):
            names = " ".join(f"({b.layer},{b.row},{b.col})" for b in self.blocks_of(rank))
            lines.append(f"  rank {rank}: {names}")
        return "\n".join(lines)


class ParameterLayout:
    """Where each of one rank's blocks sits in that rank's flat parameter vector.

    The vector holds the blocks in layout order; a block's part is its weights
    W_ab (|a| x |b|, row-major) followed by its bias (|b|) if it holds one. This
    is the only place that knows that order: the network, CG, model files and
    checkpoints all go through it.
    """

    def __init__(self, blocks):
        self.blocks = list(blocks)
        self.offsets = np.concatenate([[0], np.cumsum([blk.size for blk in self.blocks])])
        self.offsets = self.offsets.astype(np.int64)
        self.size = int(self.offsets[-1])

    def block_slice(self, i):
        """Where block i (of this rank's) sits in the parameter vector."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @staticmethod
    def block_views(blk, flat):
        """(W, bias-or-None) views of one block's parameters `flat` (length ``blk.size``)."""
        n_rows, n_cols = blk.shape
        W = flat[: n_rows * n_cols].reshape(n_rows, n_cols)
        return W, (flat[n_rows * n_cols :] if blk.has_bias else None)

    def views(self, vec):
        """(W, bias-or-None) views into a parameter vector, one pair per block."""
        return [self.block_views(blk, vec[self.block_slice(i)])
                for i, blk in enumerate(self.blocks)]

    def scatter(self, weights, biases, dtype=np.float64):
        """This rank's parameter vector cut from dense W^m, b^m (lists over m = 1..L)."""
        vec = np.empty(self.size, dtype=dtype)
        for blk, (W, bias) in zip(self.blocks, self.views(vec)):
            W[...] = weights[blk.layer - 1][blk.rows, blk.cols]
            if bias is not None:
                bias[...] = biases[blk.layer - 1][blk.cols]
        return vec

    def gather(self, vec, weights, biases):
        """Write a parameter vector's blocks into dense W^m, b^m (lists over m = 1..L)."""
        for blk, (W, bias) in zip(self.blocks, self.views(vec)):
            weights[blk.layer - 1][blk.rows, blk.cols] = W
            if bias is not None:
                biases[blk.layer - 1][blk.cols] = bias
