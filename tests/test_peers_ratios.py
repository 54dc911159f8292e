"""bench/peers.py's ratios taken within each repetition (no PyTorch needed): each
run's median over iterations 2.., paired with the other kind's run of the same
repetition, and each run against the DGEMM rate of its own repetition."""

import pytest
from helpers import load_bench

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


def run(seconds, flops=2e9):
    """A run's records: iteration 0 and 1 (warm-up, slow) apart, then `seconds`."""
    records = [{"iter": 0, "iteration_time": 0.0, "f": 1.0, "flops": {"forward": 0.0}},
               {"iter": 1, "iteration_time": 9.0, "f": 1.0, "flops": {"forward": flops}}]
    records += [{"iter": k + 2, "iteration_time": t, "f": 1.0,
                 "flops": {"forward": flops, "evaluation": 5e9}}
                for k, t in enumerate(seconds)]
    return records


def timing(peers, label, runs):
    t = peers.Timing(label)
    for records in runs:
        t.add(records)
    return t


def test_ratios_pair_the_runs_of_each_repetition():
    peers = load_bench("peers")
    slow = timing(peers, "a", [run([0.2, 0.4, 0.3]), run([0.1, 0.1, 0.1]),
                               run([0.6, 0.6, 0.6])])
    fast = timing(peers, "b", [run([0.1, 0.2, 0.1]), run([0.1, 0.1, 0.1]),
                               run([0.2, 0.2, 0.2])])
    # medians 0.3/0.1, 0.1/0.1, 0.6/0.2: ratios 3, 1, 3 -- the warm-up never counts
    assert peers.paired(slow, fast) == pytest.approx((3.0, 1.0, 3.0))


def test_bound_uses_each_repetitions_own_rate():
    peers = load_bench("peers")
    t = timing(peers, "a", [run([0.1, 0.1, 0.1]), run([0.1, 0.1, 0.1])])
    # 2 GFLOP per iteration (evaluation excluded): at 40 and at 80 GFLOP/s the bounds
    # are 0.05 and 0.025 s, so 0.1 s is 2 and 4 times them
    assert peers.paired_bound(t, [40.0, 80.0]) == pytest.approx((3.0, 2.0, 4.0))
