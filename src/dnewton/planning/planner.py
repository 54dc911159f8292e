"""The planner: candidate layouts ranked by predicted seconds per iteration.

Candidates (`candidates`) are every combination of

* partitions: each P_m a divisor of the copy's rank count k (so groups and ranks
  line up) and at most n_m; past `MAX_PARTITION_VECTORS` combinations, powers of
  two only, and past that 1, a middle value and k per layer;
* assignment: balanced, and aligned when it gives every rank a block;
* replicas R dividing the ranks (R copies of k = ranks / R);
* Jacobian: stored or recomputed (block-diagonal mode: stored only);

with at least k blocks per copy. `rank` predicts each (`cost.predict`), sets apart
those that do not fit `memory_per_rank`, and orders the rest by predicted seconds
per iteration; among those within `RESOLUTION` of the fastest, fewer blocks, then
fewer replicas, then the stored Jacobian come first (what the model cannot see:
fewer, larger products and collectives). `choose` is what `dnewton train` calls.
"""

import itertools
import math

from ..errors import InputError
from ..parallel.layout import Layout
from .cost import Choice, Workload, predict
from .machine import DEFAULT
from .volume import Counts

ASSIGNMENTS = ("balanced", "aligned")
JACOBIANS = ("stored", "recomputed")
MAX_PARTITION_VECTORS = 64
# Partition vectors per copy of k ranks at most this over k (large copies are slow to
# predict: their layouts have thousands of blocks).
PREDICTION_BUDGET = 8192
# Predictions closer than this (relative) count as a tie, broken by simplicity.
RESOLUTION = 0.03


def _divisors(k):
    return [d for d in range(1, k + 1) if k % d == 0]


def partition_vectors(widths, k):
    """Partition vectors worth trying for a copy of k ranks (k to 4k blocks).

    Each P_m divides k (so groups and ranks can line up) and is at most n_m. When
    there are more than `MAX_PARTITION_VECTORS`, only powers of two are tried, and
    of those the cap (`MAX_PARTITION_VECTORS`, at most `PREDICTION_BUDGET` / k, at
    least 8) with the best balance bound (the most multiply-adds per instance a rank
    must do, at least the total over k and at least the largest block's; fewer
    blocks break ties), and half as many more with the fewest blocks (the least
    communication).
    """
    options = [[d for d in _divisors(k) if d <= w] for w in widths]
    if math.prod(len(o) for o in options) > MAX_PARTITION_VECTORS:
        options = [[d for d in o if d & (d - 1) == 0 or d == k] for o in options]
    vectors = [parts for parts in itertools.product(*options)
               if k <= Layout.count_blocks(parts) <= max(4 * k, 8)]
    # a prediction costs O(blocks): fewer candidates for larger copies
    cap = max(8, min(MAX_PARTITION_VECTORS, PREDICTION_BUDGET // k))
    if len(vectors) > cap:
        total = sum(a * b for a, b in zip(widths[:-1], widths[1:]))

        def bound(parts):
            largest = max(math.ceil(a / p) * math.ceil(b / q) for a, b, p, q in
                          zip(widths[:-1], widths[1:], parts[:-1], parts[1:]))
            return max(total / k, largest), Layout.count_blocks(parts)

        balanced = sorted(vectors, key=bound)
        fewest = sorted(vectors, key=lambda parts: bound(parts)[::-1])
        chosen = dict.fromkeys(balanced[:cap])
        for parts in fewest:  # and those with the fewest blocks: the least communication
            if len(chosen) >= cap + cap // 2:
                break
            chosen.setdefault(parts)
        vectors = list(chosen)
    return vectors


def candidates(widths, n_ranks, replicas=None, jacobian=None, partitions=None,
               diagonal=False, assignment=None, n_instances=None):
    """The `Choice`s to rank; `replicas`, `jacobian`, `partitions`, `assignment` fix
    what is given. Without `replicas`, no more copies than `n_instances` (if given):
    every copy needs an instance, and the planner offers only what a run accepts."""
    counts = [replicas] if replicas is not None else [
        R for R in _divisors(n_ranks) if n_instances is None or R <= n_instances]
    modes = [jacobian] if jacobian is not None else (["stored"] if diagonal else JACOBIANS)
    for R in counts:
        if n_ranks % R:
            continue
        k = n_ranks // R
        vectors = [tuple(partitions)] if partitions is not None else partition_vectors(widths, k)
        for parts in vectors:
            if Layout.count_blocks(parts) < k:
                continue
            for way in [assignment] if assignment else ASSIGNMENTS:
                if way == "aligned":
                    aligned = Layout(widths, parts, k, "aligned")
                    if len(set(aligned.owner.tolist())) < k:
                        continue
                for mode in modes:
                    yield Choice(tuple(parts), way, R, mode)


def rank(workload, n_ranks, machine=DEFAULT, memory_per_rank=None, **restrict):
    """(fitting predictions, fastest first; refused predictions) for `workload`."""
    fits, refused = [], []
    for choice in candidates(workload.widths, n_ranks, diagonal=workload.diagonal,
                             n_instances=workload.n_instances, **restrict):
        prediction = predict(workload, choice, n_ranks, machine, memory_per_rank)
        (refused if prediction.refused else fits).append(prediction)
    if fits:
        best = min(p.seconds_per_iteration for p in fits)

        def key(p):
            near = p.seconds_per_iteration <= best * (1 + RESOLUTION)
            simple = (len(Layout(workload.widths, p.choice.partitions,
                                 n_ranks // p.choice.replicas).blocks)
                      if near else 0, p.choice.replicas, p.choice.jacobian != "stored",
                      p.choice.assignment != "balanced")
            return (not near, p.seconds_per_iteration if not near else 0.0, *simple,
                    p.seconds_per_iteration)

        fits.sort(key=key)
    refused.sort(key=lambda p: p.memory_per_rank)
    return fits, refused


def choose(widths, n_instances, n_subset, n_ranks, machine=None, replicas=None, jacobian=None,
           itemsize=8, memory_per_rank=None, loss="squared", batch_size=None, diagonal=False,
           counts=None, assignment=None):
    """The ranked `cost.Prediction`s for a training run (first = the choice).

    `replicas`, `jacobian` and `assignment`, when the user gave them, restrict the
    candidates. Every rank calling it with the same arguments gets the same answer.
    Raises InputError when no candidate exists or none fits `memory_per_rank`.
    """
    workload = Workload(tuple(int(w) for w in widths), int(n_instances), int(n_subset),
                        itemsize=itemsize, loss=loss, diagonal=diagonal,
                        counts=counts or Counts())
    if batch_size is not None:
        workload.batch_size = int(batch_size)
    fits, refused = rank(workload, n_ranks, machine or DEFAULT, memory_per_rank,
                         replicas=replicas, jacobian=jacobian, assignment=assignment)
    if not fits:
        if refused:
            raise InputError(f"no layout of the network {'-'.join(map(str, widths))} on "
                             f"{n_ranks} rank(s) fits in memory: the smallest "
                             f"{refused[0].refused}")
        raise InputError(f"a network of widths {list(widths)} has at most "
                         f"{Layout.count_blocks(widths)} blocks, fewer than {n_ranks} ranks")
    return fits
