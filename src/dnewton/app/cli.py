"""The ``dnewton`` command line.

    mpiexec -n K dnewton train TRAIN [--test TEST] [--model FILE] [options]
    [mpiexec -n K] dnewton predict MODEL DATA [--output FILE] [--proba]
    dnewton plot RUN.jsonl [--vs OTHER.jsonl] -o FIGURE.png
    dnewton datasets
    dnewton plan (TRAIN | --instances L --features N --classes K) --ranks R --hidden H1,...
    [mpiexec -n 2] dnewton calibrate [--output FILE]

This module parses and prints; the training itself is `app.training.train`,
which the Python API calls too. Every rank parses the same command line. Errors
that one rank meets are agreed on by all (`errors.agreed`), and anything
unexpected aborts the whole job, so a failure never leaves ranks waiting in a
collective. Library messages name parameters (``damping``); printed here, they
name the flags (``--lambda``). An option that does not apply to the run asked for
(``--epochs`` with Newton) is refused by name: `APPLIES` says where each applies.
Any command line may come from files: ``dnewton @run.args`` (`Parser`).
"""

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..constants import BATCH_SIZE, CHECKPOINT_INTERVAL, PRECISIONS
from ..errors import NumericalError, ParameterError, alike_everywhere
from ..io.data import DATASETS
from ..model.activations import HIDDEN_ACTIVATIONS
from ..model.gauss_newton import JACOBIAN_MODES
from ..model.losses import LOSSES, make_loss
from ..solvers.adam import AdamOptions
from ..solvers.newton import (
    STOCHASTIC,
    STOCHASTIC_FROM,
    SUBSET_FLOOR,
    NewtonOptions,
    recommended,
    subset_floor,
)
from ..solvers.sgd import SGDOptions
from .early_stopping import EarlyStopping
from .problem import PAPER_DTYPE, PAPER_OBJECTIVE, ModelConfig
from .stop_requests import EXIT_NOTHING_SAVED, EXIT_RESUMABLE, parse_duration, release_from_start

_DEFAULTS = NewtonOptions()
_SGD = SGDOptions()
_ADAM = AdamOptions()
_EARLY = EarlyStopping()
_MODEL = ModelConfig()


def _int_list(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {text!r}"
        ) from None
    return values


def _float_list(text):
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def _C(text):
    """-C: a number, or 'auto' (chosen by a held-out split)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def _sample_size(text):
    """--sample-size: a number of instances, 'all' (every instance: None), or 'auto'
    (the default: `newton.recommended` decides)."""
    if text.strip().lower() in ("all", "auto"):
        return None if text.strip().lower() == "all" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or all, got {text!r}") from None


def _hidden(text):
    """--hidden: widths "N1,N2,..."; "" or "0" is no hidden layer (a linear model)."""
    if text.strip() in ("", "0"):
        return ()
    return _int_list(text)


class Parser(argparse.ArgumentParser):
    """argparse that reads ``@FILE`` arguments as shell words (quotes work, ``#``
    starts a comment, several arguments may share a line)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("fromfile_prefix_chars", "@")
        super().__init__(*args, **kwargs)

    def convert_arg_line_to_args(self, arg_line):
        return shlex.split(arg_line, comments=True)


# -- options that apply to some runs only ------------------------------------------------


@dataclass(frozen=True)
class Applies:
    """Where an option applies: `holds(args)`, and `where(args)`, the end of the
    refusal's sentence (a template naming parameters as ``{name}``)."""

    holds: Callable
    where: Callable


def _solvers(*names):
    return Applies(lambda args: args.solver in names,
                   lambda args: f"to {{solver}} {' or '.join(names)} only, not to {args.solver}")


def _with(parameter, holds=None):
    holds = holds or (lambda args: bool(getattr(args, parameter)))
    return Applies(holds, lambda args: f"only with {{{parameter}}}")


NEWTON = _solvers("newton")
MINI_BATCH = _solvers("sgd", "adam")
SGD = _solvers("sgd")
ADAM = _solvers("adam")
C_AUTO = Applies(lambda args: args.C == "auto", lambda args: "only with {C} auto")
DIAGONAL = _with("diagonal")
SAMPLE = _with("sample_size", lambda args: args.sample_size is not None)  # not 'all'
EARLY_STOPPING = _with("early_stopping")
CHECKPOINT = _with("checkpoint")
OUTPUT = _with("output")

# option (its dest) -> where it applies, checked in order. Any other option applies
# to every run. A new option that applies to some runs only is one more line here.
APPLIES = {
    "gn_ratio": (NEWTON,),
    "gn_size": (NEWTON,),
    "gn_min": (NEWTON,),
    "sample_size": (NEWTON,),
    "sample_growth": (NEWTON, SAMPLE),
    "average": (NEWTON,),
    "jacobian": (NEWTON,),
    "diagonal": (NEWTON,),
    "sync_fraction": (NEWTON, DIAGONAL),
    "iterations": (NEWTON,),
    "cg_max": (NEWTON,),
    "xi": (NEWTON,),
    "damping": (NEWTON,),
    "learning_rate": (MINI_BATCH,),
    "mini_batch": (MINI_BATCH,),
    "epochs": (MINI_BATCH,),
    "lr_decay": (MINI_BATCH,),
    "momentum": (SGD,),
    "beta1": (ADAM,),
    "beta2": (ADAM,),
    "eps": (ADAM,),
    "C_grid": (C_AUTO,),
    "holdout": (C_AUTO,),
    "search_budget": (C_AUTO,),
    "validation_fraction": (EARLY_STOPPING,),
    "n_iter_no_change": (EARLY_STOPPING,),
    "tol": (EARLY_STOPPING,),
    "checkpoint_every": (CHECKPOINT,),
    "proba": (OUTPUT,),
}


def given_options(argv):
    """The dests of the options that `argv` sets, whatever their values (a second
    parse in which no option has a default)."""
    parser = build_parser()
    for command in _parsers(parser):
        for action in command._actions:
            if action.option_strings:
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _parsers(parser):
    """`parser` and every subcommand's."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from _parsers(command)


def refuse_inapplicable(args, given):
    """Raise ParameterError naming the first option in `given` (dests set on the
    command line) that does not apply to the run `args` describes (`APPLIES`)."""
    for parameter, conditions in APPLIES.items():
        if parameter in given:
            for condition in conditions:
                if not condition.holds(args):
                    raise ParameterError(f"{{{parameter}}} applies {condition.where(args)}")


class _Renamed(argparse.Action):
    """An option under its former name: refused, naming what replaced it."""

    def __init__(self, option_strings, dest, message, **kwargs):
        super().__init__(option_strings, "_renamed", nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS, **kwargs)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} {self.message}")


_PATH_ITERATIONS_RENAMED = ("is replaced by --search-budget (-C auto's iterations beyond the "
                            "run's, as a fraction of --iterations)")
_BATCH_SIZE_RENAMED = ("is now --chunk-size (instances per pass through memory); the "
                       "mini-batch of --solver sgd and adam is --mini-batch")


def _exit_statuses(*lines):
    """The epilog that lists a subcommand's exit statuses."""
    return "Exit status: " + "; ".join((*lines, "1 internal error")) + "."


_BAD_INPUT = "2 bad input or options"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one (not for None or off)."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def _duration(text):
    try:
        return parse_duration(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(exc.render(lambda p: "--time-limit")) from None


def build_parser():
    """The command line's parser: one subparser per command, each built by its
    ``_add_COMMAND`` (train's options by group)."""
    parser = Parser(
        prog="dnewton",
        description=(
            "Train fully connected neural networks with a distributed subsampled "
            "Gauss-Newton method, the model split into blocks over MPI ranks."
        ),
        epilog="Run under MPI with: mpiexec -n K dnewton train ... Arguments may come "
        "from a file: dnewton @run.args (shell words, # comments).",
    )
    parser.add_argument("--version", action="version", version=f"dnewton {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_train(commands)
    _add_predict(commands)
    _add_plot(commands)
    _add_datasets(commands)
    _add_convert(commands)
    _add_plan(commands)
    _add_calibrate(commands)
    return parser


def _add_train(commands):
    train = commands.add_parser(
        "train",
        help="train a network with the distributed Newton method",
        description=(
            "Train a network on TRAIN with Newton-CG, a subsampled Gauss-Newton matrix, "
            "Levenberg-Marquardt damping and a backtracking line search. Rank 0 prints "
            "one line per iteration: f, ||g||, CG iterations, step size alpha, damping "
            "lambda, the ratio rho of actual to predicted reduction, the iteration's "
            "wall time and the test accuracy."
        ),
        formatter_class=_HelpFormatter,
        epilog=_exit_statuses(
            "0 finished (the line search could not decrease f any more counts as finished)",
            f"{_BAD_INPUT}, or an option that does not apply to the chosen --solver or mode",
            "3 numerical failure (the last good model is still saved)",
            f"{EXIT_RESUMABLE} stopped early by SIGTERM, SIGUSR1, SIGINT or --time-limit, "
            "with a checkpoint to --resume from",
            f"{EXIT_NOTHING_SAVED} stopped so during the -C auto search, nothing to resume "
            "from"),
    )
    train.add_argument(
        "train",
        metavar="TRAIN",
        help="LIBSVM file (1-based indices; .gz/.bz2 read compressed), a .npz with "
        f"arrays X and y, or an embedded set: {', '.join(DATASETS)}",
    )
    train.add_argument(
        "--test",
        metavar="FILE",
        help="test file (LIBSVM or .npz); accuracy is reported each iteration "
        "(default: the embedded set's test part, if TRAIN names one)",
    )
    _add_model_options(train)
    _add_data_options(train)
    _add_optimizer_options(train)
    _add_minibatch_options(train)
    _add_early_stopping_options(train)
    _add_output_options(train)
    train.set_defaults(run=run_train)


def _add_model_options(train):
    """train's model options: the network, its layout and precision, the seed."""
    model = train.add_argument_group("model")
    model.add_argument(
        "--hidden", type=_hidden, default=(300, 300), metavar="N1,N2,...",
        help='widths of the hidden layers; "" or 0: none (a linear model)',
    )
    model.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=_MODEL.activation,
                       help="activation of the hidden layers (the output layer is linear)")
    model.add_argument(
        "--loss", choices=list(LOSSES), default=None,
        help=f"softmax: cross-entropy; squared: ||z - onehot(y)||^2 (the paper's) "
        f"(default: {_MODEL.loss}; {PAPER_OBJECTIVE['loss']} with --paper)",
    )
    model.add_argument(
        "--paper", action="store_true",
        help=f"the paper's objective and method, for reproducing its runs: --loss "
        f"{PAPER_OBJECTIVE['loss']} -C {PAPER_OBJECTIVE['C']:g} --dtype {PAPER_DTYPE} unless "
        f"given, every instance in each iteration and S = --gn-ratio of them (the defaults, "
        f"--loss {_MODEL.loss} -C {_MODEL.C:g}, fit real data better: "
        f"docs/benchmarks.md, 'Default settings')",
    )
    model.add_argument(
        "--partitions", type=_int_list, default=None, metavar="P0,P1,...,PL",
        help="groups per layer, inputs to outputs; the weights between layers m-1 and "
        "m form P_{m-1} x P_m blocks spread over the ranks (need at least as many "
        "blocks as ranks). Default: the planner's fastest layout for this network, data "
        "and rank count (dnewton plan; the start-up output names it)",
    )
    model.add_argument(
        "--assignment", choices=("balanced", "aligned"), default=None,
        help="with --partitions: how blocks go to ranks; balanced: largest first to the "
        "least-loaded rank; aligned: block (m, a, b) to rank (a P_m + b) mod ranks "
        "(default: the planner's, for a nominal iteration of one batch)",
    )
    model.add_argument(
        "--machine", metavar="FILE", default=None,
        help="machine description (from dnewton calibrate) the planner predicts with: "
        "the layout, or the assignment of --partitions (default: a typical cluster node, "
        "docs/scaling.md)",
    )
    model.add_argument(
        "--replicas", type=int, default=_MODEL.replicas, metavar="R",
        help="data x model parallelism: the ranks form R copies of the layout (R must "
        "divide the rank count; --partitions then describes one copy), each working on "
        "1/R of the instances and of each Gauss-Newton subset; f, the gradient and "
        "every Gauss-Newton product are summed over the copies (bytes: phase replicas). "
        "Default: the planner's choice without --partitions (Newton), else 1",
    )
    model.add_argument(
        "--dtype", choices=PRECISIONS, default=None,
        help="precision of the parameters, data and passes; float32 halves memory and "
        "data moved and runs faster, while f, dot products and CG's scalars are summed "
        f"in float64 either way (the model file records it). Default: {_MODEL.dtype}; "
        f"{PAPER_DTYPE} with --paper",
    )
    model.add_argument(
        "--jacobian", choices=JACOBIAN_MODES, default=_MODEL.jacobian,
        help="stored: build the Gauss-Newton subset's Jacobian once per iteration and "
        "stream it in every CG iteration (memory |S| n_L widths); recomputed: a tangent "
        "and a backward pass in every CG iteration instead (memory |S| widths; pays "
        "with many classes or little memory). Default: the planner's choice without "
        "--partitions, else stored",
    )
    model.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                       help="seed of the initial weights, the subsets and the mini-batches")


def _add_data_options(train):
    """train's data options: features, cache, preprocessing, passes through memory."""
    data = train.add_argument_group("data")
    data.add_argument("--features", type=int, default=None, metavar="N",
                      help="n_0, the number of features (default: the largest index in "
                      "TRAIN); a training index beyond N is an error, a --test file's "
                      "columns beyond N are dropped with a warning")
    data.add_argument("--data-cache", metavar="DIR", default=None,
                      help="keep a binary copy of every LIBSVM file read in DIR and read "
                      "it from there while the file's bytes are unchanged (a fingerprint): "
                      "seconds instead of a parse; a DIR that cannot be written is skipped")
    data.add_argument("--feature-scale", type=float, default=1.0, metavar="S",
                      help="divide every feature by S (255 for raw pixels)")
    data.add_argument("--center", action="store_true",
                      help="subtract the training mean of each feature (from the test set too)")
    data.add_argument("--standardize", action="store_true",
                      help="after --feature-scale, subtract the training mean of each feature "
                      "and divide by its training standard deviation (implies --center; "
                      "constant features are only centred); predict applies the same")
    data.add_argument("--chunk-size", type=int, default=BATCH_SIZE, dest="batch_size",
                      metavar="N", help="instances per pass through memory: the forward "
                      "and backward passes over all instances go in chunks of N (bounds "
                      "memory; not the mini-batch, which is --mini-batch)")
    data.add_argument("--batch-size", action=_Renamed, message=_BATCH_SIZE_RENAMED)
    data.add_argument("--pipeline", type=int, default=_MODEL.pipeline, metavar="D",
                      help="pipeline the passes over all instances: keep D batches in "
                      "flight, each batch's sums travelling (non-blocking) while the next "
                      "batch computes; 1 = one batch after another")


def _add_optimizer_options(train):
    """train's optimizer options: the solver, C, and Newton's settings."""
    opt = train.add_argument_group("optimizer")
    opt.add_argument("--solver", choices=("newton", "sgd", "adam"), default="newton",
                     help="newton: subsampled Gauss-Newton (the options below); sgd: "
                     "mini-batch SGD with momentum, adam: Adam, both on the same model "
                     "(the mini-batch options)")
    opt.add_argument("-C", type=_C, default=None, dest="C",
                     help="regularization: f = theta'theta/(2 C l) + mean loss; 'auto' "
                     "chooses it by held-out accuracy over --C-grid (successive halving), "
                     "then trains on with it "
                     f"(default: {_MODEL.C:g}; {PAPER_OBJECTIVE['C']:g} with --paper)")
    opt.add_argument("--C-grid", type=_float_list, default=_MODEL.C_grid, dest="C_grid",
                     metavar="C1,C2,...", help="with -C auto: the values tried, each fit "
                     "warm-started from one at the largest")
    opt.add_argument("--holdout", type=float, default=_MODEL.holdout, metavar="F",
                     help="with -C auto: the share of the training set held out to score "
                     "each C (stratified, seeded by --seed)")
    opt.add_argument("--search-budget", type=float, default=_MODEL.search_budget,
                     metavar="F", help="with -C auto: the iterations (SGD, Adam: epochs) "
                     "the search may add to the run's, as a fraction of --iterations "
                     "(--epochs); the chosen C's fit goes on to the end of the run, its "
                     "iterations in the search counted in it")
    opt.add_argument("--path-iterations", action=_Renamed, message=_PATH_ITERATIONS_RENAMED)
    opt.add_argument("--gn-ratio", type=float, default=None, metavar="R",
                     help="fraction of instances in each Gauss-Newton subset (default: "
                     f"{_DEFAULTS.gn_ratio:g} and at least {SUBSET_FLOOR} instances, all "
                     f"of a smaller set; {_DEFAULTS.gn_ratio:g} with --paper or "
                     f"--sample-size; {STOCHASTIC['gn_ratio']:g} of the sample with the "
                     "recommended stochastic setting)")
    opt.add_argument("--gn-min", type=int, default=None, metavar="N",
                     help="with --gn-ratio: each Gauss-Newton subset holds at least N "
                     f"instances, all of a smaller set or sample (default: {SUBSET_FLOOR} "
                     "without --gn-ratio, --gn-size, --sample-size or --paper; else 1)")
    opt.add_argument("--gn-size", type=int, default=None, metavar="N",
                     help="instances in each Gauss-Newton subset (instead of --gn-ratio); "
                     "the stored Jacobian grows linearly with it: about 8 N (n_L |b| + |a|) "
                     "bytes per block (a, b), printed at start-up")
    opt.add_argument("--sample-size", type=_sample_size, default="auto", metavar="N",
                     help="stochastic Newton: each iteration takes f, the gradient and the "
                     "line search on a fresh random sample of N instances, and its "
                     "Gauss-Newton subset inside it (--gn-ratio of N); the log's f and "
                     "||g|| are the samples'; all: every instance, the paper's method "
                     f"(default: all up to {STOCHASTIC_FROM:,} training instances and with "
                     "--paper; beyond, the recommended stochastic setting: "
                     + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in STOCHASTIC.items())
                     + " for those not given; the start-up output says which)")
    opt.add_argument("--sample-growth", type=float, default=_DEFAULTS.sample_growth,
                     metavar="G", help="with --sample-size: the next iteration's sample "
                     "has G times the instances, until it holds them all")
    opt.add_argument("--average", type=float, default=None, metavar="BETA",
                     help="score and return the moving average of the iterates, "
                     "avg = BETA avg + (1 - BETA) theta after each iteration (bias-"
                     "corrected); it steadies stochastic Newton's jittery steps (default: "
                     "0, the last iterate)")
    opt.add_argument("--diagonal", action="store_true",
                     help="block-diagonal Gauss-Newton: every block solves its own CG with "
                     "no communication (the paper's diagonalization)")
    opt.add_argument("--sync-fraction", type=float, default=1.0, metavar="Q",
                     help="with --diagonal: stop each Newton iteration's CG once a fraction "
                     "Q of the blocks has met its stopping rule (1 = wait for all)")
    opt.add_argument("--iterations", type=int, default=None, metavar="N",
                     help=f"Newton iterations (default: {_DEFAULTS.iterations}; "
                     f"{STOCHASTIC['iterations']} with the recommended stochastic setting)")
    opt.add_argument("--cg-max", type=int, default=None, metavar="N",
                     help=f"CG iterations per Newton iteration, at most (default: "
                     f"{_DEFAULTS.cg_max}; {STOCHASTIC['cg_max']} with the recommended "
                     "stochastic setting)")
    opt.add_argument("--xi", type=float, default=_DEFAULTS.xi,
                     help="CG stops when ||r|| <= xi ||g||")
    opt.add_argument("--lambda", type=float, default=_DEFAULTS.damping, dest="damping",
                     metavar="LAMBDA", help="initial Levenberg-Marquardt damping")


def _add_minibatch_options(train):
    """train's options of the mini-batch solvers (SGD, Adam)."""
    stochastic = train.add_argument_group(
        "mini-batch solvers (with --solver sgd or adam)",
        "Each step takes g_B, the gradient of f estimated on a mini-batch B, with the "
        "learning rate eta_e = eta / (1 + decay (e - 1)) in epoch e. sgd: v = mu v + g_B; "
        "theta -= eta_e v. adam: see below. The log gets one record per epoch "
        "(alpha = eta_e).",
    )
    # The default depends on the solver: None here, each solver's own when unset.
    stochastic.add_argument("--learning-rate", type=float, default=None, metavar="ETA",
                            help=f"initial learning rate eta (default: {_SGD.learning_rate:g} "
                            f"with sgd, {_ADAM.learning_rate:g} with adam)")
    stochastic.add_argument("--momentum", type=float, default=_SGD.momentum, metavar="MU",
                            help="sgd: momentum mu (0: plain SGD)")
    stochastic.add_argument("--mini-batch", type=int, default=_SGD.mini_batch, metavar="N",
                            help="instances per mini-batch")
    stochastic.add_argument("--epochs", type=int, default=_SGD.epochs, metavar="N",
                            help="passes over the training set")
    stochastic.add_argument("--lr-decay", type=float, default=_SGD.lr_decay, metavar="D",
                            help="learning-rate decay per epoch (0: constant)")
    adam = train.add_argument_group(
        "Adam (with --solver adam)",
        "m = b1 m + (1 - b1) g_B; v = b2 v + (1 - b2) g_B^2; theta -= eta_e m_hat / "
        "(sqrt(v_hat) + eps), elementwise, with m_hat = m / (1 - b1^t) and "
        "v_hat = v / (1 - b2^t) after t steps.",
    )
    adam.add_argument("--beta1", type=float, default=_ADAM.beta1, metavar="B1",
                      help="decay b1 of the first moment m")
    adam.add_argument("--beta2", type=float, default=_ADAM.beta2, metavar="B2",
                      help="decay b2 of the second moment v")
    adam.add_argument("--adam-eps", type=float, default=_ADAM.eps, dest="eps", metavar="EPS",
                      help="eps added to sqrt(v_hat)")


def _add_early_stopping_options(train):
    """train's early-stopping options."""
    early = train.add_argument_group(
        "early stopping (every solver; scikit-learn's names and meanings)",
        "With --early-stopping a stratified share of the training set is set aside and "
        "scored once per epoch: after every epoch of SGD and Adam, every Newton "
        "iteration on all instances, and on samples the iteration whose samples "
        "complete another training set's worth of instances (and the last); the run "
        "stops once the score has not risen by --tol for more than --n-iter-no-change "
        "epochs in a row, and the model kept is the best validated one (the log's "
        "validation_score).")
    early.add_argument("--early-stopping", action="store_true",
                       help="stop when the validation score stops improving")
    early.add_argument("--validation-fraction", type=float,
                       default=_EARLY.validation_fraction, metavar="F",
                       help="with --early-stopping: the share of the training set set aside")
    early.add_argument("--n-iter-no-change", type=int, default=_EARLY.n_iter_no_change,
                       metavar="N", help="with --early-stopping: epochs without "
                       "improvement before the run stops")
    early.add_argument("--tol", type=float, default=_EARLY.tol,
                       help="with --early-stopping: the least rise of the validation "
                       "score (accuracy, 0..1) that counts as an improvement")


def _add_output_options(train):
    """train's outputs: log, model, checkpoints, limits, progress."""
    out = train.add_argument_group("output")
    out.add_argument("--log", metavar="FILE",
                     help="write one JSON object per iteration (f, gnorm, cg_iters, alpha, "
                     "lambda, rho, time, test_accuracy, bytes by phase)")
    out.add_argument("--model", metavar="FILE",
                     help="save the trained network to FILE (.npz, for dnewton predict on "
                     "any number of ranks); without --model or --checkpoint nothing is "
                     "saved, and the run warns at start")
    out.add_argument("--checkpoint", metavar="DIR",
                     help="keep the solver's state in DIR/checkpoint.npz (replaced "
                     "atomically) every --checkpoint-every iterations, or every "
                     f"{CHECKPOINT_INTERVAL:g} s of training without it, and at the last; "
                     "also when a signal or --time-limit stops the run")
    out.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                     help="with --checkpoint: iterations (epochs) between checkpoints "
                     "(default: by time)")
    out.add_argument("--time-limit", type=_duration, default=None, metavar="T",
                     help="stop, with a checkpoint, when the next iteration would end "
                     "after T (seconds, or [D-]H:MM:SS or UNLIMITED as Slurm writes it) "
                     f"from the start; the run then exits with status {EXIT_RESUMABLE}, as "
                     "after SIGTERM, SIGUSR1 or SIGINT")
    out.add_argument("--resume", metavar="DIR",
                     help="continue the run checkpointed in DIR, with the same settings "
                     "(any ranks and --partitions); the --log is rewritten with the "
                     "checkpoint's iterations and continued, as if never interrupted")
    out.add_argument("--quiet", action="store_true",
                     help="no progress (a live line on a terminal, else a line per iteration)")
    out.add_argument("--show-layout", action="store_true",
                     help="print which blocks each rank owns")
    out.add_argument("--log-view", action="store_true",
                     help="print at the end where the time went: per phase the seconds "
                     "computing and waiting, their share, GFLOP, GFLOP/s and MiB moved")
    out.add_argument("--blas-threads", type=int, default=None, metavar="N",
                     help="BLAS threads per rank (default: 1 under mpiexec with several "
                     "ranks, else the BLAS default)")


def _add_predict(commands):
    predict = commands.add_parser(
        "predict",
        help="predict with a saved model; print the accuracy if DATA has labels",
        description="Label DATA with MODEL (from train --model, or a checkpoint.npz) and, "
        "when DATA has labels, print the accuracy against them. A regressor's MODEL "
        "(NewtonRegressor.save) predicts real targets instead, and with one target scores "
        "DATA's labels as targets by R^2. Runs on any number of ranks with any layout, "
        "whatever the training used.",
        epilog=_exit_statuses("0 predicted", _BAD_INPUT + " (the model or DATA unreadable, "
                              "DATA's features not the model's, --output not writable)"),
    )
    predict.add_argument("model", metavar="MODEL", help="model file (.npz)")
    predict.add_argument("data", metavar="DATA",
                         help="LIBSVM file, .npz with X and y, or with X only (unlabelled), "
                         "or an embedded set (its test part)")
    predict.add_argument("--output", metavar="FILE",
                         help="write the predicted label of every instance, one a line, "
                         "exactly as the training labels were (a regressor: its predicted "
                         "targets, space-separated) ('-': standard output, and "
                         "the summary goes to standard error)")
    predict.add_argument("--proba", action="store_true",
                         help="with --output: each line is the label, then the probability "
                         "of every class, in the order of a first '#' line that names them")
    predict.add_argument("--features", type=int, default=None, metavar="N",
                         help="confirm the model's n_0 = N: DATA's columns beyond it are "
                         "then dropped with a warning instead of refused")
    predict.add_argument("--data-cache", metavar="DIR", default=None,
                         help="as train --data-cache")
    predict.add_argument("--partitions", type=_int_list, default=None, metavar="P0,...,PL",
                         help="layout for this job (default: the planner's for a nominal "
                         "iteration of one batch; given, the planner's assignment)")
    predict.add_argument("--chunk-size", type=int, default=BATCH_SIZE, dest="batch_size",
                         metavar="N", help=f"instances per forward pass through memory "
                         f"(default {BATCH_SIZE})")
    predict.add_argument("--batch-size", action=_Renamed, message=_BATCH_SIZE_RENAMED)
    predict.set_defaults(run=run_predict)


def _add_plot(commands):
    plot = commands.add_parser(
        "plot",
        help="plot run logs (needs matplotlib: pip install 'dnewton[plot]')",
        description="Draw f, ||g|| and the test accuracy of one or more --log files "
        "against Newton iterations and against time.",
        epilog=_exit_statuses("0 drawn", "2 a log unreadable, the figure not writable or "
                              "matplotlib missing"),
    )
    plot.add_argument("log", metavar="RUN.jsonl", help="log written by train --log")
    plot.add_argument("--vs", action="append", default=[], metavar="OTHER.jsonl",
                      help="another log to draw alongside (repeatable)")
    plot.add_argument("-o", "--output", required=True, metavar="FIGURE",
                      help="image to write; its suffix sets the format (.png, .pdf, .svg)")
    plot.set_defaults(run=run_plot)


def _add_datasets(commands):
    datasets = commands.add_parser("datasets", help="list the embedded data sets",
                                   epilog=_exit_statuses("0 listed"))
    datasets.set_defaults(run=run_datasets)


def _add_convert(commands):
    convert = commands.add_parser(
        "convert",
        help="write a LIBSVM file as a folder of .npy arrays, read by slices",
        description="Parse the LIBSVM file SOURCE once and write it to the folder TARGET "
        "(the CSR arrays of X and the labels as .npy files, and meta.json). train and "
        "predict take TARGET where they take a data file; each rank then maps only the "
        "rows it needs instead of parsing its part of the text. Under mpiexec every rank "
        "parses and writes its own byte range of SOURCE.",
        epilog=_exit_statuses("0 written", _BAD_INPUT + " (SOURCE unreadable or malformed, "
                              "TARGET not writable)"),
    )
    convert.add_argument("source", metavar="SOURCE", help="LIBSVM file (.gz/.bz2 too)")
    convert.add_argument("target", metavar="TARGET", help="folder to write")
    convert.add_argument("--features", type=int, default=None, metavar="N",
                         help="keep features 1..N (the columns beyond are dropped; fewer "
                         "are padded with zeros)")
    convert.set_defaults(run=run_convert)


def run_convert(args):
    from mpi4py import MPI

    from ..errors import agreed
    from ..io.shards import convert

    world = MPI.COMM_WORLD
    with agreed(world):
        if args.features is not None and args.features < 1:
            raise ParameterError("{features} must be >= 1")
    n, n0, nnz = convert(world, args.source, args.target, args.features,
                         cut=args.features is not None)
    if world.rank == 0:
        print(f"dnewton: {args.source}: {n} instances, {n0} features, {nnz:,} non-zeros "
              f"written to {args.target}", flush=True)
    return 0


def _add_plan(commands):
    plan = commands.add_parser(
        "plan",
        help="rank the layouts of a network by predicted seconds per Newton iteration",
        description="Predict, for every candidate layout (partitions P_0..P_L, block-to-rank "
        "assignment, replicas R dividing the ranks, stored or recomputed Jacobian), the "
        "seconds, bytes moved and memory per rank of one Newton iteration, and list them "
        "fastest first; those that do not fit --memory-per-rank are listed as refused. "
        "Only the data's shape is used (docs/scaling.md describes the model).",
        formatter_class=_HelpFormatter,
        epilog="Example: dnewton plan --instances 1000000 --features 784 --classes 1000 "
        "--ranks 64 --hidden 8192,8192,8192 --machine machine.json. "
        + _exit_statuses("0 at least one layout fits",
                         _BAD_INPUT + ", or no layout fits --memory-per-rank"),
    )
    plan.add_argument("train", metavar="TRAIN", nargs="?", default=None,
                      help="LIBSVM file, .npz or embedded set whose shape to plan for "
                      f"({', '.join(DATASETS)}); or give --instances, --features, --classes")
    plan.add_argument("--instances", type=int, default=None, metavar="L",
                      help="training instances (without TRAIN)")
    plan.add_argument("--features", type=int, default=None, metavar="N",
                      help="features n_0 (without TRAIN; with it, as train --features)")
    plan.add_argument("--classes", type=int, default=None, metavar="K",
                      help="classes n_L (without TRAIN)")
    plan.add_argument("--ranks", type=int, required=True, metavar="R", help="MPI ranks")
    plan.add_argument("--hidden", type=_hidden, default=(300, 300), metavar="N1,N2,...",
                      help='widths of the hidden layers; "" or 0: none')
    plan.add_argument("--gn-ratio", type=float, default=None, metavar="R",
                      help="fraction of instances in each Gauss-Newton subset (default: as "
                      "train's)")
    plan.add_argument("--gn-size", type=int, default=None, metavar="N",
                      help="instances in each Gauss-Newton subset (instead of --gn-ratio)")
    plan.add_argument("--dtype", choices=PRECISIONS, default=_MODEL.dtype,
                      help="precision of the run")
    plan.add_argument("--loss", choices=list(LOSSES), default=_MODEL.loss, help="loss")
    plan.add_argument("--jacobian", choices=JACOBIAN_MODES, default=None,
                      help="consider only this product mode (default: both)")
    plan.add_argument("--replicas", type=int, default=None, metavar="R",
                      help="consider only R replicas (default: every R dividing --ranks)")
    plan.add_argument("--chunk-size", type=int, default=BATCH_SIZE, dest="batch_size",
                      metavar="N", help="instances per pass through memory (as train's)")
    plan.add_argument("--batch-size", action=_Renamed, message=_BATCH_SIZE_RENAMED)
    plan.add_argument("--cg-iters", type=float, default=5, metavar="N",
                      help="CG iterations per Newton iteration to predict for")
    plan.add_argument("--trials", type=float, default=1, metavar="N",
                      help="line-search trials (f evaluations) per Newton iteration")
    plan.add_argument("--machine", metavar="FILE", default=None,
                      help="machine description from dnewton calibrate (default: a typical "
                      "cluster node)")
    plan.add_argument("--memory-per-rank", type=float, default=None, metavar="BYTES",
                      help="refuse layouts whose largest rank needs more (default: no limit)")
    plan.add_argument("--top", type=int, default=20, metavar="N",
                      help="the first N layouts (rows of the table, candidates of --json); "
                      "only those that can be among them are predicted; 0: every candidate")
    plan.add_argument("--json", action="store_true",
                      help="print one JSON object with the key candidates (in order)")
    plan.set_defaults(run=run_plan)


def _add_calibrate(commands):
    calibrate = commands.add_parser(
        "calibrate",
        help="measure this machine for the planner and write it as JSON",
        description="Time GEMMs of several shapes on one core, the Jacobian kernels, "
        "memory bandwidth and, under mpiexec with 2 or more ranks, MPI allreduce latency "
        "and bandwidth; write the machine description the planner reads (--machine). "
        "Figures it cannot measure here (between nodes; MPI on one rank) keep the "
        "documented defaults, and it says so.",
        formatter_class=_HelpFormatter,
        epilog="Example: mpiexec -n 2 dnewton calibrate --output machine.json. "
        + _exit_statuses("0 written", "2 --output not writable or bad options"),
    )
    calibrate.add_argument("--output", metavar="FILE", default="machine.json",
                           help="where to write the machine description")
    calibrate.add_argument("--seconds", type=float, default=30.0, metavar="S",
                           help="measuring time, about (less is quicker and noisier)")
    calibrate.set_defaults(run=run_calibrate)


def run_plan(args):
    from mpi4py import MPI

    from ..errors import agreed
    from ..io.shards import open_dataset
    from ..planning.cost import Workload
    from ..planning.machine import DEFAULT, Machine
    from ..planning.planner import search
    from ..planning.report import as_json, table
    from ..planning.volume import Counts

    world = MPI.COMM_WORLD
    with agreed(world):
        if args.train is not None:
            if args.instances is not None or args.classes is not None:
                raise ParameterError("give TRAIN or {instances} and {classes}, not both")
            raw, _ = open_dataset(world, args.train, args.features)  # sizes and labels
            shape = (raw.n_instances, raw.n_features, len(np.unique(raw.y)))
        else:
            missing = [name for name in ("instances", "features", "classes")
                       if getattr(args, name) is None]
            if missing:
                raise ParameterError(f"without TRAIN, {{{missing[0]}}} is needed")
            shape = (args.instances, args.features, args.classes)
        for value, name in zip(shape, ("instances", "features", "classes")):
            if value < 1 or (name == "classes" and value < 2):
                raise ParameterError(f"{{{name}}} must be >= {2 if name == 'classes' else 1}")
        if args.ranks < 1:
            raise ParameterError("{ranks} must be >= 1")
        if args.top < 0:
            raise ParameterError("{top} must be >= 0")
        if args.replicas is not None and (args.replicas < 1 or args.ranks % args.replicas):
            raise ParameterError(f"{{replicas}} {args.replicas} must divide {{ranks}} "
                                 f"{args.ranks}")
        if args.gn_ratio is not None and not 0 < args.gn_ratio <= 1:
            raise ParameterError("{gn_ratio} must be in (0, 1]")
        machine = Machine.load(args.machine) if args.machine else DEFAULT
    n_instances, n0, k = shape
    gn_size = None if args.gn_size is None else min(args.gn_size, n_instances)  # at most l
    given = {name: value for name, value in (("gn_ratio", args.gn_ratio), ("gn_size", gn_size))
             if value is not None}
    n_subset = NewtonOptions(gn_min=subset_floor(given), **given).subset_size(n_instances)
    workload = Workload((n0, *args.hidden, k), n_instances, n_subset,
                        itemsize=np.dtype(args.dtype).itemsize, loss=args.loss,
                        batch_size=args.batch_size,
                        counts=Counts(cg_iters=args.cg_iters, trials=args.trials))
    status = None
    with agreed(world):
        if world.rank == 0:  # one rank plans and prints; the others learn the status
            found = search(workload, args.ranks, machine, args.memory_per_rank,
                           args.top or None, replicas=args.replicas, jacobian=args.jacobian)
            shown = found.fits[:args.top] if args.top else found.fits
            if args.json:
                print(as_json(shown, found.refused, workload, args.ranks, machine,
                              found.skipped), flush=True)
            else:
                print(table(found.fits, found.refused, workload, args.ranks, machine,
                            args.top or None, found.skipped), flush=True)
            status = 0 if found.fits else 2
    return world.bcast(status, root=0)


def run_calibrate(args):
    from mpi4py import MPI

    from ..errors import agreed
    from ..io.text_output import TextOutput
    from ..planning.calibrate import measure

    world = MPI.COMM_WORLD
    output = None
    with agreed(world):  # a pipe nobody reads is refused before the measuring
        if world.rank == 0:
            output = TextOutput(args.output, "machine file")

    def say(text):
        if world.rank == 0:
            print(text, flush=True)

    machine = measure(args.seconds, world if world.size > 1 else None, say)
    with agreed(world):
        if world.rank == 0:
            output.write(machine.text())
    say(f"dnewton calibrate: wrote {args.output} (GEMM "
        f"{machine.gemm[-1][1] / 1e9:.1f} GFLOP/s per core, stream "
        f"{machine.stream_bandwidth / 1e9:.1f} GB/s, MPI latency "
        f"{machine.latency_intra * 1e6:.1f} us)")
    return 0


def run_train(args):
    from mpi4py import MPI

    from ..errors import agreed
    from ..fault_injection import Faults
    from ..io.shards import open_dataset
    from ..run_records import RunStatus
    from .monitor import Monitor
    from .training import Outputs, train

    world = MPI.COMM_WORLD
    with alike_everywhere():
        refuse_inapplicable(args, args.given)
    given = args.features is not None
    with agreed(world):
        if given and args.features < 1:
            raise ParameterError("{features} must be >= 1")
        limit = f"{{features}} {args.features}" if given else None
        train_raw, test_raw = open_dataset(world, args.train, args.features, limit=limit,
                                           cache=args.data_cache, once=True)
        if args.test is not None:
            test_raw, _ = open_dataset(world, args.test, n_features=train_raw.n_features,
                                       cut=given, limit=limit, cache=args.data_cache,
                                       once=True)
        options = (_newton_options(args, train_raw.n_instances) if args.solver == "newton"
                   else _minibatch_options(args))
    _warn_cut(world, test_raw, args.features)
    loss, C, dtype = _objective_and_precision(args)
    config = ModelConfig(
        hidden=args.hidden, activation=args.activation, loss=loss, C=C,
        partitions=args.partitions, replicas=args.replicas,
        feature_scale=args.feature_scale, center=args.center,
        standardize=args.standardize, batch_size=args.batch_size, pipeline=args.pipeline,
        dtype=dtype,
        C_grid=tuple(args.C_grid),
        holdout=args.holdout,
        search_budget=args.search_budget, jacobian=args.jacobian, machine=args.machine,
        assignment=args.assignment,
    )
    outputs = Outputs(log=args.log, model=args.model, checkpoint=args.checkpoint,
                      checkpoint_every=args.checkpoint_every, resume=args.resume,
                      time_limit=args.time_limit,
                      show_layout=args.show_layout, log_view=args.log_view)
    with alike_everywhere():  # as train() will: a refused run warns of nothing
        options.check()
        config.check()
    if args.model is None and args.checkpoint is None and world.rank == 0:
        print("dnewton: warning: neither --model nor --checkpoint is given: the trained "
              "network will not be saved", file=sys.stderr, flush=True)
    monitor = Monitor(world.rank, args.quiet, iterations=options.iterations)
    early_stopping = None
    if args.early_stopping:
        early_stopping = EarlyStopping(args.validation_fraction, args.n_iter_no_change,
                                       args.tol)
    result = train(train_raw, test_raw, config, options, outputs, comm=world, monitor=monitor,
                   blas_threads=args.blas_threads, early_stopping=early_stopping,
                   faults=Faults.from_environment())
    # A line search that cannot decrease f ends training normally (the message says
    # so); non-finite values are an error, reported after the last good state is kept.
    if result.status == RunStatus.NUMERICAL_ERROR:
        if world.rank == 0:
            print(f"dnewton: error: {result.message}", file=sys.stderr, flush=True)
        return NumericalError.exit_status
    if result.status in (RunStatus.INTERRUPTED, RunStatus.TIME_LIMIT):
        return EXIT_RESUMABLE
    return 0


def _objective_and_precision(args):
    """(loss, C, dtype): as given, else the defaults, or the paper's with --paper."""
    base = ({**PAPER_OBJECTIVE, "dtype": PAPER_DTYPE} if args.paper
            else {"loss": _MODEL.loss, "C": _MODEL.C, "dtype": _MODEL.dtype})
    return tuple(base[name] if getattr(args, name) is None else getattr(args, name)
                 for name in ("loss", "C", "dtype"))


def _newton_options(args, n_instances):
    """`NewtonOptions` from the command line for a training set of `n_instances`:
    what the user left unset is the recommended setting's (`newton.recommended`);
    --paper is the paper's method."""
    given = dict(gn_size=args.gn_size, sample_growth=args.sample_growth,
                 diagonal=args.diagonal, sync_fraction=args.sync_fraction,
                 xi=args.xi, damping=args.damping, seed=args.seed)
    unset = dict(gn_ratio=args.gn_ratio, gn_min=args.gn_min, cg_max=args.cg_max,
                 average=args.average, iterations=args.iterations)
    given.update((key, value) for key, value in unset.items() if value is not None)
    if args.sample_size != "auto" or args.paper:
        given["sample_size"] = None if args.paper else args.sample_size
    return recommended(n_instances, given)


def _minibatch_options(args):
    """`SGDOptions` or `AdamOptions` from the command line (`refuse_inapplicable` has
    refused the options of another solver)."""
    common = dict(mini_batch=args.mini_batch, epochs=args.epochs, lr_decay=args.lr_decay,
                  seed=args.seed)
    if args.learning_rate is not None:
        common.update(learning_rate=args.learning_rate)
    if args.solver == "sgd":
        return SGDOptions(momentum=args.momentum, **common)
    return AdamOptions(beta1=args.beta1, beta2=args.beta2, eps=args.eps, **common)


def _warn_cut(world, raw, n_features):
    """Rank 0 says, once, that `raw` lost the columns beyond `n_features`."""
    if raw is not None and raw.cut_from and world.rank == 0:
        print(f"dnewton: warning: {raw.source}: feature indices up to {raw.cut_from}; "
              f"only the first {n_features} are used (--features {n_features})",
              file=sys.stderr, flush=True)


def run_predict(args):
    from mpi4py import MPI

    from ..errors import agreed
    from ..io.data import read_dataset
    from ..io.model_file import load_model
    from ..io.shards import open_dataset
    from ..io.text_output import TextOutput
    from .prediction import Predictor

    world = MPI.COMM_WORLD
    with alike_everywhere():
        refuse_inapplicable(args, args.given)
    output = None
    with agreed(world):  # a pipe nobody reads is refused before the work
        if world.rank == 0 and args.output and args.output != "-":
            output = TextOutput(args.output, "labels")
    model = load_model(world, args.model)
    given = args.features is not None
    with agreed(world):
        if model.regression and args.proba:
            raise ParameterError(f"{{proba}}: {args.model} holds {model.describe()}, which "
                                 "predicts real targets, not class probabilities")
        if given and args.features != model.widths[0]:
            raise ParameterError(f"{{features}} {args.features} differs from the model's "
                                 f"{model.widths[0]} features")
        if _unlabelled_npz(args.data):  # read whole: the shards need labels
            train_part, test_part = read_dataset(args.data, n_features=model.widths[0],
                                                 cut=given, labelled=False)
        else:
            train_part, test_part = open_dataset(world, args.data, n_features=model.widths[0],
                                                 cut=given, cache=args.data_cache, once=True)
    raw = test_part if test_part is not None else train_part
    _warn_cut(world, raw, model.widths[0])
    predictor = Predictor(world, model, args.partitions, args.batch_size)
    try:
        outputs = predictor.outputs(raw)
    finally:
        predictor.close()
    summary = f"dnewton: {raw.source}: {raw.n_instances} instances"
    if model.regression:
        predicted = model.predictions(outputs)
        if raw.y is not None and predicted.shape[1] == 1:  # DATA's labels are the targets
            summary += f", R^2 {_r2(raw.y, predicted[:, 0]):.4f}"
        text = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in predicted)
        what = "predicted targets"
    else:
        labels = model.classes[np.argmax(outputs, axis=1)]
        if raw.y is not None:
            correct = int(np.sum(labels == raw.y))
            summary += (f", accuracy {100 * correct / raw.n_instances:.2f}% "
                        f"({correct}/{raw.n_instances})")
        text = None
        what = "labels and probabilities" if args.proba else "labels"
    with agreed(world):
        if world.rank == 0:
            if args.output:
                if text is None:
                    proba = make_loss(model.loss).probabilities(outputs) if args.proba else None
                    text = _prediction_text(labels, model.classes, proba)
                if output is None:  # standard output
                    sys.stdout.write(text)
                    sys.stdout.flush()
                else:
                    output.write(text)
                    summary += f"; {what} written to {args.output}"
            print(summary, file=sys.stderr if args.output == "-" else sys.stdout, flush=True)
    return 0


def _r2(y, predicted):
    """The coefficient of determination of `predicted` for targets `y`, as scikit-learn's
    r2_score: 1 - residual / total sum of squares (constant y: 1 if matched, else 0)."""
    residual = float(np.sum((y - predicted) ** 2))
    total = float(np.sum((y - np.mean(y)) ** 2))
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def _unlabelled_npz(source):
    """Whether `source` is a ``.npz`` holding X and no y (only predicted, not scored)."""
    if not str(source).endswith(".npz"):
        return False
    try:
        with np.load(source, allow_pickle=False) as archive:
            return "X" in archive.files and "y" not in archive.files
    except Exception:  # noqa: BLE001 -- the reader that follows names the problem
        return False


def label_text(label):
    """A class label as written: a whole number in full (1234567, not 1.23457e+06),
    else the shortest text that reads back as the same float; text as it is."""
    if isinstance(label, str):
        return label
    value = float(label)
    return str(int(value)) if value.is_integer() else repr(value)


def _prediction_text(labels, classes, proba=None):
    """One line per instance: its label, then with `proba` (l, n_L) the probability
    of each class, after a '#' line naming them."""
    lines = [label_text(label) for label in labels]
    if proba is not None:
        header = "# label " + " ".join(f"p({label_text(c)})" for c in classes)
        lines = [header] + [f"{text} " + " ".join(repr(float(p)) for p in row)
                            for text, row in zip(lines, proba)]
    return "".join(f"{line}\n" for line in lines)


def run_plot(args):
    from mpi4py import MPI

    from ..errors import agreed
    from .plot import plot_logs

    world = MPI.COMM_WORLD
    with agreed(world):
        if world.rank == 0:
            plot_logs([args.log, *args.vs], args.output)
    return 0


def run_datasets(args):
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank == 0:
        for name, (description, _) in DATASETS.items():
            print(f"{name}: {description}")
    return 0


def flags(parser):
    """parameter -> the flag that sets it, for every option of every command."""
    names = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                names.update(flags(command))
        elif action.option_strings:
            names.setdefault(action.dest, max(action.option_strings, key=len))
    return names


def _launcher_rank():
    """This process's rank as the MPI launcher tells it (MPICH, Open MPI, PMIx,
    Slurm), read before MPI starts; 0 when not launched as a rank."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def main(argv=None):
    """Entry point of the ``dnewton`` script and of ``python -m dnewton``."""
    from ..errors import run_main

    parser = build_parser()
    names = flags(parser)

    def dispatch(argv):
        if _launcher_rank() > 0:  # help and usage errors once, from rank 0
            with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):
                args = parser.parse_args(argv)
        else:
            args = parser.parse_args(argv)
        args.given = given_options(argv)
        if args.run is not run_train:  # only training turns a signal into a clean stop
            release_from_start()
        return args.run(args)

    sys.exit(run_main(dispatch, argv, lambda parameter: names.get(parameter, parameter)))
