"""The communication groups of a layout, and the count of bytes each phase moves.

`Groups` builds, once, the sub-communicators of docs/design.md ("Communication"):

* ``forward(m, b)`` -- F(m, b): owners of blocks (m, ., b) with owners of (m+1, b, .);
  s_b^m is summed there by one in-place allreduce.
* ``backward(m, a)`` -- K(m, a), m >= 2: owners of (m, a, .) with owners of
  (m-1, ., a); d/dz_a^{m-1} is summed there.

Groups with the same members share one communicator, a group of one rank needs none
(its "allreduce" is a no-op), and a rank outside a group gets ``None`` for it.
Every rank visits the groups in the same global order, which is what keeps the
collectives on overlapping communicators free of deadlock.

Accounting (`ledger.Ledger`): a collective whose payload is N float64 over a
group of k > 1 ranks counts 8 N bytes, once per collective (by the group's first
rank), and its seconds as waiting in its phase. The bytes are the logical volume
of the design's byte formulas; a ring allreduce moves about 2 (k-1)/k of it per
rank on the wire.
"""

from mpi4py import MPI

from .ledger import Ledger, waiting
from .phases import Phase


class Group:
    """A set of ranks that reduce together, with byte accounting."""

    def __init__(self, members, comm, ledger):
        self.members = members  # world ranks, sorted
        self.comm = comm  # None when the group is this rank alone
        self.ledger = ledger

    @property
    def size(self):
        return len(self.members)

    @property
    def leader(self):
        """World rank of the group's first member."""
        return self.members[0]

    def allreduce(self, buf, phase):
        """Sum `buf` (a C-contiguous float64 array) over the group, in place.

        `phase` (a `Phase`) is checked on every rank, alone or not, so a wrong
        one fails the same way on one rank as on many.
        """
        phase = Phase(phase)
        if self.comm is None:
            return
        if self.comm.rank == 0:
            self.ledger.moved(phase, buf.nbytes)
        with waiting(self.ledger, phase):
            self.comm.Allreduce(MPI.IN_PLACE, buf)

    def start_allreduce(self, buf, phase):
        """Start summing `buf` over the group, non-blocking; returns the request
        (None for a group of one rank). Finish it with `finish_allreduce`."""
        phase = Phase(phase)
        if self.comm is None:
            return None
        if self.comm.rank == 0:
            self.ledger.moved(phase, buf.nbytes)
        return self.comm.Iallreduce(MPI.IN_PLACE, buf)

    def finish_allreduce(self, request, phase):
        """Wait for a `start_allreduce` request; the seconds count as waiting."""
        if request is not None:
            with waiting(self.ledger, phase):
                request.Wait()


class Groups:
    """All communication groups of `layout` that the calling rank belongs to.

    Collective over `world`: every rank must construct it, in the same order
    relative to other collectives. Call `free` when done.
    """

    def __init__(self, world, layout):
        self.world = world
        self.layout = layout
        self.ledger = Ledger()
        L = layout.n_layers
        wanted = {}
        for m in range(1, L + 1):
            for b in range(layout.partitions[m]):
                wanted[("forward", m, b)] = layout.forward_group(m, b)
        for m in range(2, L + 1):
            for a in range(layout.partitions[m - 1]):
                wanted[("backward", m, a)] = layout.backward_group(m, a)
        wanted[("world",)] = tuple(range(world.size))

        # One communicator per distinct member set of size > 1, created in a fixed
        # order on every rank (Split is collective over world).
        self._comms = {}
        for members in sorted(set(wanted.values())):
            if len(members) == 1:
                continue
            if members == wanted[("world",)]:
                self._comms[members] = world
                continue
            color = 0 if world.rank in members else MPI.UNDEFINED
            comm = world.Split(color, key=world.rank)
            if comm != MPI.COMM_NULL:
                self._comms[members] = comm
        self._groups = {
            key: Group(members, self._comms.get(members), self.ledger)
            for key, members in wanted.items()
            if world.rank in members
        }

    def forward(self, m, b):
        return self._groups.get(("forward", m, b))

    def backward(self, m, a):
        return self._groups.get(("backward", m, a))

    @property
    def all(self):
        """The group of every rank."""
        return self._groups[("world",)]

    @property
    def output(self):
        """F(L): owners of the output layer's blocks, or None if this rank is not one."""
        return self.forward(self.layout.n_layers, 0)

    @property
    def leads_output(self):
        """Whether this rank leads the output group: every output rank knows the
        outputs, and this one alone adds what depends on them (the loss, J v . B J v)
        to sums over all ranks."""
        output = self.output
        return output is not None and output.leader == self.world.rank

    def broadcast(self, buf, root, phase):
        """Broadcast `buf` in place from world rank `root` to every rank."""
        phase = Phase(phase)
        if self.world.size == 1:
            return
        if self.world.rank == root:
            self.ledger.moved(phase, buf.nbytes)
        with waiting(self.ledger, phase):
            self.world.Bcast(buf, root=root)

    def free(self):
        """Release the sub-communicators (MPICH allows only a few thousand live ones)."""
        for comm in self._comms.values():
            if comm is not self.world:
                comm.Free()
        self._comms.clear()
        self._groups.clear()
