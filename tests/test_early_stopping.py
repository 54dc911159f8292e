"""Early stopping (scikit-learn's rule) for every solver: the rule on known score
sequences, and whole runs that keep the best validated model, resume with the
tracker's state, and refuse nonsensical settings by name. In process: on one rank
and under ``mpiexec -n 3``."""

from dataclasses import replace

import numpy as np
import pytest
from helpers import WORLD

from dnewton.app.early_stopping import BestModel, EarlyStopping
from dnewton.app.prediction import Predictor
from dnewton.app.problem import ModelConfig
from dnewton.app.regularization import split_rows
from dnewton.app.training import Outputs, train
from dnewton.errors import ParameterError
from dnewton.io.data import read_dataset
from dnewton.run_records import RunStatus
from dnewton.solvers.adam import AdamOptions
from dnewton.solvers.newton import NewtonOptions


def feed(tracker, scores):
    """Give `scores` for iterations 1, 2, ... until the tracker says stop; returns the
    iteration it stopped after (None: never)."""
    for iteration, score in enumerate(scores, start=1):
        if tracker.update(iteration, score, np.array([float(iteration)])):
            return iteration
    return None


def test_the_rule_is_scikit_learns():
    """A rise below tol is no improvement but still the best model; the count must
    exceed n_iter_no_change; a rise of tol or more resets it."""
    tracker = BestModel(EarlyStopping(n_iter_no_change=2, tol=0.01))
    # 0.50 best; 0.505 best, no improvement (1); 0.52 resets; 0.52, 0.515, 0.525: 1, 2, 3 > 2
    stopped = feed(tracker, [0.50, 0.505, 0.52, 0.52, 0.515, 0.525, 0.9])
    assert stopped == 6
    assert tracker.score == 0.525 and tracker.iteration == 6
    np.testing.assert_array_equal(tracker.theta, [6.0])
    assert "0.01 for 3 epoch(s)" in tracker.message()


def test_a_steady_rise_never_stops():
    tracker = BestModel(EarlyStopping(n_iter_no_change=1, tol=0.0))
    assert feed(tracker, np.linspace(0.1, 0.9, 20)) is None
    assert tracker.iteration == 20


def test_the_trackers_state_round_trips():
    tracker = BestModel(EarlyStopping(n_iter_no_change=5))
    feed(tracker, [0.3, 0.6, 0.5])
    scalars, vectors = tracker.state()
    again = BestModel(EarlyStopping(n_iter_no_change=5))
    scalars, vectors = dict(scalars, damping=1.0), dict(vectors, m=np.zeros(1))
    again.restore(scalars, vectors)
    assert (again.score, again.iteration, again.no_improvement) == (0.6, 2, 1)
    np.testing.assert_array_equal(again.theta, [2.0])
    assert scalars == {"damping": 1.0} and list(vectors) == ["m"]  # the solver's are left


@pytest.mark.parametrize("field, value, message", [
    ("validation_fraction", 1.0, "validation_fraction must be a fraction"),
    ("n_iter_no_change", 0, "n_iter_no_change must be a whole number >= 1"),
    ("tol", -1e-3, "tol must be >= 0"),
])
def test_nonsensical_settings_are_refused_by_name(field, value, message):
    with pytest.raises(ParameterError, match=message):
        EarlyStopping(**{field: value}).check()


def validation_accuracy(model, raw, seed):
    """Accuracy of the dense `model` on the validation split of `raw` (collective)."""
    _, validation = split_rows(raw, 0.2, seed, "early stopping")
    predictor = Predictor(WORLD, model)
    try:
        return float(np.mean(predictor.labels(validation) == validation.y))
    finally:
        predictor.close()


def epoch_ends(history, raw, early):
    """The iterations whose models early stopping scores: every record after the
    first (an epoch each) but with samples, where the instances drawn since the start
    pass another multiple of l, the training part's size, and the last."""
    if history[-1].sample_size is None:
        return [rec.iter for rec in history[1:]]
    l = raw.n_instances - len(split_rows(raw, early.validation_fraction, 0, "")[1].y)
    drawn = np.cumsum([0] + [rec.sample_size for rec in history[1:]])  # after k iterations
    last = len(history) - 1
    return [k for k in range(1, last + 1) if drawn[k] // l > drawn[k - 1] // l or k == last]


@pytest.mark.parametrize("options", [
    AdamOptions(learning_rate=0.05, epochs=25, seed=1),  # a rate too large: it wanders
    NewtonOptions(sample_size=200, gn_ratio=0.2, cg_max=5, iterations=25, seed=1),
], ids=["adam", "stochastic-newton"])
def test_the_model_returned_is_the_best_validated_one(options):
    """The run's model scores on the validation split exactly the best score its log
    holds, reached at the iteration the result names."""
    raw, _ = read_dataset("digits")
    early = EarlyStopping(validation_fraction=0.2, n_iter_no_change=3)
    config = ModelConfig(hidden=(32,), feature_scale=16, center=True, replicas=1)
    result = train(raw, None, config, options, Outputs(), comm=WORLD, return_model=True,
                   early_stopping=early)
    scored = [rec for rec in result.history if rec.validation_score is not None]
    assert [rec.iter for rec in scored] == epoch_ends(result.history, raw, early)
    scores = [rec.validation_score for rec in scored]
    best = scored[int(np.argmax(scores))].iter  # the first of equal scores, as the rule keeps
    assert validation_accuracy(result.model, raw, options.seed) == pytest.approx(
        max(scores), abs=1e-12)
    assert f"at iteration {best}" in result.message or result.iterations == 25
    if result.status == RunStatus.NO_IMPROVEMENT:
        assert result.iterations < 25 and f"{100 * max(scores):.2f}%" in result.message
    assert result.f == result.history[best].f


@pytest.mark.parametrize("options, part", [
    (AdamOptions(learning_rate=0.05, epochs=6, seed=2), {"epochs": 3}),
    # samples of 200 from 1,078 instances: epochs end at iterations 6, 11, 17, 22
    # (the instances drawn pass 1,078, 2,156, 3,234, 4,312) and the last is scored;
    # the resumed run must count the 3,400 drawn by the first 17 to score 22, not 23
    (NewtonOptions(sample_size=200, gn_ratio=0.2, cg_max=5, iterations=25, seed=2),
     {"iterations": 17}),
], ids=["adam", "stochastic-newton"])
def test_a_resumed_run_keeps_the_trackers_state(tmp_path, options, part):
    """Interrupted by its iteration count and resumed from the checkpoint: the same
    records and the same best model as the run that went straight through."""
    raw, _ = read_dataset("digits")
    early = EarlyStopping(validation_fraction=0.2, n_iter_no_change=50)
    config = ModelConfig(hidden=(16,), feature_scale=16, center=True, replicas=1)
    straight = train(raw, None, config, options, Outputs(), comm=WORLD, return_model=True,
                     early_stopping=early)
    folder = WORLD.bcast(str(tmp_path / "ck") if WORLD.rank == 0 else None)
    train(raw, None, config, replace(options, **part),
          Outputs(checkpoint=folder, checkpoint_every=1), comm=WORLD, early_stopping=early)
    resumed = train(raw, None, config, options, Outputs(resume=folder), comm=WORLD,
                    return_model=True, early_stopping=early)
    assert ([r.validation_score for r in resumed.history]
            == [r.validation_score for r in straight.history])
    for name in ("weights", "biases"):
        for a, b in zip(getattr(resumed.model, name), getattr(straight.model, name)):
            np.testing.assert_array_equal(a, b)
