"""How soon each optimizer reaches a good model: time to accuracy on real data.

    python bench/time_to_accuracy.py --sets fashion --seeds 3 --out docs/time-to-accuracy
    python bench/time_to_accuracy.py --sets iris,wine,digits --seeds 3 --out /tmp/tta-suite
    python bench/time_to_accuracy.py --sets fashion --grid --seeds 1 --out /tmp/tta-grid
    python bench/time_to_accuracy.py --sets fashion_10k,mnist_subset --grid --seeds 1 \
        --time-scale 4 --out /tmp/grid-out
    python bench/time_to_accuracy.py --sets iris --seeds 1 --quick --out /tmp/tta  # smoke

Every dnewton run is ``mpiexec -n R dnewton train`` in a process of its own, scoring
the test set after every iteration (epoch); its time is the log's training seconds
(the scoring is not counted, early stopping's validation is). scikit-learn's
MLPClassifier runs in a child process with R BLAS threads, one ``partial_fit`` epoch
at a time (its Adam state carries over), scored after each epoch, the scoring left
out of its time likewise. So the methods share the machine's cores and their clocks
count the same work. Nothing else may run meanwhile, and R must not exceed the cores.

Methods: ``newton``, dnewton's recommended setting (``dnewton train`` with no
optimizer option: float32, on samples beyond 10,000 instances); ``newton-f32`` and
``newton-f64``, the same in float32 and float64; ``newton-full``, the paper's
method on the same objective (f and
its gradient on all instances every iteration: ``--sample-size all``); ``adam-ETA``
and ``sgd-ETA``, dnewton's first-order baselines (float32, their default),
``adam-f64-ETA`` the same Adam in float64; ``mlp``, MLPClassifier's defaults
(adam, eta 0.001, batches of 200) at the same hidden layers.

Prints, and writes to OUT/report.md with the figure OUT/accuracy-vs-time.png:

* per set, each method's final test accuracy (mean and range over seeds) and its
  time to each threshold (median over the seeds that reached it, and how many did):
  on Fashion-MNIST 88% and 89% and the best Adam's best accuracy; on the other sets
  the accuracy MLPClassifier ends at, minus half a point, beside MLP's own time;
* with ``--grid``, the robustness of each family over its own settings: the final
  accuracy of every setting of the grid (Newton: C, Gauss-Newton share and sample
  size, the sizes 500 and 2,000 on Fashion-MNIST, ``all`` and those below the set's
  size on the others; Adam and SGD: the learning rate), its worst and its spread.
  Every setting of a grid sees the training data as often: the first-order
  methods' epochs, and Newton on samples of |B| that many times l / |B|
  iterations (one per epoch on all instances).

Every run stops at its set's time limit times ``--time-scale``; a scale large enough
that runs end by their iterations or epochs makes final accuracies independent of
the machine's load.
"""

import argparse
import datetime
import functools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import (
    ROOT,
    classification_sets,
    dnewton_command,
    fashion_npz,
    one_thread_environment,
    read_log,
)

RESUMABLE = 75  # dnewton's exit status when --time-limit ended the run
NUMERICAL_ERROR = 3  # ... and when f turned non-finite (a learning rate too large)


@dataclass
class Budget:
    """How long each family may train on a set."""

    iterations: int  # Newton
    epochs: int  # SGD, Adam, MLP
    seconds: float  # a time limit for every run


@dataclass
class DataSet:
    name: str
    train: str  # a .npz path
    test: str
    options: list  # dnewton's preprocessing
    scale: float  # what MLP's inputs are divided by
    thresholds: list = field(default_factory=list)  # fixed accuracies to report
    budget: Budget = None
    samples: tuple = ()  # the sample sizes of Newton's grid (--grid)

    @functools.cached_property
    def n_train(self):
        """Training instances (read from the file once, when a grid budget needs it)."""
        with np.load(self.train) as train:
            return len(train["y"])


def fashion_set(out):
    paths = fashion_npz(out / "data")
    return DataSet("fashion", str(paths["train"]), str(paths["test"]),
                   ["--feature-scale", "255", "--center"], 255.0, [0.88, 0.89],
                   Budget(iterations=400, epochs=15, seconds=240), ("500", "2000"))


def newton_samples(n_train):
    """The sample sizes of Newton's grid on a set of `n_train` instances: ``all`` (the
    paper's method, dnewton's recommended one at this size) and the stochastic sizes
    below `n_train` (one at or above it would repeat ``all``)."""
    return ("all", *(str(size) for size in (500, 2000) if size < n_train))


def suite_set(name, load, out):
    """A set of bench/suite.py as two .npz files (once), with its preprocessing."""
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / f"{name}-train.npz", folder / f"{name}-test.npz"
    X, Xt, y, yt, scale = load()
    if not (train.exists() and test.exists()):
        np.savez(train, X=X, y=y)
        np.savez(test, X=Xt, y=yt)
    options = ["--feature-scale", f"{scale:g}", "--center"]
    return DataSet(name, str(train), str(test), options, scale,
                   budget=Budget(iterations=100, epochs=200, seconds=120),
                   samples=newton_samples(len(y)))


def data_sets(names, out):
    loaders = classification_sets()
    found = {}
    for name in names:
        if name == "fashion":
            found[name] = fashion_set(out)
        elif name in loaders:
            found[name] = suite_set(name, loaders[name], out)
        else:
            raise SystemExit(f"time_to_accuracy: unknown set {name!r}; know fashion, "
                             f"{', '.join(loaders)}")
    return found


@dataclass
class Method:
    key: str
    family: str  # newton, adam, sgd, mlp
    options: list  # dnewton's (mlp: MLPClassifier's keyword arguments as --key=value)
    sample: str = None  # Newton's --sample-size in the grid, whose budget is in epochs


def methods(adam_rates, sgd_rates, families):
    found = []
    for family in families:
        if family == "newton":
            found.append(Method("newton", "newton", []))
        elif family in ("newton-f32", "newton-f64"):
            found.append(Method(family, "newton", ["--dtype", f"float{family[-2:]}"]))
        elif family == "newton-full":
            found.append(Method("newton-full", "newton", ["--sample-size", "all"]))
        elif family in ("adam", "sgd", "adam-f64"):
            solver, _, precision = family.partition("-")
            rates = sgd_rates if solver == "sgd" else adam_rates
            dtype = ["--dtype", "float64"] if precision else []
            found += [Method(f"{family}-{rate:g}", solver,
                             ["--solver", solver, "--learning-rate", f"{rate:g}", *dtype])
                      for rate in rates]
        elif family == "mlp":
            found.append(Method("mlp", "mlp", []))
        else:
            raise SystemExit(f"time_to_accuracy: unknown method family {family!r}")
    return found


def grid(samples, adam_rates, sgd_rates):
    """Each family's settings grid (--grid): Newton's C, Gauss-Newton share and sample
    size (one of `samples`, a set's `DataSet.samples`) around the recommended setting
    (its CG cap and averaging kept); the first-order methods' learning rates."""
    newton = [Method(f"newton-C{C:g}-r{r:g}-B{B}", "newton",
                     ["-C", f"{C:g}", "--gn-ratio", f"{r:g}", "--sample-size", B,
                      "--cg-max", "10", "--average", "0.95"], sample=B)
              for C in (0.1, 1.0, 10.0) for r in (0.05, 0.2) for B in samples]
    return newton + methods(adam_rates, sgd_rates, ["adam", "sgd"])


def budget_options(method, data):
    """A run's iterations or epochs. In the grid every setting sees the data as often:
    Newton on samples of |B| runs epochs l / |B| iterations (``all``: one per epoch),
    as many gradient instances as the first-order methods' epochs."""
    if method.family == "newton" and method.sample is not None:
        size = data.n_train if method.sample == "all" else int(method.sample)
        return ["--iterations", str(math.ceil(data.budget.epochs * data.n_train / size))]
    if method.family == "newton":
        return ["--iterations", str(data.budget.iterations)]
    return ["--epochs", str(data.budget.epochs)]


def run(data, method, seed, args, log):
    """One run (skipped when its result exists); returns its curve ([times], [accs])."""
    if method.family == "mlp":
        return run_mlp(data, seed, args, log.with_suffix(".json"))
    if not log.with_suffix(".done").exists():
        cmd = dnewton_command(args.ranks, [
            "train", data.train, "--test", data.test, *data.options, "--hidden", args.hidden,
            *method.options, *budget_options(method, data),
            "--time-limit", f"{data.budget.seconds:g}", "--seed", str(seed),
            "--log", str(log), "--quiet"])
        env = one_thread_environment(MPIEXEC_TIMEOUT=str(int(4 * data.budget.seconds + 120)))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode not in (0, RESUMABLE, NUMERICAL_ERROR):
            raise SystemExit(f"time_to_accuracy: {shlex.join(cmd)} failed "
                             f"({proc.returncode}):\n{proc.stderr}")
        log.with_suffix(".done").write_text(str(proc.returncode))
    records = read_log(log)
    return [r["time"] for r in records], [r["test_accuracy"] for r in records]


def run_mlp(data, seed, args, result):
    if not result.exists():
        spec = {"train": data.train, "test": data.test, "scale": data.scale,
                "hidden": args.hidden, "seed": seed, "epochs": data.budget.epochs,
                "seconds": data.budget.seconds, "threads": args.ranks, "out": str(result)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_mlp", json.dumps(spec)]
        subprocess.run(cmd, check=True)
    curve = json.loads(result.read_text())
    return curve["times"], curve["accuracies"]


def fit_mlp(spec):
    """The child of `run_mlp`: MLPClassifier's defaults but the hidden widths and the
    seed, one partial_fit epoch at a time, timed without its scoring."""
    import warnings

    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    with np.load(spec["train"]) as train, np.load(spec["test"]) as test:
        X, y = train["X"] / spec["scale"], train["y"]
        Xt, yt = test["X"] / spec["scale"], test["y"]
    mlp = MLPClassifier(hidden_layer_sizes=tuple(int(w) for w in spec["hidden"].split(",")),
                        random_state=spec["seed"])
    classes = np.unique(y)
    times, accuracies, clock = [], [], 0.0
    with threadpool_limits(limits=spec["threads"]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(spec["epochs"]):
            began = time.perf_counter()
            mlp.partial_fit(X, y, classes=classes)
            clock += time.perf_counter() - began
            times.append(clock)
            accuracies.append(float(np.mean(mlp.predict(Xt) == yt)))
            if clock >= spec["seconds"]:
                break
    Path(spec["out"]).write_text(json.dumps({"times": times, "accuracies": accuracies}))


def first_time(curve, accuracy):
    """The first time a curve reaches `accuracy`, or None."""
    return next((t for t, a in zip(*curve) if a is not None and a >= accuracy - 1e-12), None)


def summarize_times(curves, accuracy):
    """(median time over the curves that reach `accuracy`, how many did)."""
    times = [t for t in (first_time(c, accuracy) for c in curves) if t is not None]
    return (float(np.median(times)) if times else None), len(times)


def cell(median, reached, total):
    if not reached:
        return "never"
    return f"{median:.1f} s" + ("" if reached == total else f" ({reached}/{total})")


def set_table(data, results):
    """Markdown lines of one set's table; `results` maps a method key to its curves."""
    finals = {key: [c[1][-1] for c in curves] for key, curves in results.items()}
    adams = {k: v for k, v in finals.items() if k.startswith("adam-")}
    best_adam = max(adams, key=lambda k: np.mean(adams[k])) if adams else None
    targets = [(f"{100 * a:g}%", a) for a in data.thresholds]
    if best_adam:
        best = float(np.mean([max(c[1]) for c in results[best_adam]]))
        targets.append((f"{best_adam}'s best ({100 * best:.2f}%)", best))
    if "mlp" in results and not data.thresholds:
        end = float(np.mean(finals["mlp"])) - 0.005
        targets.append((f"MLP's end - 0.5 ({100 * end:.2f}%)", end))
    lines = ["| method | runs | final test accuracy %, mean (min-max) | seconds, median "
             "(min-max) | " + " | ".join(f"time to {name}" for name, _ in targets) + " |",
             "| --- " * (4 + len(targets)) + "|"]
    for key, curves in results.items():
        acc = 100 * np.array(finals[key])
        total = [c[0][-1] for c in curves]
        row = [key, str(len(curves)), f"{acc.mean():.2f} ({acc.min():.2f}-{acc.max():.2f})",
               f"{np.median(total):.1f} ({min(total):.1f}-{max(total):.1f})"]
        row += [cell(*summarize_times(curves, a), len(curves)) for _, a in targets]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def grid_table(results):
    """Worst final accuracy and spread of each family over its grid (seed-averaged)."""
    families = {}
    for key, curves in results.items():
        family = key.split("-")[0]
        families.setdefault(family, []).append((key, np.mean([c[1][-1] for c in curves])))
    lines = ["| family | settings | worst final accuracy % (setting) | best % | spread |",
             "| --- | --- | --- | --- | --- |"]
    for family, finals in families.items():
        worst = min(finals, key=lambda kv: kv[1])
        best = max(v for _, v in finals)
        lines.append(f"| {family} | {len(finals)} | {100 * worst[1]:.2f} ({worst[0]}) | "
                     f"{100 * best:.2f} | {100 * (best - worst[1]):.2f} |")
    return lines


def plot(all_results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_results), figsize=(6 * len(all_results), 4.2),
                             squeeze=False)
    for ax, (name, results) in zip(axes[0], all_results.items()):
        for i, (key, curves) in enumerate(results.items()):
            for j, (times, accs) in enumerate(curves):
                ax.plot(times, 100 * np.array(accs), color=f"C{i % 10}", lw=1, alpha=0.8,
                        label=key if j == 0 else None)
        top = max(max(c[1]) for curves in results.values() for c in curves)
        ax.set_ylim(max(0, 100 * top - 8), 100 * top + 0.5)
        ax.set(title=name, xlabel="training seconds", ylabel="test accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=(
        "Time on an idle machine, with no more ranks than cores."))
    parser.add_argument("--sets", default="fashion", help="fashion and bench/suite.py's sets")
    parser.add_argument("--methods", default="newton,newton-full,adam,sgd,mlp",
                        help="families: newton, newton-f32, newton-f64, newton-full, adam, "
                        "adam-f64, sgd, mlp")
    parser.add_argument("--adam-rates", default="0.0003,0.001,0.003")
    parser.add_argument("--sgd-rates", default="0.003,0.01,0.03")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--hidden", default="300,300")
    parser.add_argument("--grid", action="store_true",
                        help="the robustness grid instead of --methods")
    parser.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                        help="multiply every run's time limit by F: with F large enough "
                        "runs end by their iteration/epoch budget, so a loaded machine "
                        "changes their seconds but not their final accuracies")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="the first-order methods' epochs on every set (default: the "
                        "set's own, 15 on Fashion-MNIST, 200 on the suite's sets)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tiny budgets, one rate per first-order family")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "time-to-accuracy")
    return parser.parse_args(argv)


def main(argv=None):
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--_mlp":
        return fit_mlp(json.loads(sys.argv[2]))
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    adam = [float(r) for r in args.adam_rates.split(",")]
    sgd = [float(r) for r in args.sgd_rates.split(",")]
    if args.quick:
        adam, sgd = adam[1:2], sgd[1:2]
    chosen = None if args.grid else methods(adam, sgd, args.methods.split(","))
    began = datetime.datetime.now(datetime.timezone.utc)
    report = [f"# Time to accuracy{' over settings grids' if args.grid else ''}", "",
              f"`python bench/time_to_accuracy.py {shlex.join(sys.argv[1:] or [])}` on "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{args.ranks} rank(s) per run, started {began:%Y-%m-%d %H:%M} UTC; seeds "
              f"0-{args.seeds - 1}; hidden layers {args.hidden}; time limits "
              f"x{args.time_scale:g}.",
              ""]
    all_results = {}
    for name, data in data_sets(args.sets.split(","), args.out).items():
        if args.quick:
            data.budget = Budget(iterations=5, epochs=2, seconds=60)
        data.budget.seconds *= args.time_scale
        data.budget.epochs = args.epochs or data.budget.epochs
        results = {}
        for method in grid(data.samples, adam, sgd) if args.grid else chosen:
            folder = args.out / "runs" / name
            folder.mkdir(parents=True, exist_ok=True)
            results[method.key] = [run(data, method, seed, args,
                                       folder / f"{method.key}-seed{seed}.jsonl")
                                   for seed in range(args.seeds)]
            print(f"time_to_accuracy: {name} {method.key} done", flush=True)
        all_results[name] = results
        budget = (f"{data.budget.epochs} epochs for every setting (Newton on samples of "
                  f"|B|: {data.budget.epochs} x {data.n_train} / |B| iterations)"
                  if args.grid else f"{data.budget.iterations} Newton iterations or "
                  f"{data.budget.epochs} epochs")
        report += [f"## {name}", "", f"`{data.train}` with `{' '.join(data.options)}`; "
                   f"budget {budget}, at most {data.budget.seconds:g} s.", ""]
        report += (grid_table(results) if args.grid else set_table(data, results)) + [""]
    report.append("![test accuracy against training seconds](accuracy-vs-time.png)")
    text = "\n".join(report) + "\n"
    (args.out / "report.md").write_text(text)
    plot(all_results, args.out / "accuracy-vs-time.png")
    print(text)


if __name__ == "__main__":
    main()
