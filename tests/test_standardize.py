"""--standardize: per-feature mean and std of the training set, on every layout, in
the model file, in `dnewton predict` and in `NewtonClassifier`."""

import numpy as np
import pytest
from helpers import LAYOUTS, WORLD, outputs, random_theta
from mpi4py import MPI
from shared_runs import SharedRuns
from threadpoolctl import threadpool_limits

from dnewton import NewtonClassifier
from dnewton.app.prediction import Predictor
from dnewton.app.problem import ModelConfig, Problem
from dnewton.io.data import RawData, read_dataset
from dnewton.io.model_file import STD_VERSION, VERSION, Model, load_model, read_arrays, save_arrays
from dnewton.planning.planner import layout_for

SCALE = 2.0
CONSTANT = [2, 5]  # columns 2 (all 3.5) and 5 (all 0) of `with_constants`


def with_constants(n_instances=23, n_features=7, seed=3):
    """Dense data, the same on every rank, with two constant columns and a wide spread."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_instances, n_features)) * np.arange(1, n_features + 1) * 10 + 4
    X[:, 2], X[:, 5] = 3.5, 0.0
    return RawData(X, (np.arange(n_instances) % 3).astype(np.float64), "constants")


def build(partitions, dtype="float64", data=None):
    config = ModelConfig(hidden=(5, 4), activation="tanh", partitions=partitions,
                         feature_scale=SCALE, standardize=True, batch_size=4, dtype=dtype,
                         replicas=1)
    return Problem.build(WORLD, data if data is not None else with_constants(), None, config)


@pytest.mark.parametrize("partitions", LAYOUTS)
def test_standardized_training_data_has_mean_0_and_std_1_on_every_layout(partitions):
    raw = with_constants()
    problem = build(partitions)
    try:
        for a, block in problem.objective.data.features.items():
            cols = np.arange(raw.n_features)[problem.layout.group(0, a)]
            varying = ~np.isin(cols, CONSTANT)
            np.testing.assert_allclose(block.mean(axis=0), 0, atol=1e-12)
            np.testing.assert_allclose(block[:, varying].std(axis=0), 1, rtol=1e-12)
            # constant columns: centred (to 0) but not divided
            np.testing.assert_array_equal(block[:, ~varying], 0)
            np.testing.assert_array_equal(problem.preprocessing.stds[a][~varying], 1)
        model = problem.world.bcast(problem.gather_model(random_theta(problem)))
        want = raw.X / SCALE
        np.testing.assert_allclose(model.mean, want.mean(axis=0), rtol=1e-14)
        std = want.std(axis=0)
        std[CONSTANT] = 1.0
        np.testing.assert_allclose(model.std, std, rtol=1e-13)
    finally:
        problem.close()


def test_a_column_constant_but_for_rounding_is_not_divided():
    raw = with_constants()
    raw.X[:, 2] = 0.1 * 3  # 0.30000000000000004: sums of it do not round exactly
    raw.X[::2, 2] = 0.3
    problem = build(None, data=raw)
    try:
        model = problem.world.bcast(problem.gather_model(random_theta(problem)))
        assert model.std[2] == 1.0 and model.std[5] == 1.0
    finally:
        problem.close()


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_train_save_load_predict_gives_the_in_process_outputs(tmp_path, partitions, dtype,
                                                              rtol):
    raw = with_constants()
    problem = build(partitions, dtype)
    try:
        theta = random_theta(problem).astype(problem.network.dtype)
        want = outputs(problem, theta, slice(None))
        model = problem.gather_model(theta)
    finally:
        problem.close()
    path = WORLD.bcast(str(tmp_path / "model.npz"))  # rank 0's folder for all
    if WORLD.rank == 0:
        save_arrays(path, model.arrays(), "model")
        assert int(read_arrays(path, "model")["version"]) == STD_VERSION
    loaded = load_model(WORLD, path)
    # predict on another layout than training's
    predictor = Predictor(WORLD, loaded, None if partitions else (2, 1, 1, 1), batch_size=5)
    try:
        got = predictor.outputs(raw)
    finally:
        predictor.close()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_a_model_without_std_stays_version_1_and_loads_unstandardized(tmp_path):
    rng = np.random.default_rng(0)
    weights, biases = [rng.standard_normal((3, 2))], [np.zeros(2)]
    model = Model((3, 2), "relu", "softmax", 1.0, None, np.array([0.0, 1.0]), weights, biases)
    path = WORLD.bcast(str(tmp_path / "model.npz"))
    if WORLD.rank == 0:
        arrays = model.arrays()
        assert int(arrays["version"]) == VERSION and "std" not in arrays
        save_arrays(path, arrays, "model")
    loaded = load_model(WORLD, path)
    assert loaded.std is None and loaded.mean is None
    prep = loaded.preprocessing(layout_for(loaded.widths, WORLD.size))
    assert not prep.standardize and not prep.centers


# -- whole runs ---------------------------------------------------------------------------

TRAIN = ["train", "digits", "--hidden", "16,12", "--iterations", "4", "--feature-scale", "16",
         "--standardize", "--quiet", "--seed", "5"]


# Digits with the default objective (softmax, C = 1; 30 iterations, 64,64, seed 1):
# raw pixels (0..16) reach 96.9% test accuracy, scaled and centred (the documented
# recipe) 98.0%, standardized 97.3%. Standardizing, with no knowledge of the pixels'
# range, beats raw pixels and comes within a point (4 of 450 images) of the recipe.
# Raw pixels (0..16) make the run sensitive to rounding over 30 iterations (the two
# Jacobian modes end 3 points of accuracy apart), so the product is pinned to the one
# the expectation was measured with, rather than left to the planner.
DEFAULT_C = ["train", "digits", "--hidden", "64,64", "--iterations", "30", "--quiet",
             "--seed", "1", "--jacobian", "stored"]
FEATURES = {"raw": [], "center": ["--feature-scale", "16", "--center"],
            "standardize": ["--standardize"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py);
    the 2-rank job first: it writes the model that the 3-rank job predicts with."""
    runs = SharedRuns(tmp_path_factory.mktemp("standardize"), 300)
    model = runs.scratch / "model.npz"
    runs.add("trained", 2, [*TRAIN, "--partitions", "2,1,1,1", "--model", model, "--log",
                            runs.log_path("trained")])
    runs.add("predict", 3, ["predict", model, "digits", "--output", runs.scratch / "labels"])
    runs.add("one rank", 1, [*TRAIN, "--log", runs.log_path("one rank")])
    for name, extra in FEATURES.items():
        runs.add(name, 1, [*DEFAULT_C, *extra, "--log", runs.log_path(name)])
    return runs.run()


@pytest.mark.mpi
def test_cli_model_predicts_the_logged_accuracy_and_the_estimator_matches(runs):
    accuracy = runs.log("trained")[-1]["test_accuracy"]
    proc = runs.checked("predict")
    assert f"accuracy {100 * accuracy:.2f}%" in proc.stdout
    train, test = read_dataset("digits")
    np.testing.assert_array_equal(np.mean(np.loadtxt(runs.scratch / "labels") == test.y),
                                  accuracy)

    log1 = runs.log("one rank")
    with threadpool_limits(limits=1):  # as the runs' BLAS: the same sums, bit for bit
        clf = NewtonClassifier(hidden=(16, 12), max_iter=4, feature_scale=16, standardize=True,
                               random_state=5).fit(train.X, train.y)
        assert clf.score(test.X, test.y) == log1[-1]["test_accuracy"]
    assert [r["f"] for r in clf.history_] == [r["f"] for r in log1]
    saved = load_model(MPI.COMM_SELF, runs.scratch / "model.npz")
    np.testing.assert_allclose(clf.std_, saved.std, rtol=1e-15)
    np.testing.assert_allclose(clf.mean_, saved.mean, rtol=1e-15)


@pytest.mark.mpi
def test_standardize_beats_raw_features_and_nears_the_recipe_with_the_default_C(runs):
    accuracy = {name: runs.log(name)[-1]["test_accuracy"] for name in FEATURES}
    assert accuracy["standardize"] >= accuracy["raw"], accuracy
    assert accuracy["standardize"] >= accuracy["center"] - 0.01, accuracy
    assert accuracy["standardize"] >= 0.95, accuracy


def test_checkpoint_settings_include_standardize():
    from dnewton.app.training import run_settings
    from dnewton.solvers.newton import NewtonOptions

    problem = build(None)
    try:
        assert run_settings(problem, NewtonOptions())["standardize"] is True
    finally:
        problem.close()
