"""The calling rank's share of a partitioned network: its parameters and the
distributed forward, backward and Jacobian passes of SPEC section 3.

Parameters of all blocks a rank owns live in one flat float64 vector (the vector
CG works on); `Network.split` gives (W, bias) views into any such vector.
Passes work on a batch of n instances and keep, per (layer, group), the arrays
this rank needs:

* ``z[(m, g)]`` activations z_g^m, (n, |g|) -- m = 0 are the input features;
* ``s[(m, g)]`` pre-activations s_g^m, (n, |g|), for m < L;
* ``output`` z^L, (n, n_L), on the ranks of the output group.

Every rank walks layers and groups in the same order and joins only the groups it
belongs to (`communication.Groups`).
"""

from dataclasses import dataclass

import numpy as np

from . import _kernels as K


def block_views(blk, flat):
    """(W, bias-or-None) views of one block's parameters `flat` (length ``blk.size``)."""
    n_rows, n_cols = blk.shape
    W = flat[: n_rows * n_cols].reshape(n_rows, n_cols)
    return W, (flat[n_rows * n_cols :] if blk.has_bias else None)


@dataclass
class Pass:
    """What a forward pass leaves behind for the backward and Jacobian passes."""

    z: dict
    s: dict
    output: object  # (n, n_L) on output ranks, else None
    n: int


class Network:
    """Parameters and passes of the blocks `layout` gives to `rank`.

    Parameters
    ----------
    layout : Layout
    groups : communication.Groups
    activation : int
        Kernel code of the hidden activation (`activations.activation_code`).
    """

    def __init__(self, layout, groups, activation):
        self.layout = layout
        self.groups = groups
        self.activation = activation
        self.blocks = layout.blocks_of(groups.world.rank)
        self.offsets = np.concatenate([[0], np.cumsum([blk.size for blk in self.blocks])])
        self.n_params = int(self.offsets[-1])
        self.n_outputs = layout.widths[-1]
        self.n_layers = layout.n_layers
        self._by_col = {}
        self._by_row = {}
        for i, blk in enumerate(self.blocks):
            self._by_col.setdefault((blk.layer, blk.col), []).append(i)
            self._by_row.setdefault((blk.layer, blk.row), []).append(i)

    # -- parameters -------------------------------------------------------------

    def split(self, vec):
        """(W, bias-or-None) views into a local parameter vector, one per block."""
        return [block_views(blk, vec[self.block_slice(i)]) for i, blk in enumerate(self.blocks)]

    def block_slice(self, i):
        """Where block i (of this rank's) sits in a local parameter vector."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def initial_parameters(self, seed):
        """W entries ~ N(0, 2 / n_{m-1}), biases 0 (the reference's initialisation).

        Row j of W^m is drawn from its own stream, keyed by (seed, m, j), so every
        layout gets the same network while each rank draws only its own rows.
        """
        theta = np.zeros(self.n_params)
        for blk, (W, _) in zip(self.blocks, self.split(theta)):
            fan_in, fan_out = self.layout.widths[blk.layer - 1], self.layout.widths[blk.layer]
            for j in range(blk.rows.start, blk.rows.stop):
                stream = np.random.SeedSequence(seed, spawn_key=(1, blk.layer, j))
                row = np.random.default_rng(stream).standard_normal(fan_out)
                W[j - blk.rows.start] = row[blk.cols] * np.sqrt(2.0 / fan_in)
        return theta

    def owns_column(self, m, b):
        return (m, b) in self._by_col

    # -- passes -------------------------------------------------------------------

    def forward(self, theta, inputs, n, phase="forward"):
        """Forward pass of n instances; `inputs[a]` is the (n, |a|) block of input group a."""
        params = self.split(theta)
        z = {(0, a): X for a, X in inputs.items()}
        s = {}
        L, layout = self.n_layers, self.layout
        for m in range(1, L):
            for b in range(layout.partitions[m]):
                group = self.groups.forward(m, b)
                if group is None:
                    continue
                cols = layout.group(m, b)
                buf = np.zeros((n, cols.stop - cols.start))
                for i in self._by_col.get((m, b), ()):
                    W, bias = params[i]
                    K.block_forward(z[(m - 1, self.blocks[i].row)], W, bias, buf, True)
                group.allreduce(buf, phase)
                s[(m, b)] = buf
                z[(m, b)] = np.empty_like(buf)
                K.activation_forward(self.activation, buf, z[(m, b)])
        output = None
        group = self.groups.output
        if group is not None:
            output = np.zeros((n, self.n_outputs))
            for b in range(layout.partitions[L]):
                cols = layout.group(L, b)
                if layout.partitions[L] == 1:
                    part = output
                else:
                    part = np.zeros((n, cols.stop - cols.start))
                for i in self._by_col.get((L, b), ()):
                    W, bias = params[i]
                    K.block_forward(z[(L - 1, self.blocks[i].row)], W, bias, part, True)
                if part is not output:
                    output[:, cols] += part
            group.allreduce(output, phase)
        return Pass(z, s, output, n)

    def backward(self, theta, fwd, dout, grad, phase="backward"):
        """Accumulate into `grad` the gradient of sum_i dout_i . z^L_i.

        `dout` is (n, n_L) on output ranks (None elsewhere); `grad` a local
        parameter vector.
        """
        params = self.split(theta)
        grads = self.split(grad)
        L, layout = self.n_layers, self.layout
        dS = {}
        if dout is not None:
            for b in range(layout.partitions[L]):
                if self.owns_column(L, b):
                    dS[(L, b)] = np.ascontiguousarray(dout[:, layout.group(L, b)])
        for m in range(L, 0, -1):
            if m == 1:
                for i in (i for i, blk in enumerate(self.blocks) if blk.layer == 1):
                    blk = self.blocks[i]
                    gW, gb = grads[i]
                    K.block_backward(
                        fwd.z[(0, blk.row)], params[i][0], dS[(1, blk.col)], gW, gb, None, 1.0
                    )
                break
            for a in range(layout.partitions[m - 1]):
                group = self.groups.backward(m, a)
                if group is None:
                    continue
                rows = layout.group(m - 1, a)
                buf = np.zeros((fwd.n, rows.stop - rows.start))
                for i in self._by_row.get((m, a), ()):
                    blk = self.blocks[i]
                    gW, gb = grads[i]
                    K.block_backward(
                        fwd.z[(m - 1, a)], params[i][0], dS[(m, blk.col)], gW, gb, buf, 1.0
                    )
                group.allreduce(buf, phase)
                if self.owns_column(m - 1, a):
                    K.activation_backward(
                        self.activation, fwd.s[(m - 1, a)], fwd.z[(m - 1, a)], buf
                    )
                    dS[(m - 1, a)] = buf

    def jacobian(self, theta, fwd, phase="backward"):
        """D_b^m = d z^L / d s_b^m for every column group b this rank owns a block of.

        Returns a dict (m, b) -> (n, n_L, |b|) array: the backward pass run with n_L
        vectors per instance.
        """
        params = self.split(theta)
        L, layout = self.n_layers, self.layout
        D = {}
        for b in range(layout.partitions[L]):
            if self.owns_column(L, b):
                cols = layout.group(L, b)
                width = cols.stop - cols.start
                Db = np.zeros((fwd.n, self.n_outputs, width))
                Db[:, cols.start + np.arange(width), np.arange(width)] = 1.0
                D[(L, b)] = Db
        for m in range(L, 1, -1):
            for a in range(layout.partitions[m - 1]):
                group = self.groups.backward(m, a)
                if group is None:
                    continue
                rows = layout.group(m - 1, a)
                buf = np.zeros((fwd.n, self.n_outputs, rows.stop - rows.start))
                for i in self._by_row.get((m, a), ()):
                    K.jacobian_backward(D[(m, self.blocks[i].col)], params[i][0], buf)
                group.allreduce(buf, phase)
                if self.owns_column(m - 1, a):
                    K.activation_backward_jacobian(
                        self.activation, fwd.s[(m - 1, a)], fwd.z[(m - 1, a)], buf
                    )
                    D[(m - 1, a)] = buf
        return D
