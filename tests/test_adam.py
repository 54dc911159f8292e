"""The Adam baseline: its steps against a plain NumPy statement of Adam on every
layout, its trajectory and bytes on several layouts, learning, exact resumption
and the refusal of bad hyper-parameters by flag."""

import numpy as np
import pytest
from helpers import (
    LAYOUTS,
    check_digits_epochs,
    global_vector,
    local_vector,
    make_problem,
    random_theta,
    read_log,
    without_timings,
)
from shared_runs import SharedRuns

from dnewton.app.cli import _minibatch_options, build_parser
from dnewton.app.training import make_solver, solve
from dnewton.constants import Stream, random_stream
from dnewton.errors import ParameterError
from dnewton.solvers.adam import AdamOptions
from dnewton.solvers.minibatch import minibatches


def numpy_adam(problem, theta0, options):
    """Adam as its paper states it, on global vectors; the mini-batch gradients are
    the objective's (on any layout they are the same global vector)."""
    b1, b2, eps = options.beta1, options.beta2, options.eps
    theta = global_vector(problem, theta0)
    m, v, t = np.zeros_like(theta), np.zeros_like(theta), 0
    batches = random_stream(options.seed, Stream.MINIBATCHES)
    for epoch in range(1, options.epochs + 1):
        rate = options.learning_rate / (1 + options.lr_decay * (epoch - 1))
        for rows in minibatches(problem.objective.n_instances, options.mini_batch, batches):
            g = global_vector(problem, problem.objective.batch_gradient(
                local_vector(problem, theta), rows))
            t += 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            theta = theta - rate * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("partitions", LAYOUTS)
def test_adam_steps_are_those_of_the_numpy_statement(partitions):
    # 11 instances in mini-batches of 4: 3 steps per epoch, so the step count t
    # runs on across epochs while the learning rate decays per epoch.
    problem = make_problem("softmax", "relu", partitions)
    theta0 = random_theta(problem)
    options = AdamOptions(learning_rate=0.05, beta1=0.8, beta2=0.99, eps=1e-6, mini_batch=4,
                          epochs=3, lr_decay=0.5, seed=5)
    result = solve(problem, options, theta=theta0)
    expected = numpy_adam(problem, theta0, options)
    np.testing.assert_allclose(global_vector(problem, result.theta), expected,
                               rtol=1e-12, atol=1e-14)
    assert [rec.iter for rec in result.history] == [0, 1, 2, 3]
    assert [rec.alpha for rec in result.history[1:]] == [0.05, 0.05 / 1.5, 0.05 / 2]
    assert result.history[-1].f == pytest.approx(
        problem.objective.value(local_vector(problem, expected)), rel=1e-12)
    problem.close()


@pytest.mark.parametrize("partitions", [None, (2, 3, 2, 1)])
def test_adam_keeps_its_moments_in_the_network_precision(partitions):
    options = AdamOptions(learning_rate=0.05, mini_batch=4, epochs=2)
    finals = {}
    for dtype in ("float64", "float32"):
        problem = make_problem("squared", "tanh", partitions, dtype=dtype)
        solver = make_solver(problem, options)
        record = solver.start(random_theta(problem).astype(dtype))
        solver.measure(record)
        while not solver.done:
            solver.measure(solver.step())
        state = solver.state()
        assert state.scalars == {"steps": 6}
        assert {name: vec.dtype for name, vec in state.vectors.items()} == {
            "m": np.dtype(dtype), "v": np.dtype(dtype)}
        assert solver.theta.dtype == np.dtype(dtype)
        finals[dtype] = solver.f
        problem.close()
    assert finals["float32"] == pytest.approx(finals["float64"], rel=1e-4)


@pytest.mark.parametrize("change, message", [
    (dict(beta1=1.0), "beta1 must be in [0, 1)"),
    (dict(beta2=-0.1), "beta2 must be in [0, 1)"),
    (dict(eps=0.0), "eps must be a positive number"),
    (dict(learning_rate=0.0), "learning_rate must be a positive number"),
    (dict(mini_batch=0), "mini_batch must be >= 1"),
])
def test_bad_hyperparameters_are_named(change, message):
    with pytest.raises(ParameterError) as caught:
        AdamOptions(**change).check()
    assert str(caught.value) == message


def test_each_solver_has_its_own_default_learning_rate():
    parse = build_parser().parse_args
    adam = _minibatch_options(parse(["train", "digits", "--solver", "adam"]))
    sgd = _minibatch_options(parse(["train", "digits", "--solver", "sgd"]))
    assert (type(adam), adam.learning_rate) == (AdamOptions, 1e-3)
    assert sgd.learning_rate == 0.01
    given = _minibatch_options(parse(["train", "digits", "--solver", "adam",
                                      "--learning-rate", "0.2", "--adam-eps", "1e-6"]))
    assert (given.learning_rate, given.eps) == (0.2, 1e-6)


ADAM = ["train", "digits", "--solver", "adam", "--hidden", "16,12", "--epochs", "3",
        "--mini-batch", "100", "--learning-rate", "0.01", "--feature-scale", "16", "--center",
        "--quiet", "--seed", "4", "--dtype", "float64"]  # the layouts agree to its rounding


LAYOUTS_OF_RANKS = [(2, "1,2,1,1"), (3, "3,1,1,2")]
DTYPES = ["float64", "float32"]
BAD = [
    ("adam", ["--beta1", "1"], "--beta1 must be in [0, 1)"),
    ("adam", ["--adam-eps", "0"], "--adam-eps must be a positive number"),
    ("adam", ["--learning-rate", "-0.1"], "--learning-rate must be a positive number"),
    ("adam", ["--momentum", "0.5"], "--momentum applies to --solver sgd only, not to adam"),
    ("adam", ["--diagonal"], "--diagonal applies to --solver newton only, not to adam"),
    ("sgd", ["--beta1", "0.5"], "--beta1 applies to --solver adam only, not to sgd"),
]
LEARNS = ["train", "digits", "--solver", "adam", "--hidden", "64", "--epochs", "10",
          "--learning-rate", "0.003", "--feature-scale", "16", "--center", "--loss", "squared",
          "-C", "0.1"]


def resumed_run(dtype):
    return [*ADAM, "--epochs", "6", "--partitions", "1,2,1,1", "--dtype", dtype]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py)."""
    runs = SharedRuns(tmp_path_factory.mktemp("adam"))
    tmp = runs.scratch
    runs.add("one rank", 1, [*ADAM, "--log", runs.log_path("one rank")])
    runs.add("learns", 1, [*LEARNS, "--log", runs.log_path("learns")])
    for i, (solver, change, _) in enumerate(BAD):
        runs.add(("bad", i), 1, ["train", "digits", "--solver", solver, *change, "--quiet",
                                 "--log", tmp / f"bad{i}.jsonl"])
    for n_ranks, partitions in LAYOUTS_OF_RANKS:
        runs.add(("layout", n_ranks), n_ranks, [*ADAM, "--partitions", partitions, "--log",
                                                runs.log_path(("layout", n_ranks))])
    for dtype in DTYPES:
        run, folder, log = resumed_run(dtype), tmp / f"ck-{dtype}", tmp / f"{dtype}.jsonl"
        runs.add(("whole", dtype), 2, [*run, "--log", tmp / f"whole-{dtype}.jsonl"])
        runs.add(("first", dtype), 2, [*run, "--epochs", "3", "--checkpoint", folder,
                                       "--log", log])
        # The moments' decay is part of the trajectory: a resumption may not change it.
        runs.add(("other beta2", dtype), 2, [*run, "--beta2", "0.99", "--resume", folder])
        runs.add(("resumed", dtype), 2, [*run, "--resume", folder, "--log", log])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, partitions", LAYOUTS_OF_RANKS)
def test_adam_trajectory_and_bytes_do_not_depend_on_the_layout(runs, n_ranks, partitions):
    log = runs.log(("layout", n_ranks))
    assert [rec["iter"] for rec in log] == [0, 1, 2, 3]
    # The step rule is elementwise: an epoch moves what SGD's does, and nothing more.
    check_digits_epochs(log, runs.log("one rank"), n_ranks, partitions, (16, 12), 0.01)
    assert all(rec["bytes"]["other"] == 0 for rec in log[1:])


@pytest.mark.mpi
def test_adam_learns_the_digits(runs):
    proc = runs.checked("learns")
    assert ("Adam, mini-batches of 128, learning rate 0.003, beta1 0.9, beta2 0.999, "
            "eps 1e-08") in proc.stdout
    assert "stopped after 10 epoch(s): reached the epoch limit" in proc.stdout
    log = runs.log("learns")
    fs = [rec["f"] for rec in log]
    assert all(later < earlier for earlier, later in zip(fs, fs[1:]))
    assert fs[-1] < 0.2 * fs[0]
    assert log[-1]["test_accuracy"] >= 0.9


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_resumes_to_the_uninterrupted_log(runs, dtype):
    for step in ("whole", "first"):
        runs.checked((step, dtype))
    proc = runs[("other beta2", dtype)]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("beta2 = 0.999, this run has 0.99") == 1, proc.stderr
    runs.checked(("resumed", dtype))
    whole, log = runs.scratch / f"whole-{dtype}.jsonl", runs.scratch / f"{dtype}.jsonl"
    assert without_timings(read_log(log)) == without_timings(read_log(whole))


@pytest.mark.mpi
@pytest.mark.parametrize("case", range(len(BAD)), ids=[m for _, _, m in BAD])
def test_bad_options_end_with_one_message_naming_the_flag(runs, case):
    proc, message = runs[("bad", case)], BAD[case][2]
    assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr
    assert proc.stderr.count("dnewton: ") == 1
    assert not (runs.scratch / f"bad{case}.jsonl").exists()
