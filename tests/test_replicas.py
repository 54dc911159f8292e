"""Data x model parallelism (--replicas): any number of copies of a layout gives the
single-rank run, moves the bytes of docs/design.md ("Copies of the layout"), resumes
across copy counts, and refuses splits that cannot be made."""

import numpy as np
import pytest
from helpers import backward_bytes, default_subset, forward_bytes
from mpi4py import MPI
from shared_runs import SharedRuns

from dnewton.app.problem import ModelConfig, Problem
from dnewton.io.data import RawData, read_dataset
from dnewton.planning.planner import layout_for

HIDDEN = (16, 12)
MINI = ["train", "digits", "--hidden", "16,12", "--feature-scale", "16", "--center", "--quiet",
        "--seed", "3", "--dtype", "float64"]  # --solver sgd or adam with these; float64:
# the copies agree to its rounding
COMMON = [*MINI, "--iterations", "5"]
TIMEOUT = 120


def final_values(log):
    return np.array([rec["f"] for rec in log])


def common(args):
    return MINI if "--solver" in args else COMMON


COPIES = [
    (2, 2, None, []),  # pure data parallelism
    (3, 3, None, ["--loss", "softmax"]),  # copies of unequal shares (1797 = 3 x 599)
    (4, 2, "1,2,1,1", []),  # two copies of a 2-rank layout
    (4, 2, "1,1,2,1", ["--jacobian", "recomputed", "--loss", "softmax"]),
    (4, 2, "1,2,1,1", ["--diagonal"]),
    (2, 2, None, ["--solver", "sgd", "--epochs", "3", "--mini-batch", "64"]),
    (2, 2, None, ["--solver", "adam", "--epochs", "3", "--mini-batch", "64"]),
]
# (ranks, replicas, partitions, precision): the sums over the copies move the
# gradient and the products in the run's precision
BYTES = [(2, 2, "1,1,1,1", "float64"), (4, 2, "1,2,1,1", "float64"),
         (2, 2, "1,1,1,1", "float32")]
RESUMED = [(1, []), (4, ["--replicas", "2", "--partitions", "1,2,1,1"])]
BAD = [
    (3, ["--replicas", "2"], "--replicas 2 does not divide the 3 rank(s)"),
    (2, ["--replicas", "3"], "--replicas 3 does not divide the 2 rank(s)"),
    (2, ["--replicas", "0"], "--replicas must be >= 1"),
    (2, ["--replicas", "2", "--diagonal", "--sync-fraction", "0.5"], "keep it at 1"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py);
    the checkpoints that other rank counts resume from are written first."""
    runs = SharedRuns(tmp_path_factory.mktemp("replicas"), TIMEOUT)

    def add(key, n_ranks, args):
        runs.add(key, n_ranks, [*common(args), *args, "--log", runs.log_path(key)])

    for i in range(len(RESUMED)):
        add(("checkpoint", i), 2, ["--iterations", "2", "--replicas", "2", "--checkpoint",
                                   runs.scratch / f"ck{i}"])
    add("one rank", 1, [])
    for i, (n_ranks, replicas, partitions, extra) in enumerate(COPIES):
        layout = ["--partitions", partitions] if partitions else []
        add(("one rank", i), 1, [*extra, *(layout if "--diagonal" in extra else [])])
        add(("copies", i), n_ranks, [*extra, *layout, "--replicas", replicas])
    for n_ranks, replicas, partitions, dtype in BYTES:
        add(("bytes", n_ranks, dtype), n_ranks, ["--partitions", partitions, "--replicas",
                                                 replicas, "--loss", "squared", "--dtype", dtype])
    for i, (n_ranks, args) in enumerate(RESUMED):
        runs.add(("resumed", i), n_ranks, [*COMMON, *args, "--resume", runs.scratch / f"ck{i}",
                                           "--log", runs.log_path(("checkpoint", i))])
    for i, (n_ranks, args, _) in enumerate(BAD):
        runs.add(("bad", i), n_ranks, [*COMMON, *args])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(COPIES)),
                         ids=[f"{n}-{r}-{p}-{' '.join(e)}" for n, r, p, e in COPIES])
def test_replicas_give_the_single_rank_result(runs, case):
    """f of every iteration equals the one-rank run's to 1e-9; the block-diagonal
    method's is that of its own blocks, so the one-rank run takes the same partitions."""
    reference, log = runs.log(("one rank", case)), runs.log(("copies", case))
    assert len(log) == len(reference) > 3
    np.testing.assert_allclose(final_values(log), final_values(reference), rtol=1e-9)
    assert log[-1]["f"] < log[0]["f"]
    assert log[-1]["bytes"]["replicas"] > 0


def n_parameters(widths):
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, replicas, partitions, dtype", BYTES)
def test_bytes_of_copies_match_the_formulas(runs, n_ranks, replicas, partitions, dtype):
    """Inside the copies, the formulas of one layout on all l instances and |S| (each
    copy's passes run on its share), with the per-copy scalars once per copy; across
    them, per iteration: f's loss sum per trial (8 bytes by each of the k ranks of a
    copy), the gradient (n numbers) and per CG iteration the product with its
    quadratic form (n + k numbers), in the run's precision, n the parameters of the
    whole network. The squared loss: the softmax's sums over the output group add to
    the backward bytes (test_mpi's formulas)."""
    log = runs.log(("bytes", n_ranks, dtype))
    itemsize = np.dtype(dtype).itemsize
    train, _ = read_dataset("digits")
    widths = (train.n_features, *HIDDEN, 10)
    k = n_ranks // replicas
    layout = layout_for(widths, k, tuple(map(int, partitions.split(","))))
    n, n_train = n_parameters(widths), train.n_instances
    subset = default_subset(n_train)
    for rec in log[1:]:
        trials, cg = rec["line_search_trials"], rec["cg_iters"]
        assert rec["bytes"]["replicas"] == (trials * 8 * k + itemsize * n
                                            + cg * itemsize * (n + k))
        copies = replicas if k > 1 else 0  # a one-rank copy has no collectives inside
        assert rec["bytes"]["forward"] == trials * (forward_bytes(layout, n_train) + 16 * copies)
        assert rec["bytes"]["backward"] == (backward_bytes(layout, n_train, 1)
                                            + backward_bytes(layout, subset, 10))
        # per copy: ||r_0||, and per CG iteration J v (+ v.v) and r.r
        assert rec["bytes"]["gauss_newton"] == (copies * 8 + cg * (
            (subset * 10 + copies) * 8 + 8 * copies) if k > 1 else 0)
        assert rec["bytes"]["other"] == copies * (3 * 8 + 8)


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(RESUMED)), ids=[str(n) for n, _ in RESUMED])
def test_a_checkpoint_resumes_across_copy_counts(runs, case):
    reference = runs.log("one rank")
    runs.checked(("checkpoint", case))
    runs.checked(("resumed", case))  # its log goes on in the checkpointed run's
    resumed = runs.log(("checkpoint", case))
    assert [r["iter"] for r in resumed] == list(range(6))
    np.testing.assert_allclose(final_values(resumed), final_values(reference), rtol=1e-9)


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(BAD)), ids=[m for _, _, m in BAD])
def test_bad_replicas_end_every_rank_with_one_message(runs, case):
    n_ranks, _, message = BAD[case]
    proc = runs[("bad", case)]
    assert proc.returncode == 2 and proc.statuses == [2] * n_ranks, proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert message in proc.stderr, proc.stderr


def _objective_at_start(comm, raw, replicas):
    """f, the gradient and one Gauss-Newton product (and its quadratic form) at the
    initial parameters, the vectors gathered on rank 0 of the first copy."""
    problem = Problem.build(comm, raw, None, ModelConfig(hidden=(5,), C=0.3, dtype="float64",
                                                         replicas=replicas))
    try:
        objective = problem.objective
        evaluation = objective.evaluate(problem.network.initial_parameters(2))
        grad = objective.gradient(evaluation)
        operator = objective.gauss_newton(evaluation, np.array([0, 1]), 0.5)
        v = np.linspace(-1.0, 1.0, grad.size)
        product = np.empty_like(v)
        quadratic = operator.apply(v, product)
        return (evaluation.f, quadratic, problem.gather_vector(grad),
                problem.gather_vector(product))
    finally:
        problem.close()


def test_copies_of_the_layout_give_one_copys_objective():
    """In process (so also under mpiexec -n 3): every rank a copy of the one-rank
    layout gives the one-rank f, gradient and Gauss-Newton product, also where a
    copy's share of the subset S is empty (S = {0, 1} lies in the first copy's)."""
    world = MPI.COMM_WORLD
    rng = np.random.default_rng(5)
    raw = RawData(rng.standard_normal((23, 7)), rng.integers(0, 3, 23).astype(float), "random")
    f, quadratic, grad, product = _objective_at_start(world, raw, world.size)
    f1, quadratic1, grad1, product1 = _objective_at_start(MPI.COMM_SELF, raw, 1)
    assert f == pytest.approx(f1, rel=1e-12)
    assert quadratic == pytest.approx(quadratic1, rel=1e-12)
    if world.rank == 0:
        np.testing.assert_allclose(grad, grad1, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(product, product1, rtol=1e-12, atol=1e-15)
