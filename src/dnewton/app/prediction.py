"""Predictions of a `io.model_file.Model` on any layout and any number of ranks.

The model is cut into the blocks of a layout chosen for the predicting job (not
the one that trained it), the data partitioned as for training, and the
forward pass run in batches; the output group's leader then broadcasts the
outputs so every rank returns them.
"""

import numpy as np

from ..constants import BATCH_SIZE
from ..errors import InputError, agreed, everywhere
from ..io.shards import share_of
from ..model.activations import Activation
from ..model.network import Network
from ..parallel.groups import Groups
from ..parallel.layout import Layout
from ..parallel.phases import Phase
from .problem import planned_layout
from .threads import compute_threads, default_threads


class Predictor:
    """A model laid out over the ranks of `comm`. Collective to build and to use;
    call `close`. It works on a duplicate of `comm`.

    Parameters
    ----------
    comm : mpi4py communicator
    model : io.model_file.Model
    partitions : sequence of int or None
        P_0..P_L for this job, or None: the planner's (both with the planner's
        assignment: `app.problem.planned_layout`).
    batch_size : int
        Instances per forward batch (bounds memory).
    """

    def __init__(self, comm, model, partitions=None, batch_size=BATCH_SIZE):
        with agreed(comm):  # partitions that cannot be laid out: refused on every rank
            if partitions is not None:
                Layout(model.widths, partitions, comm.size)
        self.layout = planned_layout(comm, model.widths, comm.size, partitions)
        self.world = world = comm.Dup()
        self.model = model
        self.batch_size = batch_size
        self.groups = Groups(world, self.layout)
        self.network = Network(self.layout, self.groups, Activation.hidden(model.activation),
                               model.dtype)
        self.theta = model.local_parameters(self.layout, world.rank)
        self.preprocessing = model.preprocessing(self.layout)

    def outputs(self, raw):
        """z^L, (l, n_L), of the instances of `raw` (a `data.RawData`), on every rank."""
        if raw.n_features != self.layout.widths[0]:
            raise everywhere(InputError(
                f"{raw.source}: {raw.n_features} features, the model has {self.layout.widths[0]}"
            ))
        with compute_threads(default_threads(self.world.size)):
            return self._outputs(raw)

    def _outputs(self, raw):
        data = share_of(raw, self.groups, self.layout, None, self.preprocessing,
                        dtype=self.network.dtype)
        outputs = np.empty((data.n_instances, self.layout.widths[-1]))
        leader = self.layout.output_group[0]
        for start in range(0, data.n_instances, self.batch_size):
            rows = slice(start, min(start + self.batch_size, data.n_instances))
            n = rows.stop - rows.start
            fwd = self.network.forward(self.theta, data.rows(rows), n, Phase.EVALUATION)
            batch = fwd.output if fwd.output is not None else np.empty(
                (n, outputs.shape[1]), dtype=self.network.dtype)
            self.groups.broadcast(batch, leader, Phase.EVALUATION)
            outputs[rows] = batch
        return outputs

    def labels(self, raw):
        """The predicted class label of every instance of `raw`, on every rank."""
        return self.model.classes[np.argmax(self.outputs(raw), axis=1)]

    def close(self):
        self.groups.free()
        self.world.Free()
