"""bench/iteration_time.py: a smoke run of the reference set prints one row per variant."""

import pytest
from helpers import load_bench

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


def test_a_short_run_prints_every_variant_with_its_flops(capsys):
    bench = load_bench("iteration_time")
    bench.main(["--iterations", "3", "--repeat", "1", "--variant", "planner=",
                "--variant", "two blocks=--partitions 2,1,1,1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| planner", "| two blocks"]
    for row in rows[2:]:
        gflop, ratio = (float(cell) for cell in row.strip(" |").split(" | ")[-2:])
        assert gflop > 0 and ratio > 0
