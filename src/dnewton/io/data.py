"""Data: reading LIBSVM files and embedded sets, preprocessing, and the
feature-wise partition (docs/design.md, "The partition").

Every rank reads the file (a cluster's shared file system serves that well) and
keeps only what its blocks need: the feature columns of the input groups a of its
layer-1 blocks (1, a, .), and the labels if it owns an output block. Sparse
(CSR) input stays sparse unless it is centred or denser than `SPARSE_MAX_DENSITY`
(docs/design.md, "Sparse inputs").
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _sparse as sparse
from ..constants import CONSTANT_FEATURE_RTOL
from ..errors import InputError
from . import libsvm

# Above this share of stored entries, CSR loses to the dense GEMM; below it, the
# CSR loops win (bench/bench_sparse.py times both). Sets the same decision on
# every rank, since it looks at the whole training matrix.
SPARSE_MAX_DENSITY = 0.1


@dataclass
class RawData:
    """A whole data set as read: ``X`` (l, n_features) CSR or dense, ``y`` (l,) labels
    (or (l, k) real targets, for regression: `Targets`; None for a set read without
    labels, to predict them)."""

    X: object
    y: np.ndarray
    source: str
    cut_from: int = 0  # the features the file had, when columns beyond n_0 were dropped

    @property
    def n_instances(self):
        return self.X.shape[0]

    @property
    def n_features(self):
        return self.X.shape[1]

    def density(self):
        """Stored entries over l n_0 (1 when dense)."""
        if not sparse.issparse(self.X):
            return 1.0
        return self.X.nnz / max(1, self.n_instances * self.n_features)


def _digits():
    """scikit-learn's 8x8 digits (1,797 images, pixels 0..16): every 4th image is test."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    test = np.arange(len(y)) % 4 == 0
    return (
        RawData(np.ascontiguousarray(X[~test], dtype=np.float64), y[~test], "digits"),
        RawData(np.ascontiguousarray(X[test], dtype=np.float64), y[test], "digits (test)"),
    )


# The data sets that ship inside the package (datasets/README.md: provenance).
EMBEDDED_DATA = Path(__file__).resolve().parents[1] / "datasets"


def _mnist_demo():
    """The MNIST subset shipped with the package: 2,000 train / 1,000 test, 784 pixels."""
    train = read_libsvm(EMBEDDED_DATA / "mnist-demo.svm.gz", 784)
    test = read_libsvm(EMBEDDED_DATA / "mnist-demo.t.svm.gz", 784)
    train.source, test.source = "mnist-demo", "mnist-demo (test)"
    return train, test


# name -> (description, loader returning (train, test))
DATASETS = {
    "digits": (
        "scikit-learn's handwritten digits: 1,347 train / 450 test, 64 features "
        "(0..16), 10 classes; use --feature-scale 16 --center (with --paper, C = 0.01, "
        "meant for far more instances, over-regularises it: say -C 0.1 there)",
        _digits,
    ),
    "mnist-demo": (
        "a 2,000 / 1,000 subset of MNIST shipped with dnewton: 784 pixels (0..255), "
        "10 classes; use --feature-scale 255 --center",
        _mnist_demo,
    ),
}


def read_libsvm(path, n_features=None, cut=False, limit=None, cache=None):
    """Read a LIBSVM file (1-based indices; .gz/.bz2 too); see `libsvm.load`."""
    X, y, n_read = libsvm.load(path, n_features, cut, limit, cache)
    return RawData(X, y, str(path), n_read if n_read > X.shape[1] else 0)


def _fit_columns(raw, n_features, cut, limit):
    """`raw` (dense) with `n_features` columns: zeros added, or more cut (with `cut`),
    else refused."""
    if n_features is None or raw.n_features == n_features:
        return raw
    if raw.n_features < n_features:
        X = np.zeros((raw.n_instances, n_features))
        X[:, : raw.n_features] = raw.X
        return RawData(X, raw.y, raw.source)
    if not cut:
        raise InputError.naming(f"{raw.source}: {raw.n_features} features, more than "
                                f"{limit or libsvm.default_limit(n_features)}")
    return RawData(np.ascontiguousarray(raw.X[:, :n_features]), raw.y, raw.source,
                   raw.n_features)


def read_npz(path, n_features=None, cut=False, limit=None, labelled=True):
    """A dense data set from a NumPy ``.npz`` holding ``X`` (l, n_0) and numeric ``y`` (l,);
    unless `labelled`, ``y`` may be absent (then `RawData.y` is None).

    With `n_features` (a test set read for a model, or ``{features}``) X must have
    exactly that many columns, or more with `cut` (the rest are dropped).
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ("X", "y") if key in archive.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 -- a damaged archive: zip, zlib or format errors
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    if "X" not in arrays or ("y" not in arrays and labelled):
        raise InputError(f"{path}: a data .npz needs arrays X (instances x features) and y")
    X = arrays["X"]
    y = arrays.get("y", np.zeros(len(X)) if X.ndim else np.zeros(0))
    problem = None
    if X.ndim != 2 or y.ndim != 1 or len(y) != len(X):
        problem = f"X is {X.shape} and y {y.shape}; need (l, n) and (l,)"
    elif len(y) == 0:
        problem = "the file holds no instances"
    elif X.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        problem = f"X ({X.dtype}) and y ({y.dtype}) must be numeric"
    elif not (np.isfinite(X).all() and np.isfinite(y).all()):
        problem = "X or y holds a value that is not finite"
    elif n_features is not None and X.shape[1] < n_features:
        problem = f"X has {X.shape[1]} features, the model {n_features}"
    if problem:
        raise InputError(f"{path}: {problem}")
    raw = RawData(np.ascontiguousarray(X, dtype=np.float64),
                  y.astype(np.float64) if "y" in arrays else None, str(path))
    return _fit_columns(raw, n_features, cut, limit)


def read_dataset(source, n_features=None, cut=False, limit=None, cache=None, labelled=True):
    """(train, test or None) from an embedded name, a ``.npz`` or a LIBSVM path.

    With `n_features`, the data get exactly that many features: a LIBSVM file's
    missing trailing columns are zeros; more columns are refused (InputError naming
    the file, and for LIBSVM the line and index) or, with `cut`, dropped (then
    `RawData.cut_from` says how many there were). `limit` is how the message names
    the source of `n_features` (a template: ``"{features} 64"``); the default is
    "the model's N features". `cache`: a folder for LIBSVM files' binary cache
    (`io.cache`), or None. Unless `labelled`, a ``.npz`` may hold no ``y`` (a LIBSVM
    line always starts with a label).
    """
    if str(source) in DATASETS:
        parts = DATASETS[str(source)][1]()
        return tuple(_fit_columns(raw, n_features, cut, limit) if raw is not None else None
                     for raw in parts)
    if str(source).endswith(".npz"):
        return read_npz(source, n_features, cut, limit, labelled), None
    return read_libsvm(source, n_features, cut, limit, cache), None


@dataclass
class Classes:
    """The class labels seen in training; the model's outputs in this order."""

    labels: np.ndarray

    @classmethod
    def from_training(cls, y):
        labels = np.unique(y)
        if len(labels) < 2:
            raise InputError(f"the training set has {len(labels)} class(es); need at least 2")
        return cls(labels)

    def __len__(self):
        return len(self.labels)

    def encode(self, y, source):
        """Class indices 0..n_L-1 of labels `y`; refuse labels never seen in training."""
        index = np.searchsorted(self.labels, y)
        index = np.minimum(index, len(self.labels) - 1)
        unseen = self.labels[index] != y
        if unseen.any():
            raise InputError(
                f"{source}: label {y[unseen][0]:g} (instance {np.flatnonzero(unseen)[0] + 1}) "
                f"was never seen in training (classes {', '.join(f'{c:g}' for c in self.labels)})"
            )
        return index.astype(np.int64)


@dataclass
class Targets:
    """Real targets, k per instance (regression): the model's k outputs fit them.

    Stands where `Classes` does, with its interface: ``labels`` names the outputs
    (0..k-1) and `encode` gives what the loss compares the outputs with, here the
    targets themselves, (n, k) float64. Only the squared loss takes them.
    """

    labels: np.ndarray

    @classmethod
    def from_training(cls, y):
        return cls(np.arange(y.shape[1], dtype=np.float64))

    def __len__(self):
        return len(self.labels)

    def encode(self, y, source):
        """The (n, k) float64 targets of `y`; refuse another number of targets."""
        if y.ndim != 2 or y.shape[1] != len(self.labels):
            raise InputError(f"{source}: targets of shape {y.shape}, the training set has "
                             f"{len(self.labels)} per instance")
        return np.asarray(y, dtype=np.float64)


def targets_from_training(y):
    """`Classes` of labels y (l,), or `Targets` of real targets y (l, k)."""
    return Targets.from_training(y) if np.ndim(y) == 2 else Classes.from_training(y)


@dataclass
class Preprocessing:
    """x -> (x / scale - mean) / std, per feature, mean and std taken on the scaled
    training set (docs/design.md, "Preprocessing").

    Without `center` and `standardize` the mean is 0; without `standardize` the std
    is 1. `standardize` implies centring. A constant feature keeps std 1.
    """

    scale: float = 1.0
    center: bool = False
    means: dict = field(default_factory=dict)  # input group a -> (|a|,) means
    standardize: bool = False
    stds: dict = field(default_factory=dict)  # input group a -> (|a|,) divisors (1: constant)

    @property
    def centers(self):
        """Whether a mean is subtracted: with `center` or `standardize`."""
        return self.center or self.standardize


def feature_std(block, mean):
    """Per-column divisors of a centred float64 block (l, k): the population std
    (ddof 0, so the result has std 1), or 1 where the column is constant (std at
    most `CONSTANT_FEATURE_RTOL` of the column's largest |value|, or 0)."""
    # Sums of squares and extremes make no (l, k) temporary, unlike block.std().
    return std_from_sums(np.einsum("ij,ij->j", block, block), len(block),
                         block.max(axis=0, initial=-np.inf),
                         block.min(axis=0, initial=np.inf), mean)


def std_from_sums(squares, n, high, low, mean):
    """`feature_std` from the columns' sums of squares, count `n`, largest and
    smallest centred values (k,) each: what ranks holding parts of the rows sum."""
    std = np.sqrt(squares / max(n, 1))
    size = np.maximum(np.abs(high + mean), np.abs(low + mean))
    return np.where(std > CONSTANT_FEATURE_RTOL * size, std, 1.0)


@dataclass
class PartitionedData:
    """This rank's share of a data set.

    ``features[a]`` is the (n, |a|) block of input group a for every group this
    rank's layer-1 blocks need: dense, or a `scipy.sparse.csr_matrix` with int32
    indices when ``sparse``; ``labels`` (n,) class indices (or (n, k) real targets)
    on output ranks, else None.
    The n rows are instances ``first .. first + n - 1`` of the set's ``n_total``
    (all of them, unless the ranks form copies of the layout: ``--replicas``).
    """

    n_instances: int
    features: dict
    labels: object
    sparse: bool = False
    first: int = 0
    n_total: int = None

    def __post_init__(self):
        if self.n_total is None:
            self.n_total = self.n_instances

    def local(self, index):
        """The rows of this share among the sorted global instance indices `index`,
        as local indices."""
        lo, hi = np.searchsorted(index, [self.first, self.first + self.n_instances])
        return index[lo:hi] - self.first

    def take(self, index):
        """The share of the sample `index` (sorted global instance indices): a
        `PartitionedData` whose instances are the sample's, numbered 0..len(index)-1
        in its order, this copy holding those of its own rows (copies of them)."""
        local = self.local(index)
        labels = None if self.labels is None else self.labels[local]
        features = self.rows(local)
        first = int(np.searchsorted(index, self.first))
        return PartitionedData(len(local), features, labels, self.sparse, first, len(index))

    def rows(self, index):
        """Feature blocks of the instances `index` (a slice or an index array)."""
        if self.sparse:
            return {a: csr_rows(X, index) for a, X in self.features.items()}
        return {a: np.ascontiguousarray(X[index]) for a, X in self.features.items()}

    def stored_bytes(self):
        """Bytes of this rank's feature blocks (CSR: values, int32 indices and indptr)."""
        if not self.sparse:
            return sum(X.nbytes for X in self.features.values())
        return sum(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
                   for X in self.features.values())

    def input_bytes_per_instance(self):
        """Mean bytes per instance of the sparse feature blocks' rows; None when dense."""
        if not self.sparse:
            return None
        return self.stored_bytes() / max(self.n_instances, 1)


def csr_rows(X, index):
    """Rows `index` of CSR `X`: a slice shares X's arrays; an index array copies its rows'
    entries only (memory in proportion to their non-zeros)."""
    if isinstance(index, slice) and index.step in (None, 1):
        start, stop, _ = index.indices(X.shape[0])
        stop = max(start, stop)
        first, last = X.indptr[start], X.indptr[stop]
        # Set the arrays rather than pass them to the constructor, which copies a
        # view of a much larger array (scipy's _prune_array): a batch is one.
        part = sparse.csr_matrix((stop - start, X.shape[1]), dtype=X.dtype)
        part.data, part.indices = X.data[first:last], X.indices[first:last]
        part.indptr = X.indptr[start:stop + 1] - first
        return part
    return _int32(X[index])


def _int32(X):
    """X (CSR) with int32 index arrays, the kernels' (`_kernels.csr_*`); refuse a block
    with 2^31 or more non-zeros, which int32 cannot index."""
    if X.nnz >= 2**31 or max(X.shape) >= 2**31:
        raise InputError(f"a feature block of {X.nnz:,} non-zeros is too large for int32 "
                         "indices; split the features into more groups (--partitions P_0,...)")
    X.indices = X.indices.astype(np.int32, copy=False)
    X.indptr = X.indptr.astype(np.int32, copy=False)
    return X


def partition(raw, layout, rank, classes, prep, fit=False, dtype=np.float64, share=None):
    """Keep the columns and labels `rank` needs; apply (and with `fit`, learn) `prep`.

    Parameters
    ----------
    raw : RawData
    layout : Layout
    rank : int
    classes : Classes, Targets or None
        None: no labels (data to predict).
    prep : Preprocessing
        With ``fit=True`` its means (and stds) are computed here from `raw` (the
        training set), for this rank's input groups only.
    dtype : numpy dtype
        Precision of the feature blocks (scaling, centring and standardizing are
        done in float64).
    share : slice or None
        The instances to keep (``--replicas``: this copy's rows), contiguous; None:
        all. `prep` is learnt from all of them either way.

    Sparse `raw.X` stays sparse (CSR blocks, memory in proportion to the non-zeros)
    unless `prep` centres (subtracting the means fills every entry; standardizing
    centres too) or more than `SPARSE_MAX_DENSITY` of its entries are stored: then
    the blocks are dense.
    """
    input_groups = sorted({blk.row for blk in layout.blocks_of(rank) if blk.layer == 1})
    keep_sparse = (sparse.issparse(raw.X) and not prep.centers
                   and raw.X.nnz <= SPARSE_MAX_DENSITY * np.prod(raw.X.shape))
    share = slice(0, raw.n_instances) if share is None else share
    X = raw.X.tocsr() if keep_sparse else raw.X  # column slices of CSR stay CSR
    if keep_sparse:
        X = csr_rows(X, share)
    features = {}
    for a in input_groups:
        cols = layout.group(0, a)
        if keep_sparse:
            block = sparse.csr_matrix(X[:, cols], dtype=np.float64)
            if prep.scale != 1.0:  # a new array: the slice may share raw.X's
                block.data = block.data / prep.scale
            features[a] = _int32(block.astype(dtype, copy=False))
            continue
        block = raw.X[:, cols]
        block = block.toarray() if hasattr(block, "toarray") else np.array(block)
        block = np.ascontiguousarray(block, dtype=np.float64)
        if prep.scale != 1.0:
            block /= prep.scale
        if prep.centers:
            if fit:
                prep.means[a] = block.mean(axis=0)
            block -= prep.means[a]
        if prep.standardize:
            if fit:
                prep.stds[a] = feature_std(block, prep.means[a])
            block /= prep.stds[a]
        features[a] = np.ascontiguousarray(block[share], dtype=dtype)
    owns_output = any(blk.layer == layout.n_layers for blk in layout.blocks_of(rank))
    labels = None
    if owns_output and classes is not None:
        labels = classes.encode(raw.y, raw.source)[share]
    n = share.stop - share.start
    return PartitionedData(n, features, labels, keep_sparse, first=share.start,
                           n_total=raw.n_instances)
