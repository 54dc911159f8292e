"""The block-diagonal Gauss-Newton approximation and the synchronization of its
block CGs (docs/design.md, "The paper's techniques")."""

import numpy as np
import pytest
from helpers import WORLD, make_problem, read_log, synthetic
from shared_runs import SharedRuns

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


# Rank 0's sleep before each of its block CG iterations, with --sync-fraction 1 and 0.5
STRAGGLER = {"1": "0:0.1", "0.5": "0:1.0"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py)."""
    runs = SharedRuns(tmp_path_factory.mktemp("diagonal"), timeout=240)
    runs.add("one", 1, [*COMMON, "--log", runs.log_path("one")])
    runs.add("four", 4, [*COMMON, "--log", runs.log_path("four")])
    for q, slow in STRAGGLER.items():
        runs.add(("q", q), 4, [*COMMON, "--iterations", "3", "--sync-fraction", q, "--xi",
                               "0.001", "--log", runs.log_path(("q", q))], {SLOW_RANK: slow})
    runs.add("poisoned", 2, [*COMMON, "--log", runs.scratch / "poisoned.jsonl"],
             {POISON_BLOCK: "5"})
    return runs.run()


@pytest.mark.mpi
def test_diagonal_sends_no_gauss_newton_bytes_and_matches_one_rank(runs):
    one, four = runs.log("one"), runs.log("four")
    assert all(rec["bytes"]["gauss_newton"] == 0 for rec in four)
    np.testing.assert_allclose([r["f"] for r in four], [r["f"] for r in one], rtol=1e-9)
    for rec in four[1:]:
        lo, median, hi = rec["cg_iters_per_block"]
        assert 1 <= lo <= median <= hi == rec["cg_iters"]
        assert rec["sync_stopped_blocks"] == 0


@pytest.mark.mpi
def test_sync_fraction_cuts_off_a_straggler_every_iteration(runs):
    # Rank 0 sleeps before each of its block CG iterations (1 s with q = 0.5); the
    # other ranks' blocks, more than half of all, converge in milliseconds. With
    # q = 0.5 the vote must pass while rank 0 still works, in every Newton
    # iteration, however loaded the machine; with q = 1 nothing may be cut, however
    # long rank 0 takes (0.1 s a CG iteration there: its run waits for every one).
    logs = {q: runs.log(("q", q)) for q in STRAGGLER}
    assert all(rec["sync_stopped_blocks"] == 0 for rec in logs["1"][1:])
    for rec in logs["0.5"][1:]:
        assert rec["cg_reason"] == "sync_cutoff" and 1 <= rec["sync_stopped_blocks"] <= 5
        assert rec["bytes"]["sync"] > 0
    assert logs["0.5"][-1]["f"] < logs["0.5"][0]["f"]


@pytest.mark.mpi
def test_a_failed_block_on_one_rank_ends_every_rank(runs):
    # Block 5's operator returns NaN curvature: only its owner sees it; the others
    # learn of it from the per-block summary and all stop with one message.
    proc = runs["poisoned"]
    assert proc.seconds < 60
    assert proc.returncode == 3 and proc.statuses == [3, 3], proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert "iteration 1: conjugate gradient of block 5: curvature p'Ap = nan" in proc.stderr
    assert [rec["iter"] for rec in read_log(runs.scratch / "poisoned.jsonl")] == [0]
