"""The command line: its help, the options it refuses, and runs that train, log and
predict."""

import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from helpers import WORLD, read_log, run_dnewton

from dnewton.app.cli import build_parser, flags
from dnewton.app.problem import PAPER_DTYPE, PAPER_OBJECTIVE, ModelConfig
from dnewton.app.training import Outputs
from dnewton.errors import ParameterError
from dnewton.solvers.adam import AdamOptions
from dnewton.solvers.newton import STOCHASTIC, SUBSET_FLOOR, NewtonOptions
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
        if field.name == "gn_min":  # None: the recommended setting's floor, or 1
            assert default is None and f"(default: {SUBSET_FLOOR} without" in help_text
            continue
        if field.name == "dtype":  # None: the library's, or the paper's with --paper
            assert default is None
            assert f"Default: {field.default}; {PAPER_DTYPE} with --paper" in help_text
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
    ([], (ModelConfig.loss, ModelConfig.C, "float32")),
    (["--paper"], (PAPER_OBJECTIVE["loss"], PAPER_OBJECTIVE["C"], "float64")),
    (["--paper", "-C", "0.1"], (PAPER_OBJECTIVE["loss"], 0.1, "float64")),
    (["--paper", "--dtype", "float32"], (*PAPER_OBJECTIVE.values(), "float32")),
    (["--loss", "squared"], ("squared", ModelConfig.C, "float32")),
    (["--solver", "adam"], (ModelConfig.loss, ModelConfig.C, "float32")),
])
def test_paper_switches_the_objective_and_precision_defaults_only(given, want):
    from dnewton.app.cli import _objective_and_precision

    args = build_parser().parse_args(["train", "digits", *given])
    assert _objective_and_precision(args) == want


@pytest.mark.parametrize("given, subset", [
    ([], 200),  # the recommended floor: 5% of 2,000 is 100
    (["--gn-ratio", "0.05"], 100),
    (["--gn-ratio", "0.01", "--gn-min", "50"], 50),
    (["--gn-min", "500"], 500),
    (["--gn-size", "30"], 30),
    (["--paper"], 100),
    (["--sample-size", "all"], 100),
])
def test_the_gauss_newton_subset_follows_the_flags(given, subset):
    from dnewton.app.cli import _newton_options

    args = build_parser().parse_args(["train", "mnist-demo", *given])
    assert _newton_options(args, 2000).subset_size(2000) == subset


# -- options that apply to some runs only ----------------------------------------------

# Runs in which every option of `APPLIES` applies, and in which each of them does not.
MODES = ["-C", "auto", "--checkpoint", "ck", "--early-stopping"]
BASES = [[*solver, *mode] for solver in (["--solver", "newton"], ["--solver", "sgd"],
                                         ["--solver", "adam"])
         for mode in ([], MODES)]
BASES.append(["--solver", "newton", "--diagonal", "--sample-size", "100", *MODES])


def refusal(argv):
    """The message refusing `argv`'s inapplicable option, as the command line prints
    it, or None."""
    from dnewton.app.cli import given_options, refuse_inapplicable

    args = build_parser().parse_args(argv)
    try:
        refuse_inapplicable(args, given_options(argv))
    except ParameterError as exc:
        return exc.render(flags(build_parser()).get)
    return None


def a_value(action):
    """Command-line words that set `action` to a valid value."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [list(action.choices)[-1]]
    if isinstance(action.default, tuple):
        return [",".join(map(str, action.default))]
    return ["1" if action.default is None else str(action.default)]


def test_every_option_of_the_table_is_refused_by_name_where_it_does_not_apply():
    from dnewton.app.cli import APPLIES

    actions = {a.dest: a for a in train_parser()._actions if a.option_strings}
    for dest in APPLIES:
        if dest not in actions:  # another command's (predict --proba: below)
            continue
        flag = max(actions[dest].option_strings, key=len)
        given = [flag, *a_value(actions[dest])]
        outcomes = [refusal(["train", "digits", *base, *given]) for base in BASES]
        assert None in outcomes, f"{flag} applies to no run"
        refused = [m for m in outcomes if m is not None]
        assert refused, f"{flag} applies to every run: it needs no line in APPLIES"
        assert all(m.startswith(f"{flag} applies ") for m in refused), refused


@pytest.mark.parametrize("given, message", [
    # given at its default value is still given: the user asked for something
    (["--epochs", "20"], "--epochs applies to --solver sgd or adam only, not to newton"),
    (["--learning-rate", "0.1"],
     "--learning-rate applies to --solver sgd or adam only, not to newton"),
    (["--mini-batch", "64"], "--mini-batch applies to --solver sgd or adam only, not to newton"),
    (["--solver", "sgd", "--iterations", "5"],
     "--iterations applies to --solver newton only, not to sgd"),
    (["--solver", "adam", "--lambda", "2"],
     "--lambda applies to --solver newton only, not to adam"),
    (["--solver", "sgd", "--xi", "0.1"], "--xi applies to --solver newton only, not to sgd"),
    (["--solver", "sgd", "--gn-ratio", "0.1"],
     "--gn-ratio applies to --solver newton only, not to sgd"),
    (["--solver", "adam", "--momentum", "0.5"],
     "--momentum applies to --solver sgd only, not to adam"),
    (["--solver", "sgd", "--beta1", "0.5"], "--beta1 applies to --solver adam only, not to sgd"),
    (["--C-grid", "1,2"], "--C-grid applies only with -C auto"),
    (["-C", "0.5", "--holdout", "0.3"], "--holdout applies only with -C auto"),
    (["--search-budget", "0.5"], "--search-budget applies only with -C auto"),
    (["--sync-fraction", "0.5"], "--sync-fraction applies only with --diagonal"),
    (["--solver", "sgd", "--diagonal", "--sync-fraction", "0.5"],
     "--diagonal applies to --solver newton only, not to sgd"),
    (["--checkpoint-every", "2"], "--checkpoint-every applies only with --checkpoint"),
    (["--solver", "sgd", "--sample-size", "100"],
     "--sample-size applies to --solver newton only, not to sgd"),
    (["--sample-size", "all", "--sample-growth", "2"],
     "--sample-growth applies only with --sample-size"),
    (["--tol", "0.01"], "--tol applies only with --early-stopping"),
    (["--solver", "sgd", "--average", "0.9"],
     "--average applies to --solver newton only, not to sgd"),
    (["--solver", "adam", "--validation-fraction", "0.2"],
     "--validation-fraction applies only with --early-stopping"),
])
def test_an_option_that_does_not_apply_is_refused_by_name(given, message):
    assert refusal(["train", "digits", *given]) == message


@pytest.mark.parametrize("given", [
    [], ["--solver", "sgd", "--epochs", "2", "--momentum", "0.5", "--learning-rate", "0.1"],
    ["--solver", "adam", "--beta2", "0.99", "--mini-batch", "10"],
    ["--diagonal", "--sync-fraction", "0.5", "--iterations", "3", "--xi", "0.2"],
    ["-C", "auto", "--C-grid", "1,2", "--holdout", "0.3", "--search-budget", "0.5"],
    ["--checkpoint", "ck", "--checkpoint-every", "2"],
    ["--sample-size", "100", "--sample-growth", "1.5"],
    ["--solver", "sgd", "--early-stopping", "--n-iter-no-change", "3", "--tol", "0"],
])
def test_options_that_apply_are_accepted(given):
    assert refusal(["train", "digits", *given]) is None


def test_predict_refuses_proba_without_output():
    assert refusal(["predict", "m.npz", "digits", "--proba"]) == (
        "--proba applies only with --output")
    assert refusal(["predict", "m.npz", "digits", "--proba", "--output", "-"]) is None


def test_a_refusal_ends_the_command_with_one_message_and_status_2(capsys, monkeypatch):
    # In-process: one rank here, and every rank alike in the suite's mpiexec -n 3 run
    # (the refusal comes before any collective; rank 0 alone prints it).
    from dnewton.app.cli import main

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main installs its own
    with pytest.raises(SystemExit) as exited:
        main(["train", "digits", "--solver", "adam", "--iterations", "3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    expected = "dnewton: error: --iterations applies to --solver newton only, not to adam\n"
    assert err == (expected if WORLD.rank == 0 else "")


@pytest.mark.mpi
def test_a_refusal_on_three_ranks_is_one_message_and_status_2():
    proc = run_dnewton(3, ["train", "digits", "--epochs", "3"], check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("dnewton: error: --epochs applies to --solver sgd or adam only, "
                           "not to newton\n"), proc.stderr


@pytest.mark.parametrize("command", ["train", "predict", "plan"])
def test_the_memory_chunk_is_chunk_size_and_batch_size_says_so(command, capsys):
    head = {"train": ["train", "digits"], "predict": ["predict", "m.npz", "digits"],
            "plan": ["plan", "digits", "--ranks", "2"]}[command]
    assert build_parser().parse_args([*head, "--chunk-size", "64"]).batch_size == 64
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*head, "--batch-size", "64"])
    assert exited.value.code == 2
    assert ("--batch-size is now --chunk-size (instances per pass through memory); the "
            "mini-batch of --solver sgd and adam is --mini-batch") in capsys.readouterr().err


@pytest.mark.parametrize("text, widths", [("", ()), ("0", ()), ("16", (16,)),
                                          ("16,8", (16, 8))])
def test_hidden_empty_or_zero_is_no_hidden_layer(text, widths):
    assert build_parser().parse_args(["train", "digits", "--hidden", text]).hidden == widths


def test_a_command_line_from_a_file(tmp_path):
    from dnewton.app.cli import given_options

    path = write(tmp_path / "run.args", "train digits\n"
                 "--hidden 16,8   # two hidden layers\n"
                 "--solver sgd --epochs 2\n"
                 "--log 'my run.jsonl'\n")
    argv = [f"@{path}", "--seed", "3"]
    args = build_parser().parse_args(argv)
    assert (args.train, args.hidden, args.solver, args.epochs, args.log, args.seed) == (
        "digits", (16, 8), "sgd", 2, "my run.jsonl", 3)
    assert {"hidden", "solver", "epochs", "log", "seed"} <= given_options(argv)
    assert "iterations" not in given_options(argv)


def subcommands():
    return build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("name", list(subcommands()))
def test_every_subcommand_lists_its_exit_statuses(name):
    text = " ".join(subcommands()[name].format_help().split())
    assert "Exit status: 0 " in text and "1 internal error." in text
    if name != "datasets":
        assert "; 2 " in text
    if name == "train":
        assert "; 3 numerical failure" in text and "; 75 stopped early" in text


# -- a linear model, its predictions, unlabelled data ------------------------------------


def shared_folder(tmp_path):
    """Rank 0's tmp_path, on every rank (files one rank writes and all read)."""
    return Path(WORLD.bcast(str(tmp_path), root=0))


def test_a_linear_model_predicts_exact_labels_and_probabilities(tmp_path, capsys):
    from dnewton.app.cli import given_options, run_predict, run_train

    folder = shared_folder(tmp_path)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 5))
    classes = np.array([1234567.0, 2.5, -3.0])
    y = classes[np.argmax(X[:, :3], axis=1)]
    if WORLD.rank == 0:
        np.savez(folder / "train.npz", X=X, y=y)
        np.savez(folder / "unlabelled.npz", X=X[:7])
    WORLD.Barrier()

    def run(run, *argv):
        argv = [str(word) for word in argv]
        args = build_parser().parse_args(argv)
        args.given = given_options(argv)
        return run(args)

    assert run(run_train, "train", folder / "train.npz", "--hidden", "", "--iterations", "4",
               "--quiet") == 0
    assert "warning: neither --model nor --checkpoint" in capsys.readouterr().err or WORLD.rank
    model = folder / "model.npz"
    assert run(run_train, "train", folder / "train.npz", "--hidden", "0", "--iterations", "10",
               "--quiet", "--model", model) == 0
    assert "warning" not in capsys.readouterr().err
    assert tuple(np.load(model)["widths"]) == (5, 3)

    out = folder / "labels.txt"
    assert run(run_predict, "predict", model, folder / "unlabelled.npz", "--output", out,
               "--proba") == 0
    summary = capsys.readouterr().out
    if WORLD.rank == 0:
        assert summary == (f"dnewton: {folder / 'unlabelled.npz'}: 7 instances; labels and "
                           f"probabilities written to {out}\n")
        header, *rows = out.read_text().splitlines()
        assert header == "# label p(-3) p(2.5) p(1234567)"
        words = [row.split() for row in rows]
        proba = np.array([[float(p) for p in row[1:]] for row in words])
        np.testing.assert_allclose(proba.sum(axis=1), 1)
        assert [row[0] for row in words] == [
            {-3.0: "-3", 2.5: "2.5", 1234567.0: "1234567"}[c]
            for c in np.sort(classes)[np.argmax(proba, axis=1)]]
        # a linear model this long separates what a linear rule made
        assert sum(row[0] == text for row, text in zip(words, [
            {-3.0: "-3", 2.5: "2.5", 1234567.0: "1234567"}[c] for c in y[:7]])) >= 6
    WORLD.Barrier()  # rank 0 has read the file before another test's rank 0 may reuse names


@pytest.mark.parametrize("label, text", [(1234567.0, "1234567"), (-3.0, "-3"), (2.5, "2.5"),
                                         (0.1, "0.1"), (1e20, "100000000000000000000"),
                                         (1 / 3, repr(1 / 3))])
def test_labels_are_written_exactly(label, text):
    from dnewton.app.cli import label_text

    assert label_text(np.float64(label)) == text
    assert float(label_text(label)) == label
