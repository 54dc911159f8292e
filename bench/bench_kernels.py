"""Micro-benchmark of the two Jacobian kernels against the machine's own DGEMM.

    python bench/bench_kernels.py [--quick] [--repeat 30] [--dtype float32] [--json out.json]

For each size it times `jacobian_vector_product` (J_p v_p for every instance of S)
and `jacobian_transpose_product` (J_p^T q), and, in the same run, a GEMM of the
same (n x a) x (a x b) shape and precision through the same BLAS (DGEMM, or SGEMM
with ``--dtype float32``), plus NumPy's ``@`` on it. Rates
are GFLOP/s from the median of the repetitions; the spread is min-max. The ratio
kernel / DGEMM is the figure to read: the kernels are that GEMM plus the
per-instance n_L x |b| products, which are memory-bound. Beside it, the best
ratio a kernel that reads the stored Jacobian D after the BLAS's GEMM can reach:
GEMM / (its own GEMM + one read of D), where J v's own GEMM is that Z V and J^T
q's the transposed product Z^T T (a x n x b, the same FLOPs, not always the same
speed), each timed alone, and the read as NumPy's max over D (a vectorized pass
that only reads); medians. No ordering of the per-instance loops reaches a ratio
above that bound.

BLAS runs on one thread (threadpoolctl), the setting of one rank per core.
"""

import argparse
import json
import time

import numpy as np
from threadpoolctl import threadpool_limits

from dnewton import _kernels as K

# (|S|, |a|, |b|, n_L): the MNIST network's blocks, and a wider one.
SIZES = [(100, 784, 300, 10), (100, 300, 300, 10), (1000, 784, 300, 10),
         (1000, 300, 300, 10), (1000, 1000, 1000, 10)]


def timed(fn, repeat):
    fn()  # warm-up: page in, let the CPU clock settle
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return np.array(samples)


def rates(flops, samples):
    r = flops / samples / 1e9
    return float(np.median(r)), float(r.min()), float(r.max())


def bench(n, a, b, nl, repeat, dtype=np.float64):
    rng = np.random.default_rng(0)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    Z, V, vb, D = normal(n, a), normal(a, b), normal(b), normal(n, nl, b)
    Q = rng.standard_normal((n, nl))  # J v and Q are float64 in both precisions
    U, out_v = np.empty((n, b), dtype=dtype), np.zeros((n, nl))
    out_t, out_b = np.zeros((a, b), dtype=dtype), np.zeros(b, dtype=dtype)
    C = np.empty((n, b), dtype=dtype)
    gemm_flops = 2.0 * n * a * b
    small_flops = 2.0 * n * nl * b
    T, C_t = normal(n, b), np.zeros((a, b), dtype=dtype)
    gemm_seconds = timed(lambda: K.gemm(Z, V, C), repeat)
    gemm = float(np.median(gemm_seconds))
    gemm_t = float(np.median(timed(lambda: K.gemm(Z, T, C_t, True, False, 1.0, 1.0), repeat)))
    read = float(np.median(timed(D.max, repeat)))  # one pass over D at the memory's pace
    return {
        "size": [n, a, b, nl],
        "jvp": rates(gemm_flops + small_flops + n * b, timed(
            lambda: K.jacobian_vector_product(Z, V, vb, D, U, out_v), repeat)),
        "jtvp": rates(gemm_flops + small_flops + n * b, timed(
            lambda: K.jacobian_transpose_product(Z, D, Q, U, out_t, out_b, 1.0), repeat)),
        "dgemm": rates(gemm_flops, gemm_seconds),
        "transposed_gemm_seconds": gemm_t,
        "read_d_seconds": read,
        "bound_jvp": gemm / (gemm + read),
        "bound_jtvp": gemm / (gemm_t + read),
        "numpy": rates(gemm_flops, timed(lambda: np.matmul(Z, V, out=C), repeat)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two sizes, few repetitions")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="precision of the kernels and of the GEMM they are held against")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    sizes, repeat = (SIZES[:2], 5) if args.quick else (SIZES, args.repeat)

    with threadpool_limits(limits=1):
        results = [bench(*size, repeat, np.dtype(args.dtype)) for size in sizes]

    def cell(r):
        median, lo, hi = r
        return f"{median:6.2f} ({lo:.2f}-{hi:.2f})"

    gemm = "DGEMM" if args.dtype == "float64" else "SGEMM"
    print(f"GFLOP/s, median (min-max) of {repeat} runs, 1 BLAS thread, {args.dtype}")
    print(f"| |S| x |a| x |b|, n_L | J v | J^T q | {gemm} (same shape) | numpy @ | "
          f"J v / {gemm} | J^T q / {gemm} | best J v / {gemm} | best J^T q / {gemm} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        n, a, b, nl = r["size"]
        print(f"| {n} x {a} x {b}, {nl} | {cell(r['jvp'])} | {cell(r['jtvp'])} | "
              f"{cell(r['dgemm'])} | {cell(r['numpy'])} | {r['jvp'][0] / r['dgemm'][0]:.2f} | "
              f"{r['jtvp'][0] / r['dgemm'][0]:.2f} | {r['bound_jvp']:.2f} | "
              f"{r['bound_jtvp']:.2f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
