"""`NewtonClassifier`: the distributed Newton method behind scikit-learn's interface.

It runs in a plain single-process session and, unchanged, in a script started
with ``mpiexec -n K python script.py``: it works over ``MPI.COMM_WORLD``, so
every rank must call `fit` (and `predict`, ...) with the same data, and every
rank gets the same fitted model and the same predictions. Fitted, it holds the
dense weights only (no MPI state), so it pickles and clones like any estimator.
"""

import hashlib
import warnings

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..constants import BATCH_SIZE
from ..errors import InputError, everywhere
from ..io.data import RawData
from ..io.model_file import Model
from ..model.losses import make_loss
from ..solvers.newton import NewtonOptions
from ..solvers.records import RunStatus
from .monitor import Monitor
from .prediction import Predictor
from .problem import ModelConfig
from .training import train

# X of either precision is taken as it is (no float64 copy of float32 data); the
# network's own precision is `dtype`.
_INPUT_DTYPES = [np.float64, np.float32]


class NewtonClassifier(ClassifierMixin, BaseEstimator):
    """A fully connected network trained by subsampled Gauss-Newton (Newton-CG).

    Parameters mirror ``dnewton train``'s options (docs/design.md):

    Parameters
    ----------
    hidden : tuple of int, default (300, 300)
        Hidden layer widths; () is a linear model.
    activation : {"relu", "sigmoid", "tanh"}, default "relu"
    loss : {"softmax", "squared"}, default "softmax"
        Cross-entropy of the softmax of the outputs, or the paper's squared loss.
    C : float or "auto", default 1.0
        f = theta'theta / (2 C l) + mean loss. "auto" chooses it by held-out
        accuracy over a grid (as ``dnewton train -C auto``; `C_` is the choice).
        The paper's objective is ``loss="squared", C=0.01``.
    max_iter : int, default 100
        Newton iterations (the run stops earlier only if the line search fails).
    gn_ratio, gn_size, diagonal, sync_fraction, cg_max, xi, damping
        As ``--gn-ratio``, ``--gn-size``, ``--diagonal``, ``--sync-fraction``,
        ``--cg-max``, ``--xi`` and ``--lambda``.
    feature_scale : float, default 1.0
        Features are divided by it before training and prediction.
    center : bool, default False
        Subtract the training mean of every (scaled) feature.
    standardize : bool, default False
        Subtract the training mean and divide by the training standard deviation
        of every (scaled) feature, as ``--standardize`` (implies `center`;
        constant features are only centred).
    partitions : tuple of int or None, default None
        P_0..P_L, the block layout under MPI (of one copy, with `replicas`); None
        splits the widest layers.
    replicas : int or None, default None
        Copies of the layout the MPI ranks form, each fitting 1/replicas of the
        instances (as ``--replicas``); must divide the rank count. None: the
        planner's choice without `partitions`, else 1.
    batch_size : int, default 4096
    dtype : {"float64", "float32"}, default "float64"
        Precision of training and prediction (as ``--dtype``); X may be either.
    random_state : int, default 0
        Seed of the initial weights and of the Gauss-Newton subsets.
    verbose : bool, default False
        Rank 0 prints the progress of every iteration.

    Attributes
    ----------
    classes_ : (n_classes,) labels
    n_features_in_ : int
    coefs_ : list of (n_{m-1}, n_m) arrays, W^m
    intercepts_ : list of (n_m,) arrays, b^m
    mean_ : (n_features,) training means subtracted (after scaling), or None
    std_ : (n_features,) training standard deviations divided by (1 for constant
        features), or None without `standardize`
    objective_ : float, f at the end
    n_iter_ : int, Newton iterations run
    status_ : str, why the run stopped ("iteration_limit", "line_search_failed",
        "numerical_error": the last good iterate is kept and a ConvergenceWarning given)
    history_ : list of dict, one record per iteration, as in ``dnewton train --log``
    C_ : float, the C trained with (the choice with ``C="auto"``)

    Notes
    -----
    `predict_proba` for the softmax loss is the softmax of the outputs. For the
    squared loss the outputs estimate the class probabilities (least squares
    against one-hot labels) but may leave [0, 1]; `predict_proba` returns their
    Euclidean projection onto the probability simplex, which keeps their order,
    so ``argmax(predict_proba) == predict``.
    """

    def __init__(self, hidden=(300, 300), activation="relu", loss="softmax", C=1.0,
                 max_iter=100, gn_ratio=0.05, gn_size=None, diagonal=False,
                 sync_fraction=1.0, cg_max=250, xi=0.1, damping=1.0, feature_scale=1.0,
                 center=False, standardize=False, partitions=None, replicas=None,
                 batch_size=BATCH_SIZE,
                 dtype="float64", random_state=0, verbose=False):
        self.hidden = hidden
        self.activation = activation
        self.loss = loss
        self.C = C
        self.max_iter = max_iter
        self.gn_ratio = gn_ratio
        self.gn_size = gn_size
        self.diagonal = diagonal
        self.sync_fraction = sync_fraction
        self.cg_max = cg_max
        self.xi = xi
        self.damping = damping
        self.feature_scale = feature_scale
        self.center = center
        self.standardize = standardize
        self.partitions = partitions
        self.replicas = replicas
        self.batch_size = batch_size
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR input stays sparse on the ranks unless centred
        return tags

    def fit(self, X, y):
        """Train on X (l, n) dense or sparse and labels y (l,); collective under MPI."""
        from mpi4py import MPI

        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=_INPUT_DTYPES)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        world = MPI.COMM_WORLD
        _check_same_data(world, X, index)
        options = NewtonOptions(
            gn_ratio=self.gn_ratio, gn_size=self.gn_size, diagonal=self.diagonal,
            sync_fraction=self.sync_fraction, iterations=self.max_iter, cg_max=self.cg_max,
            xi=self.xi, damping=self.damping, seed=self.random_state,
        )
        config = ModelConfig(
            hidden=_widths(self.hidden), activation=self.activation, loss=self.loss, C=self.C,
            partitions=self.partitions, replicas=self.replicas,
            feature_scale=self.feature_scale,
            center=self.center, standardize=self.standardize, batch_size=self.batch_size,
            dtype=self.dtype,
        )
        result = train(RawData(X, index.astype(np.float64), "X"), None, config, options,
                       comm=world, return_model=True,
                       monitor=Monitor(world.rank, quiet=not self.verbose,
                                       iterations=self.max_iter))
        model = result.model
        self.coefs_, self.intercepts_, self.mean_ = model.weights, model.biases, model.mean
        self.std_ = model.std
        self.objective_, self.n_iter_ = result.f, result.iterations
        self.status_ = result.status.value
        self.C_ = result.C
        self.history_ = [record.as_dict() for record in result.history]
        if result.status == RunStatus.NUMERICAL_ERROR:
            warnings.warn(f"{result.message}; the last good iterate is kept",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _model(self):
        widths = (self.n_features_in_, *(W.shape[1] for W in self.coefs_))
        return Model(widths, self.activation, self.loss, self.feature_scale, self.mean_,
                     np.arange(len(self.classes_)), self.coefs_, self.intercepts_,
                     getattr(self, "std_", None))

    def _outputs(self, X):
        """z^L, (l, n_classes), on every rank; collective under MPI."""
        from mpi4py import MPI

        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=_INPUT_DTYPES, reset=False)
        world = MPI.COMM_WORLD
        _check_same_data(world, X)
        predictor = Predictor(world, self._model(), self.partitions, self.batch_size)
        try:
            return predictor.outputs(RawData(X, np.zeros(X.shape[0]), "X"))
        finally:
            predictor.close()

    def predict(self, X):
        """The class label of every row of X, (l,)."""
        outputs = self._outputs(X)  # first: it tells an unfitted estimator
        return self.classes_[np.argmax(outputs, axis=1)]

    def predict_proba(self, X):
        """Class probabilities, (l, n_classes), columns in the order of `classes_`."""
        return make_loss(self.loss).probabilities(self._outputs(X))


def _check_same_data(world, *arrays):
    """Collective: refuse, on every rank, arrays that differ between ranks.

    Each rank keeps only its blocks' columns of the data it is given, so ranks
    given different data (a shuffle with a per-process seed, say) would train
    one model on a mixture. A digest of the bytes costs far less than a pass.
    """
    if world.size == 1:
        return
    digest = hashlib.blake2b(digest_size=16)
    for a in arrays:
        digest.update(repr(a.shape).encode())
        parts = (a.data, a.indices, a.indptr) if issparse(a) else (a,)
        for part in parts:
            digest.update(np.ascontiguousarray(part).tobytes())
    if len(set(world.allgather(digest.hexdigest()))) > 1:
        raise everywhere(InputError(
            "every rank must pass the same data, but the ranks' arrays differ"
        ))


def _widths(hidden):
    """`hidden` as a tuple of widths: one number is one hidden layer."""
    return (hidden,) if np.isscalar(hidden) else tuple(hidden)
