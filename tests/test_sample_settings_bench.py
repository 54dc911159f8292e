"""bench/studies/sample_settings.py: the work to each accuracy it reads from a log."""

import pytest
from helpers import load_bench

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


def record(it, accuracy, training, evaluation=5e12):
    return {"iter": it, "test_accuracy": accuracy,
            "flops": {"forward": training / 4, "gauss_newton": 3 * training / 4,
                      "evaluation": evaluation}}


def test_work_to_counts_training_flops_up_to_the_first_record_at_each_accuracy():
    study = load_bench("studies/sample_settings")
    log = [record(0, 0.1, 0.5e12), record(1, 0.879, 0.5e12), record(2, 0.8851, 0.5e12),
           record(3, 0.86, 0.5e12), record(4, 0.89, 0.5e12)]
    reached, best, total = study.work_to(log)
    # every record adds 0.5 TFLOP of training, the start's included; evaluation is not
    assert reached == {0.88: (2, 1.5), 0.885: (2, 1.5), 0.89: (4, 2.5)}
    assert best == 0.89 and total == 2.5
    reached, best, _ = study.work_to(log[:4])
    assert 0.89 not in reached and best == 0.8851
