"""`NewtonClassifier` and `NewtonRegressor`: dnewton behind scikit-learn's interface.

Both run in a plain single-process session and, unchanged, in a script started
with ``mpiexec -n K python script.py``: they work over a duplicate of their
`comm` (default ``MPI.COMM_WORLD``), so every rank of it must call `fit` (and
`predict`, ...) with the same data, and every rank gets the same fitted model and
the same predictions. Several estimators on disjoint sub-communicators fit side
by side (a distributed grid search)::

    group = MPI.COMM_WORLD.Split(color=MPI.COMM_WORLD.rank % 2)
    clf = NewtonClassifier(C=(1.0, 0.1)[MPI.COMM_WORLD.rank % 2], comm=group).fit(X, y)

Fitted, an estimator holds the dense weights only (no MPI state), so it pickles
and clones like any other.

The two share `NewtonNetwork`: the same network, solvers and parameters; the
classifier fits class labels (softmax or squared loss), the regressor real
targets (squared loss), as scikit-learn's `MLPClassifier` and `MLPRegressor` share
their base class.
"""

import hashlib
import numbers
import warnings
from contextlib import contextmanager

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
# scikit-learn's own parameter validation (its estimators' `_parameter_constraints`,
# since 1.2): errors that name the estimator's parameter, in its words.
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..constants import BATCH_SIZE, PRECISIONS
from ..errors import DNewtonError, InputError, everywhere
from ..io.data import RawData
from ..io.model_file import REGRESSION, Model, load_model, save_model
from ..model.activations import HIDDEN_ACTIVATIONS
from ..model.losses import make_loss
from ..solvers.adam import AdamOptions
from ..solvers.newton import STOCHASTIC, NewtonOptions, recommended
from ..run_records import RunStatus
from ..solvers.sgd import SGDOptions
from .early_stopping import EarlyStopping
from .monitor import Monitor
from .prediction import Predictor
from .problem import ModelConfig
from .training import train

# X of either precision is taken as it is (no float64 copy of float32 data); the
# network's own precision is `dtype`.
_INPUT_DTYPES = [np.float64, np.float32]

SOLVERS = ("newton", "sgd", "adam")

# The library's parameter names (in its error messages) -> the estimators' own.
LIBRARY_NAMES = {
    "seed": "random_state", "iterations": "max_iter", "epochs": "max_iter",
    "mini_batch": "batch_size", "learning_rate": "learning_rate_init", "beta1": "beta_1",
    "beta2": "beta_2", "eps": "epsilon", "batch_size": "chunk_size",
}


def _positive(kind):
    return Interval(kind, 0, None, closed="neither")


def _at_least(kind, low):
    return Interval(kind, low, None, closed="left")


class NewtonNetwork(BaseEstimator):
    """The fully connected network, its solvers and settings; see the subclasses.

    Parameters
    ----------
    hidden : tuple of int, default (300, 300)
        Hidden layer widths; () is a linear model.
    activation : {"relu", "sigmoid", "tanh"}, default "relu"
    solver : {"newton", "sgd", "adam"}, default "newton"
        Subsampled Gauss-Newton (Newton-CG), or mini-batch SGD with momentum, or
        Adam (as ``dnewton train --solver``).
    C : float, default 1.0
        f = theta'theta / (2 C l) + mean loss.
    max_iter : int, default 100
        Newton iterations, or epochs of SGD and Adam. Left at 100 with the
        recommended stochastic setting (see `sample_size`), that setting's 400.
    gn_ratio, gn_size, gn_min, diagonal, sync_fraction, cg_max, xi, damping
        Newton only: as ``--gn-ratio``, ``--gn-size``, ``--gn-min``, ``--diagonal``,
        ``--sync-fraction``, ``--cg-max``, ``--xi`` and ``--lambda``. With
        ``sample_size="auto"`` and `gn_ratio` and `gn_size` at their defaults, S
        holds at least 200 instances (`gn_min` None); a `gn_min` sets another floor.
    learning_rate_init : float or None, default None
        SGD and Adam: the learning rate eta; None: the solver's own default
        (SGD 0.01, Adam 0.001).
    batch_size : int, default 128
        SGD and Adam: instances per mini-batch.
    lr_decay : float, default 0.0
        SGD and Adam: the learning rate of epoch e is eta / (1 + lr_decay (e - 1)).
    momentum : float, default 0.9
        SGD: heavy-ball momentum; 0 is plain SGD.
    beta_1, beta_2, epsilon : float, default 0.9, 0.999, 1e-8
        Adam: decay of the first and second moments, and the denominator's guard.
    feature_scale : float, default 1.0
        Features are divided by it before training and prediction.
    center : bool, default False
        Subtract the training mean of every (scaled) feature.
    standardize : bool, default False
        Subtract the training mean and divide by the training standard deviation
        of every (scaled) feature, as ``--standardize`` (implies `center`;
        constant features are only centred).
    partitions : tuple of int or None, default None
        P_0..P_L, the block layout under MPI (of one copy, with `replicas`); None:
        the planner's choice.
    replicas : int or None, default None
        Copies of the layout the MPI ranks form, each fitting 1/replicas of the
        instances (as ``--replicas``); must divide the rank count. None: the
        planner's choice without `partitions`, else 1.
    chunk_size : int, default 4096
        Instances per forward and backward pass over the data (bounds memory; it
        is not the mini-batch).
    dtype : {"float64", "float32"} or None, default None
        Precision of training and prediction (as ``--dtype``); X may be either.
        None: float32, as ``dnewton train`` without ``--paper`` (half the
        seconds of float64 at the same accuracy; docs/benchmarks.md, "Precision").
    warm_start : bool, default False
        Fit again from the fitted network instead of a new one (the same widths,
        and for the classifier the same classes; a solver's own state, Newton's
        damping or Adam's moments, starts afresh). `loss_curve_` and `n_iter_`
        go on from the previous fit.
    random_state : int, RandomState instance or None, default None
        Seed of the initial weights, the Gauss-Newton subsets and the
        mini-batches; None draws one from NumPy's global generator (rank 0's,
        under MPI), as scikit-learn does.
    verbose : bool, default False
        Rank 0 prints the progress of every iteration.
    sample_size : int, "auto" or None, default "auto"
        Newton only: instances of the random sample each iteration takes f, the
        gradient and the line search on (as ``--sample-size``); None: all of them,
        the paper's method; "auto": beyond 10,000 training instances the
        recommended stochastic setting (`solvers.newton.STOCHASTIC`) for the Newton
        options left at their defaults, else all of them.
    sample_growth : float, default 1.0
        Newton with a sample size: the next sample has this many times the
        instances, until it holds them all.
    average : float, default 0.0
        Newton only: score and return the bias-corrected moving average of the
        iterates with this beta (0: the last iterate).
    early_stopping, validation_fraction, n_iter_no_change, tol
        As scikit-learn's MLPClassifier: set aside `validation_fraction` of the
        training set (stratified), score it once per epoch (for Newton on samples:
        whenever the samples have drawn another training set's worth of
        instances), stop once its accuracy has not risen by `tol` for more than
        `n_iter_no_change` epochs, and keep the best validated network
        (`validation_scores_`). The classifier only.
    comm : mpi4py communicator or None, default None
        The ranks that fit together (every one of them calls `fit` alike); None:
        ``MPI.COMM_WORLD``. The estimator works on a duplicate of it; a clone
        shares it. To pickle an estimator given another communicator, set it to
        None first (a communicator cannot leave its process).

    Attributes
    ----------
    n_features_in_ : int
    n_outputs_ : int, the widths of the output layer
    coefs_ : list of (n_{m-1}, n_m) arrays, W^m
    intercepts_ : list of (n_m,) arrays, b^m
    mean_ : (n_features,) training means subtracted (after scaling), or None
    std_ : (n_features,) training standard deviations divided by (1 for constant
        features), or None without `standardize`
    objective_ : float, f at the end
    loss_curve_ : list of float, f after every iteration (epoch), over the fits
        of a warm start
    n_iter_ : int, iterations (epochs) run, over the fits of a warm start
    status_ : str, why the run stopped ("iteration_limit", "line_search_failed",
        "numerical_error": the last good iterate is kept and a ConvergenceWarning given)
    history_ : list of dict, one record per iteration of the last fit, as in
        ``dnewton train --log``
    """

    _parameter_constraints = {
        "hidden": [_at_least(numbers.Integral, 1), "array-like"],
        "activation": [StrOptions(set(HIDDEN_ACTIVATIONS))],
        "solver": [StrOptions(set(SOLVERS))],
        "C": [_positive(numbers.Real)],
        "max_iter": [_at_least(numbers.Integral, 1)],
        "gn_ratio": [Interval(numbers.Real, 0, 1, closed="right")],
        "gn_size": [None, _at_least(numbers.Integral, 1)],
        "gn_min": [None, _at_least(numbers.Integral, 1)],
        "diagonal": ["boolean"],
        "sync_fraction": [Interval(numbers.Real, 0, 1, closed="right")],
        "cg_max": [_at_least(numbers.Integral, 1)],
        "xi": [Interval(numbers.Real, 0, 1, closed="neither")],
        "damping": [_at_least(numbers.Real, 0)],
        "learning_rate_init": [None, _positive(numbers.Real)],
        "batch_size": [_at_least(numbers.Integral, 1)],
        "lr_decay": [_at_least(numbers.Real, 0)],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [_positive(numbers.Real)],
        "feature_scale": [_positive(numbers.Real)],
        "center": ["boolean"],
        "standardize": ["boolean"],
        "partitions": [None, "array-like"],
        "replicas": [None, _at_least(numbers.Integral, 1)],
        "chunk_size": [_at_least(numbers.Integral, 1)],
        "dtype": [None, StrOptions(set(PRECISIONS))],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "comm": [None, HasMethods(["Dup", "Free"])],
        "sample_size": [None, StrOptions({"auto"}), _at_least(numbers.Integral, 1)],
        "sample_growth": [_at_least(numbers.Real, 1)],
        "average": [Interval(numbers.Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [_at_least(numbers.Integral, 1)],
        "tol": [_at_least(numbers.Real, 0)],
    }

    _LOSS = None  # the loss of the subclass, or None: its `loss` parameter
    _Y_CHECKS = {}  # how `validate_data` checks y: the subclass's targets

    def __init__(self, hidden=(300, 300), activation="relu", solver="newton", C=1.0,
                 max_iter=100, gn_ratio=0.05, gn_size=None, diagonal=False,
                 sync_fraction=1.0, cg_max=250, xi=0.1, damping=1.0,
                 learning_rate_init=None, batch_size=128, lr_decay=0.0, momentum=0.9,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, feature_scale=1.0, center=False,
                 standardize=False, partitions=None, replicas=None, chunk_size=BATCH_SIZE,
                 dtype=None, warm_start=False, random_state=None, verbose=False,
                 comm=None, sample_size="auto", sample_growth=1.0, average=0.0,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, gn_min=None):
        self.hidden = hidden
        self.activation = activation
        self.solver = solver
        self.C = C
        self.max_iter = max_iter
        self.gn_ratio = gn_ratio
        self.gn_size = gn_size
        self.gn_min = gn_min
        self.diagonal = diagonal
        self.sync_fraction = sync_fraction
        self.cg_max = cg_max
        self.xi = xi
        self.damping = damping
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.lr_decay = lr_decay
        self.momentum = momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.feature_scale = feature_scale
        self.center = center
        self.standardize = standardize
        self.partitions = partitions
        self.replicas = replicas
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.comm = comm
        self.sample_size = sample_size
        self.sample_growth = sample_growth
        self.average = average
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR input stays sparse on the ranks unless centred
        return tags

    def __sklearn_clone__(self):
        """An unfitted copy with the same parameters, as `sklearn.base.clone` makes,
        sharing `comm`: a communicator is a handle to the ranks, which cannot be
        copied (scikit-learn would deep-copy it), and the clone fits on the same ranks."""
        params = self.get_params(deep=False)
        comm = params.pop("comm")
        return type(self)(**{name: clone(value, safe=False) for name, value in params.items()},
                          comm=comm)

    # -- what the subclasses say --------------------------------------------------

    def _targets(self, y, warm):
        """What the library fits to: (l,) class indices or (l, k) real targets. Sets
        the subclass's own attributes (`classes_`); with `warm`, refuses targets
        the fitted network cannot continue on."""
        raise NotImplementedError

    def _file_model(self):
        """The fitted network as its model file holds it (`io.model_file.Model`)."""
        raise NotImplementedError

    @classmethod
    def _holds_own_kind(cls, model):
        """Whether `model` (read from a file) is of this estimator's kind."""
        raise NotImplementedError

    @property
    def _loss(self):
        return self._LOSS or self.loss

    # -- fitting ------------------------------------------------------------------

    def fit(self, X, y):
        """Train on X (l, n) dense or sparse and y; collective over `comm`."""
        self._validate_params()
        warm = self.warm_start and hasattr(self, "coefs_")
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=_INPUT_DTYPES,
                             reset=not warm, **self._Y_CHECKS)
        targets = self._targets(y, warm)
        initial = self._network_model() if warm else None
        with _duplicate(self.comm) as comm:
            _check_same_data(comm, X, targets)
            seed = _draw_seed(comm, self.random_state)
            options = self._options(seed, len(targets))
            early = None
            if self.early_stopping:
                early = EarlyStopping(self.validation_fraction, self.n_iter_no_change,
                                      self.tol)
            config = ModelConfig(
                hidden=_widths(self.hidden), activation=self.activation, loss=self._loss,
                C=self.C, partitions=self.partitions, replicas=self.replicas,
                feature_scale=self.feature_scale, center=self.center,
                standardize=self.standardize, batch_size=self.chunk_size,
                dtype=self.dtype or ModelConfig.dtype,
            )
            with _estimator_names():
                result = train(RawData(X, targets, "X"), None, config, options, comm=comm,
                               return_model=True, initial=initial, early_stopping=early,
                               monitor=Monitor(comm.rank, quiet=not self.verbose,
                                               iterations=options.iterations))
        model = result.model
        self.n_outputs_ = model.widths[-1]
        self.coefs_, self.intercepts_, self.mean_ = model.weights, model.biases, model.mean
        self.std_ = model.std
        self.objective_, self.status_ = result.f, result.status.value
        self.history_ = [record.as_dict() for record in result.history]
        if self.early_stopping:
            self.validation_scores_ = [record["validation_score"]
                                       for record in self.history_[1:]
                                       if "validation_score" in record]
            self.best_validation_score_ = max(self.validation_scores_, default=None)
        curve = [float(record["f"]) for record in self.history_[1:]]
        # A network loaded from a file has no curve yet.
        self.loss_curve_ = (getattr(self, "loss_curve_", []) if warm else []) + curve
        self.n_iter_ = (getattr(self, "n_iter_", 0) if warm else 0) + result.iterations
        self._fitted(result)
        if result.status == RunStatus.NUMERICAL_ERROR:
            warnings.warn(f"{result.message}; the last good iterate is kept",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _fitted(self, result):
        """What a subclass keeps of the run besides the network."""

    def _options(self, seed, n_instances):
        """The solver's options from the estimator's parameters, for a training set
        of `n_instances`."""
        if self.solver == "newton":
            given = dict(
                gn_ratio=self.gn_ratio, gn_size=self.gn_size, diagonal=self.diagonal,
                sync_fraction=self.sync_fraction, iterations=self.max_iter,
                cg_max=self.cg_max, xi=self.xi, damping=self.damping, seed=seed,
                sample_growth=self.sample_growth, average=self.average,
            )
            if self.gn_min is not None:
                given["gn_min"] = self.gn_min
            if self.sample_size == "auto":  # what is left at its default may be chosen
                defaults = NewtonOptions()
                given = {key: value for key, value in given.items()
                         if key not in STOCHASTIC or value != getattr(defaults, key)}
            else:
                given["sample_size"] = self.sample_size
            return recommended(n_instances, given)
        common = dict(mini_batch=self.batch_size, epochs=self.max_iter, lr_decay=self.lr_decay,
                      seed=seed)
        if self.learning_rate_init is not None:
            common["learning_rate"] = self.learning_rate_init
        if self.solver == "sgd":
            return SGDOptions(momentum=self.momentum, **common)
        return AdamOptions(beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon, **common)

    def _network_model(self, labels=None):
        """The fitted network as a `Model` (output labels 0..k-1 unless given)."""
        widths = (self.n_features_in_, *(W.shape[1] for W in self.coefs_))
        if labels is None:
            labels = np.arange(widths[-1])
        return Model(widths, self.activation, self._loss, self.feature_scale, self.mean_,
                     labels, self.coefs_, self.intercepts_, getattr(self, "std_", None))

    # -- prediction -----------------------------------------------------------------

    def _outputs(self, X):
        """z^L, (l, n_outputs), on every rank; collective over `comm`."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=_INPUT_DTYPES, reset=False)
        with _duplicate(self.comm) as comm:
            _check_same_data(comm, X)
            with _estimator_names():
                predictor = Predictor(comm, self._network_model(), self.partitions,
                                      self.chunk_size)
                try:
                    return predictor.outputs(RawData(X, np.zeros(X.shape[0]), "X"))
                finally:
                    predictor.close()

    # -- model files ----------------------------------------------------------------

    def save(self, path):
        """Write the fitted network to the model file `path` (``.npz``), as
        ``dnewton train --model`` does; collective over `comm` (rank 0 writes)."""
        check_is_fitted(self)
        model = self._file_model()
        with _duplicate(self.comm) as comm, _estimator_names():
            save_model(comm, model if comm.rank == 0 else None, path)
        return self

    @classmethod
    def load(cls, path, comm=None):
        """The fitted estimator in the model file `path` (as ``dnewton train --model``
        writes, or `save`); collective over `comm` (rank 0 reads).

        Its parameters are the file's network (hidden, activation, preprocessing,
        dtype), the others their defaults; it predicts as the saved one did. A
        file of the other kind (a regressor's for `NewtonClassifier`, a
        classifier's for `NewtonRegressor`) raises `errors.InputError`, a
        ValueError, naming the file and what it holds.
        """
        with _duplicate(comm) as world:
            model = load_model(world, path)
        if not cls._holds_own_kind(model):  # the same model on every rank: no agreement needed
            other = NewtonRegressor if model.regression else NewtonClassifier
            raise InputError(f"{path}: holds {model.describe()}, not what {cls.__name__} "
                             f"fits; load it with {other.__name__}.load")
        estimator = cls(hidden=tuple(model.widths[1:-1]), activation=model.activation,
                        feature_scale=model.feature_scale,
                        center=model.mean is not None and model.std is None,
                        standardize=model.std is not None, dtype=model.dtype, comm=comm)
        estimator._restore(model, path)
        estimator.n_features_in_, estimator.n_outputs_ = model.widths[0], model.widths[-1]
        estimator.coefs_, estimator.intercepts_ = model.weights, model.biases
        estimator.mean_, estimator.std_ = model.mean, model.std
        return estimator

    def _restore(self, model, path):
        """Set what the subclass keeps of a model file (`load`)."""


class NewtonClassifier(ClassifierMixin, NewtonNetwork):
    """A fully connected network classifier trained by subsampled Gauss-Newton
    (Newton-CG), or by SGD or Adam; parameters mirror ``dnewton train``'s options
    (docs/design.md) and `NewtonNetwork` lists them all. Besides:

    Parameters
    ----------
    loss : {"softmax", "squared"}, default "softmax"
        Cross-entropy of the softmax of the outputs, or the paper's squared loss
        against one-hot labels.
    C : float or "auto", default 1.0
        f = theta'theta / (2 C l) + mean loss. "auto" chooses it by held-out
        accuracy over a grid (as ``dnewton train -C auto``; `C_` is the choice).
        The paper's objective is ``loss="squared", C=0.01``.

    Attributes
    ----------
    classes_ : (n_classes,) labels
    C_ : float, the C trained with (the choice with ``C="auto"``)
    (and those of `NewtonNetwork`)

    Notes
    -----
    `predict_proba` for the softmax loss is the softmax of the outputs. For the
    squared loss the outputs estimate the class probabilities (least squares
    against one-hot labels) but may leave [0, 1]; `predict_proba` returns their
    Euclidean projection onto the probability simplex, which keeps their order,
    so ``argmax(predict_proba) == predict``.
    """

    _parameter_constraints = {
        **NewtonNetwork._parameter_constraints,
        "loss": [StrOptions({"softmax", "squared"})],
        "C": [_positive(numbers.Real), StrOptions({"auto"})],
    }

    def __init__(self, hidden=(300, 300), activation="relu", loss="softmax", solver="newton",
                 C=1.0, max_iter=100, gn_ratio=0.05, gn_size=None, diagonal=False,
                 sync_fraction=1.0, cg_max=250, xi=0.1, damping=1.0,
                 learning_rate_init=None, batch_size=128, lr_decay=0.0, momentum=0.9,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, feature_scale=1.0, center=False,
                 standardize=False, partitions=None, replicas=None, chunk_size=BATCH_SIZE,
                 dtype=None, warm_start=False, random_state=None, verbose=False,
                 comm=None, sample_size="auto", sample_growth=1.0, average=0.0,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, gn_min=None):
        super().__init__(
            hidden=hidden, activation=activation, solver=solver, C=C, max_iter=max_iter,
            gn_ratio=gn_ratio, gn_size=gn_size, diagonal=diagonal,
            sync_fraction=sync_fraction, cg_max=cg_max, xi=xi, damping=damping,
            learning_rate_init=learning_rate_init, batch_size=batch_size, lr_decay=lr_decay,
            momentum=momentum, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            feature_scale=feature_scale, center=center, standardize=standardize,
            partitions=partitions, replicas=replicas, chunk_size=chunk_size, dtype=dtype,
            warm_start=warm_start, random_state=random_state, verbose=verbose, comm=comm,
            sample_size=sample_size, sample_growth=sample_growth, average=average,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, tol=tol, gn_min=gn_min,
        )
        self.loss = loss

    def _targets(self, y, warm):
        check_classification_targets(y)
        classes, index = np.unique(y, return_inverse=True)
        if warm and not np.array_equal(classes, self.classes_):
            raise ValueError(f"warm_start needs the classes of the previous fit "
                             f"{self.classes_.tolist()}, y has {classes.tolist()}")
        self.classes_ = classes
        return index.astype(np.float64)

    def _fitted(self, result):
        self.C_ = result.C

    @classmethod
    def _holds_own_kind(cls, model):
        return not model.regression

    def _file_model(self):
        return self._network_model(self._file_labels())

    def _file_labels(self):
        labels = self.classes_
        if labels.dtype.kind == "O":  # an .npz holds no objects without pickling
            labels = np.asarray(labels.tolist())
            if labels.dtype.kind not in "biufU":
                raise ValueError("a model file holds numeric or string class labels, "
                                 f"not {self.classes_.dtype}")
        return labels

    def _restore(self, model, path):
        self.loss = model.loss
        self.classes_ = model.classes

    def predict(self, X):
        """The class label of every row of X, (l,)."""
        outputs = self._outputs(X)  # first: it tells an unfitted estimator
        return self.classes_[np.argmax(outputs, axis=1)]

    def predict_proba(self, X):
        """Class probabilities, (l, n_classes), columns in the order of `classes_`."""
        return make_loss(self.loss).probabilities(self._outputs(X))


class NewtonRegressor(RegressorMixin, NewtonNetwork):
    """A fully connected network regressor (squared loss, ``||z - y||^2`` per
    instance) trained by subsampled Gauss-Newton, SGD or Adam; the parameters
    and attributes are `NewtonNetwork`'s, and those below.

    As scikit-learn's `MLPRegressor`: y is (l,) or (l, k); the network has k
    outputs, and `predict` returns (l, k), or (l,) when k is 1. `score` is R^2.

    Parameters
    ----------
    C : float, default 0.1
        f = theta'theta / (2 C l) + mean loss, the loss in units of the
        standardized targets (with `normalize_y`). Newton fits f to its minimum,
        so C alone keeps the network from following the noise of a small set:
        over scikit-learn's diabetes, linnerud and Friedman #1-#3 sets, 0.1 has
        the best held-out R^2 or is within 0.025 of it, where C = 1 overfits the
        noisier ones (bench/studies/regressor_c.py).
    normalize_y : bool, default True
        Fit the network to each target minus its training mean, divided by its
        training standard deviation (1 for a constant target), and predict in
        the units of y (as `GaussianProcessRegressor`'s `normalize_y`): C and the
        initial weights then mean the same whatever the units of y.

    Attributes
    ----------
    y_mean_, y_std_ : (k,) arrays, the targets' training means and standard
        deviations with `normalize_y`, else None
    (and those of `NewtonNetwork`; `objective_` and `loss_curve_` are in units
    of the standardized targets with `normalize_y`)
    """

    _LOSS = "squared"
    _Y_CHECKS = {"multi_output": True, "y_numeric": True}
    _parameter_constraints = {
        **NewtonNetwork._parameter_constraints,
        "normalize_y": ["boolean"],
    }

    def __init__(self, hidden=(300, 300), activation="relu", solver="newton", C=0.1,
                 max_iter=100, gn_ratio=0.05, gn_size=None, diagonal=False,
                 sync_fraction=1.0, cg_max=250, xi=0.1, damping=1.0,
                 learning_rate_init=None, batch_size=128, lr_decay=0.0, momentum=0.9,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, feature_scale=1.0, center=False,
                 standardize=False, normalize_y=True, partitions=None, replicas=None,
                 chunk_size=BATCH_SIZE, dtype=None, warm_start=False, random_state=None,
                 verbose=False, comm=None, sample_size="auto", sample_growth=1.0,
                 average=0.0, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, gn_min=None):
        super().__init__(
            hidden=hidden, activation=activation, solver=solver, C=C, max_iter=max_iter,
            gn_ratio=gn_ratio, gn_size=gn_size, diagonal=diagonal,
            sync_fraction=sync_fraction, cg_max=cg_max, xi=xi, damping=damping,
            learning_rate_init=learning_rate_init, batch_size=batch_size, lr_decay=lr_decay,
            momentum=momentum, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            feature_scale=feature_scale, center=center, standardize=standardize,
            partitions=partitions, replicas=replicas, chunk_size=chunk_size, dtype=dtype,
            warm_start=warm_start, random_state=random_state, verbose=verbose, comm=comm,
            sample_size=sample_size, sample_growth=sample_growth, average=average,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, tol=tol, gn_min=gn_min,
        )
        self.normalize_y = normalize_y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _targets(self, y, warm):
        if self.early_stopping:  # its split is stratified and its score an accuracy
            raise ValueError("early_stopping scores accuracy on a stratified split: it "
                             "applies to NewtonClassifier only")
        targets = np.asarray(y, dtype=np.float64)
        targets = targets.reshape(len(targets), -1)
        if warm and targets.shape[1] != self.n_outputs_:
            raise ValueError(f"warm_start needs y with the {self.n_outputs_} target(s) of "
                             f"the previous fit, y has {targets.shape[1]}")
        if not warm:  # a warm start goes on in the units the network was fitted in
            self.y_mean_ = self.y_std_ = None
            if self.normalize_y:
                self.y_mean_ = targets.mean(axis=0)
                std = targets.std(axis=0)
                self.y_std_ = np.where(std > 0, std, 1.0)
        if self.y_std_ is not None:
            targets = (targets - self.y_mean_) / self.y_std_
        return np.ascontiguousarray(targets)

    @classmethod
    def _holds_own_kind(cls, model):
        return model.regression

    def _file_model(self):
        model = self._network_model()
        model.classes, model.task = None, REGRESSION
        if self.y_std_ is not None:
            model.target_mean, model.target_std = self.y_mean_, self.y_std_
        return model

    def _restore(self, model, path):
        self.normalize_y = model.target_std is not None
        self.y_mean_, self.y_std_ = model.target_mean, model.target_std

    def predict(self, X):
        """The predicted targets of every row of X: (l, k), or (l,) when k is 1."""
        outputs = self._outputs(X)
        if self.y_std_ is not None:
            outputs = outputs * self.y_std_ + self.y_mean_
        return outputs.ravel() if outputs.shape[1] == 1 else outputs


@contextmanager
def _duplicate(comm):
    """A duplicate of `comm` (None: MPI.COMM_WORLD) for one collective call, freed after."""
    from mpi4py import MPI

    world = (MPI.COMM_WORLD if comm is None else comm).Dup()
    try:
        yield world
    finally:
        world.Free()


@contextmanager
def _estimator_names():
    """Let a library error name parameters as the estimators do (`LIBRARY_NAMES`)."""
    try:
        yield
    except DNewtonError as exc:
        exc.args = (estimator_message(exc),)
        raise


def estimator_message(error):
    """The message of a library error with the estimators' parameter names."""
    return error.render(lambda name: LIBRARY_NAMES.get(name, name))


def _draw_seed(comm, random_state):
    """The library's seed: `random_state` itself if a number, else drawn from it (the
    global generator for None) on rank 0 and shared, so every rank starts alike."""
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return comm.bcast(seed, root=0)


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
