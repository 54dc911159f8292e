"""The communication groups of a layout, and the count of bytes each phase moves.

`Groups` builds, once, the sub-communicators of docs/design.md ("Communication"):

* ``forward(m, b)`` -- F(m, b): owners of blocks (m, ., b) with owners of (m+1, b, .);
  s_b^m is summed there by one in-place allreduce.
* ``backward(m, a)`` -- K(m, a), m >= 2: owners of (m, a, .) with owners of
  (m-1, ., a); d/dz_a^{m-1} is summed there.

With ``replicas`` R > 1 (data x model parallelism) the job's ranks form R copies
of the layout, copy c being ranks c k .. c k + k - 1 (k = ranks / R); the groups
above are built inside each copy, on its own communicator, and ``replicas`` is
the group of the R ranks that hold the same blocks in each copy: f, the gradient
and every Gauss-Newton product are summed over it (phase ``replicas``).

Groups with the same members share one communicator, a group of one rank needs none
(its "allreduce" is a no-op), and a rank outside a group gets ``None`` for it.
Every rank visits the groups in the same global order, which is what keeps the
collectives on overlapping communicators free of deadlock.

Accounting (`ledger.Ledger`): a collective whose payload is N float64 over a
group of k > 1 ranks counts 8 N bytes, once per collective (by the group's first
rank), and its seconds as waiting in its phase (with the ledger's ``sync``, the
barrier before a blocking one apart; the non-blocking sums have none). The bytes
are the logical volume of the design's byte formulas; a ring allreduce moves
about 2 (k-1)/k of it per rank on the wire.
"""

from mpi4py import MPI

from .ledger import Ledger, waiting
from .phases import Phase


class Group:
    """A set of ranks that reduce together, with byte accounting."""

    def __init__(self, members, comm, ledger):
        self.members = members  # ranks of the copy (of the job, for `Groups.replicas`), sorted
        self.comm = comm  # None when the group is this rank alone
        self.ledger = ledger

    @property
    def size(self):
        return len(self.members)

    @property
    def leader(self):
        """Rank of the group's first member."""
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
        with waiting(self.ledger, phase, self.comm):
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

    Parameters
    ----------
    world : mpi4py communicator, every rank of the job
    layout : parallel.layout.Layout
        The layout of one copy: ``layout.n_ranks == world.size // replicas``.
    replicas : int
        Copies of the layout the ranks form (data x model parallelism).
    """

    def __init__(self, world, layout, replicas=1):
        if replicas < 1 or world.size % replicas or world.size // replicas != layout.n_ranks:
            raise ValueError(f"{world.size} ranks do not form {replicas} copies of a "
                             f"{layout.n_ranks}-rank layout")
        self.job = world
        self.layout = layout
        self.ledger = Ledger()
        self.n_replicas = replicas
        k = layout.n_ranks
        self.replica, self.rank = divmod(world.rank, k)  # which copy; the rank within it
        # A copy's communicator, then the one across copies (both collective over world).
        self.comm = world if replicas == 1 else world.Split(self.replica, key=world.rank)
        across = None if replicas == 1 else world.Split(self.rank, key=world.rank)
        self._own = [c for c in (self.comm, across) if c is not None and c is not world]
        self.replicas = Group(tuple(range(self.rank, world.size, k)), across, self.ledger)

        L = layout.n_layers
        wanted = {}
        for m in range(1, L + 1):
            for b in range(layout.partitions[m]):
                wanted[("forward", m, b)] = layout.forward_group(m, b)
        for m in range(2, L + 1):
            for a in range(layout.partitions[m - 1]):
                wanted[("backward", m, a)] = layout.backward_group(m, a)
        wanted[("all",)] = tuple(range(k))

        # One communicator per distinct member set of size > 1, created in a fixed
        # order on every rank of the copy (Split is collective over the copy).
        comm = self.comm
        self._comms = {}
        for members in sorted(set(wanted.values())):
            if len(members) == 1:
                continue
            if members == wanted[("all",)]:
                self._comms[members] = comm
                continue
            color = 0 if self.rank in members else MPI.UNDEFINED
            sub = comm.Split(color, key=self.rank)
            if sub != MPI.COMM_NULL:
                self._comms[members] = sub
        self._groups = {
            key: Group(members, self._comms.get(members), self.ledger)
            for key, members in wanted.items()
            if self.rank in members
        }

    def forward(self, m, b):
        return self._groups.get(("forward", m, b))

    def backward(self, m, a):
        return self._groups.get(("backward", m, a))

    @property
    def all(self):
        """The group of every rank of this copy (of the job, without replicas)."""
        return self._groups[("all",)]

    @property
    def leads_replicas(self):
        """Whether this rank is in the first copy: what every copy would add alike
        (the regularization term) is added there alone before a sum over copies."""
        return self.replica == 0

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
        return output is not None and output.leader == self.rank

    def broadcast(self, buf, root, phase):
        """Broadcast `buf` in place from rank `root` of this copy to its every rank."""
        phase = Phase(phase)
        if self.comm.size == 1:
            return
        if self.rank == root:
            self.ledger.moved(phase, buf.nbytes)
        with waiting(self.ledger, phase, self.comm):
            self.comm.Bcast(buf, root=root)

    def free(self):
        """Release the sub-communicators (MPICH allows only a few thousand live ones)."""
        for comm in self._comms.values():
            if comm is not self.comm:
                comm.Free()
        for comm in self._own:
            comm.Free()
        self._own.clear()
        self._comms.clear()
        self._groups.clear()
