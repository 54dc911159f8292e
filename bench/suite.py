"""Default settings on several real data sets against scikit-learn's MLPClassifier().

    python bench/suite.py [--sets digits,wine,...] [--methods defaults,mlp] [--seeds 3]
                          [--threads 2] [--json out.json]

For every set of the suite (scikit-learn's embedded sets, the shared MNIST subset,
a 10,000-image sample of Fashion-MNIST when the Debian package
`dataset-fashion-mnist` is installed, and a synthetic set) this trains, on the same
split, features and cores, in one process:

* ``NewtonClassifier()`` with its defaults (softmax loss, C = 1, 100 iterations),
* ``NewtonClassifier(C="auto")`` (the held-out path of ``-C auto``),
* the paper's objective (``--paper``: squared loss, C = 0.01), the defaults before
  this suite chose new ones (bench/studies/choose_defaults.py has the grid behind them),
* ``MLPClassifier()`` with its defaults (adam, 200 epochs) at the same hidden
  layers (300, 300),

and prints test accuracy and wall seconds (fit only) per method; with ``--seeds N``
every method runs with random_state 0..N-1 (initial weights, subsets, MLP's
batches), and the table gives the mean accuracy with its range and the median
seconds: one seed's trajectory can move test accuracy by tenths of a point. Features are
what a user would hand both: pixels divided by 255 (and centred for dnewton, as
its reference runs do), the other sets as they come (dnewton gets ``center``).
Every method sees the same training and test instances; the split of a set
without its own test part is stratified 75/25 with a fixed seed. Time on an idle
machine only.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from common import HIDDEN, classification_sets
from threadpoolctl import threadpool_limits

# The methods by short name (--methods), in the order they run.
METHODS = {"defaults": "dnewton defaults", "auto": "dnewton -C auto",
           "paper": "dnewton --paper", "mlp": "MLPClassifier()"}


def methods(scale, seed=0, chosen=tuple(METHODS)):
    """The estimators to compare, by display name; `seed` is every method's random_state."""
    from sklearn.neural_network import MLPClassifier

    from dnewton import NewtonClassifier
    from dnewton.app.problem import PAPER_OBJECTIVE

    shared = dict(hidden=HIDDEN, feature_scale=scale, center=True, random_state=seed)
    makers = {
        "defaults": lambda: NewtonClassifier(**shared),
        "auto": lambda: NewtonClassifier(**shared, C="auto"),
        "paper": lambda: NewtonClassifier(**shared, **PAPER_OBJECTIVE),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=HIDDEN, random_state=seed),
    }
    return {METHODS[key]: makers[key] for key in chosen}


def run_set(name, load, threads, seeds=(0,), chosen=tuple(METHODS)):
    """One row per method and seed: test accuracy, fit seconds, the chosen C."""
    X, Xt, y, yt, scale = load()
    rows = []
    for seed in seeds:
        for method, make in methods(scale, seed, chosen).items():
            estimator = make()
            # MLPClassifier gets the same scaled pixels dnewton divides by itself.
            fit_X, test_X = (X / scale, Xt / scale) if method.startswith("MLP") else (X, Xt)
            with threadpool_limits(limits=threads), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLP's ConvergenceWarning at 200 epochs
                began = time.perf_counter()
                estimator.fit(fit_X, y)
                seconds = time.perf_counter() - began
            accuracy = float(estimator.score(test_X, yt))
            extra = {"C": getattr(estimator, "C_", None)}
            rows.append({"set": name, "method": method, "seed": seed, "accuracy": accuracy,
                         "seconds": seconds, "n_train": len(y), "n_features": X.shape[1],
                         "n_classes": len(np.unique(y)), **extra})
            print(f"{name:14s} {method:30s} seed {seed}  accuracy {100 * accuracy:6.2f}%  "
                  f"{seconds:7.2f} s"
                  + (f"  C = {extra['C']:g}" if extra["C"] is not None else ""), flush=True)
    return rows


def summarize(rows):
    """Rows grouped by (set, method): mean and spread of accuracy, median seconds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["set"], r["method"]), []).append(r)
    table = []
    for (name, method), runs in groups.items():
        acc = np.array([r["accuracy"] for r in runs])
        secs = np.array([r["seconds"] for r in runs])
        Cs = sorted({r["C"] for r in runs if r["C"] is not None})
        table.append({"set": name, "method": method, "seeds": len(runs),
                      "accuracy_mean": float(acc.mean()), "accuracy_min": float(acc.min()),
                      "accuracy_max": float(acc.max()), "seconds_median": float(np.median(secs)),
                      "seconds_min": float(secs.min()), "seconds_max": float(secs.max()),
                      "n_train": runs[0]["n_train"], "n_features": runs[0]["n_features"],
                      "n_classes": runs[0]["n_classes"], "C": Cs})
    return table


def markdown(table):
    """The table of docs/benchmarks.md: one line per set and method."""
    several = any(t["seeds"] > 1 for t in table)
    lines = ["| set (train x features, classes) | method | test accuracy"
             + (" (mean, min-max over seeds)" if several else "")
             + " | fit seconds" + (" (median, min-max)" if several else "") + " |",
             "| --- | --- | --- | --- |"]
    for t in table:
        chosen = (" (C = " + ", ".join(f"{c:g}" for c in t["C"]) + ")"
                  if "auto" in t["method"] else "")
        acc = f"{100 * t['accuracy_mean']:.2f}%"
        secs = f"{t['seconds_median']:.2f}"
        if t["seeds"] > 1:
            acc += f" ({100 * t['accuracy_min']:.2f}-{100 * t['accuracy_max']:.2f})"
            secs += f" ({t['seconds_min']:.2f}-{t['seconds_max']:.2f})"
        lines.append(f"| {t['set']} ({t['n_train']} x {t['n_features']}, {t['n_classes']}) | "
                     f"{t['method']}{chosen} | {acc} | {secs} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", help="comma-separated subset of: "
                        + ", ".join(classification_sets()))
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of: " + ", ".join(METHODS))
    parser.add_argument("--seeds", type=int, default=1,
                        help="random_state 0..N-1 of every method (the split stays fixed)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads for every method")
    parser.add_argument("--json", help="write the rows (one per method and seed) to this file")
    args = parser.parse_args(argv)
    sets = classification_sets()
    names = args.sets.split(",") if args.sets else list(sets)
    chosen = tuple(args.methods.split(","))
    unknown = [m for m in chosen if m not in METHODS] + [n for n in names if n not in sets]
    if unknown:
        parser.error("unknown set or method: " + ", ".join(unknown))
    rows = []
    for name in names:
        rows += run_set(name, sets[name], args.threads, range(args.seeds), chosen)
    print()
    print(markdown(summarize(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
