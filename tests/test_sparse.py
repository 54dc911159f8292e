"""Sparse inputs: layer 1 on CSR blocks gives the dense path's f, gradient and
Gauss-Newton product on every layout, keeps the data sparse (no densified copy
anywhere in a pass), and trains from a wide LIBSVM file in little memory.

The in-process tests also run under mpiexec (blocks spread over the ranks), like
test_derivatives.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import (
    LAYOUTS,
    WORLD,
    global_vector,
    local_vector,
    make_problem,
    mpiexec_path,
    n_global,
    random_theta,
    run_environment,
    synthetic,
)
from scipy import sparse

from dnewton.app.prediction import Predictor
from dnewton.app.training import solve
from dnewton.io.data import Preprocessing, RawData, partition
from dnewton.planning.planner import layout_for
from dnewton.solvers.newton import NewtonOptions


@pytest.fixture(autouse=True)
def csr_at_any_density(monkeypatch):
    """These sets are small and 40% non-zero: keep them CSR to test that path."""
    monkeypatch.setattr("dnewton.io.data.SPARSE_MAX_DENSITY", 1.0)


def sparse_and_dense(seed=42):
    """The synthetic set with about 60% of its entries zero, an empty row and an
    empty column: (CSR RawData, the same as a dense RawData)."""
    raw = synthetic(seed=seed)
    X = raw.X * (np.random.default_rng(seed).random(raw.X.shape) < 0.4)
    X[2] = 0.0
    X[:, 4] = 0.0
    return (RawData(sparse.csr_matrix(X), raw.y, "sparse"),
            RawData(np.ascontiguousarray(X), raw.y, "dense"))


@pytest.fixture(params=LAYOUTS, ids=str)
def pair(request):
    """(sparse problem, dense problem) on one layout; closed after the test."""
    sparse_raw, dense_raw = sparse_and_dense()
    problems = [make_problem(request.param[0], "tanh", request.param[1], data=raw)
                for raw in (sparse_raw, dense_raw)]
    yield problems
    for problem in problems:
        problem.close()


@pytest.mark.parametrize("pair", [(loss, layout) for loss in ("squared", "softmax")
                                  for layout in LAYOUTS], indirect=True, ids=str)
def test_sparse_path_gives_the_dense_f_gradient_and_gauss_newton_product(pair):
    on_csr, on_dense = pair
    assert on_csr.objective.data.sparse and not on_dense.objective.data.sparse
    for X in on_csr.objective.data.features.values():
        assert sparse.isspmatrix_csr(X) and X.indices.dtype == np.int32
    theta = random_theta(on_dense)
    # The passes reference the CSR blocks (nothing densified) and count 2 nnz b FLOPs.
    data, network = on_csr.objective.data, on_csr.network
    fwd = network.forward(theta, data.rows(slice(None)), data.n_instances)
    for a, X in data.features.items():
        assert sparse.isspmatrix_csr(fwd.z[(0, a)]) and np.shares_memory(fwd.z[(0, a)].data,
                                                                         X.data)
    dense_flops = on_dense.network.product_flops(on_dense.objective.data.features, 11)
    saved = sum(2.0 * blk.shape[1] * (11 * blk.shape[0] - data.features[blk.row].nnz)
                for blk in network.blocks if blk.layer == 1)
    assert network.product_flops(data.features, 11) == dense_flops - saved
    f_sparse, g_sparse = on_csr.objective.value_and_gradient(theta)
    f_dense, g_dense = on_dense.objective.value_and_gradient(theta)
    assert f_sparse == pytest.approx(f_dense, rel=1e-9)
    np.testing.assert_allclose(global_vector(on_csr, g_sparse), global_vector(on_dense, g_dense),
                               rtol=1e-9, atol=1e-12)
    subset = np.array([0, 2, 3, 9])  # with the empty row
    v = local_vector(on_dense, np.random.default_rng(7).standard_normal(n_global(on_dense)))
    products = []
    for problem in pair:
        operator = problem.objective.gauss_newton(problem.objective.evaluate(theta), subset, 0.3)
        assert all(sparse.issparse(Z) == (blk.layer == 1 and problem is on_csr)
                   for blk, Z in zip(problem.network.blocks, operator._Z))
        Gv = np.empty_like(v)
        vGv = operator.apply(v, Gv)
        Gv_blocks = np.empty_like(v)  # the block-diagonal operators take the CSR kernels too
        for _, where, apply in operator.block_operators():
            apply(v[where], Gv_blocks[where])
        products.append((vGv, global_vector(problem, Gv), global_vector(problem, Gv_blocks)))
    (vGv_s, Gv_s, Gb_s), (vGv_d, Gv_d, Gb_d) = products
    assert vGv_s == pytest.approx(vGv_d, rel=1e-9)
    np.testing.assert_allclose(Gv_s, Gv_d, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(Gb_s, Gb_d, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("partitions", LAYOUTS)
def test_sparse_newton_iterations_follow_the_dense_ones(partitions):
    """Four iterations (kept passes, subsets, the line search) in both precisions."""
    sparse_raw, dense_raw = sparse_and_dense()
    for dtype, rtol in (("float64", 1e-9), ("float32", 1e-4)):
        histories = []
        for raw in (sparse_raw, dense_raw):
            problem = make_problem("softmax", "relu", partitions, data=raw, dtype=dtype)
            try:
                result = solve(problem, NewtonOptions(iterations=4, gn_ratio=0.5, seed=3))
            finally:
                problem.close()
            histories.append([record.f for record in result.history])
        np.testing.assert_allclose(histories[0], histories[1], rtol=rtol)
        assert histories[0][-1] < histories[0][0]


def test_centring_keeps_sparse_input_dense():
    sparse_raw, _ = sparse_and_dense()
    problem = make_problem(data=sparse_raw, partitions=(2, 3, 2, 1))
    try:
        data = partition(sparse_raw, problem.layout, WORLD.rank, None,
                         Preprocessing(center=True), fit=True)
        assert not data.sparse
        assert all(isinstance(X, np.ndarray) for X in data.features.values())
        assert problem.objective.data.sparse
    finally:
        problem.close()


@pytest.mark.parametrize("partitions", [None, (3, 1, 2, 3)])
def test_prediction_on_sparse_input_matches_dense(partitions, tmp_path):
    sparse_raw, dense_raw = sparse_and_dense()
    problem = make_problem("softmax", "tanh", partitions, data=dense_raw)
    try:
        model = problem.gather_model(random_theta(problem))
        model = WORLD.bcast(model, root=0)
    finally:
        problem.close()
    predictor = Predictor(WORLD, model, partitions)
    try:
        np.testing.assert_allclose(predictor.outputs(sparse_raw), predictor.outputs(dense_raw),
                                   rtol=1e-12, atol=1e-12)
    finally:
        predictor.close()


# -- a whole run on a wide LIBSVM file ------------------------------------------------------

RSS_SCRIPT = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def write_wide_libsvm(path, n_rows=2000, n_features=100_000, nnz=50, n_classes=3, seed=0):
    """Rows of `nnz` random features (values in (0, 1]), labels from a few of them."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="ascii") as f:
        for i in range(n_rows):
            cols = np.sort(rng.choice(n_features, nnz, replace=False)) + 1
            label = i % n_classes
            vals = rng.random(nnz) + 1e-3
            f.write(f"{label} " + " ".join(f"{c}:{v:.4f}" for c, v in zip(cols, vals)) + "\n")


@pytest.mark.mpi
def test_cli_trains_on_wide_sparse_file_in_little_memory(tmp_path):
    """100,000 features, 50 non-zeros per row, 2,000 rows, 2 ranks: densified, the
    features alone would take 1.6 GB (800 MB per rank); the run's largest rank
    stays under a generous 400 MiB (the numbers measured are in bench_sparse.py)."""
    if WORLD.size > 1:
        pytest.skip("starts mpiexec itself: runs in the one-process suite only")
    path = tmp_path / "wide.svm"
    write_wide_libsvm(path)
    log = tmp_path / "log.jsonl"
    cmd = [mpiexec_path(), "-n", "2", sys.executable, "-m", "dnewton", "train", str(path),
           "--hidden", "16", "--iterations", "3", "--log", str(log)]
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, *cmd], capture_output=True,
                          text=True, timeout=300, env=run_environment(240))
    run = json.loads(proc.stdout)
    assert run["rc"] == 0, run["stderr"] + run["stdout"]
    assert "layer 1 works on CSR blocks" in run["stdout"] + run["stderr"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["f"] < records[0]["f"]
    densified = 2000 * 100_000 * 8 / 2  # bytes per rank of the dense feature blocks
    assert run["maxrss_kib"] * 1024 < 400 * 2**20 < densified


@pytest.mark.parametrize("pair", [("softmax", layout) for layout in LAYOUTS], indirect=True,
                         ids=str)
def test_the_recomputed_product_on_csr_inputs_is_the_dense_stored_one(pair):
    on_csr, on_dense = pair
    on_csr.objective.jacobian = "recomputed"
    theta = random_theta(on_dense)
    subset = np.array([0, 2, 3, 9])  # with the empty row
    v = local_vector(on_dense, np.random.default_rng(7).standard_normal(n_global(on_dense)))
    products = []
    for problem in pair:
        out = np.empty_like(v)
        quadratic = problem.objective.gauss_newton(theta, subset, 0.3).apply(v, out)
        products.append((global_vector(problem, out), quadratic))
    np.testing.assert_allclose(products[0][0], products[1][0], rtol=1e-9, atol=1e-12)
    assert products[0][1] == pytest.approx(products[1][1], rel=1e-9)


@pytest.mark.parametrize("prep", [Preprocessing(2.0, center=True),
                                  Preprocessing(2.0, standardize=True)], ids=["center",
                                                                            "standardize"])
def test_centring_or_standardizing_keeps_the_blocks_dense_and_preprocessed(prep):
    sparse_raw, dense_raw = sparse_and_dense()
    layout = layout_for((7, 5, 4, 3), 1, (2, 1, 1, 1))
    on_csr = partition(sparse_raw, layout, 0, None, prep, fit=True)
    fresh = Preprocessing(2.0, center=prep.center, standardize=prep.standardize)
    on_dense = partition(dense_raw, layout, 0, None, fresh, fit=True)
    assert not on_csr.sparse
    for a, X in on_csr.features.items():
        assert not sparse.issparse(X)
        np.testing.assert_array_equal(X, on_dense.features[a])
