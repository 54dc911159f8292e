"""The SGD baseline: its stochastic gradient against finite differences, its step
against the distributed gradient, and its trajectory and bytes on several layouts."""

import numpy as np
import pytest
from helpers import (
    LAYOUTS,
    central_differences,
    check_digits_epochs,
    global_vector,
    in_global,
    local_vector,
    make_problem,
    outputs,
    random_theta,
    read_log,
)
from shared_runs import SharedRuns

from dnewton.app.training import solve
from dnewton.model.losses import LOSSES
from dnewton.solvers.minibatch import minibatches
from dnewton.solvers.sgd import SGDOptions


@pytest.mark.parametrize("partitions", LAYOUTS)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_batch_gradient_matches_finite_differences(partitions, loss):
    problem = make_problem(loss, "tanh", partitions)
    objective = problem.objective
    theta = random_theta(problem)
    rows = np.array([1, 4, 5, 9])
    labels = (np.arange(11) % 3)[rows]

    def batch_objective(th):  # theta'theta / (2 C l) + mean loss over the batch
        vec = global_vector(problem, th)
        out = outputs(problem, th, rows)
        return vec @ vec * objective.regularization / 2 + objective.loss.value(out, labels) / 4

    numeric = central_differences(in_global(problem, batch_objective),
                                  global_vector(problem, theta))
    np.testing.assert_allclose(global_vector(problem, objective.batch_gradient(theta, rows)),
                               numeric, rtol=1e-6, atol=1e-8)
    problem.close()


@pytest.mark.parametrize("partitions", LAYOUTS)
def test_full_batch_steps_are_gradient_steps_with_momentum(partitions):
    # On every rank, whatever the layout: theta - eta v with the distributed gradient.
    problem = make_problem("softmax", "relu", partitions)
    objective = problem.objective
    theta0 = random_theta(problem)
    rate, mu = 0.3, 0.5
    options = SGDOptions(learning_rate=rate, momentum=mu, mini_batch=objective.n_instances,
                         epochs=2)
    result = solve(problem, options, theta=theta0)
    _, g0 = objective.value_and_gradient(theta0)
    theta1 = theta0 - rate * g0
    _, g1 = objective.value_and_gradient(theta1)
    theta2 = theta1 - rate * (mu * g0 + g1)  # v = mu v + g; theta -= eta v
    np.testing.assert_allclose(result.theta, theta2, rtol=1e-12, atol=1e-14)
    assert [rec.iter for rec in result.history] == [0, 1, 2]
    assert result.history[-1].f == pytest.approx(objective.value(theta2), rel=1e-12)
    g = global_vector(problem, objective.value_and_gradient(theta0)[1])
    assert result.history[0].gnorm == pytest.approx(np.linalg.norm(g), rel=1e-12)
    np.testing.assert_array_equal(local_vector(problem, global_vector(problem, theta2)), theta2)
    problem.close()


def test_minibatches_cover_every_instance_once_per_epoch():
    rng = np.random.default_rng(0)
    batches = list(minibatches(23, 5, rng))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(23))


SGD = ["train", "digits", "--solver", "sgd", "--hidden", "16,12", "--epochs", "3",
       "--mini-batch", "100", "--learning-rate", "0.05", "--feature-scale", "16", "--center",
       "--quiet", "--seed", "4", "--dtype", "float64"]  # the layouts agree to its rounding


LAYOUTS_OF_RANKS = [(2, "1,2,1,1"), (3, "3,1,1,2"), (4, "2,2,2,1")]
LEARNS = ["train", "digits", "--solver", "sgd", "--hidden", "64", "--epochs", "10",
          "--learning-rate", "0.05", "--feature-scale", "16", "--center", "--lr-decay", "0.1",
          "--quiet"]
DIVERGES = ["train", "digits", "--solver", "sgd", "--hidden", "16", "--epochs", "5",
            "--learning-rate", "1e4", "--feature-scale", "16", "--loss", "squared", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py)."""
    runs = SharedRuns(tmp_path_factory.mktemp("sgd"))
    runs.add("one rank", 1, [*SGD, "--log", runs.log_path("one rank")])
    runs.add("learns", 1, [*LEARNS, "--log", runs.log_path("learns")])
    model = runs.scratch / "model.npz"
    runs.add("diverges", 1, [*DIVERGES, "--log", runs.log_path("diverges"), "--model", model])
    runs.add("predict", 1, ["predict", model, "digits"])
    for n_ranks, partitions in LAYOUTS_OF_RANKS:
        runs.add(n_ranks, n_ranks, [*SGD, "--partitions", partitions, "--log",
                                    runs.log_path(n_ranks)])
    return runs.run()


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks, partitions", LAYOUTS_OF_RANKS)
def test_sgd_trajectory_and_bytes_do_not_depend_on_the_layout(runs, n_ranks, partitions):
    log = runs.log(n_ranks)
    assert [rec["iter"] for rec in log] == [0, 1, 2, 3]
    assert log[-1]["f"] < 0.5 * log[0]["f"]
    check_digits_epochs(log, runs.log("one rank"), n_ranks, partitions, (16, 12), 0.05)


@pytest.mark.mpi
def test_sgd_learns_the_digits(runs):
    log = runs.log("learns")
    assert log[-1]["test_accuracy"] >= 0.9
    assert log[-1]["f"] < 0.2 * log[0]["f"]
    rates = [rec["alpha"] for rec in log[1:]]
    np.testing.assert_allclose(rates, [0.05 / (1 + 0.1 * e) for e in range(10)])


@pytest.mark.mpi
def test_diverging_sgd_keeps_the_last_finite_model(runs):
    proc = runs["diverges"]
    assert proc.returncode == 3, proc.stderr
    assert "the learning rate is too large?" in proc.stderr
    log = read_log(runs.log_path("diverges"))
    assert all(np.isfinite(rec["f"]) for rec in log)
    assert f"kept the model of epoch {log[-1]['iter']}" in proc.stderr
    assert "accuracy" in runs.checked("predict").stdout
