"""A training problem assembled on every rank from raw data and settings.

`Problem.build` is where the pieces meet: the layout, its communication groups,
this rank's share of the data and of the network, and the objective. It works on
a duplicate of the caller's communicator, so its collectives never mix with the
caller's own.
"""

import math
import numbers
import os
from dataclasses import dataclass, replace

import numpy as np
from mpi4py import MPI

from ..constants import BATCH_SIZE, KEEP_MEMORY_SHARE, PARAMETER_COPIES, PRECISIONS
from ..errors import InputError, ParameterError, agreed, check_parameters, everywhere
from ..io.data import SPARSE_MAX_DENSITY, Preprocessing, Targets, targets_from_training
from ..io.model_file import REGRESSION, Model
from ..io.shards import share_of, stored_entries
from ..model import memory as model_memory
from ..model.activations import Activation
from ..model.gauss_newton import JACOBIAN_MODES, stored_bytes
from ..model.losses import make_loss
from ..model.network import Network
from ..model.objective import Objective
from ..parallel.gather_scatter import gather_input_groups, gather_parameters, gather_vector
from ..parallel.groups import Groups
from ..parallel.layout import Layout, contiguous_share
from ..planning.machine import DEFAULT as DEFAULT_MACHINE
from ..planning.machine import Machine
from ..planning.memory import RankMemory
from ..planning.planner import ASSIGNMENTS, choose, layout_for
from ..planning.volume import Counts
from ..solvers.newton import NewtonOptions

# The paper's objective, one flag away (`--paper`) for reproducing its runs. The
# defaults below fit real data better (bench/studies/choose_defaults.py, docs/benchmarks.md
# "Default settings"): C = 0.01 was meant for 60,000 images and over-regularizes smaller sets,
# and the squared loss trails cross-entropy on tabular sets.
PAPER_OBJECTIVE = {"loss": "squared", "C": 0.01}
# ... and its precision. Without --paper runs are in float32: half the seconds of float64
# per iteration at the same accuracy on every set of bench/time_to_accuracy.py, for
# Newton and for Adam (docs/benchmarks.md, "Precision"), while f, dot products and
# CG's scalars are summed in float64 either way.
PAPER_DTYPE = "float64"


@dataclass
class ModelConfig:
    """The network, its objective and how it is laid out over the ranks."""

    hidden: tuple = (300, 300)  # () is a linear model: one weight layer
    activation: str = "relu"
    loss: str = "softmax"
    C: object = 1.0  # f = theta'theta / (2 C l) + mean loss; "auto": chosen (app.regularization)
    partitions: object = None  # P_0..P_L of one copy, or None: the planner's choice
    replicas: object = None  # copies of the layout, each on a share of the data; None: planner's
    machine: object = None  # a machine file for the planner (`dnewton calibrate`), or None
    assignment: object = None  # blocks -> ranks with partitions: balanced, aligned; None: cheaper
    feature_scale: float = 1.0
    center: bool = False
    standardize: bool = False  # divide by the training std after centring (implies center)
    batch_size: int = BATCH_SIZE
    pipeline: int = 1  # batches in flight in a pass over all instances (1: no pipeline)
    dtype: str = "float32"  # precision of parameters, data and passes: float32 or float64
    jacobian: object = None  # the Gauss-Newton product's J: stored, recomputed; None: planner's
    # -C auto: the grid of C, the held-out share of the training set, and the
    # iterations its search may add to the run's, as a fraction of them
    C_grid: tuple = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    holdout: float = 0.2
    search_budget: float = 0.3

    RULES = (
        ("hidden", lambda v: all(int(h) >= 1 for h in v),
         "needs positive layer widths, e.g. 300,300"),
        ("replicas", lambda v: v is None or (isinstance(v, numbers.Integral) and v >= 1),
         "must be >= 1"),
        ("C", lambda v: (isinstance(v, str) and v == "auto")
         or (isinstance(v, numbers.Real) and v > 0 and math.isfinite(v)),
         "must be a positive number or auto"),
        ("C_grid", lambda v: len(v) > 0 and all(c > 0 and math.isfinite(c) for c in v),
         "must be positive numbers, e.g. 0.01,0.1,1"),
        ("holdout", lambda v: 0 < v < 1, "must be a fraction between 0 and 1"),
        ("search_budget", lambda v: v > 0 and math.isfinite(v), "must be > 0"),
        ("feature_scale", lambda v: v > 0, "must be positive"),
        ("batch_size", lambda v: v >= 1, "must be >= 1"),
        ("pipeline", lambda v: v >= 1, "must be >= 1"),
        ("dtype", lambda v: v in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}"),
        ("jacobian", lambda v: v is None or v in JACOBIAN_MODES,
         f"must be one of {', '.join(JACOBIAN_MODES)}"),
        ("assignment", lambda v: v in (None, *ASSIGNMENTS),
         f"must be one of {', '.join(ASSIGNMENTS)}"),
    )

    def check(self):
        """Raise ParameterError naming the first nonsensical value."""
        check_parameters(self, self.RULES)
        Activation.hidden(self.activation)
        make_loss(self.loss)


class Problem:
    """This rank's share of a training problem. Collective to build; call `close`."""

    def __init__(self, world, layout, groups, network, objective, test, classes, prep,
                 config, plan=None, validation=None):
        self.world = world
        self.layout = layout
        self.groups = groups
        self.network = network
        self.objective = objective
        self.test = test
        self.classes = classes
        self.preprocessing = prep
        self.config = config
        self.plan = plan  # the planner's ranked predictions when it chose the layout
        self.validation = validation  # early stopping's split, partitioned like `test`

    @classmethod
    def build(cls, comm, train_raw, test_raw, config, n_subset=None, validation_raw=None,
              available=None, n_sample=None):
        """Collective over `comm`; every rank passes the same raw data and settings
        (a `io.data.RawData` or a `io.shards.ShardedData`, read here by shares).

        Without ``config.partitions`` the planner chooses the layout for the
        Gauss-Newton subset size `n_subset` (default: 5% of the instances), and the
        replicas and Jacobian mode the config leaves open (None); with them, those
        default to 1 and stored. The problem's ``config`` has them settled.
        `validation_raw` (early stopping's split) is partitioned like the test set.
        With `available` (bytes a node has), a data share that would not fit is
        refused on every rank before it is read.
        """
        world, groups, plan = comm.Dup(), None, None
        try:
            with agreed(world):
                config.check()
                classes = targets_from_training(train_raw.y)
                if isinstance(classes, Targets) and config.loss != "squared":
                    raise ParameterError(f"{{loss}} {config.loss} needs class labels; real "
                                         "targets take the squared loss")
                widths = [train_raw.n_features, *map(int, config.hidden), len(classes)]
                if config.replicas is not None:  # refused before the planner looks
                    _replica_size(world.size, config.replicas, train_raw.n_instances)
            if config.partitions is None:
                plan = _plan(world, widths, train_raw.n_instances, n_subset, config, n_sample)
                choice = plan[0].choice
                config = replace(config, replicas=choice.replicas, jacobian=choice.jacobian)
            else:
                config = replace(config, replicas=config.replicas or 1,
                                 jacobian=config.jacobian or "stored")
            with agreed(world):
                n_ranks = _replica_size(world.size, config.replicas, train_raw.n_instances)
                if plan is not None:
                    layout = Layout(widths, choice.partitions, n_ranks, choice.assignment)
                elif config.assignment is not None:
                    layout = Layout(widths, config.partitions, n_ranks, config.assignment)
                    if len(set(layout.owner.tolist())) < n_ranks:
                        raise ParameterError(
                            f"{{assignment}} {config.assignment} leaves a rank without a "
                            f"block with {{partitions}} "
                            f"{','.join(map(str, config.partitions))}: use balanced")
                else:  # checked here on every rank; the assignment comes next
                    layout = Layout(widths, config.partitions, n_ranks)
                if test_raw is not None and test_raw.n_features > train_raw.n_features:
                    raise InputError(
                        f"{test_raw.source}: {test_raw.n_features} features, more than the "
                        f"{train_raw.n_features} of the training set"
                    )
            if plan is None and config.assignment is None:
                layout = planned_layout(world, widths, n_ranks, config.partitions,
                                        config.machine)
            groups = Groups(world, layout, config.replicas)
            prep = Preprocessing(config.feature_scale, config.center,
                                 standardize=config.standardize)
            with agreed(world):
                share = _share(train_raw.n_instances, groups)
            keep_sparse = (not prep.centers and stored_entries(train_raw) is not None
                           and train_raw.density() <= SPARSE_MAX_DENSITY)
            _check_data_memory(world, layout, groups, share.stop - share.start,
                               np.dtype(config.dtype).itemsize,
                               train_raw.density() if keep_sparse else None, available)
            train = share_of(train_raw, groups, layout, classes, prep, fit=True,
                             dtype=config.dtype, share=share)
            test, validation = (
                None if raw is None else
                share_of(raw, groups, layout, classes, prep, dtype=config.dtype,
                         share=_share(raw.n_instances, groups))
                for raw in (test_raw, validation_raw))
        except BaseException:
            if groups is not None:
                groups.free()
            world.Free()
            raise
        network = Network(layout, groups, Activation.hidden(config.activation), config.dtype)
        objective = Objective(network, train, make_loss(config.loss), config.C,
                              config.batch_size, pipeline=config.pipeline,
                              jacobian=config.jacobian)
        return cls(world, layout, groups, network, objective, test, classes, prep, config,
                   plan, validation)

    def memory_per_rank(self):
        """Collective: the largest bytes on a rank of its training data share (feature
        blocks and labels) and of its parameters' working copies."""
        data = self.objective.data
        labels = data.labels.nbytes if data.labels is not None else 0
        need = np.array([float(data.stored_bytes() + labels),
                         float(self._parameter_bytes())])
        self.world.Allreduce(MPI.IN_PLACE, need, op=MPI.MAX)
        return int(need[0]), int(need[1])

    def _parameter_bytes(self):
        return model_memory.parameter_bytes(self.network.n_params, self.network.dtype.itemsize)

    def check_parameter_memory(self, available):
        """Collective: refuse (on every rank) a network whose parameter vectors would
        not fit in `available` bytes per node (None: unknown, no check), before any
        is allocated. A solver keeps about `PARAMETER_COPIES` of them at once."""
        need = np.array([float(self._parameter_bytes())])
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED)
        node.Allreduce(MPI.IN_PLACE, need)
        node.Free()
        self.world.Allreduce(MPI.IN_PLACE, need, op=MPI.MAX)
        if available is not None and need[0] > available:
            total = sum(self.layout.parameters(r).size for r in range(self.layout.n_ranks))
            raise everywhere(ParameterError(
                f"the network's {total:,} parameters need about {_size(need[0])} on a node "
                f"({PARAMETER_COPIES} working copies of each rank's share), more than the "
                f"{_size(available)} available; use narrower {{hidden}} layers, more ranks "
                "or more nodes"
            ))

    def check_memory(self, n_subset, available):
        """Collective: plan the memory of the Gauss-Newton data and the kept passes.

        Refuses (on every rank) when the ranks sharing a node would need more than
        `available` bytes (None: unknown, no check) for the Gauss-Newton data of
        |S| = n_subset; keeps forward passes for reuse only while both take at most
        `KEEP_MEMORY_SHARE` of it (`objective.keep`). Returns the largest per-rank
        bytes of the Gauss-Newton data, of the kept passes (0 when not kept) and of
        the Gauss-Newton data in the other Jacobian mode (for comparison).
        """
        inputs = self.objective.data.input_bytes_per_instance()
        # A copy of the layout (--replicas) holds the members of S in its share of
        # the instances: |S| / R of them on average, all of S at worst.
        n_subset = min(n_subset, self.objective.n_local)
        other = "recomputed" if self.config.jacobian == "stored" else "stored"
        need = np.array([stored_bytes(self.network, n_subset, self.config.jacobian, inputs),
                         self.objective.kept_bytes(),
                         stored_bytes(self.network, n_subset, other, inputs)], dtype=np.float64)
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED)
        node_need = np.empty_like(need)
        node.Allreduce(need, node_need)
        node.Free()
        with agreed(self.world):
            if available is not None and node_need[0] > available:
                raise ParameterError(
                    f"the Gauss-Newton subset of {n_subset} instances needs about "
                    f"{node_need[0] / 2**20:.0f} MiB on this node ({need[0] / 2**20:.1f} MiB "
                    f"on this rank), more than the {available / 2**20:.0f} MiB available; "
                    "use a smaller {gn_size}/{gn_ratio}, more ranks or more nodes"
                )
        # The same decision on every rank: it is taken from the node sums' maximum.
        self.world.Allreduce(MPI.IN_PLACE, node_need, op=MPI.MAX)
        self.objective.keep = (available is None
                               or node_need[:2].sum() <= KEEP_MEMORY_SHARE * available)
        self.world.Allreduce(MPI.IN_PLACE, need, op=MPI.MAX)
        return int(need[0]), int(need[1]) if self.objective.keep else 0, int(need[2])

    @property
    def rank(self):
        """This rank's place in its copy of the layout (its blocks: `layout.blocks_of`)."""
        return self.groups.rank

    def gather_model(self, theta):
        """Collective: the dense `io.model_file.Model` of `theta` on rank 0, None on
        the other ranks of the first copy (every copy gathers its own alike)."""
        comm, layout, prep = self.groups.comm, self.layout, self.preprocessing
        dense = gather_parameters(layout, comm, theta)
        mean = gather_input_groups(layout, comm, prep.means) if prep.centers else None
        std = gather_input_groups(layout, comm, prep.stds) if prep.standardize else None
        if comm.rank != 0:
            return None
        activation, loss = self.config.activation, self.config.loss
        if isinstance(self.classes, Targets):  # a regressor has no classes
            return Model(layout.widths, activation, loss, prep.scale, mean, None, *dense, std,
                         task=REGRESSION)
        return Model(layout.widths, activation, loss, prep.scale, mean, self.classes.labels,
                     *dense, std)

    def gather_vector(self, vec):
        """Collective: the dense form of a parameter-shaped vector on rank 0, as
        `gather_model` gathers the parameters."""
        return gather_vector(self.layout, self.groups.comm, vec)

    def test_accuracy(self):
        """The test-accuracy callback (collective), or None without a test set."""
        return self._accuracy(self.test)

    def validation_accuracy(self):
        """The validation-accuracy callback (collective), or None without early stopping."""
        return self._accuracy(self.validation)

    def _accuracy(self, data):
        if data is None:
            return None
        return lambda theta: self.objective.accuracy(theta, data)

    def set_C(self, C):
        """Make C the objective's (every rank alike): -C auto fits one problem at
        several C in turn."""
        self.config = replace(self.config, C=C)
        self.objective.C = C
        self.objective.regularization = 1.0 / (C * self.objective.n_instances)

    def close(self):
        self.groups.free()
        self.world.Free()


def _plan(world, widths, n_instances, n_subset, config, n_sample=None):
    """Collective: the planner's ranked layouts for this run on all of `world`'s ranks,
    restricted to the configured replicas, Jacobian mode and assignment: the first
    (the choice) and the runner-up the start-up line names. Rank 0 plans (and reads
    the machine file) and sends the answer to the others; an error is every rank's.
    With `n_sample` (stochastic Newton's fixed sample size) an iteration's passes are
    over that many instances, and one more forward pass (the next sample's f)."""
    plan = None
    with agreed(world):
        if world.rank == 0:
            machine = Machine.load(config.machine) if config.machine else DEFAULT_MACHINE
            if n_subset is None:
                n_subset = NewtonOptions().subset_size(n_instances)
            counts = None
            if n_sample is not None:
                n_instances, counts = n_sample, Counts(trials=2)
            plan = choose(widths, n_instances, n_subset, world.size, machine, counts=counts,
                          replicas=config.replicas, jacobian=config.jacobian,
                          assignment=config.assignment,
                          itemsize=np.dtype(config.dtype).itemsize, loss=config.loss,
                          batch_size=config.batch_size, top=1)
    return world.bcast(plan, root=0)


def planned_layout(comm, widths, n_ranks, partitions=None, machine=None):
    """Collective: the planner's layout of one copy of `n_ranks` ranks where no
    training run is known (`planning.planner.layout_for`: the assignment of
    `partitions`, or without them the whole layout), on `machine` (a machine file,
    or None: the default). Rank 0 plans and sends its choice; an error is every
    rank's."""
    choice = None
    with agreed(comm):
        if comm.rank == 0:
            loaded = Machine.load(machine) if machine else DEFAULT_MACHINE
            layout = layout_for(widths, n_ranks, partitions, loaded)
            choice = (layout.partitions, layout.assignment)
    partitions, assignment = comm.bcast(choice, root=0)
    return Layout(widths, partitions, n_ranks, assignment)


def _replica_size(n_ranks, replicas, n_instances):
    """Ranks per replica (copy of the layout), refusing a split that cannot be made."""
    if replicas > n_ranks or n_ranks % replicas:
        raise ParameterError(f"{{replicas}} {replicas} does not divide the {n_ranks} rank(s) "
                             "into copies of equal size")
    if replicas > n_instances:
        raise ParameterError(f"{{replicas}} {replicas} exceeds the {n_instances} training "
                             "instances: every copy needs some")
    return n_ranks // replicas


def _check_data_memory(world, layout, groups, n_rows, itemsize, density, available):
    """Collective: refuse (on every rank) data shares that the ranks of a node
    could not hold in `available` bytes (None: no check), before any is read."""
    need = np.array([float(RankMemory(layout).data_bytes(groups.rank, n_rows, itemsize,
                                                         density))])
    node_need = np.empty_like(need)
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    node.Allreduce(need, node_need)
    node.Free()
    world.Allreduce(MPI.IN_PLACE, node_need, op=MPI.MAX)
    world.Allreduce(MPI.IN_PLACE, need, op=MPI.MAX)
    if available is not None and node_need[0] > available:
        raise everywhere(ParameterError(
            f"the training data need about {_size(node_need[0])} on a node (up to "
            f"{_size(need[0])} per rank: its copy's instances in its feature columns), more "
            f"than the {_size(available)} available; use more ranks or nodes (with "
            "{replicas} each copy holds fewer instances)"))


def _share(n_instances, groups):
    """This rank's replica's contiguous share of `n_instances`."""
    return contiguous_share(n_instances, groups.n_replicas, groups.replica)


def _size(nbytes):
    """Bytes in the unit that reads best: GiB, MiB or KiB."""
    for unit, power in (("GiB", 30), ("MiB", 20)):
        if nbytes >= 2**power:
            return f"{nbytes / 2**power:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def available_memory():
    """Bytes of memory available to this node's ranks, or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
