"""NewtonRegressor: real targets through the library's squared loss, scikit-learn's
MLPRegressor conventions, in one process and unchanged under mpiexec.

scikit-learn's estimator checks for it run in tests/test_estimator.py, beside the
classifier's.
"""

import numpy as np
import pytest
from helpers import WORLD, load_bench
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from dnewton import NewtonClassifier, NewtonRegressor
from dnewton.app.problem import ModelConfig
from dnewton.app.training import train
from dnewton.errors import ParameterError
from dnewton.io.data import RawData
from dnewton.model.losses import SquaredLoss


@pytest.fixture(scope="module")
def centred():
    """A small linear problem with two targets, X and Y centred."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 5))
    Y = X @ rng.standard_normal((5, 2)) + 0.3 * rng.standard_normal((60, 2))
    return X - X.mean(axis=0), Y - Y.mean(axis=0)


def test_the_squared_loss_takes_real_targets_as_it_takes_one_hot_labels():
    rng = np.random.default_rng(0)
    z, labels = rng.standard_normal((9, 4)), np.arange(9) % 4
    one_hot = np.eye(4)[labels]
    loss = SquaredLoss()
    assert loss.value(z, one_hot) == loss.value(z, labels) == np.sum((z - one_hot) ** 2)
    np.testing.assert_array_equal(loss.gradient(z, one_hot), loss.gradient(z, labels))
    np.testing.assert_array_equal(loss.gradient(z, one_hot), 2 * (z - one_hot))


def test_a_linear_network_fits_the_ridge_solution(centred):
    """hidden=() is least squares: f l = ||X W + b - Y||^2 + ||theta||^2 / (2 C), whose
    minimiser on centred data is ridge regression's (alpha = 1 / (2 C)) with b = 0."""
    X, Y = centred
    C = 0.5
    reg = NewtonRegressor(hidden=(), C=C, max_iter=30, gn_ratio=1.0, normalize_y=False,
                          random_state=0, dtype="float64").fit(X, Y)
    ridge = Ridge(alpha=1 / (2 * C), fit_intercept=False).fit(X, Y)
    np.testing.assert_allclose(reg.coefs_[0], ridge.coef_.T, rtol=1e-6)
    np.testing.assert_allclose(reg.intercepts_[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(reg.predict(X), ridge.predict(X), rtol=1e-6)


@pytest.mark.parametrize("solver", ["newton", "sgd", "adam"])
def test_predict_has_the_shape_of_y_and_score_is_r2(centred, solver):
    X, Y = centred
    settings = dict(hidden=(6,), max_iter=8, solver=solver, random_state=1)
    two = NewtonRegressor(**settings).fit(X, Y)
    assert two.predict(X).shape == Y.shape and two.n_outputs_ == 2
    one = NewtonRegressor(**settings).fit(X, Y[:, 0])
    assert one.predict(X).shape == (len(X),) and one.n_outputs_ == 1
    assert one.score(X, Y[:, 0]) == pytest.approx(r2_score(Y[:, 0], one.predict(X)))
    assert len(one.loss_curve_) == one.n_iter_ == 8
    # y of one column is one target, as (l,) is.
    column = NewtonRegressor(**settings).fit(X, Y[:, :1])
    np.testing.assert_array_equal(column.predict(X), one.predict(X))


def test_warm_start_needs_the_same_number_of_targets(centred):
    X, Y = centred
    reg = NewtonRegressor(hidden=(4,), max_iter=2, warm_start=True, random_state=0).fit(X, Y)
    with pytest.raises(ValueError, match="warm_start needs y with the 2 target"):
        reg.fit(X, Y[:, 0])


def test_the_softmax_loss_refuses_real_targets(centred):
    X, Y = centred
    with pytest.raises(ParameterError, match="^loss softmax needs class labels"):
        train(RawData(X, Y, "X"), config=ModelConfig(hidden=(3,), loss="softmax"), comm=WORLD)


def test_normalize_y_fits_standardized_targets_and_predicts_in_their_units(centred):
    """The network fitted to y in other units and offset is the same network (every
    parameter alike): C means the same whatever the units of y."""
    X, Y = centred
    settings = dict(hidden=(5,), max_iter=10, random_state=3)
    unit = NewtonRegressor(**settings).fit(X, Y)
    scaled = NewtonRegressor(**settings).fit(X, 1000 * Y + 50)
    for a, b in zip(unit.coefs_ + unit.intercepts_, scaled.coefs_ + scaled.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(scaled.predict(X), 1000 * unit.predict(X) + 50, rtol=1e-9)
    np.testing.assert_allclose(scaled.y_mean_, 1000 * Y.mean(axis=0) + 50)
    np.testing.assert_allclose(scaled.y_std_, 1000 * Y.std(axis=0))
    # Without it the network fits y as given: another network for other units.
    raw = NewtonRegressor(normalize_y=False, **settings).fit(X, 1000 * Y + 50)
    assert raw.y_mean_ is None and raw.y_std_ is None
    assert not np.allclose(raw.coefs_[0], scaled.coefs_[0])


def test_a_constant_target_is_centred_only():
    X = np.random.default_rng(2).standard_normal((20, 3))
    reg = NewtonRegressor(hidden=(3,), max_iter=20, random_state=0).fit(X, np.full(20, 4.0))
    assert reg.y_std_.tolist() == [1.0]
    np.testing.assert_allclose(reg.predict(X), 4.0, atol=0.05)  # its mean, nothing divided by 0


# -- model files ---------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    dict(hidden=(4,), standardize=True),
    dict(hidden=(4, 3), activation="tanh", center=True, dtype="float32", normalize_y=False),
])
@pytest.mark.parametrize("targets", [1, 2])
def test_save_and_load_give_the_same_predictions(centred, tmp_path, settings, targets):
    X, Y = centred
    y = (100 * Y[:, 0] + 7) if targets == 1 else 100 * Y + 7
    reg = NewtonRegressor(max_iter=5, random_state=0, **settings).fit(X, y)
    path = tmp_path / "regressor.npz"
    assert reg.save(path) is reg
    loaded = NewtonRegressor.load(path)
    np.testing.assert_array_equal(loaded.predict(X), reg.predict(X))
    assert loaded.predict(X).shape == y.shape and loaded.n_outputs_ == targets
    for key in ("hidden", "activation", "center", "standardize", "normalize_y"):
        assert loaded.get_params()[key] == reg.get_params()[key], key
    # the precision it was trained in (the default, None, is the library's)
    assert loaded.dtype == (reg.dtype or ModelConfig.dtype) == str(reg.coefs_[0].dtype)
    assert loaded.score(X, y) == reg.score(X, y)
    # A loaded network goes on training in the units it was fitted in.
    loaded.set_params(warm_start=True, max_iter=1, random_state=0).fit(X, y)
    assert loaded.n_iter_ == 1
    if reg.y_std_ is not None:
        np.testing.assert_array_equal(loaded.y_std_, reg.y_std_)


def test_a_model_file_is_loaded_only_as_its_own_kind(centred, tmp_path):
    X, Y = centred
    regressor, classifier = tmp_path / "regressor.npz", tmp_path / "classifier.npz"
    NewtonRegressor(hidden=(3,), max_iter=1, random_state=0).fit(X, Y).save(regressor)
    NewtonClassifier(hidden=(3,), loss="squared", max_iter=1, random_state=0).fit(
        X, Y[:, 0] > 0).save(classifier)
    with pytest.raises(ValueError, match=f"^{regressor}: holds a regressor of 2 targets "
                       r"\(squared loss\).*load it with NewtonRegressor.load"):
        NewtonClassifier.load(regressor)
    # Squared loss and two outputs alike: the file says which it is.
    with pytest.raises(ValueError, match=f"^{classifier}: holds a classifier of 2 classes "
                       r"\(squared loss\).*load it with NewtonClassifier.load"):
        NewtonRegressor.load(classifier)


# -- against scikit-learn's MLPRegressor on the diabetes set ----------------------------


@pytest.mark.bench  # bench/studies/regressor_diabetes.py's comparison: make test-bench
@pytest.mark.skipif(WORLD.size > 1, reason="a one-process comparison; mpiexec repeats it")
def test_at_its_defaults_newton_predicts_held_out_diabetes_as_well_as_mlp_regressor():
    """Both estimators at their defaults but the hidden layers (and random_state 0), on
    the splits of random_state 0..9 (X and y standardized, a quarter held out):
    the mean held-out R^2 (bench/studies/regressor_diabetes.py --defaults), and no
    worse on most splits."""
    bench = load_bench("studies/regressor_diabetes")
    results = [bench.compare_defaults(random_state, hidden=(16,)) for random_state in range(10)]
    newton = np.array([result["newton"] for result in results])
    mlp = np.array([result["mlp"] for result in results])
    assert newton.mean() >= mlp.mean(), (newton.round(3), mlp.round(3))
    assert np.sum(newton >= mlp) > len(results) / 2, (newton.round(3), mlp.round(3))
