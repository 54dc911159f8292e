"""The objective over this rank's data, evaluated in batches (docs/design.md, "Model").

``f(theta) = theta^T theta / (2 C l) + (1/l) sum_i loss_i``. Sums over instances
run in batches of `batch_size` to bound memory; every rank steps through the same
batches, so each batch's collectives line up.
"""

import numpy as np

from ..constants import BATCH_SIZE
from ..parallel.phases import Phase
from ..parallel.space import GroupSpace
from .gauss_newton import GaussNewtonOperator


class Objective:
    """f, its gradient and its Gauss-Newton operator on one partitioned data set.

    Parameters
    ----------
    network : model.network.Network
    data : io.data.PartitionedData
        Training data partitioned for this rank.
    loss : model.losses object
    C : float
        Regularization constant (multiplies the data term, as in LIBLINEAR).
    batch_size : int
        Instances per forward/backward batch.
    """

    def __init__(self, network, data, loss, C, batch_size=BATCH_SIZE):
        self.network = network
        self.groups = network.groups
        self.data = data
        self.loss = loss
        self.C = C
        self.n_instances = data.n_instances
        self.regularization = 1.0 / (C * data.n_instances)
        self.batch_size = batch_size
        output = self.groups.output
        # Every output rank computes the loss; one of them contributes it to sums.
        self._counts_loss = output is not None and output.leader == self.groups.world.rank
        self._sums = GroupSpace(self.groups.all, Phase.FORWARD)
        self._scores = GroupSpace(self.groups.all, Phase.EVALUATION)

    def _batches(self, n):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    def _total(self, theta, loss_sum):
        tt, loss_sum = self._sums.sum([np.dot(theta, theta), loss_sum])
        return tt * self.regularization / 2.0 + loss_sum / self.n_instances

    def value(self, theta):
        """f(theta), the same on every rank."""
        loss_sum = 0.0
        for rows in self._batches(self.n_instances):
            fwd = self.network.forward(theta, self.data.rows(rows), rows.stop - rows.start)
            if self._counts_loss:
                loss_sum += self.loss.value(fwd.output, self.data.labels[rows])
        return self._total(theta, loss_sum)

    def value_and_gradient(self, theta):
        """(f(theta), local part of the gradient)."""
        grad = theta * self.regularization
        loss_sum = 0.0
        for rows in self._batches(self.n_instances):
            fwd = self.network.forward(theta, self.data.rows(rows), rows.stop - rows.start)
            dout = None
            if fwd.output is not None:
                y = self.data.labels[rows]
                dout = self.loss.gradient(fwd.output, y) / self.n_instances
                if self._counts_loss:
                    loss_sum += self.loss.value(fwd.output, y)
            self.network.backward(theta, fwd, dout, grad)
        return self._total(theta, loss_sum), grad

    def batch_gradient(self, theta, rows):
        """Stochastic gradient of f on the instances `rows` (sorted index array).

        ``theta / (C l) + (1/|B|) sum_{i in B} grad loss_i``: an unbiased estimate
        of the gradient of f when B is drawn uniformly. Returns this rank's part,
        shape (n_params,). Collective over the layout's groups, like `value`.
        """
        grad = theta * self.regularization
        fwd = self.network.forward(theta, self.data.rows(rows), len(rows))
        dout = None
        if fwd.output is not None:
            dout = self.loss.gradient(fwd.output, self.data.labels[rows]) / len(rows)
        self.network.backward(theta, fwd, dout, grad)
        return grad

    def gauss_newton(self, theta, subset, damping):
        """The operator v -> (G_S + damping I) v on the instances `subset` (sorted).

        Runs the forward pass on S, the Jacobian pass (n_L vectors per instance),
        and, for losses whose B depends on the outputs, broadcasts B's data from
        the output group's leader so every rank can form q_i = B_i J_i v.
        """
        fwd = self.network.forward(theta, self.data.rows(subset), len(subset))
        jacobian = self.network.jacobian(theta, fwd)
        curvature = self.loss.curvature(fwd.output) if fwd.output is not None else None
        if not self.loss.constant_curvature:
            if curvature is None:
                curvature = np.empty((len(subset), self.network.n_outputs))
            leader = self.network.layout.output_group[0]
            self.groups.broadcast(curvature, leader, Phase.BACKWARD)
        return GaussNewtonOperator(
            self.network, fwd, jacobian, curvature, self.loss, self.regularization, damping
        )

    def accuracy(self, theta, data):
        """Fraction of `data` (partitioned like the training set) classified right."""
        correct = 0.0
        for rows in self._batches(data.n_instances):
            fwd = self.network.forward(
                theta, data.rows(rows), rows.stop - rows.start, Phase.EVALUATION
            )
            if self._counts_loss:
                correct += np.sum(np.argmax(fwd.output, axis=1) == data.labels[rows])
        (correct,) = self._scores.sum([correct])
        return correct / data.n_instances
