"""The command line: its help, and a run that trains and logs what a run reports."""

from dataclasses import fields

import numpy as np
import pytest
from helpers import read_log, run_dnewton

from dnewton.app.cli import build_parser, flags
from dnewton.app.problem import PAPER_OBJECTIVE, ModelConfig
from dnewton.app.training import Outputs
from dnewton.errors import ParameterError
from dnewton.solvers.adam import AdamOptions
from dnewton.solvers.newton import STOCHASTIC, NewtonOptions
from dnewton.solvers.sgd import SGDOptions

# Library parameters with no flag: the line search's and the damping's constants.
INTERNAL = {"eta", "max_halvings", "boost", "drop"}
# Flags shared by solvers whose defaults differ: the flag's default is None and the
# help names each solver's.
PER_SOLVER = {"learning_rate"}

SMALL = ["--hidden", "8", "--iterations", "2", "--quiet"]


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def tiny_libsvm(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        feats = " ".join(f"{j + 1}:{rng.uniform(0, 1):.4f}" for j in range(6))
        lines.append(f"{i % 3} {feats}")
    return write(tmp_path / "tiny.svm", "\n".join(lines) + "\n")


def train_parser():
    return build_parser()._subparsers._group_actions[0].choices["train"]


@pytest.mark.parametrize("settings", [ModelConfig, NewtonOptions, SGDOptions, AdamOptions,
                                      Outputs])
def test_every_parameter_has_a_flag_with_the_library_default(settings):
    # The command line is a view of the library: each parameter has its flag,
    # the flag's default is the library's, and the help shows it.
    actions = {action.dest: action for action in train_parser()._actions}
    names = flags(build_parser())
    help_text = " ".join(train_parser().format_help().split())
    for field in fields(settings):
        if field.name in INTERNAL:
            continue
        assert field.name in names, f"{field.name} has no flag"
        default = actions[field.name].default
        if field.name in PER_SOLVER:
            assert default is None and f"{field.default:g} with {settings.NAME}" in help_text
            continue
        if field.name in STOCHASTIC:  # unset: the library's, or beyond STOCHASTIC_FROM
            # instances the recommended setting's, which --sample-size's help lists
            assert default in (None, "auto")
            flag = "--" + field.name.replace("_", "-")
            assert f"{flag} {STOCHASTIC[field.name]:g}" in help_text
            continue
        if field.name in PAPER_OBJECTIVE:  # None: the library's, or the paper's with --paper
            shown = [f"{v:g}" if isinstance(v, float) else v
                     for v in (field.default, PAPER_OBJECTIVE[field.name])]
            assert default is None
            assert f"(default: {shown[0]}; {shown[1]} with --paper)" in help_text
            continue
        assert default == field.default, (field.name, default, field.default)
        if default not in (None, False):
            assert f"(default: {default})" in help_text or f"default: {default}" in help_text


def test_messages_name_the_flags_on_the_command_line():
    names = flags(build_parser())
    error = ParameterError("{damping} must be >= 0; see {gn_ratio} and {C}")
    assert str(error) == "damping must be >= 0; see gn_ratio and C"
    assert error.render(names.get) == "--lambda must be >= 0; see --gn-ratio and -C"


@pytest.mark.mpi
def test_help_answers():
    proc = run_dnewton(1, ["train", "--help"])
    assert proc.stdout.startswith("usage: dnewton train")
    for option in ("--partitions", "--gn-ratio", "--feature-scale", "--log", "--lambda"):
        assert option in proc.stdout


@pytest.mark.mpi
def test_trains_a_libsvm_file_on_two_ranks(tiny_libsvm, tmp_path):
    log = tmp_path / "log.jsonl"
    proc = run_dnewton(2, ["train", tiny_libsvm, "--test", tiny_libsvm, *SMALL, "--log", log])
    assert proc.stdout == ""  # --quiet
    records = read_log(log)
    assert [r["iter"] for r in records] == [0, 1, 2]
    for key in ("f", "gnorm", "cg_iters", "alpha", "lambda", "time", "test_accuracy", "bytes"):
        assert key in records[-1]
    assert set(records[-1]["bytes"]) >= {"forward", "backward", "gauss_newton"}
    assert 0 <= records[-1]["test_accuracy"] <= 1


@pytest.mark.parametrize("given, want", [
    ([], (ModelConfig.loss, ModelConfig.C)),
    (["--paper"], (PAPER_OBJECTIVE["loss"], PAPER_OBJECTIVE["C"])),
    (["--paper", "-C", "0.1"], (PAPER_OBJECTIVE["loss"], 0.1)),
    (["--loss", "squared"], ("squared", ModelConfig.C)),
])
def test_paper_switches_the_objective_defaults_only(given, want):
    from dnewton.app.cli import _objective

    args = build_parser().parse_args(["train", "digits", *given])
    assert _objective(args) == want
