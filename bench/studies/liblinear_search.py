"""dnewton's ``-C auto`` against LIBLINEAR's parameter search (``train -C``).

    python bench/studies/liblinear_search.py [--sets digits,wine,...] [--threads 1]
                                             [--json out.json]

LIBLINEAR (the ``liblinear-official`` package) searches C for L2-regularized
logistic regression (``-s 0``) by 5-fold cross-validation: from a small C computed
from the data (where w is about 0), doubling C up to 1024, every fold warm-started
from its previous solution, stopping early once the solutions stop changing; the
best C is then trained on all the training set. dnewton's ``-C auto`` scores one
stratified held-out fifth instead of five folds, on a coarser grid (powers of 10),
by successive halving: every C branches from one fit at the largest C (a network
at theta = 0 sits on a saddle point, so a path up from a small C cannot leave
it), the better half goes on each round, and the chosen fit goes on into the
final run instead of a new one starting (docs/usage.md, "Choosing C").

Both use the same C: LIBLINEAR's w'w/2 + C sum of losses is l C times dnewton's
f = theta'theta / (2 C l) + mean loss. On every set of bench/suite.py (same splits
and features; standardized here for LIBLINEAR, whose solver needs comparable
feature ranges, and given centred to dnewton as the suite does) this prints, per
method: the chosen C, test accuracy and the seconds of search plus final fit:

* LIBLINEAR ``-s 0 -B 1 -C`` then ``-s 0 -B 1 -c best`` (a linear model with a
  bias, one-vs-rest),
* dnewton with no hidden layer (a linear softmax model) and ``C="auto"``,
* dnewton with the suite's hidden layers (300, 300) and ``C="auto"``.

Time on an idle machine only; LIBLINEAR runs one thread, so the default gives
dnewton one BLAS thread too.
"""

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
from common import HIDDEN, classification_sets
from threadpoolctl import threadpool_limits


def liblinear_search(X, y, Xt, yt):
    """LIBLINEAR's search, then the final fit: (C, test accuracy, seconds)."""
    from liblinear.liblinearutil import predict, train

    quiet = contextlib.redirect_stdout(io.StringIO())  # its per-C lines and summary
    began = time.perf_counter()
    with quiet:
        best_C, _, _ = train(y, X, "-s 0 -B 1 -C -q")
        model = train(y, X, f"-s 0 -B 1 -c {best_C:.17g} -q")
    seconds = time.perf_counter() - began
    with quiet:
        labels, _, _ = predict(yt, Xt, model, "-q")
    return best_C, float(np.mean(np.asarray(labels) == yt)), seconds


def dnewton_search(X, y, Xt, yt, scale, hidden):
    """NewtonClassifier(C="auto"): (chosen C, test accuracy, seconds)."""
    from dnewton import NewtonClassifier

    estimator = NewtonClassifier(hidden=hidden, feature_scale=scale, center=True, C="auto",
                                 random_state=0)
    began = time.perf_counter()
    estimator.fit(X, y)
    seconds = time.perf_counter() - began
    return estimator.C_, float(estimator.score(Xt, yt)), seconds


def run_set(name, load, threads):
    from sklearn.preprocessing import StandardScaler

    X, Xt, y, yt, scale = load()
    scaler = StandardScaler().fit(X)
    rows = []
    searches = {
        "LIBLINEAR -s 0 -B 1 -C (linear)": lambda: liblinear_search(
            scaler.transform(X), y, scaler.transform(Xt), yt),
        "dnewton -C auto, linear": lambda: dnewton_search(X, y, Xt, yt, scale, ()),
        "dnewton -C auto, 300-300": lambda: dnewton_search(X, y, Xt, yt, scale, HIDDEN),
    }
    for method, search in searches.items():
        with threadpool_limits(limits=threads):
            C, accuracy, seconds = search()
        rows.append({"set": name, "method": method, "C": C, "accuracy": accuracy,
                     "seconds": seconds, "n_train": len(y), "n_features": X.shape[1]})
        print(f"{name:14s} {method:28s} C = {C:<10g} accuracy {100 * accuracy:6.2f}%  "
              f"{seconds:7.2f} s", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sets = classification_sets()
    parser.add_argument("--sets", help="comma-separated subset of: " + ", ".join(sets))
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for dnewton")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    names = args.sets.split(",") if args.sets else list(sets)
    unknown = [n for n in names if n not in sets]
    if unknown:
        parser.error("unknown set: " + ", ".join(unknown))
    rows = []
    for name in names:
        rows += run_set(name, sets[name], args.threads)
    print("\n| set (train x features) | method | chosen C | test accuracy | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['set']} ({r['n_train']} x {r['n_features']}) | {r['method']} | "
              f"{r['C']:g} | {100 * r['accuracy']:.2f}% | {r['seconds']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
