"""What a rank keeps in memory: the Gauss-Newton operator's lifetime, and the
libraries a run on dense data loads."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import WORLD, make_problem


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
