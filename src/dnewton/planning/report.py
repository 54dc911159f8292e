"""The planner's answer as text (a table) or as one JSON object."""

import json

from .cost import TRAINING_PHASES


def _mib(nbytes):
    return f"{nbytes / 2**20:.1f}"


def table(fits, refused, workload, n_ranks, machine, top=None, skipped=0):
    """The ranked candidates and the refused ones, as lines of text; `skipped`: the
    candidates not predicted (slower than the first `top` by their lower bound)."""
    shown = fits if top is None else fits[:top]
    lines = [
        f"dnewton plan: network {'-'.join(map(str, workload.widths))}, "
        f"{workload.n_instances} instances, |S| = {workload.n_subset}, {n_ranks} rank(s); "
        f"machine: {machine.source}",
        f"per iteration with {workload.counts.cg_iters:g} CG iterations and "
        f"{workload.counts.trials:g} line-search trial(s)",
        f"{'#':>3}  {'partitions':<14}{'assign':<9}{'R':>3}  {'jacobian':<11}{'s/iter':>9}"
        f"{'comm s':>9}{'MiB moved':>11}{'MiB/rank':>10}",
    ]
    for i, p in enumerate(shown, 1):
        comm = _comm_share(p)
        lines.append(
            f"{i:>3}  {','.join(map(str, p.choice.partitions)):<14}{p.choice.assignment:<9}"
            f"{p.choice.replicas:>3}  {p.choice.jacobian:<11}{p.seconds_per_iteration:>9.4g}"
            f"{comm:>9.3g}{_mib(p.bytes_per_iteration):>11}{_mib(p.memory_per_rank):>10}")
    if top is not None and len(fits) > top:
        lines.append(f"     ... {len(fits) - top} more predicted (--top N shows more)")
    if skipped:
        lines.append(f"     {skipped} more not predicted: slower than these by their lower "
                     "bound (--top 0 predicts every one)")
    if refused:
        lines.append(f"refused ({len(refused)}, do not fit in memory):")
        for p in refused[: top or len(refused)]:  # not timed
            lines.append(f"     {p.choice.label()}: {p.refused}")
    return "\n".join(lines)


def _comm_share(prediction):
    """Seconds of the iteration spent in sums (replicas and the model's)."""
    return sum(prediction.communication[p] for p in TRAINING_PHASES)


def as_json(fits, refused, workload, n_ranks, machine, skipped=0):
    """One JSON object: the candidates in order, then the refused ones, and how many
    were not predicted (`skipped`)."""
    return json.dumps({
        "widths": list(workload.widths), "instances": workload.n_instances,
        "subset": workload.n_subset, "ranks": n_ranks, "machine": machine.to_json(),
        "phases": list(TRAINING_PHASES),
        "candidates": [p.to_json() for p in fits],
        "refused": [p.to_json() for p in refused],
        "not_predicted": skipped,
    })
