"""bench/time_to_accuracy.py: the settings of its robustness grid (--grid)."""

import numpy as np
import pytest
from helpers import load_bench

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


def sample_sizes(methods):
    """The --sample-size of each Newton setting, in order, without repeats."""
    found = [m.options[m.options.index("--sample-size") + 1]
             for m in methods if m.family == "newton"]
    return list(dict.fromkeys(found))


def test_newton_samples_keep_all_and_only_the_stochastic_sizes_below_the_set():
    tta = load_bench("time_to_accuracy")
    assert tta.newton_samples(10000) == ("all", "500", "2000")
    assert tta.newton_samples(2000) == ("all", "500")  # 2000 would repeat all
    assert tta.newton_samples(1500) == ("all", "500")
    assert tta.newton_samples(150) == ("all",)


def test_a_suite_set_of_fewer_than_2000_instances_has_all_and_no_run_of_2000(tmp_path):
    tta = load_bench("time_to_accuracy")
    rng = np.random.default_rng(0)

    def load():  # a suite loader's answer: (X, X_test, y, y_test, scale)
        return rng.random((1200, 4)), rng.random((300, 4)), np.arange(1200) % 3, \
            np.arange(300) % 3, 1.0

    data = tta.suite_set("small", load, tmp_path)
    settings = tta.grid(data.samples, [0.001], [0.01])
    assert sample_sizes(settings) == ["all", "500"]
    keys = [m.key for m in settings]
    assert len(keys) == len(set(keys)) == 3 * 2 * 2 + 2  # C x share x size, one Adam, one SGD


def test_fashion_keeps_its_grid_of_samples_of_500_and_2000(tmp_path, monkeypatch):
    tta = load_bench("time_to_accuracy")
    monkeypatch.setattr(tta, "fashion_npz", lambda folder: {"train": "t.npz", "test": "s.npz"})
    data = tta.fashion_set(tmp_path)
    assert sample_sizes(tta.grid(data.samples, [0.001], [0.01])) == ["500", "2000"]


def test_every_grid_setting_sees_the_data_as_often_as_the_first_order_epochs(tmp_path):
    tta = load_bench("time_to_accuracy")
    np.savez(tmp_path / "train.npz", X=np.zeros((2000, 3)), y=np.arange(2000) % 2)
    data = tta.DataSet("set", str(tmp_path / "train.npz"), "test.npz", [], 1.0,
                       budget=tta.Budget(iterations=100, epochs=200, seconds=60),
                       samples=tta.newton_samples(2000))
    runs = {m.key: tta.budget_options(m, data) for m in tta.grid(data.samples, [0.001], [0.01])}
    assert runs["newton-C1-r0.2-Ball"] == ["--iterations", "200"]  # one per epoch
    assert runs["newton-C1-r0.2-B500"] == ["--iterations", "800"]  # 200 x 2000 / 500
    assert runs["adam-0.001"] == runs["sgd-0.01"] == ["--epochs", "200"]
    recommended = tta.methods([0.001], [0.01], ["newton"])[0]
    assert tta.budget_options(recommended, data) == ["--iterations", "100"]  # not a grid run
