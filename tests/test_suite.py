"""bench/suite.py's pieces that turn runs into the README's table: seeds grouped per
set and method (mean and range of accuracy, median seconds), the chosen C, and a
tiny end-to-end run on iris with two seeds."""

import json

import pytest
from helpers import load_bench

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


def load_suite():
    return load_bench("suite")


def row(method, seed, accuracy, seconds, C=None):
    return {"set": "iris", "method": method, "seed": seed, "accuracy": accuracy,
            "seconds": seconds, "n_train": 112, "n_features": 4, "n_classes": 3, "C": C}


def test_summarize_groups_seeds_per_set_and_method():
    suite = load_suite()
    rows = [row("dnewton -C auto", 0, 0.9, 3.0, C=1.0), row("MLPClassifier()", 0, 0.8, 1.0),
            row("dnewton -C auto", 1, 1.0, 1.0, C=0.1), row("MLPClassifier()", 1, 0.6, 2.0),
            row("dnewton -C auto", 2, 0.8, 2.0, C=1.0)]
    auto, mlp = suite.summarize(rows)
    assert (auto["method"], auto["seeds"], mlp["seeds"]) == ("dnewton -C auto", 3, 2)
    assert auto["accuracy_mean"] == pytest.approx(0.9)
    assert (auto["accuracy_min"], auto["accuracy_max"]) == (0.8, 1.0)
    assert (auto["seconds_median"], auto["seconds_min"], auto["seconds_max"]) == (2.0, 1.0, 3.0)
    assert auto["C"] == [0.1, 1.0] and mlp["C"] == []
    assert mlp["accuracy_mean"] == pytest.approx(0.7) and mlp["seconds_median"] == 1.5
    table = suite.markdown([auto, mlp]).splitlines()
    assert "mean, min-max over seeds" in table[0]
    assert table[2] == ("| iris (112 x 4, 3) | dnewton -C auto (C = 0.1, 1) | "
                        "90.00% (80.00-100.00) | 2.00 (1.00-3.00) |")


def test_one_seed_prints_the_plain_table():
    suite = load_suite()
    table = suite.markdown(suite.summarize([row("dnewton defaults", 0, 0.75, 0.5)]))
    assert table.splitlines()[2] == "| iris (112 x 4, 3) | dnewton defaults | 75.00% | 0.50 |"
    assert "seeds" not in table


def test_two_seeds_on_iris_end_to_end(capsys, tmp_path):
    pytest.importorskip("sklearn")
    suite = load_suite()
    out = tmp_path / "rows.json"
    suite.main(["--sets", "iris", "--methods", "defaults,mlp", "--seeds", "2",
                "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| iris (112 x 4, 3) | dnewton defaults |" in printed
    assert "| iris (112 x 4, 3) | MLPClassifier() |" in printed
    rows = json.loads(out.read_text())
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("MLPClassifier()", 0), ("MLPClassifier()", 1),
        ("dnewton defaults", 0), ("dnewton defaults", 1)]
    assert all(r["accuracy"] >= 0.9 for r in rows if r["method"] == "dnewton defaults")
    with pytest.raises(SystemExit):
        suite.main(["--sets", "iris", "--methods", "lbfgs"])
