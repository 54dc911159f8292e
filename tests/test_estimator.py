"""NewtonClassifier: scikit-learn's conventions, in one process and unchanged under mpiexec.

scikit-learn's own estimator checks run here in full on a small network (8 hidden
units, 10 iterations, for speed). Only checks the environment cannot run are
skipped, by scikit-learn itself: ``check_array_api_input`` (needs SCIPY_ARRAY_API=1
and an array library) and ``check_classifier_data_not_an_array`` (needs pandas).
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
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from dnewton import NewtonClassifier
from dnewton.io.data import read_dataset

SMALL = dict(hidden=(8,), max_iter=10)
DIGITS = dict(hidden=(16, 12), max_iter=4, feature_scale=16, center=True, random_state=5)

# check_methods_sample_order_invariance shuffles with NumPy's global generator,
# which every process seeds differently: the ranks pass different data, and the
# estimator refuses that on every rank (it cannot train on a mixture).
MPI_EXPECTED_FAILURES = {
    "check_methods_sample_order_invariance":
        "shuffles with the global NumPy generator, seeded differently on each rank",
}


@parametrize_with_checks([NewtonClassifier(**SMALL)],
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
    log = tmp_path / "run.jsonl"
    run_dnewton(1, ["train", "digits", "--hidden", "16,12", "--iterations", "4",
                    "--feature-scale", "16", "--center", "--seed", "5", "--quiet",
                    "--log", log])
    records = read_log(log)
    assert clf.objective_ == records[-1]["f"]
    assert accuracy == records[-1]["test_accuracy"]
    assert clf.n_iter_ == 4 and clf.status_ == "iteration_limit"
    assert [r["f"] for r in clf.history_] == [r["f"] for r in records]
    assert [W.shape for W in clf.coefs_] == [(64, 16), (16, 12), (12, 10)]


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
    single = NewtonClassifier(**DIGITS, dtype="float32").fit(X.astype(np.float32), y)
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
    best = max(path, key=lambda point: (point["holdout_accuracy"], -point["C"]))
    assert clf.C_ == best["C"] and len(path) == 6
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
from dnewton import NewtonClassifier

results = check_estimator(NewtonClassifier(hidden=(8,), max_iter=10), on_skip=None,
                          on_fail=None, expected_failed_checks=json.loads(sys.argv[2]))
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
        assert out["failed"] == [] and out["checks"] > 40


@pytest.mark.mpi
def test_ranks_with_different_data_are_refused_on_every_rank(tmp_path):
    outputs = run_script(tmp_path, 3, DIFFERENT_DATA)
    assert outputs == [{"error": "every rank must pass the same data, but the ranks' arrays "
                                 "differ"}] * 3
