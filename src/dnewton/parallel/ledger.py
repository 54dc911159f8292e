"""What each phase of a run costs: bytes moved, FLOPs, seconds computing and
seconds waiting for communication (docs/design.md, "What a run reports").

One `Ledger` per run and rank. The code that does the work reports to it:

* the communication groups report every collective's payload (bytes, counted
  once per collective by the group's first rank) and the seconds spent inside
  it (waiting, for the collective's phase);
* the network and the Gauss-Newton operator report the FLOPs of every kernel
  they call, from formulas (2 m n k for a GEMM of those sizes; 2 n_L |b| per
  instance for the small Jacobian products; element-wise work is not counted);
* ``with ledger.phase(p):`` times a stretch of work: its seconds, less those of
  nested phases and of the collectives inside it, are computation in phase p.

`collect` sums bytes and FLOPs over the ranks and averages the seconds (so the
phases of an iteration add up to its time; a rank that waits while another
computes shows as waiting), then starts a new count.

Synchronized timing (``Ledger(sync=True)``, or the environment variable
DNEWTON_LOG_SYNC=1; off by default, as PETSc's ``-log_sync``): a barrier on the
collective's communicator precedes every blocking collective that `waiting` is
given the communicator of, and its seconds -- until the group's last rank arrives
-- are reported apart as the phase's ``barrier`` seconds, a part of its ``wait``;
the rest of ``wait`` is the collective alone. The barriers are extra meeting
points, so such a run is slower: read the split, not the total.
"""

import os
import time
from contextlib import contextmanager

import numpy as np
from mpi4py import MPI

from .phases import Phase

_PHASES = tuple(Phase)
SYNC_VARIABLE = "DNEWTON_LOG_SYNC"  # set to 1: every ledger times a barrier apart


class Ledger:
    """Bytes, FLOPs, compute and wait seconds by phase, on this rank.

    `sync`: time a barrier before each blocking collective apart from it (see the
    module); None takes it from the environment variable `SYNC_VARIABLE`.
    """

    def __init__(self, sync=None):
        if sync is None:
            sync = os.environ.get(SYNC_VARIABLE, "0") not in ("", "0")
        self.sync = bool(sync)
        self._open = []  # [started, seconds excluded] of the phases being timed
        self._reset()

    def _reset(self):
        self.bytes = dict.fromkeys(_PHASES, 0)
        self.flops = dict.fromkeys(_PHASES, 0.0)
        self.compute = dict.fromkeys(_PHASES, 0.0)
        self.wait = dict.fromkeys(_PHASES, 0.0)
        self.barrier = dict.fromkeys(_PHASES, 0.0)  # of `wait`, with `sync` only

    @contextmanager
    def phase(self, phase):
        """Count the computation inside the block as `phase`'s."""
        phase = Phase(phase)
        entry = [time.perf_counter(), 0.0]
        self._open.append(entry)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - entry[0]
            self.compute[phase] += elapsed - entry[1]
            if self._open:
                self._open[-1][1] += elapsed

    def moved(self, phase, nbytes):
        """A collective of `nbytes` payload in `phase` (report once per collective)."""
        self.bytes[Phase(phase)] += nbytes

    def waited(self, phase, seconds):
        """`seconds` spent in a collective of `phase` (not computing)."""
        self.wait[Phase(phase)] += seconds
        if self._open:
            self._open[-1][1] += seconds

    def computed(self, phase, flops):
        """`flops` floating-point operations of a kernel in `phase`."""
        self.flops[Phase(phase)] += flops

    def collect(self, world, elapsed=None, agree=()):
        """Collective: this period's costs over all ranks, by phase; starts a new period.

        `elapsed` (seconds of the period on this rank), when given, puts the time
        no phase claimed into ``other``'s computation. Returns a dict with the
        keys ``bytes`` and ``flops`` (sums over ranks) and ``seconds`` (per phase a
        dict of ``compute`` and ``wait``, and with `sync` ``barrier``, the mean over
        ranks), each keyed by the phases' names in `Phase` order.
        """
        if elapsed is not None:
            claimed = sum(self.compute.values()) + sum(self.wait.values())
            self.compute[Phase.OTHER] += max(elapsed - claimed, 0.0)
        totals = np.array([*(self.bytes[p] for p in _PHASES), *(self.flops[p] for p in _PHASES),
                           *(self.compute[p] for p in _PHASES),
                           *(self.wait[p] for p in _PHASES), *agree,
                           *(self.barrier[p] for p in _PHASES if self.sync)],
                          dtype=np.float64)
        if world.size > 1:
            world.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        self._reset()
        n, ranks, agreed = len(_PHASES), world.size, 4 * len(_PHASES) + len(agree)
        seconds = {p.value: {"compute": float(totals[2 * n + i] / ranks),
                             "wait": float(totals[3 * n + i] / ranks)}
                   for i, p in enumerate(_PHASES)}
        if self.sync:
            for i, p in enumerate(_PHASES):
                seconds[p.value]["barrier"] = float(totals[agreed + i] / ranks)
        return {
            "bytes": {p.value: int(totals[i]) for i, p in enumerate(_PHASES)},
            "flops": {p.value: float(totals[n + i]) for i, p in enumerate(_PHASES)},
            "seconds": seconds,
            "agreed": totals[4 * n:agreed].tolist(),
        }


@contextmanager
def waiting(ledger, phase, comm=None):
    """Count the seconds of the block as waiting in `phase` (around a collective).

    `comm`: the collective's communicator; with the ledger's `sync`, a barrier on
    it comes first, its seconds counted as ``barrier`` too.
    """
    started = time.perf_counter()
    if ledger.sync and comm is not None:
        comm.Barrier()
        ledger.barrier[Phase(phase)] += time.perf_counter() - started
    try:
        yield
    finally:
        ledger.waited(phase, time.perf_counter() - started)
