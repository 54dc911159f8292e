"""bench/bench_kernels.py --quick: every size gets its rates, the ratio columns and
the floor GEMM / (GEMM + one read of D), which lies in (0, 1] and falls as D grows
against the GEMM."""

import json

from helpers import load_bench


def test_kernel_bench_reports_rates_and_the_floor(tmp_path, capsys):
    bench = load_bench("bench_kernels")
    out = tmp_path / "kernels.json"
    bench.main(["--quick", "--json", str(out)])
    results = json.loads(out.read_text())
    assert [r["size"] for r in results] == [list(s) for s in bench.SIZES[:2]]
    for r in results:
        for key in ("jvp", "jtvp", "dgemm", "numpy"):
            median, low, high = r[key]
            assert 0 < low <= median <= high
        assert r["read_d_seconds"] > 0
        assert 0 < r["floor"] <= 1
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| 100 x")]
    assert len(rows) == 2
    assert all(float(row.strip("| ").split("|")[-1]) == round(r["floor"], 2)
               for row, r in zip(rows, results))


def test_floor_falls_as_the_read_of_d_grows():
    bench = load_bench("bench_kernels")
    # the same GEMM (100 x 300 x 300), D with 10 and with 200 outputs per instance
    small = bench.bench(100, 300, 300, 10, repeat=5)
    large = bench.bench(100, 300, 300, 200, repeat=5)
    assert large["floor"] < small["floor"]
