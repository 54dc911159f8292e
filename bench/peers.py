"""A PyTorch peer of dnewton: the same Newton method as a PyTorch user would write it.

    python bench/peers.py                        # the reference problem, the peer alone
    python bench/peers.py --compare --repeat 3   # and dnewton on the same cores, alternating
    python bench/peers.py --iterations 3 --compare --threads 1   # a smoke run

The peer is one process: the network is plain float64 tensors (W^1, b^1, ... as views
of one flat parameter vector), f and its gradient come from autograd, and the
Gauss-Newton product is ``torch.func.jvp`` (J v) followed by the pull-back of
``torch.func.vjp`` (J^T B J v), with B the loss's Gauss-Newton weight. Around them
sit CG, the backtracking line search and the Levenberg-Marquardt update, step for
step as dnewton's (docs/design.md, "One Newton iteration").

Why the comparison is fair:

* the same algorithm and settings: the peer takes dnewton's own `ModelConfig` and
  `NewtonOptions` (so their defaults), the same objective
  ``theta'theta / (2 C l) + (1/l) sum_i loss_i``, the same CG stopping rule, line
  search constants and damping thresholds, and the same Gauss-Newton subsets (drawn
  from dnewton's seeded stream);
* the same start and data: the data are read, scaled and centred by dnewton's own
  reader and preprocessing, and the initial parameters are dnewton's
  ``Network.initial_parameters`` of a one-rank problem, copied into the tensors;
* the same cores and arithmetic: float64 throughout, the peer on ``--threads`` T
  threads and dnewton on T ranks of one thread and on one rank of T threads;
  ``--compare`` runs every run as a fresh process and alternates them.

Per iteration the peer's f follows dnewton's one-rank f up to summation order
(tests/test_peers.py checks it to 1e-6 on a small problem; on the reference problem
the 30 iterations agreed to 1e-14 with the same CG counts; ``--compare`` prints the
agreement of every invocation). The timing covers what dnewton's log calls an
iteration's training time: CG, the line search and the gradient at the new point,
monitoring (test accuracy) excluded. Iteration 1, which pays for lazy
initialisation, is reported apart from the median of the others: for the peer it
includes the first pull-back of ``torch.func.vjp``, which imports several hundred
modules of PyTorch (seconds). Time on an idle machine only: runs of T threads
(the peer, dnewton's one-rank run) suffer far more from a job sharing the cores than
T ranks of one thread do.

Where the two still differ (read this before quoting a ratio):

* the product: ``torch.func.jvp`` re-runs the forward pass on S in every CG
  iteration and carries the tangent through every layer, and the pull-back
  multiplies back down: about 10 |S| mac - 4 |S| n_0 n_1 FLOPs per CG iteration
  (mac = sum_m n_{m-1} n_m), where dnewton stores the Jacobian once per Newton
  iteration and then spends 4 |S| (mac + n_L B) (B = sum of |b| over the blocks;
  docs/design.md, "FLOPs"): 1.75 times as many for the peer on 784-300-300-10.
  That is the cost of the way PyTorch users write it, not of PyTorch;
* BLAS: PyTorch's CPU wheel brings its own (MKL on x86), dnewton uses SciPy's
  (OpenBLAS); the same problem thus runs on different GEMM implementations;
* passes: the peer evaluates f on all l instances in one batch (dnewton in
  batches of 4,096; the same for the reference problem's 2,000 instances), keeps
  the autograd graph of every line-search trial so the accepted one serves the
  gradient (dnewton keeps the forward pass likewise), but runs its own forward pass
  over S for the pull-back (dnewton takes S's rows from the kept pass);
* the peer is the one-rank algorithm only: no model partition, no communication.
"""

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import gemm_rate, mpiexec, training_flops

from dnewton.io.data import EMBEDDED_DATA  # the MNIST subset shipped with the package
from dnewton.solvers.newton import RHO_GOOD, RHO_POOR  # the damping thresholds

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_TRAIN = EMBEDDED_DATA / "mnist-demo.svm.gz"
REFERENCE_TEST = EMBEDDED_DATA / "mnist-demo.t.svm.gz"


def import_torch():
    """torch, or a clear exit: the peer is the one part of the project that needs it."""
    try:
        import torch
    except ImportError:
        raise SystemExit("peers: this benchmark needs PyTorch: pip install torch "
                         "(the CPU wheel is enough)") from None
    return torch


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- the problem, as dnewton sees it ------------------------------------------------------


class PeerProblem:
    """What the peer trains on, produced by dnewton's own code on one rank.

    ``X`` (l, n_0) and ``labels`` (l,) are the training set after dnewton's reading,
    scaling and centring (``X_test``, ``labels_test`` the test set, or None);
    ``theta`` is dnewton's initial parameter vector of a one-rank problem, whose
    order is W^1 (row-major), b^1, W^2, b^2, ... (`parallel.layout.ParameterLayout`).
    """

    def __init__(self, train_raw, test_raw, config, seed):
        from mpi4py import MPI

        from dnewton.app.problem import Problem

        # The peer computes in float64 (above): its data and start are float64 too.
        problem = Problem.build(MPI.COMM_SELF, train_raw, test_raw,
                                replace(config, dtype="float64"))
        try:
            if problem.layout.partitions != (1,) * len(problem.layout.widths):
                raise AssertionError("a one-rank problem is not split")
            self.widths = problem.layout.widths
            data = problem.objective.data
            self.X, self.labels = data.features[0], data.labels
            self.X_test = self.labels_test = None
            if problem.test is not None:
                self.X_test, self.labels_test = problem.test.features[0], problem.test.labels
            self.theta = problem.network.initial_parameters(seed)
        finally:
            problem.close()

    @property
    def n_instances(self):
        return len(self.labels)


# -- the network and the objective in PyTorch ---------------------------------------------


class TorchNetwork:
    """A fully connected network whose parameters are one flat float64 tensor."""

    def __init__(self, torch, widths, activation):
        self.torch = torch
        self.shapes = [(widths[m - 1], widths[m]) for m in range(1, len(widths))]
        self.activation = {"relu": torch.relu, "sigmoid": torch.sigmoid,
                           "tanh": torch.tanh}[activation]

    def layers(self, theta):
        """(W^m, b^m) views of `theta`, m = 1..L."""
        offset, layers = 0, []
        for rows, cols in self.shapes:
            W = theta[offset : offset + rows * cols].view(rows, cols)
            offset += rows * cols
            layers.append((W, theta[offset : offset + cols]))
            offset += cols
        return layers

    def outputs(self, theta, X):
        """z^L of the instances X: hidden layers sigma(z W + b), a linear output layer."""
        z, layers = X, self.layers(theta)
        for W, b in layers[:-1]:
            z = self.activation(self.torch.addmm(b, z, W))
        W, b = layers[-1]
        return self.torch.addmm(b, z, W)


class SquaredLoss:
    """||z - onehot(y)||^2 per instance; B = 2 I."""

    def __init__(self, torch, labels, n_classes):
        self.targets = torch.nn.functional.one_hot(labels, n_classes).to(torch.float64)

    def total(self, z, rows=slice(None)):
        return ((z - self.targets[rows]) ** 2).sum()

    def curvature(self, z):
        return None

    def weigh(self, curvature, u):
        return 2.0 * u


class SoftmaxLoss:
    """Cross-entropy of softmax(z); B = diag(p) - p p'."""

    def __init__(self, torch, labels, n_classes):
        self.torch, self.labels = torch, labels

    def total(self, z, rows=slice(None)):
        return self.torch.nn.functional.cross_entropy(z, self.labels[rows], reduction="sum")

    def curvature(self, z):
        return self.torch.softmax(z.detach(), dim=1)

    def weigh(self, p, u):
        return p * (u - (p * u).sum(dim=1, keepdim=True))


LOSSES = {"squared": SquaredLoss, "softmax": SoftmaxLoss}


# -- the Newton method -------------------------------------------------------------------


def conjugate_gradient(apply, b, tol, max_iterations):
    """CG from x = 0 on A x = b, as dnewton's (solvers/cg.py): stops when ||r|| <= tol,
    after `max_iterations`, or at a curvature p'Ap that is not positive and finite.

    ``apply(v) -> (A v, v'A v)``. Returns (x, A x by the recurrence, iterations, reason).
    """
    x, Ax = b.new_zeros(b.shape), b.new_zeros(b.shape)
    r, p = b.clone(), b.clone()
    rr = float(r @ r)
    if math.sqrt(rr) <= tol:
        return x, Ax, 0, "converged"
    iterations = 0
    while True:
        Ap, pAp = apply(p)
        if not math.isfinite(pAp):
            return x, Ax, iterations, "not_finite"
        if pAp <= 0.0:
            return x, Ax, iterations, "indefinite"
        step = rr / pAp
        x.add_(p, alpha=step)
        Ax.add_(Ap, alpha=step)
        r.sub_(Ap, alpha=step)
        rr_next = float(r @ r)
        iterations += 1
        if math.sqrt(rr_next) <= tol:
            return x, Ax, iterations, "converged"
        if iterations >= max_iterations:
            return x, Ax, iterations, "iteration_limit"
        p.mul_(rr_next / rr).add_(r)
        rr = rr_next


class PeerNewton:
    """dnewton's subsampled Gauss-Newton iteration on a `PeerProblem`, in PyTorch.

    `step` mirrors ``NewtonSolver.step``: draw S, CG on (G_S + lambda I) d = -g,
    backtracking, rho and the damping update, f and g at the new point. Records are
    dicts with the keys of dnewton's log.
    """

    def __init__(self, torch, problem, config, options):
        options.check()
        self.torch, self.options = torch, options
        from dnewton.constants import Stream, random_stream

        self.subsets = random_stream(options.seed, Stream.GAUSS_NEWTON_SUBSETS)
        self.n = problem.n_instances
        self.n_subset = options.subset_size(self.n)
        self.regularization = 1.0 / (config.C * self.n)
        self.network = TorchNetwork(torch, problem.widths, config.activation)
        self.X = torch.from_numpy(np.ascontiguousarray(problem.X, dtype=np.float64))
        labels = torch.from_numpy(problem.labels.astype(np.int64))
        self.loss = LOSSES[config.loss](torch, labels, problem.widths[-1])
        self.damping = options.damping
        self.iteration = 0
        self.done = options.iterations <= 0
        self.message = "reached the iteration limit" if self.done else None
        self.theta, self.f_graph = self.evaluate(torch.from_numpy(problem.theta.copy()))
        self.f = float(self.f_graph.detach())
        self.g = self.gradient(self.theta, self.f_graph)
        self.gnorm = float(self.torch.linalg.vector_norm(self.g))

    def start_record(self):
        return {"iter": 0, "f": self.f, "gnorm": self.gnorm}

    def evaluate(self, theta):
        """(theta as a leaf, f(theta) with its autograd graph, for the gradient)."""
        theta = theta.detach().requires_grad_()
        z = self.network.outputs(theta, self.X)
        f = (theta @ theta) * (0.5 * self.regularization) + self.loss.total(z) / self.n
        return theta, f

    def gradient(self, theta, f):
        (g,) = self.torch.autograd.grad(f, theta)
        return g

    def gauss_newton(self, subset):
        """v -> ((G_S + lambda I) v, v'(G_S + lambda I) v) at the current theta."""
        torch, network = self.torch, self.network
        XS = self.X[subset]

        def outputs_on_subset(theta):
            return network.outputs(theta, XS)

        theta = self.theta.detach()
        zS, pull_back = torch.func.vjp(outputs_on_subset, theta)
        curvature = self.loss.curvature(zS)
        shift = self.regularization + self.damping

        def apply(v):
            _, Jv = torch.func.jvp(outputs_on_subset, (theta,), (v,))
            Q = self.loss.weigh(curvature, Jv)
            (JtQ,) = pull_back(Q)
            Av = JtQ.div_(self.n_subset).add_(v, alpha=shift)
            vAv = float((Jv * Q).sum()) / self.n_subset + shift * float(v @ v)
            return Av, vAv

        return apply

    def step(self):
        options, torch = self.options, self.torch
        self.iteration = k = self.iteration + 1
        subset = torch.from_numpy(np.sort(self.subsets.choice(self.n, self.n_subset,
                                                              replace=False)))
        d, Ad, cg_iters, cg_reason = conjugate_gradient(
            self.gauss_newton(subset), -self.g, options.xi * self.gnorm, options.cg_max)
        record = {"iter": k, "f": self.f, "gnorm": self.gnorm, "cg_iters": cg_iters,
                  "cg_reason": cg_reason, "alpha": None, "line_search_trials": None,
                  "line_search_reason": None, "lambda": self.damping, "rho": None}
        if cg_reason in ("indefinite", "not_finite"):
            return self._stop(f"iteration {k}: CG curvature {cg_reason}", None)
        gd, dd, dAd = float(self.g @ d), float(d @ d), float(d @ Ad)
        if not gd < 0:
            record.update(alpha=0.0, line_search_trials=0, line_search_reason="not_descent")
            return self._stop("the CG direction is not a descent direction", record)
        alpha, theta0 = 1.0, self.theta.detach()
        for trial in range(1, options.max_halvings + 2):
            theta, f_graph = self.evaluate(theta0 + alpha * d)
            f_new = float(f_graph.detach())
            if f_new <= self.f + options.eta * alpha * gd:  # False for NaN: keep halving
                break
            alpha /= 2.0
        else:
            record.update(alpha=0.0, line_search_trials=options.max_halvings + 1,
                          line_search_reason="too_many_halvings")
            return self._stop("the line search found no sufficient decrease", record)
        predicted = alpha * gd + 0.5 * alpha**2 * (dAd - self.damping * dd)
        rho = (f_new - self.f) / predicted
        if rho < RHO_POOR:
            self.damping *= options.boost
        elif rho >= RHO_GOOD:
            self.damping *= options.drop
        g = self.gradient(theta, f_graph)
        gnorm = float(torch.linalg.vector_norm(g))
        record.update(alpha=alpha, line_search_trials=trial,
                      line_search_reason="sufficient_decrease", rho=rho)
        if not (math.isfinite(f_new) and math.isfinite(gnorm)):
            return self._stop(f"iteration {k}: f = {f_new}, ||g|| = {gnorm}", None)
        self.theta, self.f, self.g, self.gnorm = theta, f_new, g, gnorm
        record.update(f=f_new, gnorm=gnorm)
        if k >= options.iterations:
            self._stop("reached the iteration limit", None)
        return record

    def _stop(self, message, record):
        self.done, self.message = True, message
        return record

    def accuracy(self, X, labels):
        with self.torch.no_grad():
            z = self.network.outputs(self.theta.detach(), self.torch.from_numpy(X))
        return float((z.argmax(dim=1).numpy() == labels).mean())


def run_peer(train_raw, test_raw, config, options, threads, on_record=None):
    """Train with the peer; returns (records, why it stopped).

    The records are dicts in dnewton's log format, iteration 0 first.

    `train_raw`, `test_raw` are `dnewton.io.data.RawData` (test may be None);
    `config` a `ModelConfig` and `options` `NewtonOptions`, as for ``dnewton.train``.
    Each record's ``iteration_time`` is the wall time of that iteration; the test
    accuracy is measured outside it.
    """
    torch = import_torch()
    torch.set_num_threads(threads)
    problem = PeerProblem(train_raw, test_raw, config, options.seed)
    clock, records = 0.0, []
    began = time.perf_counter()
    peer = PeerNewton(torch, problem, config, options)
    record, seconds = peer.start_record(), time.perf_counter() - began
    while record is not None:
        clock += seconds
        record.update(time=clock, iteration_time=seconds, test_accuracy=None)
        if problem.X_test is not None:
            record["test_accuracy"] = peer.accuracy(problem.X_test, problem.labels_test)
        records.append(record)
        if on_record is not None:
            on_record(record)
        if peer.done:
            break
        began = time.perf_counter()
        record = peer.step()
        seconds = time.perf_counter() - began
    return records, peer.message


# -- timings ------------------------------------------------------------------------------


def steady_times(records):
    """Seconds of iterations 2.. of one run: iteration 1 is the warm-up."""
    return [r["iteration_time"] for r in records if r["iter"] >= 2]


class Timing:
    """Seconds per iteration of one kind of run over its repetitions: iteration 1
    (warm-up) apart, the median and spread of iterations 2.. pooled."""

    def __init__(self, label):
        self.label = label
        self.warm_up, self.steady, self.final_f, self.runs = [], [], [], []

    def add(self, records):
        self.warm_up += [r["iteration_time"] for r in records if r["iter"] == 1]
        self.steady += steady_times(records)
        self.final_f.append(records[-1]["f"])
        self.runs.append(records)

    @property
    def median(self):
        return float(np.median(self.steady)) if self.steady else math.nan

    def spread(self):
        if not self.steady:
            return "-", "-"
        q1, q3 = np.percentile(self.steady, [25, 75])
        return (f"{q1:.4f}-{q3:.4f}", f"{min(self.steady):.4f}-{max(self.steady):.4f}")


def summary(timing):
    iqr, span = timing.spread()
    warm = f"{np.median(timing.warm_up):.4f} s" if timing.warm_up else "-"
    return (f"{timing.label}: {timing.median:.4f} s/iteration, median of {len(timing.steady)} "
            f"(IQR {iqr}, min-max {span}); iteration 1 (warm-up) {warm}")


def table(timings):
    peer = timings[0].median
    rows = ["| run | reps | s/iter, median | IQR | min-max | warm-up s | final f "
            "| time / peer's |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in timings:
        iqr, span = t.spread()
        warm = f"{np.median(t.warm_up):.4f}" if t.warm_up else "-"
        rows.append(f"| {t.label} | {len(t.runs)} | {t.median:.4f} | {iqr} | {span} | {warm} "
                    f"| {np.median(t.final_f):.6g} | {t.median / peer:.2f} |")
    return "\n".join(rows)


def run_median(records):
    """Median seconds per iteration of one run, iteration 1 (warm-up) apart."""
    return float(np.median(steady_times(records)))


def _median_range(ratios):
    return float(np.median(ratios)), min(ratios), max(ratios)


def paired(numerator, denominator):
    """The ratio of two kinds of run, taken repetition by repetition (the two ran one
    after the other, on a machine in about the same state): median, min, max."""
    return _median_range([run_median(a) / run_median(b)
                          for a, b in zip(numerator.runs, denominator.runs)])


def paired_bound(timing, rates):
    """Each repetition's time over its own FLOP bound (FLOPs over the DGEMM rate measured
    right after that repetition's runs): median, min, max."""
    return _median_range([run_median(run) * rate * 1e9 / training_flops(run)
                          for run, rate in zip(timing.runs, rates)])


def agreement(peer_records, dnewton_records, tolerance=1e-6):
    """A line on how closely the peer's f follows dnewton's, iteration by iteration."""
    pairs = [(a["f"], b["f"]) for a, b in zip(peer_records, dnewton_records)]
    relative = [abs(a - b) / abs(b) for a, b in pairs]
    within = next((k for k, rel in enumerate(relative) if not rel <= tolerance), len(pairs))
    return (f"f of the peer against dnewton on 1 rank, iterations 0-{len(pairs) - 1}: "
            f"relative difference at most {max(relative[:6]):.1e} in 0-{min(5, len(pairs) - 1)}"
            f", {max(relative):.1e} in all; within {tolerance:g} up to iteration {within - 1}; "
            f"last f: peer {pairs[-1][0]:.10g}, dnewton {pairs[-1][1]:.10g}")


# -- the command line ---------------------------------------------------------------------


def int_list(text):
    return tuple(int(v) for v in text.split(","))


def parse(argv):
    from dnewton.app.problem import PAPER_OBJECTIVE, ModelConfig
    from dnewton.model.activations import HIDDEN_ACTIVATIONS
    from dnewton.solvers.newton import NewtonOptions

    model, newton = ModelConfig(), NewtonOptions()
    parser = argparse.ArgumentParser(
        description="The PyTorch peer of dnewton's Newton method (float64, one process); "
        "with --compare, dnewton on the same cores alongside. Defaults: the reference "
        "problem (the MNIST subset, 784-300-300-10, 30 iterations).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train", default=str(REFERENCE_TRAIN), help="training set")
    parser.add_argument("--test", default=str(REFERENCE_TEST),
                        help="test set ('' for none); its accuracy is measured outside "
                        "the timing")
    parser.add_argument("--hidden", type=int_list, default=(300, 300), metavar="N1,N2,...")
    parser.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=model.activation)
    # The reference problem is the paper's objective, not the package's defaults.
    parser.add_argument("--loss", choices=list(LOSSES), default=PAPER_OBJECTIVE["loss"])
    parser.add_argument("-C", type=float, default=PAPER_OBJECTIVE["C"], dest="C")
    parser.add_argument("--feature-scale", type=float, default=255.0, metavar="S")
    parser.add_argument("--center", action=argparse.BooleanOptionalAction, default=True,
                        help="subtract the training mean of each feature")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--gn-ratio", type=float, default=newton.gn_ratio, metavar="R")
    parser.add_argument("--gn-size", type=int, default=None, metavar="N")
    parser.add_argument("--cg-max", type=int, default=newton.cg_max, metavar="N")
    parser.add_argument("--xi", type=float, default=newton.xi)
    parser.add_argument("--lambda", type=float, default=newton.damping, dest="damping")
    parser.add_argument("--seed", type=int, default=newton.seed)
    parser.add_argument("--threads", type=int, default=min(2, available_cores()),
                        help="the peer's threads; with --compare also dnewton's ranks (one "
                        "thread each) and the threads of its one-rank run")
    parser.add_argument("--log", help="write the peer's records (dnewton's log format)")
    parser.add_argument("--quiet", action="store_true", help="no line per iteration")
    parser.add_argument("--compare", action="store_true",
                        help="also run dnewton (T ranks x 1 thread, 1 rank x T threads), "
                        "every run a fresh process, and print a table")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --compare: repetitions, the runs alternating")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="with --compare: keep every run's log in DIR")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per run, at most")
    args = parser.parse_args(argv)
    if not 1 <= args.threads <= available_cores():
        parser.error(f"--threads {args.threads}: this machine offers {available_cores()} "
                     "core(s); never more threads or ranks than cores")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def settings(args):
    from dnewton.app.problem import ModelConfig
    from dnewton.solvers.newton import NewtonOptions

    config = ModelConfig(hidden=args.hidden, activation=args.activation, loss=args.loss,
                         C=args.C, feature_scale=args.feature_scale, center=args.center,
                         dtype="float64")
    options = NewtonOptions(gn_ratio=args.gn_ratio, gn_size=args.gn_size,
                            iterations=args.iterations, cg_max=args.cg_max, xi=args.xi,
                            damping=args.damping, seed=args.seed)
    return config, options


def problem_flags(args):
    """The flags that define the problem, but the data, as both dnewton and the peer take
    them (the peer's --center is on by default, dnewton's off: both get it spelled out)."""
    flags = ["--hidden", ",".join(map(str, args.hidden)), "--activation", args.activation,
             "--loss", args.loss, "-C", repr(args.C), "--feature-scale",
             repr(args.feature_scale), "--iterations", str(args.iterations),
             "--cg-max", str(args.cg_max), "--xi", repr(args.xi),
             "--lambda", repr(args.damping), "--seed", str(args.seed)]
    flags += ["--gn-size", str(args.gn_size)] if args.gn_size else ["--gn-ratio",
                                                                    repr(args.gn_ratio)]
    return flags


def print_record(record):
    rho = "-" if record.get("rho") is None else f"{record['rho']:.3f}"
    accuracy = record.get("test_accuracy")
    print(f"iter {record['iter']:3d}  f {record['f']:.10e}  |g| {record['gnorm']:.3e}  "
          f"CG {record.get('cg_iters') or 0:3d}  alpha {record.get('alpha') or 0:.3g}  "
          f"rho {rho}  {record['iteration_time']:.4f} s"
          + ("" if accuracy is None else f"  test {100 * accuracy:.2f}%"), flush=True)


def run_alone(args):
    """The peer in this process: per-iteration lines and the timing summary."""
    from dnewton.io.data import read_dataset

    train_raw, _ = read_dataset(args.train)
    test_raw = read_dataset(args.test, n_features=train_raw.n_features)[0] if args.test else None
    config, options = settings(args)
    records, message = run_peer(train_raw, test_raw, config, options, args.threads,
                                None if args.quiet else print_record)
    if args.log:
        with open(args.log, "w", encoding="utf-8") as log:
            log.writelines(json.dumps(record) + "\n" for record in records)
    timing = Timing(f"PyTorch peer, 1 process x {args.threads} thread(s)")
    timing.add(records)
    if not args.quiet:
        print(f"peer: stopped after iteration {records[-1]['iter']}: {message}; "
              f"f = {records[-1]['f']:.10e}")
    print(summary(timing))


def compare_runs(args):
    """(label, command, environment) of every run of one repetition, the peer first."""
    launcher, threads = mpiexec(), args.threads
    if launcher is None:
        raise SystemExit("peers: --compare needs mpiexec (pip install mpich)")
    flags = problem_flags(args)

    def environment(n):
        names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        return dict(os.environ, **dict.fromkeys(names, str(n)),
                    MPIEXEC_TIMEOUT=str(args.timeout))

    def dnewton(ranks, per_rank, dtype="float64"):
        return [launcher, "-n", str(ranks), sys.executable, "-m", "dnewton", "train",
                args.train, *(["--test", args.test] if args.test else []), *flags,
                *(["--center"] if args.center else []), "--blas-threads", str(per_rank),
                "--dtype", dtype, "--quiet"]

    runs = [(f"PyTorch peer, 1 process x {threads} thread(s)",
             [sys.executable, str(Path(__file__).resolve()), "--train", args.train,
              "--test", args.test, *flags, "--center" if args.center else "--no-center",
              "--threads", str(threads), "--quiet"], environment(threads))]
    if threads > 1:
        runs.append((f"dnewton, {threads} ranks x 1 thread", dnewton(threads, 1),
                     environment(1)))
        runs.append((f"dnewton, {threads} ranks x 1 thread, float32",
                     dnewton(threads, 1, "float32"), environment(1)))
        runs.append(("dnewton, 1 rank x 1 thread", dnewton(1, 1), environment(1)))
    runs.append((f"dnewton, 1 rank x {threads} thread(s)", dnewton(1, threads),
                 environment(threads)))
    return runs


def run_compare(args):
    """Every run as a fresh process, alternating over the repetitions; then the table."""
    import dnewton._kernels  # noqa: F401 -- build the editable install before mpiexec
    from dnewton.io.run_log import read_log

    runs = compare_runs(args)
    timings = [Timing(label) for label, _, _ in runs]
    rates = []
    folder = args.keep_logs or Path(tempfile.mkdtemp(prefix="dnewton-peers-"))
    folder.mkdir(parents=True, exist_ok=True)
    for repetition in range(args.repeat):
        for index, ((label, command, env), timing) in enumerate(zip(runs, timings)):
            log = folder / f"run{index}-rep{repetition}.jsonl"
            command = [*command, "--log", str(log)]
            proc = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=args.timeout + 60)
            if proc.returncode != 0:
                raise SystemExit(f"peers: {shlex.join(command)} failed ({proc.returncode}):"
                                 f"\n{proc.stdout}\n{proc.stderr}")
            timing.add(read_log(log))
            print(f"repetition {repetition + 1}/{args.repeat}: {label}: "
                  f"{timing.median:.4f} s/iteration so far", flush=True)
        rates.append(gemm_rate(args.threads))
    if not args.keep_logs:
        shutil.rmtree(folder)
    peer, one_rank = timings[0].runs[0], timings[-1].runs[0]
    if not args.quiet:
        print("\nThe peer's first run:")
        for record in peer:
            print_record(record)
    print()
    print(agreement(peer, one_rank))
    print()
    print(f"Seconds per Newton iteration (training time, test accuracy excluded), "
          f"iterations 2-{args.iterations} of {args.repeat} repetition(s) pooled; "
          f"{available_cores()} core(s) available; the last column is each run's median "
          "over the peer's (below 1: faster than the peer)")
    print(table(timings))
    rate = float(np.median(rates))
    print(f"\nFLOP bound: {args.threads}-thread DGEMM {rate:.1f} GFLOP/s (2000^3, median "
          f"of one measurement per repetition: {', '.join(f'{r:.1f}' for r in rates)})")
    for timing in timings[1:]:
        flops = training_flops(timing.runs[0])
        bound = flops / (rate * 1e9)
        print(f"{timing.label}: {flops / 1e9:.2f} GFLOP per iteration, bound {bound:.4f} s; "
              f"time / bound {timing.median / bound:.2f}")
    # The pooled medians above mix repetitions run minutes apart; ratios taken within
    # each repetition are the figures to compare.
    comparisons = [(timing, timings[0]) for timing in timings[1:]]
    if args.threads > 1:  # float32 against float64; the second thread against one
        comparisons += [(timings[2], timings[1]), (timings[4], timings[3])]
    lines = [(f"{a.label} / {b.label}", paired(a, b)) for a, b in comparisons]
    lines += [(f"{t.label} / its FLOP bound", paired_bound(t, rates)) for t in timings[1:]]
    print(f"\nRatios within each repetition, median (min-max) over {args.repeat}:")
    for what, (mid, low, high) in lines:
        print(f"{what}: {mid:.2f} ({low:.2f}-{high:.2f})")


def main(argv=None):
    args = parse(argv)
    if args.compare:
        run_compare(args)
    else:
        run_alone(args)


if __name__ == "__main__":
    main()
