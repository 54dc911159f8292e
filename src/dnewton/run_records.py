"""What a run reports: one record per iteration, the state a checkpoint keeps, and
how a run ended.

The records are the run log (docs/design.md, "What a run reports"; written and
read by `io.run_log`): every solver fills the fields it knows; the caller adds the
clock, the bytes and the test accuracy. Iteration 0 is the starting point. The
module uses nothing of the package but `constants`, so the solvers, `io` and
`app` all build on it.
"""

from dataclasses import dataclass, field, fields
from enum import Enum

import numpy as np

from .constants import Name


class RunStatus(Name):
    """Why a run stopped."""

    ITERATION_LIMIT = "iteration_limit"  # the planned iterations (or epochs) are done
    LINE_SEARCH_FAILED = "line_search_failed"  # no step decreases f: converged as far as it can
    NUMERICAL_ERROR = "numerical_error"  # a non-finite value; the last good iterate is kept
    INTERRUPTED = "interrupted"  # a signal asked the run to stop; it can resume
    TIME_LIMIT = "time_limit"  # the next iteration would not fit the time budget
    NO_IMPROVEMENT = "no_improvement"  # early stopping: the validation score stalled


@dataclass
class IterationRecord:
    """One line of the run log; iteration 0 is the starting point."""

    iter: int
    f: float  # objective at the iterate reached
    gnorm: float  # ||g|| there
    cg_iters: object = None
    cg_reason: object = None
    cg_iters_per_block: object = None  # [min, median, max] over all blocks
    sync_stopped_blocks: object = None  # blocks whose CG the synchronization cut off
    alpha: object = None
    line_search_trials: object = None
    line_search_reason: object = None
    lambda_: object = None  # damping used in this iteration's CG
    rho: object = None  # actual / predicted reduction
    time: float = 0.0  # training seconds since the start (monitoring excluded)
    iteration_time: float = 0.0  # training seconds of this iteration
    test_accuracy: object = None
    bytes: dict = field(default_factory=dict)  # by phase, summed over ranks
    flops: dict = field(default_factory=dict)  # by phase, summed over ranks
    seconds: dict = field(default_factory=dict)  # by phase: compute and wait, mean over ranks
    regularization_path: object = None  # iteration 0 of a -C auto run: the path, per C
    checkpoint_seconds: object = None  # a checkpoint of this iteration was written in this
    sample_size: object = None  # Newton with sampling: |B| of this step (f and g: the next B)
    validation_score: object = None  # early stopping: accuracy on the validation split

    def as_dict(self):
        # Shallow: the nested dicts (bytes, flops, seconds) are shared, not copied;
        # `asdict` deep-copied them for every record (the estimator converts them all).
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record["lambda"] = record.pop("lambda_")
        for key in ("regularization_path", "sample_size", "validation_score"):  # some runs
            if record[key] is None:
                del record[key]
        for key in ("cg_reason", "line_search_reason"):  # plain strings in the log
            if isinstance(record[key], Enum):
                record[key] = record[key].value
        return record

    @classmethod
    def from_dict(cls, record):
        """The inverse of `as_dict` (for a history read back from a checkpoint)."""
        record = dict(record)
        record["lambda_"] = record.pop("lambda")
        return cls(**record)


@dataclass
class SolverState:
    """Where a solver stands after iteration (epoch) `iteration`: enough to continue
    it exactly, as the uninterrupted run would have.

    `theta` and every array of `vectors` are this rank's parts of parameter-shaped
    vectors (a checkpoint stores them dense, so another layout can resume).
    """

    iteration: int
    theta: np.ndarray
    generator: dict  # ``bit_generator.state`` of the solver's random stream
    scalars: dict = field(default_factory=dict)  # e.g. Newton's damping
    vectors: dict = field(default_factory=dict)  # e.g. SGD's velocity, Adam's moments


@dataclass
class RunResult:
    """Final parameters (this rank's part) and how the run ended."""

    theta: np.ndarray
    f: float
    gnorm: float
    iterations: int  # iterations (epochs) run, the last one included even if it failed
    status: RunStatus
    message: str
    history: list  # IterationRecord of every reported iteration, 0 first
