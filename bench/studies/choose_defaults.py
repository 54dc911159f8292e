"""The evidence behind the default loss and C: test accuracy over a grid of both.

    python bench/studies/choose_defaults.py [--sets digits,wine,...] [--C 0.01,0.1,1,10,100]
                                            [--json out.json]

On every set of bench/suite.py (same splits and features: pixels divided by 255,
every set centred) this fits ``NewtonClassifier`` for each loss (squared, the
paper's; softmax) and each C of the grid with everything else at its default
(300, 300 hidden, 100 iterations), and prints one table of test accuracy, with
``MLPClassifier()``'s beside it. Accuracy only: wall times come from
bench/suite.py on an idle machine.
"""

import argparse
import json
import warnings
from pathlib import Path

from common import HIDDEN, classification_sets
from threadpoolctl import threadpool_limits

LOSSES = ("squared", "softmax")


def accuracies(load, grid, threads):
    """{(loss, C): test accuracy} and MLPClassifier()'s accuracy on one set."""
    from sklearn.neural_network import MLPClassifier

    from dnewton import NewtonClassifier

    X, Xt, y, yt, scale = load()
    found = {}
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the iteration limit
        for loss in LOSSES:
            for C in grid:
                clf = NewtonClassifier(hidden=HIDDEN, feature_scale=scale, center=True,
                                       loss=loss, C=C, random_state=0).fit(X, y)
                found[loss, C] = float(clf.score(Xt, yt))
        mlp = MLPClassifier(hidden_layer_sizes=HIDDEN, random_state=0).fit(X / scale, y)
    return found, float(mlp.score(Xt / scale, yt))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", help="comma-separated subset of: "
                        + ", ".join(classification_sets()))
    parser.add_argument("--C", default="0.01,0.1,1,10,100", help="the grid of C")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--json", help="write the table to this file")
    args = parser.parse_args(argv)
    grid = [float(c) for c in args.C.split(",")]
    sets = classification_sets()
    names = args.sets.split(",") if args.sets else list(sets)
    columns = [(loss, C) for loss in LOSSES for C in grid]
    print("| set | " + " | ".join(f"{loss} C={C:g}" for loss, C in columns)
          + " | MLPClassifier() |")
    print("| --- " * (len(columns) + 2) + "|")
    rows = []
    for name in names:
        found, mlp = accuracies(sets[name], grid, args.threads)
        print(f"| {name} | " + " | ".join(f"{100 * found[c]:.2f}" for c in columns)
              + f" | {100 * mlp:.2f} |", flush=True)
        rows.append({"set": name, "mlp": mlp,
                     "newton": [{"loss": loss, "C": C, "accuracy": found[loss, C]}
                                for loss, C in columns]})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
