"""Would stopping earlier close the time gap to MLPClassifier()? Test accuracy along
Newton's iterations, and early stopping on a held-out tenth.

    python bench/stopping.py [--sets iris,wine,...] [--iterations 100] [--patience 5,10,20]

For each set of `bench/suite.py` (same split, same scaling, dnewton's defaults,
one process) it trains three times, each run logging the accuracy on one set
after every iteration:

* on the whole training set, scored on the test set: accuracy and training
  seconds after 10, 20, 30, 50, 70 and 100 iterations (what a fixed, smaller
  iteration count would give);
* on 90% of it (stratified, seeded), scored on the other 10% and, in a second
  run that repeats the first to the bit (same seed, same data), on the test set:
  early stopping as scikit-learn's ``early_stopping=True`` does it -- stop once
  the held-out accuracy has not improved for `patience` iterations and keep the
  best iterate -- with the test accuracy of the kept iterate and the seconds to
  the stop.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from dnewton.io.run_log import read_log

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  -- the benchmark sets and their split

CHECKPOINTS = (10, 20, 30, 50, 70, 100)


def train_log(train, test, scale, iterations, log):
    """Run ``dnewton train`` with the defaults; returns its iteration records."""
    subprocess.run([sys.executable, "-m", "dnewton", "train", str(train), "--test", str(test),
                    "--feature-scale", str(scale), "--center", "--iterations", str(iterations),
                    "--quiet", "--log", str(log)], check=True)
    return read_log(log)


def early_stop(held_out, patience):
    """(stop, best): the iteration where early stopping ends and the one it keeps."""
    best, kept = -1.0, 0
    for i, accuracy in enumerate(held_out):
        if accuracy > best:
            best, kept = accuracy, i
        elif i - kept >= patience:
            return i, kept
    return len(held_out) - 1, kept


def study(name, load, iterations, patiences, folder):
    from sklearn.model_selection import train_test_split

    X, Xt, y, yt, scale = load()
    Xa, Xv, ya, yv = train_test_split(X, y, test_size=0.1, stratify=y, random_state=0)
    files = {}
    for tag, (A, b) in {"full": (X, y), "part": (Xa, ya), "held": (Xv, yv),
                        "test": (Xt, yt)}.items():
        files[tag] = folder / f"{name}-{tag}.npz"
        np.savez(files[tag], X=A, y=b)
    full = train_log(files["full"], files["test"], scale, iterations, folder / "full.jsonl")
    held = train_log(files["part"], files["held"], scale, iterations, folder / "held.jsonl")
    test = train_log(files["part"], files["test"], scale, iterations, folder / "test.jsonl")
    if [r["f"] for r in held] != [r["f"] for r in test]:
        raise SystemExit(f"stopping: the two runs on 90% of {name} differ; cannot pair them")
    seconds = np.cumsum([r["iteration_time"] for r in full])
    fixed = {k: (100 * full[k]["test_accuracy"], float(seconds[k]))
             for k in CHECKPOINTS if k < len(full)}
    part_seconds = np.cumsum([r["iteration_time"] for r in test])
    stops = {}
    for patience in patiences:
        stop, kept = early_stop([r["test_accuracy"] for r in held], patience)
        stops[patience] = (stop, kept, 100 * test[kept]["test_accuracy"],
                           float(part_seconds[stop]))
    return fixed, stops, 100 * test[-1]["test_accuracy"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="iris,wine,breast_cancer,digits,synthetic,"
                        "mnist_subset")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--patience", default="5,10,20")
    args = parser.parse_args(argv)
    sets = suite.suite()
    patiences = [int(p) for p in args.patience.split(",")]
    names = args.sets.split(",")
    unknown = [n for n in names if n not in sets]
    if unknown:
        parser.error("unknown set: " + ", ".join(unknown))
    print("| set | " + " | ".join(f"{k} iterations" for k in CHECKPOINTS) + " |")
    print("| --- |" + " --- |" * len(CHECKPOINTS))
    rows = []
    with tempfile.TemporaryDirectory(prefix="dnewton-stopping-") as tmp:
        for name in names:
            fixed, stops, last = study(name, sets[name], args.iterations, patiences, Path(tmp))
            rows.append((name, stops, last))
            print(f"| {name} | " + " | ".join(
                f"{fixed[k][0]:.2f}% in {fixed[k][1]:.2f} s" if k in fixed else ""
                for k in CHECKPOINTS) + " |", flush=True)
    print("\nEarly stopping on a held-out 10% (test accuracy of the kept iterate; "
          f"seconds to the stop; after {args.iterations} iterations on the same 90%):\n")
    print("| set | " + " | ".join(f"patience {p}" for p in patiences)
          + f" | {args.iterations} iterations |")
    print("| --- |" + " --- |" * (len(patiences) + 1))
    for name, stops, last in rows:
        print(f"| {name} | " + " | ".join(
            f"{stops[p][2]:.2f}% (kept {stops[p][1]}, stopped {stops[p][0]}, "
            f"{stops[p][3]:.2f} s)" for p in patiences) + f" | {last:.2f}% |")


if __name__ == "__main__":
    main()
