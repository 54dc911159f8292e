"""The subsampled Gauss-Newton operator (docs/design.md, "The Gauss-Newton product").

``G_S v = v / (C l) + (1/|S|) sum_{i in S} J_i^T B_i J_i v``, applied blockwise:
each block p computes J_{i,p} v_p for every i in S (`jacobian_vector_product`),
ONE allreduce of |S| n_L numbers over all ranks sums the blocks into J_i v, every
rank forms q_i = B_i J_i v, and each block accumulates its part of J^T q
(`jacobian_transpose_product`). The CG solver sees only `apply`.

The block-diagonal approximation (docs/design.md, "The paper's techniques")
keeps only the diagonal blocks
``G_pp v_p = v_p / (C l) + (1/|S|) sum_i J_{i,p}^T B_i J_{i,p} v_p``: the same
two kernels on one block's own J_{i,p} v_p, with no communication at all
(`block_operators`).
"""

import numpy as np

from .. import _kernels as K
from .._sparse import issparse
from ..parallel.phases import Phase
from ..parallel.pipeline import run
from ..parallel.space import GroupSpace, local_dot
from . import memory
from .replicas import Replicas

# How the Gauss-Newton product gets J: the Jacobian stored once per Newton
# iteration and streamed in every CG iteration, or recomputed in every CG
# iteration by a tangent and a backward pass (no stored Jacobian).
JACOBIAN_MODES = ("stored", "recomputed")


class GaussNewtonOperator:
    """``v -> (G_S + damping I) v`` on this rank's parameter vector.

    Parameters
    ----------
    network : model.network.Network
    fwd : model.network.Pass
        Forward pass over the subset S (keeps z_a^{m-1} of every block).
    jacobian : dict
        (m, b) -> D_b^m, (|S|, n_L, |b|), from `Network.jacobian`.
    curvature : object
        The loss's B_i data for S (`loss.curvature`), the same on every rank.
    loss : model.losses object
    regularization : float
        1 / (C l).
    damping : float
        Levenberg-Marquardt lambda.
    n_subset : int or None
        |S| over all replicas (``--replicas``: `fwd` holds this replica's share of S);
        None: ``fwd.n``.
    """

    def __init__(self, network, fwd, jacobian, curvature, loss, regularization, damping,
                 n_subset=None):
        self.network = network
        self.loss = loss
        self.curvature = curvature
        self.regularization = regularization
        self.damping = damping
        self.n_subset = fwd.n if n_subset is None else n_subset
        self.n_local = fwd.n
        self.n_outputs = network.n_outputs
        self._replicas = Replicas(network)
        self._Z = []
        self._D = []
        self._U = []
        self._kernels = []  # (J v, J^T q) of each block: the CSR ones on sparse inputs
        for blk in network.blocks:
            Z = fwd.z[(blk.layer - 1, blk.row)]
            self._Z.append(Z)
            self._D.append(jacobian[(blk.layer, blk.col)])
            self._U.append(np.empty((fwd.n, blk.shape[1]), dtype=network.dtype))
            self._kernels.append(
                (K.csr_jacobian_vector_product, K.csr_jacobian_transpose_product)
                if issparse(Z) else (K.jacobian_vector_product, K.jacobian_transpose_product))
        # J v for every instance of S, plus one slot that carries the local v.v:
        # float64 in either precision (it meets B_i and is summed over ranks).
        self._buf = np.empty(self.n_local * self.n_outputs + 1)
        self._block_Jv = np.empty((self.n_local, self.n_outputs))
        # FLOPs of one product (J v and J^T q) by each block: two products Z V and
        # Z^T T (2 |S| |a| |b| each, 2 nnz |b| on a CSR Z) and two sets of |S| small
        # n_L x |b| products.
        self._flops = [
            4.0 * blk.shape[1] * ((Z.nnz if issparse(Z) else fwd.n * blk.shape[0])
                                  + fwd.n * self.n_outputs)
            for blk, Z in zip(network.blocks, self._Z)
        ]
        self.ledger = network.ledger

    def release(self):
        """Free the subset's arrays (its passes, D, the kernels' workspaces);
        products after this raise (`Objective.evaluate` calls it)."""
        self._Z = self._D = self._U = self._kernels = None
        self.curvature = None

    def jacobian_vector(self, v):
        """Local sum over this rank's blocks of J_{i,p} v_p, (|S|, n_L), not reduced."""
        if self._D is None:
            raise RuntimeError("the Gauss-Newton operator was released")
        Jv = self._buf[:-1].reshape(self.n_local, self.n_outputs)
        Jv[:] = 0.0
        for (V, vb), Z, D, U, (jv, _) in zip(self.network.parameters.views(v), self._Z,
                                             self._D, self._U, self._kernels):
            jv(Z, V, vb, D, U, Jv)
        return Jv

    def jacobian_transpose(self, Q, out, scale):
        """out += scale * sum_i J_i^T Q_i over this rank's blocks."""
        if self._D is None:
            raise RuntimeError("the Gauss-Newton operator was released")
        views = self.network.parameters.views(out)
        for (out_W, out_b), Z, D, U, (_, jtq) in zip(views, self._Z, self._D, self._U,
                                                     self._kernels):
            jtq(Z, D, Q, U, out_W, out_b, scale)

    def apply(self, v, out):
        """out = (G_S + damping I) v; returns v^T (G_S + damping I) v summed over ranks.

        One allreduce of |S| n_L + 1 numbers (phase ``gauss_newton``): the extra
        number is v.v, which with J v gives the quadratic form without another
        reduction. With replicas, one more of the product's numbers and the
        quadratic form over the replicas (`model.replicas`).
        """
        self.ledger.computed(Phase.GAUSS_NEWTON, sum(self._flops))
        Jv = self.jacobian_vector(v)
        self._buf[-1] = K.dot(v, v)
        self.network.groups.all.allreduce(self._buf, Phase.GAUSS_NEWTON)
        Q = self.loss.apply_curvature(self.curvature, Jv)
        shift = self.regularization + self.damping
        self._replicas.start(v, shift, out)
        self.jacobian_transpose(Q, out, 1.0 / self.n_subset)
        quadratic = self._replicas.sum_with(out,
                                            float(np.einsum("ij,ij->", Jv, Q)) / self.n_subset)
        return quadratic + shift * self._buf[-1]

    def block_operators(self):
        """The diagonal blocks G_pp + damping I, one per block of this rank.

        A list of ``(index, where, apply)``: `index` is the block's place in the
        whole layout, `where` its slice of this rank's parameter vector and
        ``apply(v_p, out_p) -> v_p'A v_p`` its operator on that part alone. Local:
        no communication.
        """
        if self._D is None:
            raise RuntimeError("the Gauss-Newton operator was released")
        layout = self.network.parameters
        return [(blk.index, layout.block_slice(i), self._block_apply(i))
                for i, blk in enumerate(layout.blocks)]

    def _block_apply(self, i):
        blk = self.network.blocks[i]
        block_views = self.network.parameters.block_views
        Z, D, U = self._Z[i], self._D[i], self._U[i]
        jv, jtq = self._kernels[i]

        def apply(v, out):
            self.ledger.computed(Phase.GAUSS_NEWTON, self._flops[i])
            Jv = self._block_Jv
            Jv[:] = 0.0
            V, vb = block_views(blk, v)
            jv(Z, V, vb, D, U, Jv)
            Q = self.loss.apply_curvature(self.curvature, Jv)
            shift = self.regularization + self.damping
            self._replicas.start(v, shift, out)
            out_W, out_b = block_views(blk, out)
            jtq(Z, D, Q, U, out_W, out_b, 1.0 / self.n_subset)
            quadratic = self._replicas.sum_with(out, float(np.einsum("ij,ij->", Jv, Q))
                                                / self.n_subset)
            return quadratic + shift * K.dot(v, v)

        return apply


class RecomputedGaussNewtonOperator:
    """``v -> (G_S + damping I) v`` without a stored Jacobian (``--jacobian recomputed``).

    Every product runs the tangent pass (J v by forward-mode propagation,
    `Network.tangent`), applies B on the output ranks, and runs the backward sweep
    with q / |S| on top (J^T q, as the gradient's sweep). It stores O(|S| widths)
    numbers instead of the Jacobian's O(|S| n_L widths), and moves the passes'
    sums instead of J v alone: it pays when n_L is large or memory is short.
    Same parameters as `GaussNewtonOperator` but `jacobian`; `theta` is the point.
    """

    def __init__(self, network, theta, fwd, curvature, loss, regularization, damping,
                 n_subset=None):
        self.network = network
        self.theta = theta
        self.fwd = fwd
        self.curvature = curvature
        self.loss = loss
        self.regularization = regularization
        self.damping = damping
        self.n_subset = fwd.n if n_subset is None else n_subset
        self._replicas = Replicas(network)
        self._counts = network.groups.leads_output
        self._sums = GroupSpace(network.groups.all, Phase.GAUSS_NEWTON)
        self._workspace = {}  # the backward sweep's sums, reused by every product

    def release(self):
        """Free the subset's forward pass and the sweep's sums (see
        `GaussNewtonOperator.release`). Products after this raise."""
        self.fwd = self.curvature = None
        self._workspace = {}

    def apply(self, v, out):
        """out = (G_S + damping I) v; returns v^T (G_S + damping I) v summed over ranks."""
        if self.fwd is None:
            raise RuntimeError("the Gauss-Newton operator was released")
        shift = self.regularization + self.damping
        self._replicas.start(v, shift, out)
        Jv = self.network.tangent(self.theta, self.fwd, v)
        dout, quadratic = None, 0.0
        if Jv is not None:
            Jv = Jv.astype(np.float64)  # B and the quadratic form in float64, as stored
            Q = self.loss.apply_curvature(self.curvature, Jv)
            dout = Q / self.n_subset
            if self._counts:
                quadratic = float(np.einsum("ij,ij->", Jv, dout))
        run(self.network.backward_steps(self.theta, self.fwd, dout, out, self._workspace,
                                        Phase.GAUSS_NEWTON))
        vv, quadratic = self._sums.sum([local_dot(v, v), quadratic])
        return self._replicas.sum_with(out, quadratic) + shift * vv

    def block_operators(self):
        raise NotImplementedError("the block-diagonal operator needs the stored Jacobian")


def stored_bytes(network, n_subset, jacobian="stored", input_bytes=None):
    """Bytes this rank keeps for the Gauss-Newton operator on |S| = n_subset
    (`model.memory.gauss_newton_bytes`); `input_bytes`: bytes per instance of the
    layer-1 inputs of S, for sparse data."""
    return memory.gauss_newton_bytes(n_subset, network.blocks, network.hidden_widths(),
                                     network.n_outputs, network.dtype.itemsize, jacobian,
                                     input_bytes)
