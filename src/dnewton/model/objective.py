"""The objective over this rank's data, evaluated in batches (docs/design.md, "Model").

``f(theta) = theta^T theta / (2 C l) + (1/l) sum_i loss_i``. Sums over instances
run in batches of `batch_size` to bound memory; every rank steps through the same
batches, so each batch's collectives line up.

With ``--replicas`` each replica (copy of the layout) holds a contiguous share of
the l instances (and of every subset S): the sums over instances of each replica
are added over the replicas (`Groups.replicas`, one reduction per f, gradient and
Gauss-Newton product, `model.replicas`), and the regularization term, the same in
every replica, is added once (by the first) before that sum.
"""

import copy
from dataclasses import dataclass

import numpy as np

from ..constants import BATCH_SIZE
from ..parallel.phases import Phase
from ..parallel.pipeline import run, run_pipelined
from ..parallel.space import GroupSpace, local_dot
from . import memory
from .gauss_newton import GaussNewtonOperator, RecomputedGaussNewtonOperator
from .replicas import Replicas


@dataclass
class Evaluation:
    """f at `theta`, with the forward pass the gradient and the Gauss-Newton
    operator can reuse (`passes`, all l instances, or None when not kept)."""

    theta: np.ndarray
    f: float
    passes: object = None
    generation: int = 0  # which filling of its store the passes are

    def __float__(self):
        return float(self.f)


class _Store:
    """The arrays of a forward pass over all l instances, filled again and again."""

    def __init__(self, network, n):
        self.passes = network.empty_pass(n)
        self.generation = 0


class Objective:
    """f, its gradient and its Gauss-Newton operator on one partitioned data set.

    `evaluate` keeps the forward pass over all instances (when `keep`) in one of
    two stores, so that the gradient at an accepted point and the Gauss-Newton
    subset's rows need no pass of their own: the store of the point whose
    gradient was taken last is left alone, the other takes every new point.

    A Gauss-Newton operator serves until the next `evaluate`, which releases it
    (its products then raise): in a Newton iteration the line search follows the
    direction's solve, and the operator's Jacobian and subset rows would otherwise
    sit beside the second store while the line search fills it, a rank's peak.

    Parameters
    ----------
    network : model.network.Network
    data : io.data.PartitionedData
        Training data partitioned for this rank (its copy's share of the rows).
    loss : model.losses object
    C : float
        Regularization constant (multiplies the data term, as in LIBLINEAR).
    batch_size : int
        Instances per forward/backward batch.
    keep : bool
        Keep forward passes for reuse (memory: `kept_bytes`).
    pipeline : int
        Batches in flight in the passes over all instances (1: one after
        another; see `parallel.pipeline`).
    jacobian : {"stored", "recomputed"}
        How the Gauss-Newton operator gets J (`model.gauss_newton`).
    """

    def __init__(self, network, data, loss, C, batch_size=BATCH_SIZE, keep=True, pipeline=1,
                 jacobian="stored"):
        self.network = network
        self.groups = network.groups
        self.ledger = network.ledger
        self.data = data
        self.loss = loss
        self.C = C
        self.n_instances = data.n_total  # l, over all replicas
        self.n_local = data.n_instances  # this copy's share of them
        self.regularization = 1.0 / (C * data.n_total)
        self.batch_size = batch_size
        self.keep = keep
        self.pipeline = pipeline
        self.jacobian = jacobian
        self._workspaces = []  # the backward sweeps' sums, one per batch in flight
        self._counts_loss = self.groups.leads_output
        self._sums = GroupSpace(self.groups.all, Phase.FORWARD)
        self._scores = GroupSpace(self.groups.all, Phase.EVALUATION)
        self._across = GroupSpace(self.groups.replicas, Phase.REPLICAS)
        self._replicas = Replicas(network)
        self._across_scores = GroupSpace(self.groups.replicas, Phase.EVALUATION)
        self._stores = []
        self._current = None  # the store of the point whose gradient was taken last
        self._sample_stores = []  # the stores the samples share, for the largest so far
        self._operator = None  # the last Gauss-Newton operator, released by `evaluate`

    def sample(self, index):
        """The objective on the instances `index` (sorted, of all l) alone:

        ``f_B(theta) = theta^T theta / (2 C l) + (1/|B|) sum_{i in B} loss_i``,

        an unbiased estimate of f (the regularization keeps the whole set's l, so
        its minimiser is f's when B is everything). Its instances are numbered
        0..|B|-1 in `index`'s order: its Gauss-Newton subsets index those. It
        shares this objective's groups and workspaces, and its forward-pass stores
        with the other samples (sized for the largest so far). Collective only in
        what it then computes; this call itself communicates nothing.
        """
        if len(index) == self.n_instances:
            return self
        view = copy.copy(self)
        view.data = self.data.take(index)
        view.n_instances, view.n_local = view.data.n_total, view.data.n_instances
        if self.keep and (not self._sample_stores
                          or self._sample_stores[0].passes.n < view.n_local):
            self._sample_stores = [_Store(self.network, view.n_local) for _ in range(2)]
        view._stores, view._current = self._sample_stores, None
        return view

    def kept_bytes(self):
        """Bytes of this rank's two stores of kept forward passes."""
        return memory.kept_bytes(self.n_local, self.network.pass_numbers(),
                                 self.network.dtype.itemsize)

    def _batches(self, n):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    def _total(self, theta, loss_sum):
        with self.ledger.phase(Phase.REPLICAS):
            (loss_sum,) = self._across.sum([loss_sum])
        with self.ledger.phase(Phase.FORWARD):
            tt, loss_sum = self._sums.sum([local_dot(theta, theta), loss_sum])
        return tt * self.regularization / 2.0 + loss_sum / self.n_instances

    def _free_store(self):
        if not self.keep:
            return None
        if not self._stores:
            self._stores = [_Store(self.network, self.n_local) for _ in range(2)]
        store = self._stores[1] if self._current is self._stores[0] else self._stores[0]
        store.generation += 1
        return store

    def _kept(self, evaluation):
        """The store holding `evaluation`'s passes, or None if they are gone."""
        for store in self._stores:
            if evaluation.passes is store.passes and evaluation.generation == store.generation:
                return store
        return None

    def _passes(self, batch_steps):
        """Run one pass per batch (generators, in batch order): pipelined with
        `pipeline` > 1, else one after another. Returns their results in order."""
        if self.pipeline > 1 and self.n_local > self.batch_size:
            return run_pipelined(batch_steps, self.pipeline)
        return [run(steps) for steps in batch_steps]

    def evaluate(self, theta):
        """f(theta) (the same on every rank), keeping the forward pass when allowed.
        Releases the last Gauss-Newton operator built (see the class)."""
        if self._operator is not None:
            self._operator.release()
            self._operator = None
        store = self._free_store()

        def batch(rows):
            into = None if store is None else store.passes.rows(rows)
            fwd = yield from self.network.forward_steps(
                theta, self.data.rows(rows), rows.stop - rows.start, into=into)
            if not self._counts_loss:
                return 0.0
            return self.loss.value(fwd.output, self.data.labels[rows])

        with self.ledger.phase(Phase.FORWARD):
            losses = self._passes(batch(rows) for rows in self._batches(self.n_local))
        loss_sum = 0.0
        for loss in losses:  # in batch order, as one pass after another would
            loss_sum += loss
        return Evaluation(theta, self._total(theta, loss_sum),
                          None if store is None else store.passes,
                          0 if store is None else store.generation)

    def value(self, theta):
        """f(theta), the same on every rank."""
        return self.evaluate(theta).f

    def gradient(self, evaluation):
        """The local part of the gradient at an `evaluate`d point.

        Reuses the point's forward pass if it is still kept, else runs it again.
        """
        theta, store = evaluation.theta, self._kept(evaluation)
        grad = self._replicas.start(theta, self.regularization)

        def batch(rows):
            inputs = self.data.rows(rows)
            if store is not None:
                fwd = store.passes.rows(rows)
                fwd.z.update({(0, a): X for a, X in inputs.items()})
            else:  # its time counts as the backward phase's; its FLOPs as forward
                fwd = yield from self.network.forward_steps(theta, inputs,
                                                            rows.stop - rows.start)
            dout = None
            if fwd.output is not None:
                y = self.data.labels[rows]
                dout = self.loss.gradient(fwd.output, y) / self.n_instances
            workspace = self._workspaces.pop() if self._workspaces else {}
            try:
                yield from self.network.backward_steps(theta, fwd, dout, grad, workspace)
            finally:
                self._workspaces.append(workspace)

        with self.ledger.phase(Phase.BACKWARD):
            self._passes(batch(rows) for rows in self._batches(self.n_local))
        self._current = store
        return self._replicas.sum(grad)

    def value_and_gradient(self, theta):
        """(f(theta), local part of the gradient)."""
        evaluation = self.evaluate(theta)
        return evaluation.f, self.gradient(evaluation)

    def batch_gradient(self, theta, rows):
        """Stochastic gradient of f on the instances `rows` (sorted index array).

        ``theta / (C l) + (1/|B|) sum_{i in B} grad loss_i``: an unbiased estimate
        of the gradient of f when B is drawn uniformly. Returns this rank's part,
        shape (n_params,). Collective over the layout's groups, like `value`.
        """
        grad = self._replicas.start(theta, self.regularization)
        local = self.data.local(rows)
        with self.ledger.phase(Phase.FORWARD):
            fwd = self.network.forward(theta, self.data.rows(local), len(local))
            dout = None
            if fwd.output is not None:
                dout = self.loss.gradient(fwd.output, self.data.labels[local]) / len(rows)
        with self.ledger.phase(Phase.BACKWARD):
            self.network.backward(theta, fwd, dout, grad)
        return self._replicas.sum(grad)

    def gauss_newton(self, point, subset, damping):
        """The operator v -> (G_S + damping I) v at `point` (an `evaluate`d point,
        or parameters), on the instances `subset` (sorted, of all l; each copy
        takes its own).

        Takes the forward pass on S from the point's kept pass (or runs it), runs
        the Jacobian pass (n_L vectors per instance), and, for losses whose B
        depends on the outputs, broadcasts B's data from the output group's leader
        so every rank can form q_i = B_i J_i v. The operator serves until the next
        `evaluate`.
        """
        if not isinstance(point, Evaluation):
            point = Evaluation(point, np.nan)
        theta, store = point.theta, self._kept(point)
        n_subset, subset = len(subset), self.data.local(subset)
        with self.ledger.phase(Phase.FORWARD):
            if store is not None:
                fwd = store.passes.rows(subset)
                fwd.z.update({(0, a): X for a, X in self.data.rows(subset).items()})
            else:
                fwd = self.network.forward(theta, self.data.rows(subset), len(subset))
        with self.ledger.phase(Phase.BACKWARD):
            stored = self.jacobian == "stored"
            jacobian = self.network.jacobian(theta, fwd) if stored else None
            curvature = self.loss.curvature(fwd.output) if fwd.output is not None else None
            if not self.loss.constant_curvature:
                if curvature is None:
                    curvature = np.empty((len(subset), self.network.n_outputs))
                leader = self.network.layout.output_group[0]
                self.groups.broadcast(curvature, leader, Phase.BACKWARD)
        if not stored:
            operator = RecomputedGaussNewtonOperator(self.network, theta, fwd, curvature,
                                                     self.loss, self.regularization, damping,
                                                     n_subset)
        else:
            operator = GaussNewtonOperator(self.network, fwd, jacobian, curvature, self.loss,
                                           self.regularization, damping, n_subset)
        self._operator = operator
        return operator

    def accuracy(self, theta, data):
        """Fraction of `data` (partitioned like the training set) classified right."""
        correct = 0.0
        with self.ledger.phase(Phase.EVALUATION):
            for rows in self._batches(data.n_instances):
                fwd = self.network.forward(
                    theta, data.rows(rows), rows.stop - rows.start, Phase.EVALUATION
                )
                if self._counts_loss:
                    correct += np.sum(np.argmax(fwd.output, axis=1) == data.labels[rows])
            (correct,) = self._across_scores.sum([correct])
            (correct,) = self._scores.sum([correct])
        return correct / data.n_total
