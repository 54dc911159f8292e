"""The calling rank's share of a partitioned network: its parameters and the
distributed forward pass and backward sweep (docs/design.md, "Passes").

Parameters of all blocks a rank owns live in one flat float64 vector (the vector
CG works on), ordered by `parallel.layout.ParameterLayout`. Passes work on a
batch of n instances and keep, per (layer, group), the arrays this rank needs:

* ``z[(m, g)]`` activations z_g^m, (n, |g|) -- m = 0 are the input features;
* ``s[(m, g)]`` pre-activations s_g^m, (n, |g|), for m < L;
* ``output`` z^L, (n, n_L), on the ranks of the output group.

Every rank walks layers and groups in the same order and joins only the groups it
belongs to (`parallel.groups.Groups`).
"""

from dataclasses import dataclass

import numpy as np

from .. import _kernels as K
from ..constants import Stream, random_stream
from ..parallel.phases import Phase


@dataclass
class Pass:
    """What a forward pass leaves behind for the backward sweep."""

    z: dict
    s: dict
    output: object  # (n, n_L) on output ranks, else None
    n: int


class Network:
    """Parameters and passes of the blocks `layout` gives to this rank.

    Parameters
    ----------
    layout : parallel.layout.Layout
    groups : parallel.groups.Groups
    activation : model.activations.Activation
        The hidden activation.
    """

    def __init__(self, layout, groups, activation):
        self.layout = layout
        self.groups = groups
        self.activation = int(activation)
        self.parameters = layout.parameters(groups.world.rank)
        self.blocks = self.parameters.blocks
        self.n_params = self.parameters.size
        self.n_outputs = layout.widths[-1]
        self.n_layers = layout.n_layers
        self._by_col = {}
        self._by_row = {}
        for i, blk in enumerate(self.blocks):
            self._by_col.setdefault((blk.layer, blk.col), []).append(i)
            self._by_row.setdefault((blk.layer, blk.row), []).append(i)

    def initial_parameters(self, seed):
        """W entries ~ N(0, 2 / n_{m-1}), biases 0 (the reference's initialisation).

        Row j of W^m is drawn from its own stream, keyed by (seed, m, j), so every
        layout gets the same network while each rank draws only its own rows.
        """
        theta = np.zeros(self.n_params)
        for blk, (W, _) in zip(self.blocks, self.parameters.views(theta)):
            fan_in, fan_out = self.layout.widths[blk.layer - 1], self.layout.widths[blk.layer]
            for j in range(blk.rows.start, blk.rows.stop):
                row = random_stream(seed, Stream.INITIAL_WEIGHTS, blk.layer, j).standard_normal(
                    fan_out
                )
                W[j - blk.rows.start] = row[blk.cols] * np.sqrt(2.0 / fan_in)
        return theta

    def owns_column(self, m, b):
        return (m, b) in self._by_col

    # -- passes -------------------------------------------------------------------

    def forward(self, theta, inputs, n, phase=Phase.FORWARD):
        """Forward pass of n instances; `inputs[a]` is the (n, |a|) block of input group a."""
        params = self.parameters.views(theta)
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

    def backward_sweep(self, theta, fwd, top, k, visit=None, phase=Phase.BACKWARD):
        """Carry k vectors per instance from the outputs down through every layer.

        `top` maps (L, b), for every output column group b this rank owns a block
        of, to a (n, k, |b|) array (k vectors per instance): the derivatives with
        respect to s_b^L (dout for the gradient, k = 1; the identity rows for the
        Jacobian, k = n_L). Layer by
        layer, each block (m, a, b) adds dS_b^m W_ab^T to d/dz_a^{m-1}, the sum runs
        over the group K(m, a), and the owners of column group a of layer m-1 scale
        it by sigma'(s_a^{m-1}). ``visit(i, dS)`` is called for every block i of
        this rank with the (n, k, |b|) derivatives of its columns (the gradient
        accumulates there).

        Returns the dict (m, b) -> dS_b^m, (n, k, |b|), of every column group b this
        rank owns a block of: with the identity on top, the stored Jacobian D.
        """
        params = self.parameters.views(theta)
        L, layout = self.n_layers, self.layout
        dS = dict(top)
        for m in range(L, 0, -1):
            if visit is not None:
                for i, blk in enumerate(self.blocks):
                    if blk.layer == m:
                        visit(i, dS[(m, blk.col)])
            if m == 1:
                break
            for a in range(layout.partitions[m - 1]):
                group = self.groups.backward(m, a)
                if group is None:
                    continue
                rows = layout.group(m - 1, a)
                buf = np.zeros((fwd.n, k, rows.stop - rows.start))
                for i in self._by_row.get((m, a), ()):
                    K.jacobian_backward(dS[(m, self.blocks[i].col)], params[i][0], buf)
                group.allreduce(buf, phase)
                if self.owns_column(m - 1, a):
                    K.activation_backward_jacobian(
                        self.activation, fwd.s[(m - 1, a)], fwd.z[(m - 1, a)], buf
                    )
                    dS[(m - 1, a)] = buf
        return dS

    def backward(self, theta, fwd, dout, grad, phase=Phase.BACKWARD):
        """Accumulate into `grad` the gradient of sum_i dout_i . z^L_i.

        `dout` is (n, n_L) on output ranks (None elsewhere); `grad` a local
        parameter vector.
        """
        layout = self.layout
        top = {}
        if dout is not None:
            for b in range(layout.partitions[self.n_layers]):
                if self.owns_column(self.n_layers, b):
                    cols = layout.group(self.n_layers, b)
                    top[(self.n_layers, b)] = np.ascontiguousarray(dout[:, cols])[:, None, :]
        params, grads = self.parameters.views(theta), self.parameters.views(grad)

        def accumulate(i, dS):
            (W, _), (gW, gb), blk = params[i], grads[i], self.blocks[i]
            K.block_backward(fwd.z[(blk.layer - 1, blk.row)], W, dS[:, 0, :], gW, gb, None, 1.0)

        self.backward_sweep(theta, fwd, top, 1, accumulate, phase)

    def jacobian(self, theta, fwd, phase=Phase.BACKWARD):
        """D_b^m = d z^L / d s_b^m for every column group b this rank owns a block of.

        Returns a dict (m, b) -> (n, n_L, |b|) array: the backward sweep run with
        n_L vectors per instance, the identity on top.
        """
        L, layout = self.n_layers, self.layout
        top = {}
        for b in range(layout.partitions[L]):
            if self.owns_column(L, b):
                cols = layout.group(L, b)
                width = cols.stop - cols.start
                Db = np.zeros((fwd.n, self.n_outputs, width))
                Db[:, cols.start + np.arange(width), np.arange(width)] = 1.0
                top[(L, b)] = Db
        return self.backward_sweep(theta, fwd, top, self.n_outputs, None, phase)
