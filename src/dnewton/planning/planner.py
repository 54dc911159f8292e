"""The planner: candidate layouts ranked by predicted seconds per iteration.

Candidates (`candidates`) are every combination of

* partitions: each P_m a divisor of the copy's rank count k (so groups and ranks
  line up) and at most n_m, with k to 4k blocks; past `MAX_PARTITION_VECTORS`
  combinations, powers of two (and k) only, of which `partition_vectors` keeps
  the best balanced and the fewest blocks;
* assignment: balanced, and aligned when it gives every rank a block;
* replicas R dividing the ranks (R copies of k = ranks / R);
* Jacobian: stored or recomputed (block-diagonal mode: stored only).

`search` predicts them (`cost.predict`), sets apart those that do not fit
`memory_per_rank`, and orders the rest by predicted seconds per iteration (`order`);
among those within `RESOLUTION` of the fastest, fewer blocks, then fewer replicas,
then the stored Jacobian come first (what the model cannot see: fewer, larger
products and collectives). Asked for the first `top` only, it predicts candidates
by increasing lower bound (`cost.lower_bound`) and stops where no later one can
reach those places: at 1,024 ranks a handful of some 1,800 candidates.
`choose` is what `dnewton train` calls (on one rank: `app.problem`); `layout_for`
what it and `dnewton predict` call where no training run is known (the assignment
of given partitions; predict's layout).
"""

import bisect
import math
from dataclasses import dataclass

import numpy as np

from ..constants import BATCH_SIZE
from ..errors import InputError
from ..parallel.layout import Layout
from ..solvers.newton import NewtonOptions
from .cost import Choice, Workload, lower_bound, predict
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
# Instances of the iteration `layout_for` predicts (no training run to plan for).
NOMINAL_INSTANCES = BATCH_SIZE


def _divisors(k):
    """The divisors of k, ascending (O(sqrt k))."""
    small = [d for d in range(1, math.isqrt(k) + 1) if k % d == 0]
    return small + [k // d for d in reversed(small) if d * d != k]


def _products(options, fewest, most):
    """`itertools.product(*options)` (each option list ascending), in its order, of
    the vectors with fewest..most blocks; branches that cannot reach that are cut."""
    n = len(options)
    lo, hi = [o[0] for o in options], [o[-1] for o in options]
    # blocks of layers j..n-1 at least / at most, once P_j is chosen (suffix sums)
    rest_lo, rest_hi = [0] * (n + 1), [0] * (n + 1)
    for j in range(n - 2, -1, -1):
        rest_lo[j] = rest_lo[j + 1] + lo[j] * lo[j + 1]
        rest_hi[j] = rest_hi[j + 1] + hi[j] * hi[j + 1]
    out, prefix = [], []

    def walk(j, blocks):
        if j == n:
            if fewest <= blocks <= most:
                out.append(tuple(prefix))
            return
        for p in options[j]:
            b = blocks + (prefix[-1] * p if prefix else 0)
            if j + 1 < n:
                least = b + p * lo[j + 1] + rest_lo[j + 1]
                if least > most:  # and so for every larger P_j
                    break
                if b + p * hi[j + 1] + rest_hi[j + 1] < fewest:
                    continue
            prefix.append(p)
            walk(j + 1, b)
            prefix.pop()

    walk(0, 0)
    return out


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
    divisors = _divisors(k)
    options = [[d for d in divisors if d <= w] for w in widths]
    if math.prod(len(o) for o in options) > MAX_PARTITION_VECTORS:
        options = [[d for d in o if d & (d - 1) == 0 or d == k] for o in options]
    vectors = _products(options, k, max(4 * k, 8))
    # a prediction costs O(blocks): fewer candidates for larger copies
    cap = max(8, min(MAX_PARTITION_VECTORS, PREDICTION_BUDGET // k))
    if len(vectors) > cap:
        total = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        parts = np.array(vectors, dtype=np.int64)
        sizes = -(-np.array(widths, dtype=np.int64) // parts)  # the largest group of each
        largest = (sizes[:, :-1] * sizes[:, 1:]).max(axis=1)  # the largest block
        balance = np.maximum(total / k, largest)
        blocks = (parts[:, :-1] * parts[:, 1:]).sum(axis=1)
        # stable sorts (ties in enumeration order): by balance then blocks, and back
        balanced = np.lexsort((blocks, balance))[:cap]
        fewest = np.lexsort((balance, blocks))
        chosen = dict.fromkeys(int(i) for i in balanced)
        for i in fewest:  # and those with the fewest blocks: the least communication
            if len(chosen) >= cap + cap // 2:
                break
            chosen.setdefault(int(i))
        vectors = [vectors[i] for i in chosen]
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
                # aligned: block (m, a, b) on rank (a P_m + b) mod k, so layer m's
                # blocks cover ranks 0 .. P_(m-1) P_m - 1 (mod k)
                if way == "aligned" and max(p * q for p, q in zip(parts[:-1], parts[1:])) < k:
                    continue
                for mode in modes:
                    yield Choice(tuple(parts), way, R, mode)


@dataclass
class Search:
    """What `search` found: the fitting predictions in the planner's order, the refused
    ones (smallest memory first), and how many candidates it predicted and skipped."""

    fits: list
    refused: list
    predicted: int
    skipped: int


def search(workload, n_ranks, machine=DEFAULT, memory_per_rank=None, top=None, **restrict):
    """The candidates (`candidates`) predicted and ordered (`order`).

    With `top`, only what can be among the first `top` of the order, or be the first
    with other partitions than the first (the runner-up `dnewton train` names), is
    predicted: candidates go by their lower bound (`cost.lower_bound`), smallest
    first, and the search stops at the first whose bound exceeds the tie band
    (`RESOLUTION`) of the fastest prediction so far, the `top`-th fastest and that
    runner-up's seconds. Every candidate after it would predict slower than all of
    them, so those places are as if every candidate were predicted. Without `top`,
    every candidate is predicted.
    """
    found = list(candidates(workload.widths, n_ranks, diagonal=workload.diagonal,
                            n_instances=workload.n_instances, **restrict))
    place = {choice: i for i, choice in enumerate(found)}
    if top is not None:
        known, memo = {}, {}  # the bound does not depend on the assignment
        for choice in found:
            key = (choice.partitions, choice.replicas, choice.jacobian)
            if key not in known:
                known[key] = lower_bound(workload, choice, n_ranks, machine, memo)
        bounds = [known[c.partitions, c.replicas, c.jacobian] for c in found]
        found = [found[i] for i in sorted(range(len(found)), key=bounds.__getitem__)]
        bounds.sort()
    fits, refused, fastest = [], [], []  # fastest: the `top` smallest seconds, sorted
    for i, choice in enumerate(found):
        if top is not None and fits and bounds[i] > _limit(fits, fastest, top):
            break
        prediction = predict(workload, choice, n_ranks, machine, memory_per_rank)
        if prediction.refused:
            refused.append(prediction)
            continue
        fits.append(prediction)
        if top is not None:
            bisect.insort(fastest, prediction.seconds_per_iteration)
            del fastest[max(top, 1):]
    predicted = len(fits) + len(refused)
    for kept in (fits, refused):  # ties keep the candidates' order
        kept.sort(key=lambda p: place[p.choice])
    order(fits)
    refused.sort(key=lambda p: p.memory_per_rank)
    return Search(fits, refused, predicted, len(found) - predicted)


def _limit(fits, fastest, top):
    """The seconds a candidate must be able to reach to matter (see `search`); a
    little above, for the rounding of a bound summed in its own order."""
    limit = max(fastest[0] * (1 + RESOLUTION), fastest[-1] if len(fastest) >= top else math.inf)
    if limit < math.inf:
        first = min(fits, key=_order_key(fastest[0]))
        limit = max(limit, min((p.seconds_per_iteration for p in fits
                                if p.choice.partitions != first.choice.partitions),
                               default=math.inf))
    return limit * (1 + 1e-9)


def _order_key(best):
    def key(p):
        near = p.seconds_per_iteration <= best * (1 + RESOLUTION)
        simple = (Layout.count_blocks(p.choice.partitions) if near else 0,
                  p.choice.replicas, p.choice.jacobian != "stored",
                  p.choice.assignment != "balanced")
        return (not near, p.seconds_per_iteration if not near else 0.0, *simple,
                p.seconds_per_iteration)

    return key


def order(fits):
    """Sort predictions in place as the planner ranks them: by predicted seconds, but
    those within `RESOLUTION` of the fastest first, simplest first (fewer blocks, then
    fewer replicas, then the stored Jacobian, then the balanced assignment)."""
    if fits:
        fits.sort(key=_order_key(min(p.seconds_per_iteration for p in fits)))


def rank(workload, n_ranks, machine=DEFAULT, memory_per_rank=None, top=None, **restrict):
    """(fitting predictions in the planner's order; refused predictions) for
    `workload`: `search`'s, every candidate's without `top`."""
    found = search(workload, n_ranks, machine, memory_per_rank, top, **restrict)
    return found.fits, found.refused


def choose(widths, n_instances, n_subset, n_ranks, machine=None, replicas=None, jacobian=None,
           itemsize=8, memory_per_rank=None, loss="squared", batch_size=None, diagonal=False,
           counts=None, assignment=None, top=None, partitions=None):
    """The ranked `cost.Prediction`s for a training run (first = the choice).

    `replicas`, `jacobian`, `assignment` and `partitions`, when the user gave them,
    restrict the candidates. With `top`, only those that can be among the first `top` (and the
    runner-up with other partitions) are predicted (`search`). The same arguments
    give the same answer. Raises InputError when no candidate exists or none fits
    `memory_per_rank`.
    """
    workload = Workload(tuple(int(w) for w in widths), int(n_instances), int(n_subset),
                        itemsize=itemsize, loss=loss, diagonal=diagonal,
                        counts=counts or Counts())
    if batch_size is not None:
        workload.batch_size = int(batch_size)
    fits, refused = rank(workload, n_ranks, machine or DEFAULT, memory_per_rank, top,
                         replicas=replicas, jacobian=jacobian, assignment=assignment,
                         partitions=partitions)
    if not fits:
        if refused:
            raise InputError(f"no layout of the network {'-'.join(map(str, widths))} on "
                             f"{n_ranks} rank(s) fits in memory: the smallest "
                             f"{refused[0].refused}")
        raise InputError(f"a network of widths {list(widths)} has at most "
                         f"{Layout.count_blocks(widths)} blocks, fewer than {n_ranks} ranks")
    return fits


def layout_for(widths, n_ranks, partitions=None, machine=None):
    """The planner's `Layout` of one copy on `n_ranks` ranks where no training run
    is known: the assignment of `partitions`, or without them the whole layout.

    It predicts a nominal iteration: `NOMINAL_INSTANCES` instances (one batch), |S|
    5% of them, float64, the squared loss, the stored Jacobian. `dnewton predict`
    and `train --partitions` without `--assignment` take it. Raises
    `errors.ParameterError` for partitions that cannot be laid out on `n_ranks`,
    InputError for a network with too few blocks.
    """
    widths = tuple(int(w) for w in widths)
    if partitions is not None:
        partitions = tuple(int(p) for p in partitions)
        Layout(widths, partitions, n_ranks)  # refuses what cannot be laid out, as it says
    n = NOMINAL_INSTANCES
    first = choose(widths, n, NewtonOptions().subset_size(n), n_ranks, machine, replicas=1,
                   jacobian="stored", partitions=partitions, top=1)[0].choice
    return Layout(widths, first.partitions, n_ranks, first.assignment)
