"""The cost model against real runs: predicted and measured seconds per iteration
(and per phase), predicted and counted bytes.

    python bench/plan_validation.py [--machine FILE] [--iterations 30] [--markdown OUT.md]

Runs the reference problem (the MNIST subset shipped with the package, --hidden 300,300
--feature-scale 255 --center) on several layouts and modes with 1 and 2 ranks, and
with 3 and 4 ranks marked "oversubscribed" (this machine has 2 cores: printed,
not judged). Without --machine it first runs ``mpiexec -n 2 dnewton calibrate``.
For every run the model is given the counts the log records per iteration (CG
iterations, line-search trials), and the figures compared are medians over
iterations 2..N of the log's ``iteration_time`` and per-phase seconds (compute
plus wait, mean over ranks) against the predictions for the same iterations.
Bytes are compared per iteration and per phase, and must be equal.

A run of the planner's own choice (no --partitions) is included, and the script
says how far it is from the fastest 2-rank layout measured. ``--replicas 2``
runs are included when this dnewton has the option.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import EMBEDDED_DATA, dnewton_command

from dnewton.planning.cost import TRAINING_PHASES, Choice, Workload, predict
from dnewton.planning.machine import Machine
from dnewton.planning.volume import Counts

DATA = EMBEDDED_DATA / "mnist-demo.svm.gz"
# The reference problem (the paper's objective: the planner's Workload has its loss).
ARGS = ["--hidden", "300,300", "--feature-scale", "255", "--center", "--paper"]
CORES = len(os.sched_getaffinity(0))


@dataclass
class Run:
    ranks: int
    partitions: object  # "P0,...,PL", or None: the planner's choice
    assignment: str = "balanced"
    jacobian: str = "stored"
    replicas: int = 1

    @property
    def name(self):
        parts = self.partitions or "planner"
        extra = "" if self.replicas == 1 else f" R={self.replicas}"
        return f"{self.ranks} rank(s) {parts} {self.assignment} {self.jacobian}{extra}"

    @property
    def oversubscribed(self):
        return self.ranks > CORES


RUNS = [
    Run(1, "1,1,1,1"),
    Run(1, "1,1,1,1", jacobian="recomputed"),
    Run(2, "1,2,1,1"),
    Run(2, "1,2,1,1", jacobian="recomputed"),
    Run(2, "2,2,1,1"),
    Run(2, "1,1,2,1"),
    Run(2, "1,1,2,1", "aligned"),
    Run(2, "2,1,1,1"),
    Run(2, "2,1,1,1", "aligned"),
    Run(2, "2,1,2,1"),
    Run(2, "1,1,1,1", replicas=2),
    Run(2, None),
    Run(3, "2,1,1,1"),
    Run(4, "2,2,2,1"),
]


def has_replicas():
    text = subprocess.run([sys.executable, "-m", "dnewton", "train", "--help"],
                          capture_output=True, text=True).stdout
    return "--replicas" in text


def calibrate(path, seconds):
    subprocess.run(dnewton_command(2, ["calibrate", "--output", str(path), "--seconds",
                                       str(seconds)]), check=True)


def train(run, iterations, log, machine_path):
    cmd = dnewton_command(run.ranks, [
        "train", str(DATA), *ARGS, "--iterations", str(iterations), "--log", str(log),
        "--jacobian", run.jacobian, "--machine", str(machine_path)])
    if run.partitions:
        cmd += ["--partitions", run.partitions, "--assignment", run.assignment]
    if run.replicas > 1:
        cmd += ["--replicas", str(run.replicas)]
    env = dict(os.environ, MPIEXEC_TIMEOUT="600")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def planner_choice(stdout):
    found = re.search(r"chosen by the planner: partitions ([\d,]+) \((\w+)\)", stdout)
    return found.group(1), found.group(2)


def compare(run, records, machine, widths, n_instances):
    """Medians of predicted and measured seconds (total and per phase), and whether
    every iteration's bytes equal the prediction."""
    choice = Choice(tuple(map(int, run.partitions.split(","))), run.assignment, run.replicas,
                    run.jacobian)
    workload = Workload(widths, n_instances, int(np.ceil(0.05 * n_instances)))
    predicted, measured, bytes_equal, mismatch = [], [], True, None
    for rec in records[1:]:
        workload.counts = Counts(cg_iters=rec["cg_iters"], trials=rec["line_search_trials"])
        p = predict(workload, choice, run.ranks, machine)
        if any(p.bytes.get(phase, 0) != value for phase, value in rec["bytes"].items()):
            bytes_equal = False
            mismatch = {phase: (p.bytes.get(phase), value)
                        for phase, value in rec["bytes"].items()
                        if p.bytes.get(phase) != value}
        if rec["iter"] >= 2:
            predicted.append([p.seconds_per_iteration,
                              *(p.seconds[phase] for phase in TRAINING_PHASES)])
            measured.append([rec["iteration_time"],
                             *(sum(rec["seconds"].get(phase, {}).values())
                               for phase in TRAINING_PHASES)])
    return (np.median(predicted, axis=0), np.median(measured, axis=0), bytes_equal, mismatch,
            records[-1]["bytes"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machine", help="machine file (default: calibrate first)")
    parser.add_argument("--calibrate-seconds", type=float, default=30)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--markdown", help="also write the table (markdown) to this file")
    parser.add_argument("--only", help="run only the runs whose name contains this")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found")
    work = Path(tempfile.mkdtemp(prefix="plan-validation-"))
    machine_path = Path(args.machine) if args.machine else work / "machine.json"
    if not args.machine:
        calibrate(machine_path, args.calibrate_seconds)
    machine = Machine.load(machine_path)
    from dnewton.io.data import read_dataset

    raw, _ = read_dataset(str(DATA))
    widths = (raw.n_features, 300, 300, len(np.unique(raw.y)))
    replicas = has_replicas()
    rows, fastest, chosen = [], None, None
    short = ("fwd", "bwd", "gn", "oth")
    header = ("| run | predicted s/iter | measured s/iter | error | "
              + " | ".join(f"{s} pred/meas" for s in short) + " | bytes/iter | bytes |")
    print(f"machine: {machine.source}; {args.iterations} iterations per run; medians of "
          "iterations 2..N")
    print(header)
    for run in RUNS:
        if run.replicas > 1 and not replicas:
            print(f"| {run.name} | (skipped: this dnewton has no --replicas) |")
            continue
        if args.only and args.only not in run.name:
            continue
        log = work / f"run{len(rows)}.jsonl"
        stdout = train(run, args.iterations, log, machine_path)
        if run.partitions is None:
            run.partitions, run.assignment = planner_choice(stdout)
            label = f"{run.ranks} rank(s) planner's choice {run.partitions} {run.assignment}"
        else:
            label = run.name
        with open(log, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        pred, meas, equal, mismatch, last_bytes = compare(run, records, machine, widths,
                                                          raw.n_instances)
        error = (pred[0] - meas[0]) / meas[0]
        mark = " (oversubscribed, not judged)" if run.oversubscribed else ""
        phases = " | ".join(f"{pred[i]:.4f}/{meas[i]:.4f}" for i in range(1, 5))
        row = (f"| {label}{mark} | {pred[0]:.4f} | {meas[0]:.4f} | {100 * error:+.0f}% | "
               f"{phases} | {sum(last_bytes.values()):,} | "
               f"{'equal' if equal else 'DIFFER ' + json.dumps(mismatch)} |")
        print(row, flush=True)
        rows.append((run, label, pred, meas, error, row))
        if run.ranks == 2 and not run.oversubscribed and "planner" not in label:
            if fastest is None or meas[0] < fastest[1]:
                fastest = (label, meas[0])
        if "planner" in label:
            chosen = (label, meas[0])
    judged = [r for r in rows if not r[0].oversubscribed]
    worst = max((abs(r[4]) for r in judged), default=0.0)
    summary = [f"largest |error| of the runs that are not oversubscribed: {100 * worst:.0f}%"]
    if fastest and chosen:
        summary.append(f"planner's choice {chosen[0]}: {chosen[1]:.4f} s/iter; fastest "
                       f"measured 2-rank layout {fastest[0]}: {fastest[1]:.4f} s/iter "
                       f"({100 * (chosen[1] / fastest[1] - 1):+.0f}%)")
    for line in summary:
        print(line)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(f"machine: {machine.source}; {args.iterations} iterations per run\n\n")
            f.write(header + "\n|" + " --- |" * (header.count("|") - 1) + "\n")
            f.writelines(r[5] + "\n" for r in rows)
            f.write("\n" + "\n".join(f"* {line}" for line in summary) + "\n")


if __name__ == "__main__":
    main()
