"""Numbers the whole package shares, named once.

The random streams: every random choice of a run comes from one of a few
independent streams derived from the user's seed, each keyed by a `Stream`
member (and, for the initial weights, by layer and row). Every rank derives the
same stream for the same key, so nothing random is ever sent between ranks, and
a new stream must take a new key, never reuse one.
"""

from enum import Enum, IntEnum

import numpy as np

# Instances per forward/backward batch: bounds the memory of a pass over the
# data (activations are batch x width) without making the GEMMs thin.
BATCH_SIZE = 4096

# The forward passes of the last points evaluated are kept for reuse (the
# gradient, the Gauss-Newton rows) while, with the Gauss-Newton data, they take
# at most this share of the memory a node has available.
KEEP_MEMORY_SHARE = 0.5

# With --checkpoint and no --checkpoint-every, a checkpoint every this many
# seconds of training (and at the end): often enough that a killed job loses
# little, seldom enough that writing costs little.
CHECKPOINT_INTERVAL = 300.0

# Parameter-shaped vectors a solver holds at once (theta, the gradient, CG's
# five, a trial point, the direction, spares): the memory check's multiplier.
PARAMETER_COPIES = 12

# The precisions a network can be trained in (`--dtype`).
PRECISIONS = ("float64", "float32")

# Bytes of a float64: what f's sums, J v and B are in either precision.
FLOAT64 = 8

# --standardize leaves a feature unscaled (divides by 1) when its training standard
# deviation is at most this fraction of the largest |value| in its column (0 for an
# all-zero column): a constant column's computed std is rounding noise, and
# dividing by it would blow that noise up to order 1.
CONSTANT_FEATURE_RTOL = 1e-10

# A resumed run recomputes f at the checkpoint's parameters; another layout or
# batch size changes it by rounding only (per precision), other data for real.
RESUME_F_RTOL = {"float64": 1e-8, "float32": 1e-4}

# ceil(q * blocks) with q * blocks within this of a whole number taken as that
# number, so q = 0.7 of 10 blocks is 7 blocks, not 8 through rounding.
FRACTION_SLACK = 1e-9


class Name(str, Enum):
    """A string enum that prints as its value (the standard StrEnum needs Python 3.11)."""

    def __str__(self):
        return self.value


class Stream(IntEnum):
    """Keys of the independent random streams drawn from the user's seed."""

    INITIAL_WEIGHTS = 1  # one stream per (layer, row) of W, so any layout draws alike
    GAUSS_NEWTON_SUBSETS = 2  # the subset S of every Newton iteration
    MINIBATCHES = 3  # the mini-batch order of every SGD or Adam epoch


def random_stream(seed, stream, *keys):
    """The generator of `stream` (a `Stream`) for `seed`, refined by integer `keys`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(stream), *keys)))
