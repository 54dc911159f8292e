"""Figures of run logs: f, ||g|| and test accuracy against iterations and time.

Needs matplotlib, the optional extra ``plot`` (``pip install 'dnewton[plot]'``).
Drawing uses matplotlib's object interface with the Agg canvas, so it needs no
display and leaves no global pyplot state behind.
"""

import math
from pathlib import Path

from ..errors import InputError
from ..io.run_log import read_log

# (record key, axis label, logarithmic axis)
QUANTITIES = [
    ("f", "objective f", True),
    ("gnorm", "gradient norm ||g||", True),
    ("test_accuracy", "test accuracy", False),
]


def plot_logs(paths, output):
    """Draw the logs at `paths` (one line each, named by file) into the image `output`.

    Top row against Newton iterations, bottom row against seconds; one column
    per quantity of `QUANTITIES`. The image format follows `output`'s suffix.
    Returns the matplotlib `Figure`.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(
            "dnewton plot needs matplotlib: pip install 'dnewton[plot]' (or matplotlib)"
        ) from None
    runs = [(Path(path).name, read_log(path)) for path in paths]
    figure = Figure(figsize=(13, 7), layout="constrained")
    axes = figure.subplots(2, len(QUANTITIES))
    for column, (key, label, logarithmic) in enumerate(QUANTITIES):
        for name, records in runs:
            values = [math.nan if r.get(key) is None else r[key] for r in records]
            axes[0, column].plot([r["iter"] for r in records], values, label=name)
            axes[1, column].plot([r["time"] for r in records], values, label=name)
        for row, xlabel in enumerate(("Newton iteration", "time (s)")):
            ax = axes[row, column]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            if logarithmic:
                ax.set_yscale("log")
            if key == "test_accuracy" and all(r.get(key) is None for _, rs in runs for r in rs):
                ax.text(0.5, 0.5, "no test set in the log(s)", ha="center",
                        transform=ax.transAxes)
    axes[0, 0].legend()
    try:
        figure.savefig(output, dpi=100)
    except (OSError, ValueError) as exc:
        raise InputError(f"{output}: cannot write the figure ({exc})") from None
    return figure
