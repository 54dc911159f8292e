"""bench/bench_kernels.py --quick: every size gets its rates, the ratio columns and
the best ratios a kernel reading D after the BLAS's GEMM can reach, GEMM / (its own
GEMM + one read of D), which lie in (0, 1] for J v and fall as D grows against
the GEMM."""

import json

import pytest
from helpers import load_bench

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


def test_kernel_bench_reports_rates_and_bounds(tmp_path, capsys):
    bench = load_bench("bench_kernels")
    out = tmp_path / "kernels.json"
    bench.main(["--quick", "--json", str(out)])
    results = json.loads(out.read_text())
    assert [r["size"] for r in results] == [list(s) for s in bench.SIZES[:2]]
    for r in results:
        for key in ("jvp", "jtvp", "dgemm", "numpy"):
            median, low, high = r[key]
            assert 0 < low <= median <= high
        assert r["read_d_seconds"] > 0 and r["transposed_gemm_seconds"] > 0
        assert 0 < r["bound_jvp"] <= 1
        assert r["bound_jtvp"] > 0  # against Z V's GEMM: above 1 if Z^T T's is faster
    rows = [line.strip("| ").split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| 100 x")]
    assert len(rows) == 2
    for row, r in zip(rows, results):
        assert [float(cell) for cell in row[-2:]] == [round(r["bound_jvp"], 2),
                                                       round(r["bound_jtvp"], 2)]


def test_bounds_fall_as_the_read_of_d_grows():
    bench = load_bench("bench_kernels")
    # the same GEMMs (100 x 300 x 300), D with 10 and with 200 outputs per instance
    small = bench.bench(100, 300, 300, 10, repeat=5)
    large = bench.bench(100, 300, 300, 200, repeat=5)
    assert large["bound_jvp"] < small["bound_jvp"]
    assert large["bound_jtvp"] < small["bound_jtvp"]
