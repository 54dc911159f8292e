"""The calling rank's share of a partitioned network: its parameters and the
distributed forward pass and backward sweep (docs/design.md, "Passes").

Parameters of all blocks a rank owns live in one flat vector (the vector CG works
on) of the network's precision, float64 or float32, ordered by
`parallel.layout.ParameterLayout`; every array of a pass has that precision too. Passes work on a
batch of n instances and keep, per (layer, group), the arrays this rank needs:

* ``z[(m, g)]`` activations z_g^m, (n, |g|) -- m = 0 are the input features, the
  data's own arrays (dense, or CSR for sparse inputs), referenced, never copied;
* ``s[(m, g)]`` pre-activations s_g^m, (n, |g|), for m < L;
* ``output`` z^L, (n, n_L), on the ranks of the output group.

Every rank walks layers and groups in the same order and joins only the groups it
belongs to (`parallel.groups.Groups`).
"""

from dataclasses import dataclass

import numpy as np

from .. import _kernels as K
from .._sparse import issparse
from ..constants import Stream, random_stream
from ..parallel.phases import Phase
from ..parallel.pipeline import Reduction, run
from . import memory


@dataclass
class Pass:
    """What a forward pass leaves behind for the backward sweep (arrays of n rows)."""

    z: dict
    s: dict
    output: object  # (n, n_L) on output ranks, else None
    n: int

    def rows(self, index):
        """The pass of the instances `index`: views for a slice, copies for an index array."""
        def cut(arrays):
            return {key: a[index] if issparse(a) else np.ascontiguousarray(a[index])
                    for key, a in arrays.items()}

        n = len(range(self.n)[index]) if isinstance(index, slice) else len(index)
        output = None if self.output is None else np.ascontiguousarray(self.output[index])
        return Pass(cut(self.z), cut(self.s), output, n)


class Network:
    """Parameters and passes of the blocks `layout` gives to this rank.

    Parameters
    ----------
    layout : parallel.layout.Layout
    groups : parallel.groups.Groups
    activation : model.activations.Activation
        The hidden activation.
    dtype : numpy dtype
        float64 or float32: parameters, activations and the Jacobian.
    """

    def __init__(self, layout, groups, activation, dtype=np.float64):
        self.layout = layout
        self.dtype = np.dtype(dtype)
        self.groups = groups
        self.activation = int(activation)
        self.ledger = groups.ledger
        self.parameters = layout.parameters(groups.rank)
        self.blocks = self.parameters.blocks
        self.n_params = self.parameters.size
        self.n_outputs = layout.widths[-1]
        self.n_layers = layout.n_layers
        self._by_col = {}
        self._by_row = {}
        for i, blk in enumerate(self.blocks):
            self._by_col.setdefault((blk.layer, blk.col), []).append(i)
            self._by_row.setdefault((blk.layer, blk.row), []).append(i)
        # Multiply-adds per instance of this rank's blocks above layer 1 (whose
        # backward products reach a layer below); layer 1's depend on the inputs.
        self._macs_above_1 = sum(blk.shape[0] * blk.shape[1] for blk in self.blocks
                                 if blk.layer > 1)
        # (m, b), m < L, of the hidden groups whose F(m, b) this rank is in
        self.hidden_groups = [(m, b) for m in range(1, self.n_layers)
                              for b in range(layout.partitions[m])
                              if groups.forward(m, b) is not None]
        self._gradient_workspace = {}

    def initial_parameters(self, seed):
        """W entries ~ N(0, 2 / n_{m-1}), biases 0 (the reference's initialisation).

        Row j of W^m is drawn from its own stream, keyed by (seed, m, j), so every
        layout gets the same network while each rank draws only its own rows; in
        float32 the float64 draws are rounded, so both precisions start alike.
        """
        theta = np.zeros(self.n_params, dtype=self.dtype)
        for blk, (W, _) in zip(self.blocks, self.parameters.views(theta)):
            fan_in, fan_out = self.layout.widths[blk.layer - 1], self.layout.widths[blk.layer]
            for j in range(blk.rows.start, blk.rows.stop):
                row = random_stream(seed, Stream.INITIAL_WEIGHTS, blk.layer, j).standard_normal(
                    fan_out
                )
                W[j - blk.rows.start] = row[blk.cols] * np.sqrt(2.0 / fan_in)
        return theta

    def product_flops(self, inputs, n):
        """FLOPs of one product Z W by every block on n instances, `inputs[a]` the
        layer-1 blocks: 2 n a b per dense block, 2 nnz(Z_a) b per CSR one."""
        flops = 2.0 * n * self._macs_above_1
        for blk in self.blocks:
            if blk.layer == 1:
                Z = inputs[blk.row]
                flops += 2.0 * blk.shape[1] * (Z.nnz if issparse(Z) else n * blk.shape[0])
        return flops

    def owns_column(self, m, b):
        return (m, b) in self._by_col

    # -- passes -------------------------------------------------------------------

    def empty_pass(self, n):
        """Uninitialised arrays for a forward pass of n instances on this rank."""
        s, z = {}, {}
        for m, b in self.hidden_groups:
            width = self.layout.width(m, b)
            s[(m, b)] = np.empty((n, width), dtype=self.dtype)
            z[(m, b)] = np.empty((n, width), dtype=self.dtype)
        output = (np.empty((n, self.n_outputs), dtype=self.dtype)
                  if self.groups.output is not None else None)
        return Pass(z, s, output, n)

    def hidden_widths(self):
        """|b| of each of `hidden_groups`."""
        return [self.layout.width(m, b) for m, b in self.hidden_groups]

    def pass_numbers(self):
        """Numbers per instance an `empty_pass` holds (its memory is n itemsize times
        this; `model.memory.pass_numbers`)."""
        return memory.pass_numbers(self.hidden_widths(),
                                   0 if self.groups.output is None else self.n_outputs)

    def forward(self, theta, inputs, n, phase=Phase.FORWARD, into=None):
        """Forward pass of n instances; `inputs[a]` is the (n, |a|) block of input group a.

        The pass is written into `into` (an `empty_pass(n)` or rows of one) when
        given, else into new arrays; returns it, with ``z[(0, a)]`` the inputs.
        """
        return run(self.forward_steps(theta, inputs, n, phase, into))

    def forward_steps(self, theta, inputs, n, phase=Phase.FORWARD, into=None):
        """`forward` as a generator that yields each sum it needs (`pipeline`)."""
        params = self.parameters.views(theta)
        self.ledger.computed(phase, self.product_flops(inputs, n))
        fwd = self.empty_pass(n) if into is None else into
        z, s = fwd.z, fwd.s
        z.update({(0, a): X for a, X in inputs.items()})
        L, layout = self.n_layers, self.layout
        for m in range(1, L):
            for b in range(layout.partitions[m]):
                group = self.groups.forward(m, b)
                if group is None:
                    continue
                self._sum_products(params, z, m, b, s[(m, b)])
                yield Reduction(group, s[(m, b)], phase)
                K.activation_forward(self.activation, s[(m, b)], z[(m, b)])
        group = self.groups.output
        if group is not None:
            output = fwd.output
            if layout.partitions[L] == 1:
                self._sum_products(params, z, L, 0, output)
            else:
                output[...] = 0.0
                for b in range(layout.partitions[L]):
                    cols = layout.group(L, b)
                    part = np.empty((n, layout.width(L, b)), dtype=self.dtype)
                    self._sum_products(params, z, L, b, part)
                    output[:, cols] += part
            yield Reduction(group, output, phase)
        return fwd

    def _sum_products(self, params, z, m, b, out):
        """out = sum of Z_a W_ab (+ bias) over this rank's blocks (m, ., b); 0 if none."""
        blocks = self._by_col.get((m, b), ())
        if not blocks:
            out[...] = 0.0
        for k, i in enumerate(blocks):
            W, bias = params[i]
            Z = z[(m - 1, self.blocks[i].row)]
            forward = K.csr_block_forward if issparse(Z) else K.block_forward
            forward(Z, W, bias, out, k > 0)

    def tangent(self, theta, fwd, v, phase=Phase.GAUSS_NEWTON):
        """J v for every instance of the pass `fwd`: the derivative of z^L along the
        parameter direction `v` (a local parameter vector), by forward-mode
        propagation (the R-operator) through the same groups as `forward`.

        Layer by layer, ds_b^m = sum over blocks (m, a, b) of z_a^{m-1} V_ab + dz_a^{m-1}
        W_ab (+ the bias part of v), summed over F(m, b) like s_b^m; dz_b^m = sigma'(s_b^m)
        ds_b^m. Returns J v, (n, n_L), on the ranks of the output group (None
        elsewhere). Stores O(n widths), not the Jacobian's O(n n_L widths).
        """
        return run(self.tangent_steps(theta, fwd, v, phase))

    def tangent_steps(self, theta, fwd, v, phase=Phase.GAUSS_NEWTON):
        """`tangent` as a generator that yields each sum it needs (`pipeline`)."""
        params, directions = self.parameters.views(theta), self.parameters.views(v)
        inputs = {a: fwd.z[(0, a)] for a in {blk.row for blk in self.blocks if blk.layer == 1}}
        # z V of every block, and dz W of those above layer 1
        self.ledger.computed(phase, self.product_flops(inputs, fwd.n)
                             + 2.0 * fwd.n * self._macs_above_1)
        L, layout, n = self.n_layers, self.layout, fwd.n
        dz = {}

        def sum_tangents(m, b, out):
            self._sum_products(directions, fwd.z, m, b, out)  # z^{m-1} V (+ v's bias)
            if m > 1:
                for i in self._by_col.get((m, b), ()):
                    W, _ = params[i]
                    K.block_forward(dz[(m - 1, self.blocks[i].row)], W, None, out, True)

        for m in range(1, L):
            for b in range(layout.partitions[m]):
                group = self.groups.forward(m, b)
                if group is None:
                    continue
                ds = np.empty((n, layout.width(m, b)), dtype=self.dtype)
                sum_tangents(m, b, ds)
                yield Reduction(group, ds, phase)
                K.activation_backward(self.activation, fwd.s[(m, b)], fwd.z[(m, b)], ds)
                dz[(m, b)] = ds
        group = self.groups.output
        if group is None:
            return None
        out = np.zeros((n, self.n_outputs), dtype=self.dtype)
        for b in range(layout.partitions[L]):
            cols = layout.group(L, b)
            part = np.empty((n, layout.width(L, b)), dtype=self.dtype)
            sum_tangents(L, b, part)
            out[:, cols] += part
        yield Reduction(group, out, phase)
        return out

    def backward_sweep(self, theta, fwd, top, k, visit=None, phase=Phase.BACKWARD,
                       workspace=None):
        """Carry k vectors per instance from the outputs down through every layer.

        See `backward_sweep_steps`, which this runs with blocking sums.
        """
        return run(self.backward_sweep_steps(theta, fwd, top, k, visit, phase, workspace))

    def backward_sweep_steps(self, theta, fwd, top, k, visit=None, phase=Phase.BACKWARD,
                             workspace=None):
        """Carry k vectors per instance from the outputs down through every layer,
        as a generator that yields each sum it needs (`pipeline`).

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
        With a `workspace` (a dict), the sums are kept in its arrays, reused from
        one call to the next (the gradient's; the Jacobian keeps its own).
        """
        params = self.parameters.views(theta)
        L, layout = self.n_layers, self.layout
        self.ledger.computed(phase, 2.0 * fwd.n * k * self._macs_above_1)
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
                shape = (fwd.n, k, layout.width(m - 1, a))
                if workspace is None:
                    buf = np.zeros(shape, dtype=self.dtype)
                else:
                    buf = workspace.get((m, a))
                    if buf is None or buf.shape != shape:
                        buf = workspace[(m, a)] = np.empty(shape, dtype=self.dtype)
                    buf[...] = 0.0
                for i in self._by_row.get((m, a), ()):
                    K.jacobian_backward(dS[(m, self.blocks[i].col)], params[i][0], buf)
                yield Reduction(group, buf, phase)
                if self.owns_column(m - 1, a):
                    K.activation_backward_jacobian(
                        self.activation, fwd.s[(m - 1, a)], fwd.z[(m - 1, a)], buf
                    )
                    dS[(m - 1, a)] = buf
        return dS

    def backward(self, theta, fwd, dout, grad, phase=Phase.BACKWARD):
        """Accumulate into `grad` the gradient of sum_i dout_i . z^L_i.

        `dout` is (n, n_L) on output ranks (None elsewhere); `grad` a local
        parameter vector. The sweep's sums reuse this network's arrays.
        """
        run(self.backward_steps(theta, fwd, dout, grad, self._gradient_workspace, phase))

    def backward_steps(self, theta, fwd, dout, grad, workspace, phase=Phase.BACKWARD):
        """`backward` as a generator that yields each sum it needs (`pipeline`);
        its sums are kept in `workspace` (a dict, one per batch in flight)."""
        layout = self.layout
        top = {}
        if dout is not None:
            for b in range(layout.partitions[self.n_layers]):
                if self.owns_column(self.n_layers, b):
                    cols = layout.group(self.n_layers, b)
                    top[(self.n_layers, b)] = np.ascontiguousarray(
                        dout[:, cols], dtype=self.dtype)[:, None, :]
        params, grads = self.parameters.views(theta), self.parameters.views(grad)
        inputs = {blk.row: fwd.z[(0, blk.row)] for blk in self.blocks if blk.layer == 1}
        self.ledger.computed(phase, self.product_flops(inputs, fwd.n))  # every Z^T dS

        def accumulate(i, dS):
            (W, _), (gW, gb), blk = params[i], grads[i], self.blocks[i]
            Z = fwd.z[(blk.layer - 1, blk.row)]
            if issparse(Z):  # layer 1: nothing below needs dZ
                K.csr_block_backward(Z, dS[:, 0, :], gW, gb, 1.0)
            else:
                K.block_backward(Z, W, dS[:, 0, :], gW, gb, None, 1.0)

        yield from self.backward_sweep_steps(theta, fwd, top, 1, accumulate, phase, workspace)

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
                width = layout.width(L, b)
                Db = np.zeros((fwd.n, self.n_outputs, width), dtype=self.dtype)
                Db[:, cols.start + np.arange(width), np.arange(width)] = 1.0
                top[(L, b)] = Db
        return self.backward_sweep(theta, fwd, top, self.n_outputs, None, phase)
