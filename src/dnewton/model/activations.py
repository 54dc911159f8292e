"""Hidden-layer activations, as the kernel codes that compute them.

The codes are defined once, in ``csrc/dn_loops.h``; the kernel module exposes
them and `Activation` gives them names. The output layer is always linear
(``identity``); the loss gives it its meaning.
"""

from enum import IntEnum

from .. import _kernels
from ..errors import ParameterError


class Activation(IntEnum):
    """An activation function sigma, valued as its kernel code."""

    RELU = _kernels.RELU
    SIGMOID = _kernels.SIGMOID
    TANH = _kernels.TANH
    IDENTITY = _kernels.IDENTITY

    @classmethod
    def hidden(cls, name):
        """The hidden activation called `name` ("relu", "sigmoid" or "tanh")."""
        if name not in HIDDEN_ACTIVATIONS:
            raise ParameterError(
                f"{{activation}} {name!r} is unknown; choose one of "
                f"{', '.join(HIDDEN_ACTIVATIONS)}"
            )
        return cls[name.upper()]


# The names a user may choose for the hidden layers.
HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh")
