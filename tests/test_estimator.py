"""NewtonClassifier: scikit-learn's conventions, in one process and unchanged under mpiexec.

scikit-learn's own estimator checks run here in full, for NewtonClassifier and
NewtonRegressor, on a small network (8 hidden units, 10 iterations, for speed);
no check is marked as not applying. Only checks the environment cannot run are
skipped, by scikit-learn itself: ``check_array_api_input`` (needs SCIPY_ARRAY_API=1
and an array library) and ``check_classifier_data_not_an_array`` /
``check_regressor_data_not_an_array`` (need pandas).
Under mpiexec the same checks run on 2 ranks, where one is expected to fail: see
`MPI_EXPECTED_FAILURES`.
"""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from helpers import WORLD, mpiexec_path, read_log, run_dnewton
from mpi4py import MPI
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from dnewton import NewtonClassifier, NewtonRegressor
from dnewton.app.estimator import LIBRARY_NAMES, estimator_message
from dnewton.app.problem import ModelConfig
from dnewton.app.training import train
from dnewton.errors import ParameterError
from dnewton.io.data import RawData, read_dataset
from dnewton.solvers.adam import AdamOptions
from dnewton.solvers.sgd import SGDOptions

SMALL = dict(hidden=(8,), max_iter=10)
# float64: the ranks' fits agree with the one-process fit to its rounding
DIGITS = dict(hidden=(16, 12), max_iter=4, feature_scale=16, center=True, random_state=5,
              dtype="float64")

# check_methods_sample_order_invariance shuffles with NumPy's global generator,
# which every process seeds differently: the ranks pass different data, and the
# estimator refuses that on every rank (it cannot train on a mixture).
MPI_EXPECTED_FAILURES = {
    "check_methods_sample_order_invariance":
        "shuffles with the global NumPy generator, seeded differently on each rank",
}


@parametrize_with_checks([NewtonClassifier(**SMALL), NewtonRegressor(**SMALL)],
                         expected_failed_checks=lambda estimator: (
                             MPI_EXPECTED_FAILURES if WORLD.size > 1 else {}))
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    train, test = read_dataset("digits")
    return train.X, train.y, test.X, test.y


@pytest.mark.mpi
def test_fit_matches_the_command_line(digits, tmp_path):
    X, y, X_test, y_test = digits
    with threadpool_limits(limits=1):  # as run_dnewton's BLAS: the same sums, bit for bit
        clf = NewtonClassifier(**DIGITS).fit(X, y)
        accuracy = clf.score(X_test, y_test)
    log, model = tmp_path / "run.jsonl", tmp_path / "cli.npz"
    run_dnewton(1, ["train", "digits", "--hidden", "16,12", "--iterations", "4",
                    "--feature-scale", "16", "--center", "--seed", "5", "--quiet",
                    "--dtype", DIGITS["dtype"], "--log", log, "--model", model])
    records = read_log(log)
    assert clf.objective_ == records[-1]["f"]
    assert accuracy == records[-1]["test_accuracy"]
    assert clf.n_iter_ == 4 and clf.status_ == "iteration_limit"
    assert [r["f"] for r in clf.history_] == [r["f"] for r in records]
    assert [W.shape for W in clf.coefs_] == [(64, 16), (16, 12), (12, 10)]
    # The model files: the command line's model predicts through NewtonClassifier.load
    # what `dnewton predict` says, and the estimator's saved model the reverse.
    saved = tmp_path / "estimator.npz"
    clf.save(saved)
    for path, labels in [(model, NewtonClassifier.load(model).predict(X_test)),
                         (saved, clf.predict(X_test))]:
        written = tmp_path / f"{path.stem}.labels"
        run_dnewton(2, ["predict", path, "digits", "--output", written])
        np.testing.assert_array_equal(np.loadtxt(written), labels)
    np.testing.assert_array_equal(NewtonClassifier.load(model).predict(X_test),
                                  clf.predict(X_test))


@pytest.mark.parametrize("loss", ["squared", "softmax"])
def test_predict_proba_is_a_distribution_that_agrees_with_predict(digits, loss):
    X, y, X_test, _ = digits
    clf = NewtonClassifier(**DIGITS, loss=loss).fit(X, y)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10) and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[np.argmax(proba, axis=1)], clf.predict(X_test))


def test_float32_fits_and_predicts_like_float64(digits):
    X, y, X_test, _ = digits
    double = NewtonClassifier(**DIGITS).fit(X, y)
    single = NewtonClassifier(**{**DIGITS, "dtype": "float32"}).fit(X.astype(np.float32), y)
    assert all(W.dtype == np.float32 for W in single.coefs_ + single.intercepts_)
    assert single.objective_ == pytest.approx(double.objective_, rel=1e-4)
    assert np.mean(single.predict(X_test) == double.predict(X_test)) >= 0.99
    restored = pickle.loads(pickle.dumps(single))
    np.testing.assert_array_equal(restored.predict(X_test), single.predict(X_test))


def test_C_auto_chooses_from_the_path_it_records(digits):
    X, y, X_test, y_test = digits
    settings = dict(DIGITS, max_iter=20)
    clf = NewtonClassifier(**settings, C="auto").fit(X, y)
    path = clf.history_[0]["regularization_path"]
    last = [point for point in path if point["round"] == 3]  # 6 values, then 3, then 2
    best = max(last, key=lambda point: (point["holdout_accuracy"], -point["C"]))
    assert clf.C_ == best["C"] and [point["round"] for point in path] == [0] + [1] * 6 + [
        2] * 3 + [3] * 2
    # The paper's C = 0.01 over-regularizes this small set; the choice does not.
    paper = NewtonClassifier(**settings, C=0.01).fit(X, y)
    assert clf.score(X_test, y_test) > paper.score(X_test, y_test) + 0.05


def test_string_labels_pickling_and_params(digits):
    X, y, X_test, _ = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    clf = NewtonClassifier(**DIGITS).fit(X, names[y.astype(int)])
    assert set(clf.classes_) == set(names)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(X_test), clf.predict(X_test))
    assert clone(clf).set_params(C=0.1).get_params()["C"] == 0.1
    with pytest.raises(ValueError, match="^The 'C' parameter of NewtonClassifier must be"):
        NewtonClassifier(**SMALL, C=-1).fit(X, y)


# -- the solvers, warm starts, the loss curve -------------------------------------------


@pytest.mark.parametrize("solver, options", [
    ("sgd", dict(learning_rate_init=0.05, batch_size=50, lr_decay=0.5, momentum=0.5)),
    ("adam", dict(learning_rate_init=0.01, batch_size=70, lr_decay=0.25, beta_1=0.8,
                  beta_2=0.99, epsilon=1e-6)),
])
def test_each_solver_takes_its_settings_by_the_estimators_names(digits, solver, options):
    X, y, _, _ = digits
    clf = NewtonClassifier(**DIGITS, solver=solver, **options).fit(X, y)
    library = {"sgd": SGDOptions, "adam": AdamOptions}[solver](
        learning_rate=options["learning_rate_init"], mini_batch=options["batch_size"],
        lr_decay=options["lr_decay"], epochs=DIGITS["max_iter"], seed=DIGITS["random_state"],
        **{key: options[name] for key, name in [("momentum", "momentum"), ("beta1", "beta_1"),
                                                 ("beta2", "beta_2"), ("eps", "epsilon")]
           if name in options})
    config = ModelConfig(hidden=DIGITS["hidden"], feature_scale=16, center=True,
                         dtype=DIGITS["dtype"])
    index = np.unique(y, return_inverse=True)[1].astype(np.float64)
    result = train(RawData(X, index, "X"), None, config, library, comm=WORLD)
    assert clf.loss_curve_ == [record.f for record in result.history[1:]]
    assert clf.n_iter_ == DIGITS["max_iter"] and clf.status_ == "iteration_limit"
    assert [record["alpha"] for record in clf.history_[1:]] == [
        library.rate(epoch) for epoch in range(1, DIGITS["max_iter"] + 1)]


def test_loss_curve_is_f_after_every_newton_iteration_and_falls(digits):
    X, y, _, _ = digits
    clf = NewtonClassifier(**DIGITS).fit(X, y)
    assert clf.loss_curve_ == [record["f"] for record in clf.history_[1:]]
    assert len(clf.loss_curve_) == clf.n_iter_ == DIGITS["max_iter"]
    assert clf.loss_curve_[-1] == clf.objective_
    # The line search accepts a step only if it decreases f enough.
    assert all(b < a for a, b in zip([clf.history_[0]["f"], *clf.loss_curve_],
                                     clf.loss_curve_))


@pytest.mark.parametrize("solver", ["newton", "adam"])
def test_warm_start_goes_on_from_the_fitted_network(digits, solver):
    X, y, X_test, _ = digits
    clf = NewtonClassifier(**DIGITS, solver=solver, warm_start=True).fit(X, y)
    start, first_curve, first = clf.history_[0]["f"], list(clf.loss_curve_), clf.objective_
    clf.set_params(max_iter=2).fit(X, y)
    assert clf.history_[0]["f"] == pytest.approx(first, rel=1e-12)  # not a new network
    assert clf.loss_curve_[:len(first_curve)] == first_curve
    assert len(clf.loss_curve_) == clf.n_iter_ == DIGITS["max_iter"] + 2
    assert clf.objective_ < first
    # Without warm_start a second fit starts again from the seeded network.
    cold = NewtonClassifier(**DIGITS, solver=solver).fit(X, y)
    cold.set_params(max_iter=2).fit(X, y)
    assert cold.history_[0]["f"] == start
    assert len(cold.loss_curve_) == cold.n_iter_ == 2


def test_warm_start_refuses_other_classes_or_features(digits):
    X, y, _, _ = digits
    clf = NewtonClassifier(**SMALL, warm_start=True, random_state=0).fit(X[y < 5], y[y < 5])
    with pytest.raises(ValueError, match="warm_start needs the classes of the previous fit"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 63 features, but NewtonClassifier is "
                                         "expecting 64"):
        clf.fit(X[y < 5, 1:], y[y < 5])


# -- random_state, and errors in the estimator's own names -------------------------------


def test_random_state_none_draws_a_seed_from_numpys_global_generator(digits):
    X, y, _, _ = digits

    def fit(random_state):
        return NewtonClassifier(**SMALL, random_state=random_state).fit(X, y).coefs_[0]

    state = np.random.get_state()
    try:
        np.random.seed(WORLD.rank)  # under mpiexec each rank's generator differs: rank 0's wins
        first, second = fit(None), fit(None)
        np.random.seed(WORLD.rank)
        repeated = fit(None)
    finally:
        np.random.set_state(state)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(repeated, first)
    np.testing.assert_array_equal(fit(np.random.RandomState(3)),
                                  fit(np.random.RandomState(3)))
    # Every rank holds rank 0's network.
    assert len(set(WORLD.allgather(first.tobytes()))) == 1


@pytest.mark.parametrize("parameter, value", [
    ("random_state", -1), ("max_iter", 0), ("batch_size", 0), ("learning_rate_init", 0.0),
    ("beta_1", 1.0), ("epsilon", 0.0), ("chunk_size", 0), ("solver", "lbfgs"),
    ("xi", 1.0), ("C", "best"), ("comm", "world"),
])
def test_bad_parameters_are_refused_by_the_estimators_name(digits, parameter, value):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match=f"^The '{parameter}' parameter of NewtonClassifier"):
        NewtonClassifier(**{**SMALL, parameter: value}).fit(X, y)


def test_library_errors_name_the_estimators_parameters(digits):
    for library, estimator in LIBRARY_NAMES.items():
        error = ParameterError(f"{{{library}}} must be >= 1")
        assert estimator_message(error) == f"{estimator} must be >= 1"
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="^gn_size 5000 exceeds the 1347 training instances$"):
        NewtonClassifier(**SMALL, gn_size=5000).fit(X, y)
    with pytest.raises(ValueError, match="^sync_fraction needs diagonal$"):
        NewtonClassifier(**SMALL, sync_fraction=0.5).fit(X, y)


# -- model files ---------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [dict(loss="squared", dtype="float32"),
                                      dict(standardize=True, center=False, hidden=())])
def test_save_and_load_give_the_same_predictions(digits, tmp_path, settings):
    X, y, X_test, _ = digits
    names = np.array([f"digit {d}" for d in range(10)])
    clf = NewtonClassifier(**{**DIGITS, **settings}).fit(X, names[y.astype(int)])
    path = tmp_path / "model.npz"
    assert clf.save(path) is clf
    loaded = NewtonClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(X_test), clf.predict(X_test))
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))
    for key in ("hidden", "loss", "standardize", "feature_scale"):
        assert loaded.get_params()[key] == clf.get_params()[key], key
    # the precision it was trained in (the default, None, is the library's)
    assert loaded.dtype == (clf.dtype or ModelConfig.dtype) == str(clf.coefs_[0].dtype)
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    # A loaded network can be trained on (a warm start from the file).
    loaded.set_params(warm_start=True, max_iter=1, random_state=0).fit(X, names[y.astype(int)])
    assert loaded.n_iter_ == 1


def test_load_refuses_what_is_not_a_model_file(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a dnewton model file"):
        NewtonClassifier.load(path)


# -- sub-communicators ---------------------------------------------------------------------


def test_fits_side_by_side_on_sub_communicators_match_their_single_process_fits(digits):
    """A distributed grid search: the ranks split into groups, each fits one C."""
    X, y, X_test, _ = digits
    grid = [1.0, 0.1]
    color = WORLD.rank % len(grid)
    group = WORLD.Split(color, WORLD.rank)
    try:
        clf = NewtonClassifier(**DIGITS, C=grid[color], comm=group).fit(X, y)
        labels = clf.predict(X_test)
        # scikit-learn's tools clone the estimator: the clones fit on the group too.
        assert clone(clf).comm is group
        folds = cross_val_score(clf, X, y, cv=2)
    finally:
        group.Free()
    alone = NewtonClassifier(**DIGITS, C=grid[color], comm=MPI.COMM_SELF)
    alone_folds = cross_val_score(alone, X, y, cv=2)
    alone.fit(X, y)
    np.testing.assert_allclose(clf.objective_, alone.objective_, rtol=1e-9)
    np.testing.assert_array_equal(labels, alone.predict(X_test))
    np.testing.assert_array_equal(folds, alone_folds)
    scores = WORLD.allgather((color, clf.objective_))
    assert len({f for c, f in scores if c == color}) == 1  # one model per group
    # Fitted, it pickles once the communicator is left out.
    assert pickle.loads(pickle.dumps(clf.set_params(comm=None))).objective_ == clf.objective_


SCRIPT = """
import json, sys
import numpy as np
from mpi4py import MPI
from dnewton import NewtonClassifier
from dnewton.io.data import read_dataset

train, test = read_dataset("digits")
clf = NewtonClassifier(**json.loads(sys.argv[2])).fit(train.X, train.y)
report = {"f": clf.objective_, "labels": clf.predict(test.X).tolist(),
          "proba": clf.predict_proba(test.X[:5]).tolist()}
with open(f"{sys.argv[1]}/{MPI.COMM_WORLD.rank}.json", "w") as f:
    json.dump(report, f)
"""

CHECKS = """
import json, sys
from mpi4py import MPI
from sklearn.utils.estimator_checks import check_estimator
from dnewton import NewtonClassifier, NewtonRegressor

results = [result for estimator in (NewtonClassifier, NewtonRegressor)
           for result in check_estimator(estimator(hidden=(8,), max_iter=10), on_skip=None,
                                         on_fail=None,
                                         expected_failed_checks=json.loads(sys.argv[2]))]
failed = sorted(r["check_name"] for r in results if r["status"] == "failed")
with open(f"{sys.argv[1]}/{MPI.COMM_WORLD.rank}.json", "w") as f:
    json.dump({"failed": failed, "checks": len(results)}, f)
"""

DIFFERENT_DATA = """
import json, sys
import numpy as np
from mpi4py import MPI
from dnewton import NewtonClassifier

rng = np.random.default_rng(MPI.COMM_WORLD.rank)  # a different seed on every rank
X, y = rng.standard_normal((30, 4)), np.arange(30) % 2
try:
    NewtonClassifier(hidden=(4,), max_iter=2).fit(X, y)
except ValueError as exc:
    with open(f"{sys.argv[1]}/{MPI.COMM_WORLD.rank}.json", "w") as f:
        json.dump({"error": str(exc)}, f)
"""


def run_script(tmp_path, n_ranks, source, *args, timeout=120):
    """Run a script under mpiexec; returns what each rank wrote to ``OUT/RANK.json``."""
    if mpiexec_path() is None:
        pytest.skip("no mpiexec found")
    script, out = tmp_path / "script.py", tmp_path / "out"
    script.write_text(source)
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MPIEXEC_TIMEOUT=str(timeout))
    proc = subprocess.run([mpiexec_path(), "-n", str(n_ranks), sys.executable, str(script),
                           str(out), *args], capture_output=True, text=True,
                          timeout=timeout + 30, env=env)
    assert proc.returncode == 0, proc.stderr
    return [json.loads((out / f"{rank}.json").read_text()) for rank in range(n_ranks)]


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks", [2, 3])
def test_the_same_script_under_mpiexec_gives_the_single_process_model(digits, tmp_path,
                                                                      n_ranks):
    X, y, X_test, _ = digits
    clf = NewtonClassifier(**DIGITS).fit(X, y)
    params = json.dumps({**DIGITS, "hidden": list(DIGITS["hidden"])})
    for out in run_script(tmp_path, n_ranks, SCRIPT, params):  # every rank returns the predictions
        np.testing.assert_allclose(out["f"], clf.objective_, rtol=1e-9)
        np.testing.assert_array_equal(out["labels"], clf.predict(X_test))
        np.testing.assert_allclose(out["proba"], clf.predict_proba(X_test[:5]), atol=1e-9)


@pytest.mark.mpi
def test_estimator_checks_under_mpiexec(tmp_path):
    for out in run_script(tmp_path, 2, CHECKS, json.dumps(MPI_EXPECTED_FAILURES), timeout=300):
        assert out["failed"] == [] and out["checks"] > 100


@pytest.mark.mpi
def test_ranks_with_different_data_are_refused_on_every_rank(tmp_path):
    outputs = run_script(tmp_path, 3, DIFFERENT_DATA)
    assert outputs == [{"error": "every rank must pass the same data, but the ranks' arrays "
                                 "differ"}] * 3


def test_the_recommended_setting_follows_the_training_set_size():
    """sample_size="auto": the paper's method on small sets; beyond STOCHASTIC_FROM
    instances the stochastic setting for the options left at their defaults."""
    from dnewton.solvers.newton import STOCHASTIC, STOCHASTIC_FROM, SUBSET_FLOOR

    small = NewtonClassifier(random_state=0)._options(3, STOCHASTIC_FROM)
    assert small.sample_size is None and small.gn_ratio == 0.05 and small.cg_max == 250
    assert small.gn_min == SUBSET_FLOOR  # S: 5% of l, at least the floor
    assert NewtonClassifier(gn_size=30)._options(3, 1000).subset_size(1000) == 30
    assert NewtonClassifier(sample_size=None)._options(3, 1000).subset_size(1000) == 50
    assert NewtonClassifier(gn_min=300)._options(3, 1000).subset_size(1000) == 300
    assert NewtonClassifier(gn_ratio=0.01, gn_min=30)._options(3, 1000).subset_size(1000) == 30
    large = NewtonClassifier(cg_max=4)._options(3, STOCHASTIC_FROM + 1)
    assert large.sample_size == STOCHASTIC["sample_size"] and large.cg_max == 4
    assert large.gn_ratio == STOCHASTIC["gn_ratio"] and large.average == STOCHASTIC["average"]
    paper = NewtonClassifier(sample_size=None)._options(3, 10 * STOCHASTIC_FROM)
    assert paper.sample_size is None and paper.average == 0.0


def test_early_stopping_keeps_the_best_validated_network():
    """The classifier's validation scores are the log's; the network kept scores the
    best of them on the validation split (refit: the same split and the same run)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    clf = NewtonClassifier(hidden=(16,), solver="adam", learning_rate_init=0.05,
                           max_iter=30, feature_scale=16, center=True, early_stopping=True,
                           validation_fraction=0.2, n_iter_no_change=2, random_state=1)
    clf.fit(X, y)
    assert clf.status_ == "no_improvement" and clf.n_iter_ < 30
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert len(clf.validation_scores_) == clf.n_iter_
    with pytest.raises(ValueError, match="NewtonClassifier only"):
        NewtonRegressor(early_stopping=True).fit(X, y.astype(float))
