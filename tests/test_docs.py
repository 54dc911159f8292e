"""The documents' commands run, and print what the documents show (docs/regenerate.py)."""

import importlib.util
from pathlib import Path

import pytest
from helpers import WORLD

ROOT = Path(__file__).resolve().parents[1]


def load_regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", ROOT / "docs" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regenerate = load_regenerate()


def test_console_blocks_split_into_commands_and_outputs():
    text = ("intro\n```console\n$ dnewton train digits \\\n    --iterations 3\niter 0\n...\n"
            "iter 3\n$ echo $?\n0\n```\n```sh\npip install .\n```\n")
    found = regenerate.blocks(text)
    assert [b.kind for b in found] == ["console", "sh"]
    steps = found[0].steps()
    assert [s.command for s in steps] == ["dnewton train digits \\\n    --iterations 3", "echo $?"]
    assert [s.shown for s in steps] == [["iter 0", "...", "iter 3"], ["0"]]


@pytest.mark.parametrize("shown, printed, same", [
    (["f 1.5 at 0.2s"], ["f 2.25e-03 at 10s"], True),  # numbers vary
    (["f 1.5"], ["g 1.5"], False),  # words do not
    (["[[0.    1.   ]"], ["[[0.001 0.999]"], True),  # nor do columns
    (["iter 0  f 1", "iter 1  f 2  cg 3", "...", "iter 100  f 3  cg 4", "stopped after 100"],
     ["iter 0  f 1", "iter 1  f 2  cg 3", "iter 2  f 2  cg 3", "stopped after 2"], True),
    (["a", "...", "z"], ["a", "b", "c", "z"], True),
    (["a", "...", "z"], ["a", "b"], False),
    (["a", "b"], ["a"], False),
    (["a", "dnewton: warning: x", "b"], ["dnewton: warning: x", "a", "b"], True),
    (["a", "b"], ["dnewton: warning: x", "a", "b"], False),  # a warning not shown
])
def test_outputs_match_apart_from_numbers(shown, printed, same):
    assert regenerate.matches(shown, printed) is same


def test_quick_runs_are_shorter():
    assert regenerate.shorten(
        "dnewton train x --iterations 100 --epochs 21 --path-iterations 5") == (
        "dnewton train x --iterations 10 --epochs 3 --path-iterations 1")
    assert regenerate.shorten("make demo") == "make demo ITERATIONS=3"
    assert regenerate.shorten("NewtonClassifier(max_iter=50)") == "NewtonClassifier(max_iter=5)"


def test_a_regenerated_output_keeps_the_documents_cut():
    printed = [f"line {i}" for i in range(10)]
    assert regenerate.abridged(["a", "b", "...", "z"], printed) == [
        "line 0", "line 1", "...", "line 9"]
    assert regenerate.abridged(["a"], printed) == printed
    warned = ["dnewton: warning: w", *printed]
    assert regenerate.abridged(["a", "b", "...", "z"], warned) == [
        "dnewton: warning: w", "line 0", "line 1", "...", "line 9"]
    warned_within = [*printed[:5], "dnewton: warning: w", *printed[5:]]
    assert regenerate.abridged(["...", "z"], warned_within) == [
        "dnewton: warning: w", "...", "line 9"]


@pytest.mark.mpi
@pytest.mark.docs
@pytest.mark.parametrize("document", regenerate.DOCUMENTS)
def test_every_command_of_a_document_prints_what_it_shows(document, tmp_path):
    if WORLD.size > 1:
        pytest.skip("starts mpiexec itself: one-process suite only")
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.skip("the documents' commands use the .venv that make builds")
    differences = regenerate.process(document, tmp_path, quick=True)
    assert not differences, "\n\n".join(differences) + (
        f"\n\n(python docs/regenerate.py {document} rewrites the outputs)")


# Flags of other tools that the documents show: pip, sbatch, bench/peers.py.
OTHER_TOOLS = {"--no-binary", "--compare", "--repeat", "--cpus-per-task", "--job-name",
               "--nodes", "--ntasks", "--ntasks-per-node", "--open-mode", "--requeue",
               "--signal", "--time"}


@pytest.mark.parametrize("document", [*regenerate.DOCUMENTS, "docs/design.md"])
def test_every_flag_a_document_names_exists(document):
    import argparse
    import re

    from dnewton.app.cli import _parsers, build_parser

    actions = [action for parser in _parsers(build_parser()) for action in parser._actions]
    known = {flag for action in actions if action.help != argparse.SUPPRESS
             for flag in action.option_strings}
    former = {flag for action in actions if action.help == argparse.SUPPRESS  # refused
              for flag in action.option_strings}
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", (ROOT / document).read_text()))
    assert named - known - former - OTHER_TOOLS == set()
    # a former name only where the document says it is refused
    text = (ROOT / document).read_text()
    for flag in named & former:
        assert all("refused" in text[max(0, i - 200):i + 200]
                   for i in (m.start() for m in re.finditer(re.escape(flag), text))), flag


def bench_commands():
    """(script, flags) of every bench/NAME.py or bench/studies/NAME.py command the
    documents show (script "NAME" or "studies/NAME"), its flags being those on the
    same line after it (up to a backtick, ')' or '#')."""
    import re

    found = set()
    for document in (*regenerate.DOCUMENTS, "docs/benchmarks.md", "docs/experiment.md",
                     "docs/design.md", "bench/README.md"):
        text = (ROOT / document).read_text()
        for match in re.finditer(r"bench/((?:studies/)?\w+)\.py([^`)#\n]*)", text):
            flags = tuple(sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", match.group(2)))))
            found.add((match.group(1), flags))
    return sorted(found)


def test_every_bench_command_of_the_documents_names_flags_its_script_defines():
    """The scripts' sources, not their --help (which imports what they compare with):
    each flag is a string of the script's own."""
    for script, flags in bench_commands():
        path = ROOT / "bench" / f"{script}.py"
        assert path.exists(), f"bench/{script}.py"
        source = path.read_text()
        missing = [flag for flag in flags if f'"{flag}"' not in source]
        assert not missing or script == "waits", f"bench/{script}.py has no {missing}"


@pytest.mark.bench  # runs every bench/ script's --help: make test-bench
def test_every_bench_command_of_the_documents_exists_with_its_flags():
    import subprocess
    import sys

    if WORLD.size > 1:
        pytest.skip("starts processes itself: one-process suite only")
    helps = {}
    for script, flags in bench_commands():
        path = ROOT / "bench" / f"{script}.py"
        assert path.exists(), f"bench/{script}.py"
        if script == "waits":  # it passes dnewton train's own flags through
            continue
        if script not in helps:
            proc = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            helps[script] = proc.stdout
        missing = [flag for flag in flags if flag not in helps[script]]
        assert not missing, f"bench/{script}.py has no {missing}"
