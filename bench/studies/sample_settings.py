"""The evidence behind the recommended stochastic Newton setting: training FLOPs to
fixed test accuracies on full Fashion-MNIST for samples B, Gauss-Newton subsets S
and averaging windows.

    python bench/studies/sample_settings.py --out /tmp/sample-settings [--seed 0]
        [--settings b2000,b500] [--ranks 2]

Each setting is one ``dnewton train`` run (784-300-300-10, ``--feature-scale 255
--center``, float32, scoring the test set after every iteration); the table gives,
per setting, the training TFLOP (every phase of the log but ``evaluation``) and
the iterations at which the test accuracy first reached 88%, 88.5% and 89%.
FLOPs do not depend on the machine's load, so this study may run beside other
work; its seconds may not be compared.
"""

import argparse
import subprocess
from pathlib import Path

from common import dnewton_command, fashion_npz, one_thread_environment, read_log

THRESHOLDS = (0.88, 0.885, 0.89)
# name -> (options, iterations): B, |S| = gn_ratio |B|, the averaging beta; the
# window 1 / (1 - beta) grows as B shrinks, so that it spans about as many instances.
SETTINGS = {
    "b2000": (["--sample-size", "2000", "--gn-ratio", "0.2", "--average", "0.95"], 250),
    "b1000": (["--sample-size", "1000", "--gn-ratio", "0.2", "--average", "0.975"], 450),
    "b500": (["--sample-size", "500", "--gn-ratio", "0.2", "--average", "0.9875"], 700),
    "b500-a99": (["--sample-size", "500", "--gn-ratio", "0.2", "--average", "0.99"], 700),
    "b500-s50": (["--sample-size", "500", "--gn-ratio", "0.1", "--average", "0.9875"], 800),
    # variations of b2000: a looser CG tolerance, fewer CG iterations, a longer
    # average, and a sample growing from 1,000 by 1% per iteration
    "b2000-xi0.3": (["--sample-size", "2000", "--gn-ratio", "0.2", "--average", "0.95",
                     "--xi", "0.3"], 250),
    "b2000-cg5": (["--sample-size", "2000", "--gn-ratio", "0.2", "--average", "0.95",
                   "--cg-max", "5"], 250),
    "b2000-a98": (["--sample-size", "2000", "--gn-ratio", "0.2", "--average", "0.98"], 250),
    "b1000-grow": (["--sample-size", "1000", "--sample-growth", "1.01", "--gn-ratio", "0.2",
                    "--average", "0.95"], 250),
}


def work_to(records, thresholds=THRESHOLDS):
    """{threshold: (iteration, training TFLOP)} where the test accuracy first reached
    each threshold, the best accuracy and the run's TFLOP."""
    total, reached, best = 0.0, {}, 0.0
    for record in records:  # iteration 0's start (f and g at the first point) included
        total += sum(v for phase, v in record["flops"].items() if phase != "evaluation")
        best = max(best, record["test_accuracy"])
        for threshold in thresholds:
            if record["test_accuracy"] >= threshold and threshold not in reached:
                reached[threshold] = (record["iter"], total / 1e12)
    return reached, best, total / 1e12


def run(name, data, args):
    log = Path(args.out) / f"{name}-seed{args.seed}.jsonl"
    if not log.exists():
        options, iterations = SETTINGS[name]
        command = dnewton_command(args.ranks, [
            "train", data["train"], "--test", data["test"], "--feature-scale", "255",
            "--center", "--hidden", "300,300", "--dtype", "float32", "--cg-max", "10",
            *options, "--iterations", str(iterations), "--seed", str(args.seed),
            "--log", str(log), "--quiet"])
        subprocess.run(command, check=True, env=one_thread_environment(),
                       stderr=subprocess.DEVNULL)
    return read_log(log)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the runs' logs (reused)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated, of {', '.join(SETTINGS)}")
    args = parser.parse_args(argv)
    names = args.settings.split(",")
    unknown = set(names) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown setting {sorted(unknown)[0]!r}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    data = {part: str(path) for part, path in fashion_npz(Path(args.out) / "data").items()}
    print("| setting | options | " + " | ".join(f"to {100 * t:g}%: iteration, TFLOP"
                                                  for t in THRESHOLDS) + " | best |")
    print("| --- " * (3 + len(THRESHOLDS)) + "|")
    for name in names:
        reached, best, total = work_to(run(name, data, args))
        cells = [f"{reached[t][0]}, {reached[t][1]:.2f}" if t in reached else
                 f"never in {total:.2f}" for t in THRESHOLDS]
        print(f"| {name} | {' '.join(SETTINGS[name][0])} | " + " | ".join(cells)
              + f" | {100 * best:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
