"""Model files: a trained network in a portable form that any layout can load.

A model file is a NumPy ``.npz`` archive (no pickles) holding, for m = 1..L, the
dense ``W{m}`` (n_{m-1}, n_m) and ``b{m}`` (n_m,) gathered from the blocks, and
what prediction needs besides: ``widths``, ``activation``, ``loss``,
``feature_scale``, ``center`` with the training ``mean`` of every feature
(zeros without centring), with ``--standardize`` the ``std`` of every feature
(the divisor applied after centring, 1 for a constant feature), the class
labels ``classes`` in output order, the precision ``dtype`` of the weights
(float64 or float32; files without it are float64), and ``format`` /
``version``. A classifier standardized model is written as version 2 (so a
dnewton that predates ``std`` refuses it rather than predicting without it); any
other classifier as version 1.

A regressor (``task`` "regression", the squared loss on real targets) is written
as version 3, so that a dnewton that predates regressors refuses it rather than
taking its outputs for classes. It holds no ``classes``; instead
``normalize_y`` with the ``target_mean`` and ``target_std`` of each of the n_L
targets (predictions are ``outputs * target_std + target_mean``; 0 and 1
without ``normalize_y``), and ``standardize`` with ``std`` (ones without it).

All three versions are read. Nothing in a model depends on the layout that
trained it; `Model.local_parameters` cuts it into the blocks of any layout.

Only rank 0 touches files: it writes what the ranks gather to it, and it reads
and broadcasts, so a file must be visible to rank 0 only. Writes are atomic (a
temporary file in the same folder, fsync, rename): a reader finds the previous
file or the new one, whole.
"""

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import PRECISIONS
from ..errors import InputError, ParameterError, agreed
from ..model.activations import HIDDEN_ACTIVATIONS
from ..model.losses import LOSSES
from ..parallel.gather_scatter import broadcast_arrays
from .data import Preprocessing

FORMAT = "dnewton-model"
VERSION = 1  # the version of a classifier without `std`
STD_VERSION = 2  # the version of a standardized classifier (it has `std`)
REGRESSION_VERSION = 3  # the version of a regressor (`task`, target scaling)
VERSIONS = (VERSION, STD_VERSION, REGRESSION_VERSION)
CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass
class Model:
    """A network in dense, layout-independent form."""

    widths: tuple  # n_0 .. n_L
    activation: str
    loss: str
    feature_scale: float
    mean: object  # (n_0,) training means subtracted after scaling, or None
    classes: object  # (n_L,) class labels, in the order of the outputs; None: a regressor
    weights: list  # W^m, (n_{m-1}, n_m), m = 1..L
    biases: list  # b^m, (n_m,)
    std: object = None  # (n_0,) divisors after centring (--standardize), or None
    task: str = CLASSIFICATION  # or REGRESSION: the outputs are real targets
    target_mean: object = None  # regressor: (n_L,) added to the scaled outputs, or None
    target_std: object = None  # regressor: (n_L,) the outputs' scale (normalize_y), or None

    @property
    def regression(self):
        """Whether the outputs are real targets (a regressor), not class scores."""
        return self.task == REGRESSION

    def describe(self):
        """What the model is, in words: "a regressor of 1 target", "a classifier of 3 classes"."""
        k = self.widths[-1]
        if self.regression:
            return f"a regressor of {k} target{'s' * (k != 1)} ({self.loss} loss)"
        return f"a classifier of {k} classes ({self.loss} loss)"

    def predictions(self, outputs):
        """A regressor's predicted targets, (l, n_L), from its outputs z^L."""
        if self.target_std is None:
            return outputs
        return outputs * self.target_std + self.target_mean

    @property
    def dtype(self):
        """The precision the network was trained in and predicts in: "float64" or "float32"."""
        return self.weights[0].dtype.name

    def arrays(self):
        """The model as the named arrays of its file."""
        arrays = {
            "format": np.array(FORMAT),
            "widths": np.array(self.widths, dtype=np.int64),
            "activation": np.array(self.activation),
            "loss": np.array(self.loss),
            "feature_scale": np.array(float(self.feature_scale)),
            "center": np.array(self.mean is not None),
            "mean": np.zeros(self.widths[0]) if self.mean is None else self.mean,
            "dtype": np.array(self.dtype),
        }
        if self.regression:
            k = self.widths[-1]
            arrays.update({
                "version": np.array(REGRESSION_VERSION),
                "task": np.array(REGRESSION),
                "standardize": np.array(self.std is not None),
                "std": np.ones(self.widths[0]) if self.std is None else self.std,
                "normalize_y": np.array(self.target_std is not None),
                "target_mean": np.zeros(k) if self.target_std is None else self.target_mean,
                "target_std": np.ones(k) if self.target_std is None else self.target_std,
            })
        else:
            arrays["version"] = np.array(VERSION if self.std is None else STD_VERSION)
            arrays["classes"] = np.asarray(self.classes)
            if self.std is not None:
                arrays["std"] = self.std
        for m, (W, b) in enumerate(zip(self.weights, self.biases), start=1):
            arrays[f"W{m}"], arrays[f"b{m}"] = W, b
        return arrays

    @classmethod
    def from_arrays(cls, arrays, source):
        """Check and unpack the arrays of a model file; InputError names `source`."""

        def bad(problem):
            return InputError(f"{source}: {problem}")

        try:
            return cls._unpack(arrays, bad)
        except (TypeError, ValueError, OverflowError, AttributeError, IndexError) as exc:
            # An array of another kind than the format's (text for numbers, a list
            # for a number): a file damaged or made by hand.
            raise bad(f"a damaged model file ({exc})") from None

    @classmethod
    def _unpack(cls, arrays, bad):
        if str(arrays.get("format", "")) != FORMAT:
            raise bad("not a dnewton model file")
        version = arrays.get("version", np.array(-1))
        version = int(version) if np.ndim(version) == 0 else -1
        if version not in VERSIONS:
            raise bad(f"model format version {arrays.get('version')}, this dnewton reads "
                      f"versions {', '.join(map(str, VERSIONS))}")
        regression = version == REGRESSION_VERSION
        try:
            if np.ndim(arrays["widths"]) != 1 or arrays["widths"].dtype.kind not in "iu":
                raise bad("the widths are not a list of whole numbers")
            widths = tuple(int(w) for w in arrays["widths"])
            L = len(widths) - 1
            weights = [arrays[f"W{m}"] for m in range(1, L + 1)]
            biases = [arrays[f"b{m}"] for m in range(1, L + 1)]
            activation, loss = str(arrays["activation"]), str(arrays["loss"])
            scale, center = float(arrays["feature_scale"]), bool(arrays["center"])
            mean = arrays["mean"]
            dtype = str(arrays.get("dtype", "float64"))
            if regression:
                if str(arrays["task"]) != REGRESSION:
                    raise bad(f"a version {version} model file whose task is not "
                              f"{REGRESSION!r}")
                classes = None
                standardize, normalize_y = bool(arrays["standardize"]), bool(arrays["normalize_y"])
                std = arrays["std"]
                target_mean, target_std = arrays["target_mean"], arrays["target_std"]
                targets = [target_mean, target_std]
            else:
                classes = arrays["classes"]
                standardize = version >= STD_VERSION
                std = arrays["std"] if standardize else None
                targets = []
        except KeyError as exc:
            raise bad(f"the model file lacks {exc}") from None
        numeric = [*weights, *biases, mean, *targets] + ([std] if std is not None else [])
        # Class labels are numbers or text (the estimator keeps scikit-learn's labels).
        text = classes is not None and classes.dtype.kind == "U"
        if any(np.asarray(a).dtype.kind not in "biuf" for a in numeric) or not (
                classes is None or text or classes.dtype.kind in "biuf"):
            raise bad("the model holds arrays that are not numbers")
        if not (np.isfinite(scale) and scale > 0) or not (
                classes is None or text or np.isfinite(classes).all()):
            raise bad("the feature scale or the class labels are not finite positive numbers")
        shapes_ok = (
            L >= 1 and min(widths) >= 1
            and all(W.shape == widths[m : m + 2] for m, W in enumerate(weights))
            and all(b.shape == (widths[m + 1],) for m, b in enumerate(biases))
            and mean.shape == (widths[0],)
            and (classes is None or classes.shape == (widths[-1],))
            and (std is None or std.shape == (widths[0],))
            and all(a.shape == (widths[-1],) for a in targets)
        )
        if not shapes_ok:
            raise bad(f"array shapes do not match the widths {widths}")
        if dtype not in PRECISIONS or any(a.dtype != dtype for a in (*weights, *biases)):
            raise bad(f"the weights are not all of the recorded precision {dtype!r}")
        if activation not in HIDDEN_ACTIVATIONS or loss not in LOSSES:
            raise bad(f"unknown activation {activation!r} or loss {loss!r}")
        if regression and loss != "squared":
            raise bad(f"a regressor with the {loss} loss (regressors have the squared loss)")
        if not all(np.isfinite(a).all() for a in (*weights, *biases, mean, *targets)):
            raise bad("the model holds values that are not finite")
        if std is not None and not (np.isfinite(std).all() and (std > 0).all()):
            raise bad("the feature standard deviations must be positive and finite")
        if regression and not (target_std > 0).all():
            raise bad("the target standard deviations must be positive")
        if standardize and not center:
            raise bad("a standardized model that is not centred")
        model = cls(widths, activation, loss, scale, mean if center else None,
                    classes, weights, biases, std if standardize else None)
        if regression:
            model.task = REGRESSION
            if normalize_y:
                model.target_mean, model.target_std = target_mean, target_std
        return model

    def local_parameters(self, layout, rank):
        """The parameter vector of `rank`'s blocks in `layout`."""
        return layout.parameters(rank).scatter(self.weights, self.biases, self.weights[0].dtype)

    def preprocessing(self, layout):
        """The training preprocessing, its means and stds cut into `layout`'s input groups."""

        def cut(values):
            if values is None:
                return {}
            return {a: values[layout.group(0, a)] for a in range(layout.partitions[0])}

        return Preprocessing(self.feature_scale, self.mean is not None, cut(self.mean),
                             self.std is not None, cut(self.std))


# -- files ------------------------------------------------------------------------


_KINDS = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a directory"}


def target(path):
    """Where a file written atomically at `path` goes: a symbolic link is written
    through (its target is replaced, the link kept), anything else in place."""
    return Path(os.path.realpath(path))


def check_writable(path, parameter):
    """Raise ParameterError (naming `parameter`) unless a file can be written
    atomically at `path`: checked before training, so that a run never ends unable
    to save what it trained, and never replaces what is not a regular file.

    A symbolic link is written through. An existing target that is not a regular
    file (a device such as /dev/full, a pipe, a directory) is refused: an atomic
    write renames a new file over the path and would replace it. The folder is
    probed by creating (and removing) a file in it.
    """
    real = target(path)
    if real.exists() and not real.is_file():
        mode = real.stat().st_mode
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise ParameterError(
            f"{{{parameter}}} {path}: is {kind}; dnewton writes its files atomically (a new "
            "file renamed over the path), so it writes only to a regular file or a new path"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=real.parent, prefix=f".{real.name}.", delete=True):
            pass
    except OSError as exc:
        raise ParameterError(
            f"{{{parameter}}} {path}: cannot write in {real.parent} ({exc.strerror or exc})"
        ) from None


def write_temporary(path, arrays):
    """Write `arrays` to a new temporary file next to `path`'s `target` and fsync it;
    returns it. Its name (``.NAME.XXXXXXXX.tmp``) is this writer's alone, so two
    runs writing one path never write one file; on failure (a full disk) it is
    removed."""
    real = target(path)
    fd, name = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove(name)
        raise
    return Path(name)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(name):
    try:
        os.unlink(name)
    except OSError:
        pass


def commit(temporary, path):
    """Rename `temporary` over `path`'s `target` (atomic) and make the rename durable;
    `temporary` is removed if the rename fails."""
    real = target(path)
    try:
        os.replace(temporary, real)
    except BaseException:
        _remove(temporary)
        raise
    folder = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def save_arrays(path, arrays, what):
    """Atomically write `arrays` as an ``.npz`` at `path`; InputError on failure."""
    try:
        commit(write_temporary(path, arrays), path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the {what} ({exc.strerror or exc})") from None


def read_arrays(path, what):
    """Every array of the ``.npz`` at `path`, read in full; InputError on failure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        # Our own file object: np.load leaves its own open when the file is no archive.
        with open(path, "rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with archive:
                return {key: archive[key] for key in archive.files}
    except Exception as exc:  # noqa: BLE001 -- damaged bytes raise anything from the zip
        # reader, zlib or NumPy's header parser (SyntaxError, tokenize's TokenError)
        raise InputError(f"{path}: not a readable {what} ({exc})") from None


def save_model(world, model, path):
    """Collective: rank 0 writes `model` (gathered to it; None elsewhere) to `path`."""
    with agreed(world):
        if world.rank == 0:
            save_arrays(path, model.arrays(), "model")


def read_arrays_everywhere(world, path, what):
    """Collective: the arrays of the ``.npz`` at `path`, read by rank 0, on every rank.

    A file rank 0 cannot read raises the same InputError on every rank.
    """
    arrays = None
    with agreed(world):
        if world.rank == 0:
            arrays = read_arrays(path, what)
    return broadcast_arrays(world, arrays)


def load_model(world, path):
    """Collective: the `Model` in file `path` (read by rank 0) on every rank."""
    arrays = read_arrays_everywhere(world, path, "model file")
    with agreed(world):
        model = Model.from_arrays(arrays, path)
    return model
