"""Running passes over batches of instances, one after another or pipelined
(docs/design.md, "The pipeline").

A pass over one batch is a generator that computes until it needs a sum over a
group and then yields a `Reduction`; it goes on once the sum is in its buffer,
and returns its result. `run` does the sums as they come (blocking allreduces):
the unpipelined pass. `run_pipelined` starts each sum non-blocking
(``MPI_Iallreduce``) and keeps up to `depth` batches in flight, so that a rank
computes batch k+1 while batch k's sums travel, and ranks that own different
layers work at the same time (the paper's pipeline).

Deadlock freedom: every rank visits the groups of a batch in one global order
and starts batches in order, so each request is identified by (batch, stage)
and depends only on requests with a smaller pair. Each rank waits on the pending
request of its lowest batch, the smallest pair it has; by induction on the
smallest pending pair over all ranks, every wait ends. The collectives on each
communicator are started in the same (batch) order on all its members, as MPI
requires.
"""

from dataclasses import dataclass

from .phases import Phase


@dataclass
class Reduction:
    """A sum a pass needs: `buf` summed in place over `group`, counted in `phase`."""

    group: object  # groups.Group
    buf: object
    phase: Phase


def run(steps):
    """Drive one pass to its end with blocking sums; returns its result."""
    try:
        reduction = steps.send(None)
        while True:
            reduction.group.allreduce(reduction.buf, reduction.phase)
            reduction = steps.send(None)
    except StopIteration as stop:
        return stop.value


def run_pipelined(passes, depth):
    """Drive the generators `passes` (one per batch, in batch order) with up to
    `depth` in flight and non-blocking sums; returns their results in order."""
    passes = iter(passes)
    results, pending, started = [], {}, 0  # pending: batch -> (steps, request, reduction)

    def advance(batch, steps):
        try:
            reduction = steps.send(None)  # a fresh generator starts at send(None) too
        except StopIteration as stop:
            results[batch] = stop.value
            return
        request = reduction.group.start_allreduce(reduction.buf, reduction.phase)
        pending[batch] = (steps, request, reduction)
        # A non-blocking collective moves only while its ranks are inside MPI:
        # test everything in flight after each stretch of computation.
        for _, other, _ in pending.values():
            if other is not None:
                other.Test()

    exhausted = False
    while True:
        while not exhausted and len(pending) < depth:
            steps = next(passes, None)
            if steps is None:
                exhausted = True
                break
            results.append(None)
            advance(started, steps)
            started += 1
        if not pending:
            return results
        batch = min(pending)
        steps, request, reduction = pending.pop(batch)
        reduction.group.finish_allreduce(request, reduction.phase)
        advance(batch, steps)
