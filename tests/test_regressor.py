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

from dnewton import NewtonRegressor
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
    reg = NewtonRegressor(hidden=(), C=C, max_iter=30, gn_ratio=1.0, random_state=0).fit(X, Y)
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


def test_a_regressor_is_not_written_to_a_classifiers_model_file(centred, tmp_path):
    X, Y = centred
    reg = NewtonRegressor(hidden=(3,), max_iter=1, random_state=0).fit(X, Y)
    with pytest.raises(NotImplementedError, match="cannot be saved to a model file"):
        reg.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


# -- against scikit-learn's MLPRegressor on the diabetes set ----------------------------


@pytest.mark.bench  # bench/regressor_diabetes.py's comparison: make test-bench
@pytest.mark.skipif(WORLD.size > 1, reason="a one-process comparison; mpiexec repeats it")
@pytest.mark.xfail(strict=True, reason=(
    "not met on this split (random_state 0): R^2 0.338 (C = 0.05) against "
    "MLPRegressor's 0.365 (alpha = 5). Over the splits of random_state 0..9 the same "
    "protocol puts Newton ahead on 8 (mean R^2 0.469 against 0.461; "
    "python bench/regressor_diabetes.py): this split is one of the two where it is behind"))
def test_tuned_alike_newton_predicts_held_out_diabetes_as_well_as_mlp_regressor():
    """Each estimator's regularization chosen by the same cross-validation on the
    training part, over the same grid; R^2 on the held-out quarter
    (bench/regressor_diabetes.py's protocol)."""
    result = load_bench("regressor_diabetes").compare(random_state=0, hidden=(16,))
    assert result["newton"] >= result["mlp"]
