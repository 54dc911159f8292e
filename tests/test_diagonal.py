"""The block-diagonal Gauss-Newton approximation and the synchronization of its
block CGs (SPEC section 4)."""

import numpy as np
import pytest
from conftest import read_log, run_dnewton
from mpi4py import MPI

from dnewton.data import RawData
from dnewton.direction import SLOW_RANK_VARIABLE, block_diagonal_direction
from dnewton.newton import NewtonOptions
from dnewton.trainer import ModelConfig, Problem


def make_problem(hidden, partitions, loss="softmax"):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 6))
    y = np.arange(30) % 3
    config = ModelConfig(hidden=hidden, activation="tanh", loss=loss, partitions=partitions)
    return Problem.build(MPI.COMM_WORLD, RawData(X, y, "synthetic"), None, config, C=0.5)


@pytest.mark.parametrize("loss", ["squared", "softmax"])
def test_single_block_diagonal_is_the_full_method(loss):
    problem = make_problem((), None, loss)
    assert len(problem.layout.blocks) == 1
    options = dict(iterations=4, gn_ratio=0.3, C=0.5, seed=1)
    full = problem.fit(NewtonOptions(**options))
    diag = problem.fit(NewtonOptions(diagonal=True, **options))
    for a, b in zip(full.history[1:], diag.history[1:]):
        assert a.cg_iters == b.cg_iters
        assert a.f == pytest.approx(b.f, rel=1e-12)


@pytest.mark.parametrize("partitions", [(2, 3, 2, 1), (1, 2, 1, 3)])
def test_direction_solves_each_diagonal_block(partitions):
    problem = make_problem((5, 4), partitions)
    net = problem.network
    theta = net.initial_parameters(2)
    _, g = problem.objective.value_and_gradient(theta)
    operator = problem.objective.gauss_newton(theta, np.arange(0, 30, 3))
    operator.damping = 0.2
    options = NewtonOptions(diagonal=True, xi=1e-3)
    step = block_diagonal_direction(operator, g, options, problem.groups)
    assert step.cg_reason == "converged" and step.sync_stopped_blocks == 0

    # The same block applied through the full operator to a vector that is zero
    # outside the block, restricted to the block: G_pp.
    for i in range(len(net.blocks)):
        s = net.block_slice(i)
        d_p = np.ascontiguousarray(step.d[s])
        out = np.empty_like(d_p)
        operator.block_apply(i)(d_p, out)
        embedded = np.zeros_like(theta)
        embedded[s] = d_p
        full_out = np.empty_like(theta)
        operator.apply(embedded, full_out)
        np.testing.assert_allclose(out, full_out[s], rtol=1e-12, atol=1e-14)
        residual = np.linalg.norm(out + g[s])
        assert residual <= 1e-3 * np.linalg.norm(g[s]) * (1 + 1e-9)
        np.testing.assert_allclose(step.Ad[s], out, rtol=1e-8, atol=1e-12)


COMMON = ["train", "digits", "--hidden", "16,12", "--iterations", "4", "--feature-scale", "16",
          "--center", "--quiet", "--seed", "2", "--diagonal", "--partitions", "2,2,2,1"]


@pytest.mark.mpi
def test_diagonal_sends_no_gauss_newton_bytes_and_matches_one_rank(tmp_path):
    one, four = tmp_path / "one.jsonl", tmp_path / "four.jsonl"
    run_dnewton(1, [*COMMON, "--log", one])
    run_dnewton(4, [*COMMON, "--log", four])
    one, four = read_log(one), read_log(four)
    assert all(rec["bytes"]["gauss_newton"] == 0 for rec in four)
    np.testing.assert_allclose([r["f"] for r in four], [r["f"] for r in one], rtol=1e-9)
    for rec in four[1:]:
        lo, median, hi = rec["cg_iters_per_block"]
        assert 1 <= lo <= median <= hi == rec["cg_iters"]
        assert rec["sync_stopped_blocks"] == 0


@pytest.mark.mpi
def test_sync_fraction_cuts_off_a_slow_block_and_still_converges(tmp_path, monkeypatch):
    monkeypatch.setenv(SLOW_RANK_VARIABLE, "0:0.05")
    logs = {}
    for q in ("1", "0.5"):
        path = tmp_path / f"q{q}.jsonl"
        run_dnewton(4, [*COMMON, "--sync-fraction", q, "--xi", "0.01", "--log", path],
                    timeout=240)
        logs[q] = read_log(path)
    assert all(rec["sync_stopped_blocks"] == 0 for rec in logs["1"][1:])
    cut = [rec["sync_stopped_blocks"] for rec in logs["0.5"][1:]]
    assert all(0 <= c <= 5 for c in cut) and sum(cut) > 0
    assert any(rec["cg_reason"] == "sync_cutoff" for rec in logs["0.5"][1:])
    assert logs["0.5"][-1]["f"] < 0.7 * logs["0.5"][0]["f"]
    assert all(rec["bytes"]["sync"] > 0 for rec in logs["0.5"][1:])
