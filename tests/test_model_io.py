"""Model files: dense weights in and out of any layout, atomic writes, clear refusals,
and predictions that do not depend on the layout that trained or predicts."""

import numpy as np
import pytest
from helpers import local_vector, make_problem, n_global, read_log, run_dnewton, unflatten
from mpi4py import MPI
from scipy.sparse import csr_matrix
from shared_runs import SharedRuns

from dnewton.app.prediction import Predictor
from dnewton.errors import InputError
from dnewton.io.data import RawData, read_dataset
from dnewton.io.model_file import (
    REGRESSION,
    Model,
    load_model,
    read_arrays,
    save_arrays,
    write_temporary,
)
from dnewton.model.losses import SquaredLoss
from dnewton.parallel.layout import Layout

WIDTHS = (7, 5, 4, 3)


def random_model(seed=0, center=True, dtype=np.float64):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(WIDTHS[m : m + 2]).astype(dtype)
               for m in range(len(WIDTHS) - 1)]
    biases = [rng.standard_normal(WIDTHS[m + 1]).astype(dtype) for m in range(len(WIDTHS) - 1)]
    mean = rng.standard_normal(WIDTHS[0]) if center else None
    return Model(WIDTHS, "tanh", "softmax", 2.0, mean, np.array([-1.0, 0.0, 4.0]),
                 weights, biases)


@pytest.mark.parametrize("partitions, n_ranks", [((1, 1, 1, 1), 1), ((2, 3, 2, 1), 3),
                                                  ((3, 1, 2, 3), 4), ((7, 5, 4, 3), 5)])
def test_blocks_of_every_rank_reassemble_the_dense_model(partitions, n_ranks):
    model = random_model()
    layout = Layout(WIDTHS, partitions, n_ranks)
    weights = [np.full_like(W, np.nan) for W in model.weights]
    biases = [np.full_like(b, np.nan) for b in model.biases]
    for rank in range(n_ranks):
        theta = model.local_parameters(layout, rank)
        offset = 0
        for blk in layout.blocks_of(rank):
            n_rows, n_cols = blk.shape
            weights[blk.layer - 1][blk.rows, blk.cols] = theta[
                offset : offset + n_rows * n_cols].reshape(n_rows, n_cols)
            offset += n_rows * n_cols
            if blk.has_bias:
                biases[blk.layer - 1][blk.cols] = theta[offset : offset + n_cols]
                offset += n_cols
        assert offset == len(theta)
    for got, want in zip(weights + biases, model.weights + model.biases):
        np.testing.assert_array_equal(got, want)
    prep = model.preprocessing(layout)
    np.testing.assert_array_equal(
        np.concatenate([prep.means[a] for a in range(partitions[0])]), model.mean)


@pytest.mark.parametrize("partitions", [None, (2, 3, 2, 1), (3, 1, 2, 3)])
def test_gather_model_is_the_dense_network(partitions):
    problem = make_problem(partitions=partitions)
    try:
        vec = np.random.default_rng(1).standard_normal(n_global(problem))
        theta = local_vector(problem, vec)
        model = problem.world.bcast(problem.gather_model(theta))
        want_W, want_b = unflatten(problem, vec)
        for got, want in zip(model.weights + model.biases, want_W + want_b):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            model.local_parameters(problem.layout, problem.world.rank), theta)
    finally:
        problem.close()


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_file_round_trip(tmp_path, center, dtype):
    model = random_model(center=center, dtype=dtype)
    path = tmp_path / "model.npz"
    save_arrays(path, model.arrays(), "model")
    loaded = load_model(MPI.COMM_WORLD, path)
    assert (loaded.widths, loaded.activation, loaded.loss, loaded.feature_scale,
            loaded.dtype) == (WIDTHS, "tanh", "softmax", 2.0, dtype)
    for got, want in zip(loaded.weights + loaded.biases + [loaded.classes],
                         model.weights + model.biases + [model.classes]):
        np.testing.assert_array_equal(got, want)
    if center:
        np.testing.assert_array_equal(loaded.mean, model.mean)
    else:
        assert loaded.mean is None
    assert not (tmp_path / "model.npz.tmp").exists()


def regression_model(seed=0, normalize_y=True, standardize=False):
    rng = np.random.default_rng(seed)
    base = random_model(seed, center=True)
    k = WIDTHS[-1]
    return Model(WIDTHS, "tanh", "squared", 2.0, base.mean, None, base.weights, base.biases,
                 rng.uniform(0.5, 2, WIDTHS[0]) if standardize else None, task=REGRESSION,
                 target_mean=rng.standard_normal(k) if normalize_y else None,
                 target_std=rng.uniform(0.5, 2, k) if normalize_y else None)


@pytest.mark.parametrize("normalize_y", [True, False])
@pytest.mark.parametrize("standardize", [True, False])
def test_a_regressor_file_round_trip(tmp_path, normalize_y, standardize):
    model = regression_model(normalize_y=normalize_y, standardize=standardize)
    path = tmp_path / "model.npz"
    save_arrays(path, model.arrays(), "model")
    assert int(read_arrays(path, "model")["version"]) == 3  # older readers refuse it
    loaded = load_model(MPI.COMM_WORLD, path)
    assert loaded.regression and loaded.classes is None and loaded.loss == "squared"
    for key in ("mean", "std", "target_mean", "target_std"):
        want = getattr(model, key)
        if want is None:
            assert getattr(loaded, key) is None, key
        else:
            np.testing.assert_array_equal(getattr(loaded, key), want)
    for got, want in zip(loaded.weights + loaded.biases, model.weights + model.biases):
        np.testing.assert_array_equal(got, want)
    z = np.random.default_rng(5).standard_normal((4, WIDTHS[-1]))
    want = z * model.target_std + model.target_mean if normalize_y else z
    np.testing.assert_array_equal(loaded.predictions(z), want)


def test_a_classifier_file_is_read_as_a_classifier(tmp_path):
    """Versions 1 and 2, which predate regressors, hold classifiers."""
    path = tmp_path / "model.npz"
    save_arrays(path, random_model().arrays(), "model")
    assert int(read_arrays(path, "model")["version"]) == 1
    loaded = load_model(MPI.COMM_WORLD, path)
    assert not loaded.regression
    assert loaded.describe() == "a classifier of 3 classes (softmax loss)"


@pytest.mark.parametrize("edit, message", [
    (dict(task=np.array("classification")), "whose task is not 'regression'"),
    (dict(loss=np.array("softmax")), "a regressor with the softmax loss"),
    (dict(target_std=np.array([1.0, 0.0, 1.0])), "target standard deviations must be positive"),
    (dict(target_mean=np.zeros(2)), "shapes do not match"),
    (dict(target_mean=np.array([0.0, np.inf, 0.0])), "not finite"),
])
def test_a_damaged_regressor_file_is_refused(tmp_path, edit, message):
    arrays = regression_model().arrays()
    arrays.update(edit)
    path = tmp_path / "model.npz"
    save_arrays(path, arrays, "model")
    with pytest.raises(InputError, match=message):
        load_model(MPI.COMM_WORLD, path)


def test_a_regressor_file_without_its_target_scaling_is_refused(tmp_path):
    arrays = regression_model().arrays()
    del arrays["target_std"]
    path = tmp_path / "model.npz"
    save_arrays(path, arrays, "model")
    with pytest.raises(InputError, match="lacks 'target_std'"):
        load_model(MPI.COMM_WORLD, path)


def test_an_unfinished_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "model.npz"
    save_arrays(path, random_model(seed=1).arrays(), "model")
    # A write killed before its rename: the temporary file is there, truncated.
    temporary = write_temporary(path, random_model(seed=2).arrays())
    temporary.write_bytes(temporary.read_bytes()[:100])
    loaded = load_model(MPI.COMM_WORLD, path)
    np.testing.assert_array_equal(loaded.weights[0], random_model(seed=1).weights[0])


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_text("not a zip"), "not a readable model file"),
    (lambda path: path.write_bytes(path.read_bytes()[:300]), "not a readable model file"),
    (lambda path: np.savez(path, x=np.zeros(2)), "not a dnewton model file"),
    (lambda path: path.unlink(), "no such model file"),
])
def test_damaged_model_files_are_refused(tmp_path, damage, message):
    path = tmp_path / "model.npz"
    save_arrays(path, random_model().arrays(), "model")
    damage(path)
    with pytest.raises(InputError, match=message):
        load_model(MPI.COMM_WORLD, path)


def test_weights_of_another_precision_than_recorded_are_refused(tmp_path):
    arrays = random_model(dtype=np.float32).arrays()
    arrays["b2"] = arrays["b2"].astype(np.float64)
    path = tmp_path / "model.npz"
    save_arrays(path, arrays, "model")
    with pytest.raises(InputError, match="recorded precision 'float32'"):
        load_model(MPI.COMM_WORLD, path)


def test_inconsistent_shapes_are_refused(tmp_path):
    arrays = random_model().arrays()
    arrays["W2"] = np.zeros((5, 5))
    path = tmp_path / "model.npz"
    save_arrays(path, arrays, "model")
    with pytest.raises(InputError, match="shapes do not match"):
        load_model(MPI.COMM_WORLD, path)
    assert set(read_arrays(path, "model")) >= {"W1", "b1", "widths", "classes"}


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_predictor_matches_a_dense_forward_pass(dtype, rtol):
    model = random_model(dtype=dtype)
    X = np.random.default_rng(3).standard_normal((9, WIDTHS[0]))
    raw = RawData(csr_matrix(X), np.zeros(9), "random")  # sparse, as LIBSVM gives
    predictor = Predictor(MPI.COMM_WORLD, model, (3, 2, 1, 1), batch_size=4)
    try:
        got = predictor.outputs(raw)
    finally:
        predictor.close()
    z = X / model.feature_scale - model.mean
    for m, (W, b) in enumerate(zip(model.weights, model.biases)):
        z = z @ W.astype(np.float64) + b
        if m < len(model.weights) - 1:
            z = np.tanh(z)
    np.testing.assert_allclose(got, z, rtol=rtol, atol=rtol)


def test_simplex_projection_is_a_distribution_with_the_outputs_order():
    z = np.random.default_rng(4).standard_normal((200, 6)) * 3
    z[0] = [2, 2, -1, 0, 0.5, 3]  # a row already beyond [0, 1]
    p = SquaredLoss.probabilities(z)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(np.argmax(p, axis=1), np.argmax(z, axis=1))
    inside = np.array([[0.2, 0.3, 0.5]])
    np.testing.assert_allclose(SquaredLoss.probabilities(inside), inside)


TRAIN = ["train", "digits", "--hidden", "16,12", "--iterations", "4", "--feature-scale", "16",
         "--center", "--quiet", "--seed", "5"]


PREDICTIONS = [(1, None), (3, "2,1,2,1"), (3, "1,1,3,2")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in shared jobs (shared_runs.py): a model trained on
    2 ranks with layout 1,2,1,1 (its log and its test labels), then the predictions."""
    runs = SharedRuns(tmp_path_factory.mktemp("trained"), 60)
    tmp = runs.scratch
    runs.add("trained", 2, [*TRAIN, "--partitions", "1,2,1,1", "--model", tmp / "model.npz",
                            "--log", tmp / "run.jsonl"])
    runs.add("unwritable", 2, [*TRAIN, "--model", tmp / "no" / "model.npz"])
    runs.add("reference", 1, ["predict", tmp / "model.npz", "digits", "--output",
                              tmp / "labels-1.txt"])
    for i, (n_ranks, partitions) in enumerate(PREDICTIONS):
        extra = [] if partitions is None else ["--partitions", partitions]
        runs.add(("predict", i), n_ranks, ["predict", tmp / "model.npz", "digits", "--output",
                                           tmp / f"labels{i}.txt", *extra])
    runs.add("missing", 3, ["predict", tmp / "none.npz", "digits"])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(PREDICTIONS)),
                         ids=[f"{n}-{p}" for n, p in PREDICTIONS])
def test_predict_with_any_layout_gives_the_training_run_labels(runs, case):
    runs.checked("trained")
    proc = runs.checked(("predict", case))
    predicted = np.loadtxt(runs.scratch / f"labels{case}.txt")
    _, test = read_dataset("digits")
    final_accuracy = read_log(runs.scratch / "run.jsonl")[-1]["test_accuracy"]
    assert np.mean(predicted == test.y) == final_accuracy
    assert f"accuracy {100 * final_accuracy:.2f}%" in proc.stdout
    assert proc.stdout.count("accuracy") == 1  # rank 0 alone prints
    runs.checked("reference")
    np.testing.assert_array_equal(predicted, np.loadtxt(runs.scratch / "labels-1.txt"))


@pytest.mark.mpi
def test_predict_refuses_a_missing_model_on_every_rank(runs):
    proc = runs["missing"]
    assert proc.returncode == 2 and proc.statuses == [2, 2, 2], proc.stderr
    assert proc.stderr.count("none.npz: no such model file") == 1, proc.stderr


@pytest.mark.mpi
def test_train_refuses_an_unwritable_model_path_before_training(runs):
    proc = runs["unwritable"]
    assert proc.returncode == 2 and proc.stderr.count("cannot write in") == 1, proc.stderr
    assert "iter" not in proc.stdout


@pytest.mark.mpi
def test_predict_with_a_regressors_model_prints_its_targets_and_r2(tmp_path):
    from sklearn.datasets import load_diabetes
    from sklearn.metrics import r2_score

    from dnewton import NewtonRegressor

    X, y = load_diabetes(return_X_y=True)
    reg = NewtonRegressor(hidden=(8,), max_iter=10, standardize=True, random_state=0,
                          dtype="float64").fit(
        X[:300], y[:300])
    reg.save(tmp_path / "regressor.npz")
    np.savez(tmp_path / "test.npz", X=X[300:], y=y[300:])
    predicted = tmp_path / "predicted.txt"
    proc = run_dnewton(2, ["predict", tmp_path / "regressor.npz", tmp_path / "test.npz",
                           "--output", predicted])
    np.testing.assert_allclose(np.loadtxt(predicted), reg.predict(X[300:]), rtol=1e-12)
    assert f"R^2 {r2_score(y[300:], reg.predict(X[300:])):.4f}" in proc.stdout
    assert "predicted targets written to" in proc.stdout and "accuracy" not in proc.stdout
    proc = run_dnewton(1, ["predict", tmp_path / "regressor.npz", tmp_path / "test.npz",
                           "--output", predicted, "--proba"], 60, check=False)
    assert proc.returncode == 2
    assert "--proba: " in proc.stderr and "holds a regressor of 1 target" in proc.stderr
