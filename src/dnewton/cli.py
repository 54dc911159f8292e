"""The ``dnewton`` command line.

    mpiexec -n K dnewton train TRAIN [--test TEST] [--model FILE] [options]
    [mpiexec -n K] dnewton predict MODEL DATA [--output FILE]
    dnewton plot RUN.jsonl [--vs OTHER.jsonl] -o FIGURE.png
    dnewton datasets

Every rank parses the same command line. Errors that one rank meets are agreed
on by all (`errors.agreed`), and anything unexpected aborts the whole job, so a
failure never leaves ranks waiting in a collective.
"""

import argparse
import sys

import numpy as np

from . import __version__
from .activations import ACTIVATIONS
from .data import DATASETS
from .errors import NumericalError
from .losses import LOSSES
from .newton import NewtonOptions
from .sgd import SGDOptions

_DEFAULTS = NewtonOptions()
_SGD = SGDOptions()


def _int_list(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {text!r}"
        ) from None
    return values


def build_parser():
    parser = argparse.ArgumentParser(
        prog="dnewton",
        description=(
            "Train fully connected neural networks with a distributed subsampled "
            "Gauss-Newton method, the model split into blocks over MPI ranks."
        ),
        epilog="Run under MPI with: mpiexec -n K dnewton train ...",
    )
    parser.add_argument("--version", action="version", version=f"dnewton {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    model = train.add_argument_group("model")
    model.add_argument(
        "--hidden", type=_int_list, default=(300, 300), metavar="N1,N2,...",
        help="widths of the hidden layers",
    )
    model.add_argument("--activation", choices=list(ACTIVATIONS), default="relu")
    model.add_argument(
        "--loss", choices=list(LOSSES), default="squared",
        help="squared: ||z - onehot(y)||^2 (the reference's); softmax: cross-entropy",
    )
    model.add_argument(
        "--partitions", type=_int_list, default=None, metavar="P0,P1,...,PL",
        help="groups per layer, inputs to outputs; the weights between layers m-1 and "
        "m form P_{m-1} x P_m blocks spread over the ranks (need at least as many "
        "blocks as ranks). Default: split the widest layers until every rank has a block",
    )
    model.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                       help="seed of the initial weights and of the subsets")
    data = train.add_argument_group("data")
    data.add_argument("--feature-scale", type=float, default=1.0, metavar="S",
                      help="divide every feature by S (255 for raw pixels)")
    data.add_argument("--center", action="store_true",
                      help="subtract the training mean of each feature (from the test set too)")
    data.add_argument("--batch-size", type=int, default=4096, metavar="N",
                      help="instances per forward/backward batch (bounds memory)")
    opt = train.add_argument_group("optimizer")
    opt.add_argument("--solver", choices=("newton", "sgd"), default="newton",
                     help="newton: subsampled Gauss-Newton (the options below); sgd: "
                     "mini-batch SGD with momentum on the same model (the SGD options)")
    opt.add_argument("-C", type=float, default=_DEFAULTS.C, dest="C",
                     help="regularization: f = theta'theta/(2 C l) + mean loss")
    opt.add_argument("--gn-ratio", type=float, default=_DEFAULTS.gn_ratio, metavar="R",
                     help="fraction of instances in each Gauss-Newton subset")
    opt.add_argument("--gn-size", type=int, default=None, metavar="N",
                     help="instances in each Gauss-Newton subset (instead of --gn-ratio); "
                     "the stored Jacobian grows linearly with it: about 8 N (n_L |b| + |a|) "
                     "bytes per block (a, b), printed at start-up")
    opt.add_argument("--diagonal", action="store_true",
                     help="block-diagonal Gauss-Newton: every block solves its own CG with "
                     "no communication (the paper's diagonalization)")
    opt.add_argument("--sync-fraction", type=float, default=1.0, metavar="Q",
                     help="with --diagonal: stop each Newton iteration's CG once a fraction "
                     "Q of the blocks has met its stopping rule (1 = wait for all)")
    opt.add_argument("--iterations", type=int, default=_DEFAULTS.iterations, metavar="N",
                     help="Newton iterations")
    opt.add_argument("--cg-max", type=int, default=_DEFAULTS.cg_max, metavar="N",
                     help="CG iterations per Newton iteration, at most")
    opt.add_argument("--xi", type=float, default=_DEFAULTS.xi,
                     help="CG stops when ||r|| <= xi ||g||")
    opt.add_argument("--lambda", type=float, default=_DEFAULTS.damping, dest="damping",
                     metavar="LAMBDA", help="initial Levenberg-Marquardt damping")
    stochastic = train.add_argument_group(
        "SGD (with --solver sgd)",
        "v = mu v + g_B; theta -= eta_e v, with g_B the gradient of f estimated on a "
        "mini-batch B and eta_e = eta / (1 + decay (e - 1)) in epoch e. The log gets one "
        "record per epoch (alpha = eta_e).",
    )
    stochastic.add_argument("--learning-rate", type=float, default=_SGD.learning_rate,
                            metavar="ETA", help="initial learning rate eta")
    stochastic.add_argument("--momentum", type=float, default=_SGD.momentum, metavar="MU",
                            help="momentum mu (0: plain SGD)")
    stochastic.add_argument("--mini-batch", type=int, default=_SGD.batch_size, metavar="N",
                            help="instances per mini-batch")
    stochastic.add_argument("--epochs", type=int, default=_SGD.epochs, metavar="N",
                            help="passes over the training set")
    stochastic.add_argument("--lr-decay", type=float, default=_SGD.decay, metavar="D",
                            help="learning-rate decay per epoch (0: constant)")
    out = train.add_argument_group("output")
    out.add_argument("--log", metavar="FILE",
                     help="write one JSON object per iteration (f, gnorm, cg_iters, alpha, "
                     "lambda, rho, time, test_accuracy, bytes by phase)")
    out.add_argument("--model", metavar="FILE",
                     help="save the trained network to FILE (.npz, for dnewton predict on "
                     "any number of ranks)")
    out.add_argument("--checkpoint", metavar="DIR",
                     help="keep the optimizer state in DIR/checkpoint.npz (replaced "
                     "atomically) every --checkpoint-every iterations and at the last")
    out.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                     help="iterations between checkpoints")
    out.add_argument("--resume", metavar="DIR",
                     help="continue the run checkpointed in DIR, with the same settings "
                     "(any ranks and --partitions); the --log is rewritten with the "
                     "checkpoint's iterations and continued, as if never interrupted")
    out.add_argument("--quiet", action="store_true",
                     help="no progress (a live line on a terminal, else a line per iteration)")
    out.add_argument("--show-layout", action="store_true",
                     help="print which blocks each rank owns")
    out.add_argument("--blas-threads", type=int, default=None, metavar="N",
                     help="BLAS threads per rank (default: 1 under mpiexec with several "
                     "ranks, else the BLAS default)")
    train.set_defaults(run=run_train)

    predict = commands.add_parser(
        "predict",
        help="predict with a saved model; print the accuracy",
        description="Label DATA with MODEL (from train --model, or a checkpoint.npz) and "
        "print the accuracy against DATA's labels. Runs on any number of ranks with any "
        "layout, whatever the training used.",
    )
    predict.add_argument("model", metavar="MODEL", help="model file (.npz)")
    predict.add_argument("data", metavar="DATA",
                         help="LIBSVM file, .npz with X and y, or an embedded set (its "
                         "test part)")
    predict.add_argument("--output", metavar="FILE",
                         help="write the predicted label of every instance, one a line")
    predict.add_argument("--partitions", type=_int_list, default=None, metavar="P0,...,PL",
                         help="layout for this job (default: split the widest layers)")
    predict.add_argument("--batch-size", type=int, default=4096, metavar="N",
                         help="instances per forward batch (default 4096)")
    predict.set_defaults(run=run_predict)

    plot = commands.add_parser(
        "plot",
        help="plot run logs (needs matplotlib: pip install 'dnewton[plot]')",
        description="Draw f, ||g|| and the test accuracy of one or more --log files "
        "against Newton iterations and against time.",
    )
    plot.add_argument("log", metavar="RUN.jsonl", help="log written by train --log")
    plot.add_argument("--vs", action="append", default=[], metavar="OTHER.jsonl",
                      help="another log to draw alongside (repeatable)")
    plot.add_argument("-o", "--output", required=True, metavar="FIGURE",
                      help="image to write; its suffix sets the format (.png, .pdf, .svg)")
    plot.set_defaults(run=run_plot)

    datasets = commands.add_parser("datasets", help="list the embedded data sets")
    datasets.set_defaults(run=run_datasets)
    return parser


def run_train(args):
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    from .checkpoint import Checkpoint, Checkpointer, run_settings
    from .data import read_dataset
    from .errors import agreed
    from .model_io import check_writable, save_model
    from .monitor import Monitor
    from .trainer import ModelConfig, Problem

    world = MPI.COMM_WORLD
    threads = args.blas_threads or (1 if world.size > 1 else None)
    with threadpool_limits(limits=threads):
        with agreed(world):
            train_raw, test_raw = read_dataset(args.train)
            if args.test is not None:
                test_raw, _ = read_dataset(args.test, n_features=train_raw.n_features)
            if args.solver == "sgd":
                options = _sgd_options(args)
            else:
                options = NewtonOptions(
                    C=args.C, gn_ratio=args.gn_ratio, gn_size=args.gn_size,
                    diagonal=args.diagonal, sync_fraction=args.sync_fraction,
                    iterations=args.iterations,
                    cg_max=args.cg_max, xi=args.xi, damping=args.damping, seed=args.seed,
                )
                options.check()
            if args.model and world.rank == 0:
                check_writable(args.model, "--model")
        checkpoint = Checkpoint.load(world, args.resume) if args.resume else None
        sgd = args.solver == "sgd"
        monitor = Monitor(world.rank, args.quiet,
                          iterations=options.epochs if sgd else options.iterations)
        config = ModelConfig(
            hidden=args.hidden, activation=args.activation, loss=args.loss,
            partitions=args.partitions, feature_scale=args.feature_scale,
            center=args.center, batch_size=args.batch_size,
        )
        problem = Problem.build(world, train_raw, test_raw, config, options.C)
        try:
            widths = "-".join(map(str, problem.layout.widths))
            monitor.message(
                f"dnewton: {train_raw.source}: {train_raw.n_instances} instances, "
                f"network {widths} ({args.activation}, {args.loss} loss), "
                f"{len(problem.layout.blocks)} blocks on {world.size} rank(s)"
            )
            if args.show_layout:
                monitor.message(problem.layout.describe())
            if sgd:
                monitor.message(
                    f"dnewton: SGD, mini-batches of {options.batch_size}, learning rate "
                    f"{options.learning_rate:g}, momentum {options.momentum:g}"
                )
            else:
                n_subset = problem.objective.subset_size(options.gn_ratio, options.gn_size)
                need = problem.check_memory(n_subset)
                monitor.message(
                    f"dnewton: Gauss-Newton subset {n_subset} instances per iteration"
                    f"{' (block-diagonal)' if options.diagonal else ''}; its stored Jacobian "
                    f"takes up to {need / 2**20:.1f} MiB per rank (linear in the subset size)"
                )
            resume = None
            if checkpoint is not None:
                with agreed(world):
                    checkpoint.check(run_settings(problem, options))
                resume = checkpoint.state(problem.layout, world.rank)
                checkpoint.check_data(problem, resume)
                monitor.message(f"dnewton: resuming {args.resume} after iteration "
                                f"{checkpoint.iteration}")
            saver = None
            if args.checkpoint:
                saver = Checkpointer(problem, options, args.checkpoint, args.checkpoint_every)
            # Only now, with every input checked, may an existing log be replaced.
            with agreed(world):
                monitor.open_log(args.log, checkpoint.history if checkpoint else ())
            if sgd:
                result = problem.fit_sgd(options, monitor)
            else:
                result = problem.fit(options, monitor, resume=resume, checkpoint=saver)
            monitor.message(
                f"dnewton: stopped after {result.iterations} {'epoch' if sgd else 'iteration'}"
                f"(s): {result.message}; "
                f"f = {result.f:.6e}"
            )
            if args.model:
                save_model(problem, result.theta, args.model)
                monitor.message(f"dnewton: model saved to {args.model}")
        finally:
            monitor.close()
            problem.close()
    # A line search that cannot decrease f ends training normally (the message says
    # so); non-finite values are an error, reported after the last good state is kept.
    if result.status == "numerical_error":
        if world.rank == 0:
            print(f"dnewton: error: {result.message}", file=sys.stderr, flush=True)
        return NumericalError.exit_status
    return 0


def _sgd_options(args):
    """`SGDOptions` from the command line; Newton-only options are refused by name."""
    from .errors import InputError

    newton_only = [
        ("--diagonal", args.diagonal), ("--sync-fraction", args.sync_fraction != 1.0),
        ("--gn-size", args.gn_size is not None), ("--checkpoint", args.checkpoint),
        ("--resume", args.resume),
    ]
    for flag, given in newton_only:
        if given:
            raise InputError(f"{flag} applies to --solver newton only, not to sgd")
    options = SGDOptions(
        C=args.C, learning_rate=args.learning_rate, momentum=args.momentum,
        batch_size=args.mini_batch, epochs=args.epochs, decay=args.lr_decay, seed=args.seed,
    )
    options.check()
    return options


def run_predict(args):
    from mpi4py import MPI

    from .data import read_dataset
    from .errors import agreed
    from .model_io import load_model
    from .predict import Predictor

    world = MPI.COMM_WORLD
    model = load_model(world, args.model)
    with agreed(world):
        train_part, test_part = read_dataset(args.data, n_features=model.widths[0])
    raw = test_part if test_part is not None else train_part
    predictor = Predictor(world, model, args.partitions, args.batch_size)
    try:
        labels = predictor.labels(raw)
    finally:
        predictor.close()
    correct = int(np.sum(labels == raw.y))
    with agreed(world):
        if world.rank == 0:
            if args.output:
                _write_labels(args.output, labels)
            print(f"dnewton: {raw.source}: {raw.n_instances} instances, accuracy "
                  f"{100 * correct / raw.n_instances:.2f}% ({correct}/{raw.n_instances})"
                  + (f"; labels written to {args.output}" if args.output else ""), flush=True)
    return 0


def _write_labels(path, labels):
    from .errors import InputError

    try:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{label:g}\n" for label in labels)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the labels ({exc.strerror})") from None


def run_plot(args):
    from mpi4py import MPI

    from .errors import agreed
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


def _dispatch(argv):
    args = build_parser().parse_args(argv)
    return args.run(args)


def main(argv=None):
    """Entry point of the ``dnewton`` script and of ``python -m dnewton``."""
    from .errors import run_main

    sys.exit(run_main(_dispatch, argv))
