"""The subsampled Gauss-Newton operator of SPEC sections 2-3.

``G_S v = v / (C l) + (1/|S|) sum_{i in S} J_i^T B_i J_i v``, applied blockwise:
each block p computes J_{i,p} v_p for every i in S (`jacobian_vector_product`),
ONE allreduce of |S| n_L numbers over all ranks sums the blocks into J_i v, every
rank forms q_i = B_i J_i v, and each block accumulates its part of J^T q
(`jacobian_transpose_product`). The CG solver sees only `apply`.
"""

import numpy as np

from . import _kernels as K


class GaussNewtonOperator:
    """``v -> (G_S + damping I) v`` on this rank's parameter vector.

    Parameters
    ----------
    network : Network
    fwd : network.Pass
        Forward pass over the subset S (keeps z_a^{m-1} of every block).
    jacobian : dict
        (m, b) -> D_b^m, (|S|, n_L, |b|), from `Network.jacobian`.
    curvature : object
        The loss's B_i data for S (`loss.curvature`), the same on every rank.
    loss : losses object
    regularization : float
        1 / (C l).
    damping : float
        Levenberg-Marquardt lambda.
    """

    def __init__(self, network, fwd, jacobian, curvature, loss, regularization, damping=0.0):
        self.network = network
        self.loss = loss
        self.curvature = curvature
        self.regularization = regularization
        self.damping = damping
        self.n_subset = fwd.n
        self.n_outputs = network.n_outputs
        self._Z = []
        self._D = []
        self._U = []
        for blk in network.blocks:
            self._Z.append(fwd.z[(blk.layer - 1, blk.row)])
            self._D.append(jacobian[(blk.layer, blk.col)])
            self._U.append(np.empty((fwd.n, blk.shape[1])))
        # J v for every instance of S, plus one slot that carries the local v.v.
        self._buf = np.empty(self.n_subset * self.n_outputs + 1)

    def jacobian_vector(self, v):
        """Local sum over this rank's blocks of J_{i,p} v_p, (|S|, n_L), not reduced."""
        Jv = self._buf[:-1].reshape(self.n_subset, self.n_outputs)
        Jv[:] = 0.0
        for (V, vb), Z, D, U in zip(self.network.split(v), self._Z, self._D, self._U):
            K.jacobian_vector_product(Z, V, vb, D, U, Jv)
        return Jv

    def jacobian_transpose(self, Q, out, scale):
        """out += scale * sum_i J_i^T Q_i over this rank's blocks."""
        for (O, ob), Z, D, U in zip(self.network.split(out), self._Z, self._D, self._U):
            K.jacobian_transpose_product(Z, D, Q, U, O, ob, scale)

    def apply(self, v, out):
        """out = (G_S + damping I) v; returns v^T (G_S + damping I) v summed over ranks.

        One allreduce of |S| n_L + 1 numbers (phase ``gauss_newton``): the extra
        number is v.v, which with J v gives the quadratic form without another
        reduction.
        """
        Jv = self.jacobian_vector(v)
        self._buf[-1] = K.dot(v, v)
        self.network.groups.all.allreduce(self._buf, "gauss_newton")
        Q = self.loss.apply_curvature(self.curvature, Jv)
        shift = self.regularization + self.damping
        np.multiply(v, shift, out=out)
        self.jacobian_transpose(Q, out, 1.0 / self.n_subset)
        return float(np.einsum("ij,ij->", Jv, Q)) / self.n_subset + shift * self._buf[-1]
