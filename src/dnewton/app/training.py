"""The one training run behind every front end.

`train` takes raw data and settings and does everything a run needs, in this
order: BLAS threads; the settings checked and settled once (`_settle`: the
planner's bounds, C, early stopping's split); the layout and this rank's data, the
memory check; the start or the resumption and the log (`_start_or_resume`); the
solver loop; the last lines and the model file (`_conclude`). The command line and
`NewtonClassifier` both call it; they differ only in how they gather settings
and how they print.

`SolverRun` is the loop itself: it advances a solver (`solvers.newton`,
`solvers.sgd` or `solvers.adam`) one iteration at a time and owns what the
solvers do not: the clock, the bytes by phase, the monitoring (test accuracy, the
mini-batch solvers' f), the progress output and the checkpoints.
"""

import json
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from mpi4py import MPI

from ..constants import CHECKPOINT_INTERVAL
from ..errors import (
    InputError,
    NumericalError,
    ParameterError,
    StoppedEarly,
    agreed,
    alike_everywhere,
    everywhere,
)
from ..fault_injection import Faults
from ..io.checkpoint import Checkpoint, Checkpointer
from ..io.data import SPARSE_MAX_DENSITY
from ..io.model_file import Model, check_writable, save_model
from ..io.shards import stored_entries
from ..parallel.gather_scatter import broadcast_arrays
from ..parallel.phases import Phase
from ..parallel.space import GroupSpace
from ..parallel.vote import CompletionVote
from ..run_records import RunResult, RunStatus
from ..solvers.adam import AdamOptions, AdamSolver
from ..solvers.direction import BlockDiagonalCG, FullCG
from ..solvers.minibatch import MiniBatchOptions
from ..solvers.newton import NewtonOptions, NewtonSolver
from ..solvers.sgd import SGDOptions, SGDSolver
from .early_stopping import BestModel
from .log_view import log_view
from .monitor import Monitor
from .problem import ModelConfig, Problem, available_memory
from .regularization import (
    best_C,
    phase_flops,
    schedule,
    search_C,
    split_rows,
    training_flops,
    trunk_C,
    winner_iterations,
)
from .stop_requests import EXIT_RESUMABLE, StopRequests
from .threads import compute_threads, default_threads

# The exit status of the command line for each way a run ends (0 for the others).
EXIT_STATUS = {RunStatus.INTERRUPTED: EXIT_RESUMABLE, RunStatus.TIME_LIMIT: EXIT_RESUMABLE,
               RunStatus.NUMERICAL_ERROR: NumericalError.exit_status}

# The mini-batch solvers by their options (Newton's needs more wiring: `make_solver`).
_MINIBATCH_SOLVERS = {SGDOptions: SGDSolver, AdamOptions: AdamSolver}


@dataclass
class Outputs:
    """What a run writes, where it may resume from, when it must stop (all optional)."""

    log: object = None  # JSON lines, one record per iteration (rank 0)
    model: object = None  # the trained network, a model file
    checkpoint: object = None  # a folder for checkpoints
    checkpoint_every: object = None  # iterations between checkpoints; None: by time
    resume: object = None  # a checkpoint folder to continue from
    time_limit: object = None  # seconds the run may take; it stops resumable before
    show_layout: bool = False  # print which blocks each rank owns
    log_view: bool = False  # print where the time went, by phase, at the end


@dataclass
class TrainingResult(RunResult):
    """How the run ended, and (with ``return_model``) the dense model on every rank."""

    model: object = None
    C: float = None  # the C trained with (chosen by the path with -C auto)


def train(train_data, test_data=None, config=None, options=None, outputs=None, *,
          comm=None, monitor=None, blas_threads=None, faults=None, return_model=False,
          early_stopping=None, initial=None):
    """Train a network; collective over `comm` (default: every rank of the job).

    Parameters
    ----------
    train_data, test_data : io.data.RawData, or io.shards.ShardedData (test_data may
        be None)
        The same on every rank; each rank keeps only its share (of a ShardedData,
        it reads only its share).
    config : ModelConfig
    options : solvers.newton.NewtonOptions, solvers.sgd.SGDOptions or
        solvers.adam.AdamOptions
    outputs : Outputs
    comm : mpi4py communicator; the run works on a duplicate of it.
    monitor : app.monitor.Monitor (default: silent)
    blas_threads : int or None
        Compute threads per rank (the kernels' BLAS and OpenMP loops; see
        `app.threads`); None: 1 with several ranks, else the libraries' default.
    faults : fault_injection.Faults or None
        Faults to inject (tests); None injects none.
    return_model : bool
        Gather the trained network into ``result.model`` on every rank.
    early_stopping : app.early_stopping.EarlyStopping or None
        Set a validation split aside, score it after every iteration (epoch), stop
        when it stalls, and return the best validated model (``RunStatus.NO_IMPROVEMENT``
        when it stopped the run).
    initial : io.model_file.Model or None
        Start from this network (a warm start; its widths must be the run's)
        instead of the seeded initialisation. The same on every rank.

    Returns
    -------
    TrainingResult
        A run that ends with ``status == RunStatus.NUMERICAL_ERROR`` keeps the
        last good iterate (and saves it when asked); it is not an exception.
        SIGTERM, SIGUSR1 or SIGINT during the run, or the time limit, end it
        after the current iteration (iteration 0 included) with a checkpoint and
        ``RunStatus.INTERRUPTED`` or ``TIME_LIMIT`` (`app.stop_requests`); during the
        ``-C auto`` search, with `errors.StoppedEarly` (nothing to resume from).
    """
    started = time.perf_counter()
    comm = MPI.COMM_WORLD if comm is None else comm
    options = NewtonOptions() if options is None else options
    outputs = Outputs() if outputs is None else outputs
    monitor = Monitor(comm.rank, quiet=True) if monitor is None else monitor
    faults = Faults() if faults is None else faults
    stops = StopRequests(outputs.time_limit, started)
    with alike_everywhere():  # the same argument on every rank
        if blas_threads is not None and not (isinstance(blas_threads, int)
                                             and blas_threads >= 1):
            raise ParameterError(f"{{blas_threads}} must be a whole number >= 1, got "
                                 f"{blas_threads}")
    with compute_threads(blas_threads or default_threads(comm.size)), stops.installed():
        settled = _settle(comm, train_data, config, options, outputs, early_stopping, initial,
                      monitor, faults, stops)
        available = (faults.memory_limit if faults.memory_limit is not None
                     else available_memory())
        problem = Problem.build(comm, settled.train_data, test_data, settled.config,
                                settled.n_subset, settled.validation_data, available,
                                settled.n_sample)
        checkpointer = None
        try:
            _describe(problem, settled.options, settled.train_data, monitor, outputs, faults)
            if outputs.checkpoint:
                before_commit, after_write = faults.checkpoint_hooks()
                checkpointer = Checkpointer(
                    problem.world, problem.gather_model, problem.gather_vector, outputs.checkpoint,
                    outputs.checkpoint_every, settled.options.iterations,
                    run_settings(problem, settled.options, early_stopping, settled.searched),
                    CHECKPOINT_INTERVAL, before_commit, after_write,
                )
            run = SolverRun(problem, make_solver(problem, settled.options, faults), monitor,
                            checkpointer, stops,
                            None if early_stopping is None else BestModel(early_stopping))
            _start_or_resume(run, problem, settled, early_stopping, outputs, monitor)
            result = run.finish()
            model = _conclude(problem, result, settled, outputs, monitor, checkpointer,
                              return_model)
            stops.settle(EXIT_STATUS.get(result.status, 0))
        finally:
            monitor.close()
            if checkpointer is not None:
                checkpointer.close()
            problem.close()
    return TrainingResult(**{field: getattr(result, field) for field in
                             RunResult.__dataclass_fields__}, model=model, C=settled.config.C)


@dataclass
class _SettledRun:
    """A run's settings once settled, before any network exists: the configuration
    with its C and its planner bounds, the options with the iterations left, and
    what the run starts from."""

    config: ModelConfig
    options: object  # NewtonOptions, SGDOptions or AdamOptions
    train_data: object  # less early stopping's validation split
    validation_data: object  # early stopping's split, or None
    checkpoint: object  # the Checkpoint to resume from, or None
    initial: object  # the Model to start from (a warm start, -C auto's fit), or None
    path: object  # -C auto's search path as the log records it, or None
    searched: object  # iterations (epochs) the chosen C had in the search, or None
    n_subset: object  # Newton's largest Gauss-Newton subset, for the planner; or None
    n_sample: object  # stochastic Newton's fixed sample size, for the planner; or None


def _settle(comm, train_data, config, options, outputs, early_stopping, initial, monitor,
            faults, stops):
    """Collective: check the settings and settle them, once: the planner's bounds,
    C (the checkpoint's, or -C auto's search, which trains), early stopping's split.
    Returns a `_SettledRun`."""
    config = ModelConfig() if config is None else config
    with agreed(comm):
        options.check()
        config.check()
        if early_stopping is not None:
            early_stopping.check()
        config = _planner_bounds(config, options)
        if (getattr(options, "diagonal", False) and options.sync_fraction < 1
                and (config.replicas or 1) > 1):
            raise ParameterError("{sync_fraction} below 1 stops each block's CG when the "
                                 "vote passes, at a different iteration in each copy of "
                                 "the layout: with {replicas} > 1 keep it at 1")
        if getattr(options, "diagonal", False) and config.jacobian != "stored":
            raise ParameterError("{diagonal} needs the stored Jacobian: its blocks' own "
                                 "products come from it (drop {jacobian} recomputed)")
        if outputs.model and comm.rank == 0:
            check_writable(outputs.model, "model")
    checkpoint = Checkpoint.load(comm, outputs.resume) if outputs.resume else None
    path, searched = None, None
    if config.C == "auto" and checkpoint is not None:  # chosen before the checkpoint
        config = replace(config, C=checkpoint.settings["C"])
        searched = checkpoint.settings.get("search_iterations", 0)
        options = _less(options, searched)
        monitor.iterations = _units(options)
    elif config.C == "auto":
        config, path, chosen, searched = _choose_C(comm, train_data, config, options,
                                                   monitor, faults, stops)
        initial = chosen if chosen is not None else initial
        options = _less(options, searched)
        monitor.iterations = _units(options)
    validation_data = None
    if early_stopping is not None:
        with agreed(comm):
            train_data, validation_data = split_rows(
                train_data, early_stopping.validation_fraction, options.seed,
                "early stopping")
    n_subset = n_sample = None
    if isinstance(options, NewtonOptions):
        with agreed(comm):
            n_subset = options.largest_subset(train_data.n_instances)
        n_sample = options.fixed_sample(train_data.n_instances)
    return _SettledRun(config, options, train_data, validation_data, checkpoint, initial,
                       path, searched, n_subset, n_sample)


def _start_or_resume(run, problem, settled, early_stopping, outputs, monitor):
    """Collective: resume the `SolverRun` `run` from the checkpoint (its settings and
    f checked), or start it; and open the log, once every input is checked."""
    checkpoint = settled.checkpoint
    run.regularization_path = settled.path
    if checkpoint is not None:
        with agreed(problem.world):
            checkpoint.check(run_settings(problem, settled.options, early_stopping,
                                          settled.searched),
                             defaults=_as_stored(asdict(type(settled.options)())))
        run.resume(checkpoint.state(problem.layout, problem.rank), checkpoint.records())
        checkpoint.check_f(run.solver.f)
        monitor.message(f"dnewton: resuming {outputs.resume} after iteration "
                        f"{checkpoint.iteration}")
    # Only now, with every input checked, may an existing log be replaced.
    with agreed(problem.world):
        monitor.open_log(outputs.log, checkpoint.history if checkpoint else ())
    if checkpoint is None:
        run.start(_starting_point(problem, settled.options, settled.initial))


def _conclude(problem, result, settled, outputs, monitor, checkpointer, return_model):
    """Collective: the last lines, the model file and the log closed; returns the
    model (with `return_model` on every rank, else with a model file on rank 0
    alone, else None). InputError (on every rank) if the log could not be written."""
    unit = "iteration" if isinstance(settled.options, NewtonOptions) else "epoch"
    # A log that cannot be written stopped the run: the model is still saved
    # below, and the error said at the end instead of the usual last lines.
    if monitor.error is None:
        chosen = f"; C = {settled.config.C:g}, chosen by -C auto" if settled.path else ""
        monitor.message(f"dnewton: stopped after {result.iterations} {unit}(s): "
                        f"{result.message}; f = {result.f:.6e}{chosen}")
    if result.status in (RunStatus.INTERRUPTED, RunStatus.TIME_LIMIT):
        # Only a checkpoint this run wrote is named: it is on disk.
        if checkpointer is not None and checkpointer.saved is not None:
            where = (f"checkpoint in {outputs.checkpoint}: continue with --resume "
                     f"{outputs.checkpoint}")
        elif checkpointer is not None:
            where = "no checkpoint was written, so there is nothing to resume from"
        else:
            where = "no --checkpoint was given, so there is nothing to resume from"
        monitor.report(f"dnewton: {result.message} after {unit} {result.iterations}; "
                       f"{where}")
    if outputs.log_view and monitor.error is None:
        monitor.report(log_view(result.history))
    model = None
    if outputs.model or return_model:
        model = problem.gather_model(result.theta)
    if outputs.model:
        save_model(problem.world, model, outputs.model)
        monitor.message(f"dnewton: model saved to {outputs.model}")
    if return_model:
        arrays = broadcast_arrays(problem.world, model.arrays() if model else None)
        model = Model.from_arrays(arrays, "the trained model")
    monitor.close()
    with agreed(problem.world):  # the log is rank 0's: a write it could not do
        if monitor.error is not None:
            raise InputError(monitor.error)
    return model


def _starting_point(problem, options, initial):
    """This rank's part of the first iterate: `initial`'s weights (a Model), or the
    seeded initialisation without one."""
    if initial is None:
        return problem.network.initial_parameters(options.seed)
    with alike_everywhere():  # the same model and data on every rank
        if tuple(initial.widths) != tuple(problem.layout.widths):
            raise InputError(f"the network to start from has widths "
                             f"{'-'.join(map(str, initial.widths))}, this run's are "
                             f"{'-'.join(map(str, problem.layout.widths))}")
    theta = initial.local_parameters(problem.layout, problem.rank)
    return theta.astype(problem.network.dtype, copy=False)


def _planner_bounds(config, options):
    """Settle in `config` what the planner may not choose for `options`' solver: the
    mini-batch solvers run one copy of the layout (the cost model knows Newton's
    iterations, not a mini-batch's); the block-diagonal method needs the stored
    Jacobian, and with a completion vote below 1, one copy."""
    if isinstance(options, MiniBatchOptions):
        return replace(config, replicas=1 if config.replicas is None else config.replicas)
    if options.diagonal:
        replicas = config.replicas
        if replicas is None and options.sync_fraction < 1:
            replicas = 1
        return replace(config, jacobian=config.jacobian or "stored", replicas=replicas)
    return config


def _units(options):
    """The run's iterations (Newton) or epochs (SGD, Adam)."""
    return options.iterations if isinstance(options, NewtonOptions) else options.epochs


def _with_units(options, units):
    """`options` with `units` iterations (Newton) or epochs (SGD, Adam)."""
    if isinstance(options, NewtonOptions):
        return replace(options, iterations=units)
    return replace(options, epochs=units)


def _less(options, searched):
    """`options` for the final fit after a -C auto search: the run's iterations
    (epochs) less the `searched` ones the chosen C's network has had already."""
    return _with_units(options, max(0, _units(options) - searched))


@dataclass
class Fit:
    """One stretch of a -C auto fit: its result, and where the next may go on from."""

    result: RunResult
    state: object  # run_records.SolverState after its last iteration
    record: object  # the record of that iteration
    flops: float  # training FLOPs, the start's evaluation of f and g included
    seconds: float
    start_flops: float = 0.0  # those of the start's evaluation
    history: list = field(default_factory=list)


def _fit(problem, options, start, units, branch, faults=None, stops=None):
    """Fit `problem` for `units` more iterations (epochs) from `start` (a `Fit`,
    continued exactly as a resumed run would be; None: the seeded initialisation),
    without scoring the test part after every iteration. With `branch` (`start` was
    a fit of another C), Newton's moving average of the iterates starts again: the
    average of the other C's iterates is not this C's model."""
    done = 0 if start is None else start.result.iterations
    solver = make_solver(problem, _with_units(options, done + units), faults)
    run = SolverRun(problem, solver, stops=stops)
    run.evaluate = None  # scored once at the end, by the search
    world, ledger = problem.world, problem.groups.ledger
    ledger.collect(world)
    began = time.perf_counter()
    if start is None:
        run.start(problem.network.initial_parameters(options.seed))
        starting = 0.0
        begun = training_flops(run.history[:1])
    else:
        state = start.state
        if branch and "averaged" in state.vectors:
            state = replace(state, scalars={**state.scalars, "average_steps": 0},
                            vectors={**state.vectors,
                                     "averaged": np.zeros_like(state.vectors["averaged"])})
        solver.resume(state, start.record)
        starting = begun = phase_flops(ledger.collect(world)["flops"])
        run.history = [start.record]
    result = run.finish()
    new = run.history if start is None else run.history[1:]
    return Fit(result, solver.state(), run.history[-1], starting + training_flops(new),
               time.perf_counter() - began, start_flops=begun, history=new)


def _choose_C(comm, train_data, config, options, monitor, faults, stops=None):
    """-C auto: successive halving on a held-out split (`app.regularization`);
    returns the config with the chosen C, the path as the log records it, the
    chosen C's fitted network (a dense `Model` on every rank, where the final fit
    starts) and the iterations (epochs) it has had; without `_goes_on`, None and 0
    (the final fit starts afresh).

    A stop request ends the search after the current iteration of its fit, with
    `StoppedEarly` on every rank (no C chosen: nothing a run could resume)."""
    unit = "iteration" if isinstance(options, NewtonOptions) else "epoch"
    grid = sorted(set(config.C_grid), reverse=True)
    if len(grid) == 1:
        monitor.message(f"dnewton: -C auto: the grid holds one C, {grid[0]:g}: training with it")
        return replace(config, C=grid[0]), [], None, 0

    def report(point):
        what = "trunk" if point.round == 0 else f"round {point.round}"
        monitor.message(f"dnewton: -C auto: C = {point.C:g}, {what}: held-out accuracy "
                        f"{100 * point.holdout_accuracy:.2f}%, f = {point.f:.6e} after "
                        f"{point.iterations} {unit}(s), {point.seconds:.2f} s")

    def announce(trunk, rounds):
        monitor.message(f"dnewton: -C auto: then {', '.join(map(str, rounds))} {unit}(s) per "
                        "C and round, each round keeping the better half (within "
                        f"--search-budget {config.search_budget:g})")

    units = _units(options)
    trunk, _ = schedule(len(grid), units, config.search_budget)
    monitor.message(
        f"dnewton: -C auto: successive halving over C = {', '.join(f'{c:g}' for c in grid)} "
        f"on {100 * (1 - config.holdout):g}% of the training set, scored on the rest, "
        f"from a trunk of {trunk} {unit}(s) at C = {trunk_C(grid):g}")

    def fit(problem, start, iterations, branch):
        done = _fit(problem, options, start, iterations, branch, faults, stops)
        result = done.result
        if result.status in (RunStatus.INTERRUPTED, RunStatus.TIME_LIMIT):
            raise everywhere(StoppedEarly(
                f"{result.message} during the -C auto search (C = {problem.config.C:g}, "
                f"{unit} {result.iterations}), before the first {unit} of training: "
                "no C is chosen yet and no checkpoint was written, so there is nothing to "
                "resume from; run it again from the start (with more time, or a number "
                "for -C)"))
        return done

    path, model = search_C(comm, train_data, config, units, options.seed, fit, report,
                           announce)
    C, searched = best_C(path), winner_iterations(path)
    if _goes_on(options, train_data.n_instances):
        monitor.message(f"dnewton: -C auto chose C = {C:g}; its fit goes on on all the "
                        f"training set for {max(0, units - searched)} more {unit}(s) "
                        f"({searched} of the {units} done in the search)")
    else:
        model, searched = None, 0
        monitor.message(f"dnewton: -C auto chose C = {C:g}; training on all the training set "
                        f"with it from the start (the same run as -C {C:g}: Newton on every "
                        "instance generalizes better from there than from the search's fit)")
    return replace(config, C=C), [point.as_dict() for point in path], model, searched


def _goes_on(options, n_instances):
    """Whether the final fit after -C auto continues the chosen fit: with samples or
    mini-batches, yes; with Newton on every instance (the paper's method, the
    default up to 10,000 instances), no: it drives each fit to a minimum of its own
    part of the data, and the whole set's fit from the search's minimum tested
    0.2-3.5 points below a fresh one (docs/benchmarks.md)."""
    if not isinstance(options, NewtonOptions):
        return True
    return options.samples(n_instances)


def _describe(problem, options, train_data, monitor, outputs, faults):
    """The start-up lines and the memory checks (for Newton, of the Gauss-Newton data too)."""
    config, layout = problem.config, problem.layout
    available = faults.memory_limit if faults.memory_limit is not None else available_memory()
    problem.check_parameter_memory(available)
    kind = config.activation if len(layout.widths) > 2 else "linear"  # no hidden layer
    monitor.message(
        f"dnewton: {train_data.source}: {train_data.n_instances} instances, network "
        f"{'-'.join(map(str, layout.widths))} ({kind}, {config.loss} loss, {config.dtype}), "
        f"{len(layout.blocks)} blocks on {problem.world.size} rank(s)"
        + (f" ({config.replicas} copies of {layout.n_ranks} rank(s), each on "
           f"1/{config.replicas} of the instances)" if config.replicas > 1 else "")
    )
    nnz = stored_entries(train_data)
    if nnz is not None:
        density = nnz / max(1, train_data.n_instances * train_data.n_features)
        if problem.objective.data.sparse:
            monitor.message(
                f"dnewton: sparse input ({nnz:,} non-zeros, {density:.2%}): "
                "layer 1 works on CSR blocks, memory in proportion to the non-zeros"
            )
        else:
            why = ("centring fills every entry" if config.center or config.standardize else
                   f"above {SPARSE_MAX_DENSITY:.0%} non-zero the dense products are faster")
            monitor.message(f"dnewton: sparse input ({density:.2%} non-zero) made dense: {why}")
    data, parameters = problem.memory_per_rank()
    monitor.message(f"dnewton: memory per rank: training data up to {data / 2**20:.1f} MiB "
                    f"(a rank keeps its copy's instances in its feature columns), parameters "
                    f"up to {parameters / 2**20:.1f} MiB")
    if problem.plan is not None:
        monitor.message(_planned(problem, layout))
    if outputs.show_layout:
        monitor.message(layout.describe())
    if isinstance(options, MiniBatchOptions):
        monitor.message(f"dnewton: {options.describe()}")
        return
    with alike_everywhere():  # the same options and data size on every rank
        n_subset = options.largest_subset(problem.objective.n_instances)
    if options.samples(problem.objective.n_instances):
        growth = (f", {options.sample_growth:g} times larger each iteration"
                  if options.sample_growth > 1 else "")
        average = (f"; the model is the moving average of the iterates (beta "
                   f"{options.average:g})" if options.average else "")
        monitor.message(
            f"dnewton: stochastic Newton: f, the gradient and the line search on a fresh "
            f"random sample of {options.sample_size} instances{growth} every iteration, "
            f"CG at most {options.cg_max} iterations{average}, {options.iterations} "
            "iterations (--sample-size all: the paper's method)")
    jacobian, kept, other = problem.check_memory(n_subset, available)
    stored = config.jacobian == "stored"
    what = ("its stored Jacobian takes" if stored else
            "the Jacobian is recomputed in every product (--jacobian recomputed); its data take")
    monitor.message(
        f"dnewton: Gauss-Newton subset {n_subset} instances per iteration"
        f"{' (block-diagonal)' if options.diagonal else ''}; {what} "
        f"up to {jacobian / 2**20:.1f} MiB per rank (linear in the subset size; "
        f"{'recomputed' if stored else 'stored'} it would be {other / 2**20:.1f} MiB)"
    )
    if kept:
        monitor.message(f"dnewton: forward passes kept for reuse: up to {kept / 2**20:.1f} MiB "
                        "per rank")
    else:
        monitor.message("dnewton: forward passes not kept (not enough memory): each gradient "
                        "and Gauss-Newton subset runs its own")


def _planned(problem, layout):
    """The start-up line that says which layout the planner took, and why."""
    best = problem.plan[0]
    line = (f"dnewton: layout chosen by the planner: partitions "
            f"{','.join(map(str, layout.partitions))} ({layout.assignment}, "
            f"{best.choice.jacobian} Jacobian), predicted "
            f"{best.seconds_per_iteration:.3g} s per iteration"
            f"{f' with {best.choice.replicas} copies' if best.choice.replicas > 1 else ''} on "
            f"{problem.config.machine or 'the default machine'}")
    runner = next((p for p in problem.plan if p.choice.partitions != best.choice.partitions),
                  None)
    if runner is not None:
        line += (f"; next {','.join(map(str, runner.choice.partitions))} "
                 f"({runner.choice.assignment}) {runner.seconds_per_iteration:.3g} s")
    return line + " (dnewton plan lists them; --partitions sets one)"


def run_settings(problem, options, early_stopping=None, searched=None):
    """What a resumed run must share with the checkpointed one, as stored (JSON types).

    Everything that changes the iterates beyond rounding: the optimizer's options
    except the iteration count, the network, C, the preprocessing, the training
    set's size and classes, and early stopping's settings. The layout and the
    batch size may change. After a ``-C auto`` search, also `searched`, the
    iterations (epochs) the chosen C's network had in it: they count against the
    run's, so a resumed run needs them to know where to stop.
    """
    config = problem.config
    settings = {"solver": options.NAME, "C": config.C,
                "early_stopping": None if early_stopping is None else asdict(early_stopping)}
    if searched is not None:
        settings["search_iterations"] = searched
    settings.update((key, value) for key, value in asdict(options).items()
                    if key not in ("iterations", "epochs"))
    settings.update(
        widths=list(problem.layout.widths), activation=config.activation, loss=config.loss,
        feature_scale=config.feature_scale, center=config.center,
        standardize=config.standardize, dtype=config.dtype,
        n_instances=problem.objective.n_instances, classes=problem.classes.labels.tolist(),
    )
    return _as_stored(settings)


def _as_stored(settings):
    """`settings` as a checkpoint stores them (JSON types: tuples as lists)."""
    return json.loads(json.dumps(settings))


def make_solver(problem, options, faults=None):
    """The solver `options` asks for, wired to `problem`'s objective and groups."""
    groups, objective = problem.groups, problem.objective
    space = GroupSpace(groups.all, Phase.OTHER)
    if type(options) in _MINIBATCH_SOLVERS:
        return _MINIBATCH_SOLVERS[type(options)](objective, space, options)
    if options.diagonal:
        n_blocks = len(problem.layout.blocks)
        wrap = None if faults is None else faults.block_decorator(problem.world.rank)
        # The vote counts every copy's blocks: the copies of a block run their CGs in
        # step (each product is summed over them), so they must stop together.
        direction = BlockDiagonalCG(
            space, n_blocks,
            lambda: CompletionVote(problem.world, n_blocks * groups.n_replicas,
                                   options.sync_fraction, groups.ledger),
            options.xi, options.cg_max, wrap,
        )
    else:
        direction = FullCG(GroupSpace(groups.all, Phase.GAUSS_NEWTON), options.xi,
                           options.cg_max)
    return NewtonSolver(objective, space, _in_phase(groups.ledger, Phase.GAUSS_NEWTON,
                                                    direction), options)


def _in_phase(ledger, phase, direction):
    """`direction`, its whole solve (CG's vector updates too) counted as `phase`."""
    def solve(operator, g, gnorm):
        with ledger.phase(phase):
            return direction(operator, g, gnorm)

    return solve


class SolverRun:
    """Drives a solver to its end: the clock, the costs, monitoring and outputs.

    Collective over the problem's ranks. Each iteration's record gets its
    training seconds (monitoring excluded), its costs by phase (monitoring's all
    counted as ``evaluation``) and its test accuracy; then the checkpointer may
    save the solver's state and the monitor sees the record. The reduction that
    collects the costs also carries each rank's stop requests and checkpoint
    timing, so the ranks agree on both at no extra cost (`app.stop_requests`).

    Parameters
    ----------
    problem : app.problem.Problem
    solver : solvers.newton.NewtonSolver or a solvers.minibatch.MiniBatchSolver
    monitor : callable (IterationRecord), optional
    checkpoint : io.checkpoint.Checkpointer, optional
    stops : app.stop_requests.StopRequests, optional
    best : app.early_stopping.BestModel, optional
        Early stopping: scores the problem's validation split after every epoch
        (`validates`; its time counts as training), stops when it stalls, and
        makes the result the best validated model.
    """

    def __init__(self, problem, solver, monitor=None, checkpoint=None, stops=None, best=None):
        self.problem = problem
        self.solver = solver
        self.monitor = monitor
        self.checkpoint = checkpoint
        self.stops = stops
        self.evaluate = problem.test_accuracy()
        self.best = best
        self.validate = problem.validation_accuracy() if best is not None else None
        self.ledger = problem.groups.ledger
        self.history = []
        self.clock = 0.0
        self.stopped = None  # the agreed stop reason (StopRequests.local_reason; 4: early)
        self.regularization_path = None  # -C auto's path, for iteration 0's record
        self._checkpoint_seconds = 0.0

    def start(self, theta):
        """Start the solver at `theta` and report iteration 0."""
        self._advance(lambda: self.solver.start(theta))

    def resume(self, state, history):
        """Continue from a solver state whose run logged `history` (records)."""
        if self.best is not None:
            self.best.restore(state.scalars, state.vectors)
            if self.best.no_improvement > self.best.options.n_iter_no_change:
                self.stopped = 4  # it had stopped early: nothing left to do
        self.solver.resume(state, history[-1])
        self.history = list(history)
        self.clock = self.history[-1].time  # the run's clock goes on from the checkpoint
        # These costs belong to no iteration: the uninterrupted run evaluated f and g
        # here in the iteration the checkpoint ends with, and counted them there.
        self.ledger.collect(self.problem.world)

    def finish(self):
        """Run the remaining iterations (or until a stop is agreed); returns the
        `RunResult`."""
        solver = self.solver
        while not solver.done and self.stopped is None:
            self._advance(solver.step)
        status, message = solver.status, solver.message
        if self.stopped in (1, 2) and not solver.done:  # a run that ended anyway ended
            status = RunStatus.INTERRUPTED if self.stopped == 1 else RunStatus.TIME_LIMIT
            message = self.stops.describe(self.stopped)
        elif self.stopped == 4:
            status, message = RunStatus.NO_IMPROVEMENT, self.best.message()
        theta, f, gnorm = solver.model, solver.f, solver.gnorm
        if self.best is not None and self.best.theta is not None:
            best = next(r for r in self.history if r.iter == self.best.iteration)
            theta = self.best.theta.astype(solver.theta.dtype, copy=False)
            f, gnorm = best.f, best.gnorm
            if self.stopped != 4:
                message += f"; kept the best validated model, of iteration {best.iter}"
        return RunResult(theta, f, gnorm, solver.iteration, status, message, self.history)

    def _local_flags(self, iteration, seconds):
        """This rank's [a signal came, the time budget is out, a checkpoint is due, the
        log cannot be written]."""
        reason = 0
        if self.stops is not None:
            durations = [r.iteration_time for r in self.history[1:]] + [seconds]
            reason = self.stops.local_reason(durations, self._checkpoint_seconds)
        due = self.checkpoint is not None and iteration > 0 and self.checkpoint.due(iteration)
        broken = getattr(self.monitor, "error", None) is not None
        return [float(reason == 1), float(reason == 2), float(due), float(broken)]

    def _advance(self, action):
        world = self.problem.world
        began = time.perf_counter()
        record = action()
        seconds = time.perf_counter() - began
        iteration = self.solver.iteration
        trained = self.ledger.collect(world, elapsed=seconds,
                                      agree=self._local_flags(iteration, seconds))
        signalled, out_of_time, due, broken = (flag > 0 for flag in trained["agreed"])
        # Monitoring: neither its time nor its costs count as training; they are
        # all the evaluation phase's.
        if record is not None:
            record = self.solver.measure(record)
        if record is not None and self.validate is not None and self.validates(record):
            began = time.perf_counter()  # part of the method: its time is training's
            record.validation_score = float(self.validate(self.solver.model))
            seconds += time.perf_counter() - began
            if self.best.update(record.iter, record.validation_score, self.solver.model):
                self.stopped = self.stopped or 4
        if record is not None and self.evaluate is not None:
            record.test_accuracy = float(self.evaluate(self.solver.model))
        monitoring = self.ledger.collect(world)
        if signalled or out_of_time or broken:
            self.stopped = 3 if broken else 1 if signalled else 2
        if record is None:
            return
        evaluation = Phase.EVALUATION.value
        for kind in ("bytes", "flops"):
            trained[kind][evaluation] += sum(monitoring[kind].values())
        trained["seconds"][evaluation] = {
            part: sum(spent[part] for spent in monitoring["seconds"].values())
            for part in ("compute", "wait")
        }
        self.clock += seconds
        if record.iter == 0:
            record.regularization_path = self.regularization_path
        record.bytes, record.flops, record.seconds = (trained["bytes"], trained["flops"],
                                                      trained["seconds"])
        record.time, record.iteration_time = self.clock, seconds
        self.history.append(record)
        # A stop at iteration 0 (requested during start-up) keeps iteration 0: the
        # run resumes from it like from any other.
        resumable = ((record.iter > 0 or self.stopped)
                     and self.solver.status != RunStatus.LINE_SEARCH_FAILED)
        if self.checkpoint is not None and resumable and (due or self.stopped):
            self._checkpoint_seconds = self.checkpoint(self._state(), self.history)
            record.checkpoint_seconds = self._checkpoint_seconds
        if self.monitor is not None:
            self.monitor(record)

    def validates(self, record):
        """Whether early stopping scores the model of `record`: once per epoch, as
        scikit-learn's MLPClassifier does. An epoch is an iteration that sees every
        instance (Newton on all of them; SGD's and Adam's records are epochs) or,
        for Newton on samples, the iteration whose samples complete another l
        instances drawn since the start (the history's samples before it, a resumed
        run's included); the last iteration is scored too."""
        if record.iter == 0:
            return False
        if record.sample_size is None:
            return True
        n = self.problem.objective.n_instances
        before = sum(r.sample_size or 0 for r in self.history[1:])
        return (before + record.sample_size) // n > before // n or self.solver.done

    def _state(self):
        """The solver's state, with early stopping's beside it."""
        state = self.solver.state()
        if self.best is not None:
            scalars, vectors = self.best.state()
            state.scalars = {**state.scalars, **scalars}
            state.vectors = {**state.vectors, **vectors}
        return state


def solve(problem, options, theta=None, monitor=None, faults=None, stops=None):
    """Run `options`' solver on a built `Problem` from `theta` (default: the seeded
    initialisation); returns the `RunResult`, stopped early by `stops`
    (`app.stop_requests.StopRequests`) if given. For the -C auto search, and for tests
    and scripts that assemble the problem themselves."""
    run = SolverRun(problem, make_solver(problem, options, faults), monitor, stops=stops)
    run.start(problem.network.initial_parameters(options.seed) if theta is None else theta)
    return run.finish()
