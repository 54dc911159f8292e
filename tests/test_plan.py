"""The cost model and planner (dnewton.planning): predicted bytes equal the counted
ones, predicted memory equals the run's own estimates, the planner refuses what
does not fit, and the plan and calibrate commands' outputs and errors."""

import functools
import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import WORLD, default_subset, make_problem, run_environment
from shared_runs import SharedRuns

from dnewton.app.problem import ModelConfig
from dnewton.errors import InputError, ParameterError
from dnewton.io.data import read_dataset
from dnewton.model.gauss_newton import stored_bytes
from dnewton.parallel.layout import Layout
from dnewton.planning.cost import Choice, Workload, lower_bound, predict
from dnewton.planning.machine import DEFAULT, Machine
from dnewton.planning.memory import RankMemory
from dnewton.planning.planner import (
    NOMINAL_INSTANCES,
    _products,
    candidates,
    choose,
    layout_for,
    rank,
    search,
)
from dnewton.planning.volume import Counts

HIDDEN = (16, 12)
COMMON = ["train", "digits", "--hidden", "16,12", "--iterations", "3", "--feature-scale", "16",
          "--center", "--dtype", "float64", "--quiet", "--seed", "3"]


def digits_shape():
    train, test = read_dataset("digits")
    return train.n_instances, test.n_instances, (train.n_features, *HIDDEN, 10)


def serial(args, timeout=120):
    """``python -m dnewton ARGS`` on one process (no mpiexec)."""
    if WORLD.size > 1:
        pytest.skip("starts a process itself: runs in the one-process suite only")
    return subprocess.run([sys.executable, "-m", "dnewton", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env=run_environment(timeout))


# -- bytes: predicted equal counted ------------------------------------------------------

# (ranks, partitions, assignment, extra flags): split input, hidden and output layers,
# one block per rank, both assignments, the recomputed Jacobian, softmax, float32,
# copies of the layout (--replicas).
RUNS = [
    (2, "1,2,1,1", "balanced", []),
    (2, "1,1,2,1", "aligned", []),
    (3, "2,1,1,1", "balanced", ["--loss", "softmax"]),
    (4, "2,2,2,1", "balanced", ["--dtype", "float32"]),
    (3, "3,1,1,2", "balanced", ["--jacobian", "recomputed"]),
    (2, "2,1,2,1", "aligned", ["--jacobian", "recomputed", "--loss", "softmax"]),
    (2, "1,1,1,1", "balanced", ["--replicas", "2"]),
    (4, "1,2,1,1", "balanced", ["--replicas", "2", "--jacobian", "recomputed"]),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs of this module, in one shared job per rank count (shared_runs.py)."""
    runs = SharedRuns(tmp_path_factory.mktemp("plan"))
    for i, (n_ranks, partitions, assignment, extra) in enumerate(RUNS):
        runs.add(i, n_ranks, [*COMMON, "--partitions", partitions, "--assignment", assignment,
                              "--log", runs.log_path(i), *extra])
    runs.add("planned", 2, [*COMMON[:-3], "--seed", "3", "--log", runs.log_path("planned")])
    bad = runs.scratch / "machine.json"
    bad.write_text("{not json")
    runs.add("bad machine", 2, [*COMMON, "--machine", bad])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(RUNS)),
                         ids=[f"{n}-{p}-{a}-{' '.join(e)}" for n, p, a, e in RUNS])
def test_predicted_bytes_equal_the_counted_bytes(runs, case):
    n_ranks, partitions, assignment, extra = RUNS[case]
    log = runs.log(case)
    n_train, n_test, widths = digits_shape()
    flags = dict(zip(extra[::2], extra[1::2]))
    workload = Workload(widths, n_train, default_subset(n_train),
                        itemsize=4 if flags.get("--dtype") == "float32" else 8,
                        loss=flags.get("--loss", ModelConfig.loss))
    choice = Choice(tuple(map(int, partitions.split(","))), assignment,
                    int(flags.get("--replicas", 1)), flags.get("--jacobian", "stored"))
    for rec in log[1:]:
        workload.counts = Counts(cg_iters=rec["cg_iters"], trials=rec["line_search_trials"],
                                 test_instances=n_test)
        predicted = predict(workload, choice, n_ranks).bytes
        assert {p: predicted[p] for p in rec["bytes"]} == rec["bytes"]


@pytest.mark.mpi
def test_train_without_partitions_takes_the_planners_first_choice(runs):
    proc = runs.checked("planned")
    n_train, n_test, widths = digits_shape()
    first = choose(widths, n_train, default_subset(n_train), 2)[0]
    parts = ",".join(map(str, first.choice.partitions))
    assert (f"layout chosen by the planner: partitions {parts} ({first.choice.assignment}, "
            f"{first.choice.jacobian} Jacobian)" in proc.stdout), proc.stdout
    if first.choice.replicas > 1:
        assert f"with {first.choice.replicas} copies" in proc.stdout, proc.stdout
    workload = Workload(widths, n_train, default_subset(n_train), loss=ModelConfig.loss)
    for rec in runs.log("planned")[1:]:
        workload.counts = Counts(rec["cg_iters"], rec["line_search_trials"],
                                 test_instances=n_test)
        predicted = predict(workload, first.choice, 2).bytes
        assert {p: predicted[p] for p in rec["bytes"]} == rec["bytes"]


@pytest.mark.mpi
def test_train_refuses_a_bad_machine_file_on_every_rank(runs):
    proc = runs["bad machine"]
    assert proc.returncode == 2 and proc.statuses == [2, 2], proc.stderr
    assert proc.stderr.count("dnewton: error") == 1, proc.stderr
    assert "not a valid JSON machine file" in proc.stderr


# -- memory: the run's own estimates ----------------------------------------------------

@pytest.mark.parametrize("partitions", [None, (1, 1, 1, 1), (2, 3, 2, 1), (3, 1, 2, 3)])
@pytest.mark.parametrize("jacobian", ["stored", "recomputed"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predicted_memory_equals_the_runs_estimates(partitions, jacobian, dtype):
    """On this rank of the in-process problem (1 rank, or 3 under mpiexec)."""
    problem = make_problem(partitions=partitions, dtype=dtype)
    try:
        memory = RankMemory(problem.layout)
        rank_, itemsize, n = WORLD.rank, np.dtype(dtype).itemsize, 5
        assert (memory.gauss_newton_bytes(rank_, n, jacobian, itemsize)
                == stored_bytes(problem.network, n, jacobian))
        assert (memory.kept_bytes(rank_, problem.objective.n_instances, itemsize)
                == problem.objective.kept_bytes())
        assert memory.parameters(rank_) == problem.network.n_params
        assert (memory.data_bytes(rank_, problem.objective.n_instances, itemsize)
                - (8 * problem.objective.n_instances if rank_ in memory.outputs else 0)
                == problem.objective.data.stored_bytes())
    finally:
        problem.close()


def test_the_largest_rank_sets_the_memory_per_rank():
    widths = (50, 40, 30, 5)
    workload = Workload(widths, 1000, 100)
    prediction = predict(workload, Choice((2, 2, 1, 1)), 3)
    layout = Layout(widths, (2, 2, 1, 1), 3)
    memory = RankMemory(layout)
    assert prediction.memory_per_rank == max(memory.total(r, 1000, 100)["total"]
                                             for r in range(3))


# -- the planner -------------------------------------------------------------------------

def test_the_planner_refuses_layouts_that_do_not_fit():
    workload = Workload((784, 1000, 1000, 100), 20000, 5000)
    fits, refused = rank(workload, 4)
    assert fits and not refused
    sizes = sorted(p.memory_per_rank for p in fits)
    limit = sizes[len(sizes) // 2]
    fits, refused = rank(workload, 4, memory_per_rank=limit)
    assert fits and refused
    assert all(p.memory_per_rank <= limit for p in fits)
    assert all(p.memory_per_rank > limit and "more than" in p.refused for p in refused)
    # the stored Jacobian of 100 classes is what does not fit first
    assert any(p.choice.jacobian == "stored" for p in refused)
    with pytest.raises(InputError, match="fits in memory"):
        choose(workload.widths, 20000, 5000, 4, memory_per_rank=sizes[0] / 10)


def test_the_planner_ranks_by_predicted_seconds_and_respects_restrictions():
    widths = (779, 300, 300, 10)
    ranked = choose(widths, 2000, 100, 2, replicas=1, jacobian="recomputed")
    assert {p.choice.replicas for p in ranked} == {1}
    assert {p.choice.jacobian for p in ranked} == {"recomputed"}
    seconds = [p.seconds_per_iteration for p in ranked]
    assert seconds[0] <= min(seconds) * 1.03 + 1e-12
    assert all(Layout.count_blocks(p.choice.partitions) >= 2 for p in ranked)
    every = choose(widths, 2000, 100, 4)
    assert {p.choice.replicas for p in every} == {1, 2, 4}
    # Every copy of the layout needs instances: no more copies than there are.
    few = choose((5, 8, 1), 2, 1, 4)
    assert {p.choice.replicas for p in few} == {1, 2}


def test_replicas_add_their_own_phase():
    widths = (50, 40, 30, 5)
    workload = Workload(widths, 1001, 101, counts=Counts(cg_iters=4, trials=2))
    one = predict(workload, Choice((1, 2, 1, 1)), 2)
    two = predict(workload, Choice((1, 2, 1, 1), replicas=2), 4)
    assert one.bytes["replicas"] == 0
    parameters = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    # docs/design.md, "Copies of the layout": t 8 k + 8 n + c 8 (n + k)
    assert two.bytes["replicas"] == 2 * 8 * 2 + 8 * parameters + 4 * 8 * (parameters + 2)
    # the copies' model-parallel sums: as one copy on all instances, plus the scalars
    assert two.bytes["forward"] == one.bytes["forward"] + 2 * 16
    assert two.seconds["replicas"] > 0


# -- the commands --------------------------------------------------------------------------

def test_plan_json_lists_the_candidates_in_order():
    proc = serial(["plan", "--instances", "2000", "--features", "779", "--classes", "10",
                   "--ranks", "2", "--hidden", "300,300", "--json"])
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    listed = answer["candidates"]
    assert listed
    for c in listed:
        assert {"partitions", "replicas", "jacobian", "seconds_per_iteration",
                "bytes_per_iteration", "memory_per_rank"} <= set(c)
        assert len(c["partitions"]) == 4 and c["replicas"] in (1, 2)
    best = min(c["seconds_per_iteration"] for c in listed)
    assert listed[0]["seconds_per_iteration"] <= best * 1.03
    # the first --top (20) rows, of those predicted; --top 0: every candidate
    assert len(listed) == 20 and answer["not_predicted"] > 0
    proc = serial(["plan", "--instances", "2000", "--features", "779", "--classes", "10",
                   "--ranks", "2", "--hidden", "300,300", "--json", "--top", "0"])
    every = json.loads(proc.stdout)
    assert every["not_predicted"] == 0
    assert len(every["candidates"]) == len(list(candidates((779, 300, 300, 10), 2)))
    assert every["candidates"][:20] == listed


def test_plan_refuses_a_negative_top():
    proc = serial(["plan", "--instances", "100", "--features", "10", "--classes", "3",
                   "--ranks", "2", "--hidden", "8", "--top", "-1"])
    assert proc.returncode == 2 and "--top must be >= 0" in proc.stderr, proc.stderr


def test_plan_reads_the_shape_of_a_data_set_and_prints_a_table():
    proc = serial(["plan", "digits", "--ranks", "3", "--hidden", "16,12",
                   "--memory-per-rank", "1e9"])
    assert proc.returncode == 0, proc.stderr
    assert "s/iter" in proc.stdout and "MiB/rank" in proc.stdout


@pytest.mark.parametrize("text, says", [
    ("{not json", "not a valid JSON machine file"),
    ('{"gemm": [[8, 1e9]]}', "missing field"),
    (json.dumps({**DEFAULT.to_json(), "stream_bandwidth": -1}),
     "stream_bandwidth must be a positive number"),
    (json.dumps({**DEFAULT.to_json(), "gemm": []}), "gemm must be a list"),
])
def test_a_bad_machine_file_is_one_message_and_exit_2(tmp_path, text, says):
    bad = tmp_path / "machine.json"
    bad.write_text(text)
    proc = serial(["plan", "--instances", "100", "--features", "10", "--classes", "3",
                   "--ranks", "2", "--hidden", "8", "--machine", bad])
    assert proc.returncode == 2
    assert proc.stderr.count("dnewton: error") == 1 and says in proc.stderr, proc.stderr
    with pytest.raises(InputError, match=says.split()[0]):
        Machine.load(bad)


def test_calibrate_writes_a_machine_file_the_planner_reads(tmp_path):
    out = tmp_path / "machine.json"
    proc = serial(["calibrate", "--seconds", "1", "--output", out])
    assert proc.returncode == 0, proc.stderr
    assert "defaults kept" in proc.stdout  # MPI on one rank: said so
    machine = Machine.load(out)
    assert machine.gemm and machine.stream_bandwidth > 0
    proc = serial(["plan", "digits", "--ranks", "2", "--hidden", "16", "--machine", out])
    assert proc.returncode == 0, proc.stderr


def test_a_machine_round_trips_through_json(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(DEFAULT.text())
    loaded = Machine.load(path)
    assert loaded.to_json() | {"source": None} == DEFAULT.to_json() | {"source": None}
    assert DEFAULT.allreduce_seconds(8, (0,)) == 0.0
    # across nodes the network's figures apply
    far = DEFAULT.allreduce_seconds(8e6, (0, DEFAULT.ranks_per_node))
    near = DEFAULT.allreduce_seconds(8e6, (0, 1))
    assert far > near > 0


def test_the_planner_offers_no_more_copies_than_instances():
    """3 ranks, 2 instances: a run refuses 3 copies (one would be empty), so the
    planner, choosing for a run that did not give --replicas, must not pick them."""
    from dnewton.app.problem import ModelConfig, Problem
    from dnewton.io.data import RawData
    from dnewton.planning.planner import choose

    plans = choose((4, 8, 2), n_instances=2, n_subset=1, n_ranks=3)
    assert plans and all(p.choice.replicas <= 2 for p in plans)
    assert {p.choice.replicas for p in choose((4, 8, 2), 6, 1, 3)} >= {1, 3}
    X = np.arange(8.0).reshape(2, 4)
    problem = Problem.build(WORLD, RawData(X, np.array([0.0, 1.0]), "two"), None,
                            ModelConfig(hidden=(8,)))  # the planner's own choice trains
    try:
        assert problem.config.replicas <= 2
    finally:
        problem.close()


# -- the search: few predictions, the same places as predicting every candidate ------------

# (widths, l, |S|, ranks, workload settings, search restrictions)
SEARCHES = [
    *[((784, 300, 300, 10), 6000, 300, n, {}, {}) for n in (2, 3, 4, 6)],
    ((100, 60, 40, 10), 6000, 300, 12, {}, {}),
    ((100, 60, 40, 10), 6000, 300, 12, {}, {"jacobian": "stored"}),
    ((100, 60, 40, 10), 6000, 300, 16, {}, {"replicas": 1}),
    ((64, 16, 12, 10), 1347, 68, 8, {}, {}),
    ((50, 200, 100, 30), 10001, 501, 6, {"loss": "softmax", "itemsize": 4}, {}),
    ((50, 200, 100, 30), 10001, 501, 4, {"diagonal": True, "counts": Counts(4, 2, 3, 99)}, {}),
    ((100, 64, 64, 64, 20), 5000, 250, 8, {"counts": Counts(7, 1.5)}, {"assignment": "balanced"}),
    ((5, 8, 1), 2, 1, 4, {}, {}),
]


def search_case(case):
    widths, n, s, ranks, settings, restrict = case
    return Workload(widths, n, s, **settings), ranks, restrict


@functools.lru_cache(maxsize=None)
def every_candidate(i, memory=False):
    """`SEARCHES[i]` with every candidate predicted (`memory`: with half of them
    over a memory limit, some then predicted without the kept passes)."""
    workload, ranks, restrict = search_case(SEARCHES[i])
    limit = None
    if memory:
        fits = every_candidate(i).fits
        limit = sorted(p.memory_per_rank for p in fits)[len(fits) // 2]
    return search(workload, ranks, memory_per_rank=limit, **restrict)


def runner_up(fits):
    """The first prediction with other partitions than the first (train's start-up line)."""
    return next((p for p in fits if p.choice.partitions != fits[0].choice.partitions), None)


def places(fits):
    return [(p.choice, p.seconds_per_iteration) for p in fits]


@pytest.mark.parametrize("i", range(len(SEARCHES)))
def test_the_lower_bound_is_below_every_prediction(i):
    workload, ranks, _ = search_case(SEARCHES[i])
    for memory in (False, True):  # without the kept passes the iteration only grows
        found = every_candidate(i, memory)
        assert found.skipped == 0 and found.predicted == len(found.fits) + len(found.refused)
        for p in found.fits:
            bound = lower_bound(workload, p.choice, ranks)
            assert 0 < bound <= p.seconds_per_iteration * (1 + 1e-12), p.choice


@pytest.mark.parametrize("i", range(len(SEARCHES)))
@pytest.mark.parametrize("top", [1, 5])
def test_the_search_places_as_predicting_every_candidate(i, top):
    workload, ranks, restrict = search_case(SEARCHES[i])
    every = every_candidate(i)
    few = search(workload, ranks, top=top, **restrict)
    assert places(few.fits[:top]) == places(every.fits[:top])
    assert places([runner_up(few.fits)] if runner_up(few.fits) else []) == places(
        [runner_up(every.fits)] if runner_up(every.fits) else [])
    assert few.predicted + few.skipped == every.predicted


def test_the_search_predicts_every_candidate_until_one_fits():
    """Memory refuses some: the bound never skips before a fitting prediction, and
    with nothing fitting, the error names the smallest, as predicting every one."""
    workload = Workload((784, 1000, 1000, 100), 20000, 5000)
    for limit in (300e6, 60e6):
        every = search(workload, 4, memory_per_rank=limit)
        few = search(workload, 4, memory_per_rank=limit, top=1)
        assert places(few.fits[:1]) == places(every.fits[:1])
        assert [p.choice for p in few.refused[:1]] == [p.choice for p in every.refused[:1]]
    assert not every.fits and few.skipped == 0


# The help example's network (dnewton plan --help) at cluster scale: the first choice
# at 1,024 ranks recorded by predicting every one of its 1,812 candidates before the
# search existed, and the number of predictions it takes now.
CLUSTER = ((784, 8192, 8192, 8192, 1000), 1000000, 50000)


@pytest.mark.parametrize("ranks, first, candidates_, at_most", [
    (1024, Choice((1, 4, 2, 4, 1), "balanced", 128, "recomputed"), 1812, 16),
    (4000, Choice((1, 20, 1, 20, 1), "balanced", 200, "recomputed"), 4110, 24),
    (100000, Choice((8, 8, 16, 8, 4), "balanced", 625, "recomputed"), 4366, 100),
])
def test_the_planner_predicts_a_handful_of_the_candidates_at_cluster_scale(
        ranks, first, candidates_, at_most):
    found = search(Workload(*CLUSTER), ranks, top=1)
    assert found.fits[0].choice == first
    assert found.predicted + found.skipped == candidates_
    assert found.predicted <= at_most


def test_the_planner_predicts_few_for_a_small_network_on_many_ranks():
    found = search(Workload((784, 300, 300, 10), 60000, 3000), 4000, top=1)
    assert found.fits[0].choice == Choice((4, 8, 4, 1), "balanced", 125, "stored")
    assert found.predicted + found.skipped == 3264 and found.predicted <= 300


@pytest.mark.parametrize("seed", range(20))
def test_partition_vectors_are_the_block_counted_products_of_the_options(seed):
    rng = np.random.default_rng(seed)
    options = [sorted(set(rng.choice([1, 2, 3, 4, 6, 8, 12, 16], rng.integers(1, 6)).tolist()))
               for _ in range(rng.integers(2, 7))]
    fewest, most = int(rng.integers(1, 40)), int(rng.integers(40, 200))
    expected = [v for v in itertools.product(*options)
                if fewest <= Layout.count_blocks(v) <= most]
    assert _products(options, fewest, most) == expected


@pytest.mark.parametrize("widths, ranks", [((784, 300, 300, 10), 12), ((30, 7, 9, 4, 5), 6),
                                           ((64, 16, 12, 10), 8)])
def test_the_aligned_assignment_is_offered_when_it_gives_every_rank_a_block(widths, ranks):
    offered = {(c.partitions, c.replicas) for c in candidates(widths, ranks)
               if c.assignment == "aligned"}
    for c in candidates(widths, ranks, assignment="balanced"):
        k = ranks // c.replicas
        aligned = Layout(widths, c.partitions, k, "aligned")
        assert ((c.partitions, c.replicas) in offered) == (
            len(set(aligned.owner.tolist())) == k)


def test_training_plans_on_one_rank(monkeypatch):
    """Problem.build asks the planner on rank 0 only; every rank takes its choice."""
    from dnewton.app import problem as problem_module
    from dnewton.app.problem import ModelConfig, Problem
    from dnewton.io.data import RawData

    calls = []
    original = problem_module.choose
    monkeypatch.setattr(problem_module, "choose",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    X = np.arange(40.0).reshape(10, 4)
    built = Problem.build(WORLD, RawData(X, np.arange(10.0) % 2, "ten"), None,
                          ModelConfig(hidden=(8,)))
    try:
        assert len(calls) == (1 if WORLD.rank == 0 else 0)
        choices = WORLD.allgather(built.plan[0].choice)
        assert all(c == choices[0] for c in choices)
    finally:
        built.close()


# -- one chooser: given partitions and prediction take the planner's layout too -----------

@pytest.mark.parametrize("widths, partitions, ranks", [
    ((64, 16, 12, 10), (3, 1, 1, 2), 3), ((64, 16, 12, 10), (1, 1, 1, 2), 2),
    ((784, 300, 300, 10), (1, 2, 1, 1), 2), ((784, 300, 300, 10), (2, 2, 2, 1), 4)])
def test_given_partitions_take_the_planners_assignment(widths, partitions, ranks):
    nominal = Workload(widths, NOMINAL_INSTANCES, math.ceil(0.05 * NOMINAL_INSTANCES))
    fits, _ = rank(nominal, ranks, partitions=partitions, replicas=1, jacobian="stored")
    layout = layout_for(widths, ranks, partitions)
    assert (layout.partitions, layout.assignment) == (partitions, fits[0].choice.assignment)


@pytest.mark.parametrize("ranks", [1, 2, 3, 7])
def test_the_default_layout_is_the_planners(ranks):
    widths = (784, 300, 300, 10)
    nominal = Workload(widths, NOMINAL_INSTANCES, math.ceil(0.05 * NOMINAL_INSTANCES))
    first = rank(nominal, ranks, replicas=1, jacobian="stored")[0][0].choice
    layout = layout_for(widths, ranks)
    assert (layout.partitions, layout.assignment) == (first.partitions, first.assignment)


def test_partitions_that_cannot_be_laid_out_are_refused_as_before():
    with pytest.raises(ParameterError, match="gives 3 weight blocks but the job has 4 ranks"):
        layout_for((64, 16, 12, 10), 4, (1, 1, 1, 1))
    with pytest.raises(InputError, match="fewer than 20 ranks"):
        layout_for((2, 2, 2), 20)
