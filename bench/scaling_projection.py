"""Predicted strong and weak scaling of a large network, from the cost model.

    python bench/scaling_projection.py [--machine FILE] [--out docs/scaling]

784-8192-8192-8192-1000 (squared loss, float64, |S| = 5% of l) on 1 to 1,024
ranks: strong scaling on l = 10^6 instances, weak scaling on l = 10^6 p / 1024
(about 977 instances per rank). For every rank count p it predicts

* the paper's layout: one block per rank (the fewest blocks >= p among
  power-of-two partitions; the fastest such), one copy;
* the planner's choice (`planning.planner.choose`, every candidate);
* the best hybrid: R >= 2 replicas of a model-parallel copy;

on the machine (default: `planning.machine.DEFAULT`, 40 ranks per node) with
192 GB per node shared by the ranks on it, and writes two PNG figures (needs
matplotlib: the ``test`` and ``plot`` extras have it) and a markdown table. It
also prints what the block-diagonal method and smaller subsets save at 1,024 ranks.
"""

import argparse
from dataclasses import replace
from pathlib import Path

from dnewton.errors import InputError
from dnewton.parallel.layout import Layout
from dnewton.planning.cost import Choice, Workload, predict
from dnewton.planning.machine import DEFAULT, Machine
from dnewton.planning.planner import partition_vectors, rank
from dnewton.planning.volume import Counts
from dnewton.solvers.newton import NewtonOptions

WIDTHS = (784, 8192, 8192, 8192, 1000)
NODE_MEMORY = 192e9
RANKS = [2**i for i in range(11)]


def memory_per_rank(p, machine):
    return NODE_MEMORY / min(p, machine.ranks_per_node)


def workload(n_instances, gn_ratio=0.05, diagonal=False, widths=WIDTHS):
    return Workload(widths, n_instances, NewtonOptions(gn_ratio=gn_ratio).subset_size(n_instances),
                    diagonal=diagonal, counts=Counts(cg_iters=10, trials=1))


def paper(w, p, machine):
    """About one block per rank (at most 5/4 of p blocks), one copy: the fastest of
    the partition vectors the planner tries that fits."""
    best = None
    for v in partition_vectors(w.widths, p):
        if Layout.count_blocks(v) > max(1.25 * p, 4):
            continue
        for jacobian in ("stored", "recomputed"):
            pred = predict(w, Choice(v, "balanced", 1, jacobian), p, machine,
                           memory_per_rank(p, machine))
            if pred.refused is None and (best is None or pred.seconds_per_iteration
                                         < best.seconds_per_iteration):
                best = pred
    return best


def hybrid(w, p, machine):
    best = None
    for R in [r for r in RANKS if 2 <= r <= p and p % r == 0]:
        fits, _ = rank(w, p, machine, memory_per_rank(p, machine), replicas=R)
        if fits and (best is None or fits[0].seconds_per_iteration
                     < best.seconds_per_iteration):
            best = fits[0]
    return best


def planner(w, p, machine):
    fits, _ = rank(w, p, machine, memory_per_rank(p, machine))
    return fits[0] if fits else None


def describe(pred):
    if pred is None:
        return "does not fit"
    c = pred.choice
    comm = sum(v for k, v in pred.communication.items() if k != "evaluation")
    return (f"{pred.seconds_per_iteration:.3g} s ({','.join(map(str, c.partitions))}, "
            f"R={c.replicas}, {c.jacobian}; comm {100 * comm / pred.seconds_per_iteration:.0f}%)")


def project(kind, machine):
    rows = []
    for p in RANKS:
        n = 10**6 if kind == "strong" else round(10**6 * p / 1024)
        w = workload(n)
        rows.append((p, n, paper(w, p, machine), planner(w, p, machine),
                     hybrid(w, p, machine) if p > 1 else None))
        print(f"{kind} p={p}: paper {describe(rows[-1][2])}; planner {describe(rows[-1][3])}; "
              f"hybrid {describe(rows[-1][4])}", flush=True)
    return rows


def plot(rows, kind, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, share) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, label in ((2, "paper: one block per rank"), (3, "planner's choice"),
                         (4, "best hybrid (R >= 2 replicas)")):
        points = [(r[0], r[index]) for r in rows if r[index] is not None]
        ax.plot([p for p, _ in points], [x.seconds_per_iteration for _, x in points], "o-",
                label=label)
        share.plot([p for p, _ in points],
                   [100 * sum(v for k, v in x.communication.items() if k != "evaluation")
                    / x.seconds_per_iteration for _, x in points], "o-", label=label)
    first = next(r for r in rows if r[3] is not None)
    if kind == "strong":
        ax.plot([r[0] for r in rows],
                [first[3].seconds_per_iteration * first[0] / r[0] for r in rows], "k:",
                label="ideal (from 1 rank)")
    for a in (ax, share):
        a.set_xscale("log", base=2)
        a.set_xlabel("MPI ranks (40 per node)")
        a.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("predicted seconds per Newton iteration")
    share.set_ylabel("communication, % of the iteration")
    title = ("strong scaling, l = 10^6" if kind == "strong"
             else "weak scaling, l = 977 per rank")
    ax.set_title(f"784-8192-8192-8192-1000, {title}")
    share.set_title("share of the iteration in sums")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def techniques(machine):
    """What the block-diagonal method and subsampling save at 1,024 ranks."""
    p, n = 1024, 10**6
    lines = []
    for ratio in (1.0, 0.05, 0.01, 0.001):
        best = planner(workload(n, ratio), p, machine)
        subset = NewtonOptions(gn_ratio=ratio).subset_size(n)
        lines.append(f"gn_ratio {ratio:g} (|S| = {subset}): {describe(best)}; "
                     f"Gauss-Newton phase "
                     f"{best.seconds['gauss_newton'] if best else float('nan'):.3g} s"
                     if best else f"gn_ratio {ratio:g}: no layout fits")
    for ratio in (0.001,):
        full = planner(workload(n, ratio), p, machine)
        try:
            diag_fits, _ = rank(workload(n, ratio, diagonal=True), p, machine,
                                memory_per_rank(p, machine))
        except InputError:
            diag_fits = []
        if full and diag_fits:
            d = diag_fits[0]
            lines.append(
                f"block-diagonal at gn_ratio {ratio:g}: {describe(d)}, Gauss-Newton phase "
                f"{d.seconds['gauss_newton']:.3g} s and {d.bytes['gauss_newton']:,} bytes "
                f"against {full.seconds['gauss_newton']:.3g} s and "
                f"{full.bytes['gauss_newton']:,} bytes for the full product "
                f"(same CG iterations assumed)")
    return lines


def communication(machine):
    """Where communication starts to dominate: the share of the iteration in sums
    for the planner's choice and the paper's layout, on the default network, on
    1 Gb/s Ethernet (50 us), and for the reference's small network on 60,000
    instances (MNIST's size)."""
    slow = replace(machine, bandwidth_inter=125e6, latency_inter=50e-6)
    cases = [("784-8192-8192-8192-1000, l = 10^6, default network", WIDTHS, 10**6, machine),
             ("784-8192-8192-8192-1000, l = 10^6, 1 Gb/s Ethernet", WIDTHS, 10**6, slow),
             ("784-300-300-10, l = 60,000, default network", (784, 300, 300, 10), 60000,
              machine)]
    lines = ["| case | ranks | planner's choice | paper's layout |", "| --- | --- | --- | --- |"]
    for name, widths, n, m in cases:
        for p in (16, 64, 256, 1024):
            w = workload(n, widths=widths)
            line = f"| {name} | {p} | {describe(planner(w, p, m))} | {describe(paper(w, p, m))} |"
            print(line, flush=True)
            lines.append(line)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machine", help="machine file (default: the documented default)")
    parser.add_argument("--out", default="docs/scaling",
                        help="prefix of the figures and the markdown table")
    parser.add_argument("--kinds", default="strong,weak", help="strong, weak or both")
    args = parser.parse_args()
    machine = Machine.load(args.machine) if args.machine else DEFAULT
    # One thread per rank everywhere, also for the 1-rank point (a real 1-rank job
    # threads its BLAS over the node's cores: that point would not be comparable).
    machine = replace(machine, cores_per_node=1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = ["| kind | ranks | l | paper's layout | planner's choice | best hybrid |",
             "| --- | --- | --- | --- | --- | --- |"]
    for kind in args.kinds.split(","):
        rows = project(kind, machine)
        plot(rows, kind, f"{out}-{kind}.png")
        table += [f"| {kind} | {p} | {n:,} | {describe(a)} | {describe(b)} | {describe(c)} |"
                  for p, n, a, b, c in rows]
    extra = techniques(machine)
    shares = communication(machine)
    with open(f"{out}-table.md", "w", encoding="utf-8") as f:
        f.write("\n".join(table) + "\n\n" + "\n".join(f"* {line}" for line in extra) + "\n\n"
                + "\n".join(shares) + "\n")
    print("\n".join(extra))


if __name__ == "__main__":
    main()
