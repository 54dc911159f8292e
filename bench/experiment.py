"""Newton versus SGD and Adam on real data: the experiment behind docs/experiment.md.

Runs, on the shared MNIST subset, the embedded digits set or Fashion-MNIST, every
method below with several seeds, each as ``mpiexec -n R python -m dnewton train ...``
(one process per run, so no run inherits another's state), and writes

* ``OUT/report.md``: the exact command line, the machine, and per data set a
  table of test accuracy (mean and min-max over seeds), final f, training time,
  steps and bytes communicated;
* ``OUT/accuracy-vs-time.png``: test accuracy against training time, every run;
* ``OUT/runs/<data>/<method>-seed<k>.jsonl``: the logs the tables come from
  (``.json`` for the scikit-learn baselines).

Methods (``--methods``, by family): ``newton``, Newton with its default settings
(full Gauss-Newton matrix on a 5% subset); ``newton-auto``, the same with ``-C
auto`` (its time includes the search for C); ``newton-diagonal``, block-diagonal
(5%); ``newton-gn20``, full with a 20% subset; ``sgd``, SGD with momentum over the
``--rates`` grid; ``adam``, Adam over the ``--adam-rates`` grid; ``mlp-adam`` and
``mlp-lbfgs``, scikit-learn's MLPClassifier (same hidden widths, its own defaults
and loss, one process with R BLAS threads). The dnewton methods minimise the same f
(same loss and C, except newton-auto's C) on the same network; only the optimizer
differs. Times are training seconds from the logs (the per-iteration
test scoring is not counted), so they are comparable between methods run in the
same invocation. Do not run anything else on the machine meanwhile, and use no
more ranks than cores.

Data sets (``--datasets``): ``mnist`` (the subset shipped in src/dnewton/datasets),
``digits`` (embedded) and
``fashion``: Fashion-MNIST, 60,000 / 10,000 images, from the Debian package
dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), converted once to
OUT/data/*.npz; trained with the package defaults (softmax, C = 1).

    python bench/experiment.py                      # the full report (about 20 min on 2 cores)
    python bench/experiment.py --datasets digits --seeds 1 --rates 0.01,0.1 \\
        --adam-rates 0.001 --iterations 5 --epochs 5 --out /tmp/smoke  # a smoke run
    python bench/experiment.py --datasets fashion \\
        --methods newton,newton-auto,newton-diagonal,sgd,adam,mlp-adam,mlp-lbfgs \\
        --rates 0.01,0.03,0.1 --adam-rates 0.0003,0.001,0.003 --epochs 20 \\
        --out docs/experiment-fashion                 # the full-size Fashion-MNIST run
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import (
    EMBEDDED_DATA,
    ROOT,
    dnewton_command,
    fashion_npz,
    mpiexec,
    one_thread_environment,
    read_log,
)

from dnewton.app.regularization import PathPoint, best_C
from dnewton.parallel.phases import TRAINING_PHASES

NUMERICAL_ERROR = 3  # dnewton's exit status when f turns non-finite (SGD diverging)
# "replicas": the sums over data-parallel copies, which the planner may choose for
# Newton; "evaluation" (test scoring, monitoring) is left out.


@dataclass
class Dataset:
    name: str
    train: str
    test: list  # ["--test", FILE] or [] for an embedded set (its own test part)
    options: list  # preprocessing and C
    prepare: object = None  # makes the files on first use; SystemExit if it cannot

    @property
    def scale(self):
        """--feature-scale, which the scikit-learn baselines divide by too."""
        options = self.options
        return float(options[options.index("--feature-scale") + 1]) \
            if "--feature-scale" in options else 1.0


def datasets(data_dir, out):
    fashion = out / "data"
    return {
        "mnist": Dataset(
            "MNIST subset (2,000 train / 1,000 test, 784 features)",
            str(data_dir / "mnist-demo.svm.gz"), ["--test", str(data_dir / "mnist-demo.t.svm.gz")],
            ["--feature-scale", "255", "--center", "--paper"],
        ),
        # C = 0.01 (the reference's, meant for 60,000 instances) over-regularises
        # 1,347: every method then stops near 76% test accuracy. C = 0.1 does not.
        "digits": Dataset(
            "scikit-learn digits (1,347 train / 450 test, 64 features)",
            "digits", [], ["--feature-scale", "16", "--center", "--paper", "-C", "0.1"],
        ),
        "fashion": Dataset(
            "Fashion-MNIST (60,000 train / 10,000 test, 784 features)",
            str(fashion / "fashion-train.npz"), ["--test", str(fashion / "fashion-test.npz")],
            ["--feature-scale", "255", "--center"], lambda: fashion_npz(fashion),
        ),
    }


@dataclass
class Method:
    key: str
    label: str
    options: list  # dnewton's, or for "mlp" MLPClassifier's solver
    solver: str  # "newton", "sgd", "adam" or "mlp"

    @property
    def unit(self):
        """What the steps column counts: Newton (and L-BFGS) iterations, or epochs."""
        return "it" if self.solver == "newton" or self.options == ["lbfgs"] else "ep"


FAMILIES = ("newton", "newton-auto", "newton-diagonal", "newton-gn20", "sgd", "adam",
            "mlp-adam", "mlp-lbfgs")
DEFAULT_FAMILIES = "newton,newton-diagonal,newton-gn20,sgd,adam"


def methods(families, rates, adam_rates, iterations, epochs, batch, momentum):
    """The runs per seed, in the order of `families` (sgd and adam: one per rate)."""
    newton = ["--iterations", str(iterations)]
    mini = ["--epochs", str(epochs), "--mini-batch", str(batch)]
    fixed = {
        "newton": Method("newton", "Newton, defaults (full G, 5% subset)", newton, "newton"),
        "newton-auto": Method("newton-auto", "Newton, -C auto (full G, 5% subset)",
                              [*newton, "-C", "auto"], "newton"),
        "newton-diagonal": Method("newton-diagonal", "Newton, block-diagonal G, 5% subset",
                                  [*newton, "--diagonal"], "newton"),
        "newton-gn20": Method("newton-gn20", "Newton, full G, 20% subset",
                              [*newton, "--gn-ratio", "0.2"], "newton"),
        "mlp-adam": Method("mlp-adam", "scikit-learn MLPClassifier, adam", ["adam"], "mlp"),
        "mlp-lbfgs": Method("mlp-lbfgs", "scikit-learn MLPClassifier, lbfgs", ["lbfgs"],
                            "mlp"),
    }
    found = []
    for family in families:
        if family == "sgd":
            found += [Method(f"sgd-{rate:g}", f"SGD, eta = {rate:g}",
                             ["--solver", "sgd", "--learning-rate", f"{rate:g}", *mini,
                              "--momentum", f"{momentum:g}"], "sgd") for rate in rates]
        elif family == "adam":
            found += [Method(f"adam-{rate:g}", f"Adam, eta = {rate:g}",
                             ["--solver", "adam", "--learning-rate", f"{rate:g}", *mini],
                             "adam") for rate in adam_rates]
        elif family in fixed:
            found.append(fixed[family])
        else:
            raise SystemExit(f"experiment: unknown method {family!r}; know {list(FAMILIES)}")
    return found


def run(dataset, method, seed, args, log):
    """One training run; returns (exit status, wall seconds). Skips finished runs
    when resuming (a run counts as finished once its status file exists)."""
    if method.solver == "mlp":
        return run_mlp(dataset, method, seed, args, log.with_suffix(".json"))
    status = log.with_suffix(".status")
    if args.resume and status.exists():
        done = json.loads(status.read_text())
        return done["returncode"], done["wall"]
    cmd = dnewton_command(args.ranks, [
        "train", dataset.train, *dataset.test, *dataset.options, "--hidden", args.hidden,
        *method.options, "--seed", str(seed), "--log", str(log), "--quiet"])
    env = one_thread_environment(MPIEXEC_TIMEOUT=str(args.timeout))
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=args.timeout + 60)
    wall = time.perf_counter() - began
    if proc.returncode not in (0, NUMERICAL_ERROR):
        raise SystemExit(f"experiment: {shlex.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stderr}")
    status.write_text(json.dumps({"returncode": proc.returncode, "wall": wall}))
    return proc.returncode, wall


def run_mlp(dataset, method, seed, args, result):
    """A scikit-learn baseline in its own process (no state shared with the others,
    like the mpiexec runs); its result is the JSON `fit_mlp` writes."""
    began = time.perf_counter()
    if not (args.resume and result.exists()):
        spec = {"train": dataset.train, "test": dataset.test[1:], "scale": dataset.scale,
                "hidden": args.hidden, "solver": method.options[0], "seed": seed,
                "max_iter": args.mlp_max_iter, "threads": args.ranks, "out": str(result)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_mlp", json.dumps(spec)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout + 60)
        if proc.returncode != 0:
            raise SystemExit(f"experiment: {shlex.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stderr}")
    return 0, time.perf_counter() - began


def fit_mlp(spec):
    """The child of `run_mlp`: MLPClassifier with scikit-learn's defaults but the
    hidden widths and seed, on the same instances dnewton trains and tests on (read
    by dnewton's own reader; dense, divided by --feature-scale, not centred)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from dnewton.io.data import read_dataset

    train, test = read_dataset(spec["train"])
    if spec["test"]:
        test = read_dataset(spec["test"][0], n_features=train.n_features, cut=True)[0]
    X, Xt = (data.X.toarray() if hasattr(data.X, "toarray") else np.asarray(data.X)
             for data in (train, test))
    X, Xt = X / spec["scale"], Xt / spec["scale"]
    mlp = MLPClassifier(hidden_layer_sizes=tuple(int(w) for w in spec["hidden"].split(",")),
                        solver=spec["solver"], max_iter=spec["max_iter"],
                        random_state=spec["seed"])
    # As many BLAS threads as the mpiexec runs have cores: the same machine share.
    with threadpool_limits(limits=spec["threads"]), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a budget, not a failure
        began = time.perf_counter()
        mlp.fit(X, train.y)
        seconds = time.perf_counter() - began
        accuracy = float(np.mean(mlp.predict(Xt) == test.y))
    Path(spec["out"]).write_text(json.dumps({
        "test_accuracy": accuracy, "loss": float(mlp.loss_), "seconds": seconds,
        "n_iter": int(mlp.n_iter_), "solver": spec["solver"], "seed": spec["seed"]}))


@dataclass
class Outcome:
    """One run, from its log: the last record is the model the run kept."""

    accuracy: float
    f: float
    time: float  # training seconds
    mib: float  # training bytes communicated, MiB (None: one process, none)
    steps: int  # Newton iterations or SGD/Adam epochs completed (MLP: n_iter_)
    diverged: bool
    curve: tuple  # (times, accuracies)
    path_steps: int = 0  # -C auto: the iterations spent on the path, before `steps`
    C: float = None  # -C auto: the C it chose

    @classmethod
    def from_log(cls, records, returncode):
        last = records[-1]
        mib = sum(rec["bytes"].get(p, 0) for rec in records for p in TRAINING_PHASES) / 2**20
        # -C auto logs its path in iteration 0 but counts time from after it: the
        # path is part of what the method costs, so its seconds go first.
        path = records[0].get("regularization_path") or []
        before = sum(point["seconds"] for point in path)
        curve = ([before + rec["time"] for rec in records],
                 [rec["test_accuracy"] for rec in records])
        chosen = best_C([PathPoint(**point) for point in path]) if path else None
        return cls(last["test_accuracy"], last["f"], curve[0][-1], mib, last["iter"],
                   returncode == NUMERICAL_ERROR, curve,
                   sum(point["iterations"] for point in path), chosen)

    @classmethod
    def from_mlp(cls, result):
        """A scikit-learn run: f is MLPClassifier's own loss_ (cross-entropy plus its
        alpha penalty), not dnewton's f; one point, at the end of fit."""
        return cls(result["test_accuracy"], result["loss"], result["seconds"], None,
                   result["n_iter"], False, ([result["seconds"]], [result["test_accuracy"]]))


def spread(values, fmt):
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(values.mean())} ({fmt.format(values.min())}-{fmt.format(values.max())})"


def table(outcomes, found):
    rows = [
        "| method | runs | diverged | test accuracy %, mean (min-max) | final f, median "
        "| training s, median (min-max) of finite runs | steps | MiB communicated, median |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in found:
        runs = outcomes[method.key]
        finite = [r for r in runs if not r.diverged]
        seconds = "-"  # a diverged run's log ends before its time was spent
        if finite:
            times = [r.time for r in finite]
            seconds = f"{np.median(times):.1f} ({min(times):.1f}-{max(times):.1f})"
        f = f"{np.median([r.f for r in runs]):.4g}"
        if method.solver == "mlp":
            f += " (MLP loss)"  # scikit-learn's own objective: not comparable to f
        chosen = sorted({r.C for r in runs if r.C is not None})
        if chosen:
            f += f" (C = {', '.join(f'{c:g}' for c in chosen)})"
        steps = f"{int(np.median([r.steps for r in runs]))} {method.unit}"
        path = int(np.median([r.path_steps for r in runs]))
        if path:
            steps += f" + {path} on the C path"
        mib = [r.mib for r in runs if r.mib is not None]
        rows.append(
            f"| {method.label} | {len(runs)} | {sum(r.diverged for r in runs)} "
            f"| {spread([100 * r.accuracy for r in runs], '{:.1f}')} "
            f"| {f} | {seconds} | {steps} "
            f"| {f'{np.median(mib):.1f}' if mib else '-'} |"
        )
    return "\n".join(rows)


def plot(results, found, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8),
                             squeeze=False)
    colours = {}
    for solver, cmap in (("sgd", plt.cm.viridis), ("adam", plt.cm.plasma)):
        keys = [m.key for m in found if m.solver == solver]
        colours.update(zip(keys, cmap(np.linspace(0.0, 0.85, max(len(keys), 1)))))
    styles = {"newton": ("black", "-"), "newton-auto": ("tab:blue", "-"),
              "newton-diagonal": ("tab:red", "--"), "newton-gn20": ("tab:orange", "-."),
              "mlp-adam": ("tab:green", "*"), "mlp-lbfgs": ("tab:brown", "P")}
    for ax, (dataset, outcomes) in zip(axes[0], results.values()):
        for method in found:
            colour, style = styles.get(
                method.key, (colours.get(method.key), ":" if method.solver == "sgd" else "--"))
            width = 2.0 if method.solver == "newton" else 1.2
            for k, run_ in enumerate(outcomes[method.key]):
                times, accuracy = run_.curve
                label = method.label if k == 0 else None
                if method.solver == "mlp":  # one point: where its fit ended
                    ax.plot(times, 100 * np.asarray(accuracy, dtype=float), style,
                            color=colour, ms=11, ls="none", label=label)
                    continue
                ax.plot(times, 100 * np.asarray(accuracy, dtype=float), style, color=colour,
                        lw=width, alpha=0.85, label=label)
        ax.set_title(dataset.name, fontsize=10)
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def shown(path):
    """`path` relative to the repository when it lies inside it."""
    if not os.path.isabs(path):
        return path
    return os.path.relpath(path, ROOT)


def machine(args):
    import mpi4py
    from mpi4py import MPI
    from threadpoolctl import threadpool_info

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    blas = ", ".join(f"{i['internal_api']} {i.get('version')}" for i in threadpool_info()
                     if i.get("user_api") == "blas") or "unknown"
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores, {memory:.0f} GiB",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, NumPy {np.__version__}, BLAS: {blas} "
        "(1 thread per rank)",
        f"- MPI: {MPI.Get_library_version().splitlines()[0].strip()}, mpi4py "
        f"{mpi4py.__version__}; {args.ranks} rank(s) per run",
        f"- dnewton at commit {commit}",
    ]


def setup(args, found):
    """The report's paragraph on what ran: only the solvers in `found`."""
    solvers = {method.solver for method in found}
    text = [f"Network: hidden layers {args.hidden}, ReLU; the loss, preprocessing and C "
            "of each data set are its options below (`--paper`: squared loss and C = 0.01 "
            "unless -C is given; otherwise dnewton's defaults, softmax and C = 1). Seeds "
            f"0-{args.seeds - 1} (initial weights, Gauss-Newton subsets, mini-batches)."]
    if "newton" in solvers:
        text.append(f"Newton: {args.iterations} iterations with dnewton's settings except "
                    "where named.")
    if any(method.key == "newton-auto" for method in found):
        text.append("-C auto: its time includes its search for C (the path's iterations "
                    "are counted apart, its bytes not at all: the log has none), and its f "
                    "is at the C it chose.")
    if "sgd" in solvers:
        text.append(f"SGD: {args.epochs} epochs, mini-batch {args.mini_batch}, momentum "
                    f"{args.momentum:g}, constant learning rate eta.")
    if "adam" in solvers:
        text.append(f"Adam: {args.epochs} epochs, mini-batch {args.mini_batch}, dnewton's "
                    "betas and eps, constant learning rate eta.")
    if "mlp" in solvers:
        text.append("MLPClassifier: scikit-learn's defaults (alpha 1e-4, its own "
                    f"cross-entropy loss, at most {args.mlp_max_iter} iterations, "
                    "early stopping off) but the hidden widths and random_state = seed, on "
                    "the same instances divided by the same --feature-scale, not centred, "
                    f"in one process with {args.ranks} BLAS thread(s); its f column is its "
                    "own loss_, its time the fit's wall seconds (no scoring during it), its "
                    "steps n_iter_; it communicates nothing.")
    text.append("Accuracy is the model the run ends with (for a diverged run: its last "
                "finite epoch). Training time excludes the per-step scoring of the test set; "
                "bytes exclude it too.")
    return text


def parse(argv):
    parser = argparse.ArgumentParser(
        description="Newton versus SGD, Adam and scikit-learn's MLPClassifier on the "
        "MNIST subset, the digits set or Fashion-MNIST; writes a markdown report and a plot "
        "of test accuracy against time.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "experiment",
                        help="directory for report.md, the figure and the run logs")
    parser.add_argument("--data", type=Path, default=EMBEDDED_DATA,
                        help="directory holding mnist-demo.svm.gz and mnist-demo.t.svm.gz")
    parser.add_argument("--datasets", default="mnist,digits",
                        help="which data sets: mnist, digits, fashion")
    parser.add_argument("--methods", default=DEFAULT_FAMILIES,
                        help=f"which methods, by family: {', '.join(FAMILIES)} "
                        "(sgd and adam: one run per rate)")
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks per run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (0..N-1)")
    parser.add_argument("--hidden", default="300,300", help="hidden layer widths")
    parser.add_argument("--iterations", type=int, default=100, help="Newton iterations")
    parser.add_argument("--epochs", type=int, default=100, help="SGD and Adam epochs")
    parser.add_argument("--rates", default="0.001,0.003,0.01,0.03,0.1,0.3,1",
                        help="SGD learning rates")
    parser.add_argument("--adam-rates", default="0.0003,0.001,0.003",
                        help="Adam learning rates")
    parser.add_argument("--mini-batch", type=int, default=128, help="SGD and Adam mini-batch")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--mlp-max-iter", type=int, default=200,
                        help="MLPClassifier's max_iter (its default: 200)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per run, at most")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs an interrupted invocation finished")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_mlp"]:  # run_mlp's child
        return fit_mlp(json.loads(argv[1]))
    args = parse(argv)
    command = shlex.join(["python", "bench/experiment.py", *argv])
    if mpiexec() is None:
        raise SystemExit("experiment: no mpiexec (pip install mpich, or load your MPI)")
    found = methods(args.methods.split(","), [float(r) for r in args.rates.split(",")],
                    [float(r) for r in args.adam_rates.split(",")], args.iterations,
                    args.epochs, args.mini_batch, args.momentum)
    every = datasets(args.data, args.out)
    chosen = args.datasets.split(",")
    unknown = [name for name in chosen if name not in every]
    if unknown:
        raise SystemExit(f"experiment: unknown data set {unknown[0]!r}; know {list(every)}")
    for name in chosen:  # before any run: a missing data set stops nothing half-way
        if every[name].prepare is not None:
            every[name].prepare()
    started = datetime.datetime.now().astimezone()
    results = {}
    for name in chosen:
        dataset = every[name]
        folder = args.out / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        outcomes = {}
        for method in found:
            outcomes[method.key] = []
            for seed in range(args.seeds):
                log = folder / f"{method.key}-seed{seed}.jsonl"
                returncode, wall = run(dataset, method, seed, args, log)
                if method.solver == "mlp":
                    outcome = Outcome.from_mlp(json.loads(log.with_suffix(".json").read_text()))
                else:
                    outcome = Outcome.from_log(read_log(log), returncode)
                outcomes[method.key].append(outcome)
                print(f"{name:7s} {method.label:38s} seed {seed}: accuracy "
                      f"{100 * outcome.accuracy:5.1f}%  "
                      f"{'loss' if method.solver == 'mlp' else 'f'} {outcome.f:.4g}  "
                      f"{outcome.time:6.1f} s{'  diverged' if outcome.diverged else ''}"
                      f"  ({wall:.0f} s wall)", flush=True)
        results[name] = (dataset, outcomes)
    figure = args.out / "accuracy-vs-time.png"
    plot(results, found, figure)
    finished = datetime.datetime.now().astimezone()
    lines = [
        "# Newton versus SGD and Adam: the generated report",
        "",
        f"Generated by `{command}` from {started:%Y-%m-%d %H:%M} to {finished:%H:%M %Z}.",
        "",
        *machine(args),
        "",
        " ".join(setup(args, found)),
        "",
    ]
    for dataset, outcomes in results.values():
        lines += [f"## {dataset.name}", "",
                  f"`{shlex.join([shown(dataset.train), *dataset.options])}`", "",
                  table(outcomes, found), ""]
    lines += [f"![test accuracy against training time]({figure.name})", ""]
    (args.out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"experiment: wrote {args.out / 'report.md'} and {figure}")


if __name__ == "__main__":
    main()
