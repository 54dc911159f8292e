"""The SGD baseline: its stochastic gradient against finite differences, its step
against the distributed gradient, and its trajectory and bytes on several layouts."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import mpiexec_path, read_log, run_dnewton
from test_derivatives import LAYOUTS, central_differences, make_problem, random_theta
from test_mpi import backward_bytes, forward_bytes

from dnewton.data import read_dataset
from dnewton.layout import Layout
from dnewton.losses import LOSSES
from dnewton.sgd import SGDOptions, minibatches


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_batch_gradient_matches_finite_differences(partitions, loss):
    problem = make_problem(loss, "tanh", partitions)
    objective = problem.objective
    theta = random_theta(problem)
    rows = np.array([1, 4, 5, 9])
    labels = objective.data.labels[rows]

    def batch_objective(th):  # theta'theta / (2 C l) + mean loss over the batch
        out = problem.network.forward(th, objective.data.rows(rows), len(rows)).output
        return th @ th * objective.regularization / 2 + objective.loss.value(out, labels) / 4

    numeric = central_differences(batch_objective, theta)
    np.testing.assert_allclose(objective.batch_gradient(theta, rows), numeric,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("partitions", LAYOUTS)
def test_full_batch_steps_are_gradient_steps_with_momentum(partitions):
    problem = make_problem("softmax", "relu", partitions)
    objective = problem.objective
    theta0 = random_theta(problem)
    rate, mu = 0.3, 0.5
    options = SGDOptions(C=0.7, learning_rate=rate, momentum=mu,
                         batch_size=objective.n_instances, epochs=2)
    result = problem.fit_sgd(options, theta=theta0)
    _, g0 = objective.value_and_gradient(theta0)
    theta1 = theta0 - rate * g0
    _, g1 = objective.value_and_gradient(theta1)
    theta2 = theta1 - rate * (mu * g0 + g1)  # v = mu v + g; theta -= eta v
    np.testing.assert_allclose(result.theta, theta2, rtol=1e-12, atol=1e-14)
    assert [rec.iter for rec in result.history] == [0, 1, 2]
    assert result.history[-1].f == pytest.approx(objective.value(theta2), rel=1e-12)


def test_minibatches_cover_every_instance_once_per_epoch():
    rng = np.random.default_rng(0)
    batches = list(minibatches(23, 5, rng))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(23))
    assert all(np.all(np.diff(b) > 0) for b in batches)


STEP_SCRIPT = """
import numpy as np
from mpi4py import MPI
from dnewton.data import read_dataset
from dnewton.sgd import SGDOptions
from dnewton.trainer import ModelConfig, Problem

train, _ = read_dataset("digits")
config = ModelConfig(hidden=(16, 12), partitions=PARTITIONS, feature_scale=16, center=True)
problem = Problem.build(MPI.COMM_WORLD, train, None, config, 0.01)
theta = problem.network.initial_parameters(5)
_, g = problem.objective.value_and_gradient(theta)
options = SGDOptions(learning_rate=0.02, momentum=0.0, batch_size=train.n_instances, epochs=1)
result = problem.fit_sgd(options, theta=theta)
np.testing.assert_allclose(result.theta, theta - 0.02 * g, rtol=1e-12, atol=1e-15)
(gg,) = problem.groups.allsum([g @ g])
assert abs(result.history[0].gnorm - np.sqrt(gg)) <= 1e-12 * np.sqrt(gg)
problem.close()
if MPI.COMM_WORLD.rank == 0:
    print("step ok")
"""


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, partitions", [(3, (2, 1, 1, 1)), (4, (2, 2, 2, 1))])
def test_sgd_step_equals_the_distributed_gradient_step(tmp_path, n_ranks, partitions):
    script = tmp_path / "step.py"
    script.write_text(STEP_SCRIPT.replace("PARTITIONS", repr(partitions)))
    mpiexec = mpiexec_path()
    if mpiexec is None:
        pytest.skip("no mpiexec found")
    env = dict(os.environ, MPIEXEC_TIMEOUT="120", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # -m mpi4py: a failed assertion on one rank aborts them all.
    proc = subprocess.run(
        [mpiexec, "-n", str(n_ranks), sys.executable, "-m", "mpi4py", str(script)],
        capture_output=True, text=True, timeout=150, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "step ok" in proc.stdout


SGD = ["train", "digits", "--solver", "sgd", "--hidden", "16,12", "--epochs", "3",
       "--mini-batch", "100", "--learning-rate", "0.05", "--feature-scale", "16", "--center",
       "--quiet", "--seed", "4"]


@pytest.fixture(scope="module")
def sgd_single_rank(tmp_path_factory):
    path = tmp_path_factory.mktemp("sgd") / "one.jsonl"
    run_dnewton(1, [*SGD, "--log", path])
    return read_log(path)


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, partitions", [(2, "1,2,1,1"), (3, "3,1,1,2"),
                                                 (4, "2,2,2,1")])
def test_sgd_trajectory_and_bytes_do_not_depend_on_the_layout(
        sgd_single_rank, tmp_path, n_ranks, partitions):
    path = tmp_path / "run.jsonl"
    run_dnewton(n_ranks, [*SGD, "--partitions", partitions, "--log", path])
    log = read_log(path)
    assert [rec["iter"] for rec in log] == [0, 1, 2, 3]
    np.testing.assert_allclose([rec["f"] for rec in log],
                               [rec["f"] for rec in sgd_single_rank], rtol=1e-9)
    assert log[-1]["f"] < 0.5 * log[0]["f"]
    train, _ = read_dataset("digits")
    layout = Layout((train.n_features, 16, 12, 10), tuple(map(int, partitions.split(","))),
                    n_ranks)
    # Each mini-batch runs one forward and one backward pass; the bytes are linear
    # in the batch size, so an epoch moves those of one pass over all l instances.
    for rec in log[1:]:
        assert rec["bytes"]["forward"] == forward_bytes(layout, train.n_instances)
        assert rec["bytes"]["backward"] == backward_bytes(layout, train.n_instances, 1)
        assert rec["bytes"]["gauss_newton"] == 0
        assert rec["alpha"] == 0.05
        assert rec["lambda"] is None and rec["cg_iters"] is None


def test_sgd_learns_the_digits(tmp_path):
    path = tmp_path / "run.jsonl"
    run_dnewton(1, ["train", "digits", "--solver", "sgd", "--hidden", "64", "--epochs", "10",
                    "--learning-rate", "0.05", "--feature-scale", "16", "--center",
                    "--lr-decay", "0.1", "--quiet", "--log", path])
    log = read_log(path)
    assert log[-1]["test_accuracy"] >= 0.9
    assert log[-1]["f"] < 0.2 * log[0]["f"]
    rates = [rec["alpha"] for rec in log[1:]]
    np.testing.assert_allclose(rates, [0.05 / (1 + 0.1 * e) for e in range(10)])


def test_diverging_sgd_keeps_the_last_finite_model(tmp_path):
    path, model = tmp_path / "run.jsonl", tmp_path / "model.npz"
    proc = run_dnewton(1, ["train", "digits", "--solver", "sgd", "--hidden", "16",
                           "--epochs", "5", "--learning-rate", "1e4", "--feature-scale", "16",
                           "--quiet", "--log", path, "--model", model], check=False)
    assert proc.returncode == 3, proc.stderr
    assert "the learning rate is too large?" in proc.stderr
    log = read_log(path)
    assert all(np.isfinite(rec["f"]) for rec in log)
    assert f"kept the model of epoch {log[-1]['iter']}" in proc.stderr
    predict = run_dnewton(1, ["predict", model, "digits"])
    assert "accuracy" in predict.stdout
