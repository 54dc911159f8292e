"""Run the commands that README.md and docs/*.md show, and put what they print under them.

A ```console block holds commands after "$ " (a line ending in a backslash goes on
on the next one), each followed by what it prints; a line "..." stands for lines left
out. A ```python block whose first line is ``# NAME.py`` is written to NAME.py for the
commands after it; any other ```python block is run as a script. Other blocks (``sh``:
installation and cluster steps) are not run. The commands of one document run in
order, in one scratch folder, under bash with the repository's .venv/bin first on
PATH; ``make`` runs in the repository.

    python docs/regenerate.py [DOCUMENT ...]           rewrite the outputs in place
    python docs/regenerate.py --check [DOCUMENT ...]   compare only; exit 1 if any differs

``--quick`` runs a tenth of the iterations, epochs and calibration seconds, and of a
python block's ``max_iter`` (the test suite's setting). The comparison ignores every
number (timings, f, accuracies vary), treats
"..." as any run of lines, a run of lines that differ only in their numbers as one
line (fewer iterations print fewer lines of the same form), and the place of a
warning (standard error); what ``echo $?`` prints (an exit status) must be exact.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/usage.md", "docs/scaling.md")
ELLIPSIS = "..."
PROMPT = "$ "
WARNING = "dnewton: warning: "
TIMEOUT = 300  # seconds per command


@dataclass
class Step:
    """One command of a console block, and the lines shown as its output."""

    command: str
    shown: list = field(default_factory=list)


@dataclass
class Block:
    """A fenced block: its kind, and the line numbers of its body [start, stop)."""

    kind: str
    start: int
    stop: int
    lines: list

    def steps(self):
        """The console block's commands with their shown outputs."""
        steps, continued = [], False
        for line in self.lines:
            if line.startswith(PROMPT) or continued:
                text = line[len(PROMPT):] if not continued else line
                if continued:
                    steps[-1].command += "\n" + text
                else:
                    steps.append(Step(text))
                continued = line.endswith("\\")
            elif steps:
                steps[-1].shown.append(line)
        return steps


def blocks(text):
    """The fenced blocks of a Markdown text."""
    found, lines, opened = [], text.split("\n"), None
    for number, line in enumerate(lines):
        if line.startswith("```"):
            if opened is None:
                opened = (line[3:].strip(), number + 1)
            else:
                kind, start = opened
                found.append(Block(kind, start, number, lines[start:number]))
                opened = None
    return found


def shorten(command):
    """The command with a tenth of its iterations and epochs, rounded up (--quick):
    a resumed run still goes beyond its checkpoint."""
    tenth = lambda m: f"{m.group(1)} {-(-int(m.group(2)) // 10)}"  # noqa: E731
    command = re.sub(r"(--iterations|--epochs|--path-iterations|--seconds) (\d+)", tenth,
                     command)
    command = re.sub(r"(max_iter=)(\d+)", lambda m: f"{m.group(1)}{-(-int(m.group(2)) // 10)}",
                     command)  # the estimator's, in a python block
    return re.sub(r"^make demo\b", "make demo ITERATIONS=3", command)


def environment():
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPIEXEC_TIMEOUT", str(TIMEOUT))
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run(command, folder, status=0):
    """(exit status, printed lines) of `command` run by bash in `folder` (the
    repository for make), after a command that ended with `status` (for ``$?``)."""
    where = folder
    if command.startswith("make "):
        # in the repository, with the .venv as it is: never a rebuild in passing
        # --no-print-directory: under make test (a make within make) make would add
        # its "Entering directory" lines to the output.
        where, command = ROOT, command.replace(
            "make ", "make --no-print-directory -o .venv/.installed ", 1)
    proc = subprocess.run(["bash", "-c", f"(exit {status}); {command}"], cwd=where,
                          env=environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    return proc.returncode, proc.stdout.rstrip("\n").split("\n") if proc.stdout else []


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def pattern(line):
    """`line` with every number as '#' and no spaces (columns align by the numbers'
    widths)."""
    return "".join(_NUMBER.sub("#", line).split())


def _squeezed(lines):
    """Patterns of `lines`, a run of equal ones kept once (across a "..." too)."""
    out = []
    for line in lines:
        p = ELLIPSIS if line.strip() == ELLIPSIS else pattern(line)
        if out and out[-1] == p or out[-2:] == [p, ELLIPSIS]:
            continue
        out.append(p)
    return out


def _warning(line):
    return line.startswith(WARNING)


def matches(shown, printed):
    """Whether `printed` is what `shown` shows, numbers apart ("..." is any lines).

    Warnings are compared apart from their place: they go to standard error, and an
    MPI launcher does not keep its order against standard output.
    """
    warnings = [sorted(pattern(line) for line in lines if _warning(line))
                for lines in (shown, printed)]
    if warnings[0] != warnings[1]:
        return False
    want = _squeezed([line for line in shown if not _warning(line)])
    have = _squeezed([line for line in printed if not _warning(line)])
    # ok[i][j]: want[:i] matches have[:j]
    ok = [[False] * (len(have) + 1) for _ in range(len(want) + 1)]
    ok[0][0] = True
    for i in range(1, len(want) + 1):
        ok[i][0] = ok[i - 1][0] and want[i - 1] == ELLIPSIS
        for j in range(1, len(have) + 1):
            if want[i - 1] == ELLIPSIS:
                ok[i][j] = ok[i - 1][j] or ok[i][j - 1]
            else:
                ok[i][j] = ok[i - 1][j - 1] and want[i - 1] == have[j - 1]
    return ok[len(want)][len(have)]


def abridged(shown, printed):
    """`printed` cut as `shown` is: its first lines, "...", its last lines (and every
    warning)."""
    if ELLIPSIS not in [line.strip() for line in shown]:
        return printed
    cut = [line.strip() for line in shown].index(ELLIPSIS)
    head = len([line for line in shown[:cut] if not _warning(line)])
    tail = len(shown) - cut - 1
    # the first `head` lines that are not warnings, and the warnings among them
    stop = 0
    while head and stop < len(printed):
        head -= not _warning(printed[stop])
        stop += 1
    if len(printed) <= stop + tail + 1:
        return printed
    left_out = printed[stop:len(printed) - tail]
    return (printed[:stop] + [line for line in left_out if _warning(line)] + [ELLIPSIS]
            + printed[len(printed) - tail:])


def process(document, folder, quick=False, write=False):
    """Run the commands of `document` in `folder`; return the differences found
    (a list of texts), and with `write` put the printed outputs in the document."""
    path = ROOT / document
    text = path.read_text()
    lines = text.split("\n")
    differences, status, replaced = [], 0, {}
    for block in blocks(text):
        if block.kind == "python":
            script = "\n".join(block.lines)
            script = shorten(script) if quick else script
            name = re.match(r"# (\w+\.py)\s*$", block.lines[0]) if block.lines else None
            target = Path(folder) / (name.group(1) if name else "block.py")
            target.write_text(script + "\n")
            if name is None:
                code, printed = run(f"python {target.name}", folder)
                if code != 0:
                    differences.append(f"{document}:{block.start}: the python block exited "
                                       f"{code}:\n" + "\n".join(printed))
            continue
        if block.kind != "console":
            continue
        body = []
        for step in block.steps():
            command = shorten(step.command) if quick else step.command
            status, printed = run(command.replace("\\\n", " "), folder, status)
            exact = command.strip() == "echo $?"  # an exit status is no number that varies
            if not (printed == step.shown if exact else matches(step.shown, printed)):
                differences.append(
                    f"{document}:{block.start}: $ {command}\n--- shown\n"
                    + "\n".join(step.shown) + "\n--- printed\n" + "\n".join(printed))
            command_lines = step.command.split("\n")
            body += [PROMPT + command_lines[0], *command_lines[1:]]
            body += abridged(step.shown, printed)
        replaced[block.start] = (block.stop, body)
    if write:
        out, number = [], 0
        while number < len(lines):
            if number in replaced:
                stop, body = replaced[number]
                out += body
                number = stop
            else:
                out.append(lines[number])
                number += 1
        path.write_text("\n".join(out))
    return differences


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("documents", nargs="*", default=list(DOCUMENTS),
                        help="paths from the repository's root (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare only")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the iterations and epochs")
    args = parser.parse_args(argv)
    differences = []
    for document in args.documents:
        with tempfile.TemporaryDirectory(prefix="dnewton-docs-") as folder:
            differences += process(document, folder, args.quick, write=not args.check)
    for difference in differences:
        print(difference, end="\n\n")
    if args.check:
        return 1 if differences else 0
    print(f"rewrote {', '.join(args.documents)}; {len(differences)} output(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
