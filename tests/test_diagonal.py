"""The block-diagonal Gauss-Newton approximation and the synchronization of its
block CGs (docs/design.md, "The paper's techniques")."""

import time

import numpy as np
import pytest
from helpers import WORLD, make_problem, read_log, run_dnewton, synthetic

from dnewton.app.training import make_solver, solve
from dnewton.fault_injection import POISON_BLOCK, SLOW_RANK
from dnewton.solvers.cg import CGReason
from dnewton.solvers.newton import NewtonOptions

DATA = synthetic(n_instances=30, n_features=6)


@pytest.mark.skipif(WORLD.size > 1, reason="one block cannot be spread over several ranks")
@pytest.mark.parametrize("loss", ["squared", "softmax"])
def test_single_block_diagonal_is_the_full_method(loss):
    problem = make_problem(loss, hidden=(), C=0.5, data=DATA)
    assert len(problem.layout.blocks) == 1
    options = dict(iterations=4, gn_ratio=0.3, seed=1)
    full = solve(problem, NewtonOptions(**options))
    diag = solve(problem, NewtonOptions(diagonal=True, **options))
    problem.close()
    for a, b in zip(full.history[1:], diag.history[1:]):
        assert a.cg_iters == b.cg_iters
        assert a.f == pytest.approx(b.f, rel=1e-12)


@pytest.mark.parametrize("partitions", [(2, 3, 2, 1), (1, 2, 1, 3)])
def test_direction_solves_each_diagonal_block(partitions):
    problem = make_problem("softmax", C=0.5, partitions=partitions, data=DATA)
    theta = problem.network.initial_parameters(2)
    _, g = problem.objective.value_and_gradient(theta)
    operator = problem.objective.gauss_newton(theta, np.arange(0, 30, 3), 0.2)
    direction = make_solver(problem, NewtonOptions(diagonal=True, xi=1e-3)).direction
    step = direction(operator, g, None)
    assert step.cg_reason == CGReason.CONVERGED and step.sync_stopped_blocks == 0

    # Every block of the layout in turn, on every rank (the full product is
    # collective): the full operator applied to the direction restricted to that
    # block, read on the block itself, is the block's own operator G_pp.
    mine = {index: (where, apply) for index, where, apply in operator.block_operators()}
    for blk in problem.layout.blocks:
        embedded = np.zeros_like(theta)
        if blk.index in mine:
            where, apply = mine[blk.index]
            embedded[where] = step.d[where]
        full_out = np.empty_like(theta)
        operator.apply(embedded, full_out)
        if blk.index not in mine:
            continue
        out = np.empty_like(embedded[where])
        apply(np.ascontiguousarray(step.d[where]), out)
        np.testing.assert_allclose(out, full_out[where], rtol=1e-12, atol=1e-14)
        residual = np.linalg.norm(out + g[where])
        assert residual <= 1e-3 * np.linalg.norm(g[where]) * (1 + 1e-9)
        np.testing.assert_allclose(step.Ad[where], out, rtol=1e-8, atol=1e-12)
    problem.close()


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
def test_sync_fraction_cuts_off_a_straggler_every_iteration(tmp_path):
    # Rank 0 sleeps 1 s before each of its block CG iterations; the other ranks'
    # blocks, more than half of all, converge in milliseconds. With q = 0.5 the
    # vote must pass while rank 0 still works, in every Newton iteration, however
    # loaded the machine; with q = 1 nothing may be cut.
    logs = {}
    for q in ("1", "0.5"):
        path = tmp_path / f"q{q}.jsonl"
        run_dnewton(4, [*COMMON, "--iterations", "3", "--sync-fraction", q, "--xi", "0.001",
                        "--log", path], timeout=240, env={SLOW_RANK: "0:1.0"})
        logs[q] = read_log(path)
    assert all(rec["sync_stopped_blocks"] == 0 for rec in logs["1"][1:])
    for rec in logs["0.5"][1:]:
        assert rec["cg_reason"] == "sync_cutoff" and 1 <= rec["sync_stopped_blocks"] <= 5
        assert rec["bytes"]["sync"] > 0
    assert logs["0.5"][-1]["f"] < logs["0.5"][0]["f"]


@pytest.mark.mpi
def test_a_failed_block_on_one_rank_ends_every_rank(tmp_path):
    # Block 5's operator returns NaN curvature: only its owner sees it; the others
    # learn of it from the per-block summary and all stop with one message.
    log = tmp_path / "run.jsonl"
    began = time.monotonic()
    proc = run_dnewton(2, [*COMMON, "--log", log], timeout=60, check=False,
                       env={POISON_BLOCK: "5"})
    assert time.monotonic() - began < 60
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert "iteration 1: conjugate gradient of block 5: curvature p'Ap = nan" in proc.stderr
    assert [rec["iter"] for rec in read_log(log)] == [0]
