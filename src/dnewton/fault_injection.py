"""Faults that tests inject into a real run, all in one place.

The tests of failures, stragglers and crash recovery need a run to misbehave on
purpose: a rank that is slow, a block whose operator returns NaN, a process that
dies right after (or in the middle of) writing a checkpoint, a node with little
memory. The numerical and I/O code knows nothing of this: it takes plain
callbacks (a block decorator, checkpoint hooks, an available-memory figure).
``dnewton train`` (`app.cli.run_train`) installs the ones this module builds from
the environment; the library (`app.training.train`, the estimators) injects none
unless it is handed a `Faults`. Unset variables inject nothing; users never need
them.

=============================  =====================================================
variable                       effect
=============================  =====================================================
DNEWTON_TEST_SLOW_RANK         ``RANK:SECONDS``: that rank sleeps SECONDS in every
                               block-diagonal CG iteration (a straggler)
DNEWTON_TEST_POISON_BLOCK      ``INDEX``: the operator of layout block INDEX returns
                               NaN curvature (a failure on one rank only)
DNEWTON_TEST_KILL_AFTER        ``K``: rank 0 SIGKILLs itself right after writing
                               checkpoint K (a crash between checkpoints)
DNEWTON_TEST_KILL_IN_WRITE     ``K``: rank 0 SIGKILLs itself between writing
                               checkpoint K's temporary file and renaming it
DNEWTON_TEST_SLOW_WRITE        ``SECONDS``: rank 0 sleeps SECONDS between writing
                               each checkpoint's temporary file and renaming it (a
                               write long enough to be interrupted on purpose)
DNEWTON_MEMORY_LIMIT           ``BYTES``: the memory a node has available
=============================  =====================================================
"""

import math
import os
import signal
import time
from dataclasses import dataclass

SLOW_RANK = "DNEWTON_TEST_SLOW_RANK"
POISON_BLOCK = "DNEWTON_TEST_POISON_BLOCK"
KILL_AFTER = "DNEWTON_TEST_KILL_AFTER"
KILL_IN_WRITE = "DNEWTON_TEST_KILL_IN_WRITE"
SLOW_WRITE = "DNEWTON_TEST_SLOW_WRITE"
MEMORY_LIMIT = "DNEWTON_MEMORY_LIMIT"


def _integer(environ, name):
    value = environ.get(name)
    return int(value) if value else None


@dataclass
class Faults:
    """The faults to inject into one run (by default, none)."""

    slow_rank: object = None  # (rank, seconds)
    poison_block: object = None  # layout index of a block
    kill_after: object = None  # checkpoint iteration
    kill_in_write: object = None  # checkpoint iteration
    memory_limit: object = None  # bytes per node
    slow_write: object = None  # seconds between a checkpoint's temporary file and its rename

    @classmethod
    def from_environment(cls, environ=os.environ):
        """The faults the DNEWTON_TEST_* variables (table above) ask for."""
        slow = environ.get(SLOW_RANK)
        if slow:
            rank, seconds = slow.split(":")
            slow = (int(rank), float(seconds))
        return cls(slow or None, _integer(environ, POISON_BLOCK), _integer(environ, KILL_AFTER),
                   _integer(environ, KILL_IN_WRITE), _integer(environ, MEMORY_LIMIT),
                   float(environ[SLOW_WRITE]) if environ.get(SLOW_WRITE) else None)

    def block_decorator(self, rank):
        """``wrap(index, apply) -> apply`` for the block-diagonal CG, or None."""
        if self.poison_block is None and (self.slow_rank is None or self.slow_rank[0] != rank):
            return None
        delay = self.slow_rank[1] if self.slow_rank and self.slow_rank[0] == rank else 0.0

        def wrap(index, apply):
            poisoned = index == self.poison_block

            def faulty(v, out):
                if delay:
                    time.sleep(delay)
                curvature = apply(v, out)
                return math.nan if poisoned else curvature

            return faulty

        return wrap

    def checkpoint_hooks(self):
        """(before_commit, after_write) callbacks for the checkpoint writer."""
        kill = _kill_at(self.kill_in_write)
        if not self.slow_write:
            return kill, _kill_at(self.kill_after)

        def slowly(reached):
            time.sleep(self.slow_write)
            if kill is not None:
                kill(reached)

        return slowly, _kill_at(self.kill_after)


def _kill_at(iteration):
    if iteration is None:
        return None

    def kill(reached):
        if reached == iteration:
            os.kill(os.getpid(), signal.SIGKILL)

    return kill
