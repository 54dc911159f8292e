"""From raw data and settings to a trained network on every rank.

`Problem.build` is where the pieces meet: the layout, its communication groups,
this rank's share of the data and of the network, and the objective. The command
line and the Python API both go through it.
"""

import os
from dataclasses import dataclass

from mpi4py import MPI

from .activations import activation_code
from .communication import Groups
from .data import Classes, Preprocessing, partition
from .errors import InputError, agreed
from .gauss_newton import stored_bytes
from .layout import Layout
from .losses import make_loss
from .network import Network
from .newton import newton
from .objective import Objective
from .sgd import sgd


@dataclass
class ModelConfig:
    """The network and its data handling (the optimizer's: `NewtonOptions`, `SGDOptions`)."""

    hidden: tuple = (300, 300)  # () is a linear model: one weight layer
    activation: str = "relu"
    loss: str = "squared"
    partitions: object = None  # P_0..P_L, or None for `Layout.default`
    feature_scale: float = 1.0
    center: bool = False
    batch_size: int = 4096

    def check(self):
        if any(int(h) < 1 for h in self.hidden):
            raise InputError("--hidden needs positive layer widths, e.g. 300,300")
        if not self.feature_scale > 0:
            raise InputError("--feature-scale must be positive")
        if self.batch_size < 1:
            raise InputError("--batch-size must be >= 1")
        activation_code(self.activation)
        make_loss(self.loss)


class Problem:
    """This rank's share of a training problem. Collective to build; call `close`."""

    def __init__(self, world, layout, groups, network, objective, test, classes, prep,
                 config):
        self.world = world
        self.layout = layout
        self.groups = groups
        self.network = network
        self.objective = objective
        self.test = test
        self.classes = classes
        self.preprocessing = prep
        self.config = config

    @classmethod
    def build(cls, world, train_raw, test_raw, config, C):
        """Collective over `world`; every rank passes the same raw data and settings."""
        with agreed(world):
            config.check()
            classes = Classes.from_training(train_raw.y)
            widths = [train_raw.n_features, *map(int, config.hidden), len(classes)]
            if config.partitions is None:
                layout = Layout.default(widths, world.size)
            else:
                layout = Layout(widths, config.partitions, world.size)
            if test_raw is not None and test_raw.n_features > train_raw.n_features:
                raise InputError(
                    f"{test_raw.source}: {test_raw.n_features} features, more than the "
                    f"{train_raw.n_features} of the training set"
                )
        groups = Groups(world, layout)
        prep = Preprocessing(config.feature_scale, config.center)
        with agreed(world):
            train = partition(train_raw, layout, world.rank, classes, prep, fit=True)
            test = None
            if test_raw is not None:
                test = partition(test_raw, layout, world.rank, classes, prep)
        network = Network(layout, groups, activation_code(config.activation))
        objective = Objective(network, train, make_loss(config.loss), C, config.batch_size)
        return cls(world, layout, groups, network, objective, test, classes, prep, config)

    def check_memory(self, n_subset):
        """Collective: bytes per rank the Gauss-Newton data of |S| = n_subset needs.

        Refuses (on every rank) when the ranks sharing a node would need more than
        the node's available memory, or than ``DNEWTON_MEMORY_LIMIT`` bytes if set.
        Returns the largest per-rank figure.
        """
        need = stored_bytes(self.network, n_subset)
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED)
        node_need = node.allreduce(need)
        node.Free()
        available = available_memory()
        with agreed(self.world):
            if available is not None and node_need > available:
                raise InputError(
                    f"the Gauss-Newton subset of {n_subset} instances needs about "
                    f"{node_need / 2**20:.0f} MiB on this node ({need / 2**20:.1f} MiB on "
                    f"this rank), more than the {available / 2**20:.0f} MiB available; use "
                    "a smaller --gn-size/--gn-ratio, more ranks or more nodes"
                )
        return self.world.allreduce(need, op=MPI.MAX)

    def fit(self, options, monitor=None, theta=None, resume=None, checkpoint=None):
        """Run Newton from `theta` (default: the seeded initialisation) or `resume`.

        `resume` (a `newton.NewtonState`) and `checkpoint` are passed on to `newton`.
        """
        if theta is None and resume is None:
            theta = self.network.initial_parameters(options.seed)
        return newton(self.objective, theta, options, monitor, self._test_accuracy(), resume,
                      checkpoint)

    def fit_sgd(self, options, monitor=None, theta=None):
        """Run mini-batch SGD (`sgd.SGDOptions`) from `theta` or the seeded initialisation."""
        if theta is None:
            theta = self.network.initial_parameters(options.seed)
        return sgd(self.objective, theta, options, monitor, self._test_accuracy())

    def _test_accuracy(self):
        """The test-accuracy callback of the optimizers, or None without a test set."""
        if self.test is None:
            return None
        return lambda theta: self.objective.accuracy(theta, self.test)

    def close(self):
        self.groups.free()


def available_memory():
    """Bytes of memory available to this node's ranks, or None if unknown."""
    limit = os.environ.get("DNEWTON_MEMORY_LIMIT")
    if limit:
        return int(limit)
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
