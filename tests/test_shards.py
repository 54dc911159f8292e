"""Data read by shares (io/shards.py): every format, layout and number of copies gives
the one-rank objective, and no rank keeps more than its share (in float64, to whose
rounding the values read are compared).

The in-process tests also run under ``mpiexec -n 3`` (and `test_every_rank_count`
runs this file on 4 ranks in one launch); the data files are written once into a
folder every rank sees.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import LAYOUTS, WORLD, n_global, read_log, run_dnewton, run_python, unflatten
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI
from scipy import sparse
from sklearn.datasets import dump_svmlight_file

from dnewton.app.prediction import Predictor
from dnewton.app.problem import ModelConfig, Problem
from dnewton.errors import InputError
from dnewton.io.data import RawData
from dnewton.io.shards import ShardedData, _take, convert, open_dataset, parse_range

N, N_FEATURES = 41, 9
PREPROCESSING = {
    "raw": {},
    "scaled": {"feature_scale": 4.0},
    "standardized": {"feature_scale": 4.0, "standardize": True},
}


def dense_set():
    """Dense values with a constant column, a zero column and a wide spread."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((N, N_FEATURES)) * np.arange(1, N_FEATURES + 1) + 3
    X[:, 2], X[:, 6] = 1.5, 0.0
    return X, (np.arange(N) % 3 + 1).astype(np.float64)


def sparse_set():
    """About 8% non-zero: below `SPARSE_MAX_DENSITY`, so it stays CSR unless centred."""
    rng = np.random.default_rng(12)
    X = sparse.random(N, N_FEATURES * 3, density=0.08, random_state=rng, format="csr")
    X.data = np.round(X.data * 10, 3) + 1
    X = X.toarray()
    X[0, -1] = 2.0  # the files' widths are their largest index
    return X, (np.arange(N) % 4).astype(np.float64)


@pytest.fixture(scope="module")
def files():
    """{(set, format): path}: each set as LIBSVM text, .npz (stored and compressed)
    and a dnewton-npy folder (by `convert`, collective), in one folder on every rank."""
    folder = WORLD.bcast(tempfile.mkdtemp(prefix="dnewton-shards-") if WORLD.rank == 0
                         else None)
    folder = Path(folder)
    paths = {}
    for name, (X, y) in (("dense", dense_set()), ("sparse", sparse_set())):
        paths[name, "libsvm"] = folder / f"{name}.svm"
        paths[name, "npz"] = folder / f"{name}.npz"
        paths[name, "npz-compressed"] = folder / f"{name}.c.npz"
        if WORLD.rank == 0:
            dump_svmlight_file(X, y, str(paths[name, "libsvm"]), zero_based=False)
            np.savez(paths[name, "npz"], X=X, y=y)
            np.savez_compressed(paths[name, "npz-compressed"], X=X.astype(np.float32), y=y)
        WORLD.Barrier()
        paths[name, "npy"] = folder / f"{name}.npyd"
        convert(WORLD, paths[name, "libsvm"], paths[name, "npy"])
    return paths


def reference(name):
    """The set in memory (the one-rank input), with the values its files hold."""
    X, y = dense_set() if name == "dense" else sparse_set()
    return RawData(X, y, name)


def objective(comm, data, replicas, partitions, **prep):
    """f, the gradient and a Gauss-Newton product at the initial parameters, vectors
    gathered on rank 0 (None elsewhere), and the model's means and stds."""
    config = ModelConfig(dtype="float64", hidden=(5, 4), activation="tanh", C=0.3,
                         replicas=replicas, partitions=partitions, batch_size=8, **prep)
    problem = Problem.build(comm, data, None, config)
    try:
        objective = problem.objective
        evaluation = objective.evaluate(problem.network.initial_parameters(2))
        grad = objective.gradient(evaluation)
        operator = objective.gauss_newton(evaluation, np.arange(0, N, 3), 0.5)
        # v the same global vector on every layout: each rank takes its part
        v = np.linspace(-1.0, 1.0, n_global(problem))
        v = problem.layout.parameters(problem.rank).scatter(*unflatten(problem, v))
        product = np.empty_like(v)
        operator.apply(v, product)
        model = problem.gather_model(problem.network.initial_parameters(2))
        return (evaluation.f, problem.gather_vector(grad), problem.gather_vector(product),
                model, objective.data.sparse)
    finally:
        problem.close()


def layouts(n_ranks):
    """The shared test layouts that give each of `n_ranks` ranks a block."""
    return [p for p in LAYOUTS
            if p is None or sum(a * b for a, b in zip(p, p[1:])) >= n_ranks]


def copy_counts():
    return [r for r in range(1, WORLD.size + 1) if WORLD.size % r == 0]


@pytest.mark.parametrize("name", ["dense", "sparse"])
@pytest.mark.parametrize("fmt", ["libsvm", "npz", "npz-compressed", "npy"])
@pytest.mark.parametrize("prep", list(PREPROCESSING))
def test_every_format_layout_and_copy_count_gives_the_one_rank_objective(files, name, fmt,
                                                                         prep):
    if fmt == "npz-compressed" and name == "sparse":
        pytest.skip("one compressed .npz is enough")
    raw = reference(name)
    if fmt == "npz-compressed":  # stored as float32: compare with those values
        raw = RawData(raw.X.astype(np.float32).astype(np.float64), raw.y, raw.source)
    if name == "sparse" and fmt in ("libsvm", "npy"):
        raw = RawData(sparse.csr_matrix(raw.X), raw.y, raw.source)
    f1, grad1, product1, model1, sparse1 = objective(MPI.COMM_SELF, raw, 1, None,
                                                     **PREPROCESSING[prep])
    data, _ = open_dataset(WORLD, files[name, fmt])
    assert isinstance(data, ShardedData)
    assert data.n_instances == N and data.n_features == raw.n_features
    np.testing.assert_array_equal(data.y, raw.y)
    for replicas in copy_counts():
        for partitions in layouts(WORLD.size // replicas):
            f, grad, product, model, kept_sparse = objective(
                WORLD, data, replicas, partitions, **PREPROCESSING[prep])
            assert f == pytest.approx(f1, rel=1e-9, abs=0)
            assert kept_sparse == sparse1
            if WORLD.rank == 0:
                np.testing.assert_allclose(grad, grad1, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(product, product1, rtol=1e-9, atol=1e-12)
                for part in ("mean", "std"):
                    if getattr(model1, part) is None:
                        assert getattr(model, part) is None
                    else:
                        np.testing.assert_allclose(getattr(model, part),
                                                   getattr(model1, part), rtol=1e-12)


def test_a_rank_keeps_only_its_share(files):
    """Each copy's ranks hold its rows, each rank the columns of its input groups."""
    data, _ = open_dataset(WORLD, files["dense", "libsvm"])
    X, _ = dense_set()
    config = ModelConfig(dtype="float64", hidden=(5,), replicas=WORLD.size, partitions=(1, 1, 1))
    problem = Problem.build(WORLD, data, None, config)
    try:
        share = problem.objective.data
        rows = slice(share.first, share.first + share.n_instances)
        assert share.n_instances in (N // WORLD.size, N // WORLD.size + 1)
        np.testing.assert_allclose(share.features[0], X[rows], rtol=1e-15)  # text: 17 digits
    finally:
        problem.close()


def test_predictions_read_by_shares_equal_those_of_the_whole_set(files):
    raw = reference("dense")
    config = ModelConfig(dtype="float64", hidden=(5,), replicas=1, partitions=(1, 1, 1),
                         center=True)
    problem = Problem.build(MPI.COMM_SELF, raw, None, config)
    try:
        model = problem.gather_model(problem.network.initial_parameters(3))
    finally:
        problem.close()
    model = WORLD.bcast(model)
    data, _ = open_dataset(WORLD, files["dense", "npz"])
    for partitions in (None, (1, 2, 2)):
        predictor = Predictor(WORLD, model, partitions)
        try:
            sharded = predictor.outputs(data)
            whole = predictor.outputs(raw)
        finally:
            predictor.close()
        np.testing.assert_allclose(sharded, whole, rtol=1e-12)


def test_the_npy_folder_holds_the_libsvm_file(files):
    data, _ = open_dataset(WORLD, files["sparse", "npy"])
    whole = data.whole()
    X, y = sparse_set()
    np.testing.assert_allclose(whole.X.toarray(), X[:, :whole.n_features], rtol=1e-15)
    np.testing.assert_array_equal(whole.y, y)
    meta = json.loads((files["sparse", "npy"] / "meta.json").read_text())
    assert meta["nnz"] == np.count_nonzero(X)


def test_a_libsvm_file_read_by_shares_equals_the_whole_file(files):
    data, _ = open_dataset(WORLD, files["sparse", "libsvm"])
    whole = data.whole()
    X, y = sparse_set()
    np.testing.assert_allclose(whole.X.toarray(), X[:, :whole.n_features], rtol=1e-15)
    np.testing.assert_array_equal(whole.y, y)
    assert data.nnz == np.count_nonzero(X)


@pytest.mark.parametrize("text, message", [
    ("1 1:0.5\n2 3:x\n", "line 52: value of feature 3 'x' is not a number"),
    ("1 1:0.5\n2 3:1 2:1\n", "line 52: feature index 2 after 3"),
    ("1 1:nan\n", "line 51: value of feature 1 nan is not finite"),
])
def test_a_bad_line_fails_every_rank_with_one_message(text, message):
    folder = WORLD.bcast(tempfile.mkdtemp(prefix="dnewton-bad-") if WORLD.rank == 0
                         else None)
    path = Path(folder) / "bad.svm"
    if WORLD.rank == 0:
        path.write_text("1 2:1\n" * 50 + text + "1 2:1\n" * 50)
    WORLD.Barrier()
    with pytest.raises(InputError, match=message):
        open_dataset(WORLD, path)


@pytest.mark.mpi
def test_every_rank_count():
    """This file's in-process tests on 4 ranks (2 and 4 copies and one), in one launch."""
    proc = run_python(4, ["-m", "pytest", "-q", "-x", "-m", "not mpi", "-p",
                          "no:cacheprovider", __file__], timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_an_unseen_test_label_fails_every_copy_alike(files):
    """Only one copy's share holds the bad label; every rank raises the same error."""
    folder = WORLD.bcast(tempfile.mkdtemp(prefix="dnewton-unseen-") if WORLD.rank == 0
                         else None)
    test = Path(folder) / "test.svm"
    if WORLD.rank == 0:
        test.write_text("1 1:0.5\n" * 5 + "9 2:0.5\n")
    WORLD.Barrier()
    train, _ = open_dataset(WORLD, files["dense", "libsvm"])
    test, _ = open_dataset(WORLD, test, n_features=train.n_features)
    config = ModelConfig(dtype="float64", hidden=(5,), replicas=WORLD.size, partitions=(1, 1, 1))
    with pytest.raises(InputError, match=r"label 9 \(instance 6\) was never seen"):
        Problem.build(WORLD, train, test, config)


# Each rank of the job below builds a problem from a LIBSVM file far larger than the
# model (30,000 x 200, 5% non-zero; 2 hidden units) and reports the bytes of the arrays
# it keeps, of the rows it parsed, and tracemalloc's peak while reading (imports done
# before, so only the data's allocations count).
MEMORY_SCRIPT = r"""
import json, sys, tracemalloc
import scipy.sparse, sklearn.datasets  # imported before counting
from mpi4py import MPI
from dnewton.app.problem import ModelConfig, Problem
from dnewton.io.shards import open_dataset
world = MPI.COMM_WORLD
for center in (False, True):
    tracemalloc.start()
    data, _ = open_dataset(world, sys.argv[1], once=True)
    X = data.parsed
    parsed = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    config = ModelConfig(dtype="float64", hidden=(2,), replicas=world.size, partitions=(1, 1, 1),
                         center=center)
    problem = Problem.build(world, data, None, config)
    share = problem.objective.data
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    labels = share.labels.nbytes if share.labels is not None else 0
    with open(f"{sys.argv[2]}.{world.rank}.{int(center)}.json", "w") as f:
        json.dump(dict(rank=world.rank, center=center, kept=share.stored_bytes() + labels,
                       parsed=parsed, peak=peak, first=share.first, rows=share.n_instances,
                       sparse=share.sparse, y=data.y.nbytes, still=data.parsed is not None), f)
    problem.close()
"""


@pytest.mark.mpi
def test_no_rank_holds_more_than_its_share(tmp_path):
    """3 ranks, 3 copies: a rank keeps exactly its copy's rows (CSR: their entries;
    centred: dense), drops the rows it parsed, and at its peak held no more than that,
    all labels and the transients of its own byte range (parsed, then sent and
    received: at most 4 times its CSR bytes); centred, under half the whole set."""
    rng = np.random.default_rng(0)
    l, n = 30000, 200
    X = sparse.random(l, n, density=0.05, random_state=rng, format="csr")
    X.data = np.round(X.data * 100, 2) + 1
    X = X.tolil()
    X[0, n - 1] = 1.0  # the file's width is its largest index
    X = X.tocsr()
    y = rng.integers(0, 3, l)
    path = tmp_path / "big.svm"
    dump_svmlight_file(X, y, str(path), zero_based=False)
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    run_python(3, [script, path, tmp_path / "report"], timeout=240)
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("report.*.json"))]
    assert len(reports) == 6
    for rep in reports:
        rows = slice(rep["first"], rep["first"] + rep["rows"])
        assert rep["rows"] == l // 3
        if rep["center"]:
            assert not rep["sparse"]
            share = rep["rows"] * n * 8
        else:
            assert rep["sparse"]
            share = X[rows].nnz * 12 + (rep["rows"] + 1) * 4
        assert rep["kept"] == share + rep["rows"] * 8  # + its labels (int64)
        assert not rep["still"]
        assert rep["peak"] <= rep["kept"] + rep["y"] + 4 * rep["parsed"]
        if rep["center"]:  # a rank that read the whole file would hold all of it
            assert rep["peak"] < 0.5 * l * n * 8


@pytest.mark.mpi
def test_convert_then_train_on_copies_gives_the_one_rank_run(tmp_path):
    """`dnewton convert` on 2 ranks, then training from the folder on 2 copies, gives
    the log of one rank training from the text; the start-up says the memory."""
    X, y = sparse_set()
    text = tmp_path / "train.svm"
    dump_svmlight_file(X, y, str(text), zero_based=False)
    folder = tmp_path / "train.npyd"
    proc = run_dnewton(2, ["convert", text, folder])
    assert f"{N} instances, {X.shape[1]} features, {np.count_nonzero(X):,} non-zeros" \
        in proc.stdout
    common = ["--hidden", "4", "--iterations", "3", "--standardize", "--feature-scale", "4",
              "--chunk-size", "8", "--partitions", "1,1,1", "--dtype", "float64"]
    one = run_dnewton(1, ["train", text, *common, "--log", tmp_path / "one.jsonl"])
    two = run_dnewton(2, ["train", folder, *common, "--replicas", "2",
                          "--log", tmp_path / "two.jsonl"])
    assert "memory per rank: training data up to" in two.stdout
    f_one = [rec["f"] for rec in read_log(tmp_path / "one.jsonl")]
    f_two = [rec["f"] for rec in read_log(tmp_path / "two.jsonl")]
    assert len(f_one) == 4
    np.testing.assert_allclose(f_two, f_one, rtol=1e-9)
    assert one.stdout.count("memory per rank") == 1


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.zeros((3, 2))}, "needs arrays X (instances x features) and y"),
    ({"X": np.zeros(3), "y": np.zeros(3)}, "need (l, n) and (l,)"),
    ({"X": np.zeros((3, 2)), "y": np.zeros(2)}, "need (l, n) and (l,)"),
    ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "holds no instances"),
    ({"X": np.zeros((2, 2)), "y": np.array(["a", "b"])}, "must be numeric"),
    ({"X": np.array([[0, np.inf], [1, 1], [2, 2], [3, 3]]), "y": np.arange(4.0) % 2},
     "not finite"),
])
def test_a_bad_npz_read_by_shares_fails_every_rank_with_a_reason(arrays, message):
    folder = WORLD.bcast(tempfile.mkdtemp(prefix="dnewton-npz-") if WORLD.rank == 0
                         else None)
    path = Path(folder) / "data.npz"
    if WORLD.rank == 0:
        np.savez(path, **arrays)
    WORLD.Barrier()
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data, _ = open_dataset(WORLD, path)
        # values are checked where they are read: by the ranks that keep them
        Problem.build(WORLD, data, None, ModelConfig(dtype="float64", hidden=(2,),
                                                     replicas=WORLD.size, partitions=(1, 1, 1)))


def test_a_narrower_sparse_test_set_is_padded_with_zero_columns(files):
    train, _ = open_dataset(WORLD, files["sparse", "npy"])
    wide = train.n_features + 5
    for fmt in ("npy", "libsvm"):
        data, _ = open_dataset(WORLD, files["sparse", fmt], n_features=wide)
        assert data.n_features == wide
        whole = data.whole()
        assert whole.X.shape == (N, wide)
        assert whole.X[:, train.n_features:].nnz == 0


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
@pytest.mark.parametrize("order", ["C", "F"])
def test_npz_slices_are_the_arrays_slices(tmp_path, save, order):
    """Mapped (stored) or streamed (compressed), row- or column-major: any rows and
    columns read are those of the array."""
    X = np.asarray(np.random.default_rng(1).standard_normal((37, 11)), order=order)
    path = tmp_path / "data.npz"
    save(path, X=X, y=np.arange(37) % 3)
    data, _ = open_dataset(WORLD, path)
    for rows, cols in ((slice(3, 20), slice(2, 9)), (slice(0, 37), slice(0, 11)),
                       (slice(30, 37), slice(10, 11)), (slice(5, 5), slice(0, 3))):
        np.testing.assert_array_equal(_take(data.dense, rows, cols), X[rows, cols])


@given(lengths=st.lists(st.integers(0, 5), min_size=1, max_size=30),
       n_ranges=st.integers(1, 9), crlf=st.booleans())
@settings(max_examples=40, deadline=None)
def test_byte_ranges_hold_every_line_once_in_order(tmp_path_factory, lengths, n_ranges, crlf):
    """Cut anywhere, the ranges' lines are the file's lines, each once, in order."""
    end = "\r\n" if crlf else "\n"
    lines = [" ".join([str(i % 3)] + [f"{j + 1}:{i}.{j}" for j in range(k)])
             for i, k in enumerate(lengths)]
    path = tmp_path_factory.mktemp("ranges") / "lines.svm"
    path.write_text(end.join(lines) + end, newline="")
    size = path.stat().st_size
    labels, rows = [], []
    for p in range(n_ranges):
        start, stop = size * p // n_ranges, size * (p + 1) // n_ranges
        X, y = parse_range(path, start, stop - start)
        labels.extend(y)
        rows.extend(np.diff(X.indptr))
    assert labels == [i % 3 for i in range(len(lengths))]
    assert rows == lengths


def test_a_data_share_that_cannot_fit_is_refused_before_it_is_read(files):
    """The shares of a node's ranks against its memory: the message says per rank."""
    data, _ = open_dataset(WORLD, files["dense", "npz"])
    config = ModelConfig(dtype="float64", hidden=(5,), replicas=WORLD.size, partitions=(1, 1, 1))
    share = -(-N // WORLD.size)  # the largest copy's instances
    per_rank = share * N_FEATURES * 8 + share * 8  # features and labels, float64/int64
    with pytest.raises(InputError, match="the training data need about .* on a node"):
        Problem.build(WORLD, data, None, config, available=per_rank - 1)
    problem = Problem.build(WORLD, data, None, config, available=per_rank * WORLD.size)
    try:
        data_bytes, _ = problem.memory_per_rank()
        assert data_bytes == per_rank
    finally:
        problem.close()


@pytest.mark.parametrize("name, fmt", [("dense", "libsvm"), ("sparse", "libsvm"),
                                       ("dense", "npz"), ("sparse", "npy"),
                                       ("dense", "npz-compressed")])
def test_a_held_out_split_read_by_shares_gives_the_one_rank_objectives(files, name, fmt):
    """-C auto's and early stopping's split, taken from a set read by shares, is read by
    shares too, and gives the f of the same split of the set in memory."""
    from dnewton.app.regularization import split_rows

    raw = reference(name)
    if fmt == "npz-compressed":
        raw = RawData(raw.X.astype(np.float32).astype(np.float64), raw.y, raw.source)
    data, _ = open_dataset(WORLD, files[name, fmt])
    parts = split_rows(data, 0.3, 4, "a test")
    assert all(isinstance(part, ShardedData) for part in parts)
    for part, part1 in zip(parts, split_rows(raw, 0.3, 4, "a test")):
        f1 = objective(MPI.COMM_SELF, part1, 1, None, **PREPROCESSING["standardized"])[0]
        f = objective(WORLD, part, WORLD.size, None, **PREPROCESSING["standardized"])[0]
        assert f == pytest.approx(f1, rel=1e-9, abs=0)
        np.testing.assert_array_equal(part.y, part1.y)
        np.testing.assert_allclose(part.whole().X.toarray() if part.sparse else
                                   part.whole().X, np.asarray(part1.X.todense())
                                   if sparse.issparse(part1.X) else part1.X, rtol=1e-15)


def test_a_cache_entry_is_mapped_by_every_rank(files):
    """A one-rank read writes the --data-cache entry; a job then maps its rows of it
    (a hit on every rank) and gets the one-rank objective."""
    folder = Path(WORLD.bcast(tempfile.mkdtemp(prefix="dnewton-cache-") if WORLD.rank == 0
                              else None))
    if WORLD.rank == 0:
        open_dataset(MPI.COMM_SELF, files["sparse", "libsvm"], cache=folder)
    WORLD.Barrier()
    assert len(list(folder.glob("*.npz"))) == 1
    data, _ = open_dataset(WORLD, files["sparse", "libsvm"], cache=folder)
    assert data.csr is not None and data.parsed is None  # read from the entry
    raw = RawData(sparse.csr_matrix(reference("sparse").X), reference("sparse").y, "sparse")
    f1 = objective(MPI.COMM_SELF, raw, 1, None)[0]
    assert objective(WORLD, data, WORLD.size, None)[0] == pytest.approx(f1, rel=1e-9, abs=0)
