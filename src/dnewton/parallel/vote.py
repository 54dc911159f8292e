"""Synchronization of the block-diagonal CG (docs/design.md, "The paper's techniques").

With the block-diagonal Gauss-Newton matrix every block runs its own CG and the
blocks finish at different times. A Newton iteration stops waiting once a fraction
q of the blocks has met its stopping rule; the others keep their current iterate.

Mechanism: a sequence of *rounds*, each one non-blocking allreduce
(``MPI_Iallreduce``) of "blocks finished on this rank". A rank posts round k+1 as
soon as it sees round k complete. Between two CG iterations a rank only *tests*
its pending round (`poll`), so no rank ever blocks while others still compute; a
rank with nothing left to compute tests with a short sleep (`wait`), which leaves
the core to ranks that still work when cores are shared.

Every rank sees the same total for the same round, so all of them stop after the
same round and no request is left pending: the first round whose total reaches
``ceil(q * n_blocks)`` ends CG everywhere. With q = 1 that round comes only when
every block has finished, so the result does not depend on timing.
"""

import math
import time

import numpy as np
from mpi4py import MPI

from ..constants import FRACTION_SLACK
from .ledger import waiting
from .phases import Phase


class CompletionVote:
    """Non-blocking count of finished blocks over all ranks.

    Parameters
    ----------
    comm : mpi4py communicator (all ranks)
    n_blocks : int
        Blocks in the whole layout.
    fraction : float
        q in (0, 1].
    ledger : ledger.Ledger
        Counts 8 bytes per round, and the idle seconds, in phase ``sync``.
    idle_sleep : float
        Seconds between tests while this rank has nothing to compute.
    settle : float
        Age in seconds after which a pending round gets a second test (`_test`).
    """

    def __init__(self, comm, n_blocks, fraction, ledger, idle_sleep=1e-4, settle=1e-3):
        self.comm = comm
        self.target = max(1, math.ceil(fraction * n_blocks - FRACTION_SLACK))
        self.ledger = ledger
        self.idle_sleep = idle_sleep
        self.settle = settle
        self.rounds = 0
        self._send = np.zeros(1)
        self._recv = np.zeros(1)
        self._request = None

    def _post(self, n_done):
        self._send[0] = n_done
        if self.comm.rank == 0:
            self.ledger.moved(Phase.SYNC, self._send.nbytes)
        self._request = self.comm.Iallreduce(self._send, self._recv, op=MPI.SUM)
        self._posted = time.perf_counter()
        self.rounds += 1

    def _test(self):
        """Test the pending round, giving a round that is already old one more chance.

        A non-blocking collective advances only inside MPI calls, and an allreduce
        takes several exchanges: a straggler that tests once between long steps
        would learn of a finished round only steps later. When the round has been
        pending for a while (the others are likely waiting on it), a second test
        after a short pause lets their answers arrive.
        """
        if self._request.Test():
            return True
        if time.perf_counter() - self._posted < self.settle:
            return False
        time.sleep(self.idle_sleep)
        return self._request.Test()

    def poll(self, n_done):
        """Test the pending round; True once a completed round reached the target.

        `n_done` is the number of this rank's blocks that have finished now.
        """
        if self.comm.size == 1:
            return n_done >= self.target
        if self._request is None:
            self._post(n_done)
        if not self._test():
            return False
        self._request = None
        if self._recv[0] >= self.target:
            return True
        self._post(n_done)
        return False

    def wait(self, n_done):
        """Poll until the vote passes, sleeping between tests (nothing left to compute)."""
        with waiting(self.ledger, Phase.SYNC):
            while not self.poll(n_done):
                time.sleep(self.idle_sleep)
        return True
