"""Hidden-layer activations, by name, as the kernel codes that compute them.

The output layer is always linear (``identity``); the loss gives it its meaning.
"""

from . import _kernels
from .errors import InputError

ACTIVATIONS = {
    "relu": _kernels.RELU,
    "sigmoid": _kernels.SIGMOID,
    "tanh": _kernels.TANH,
}


def activation_code(name):
    """Kernel code of the activation called `name`."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise InputError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
