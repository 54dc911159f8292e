"""What a rank keeps in memory: the formulas of `model.memory` against the arrays a
rank allocates, the Gauss-Newton operator's lifetime, and the libraries a run on
dense data loads."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import WORLD, make_problem

from dnewton.constants import FLOAT64
from dnewton.model.gauss_newton import stored_bytes
from dnewton.planning.memory import RankMemory


def _nbytes(arrays):
    """Bytes of `arrays`, each array once however often it is listed."""
    return sum({id(a): a.nbytes for a in arrays}.values())


def _pass_arrays(fwd):
    """The arrays a forward pass allocates: s and z of its hidden groups, the outputs
    (not z of layer 0, the inputs it was given)."""
    return [*fwd.s.values(), *(z for (m, _), z in fwd.z.items() if m > 0),
            *([] if fwd.output is None else [fwd.output])]


@pytest.mark.parametrize("partitions", [None, (1, 1, 1, 1), (2, 3, 2, 1), (3, 1, 2, 3)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_memory_formulas_count_the_arrays_a_rank_allocates(partitions, dtype):
    """On this rank of the in-process problem (1 rank, or 3 under mpiexec): a forward
    pass, the two kept stores and the stored-Jacobian operator's arrays take what
    `model.memory` says, as the run (`Network`, `Objective`, `stored_bytes`) and the
    planner (`RankMemory`) state it."""
    problem = make_problem(partitions=partitions, dtype=dtype)
    try:
        network, objective = problem.network, problem.objective
        planned = RankMemory(problem.layout)
        rank, itemsize, n = problem.groups.rank, np.dtype(dtype).itemsize, 5
        pass_bytes = _nbytes(_pass_arrays(network.empty_pass(n)))
        assert pass_bytes == n * itemsize * network.pass_numbers()
        assert pass_bytes == n * itemsize * planned.pass_numbers(rank)

        theta = network.initial_parameters(1)
        evaluation = objective.evaluate(theta)
        kept = _nbytes(a for store in objective._stores for a in _pass_arrays(store.passes))
        assert kept == objective.kept_bytes() > 0
        assert kept == planned.kept_bytes(rank, objective.n_local, itemsize)

        subset = np.arange(n)
        operator = objective.gauss_newton(evaluation, subset, 0.5)
        # the pass over S without its outputs, the layer-1 inputs once per block (as
        # the formula counts them), D, the workspaces and J v twice (the +1: v.v)
        over_s = objective._kept(evaluation).passes.rows(subset)
        measured = (_nbytes([*over_s.s.values(), *(z for (m, _), z in over_s.z.items() if m)])
                    + sum(Z.nbytes for Z, blk in zip(operator._Z, network.blocks)
                          if blk.layer == 1)
                    + _nbytes(operator._D) + _nbytes(operator._U)
                    + operator._buf.nbytes - FLOAT64 + operator._block_Jv.nbytes)
        assert measured == stored_bytes(network, n, "stored")
        assert measured == planned.gauss_newton_bytes(rank, n, "stored", itemsize)
    finally:
        problem.close()


@pytest.mark.parametrize("jacobian", ["stored", "recomputed"])
def test_evaluate_releases_the_last_gauss_newton_operator(jacobian):
    """The line search's evaluate frees the operator's Jacobian and subset rows;
    a product after that raises rather than use them."""
    problem = make_problem("softmax")
    try:
        objective = problem.objective
        objective.jacobian = jacobian
        theta = problem.network.initial_parameters(2)
        evaluation = objective.evaluate(theta)
        operator = objective.gauss_newton(evaluation, np.arange(0, 8, 2), 0.5)
        v = np.linspace(-1.0, 1.0, theta.size)
        out = np.empty_like(v)
        before = operator.apply(v, out)
        assert np.isfinite(before)
        objective.evaluate(theta + 0.1 * v)
        with pytest.raises(RuntimeError, match="released"):
            operator.apply(v, out)
        # a new operator at the same point gives the same product
        again = objective.gauss_newton(evaluation.theta, np.arange(0, 8, 2), 0.5)
        assert again.apply(v, np.empty_like(v)) == pytest.approx(before, rel=1e-12)
    finally:
        problem.close()


def test_a_run_on_dense_data_loads_neither_scipy_sparse_nor_scipy_linalg(tmp_path):
    if WORLD.size > 1:
        pytest.skip("starts a process itself: one-process suite only")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.integers(0, 255, (40, 6), dtype=np.uint8),
             y=rng.integers(0, 3, 40))
    code = f"""
import sys
from dnewton.app.cli import main
sys.argv = ["dnewton", "train", {str(tmp_path / "d.npz")!r}, "--hidden", "4",
            "--feature-scale", "255", "--center", "--iterations", "2", "--quiet"]
try:
    main()
finally:
    loaded = sorted(m for m in ("scipy.sparse", "scipy.linalg") if m in sys.modules)
    print("loaded:", loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout, result.stdout
