"""The end-of-run table of where the time went, by phase (``--log-view``).

PETSc's ``-log_view`` is the model: per phase, the seconds computing and
waiting for communication (the mean over ranks), their share of the training
time, the FLOPs (summed over ranks, from the kernels' formulas), the rate of all
ranks together (to hold against the node's DGEMM rate), and the data the
collectives moved.
"""

from ..parallel.phases import TRAINING_PHASES, Phase


def log_view(records):
    """The table, as text, of a run's log records (`IterationRecord`s or their dicts)."""
    records = [r if isinstance(r, dict) else r.as_dict() for r in records]
    totals = {p.value: {"compute": 0.0, "wait": 0.0, "flops": 0.0, "bytes": 0}
              for p in Phase}
    for record in records:
        for phase, row in totals.items():
            spent = record.get("seconds", {}).get(phase, {})
            row["compute"] += spent.get("compute", 0.0)
            row["wait"] += spent.get("wait", 0.0)
            row["flops"] += record.get("flops", {}).get(phase, 0.0)
            row["bytes"] += record.get("bytes", {}).get(phase, 0)
    training = sum(r["iteration_time"] for r in records)
    lines = [
        f"Where the time went: {len(records) - 1} iteration(s) and the start, "
        f"{training:.3f} s of training. Seconds: mean over ranks; GFLOP and MiB: summed "
        "over ranks; GFLOP/s: of all ranks together (GFLOP over compute seconds).",
        f"{'phase':<14}{'compute s':>10}{'wait s':>9}{'share':>8}{'GFLOP':>10}"
        f"{'GFLOP/s':>9}{'MiB':>10}",
    ]

    def row(name, values, share=True):
        seconds = values["compute"] + values["wait"]
        rate = values["flops"] / values["compute"] / 1e9 if values["compute"] > 0 else 0.0
        share = f"{100 * seconds / training:7.1f}%" if share and training > 0 else " " * 8
        return (f"{name:<14}{values['compute']:>10.3f}{values['wait']:>9.3f}{share}"
                f"{values['flops'] / 1e9:>10.3f}{rate:>9.1f}{values['bytes'] / 2**20:>10.2f}")

    for phase in TRAINING_PHASES:
        lines.append(row(phase, totals[phase]))
    total = {key: sum(totals[p][key] for p in TRAINING_PHASES)
             for key in ("compute", "wait", "flops", "bytes")}
    lines.append(row("total", total))
    lines.append(row("evaluation", totals[Phase.EVALUATION.value], share=False)
                 + "   (monitoring: outside the training time)")
    return "\n".join(lines)
