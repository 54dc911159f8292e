"""The distributed run: the same result for every layout, and the bytes each phase
moves equal to the formulas of docs/design.md ("Communication")."""

import numpy as np
import pytest
from helpers import backward_bytes, default_subset, forward_bytes, without_timings
from shared_runs import SharedRuns

from dnewton.io.data import read_dataset
from dnewton.planning.planner import layout_for

HIDDEN = (16, 12)
# float64: the layouts agree to its rounding (float32's agreement: test_derivatives.py)
COMMON = ["train", "digits", "--hidden", "16,12", "--iterations", "5", "--feature-scale", "16",
          "--center", "--quiet", "--seed", "3", "--dtype", "float64"]

# (ranks, partitions): several blocks per rank, a split input layer, split
# hidden layers, one block per rank, and a split output layer.
LAYOUTS = [
    (2, "1,2,1,1"),
    (3, "2,1,1,1"),
    (4, "2,2,2,1"),
    (4, "1,1,2,2"),
    (3, "3,1,1,2"),
]


def final_values(log):
    return np.array([rec["f"] for rec in log])


LOSSES = ["squared", "softmax"]
RECOMPUTED = [(2, "1,2,1,1"), (3, "3,1,1,2"), (4, "2,2,2,1")]
BYTES = [(4, "2,2,2,1"), (3, "3,1,1,2")]
DTYPES = [("float64", 8), ("float32", 4)]
FLOPS = [(1, "1,1,1,1"), (3, "3,1,1,2"), (4, "2,2,2,1")]
PIPELINED = [(3, "1,1,1,1"), (2, "1,2,1,1"), (4, "2,2,2,1"), (3, "3,1,1,2")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py)."""
    runs = SharedRuns(tmp_path_factory.mktemp("mpi"))

    def add(key, n_ranks, args):
        runs.add(key, n_ranks, [*COMMON, *args, "--log", runs.log_path(key)])

    for loss in LOSSES:
        add(("one rank", loss), 1, ["--loss", loss])
        for n_ranks, partitions in LAYOUTS:
            add(("layout", n_ranks, partitions, loss), n_ranks,
                ["--loss", loss, "--partitions", partitions])
        for n_ranks, partitions in RECOMPUTED:
            add(("recomputed", n_ranks, partitions, loss), n_ranks,
                ["--loss", loss, "--partitions", partitions, "--jacobian", "recomputed"])
        for (n_ranks, partitions), (dtype, _) in ((a, b) for a in BYTES for b in DTYPES):
            add(("bytes", n_ranks, partitions, loss, dtype), n_ranks,
                ["--loss", loss, "--partitions", partitions, "--dtype", dtype])
        for n_ranks, partitions in PIPELINED:
            for depth in ("1", "3"):
                add(("pipelined", n_ranks, partitions, loss, depth), n_ranks,
                    ["--loss", loss, "--partitions", partitions, "--chunk-size", "200",
                     "--pipeline", depth])
    for n_ranks, partitions in FLOPS:
        add(("flops", n_ranks, partitions), n_ranks, ["--partitions", partitions])
    runs.add("diagonal recomputed", 2, [*COMMON, "--diagonal", "--jacobian", "recomputed"])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_ranks, partitions", LAYOUTS)
def test_layouts_give_the_single_rank_result(runs, loss, n_ranks, partitions):
    log = runs.log(("layout", n_ranks, partitions, loss))
    assert len(log) == 6
    np.testing.assert_allclose(final_values(log), final_values(runs.log(("one rank", loss))),
                               rtol=1e-9)
    assert log[-1]["f"] < log[0]["f"]
    # Only multi-rank groups communicate: a real multi-rank run moves bytes.
    assert log[-1]["bytes"]["gauss_newton"] > 0


@pytest.mark.mpi
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_ranks, partitions", RECOMPUTED)
def test_the_recomputed_jacobian_gives_the_stored_result(runs, loss, n_ranks, partitions):
    """--jacobian recomputed: the single-rank stored run's f to 1e-9, and per CG
    iteration the bytes of a tangent pass (the forward sums), a backward sweep of
    one vector per instance, v.v with v'Gv, and r.r (docs/design.md)."""
    log = runs.log(("recomputed", n_ranks, partitions, loss))
    np.testing.assert_allclose(final_values(log), final_values(runs.log(("one rank", loss))),
                               rtol=1e-9)
    train, _ = read_dataset("digits")
    widths = (train.n_features, *HIDDEN, 10)
    layout = layout_for(widths, n_ranks, tuple(map(int, partitions.split(","))))
    subset = default_subset(train.n_instances)
    per_cg = forward_bytes(layout, subset) + backward_bytes(layout, subset, 1) + 16 + 8
    for rec in log[1:]:
        assert rec["bytes"]["gauss_newton"] == 8 + rec["cg_iters"] * per_cg


@pytest.mark.mpi
def test_the_block_diagonal_method_refuses_the_recomputed_jacobian(runs):
    proc = runs["diagonal recomputed"]
    assert proc.returncode == 2 and proc.statuses == [2, 2], proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert "--diagonal needs the stored Jacobian" in proc.stderr, proc.stderr


def expected_bytes(layout, n_instances, subset, trials, loss, world, itemsize):
    """Per-iteration bytes by phase from the group sizes (docs/design.md).

    The accepted trial's forward pass serves the gradient and the next subset's
    rows, so an iteration runs one forward pass per line-search trial, no more.
    The passes' sums move numbers of the run's precision (`itemsize` bytes); f's
    sums and B's probabilities are float64 in either.
    """
    n_out = layout.widths[-1]
    scalars = 16 if world > 1 else 0  # f's two sums in one allreduce
    forward = trials * (forward_bytes(layout, n_instances, itemsize) + scalars)
    backward = (backward_bytes(layout, n_instances, 1, itemsize)
                + backward_bytes(layout, subset, n_out, itemsize))
    if loss == "softmax" and world > 1:
        backward += subset * n_out * 8  # B's probabilities, broadcast once
    return forward, backward


@pytest.mark.mpi
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_ranks, partitions", BYTES)
@pytest.mark.parametrize("dtype, itemsize", DTYPES)
def test_bytes_per_phase_match_the_formulas(runs, loss, n_ranks, partitions, dtype, itemsize):
    log = runs.log(("bytes", n_ranks, partitions, loss, dtype))
    train, _ = read_dataset("digits")
    n_train = train.n_instances
    widths = (train.n_features, *HIDDEN, 10)
    layout = layout_for(widths, n_ranks, tuple(map(int, partitions.split(","))))
    subset = default_subset(n_train)
    for rec in log[1:]:
        n_out = widths[-1]
        # One allreduce of |S| n_L numbers (+ v.v) and one scalar per CG iteration,
        # and the initial residual norm.
        per_cg = (subset * n_out + 1) * 8 + 8
        assert rec["bytes"]["gauss_newton"] == 8 + rec["cg_iters"] * per_cg
        forward, backward = expected_bytes(
            layout, n_train, subset, rec["line_search_trials"], loss, n_ranks, itemsize
        )
        assert rec["bytes"]["forward"] == forward
        assert rec["bytes"]["backward"] == backward
        assert rec["bytes"]["other"] == 3 * 8 + 8  # g'd, d'd, d'Ad; then ||g||


def expected_flops(widths, n_instances, subset, trials, cg_iters, block_columns):
    """Per-iteration FLOPs by phase (docs/design.md, "What a run reports").

    mac: multiply-adds per instance of the whole network; above: those of layers
    2..L, whose backward products reach a layer below; block_columns: the sum of
    |b| over all blocks (each block does its own small products with D).
    """
    pairs = list(zip(widths[:-1], widths[1:]))
    mac = sum(a * b for a, b in pairs)
    above = sum(a * b for a, b in pairs[1:])
    n_out = widths[-1]
    return {
        "forward": trials * 2 * n_instances * mac,
        "backward": 2 * n_instances * (mac + above) + 2 * subset * n_out * above,
        "gauss_newton": cg_iters * 4 * subset * (mac + n_out * block_columns),
    }


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, partitions", FLOPS)
def test_flops_per_phase_match_the_formulas(runs, n_ranks, partitions):
    train, _ = read_dataset("digits")
    widths = (train.n_features, *HIDDEN, 10)
    layout = layout_for(widths, n_ranks, tuple(map(int, partitions.split(","))))
    block_columns = sum(blk.shape[1] for blk in layout.blocks)
    subset = default_subset(train.n_instances)
    log = runs.log(("flops", n_ranks, partitions))
    start = expected_flops(widths, train.n_instances, 0, 1, 0, block_columns)
    assert log[0]["flops"]["forward"] == start["forward"]
    for rec in log[1:]:
        want = expected_flops(widths, train.n_instances, subset, rec["line_search_trials"],
                              rec["cg_iters"], block_columns)
        for phase, flops in want.items():
            assert rec["flops"][phase] == flops, phase
        assert rec["flops"]["other"] == 0
        assert set(rec["seconds"]) == set(rec["bytes"])
        assert all(part >= 0 for phase in rec["seconds"].values() for part in phase.values())
        if n_ranks == 1:  # the phases (training ones) account for the whole iteration
            spent = sum(sum(parts.values()) for phase, parts in rec["seconds"].items()
                        if phase != "evaluation")
            assert spent == pytest.approx(rec["iteration_time"], rel=1e-9)


@pytest.mark.mpi
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_ranks, partitions", PIPELINED)
def test_pipelined_passes_give_the_unpipelined_run(runs, loss, n_ranks, partitions):
    # The paper's layout (one block per rank) among them. Batches in flight change
    # when each sum happens, not what is summed: the same log, bytes included.
    logs = [without_timings(runs.log(("pipelined", n_ranks, partitions, loss, depth)))
            for depth in ("1", "3")]
    assert logs[0] == logs[1]
    assert len(logs[0]) == 6 and logs[0][-1]["f"] < logs[0][0]["f"]
