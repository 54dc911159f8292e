"""The ledger's synchronized timing: off, a collective's seconds are its phase's
waiting alone; on, the barrier before it is reported apart, as part of the wait."""

import time

import numpy as np
from helpers import WORLD

from dnewton.parallel.groups import Group
from dnewton.parallel.ledger import SYNC_VARIABLE, Ledger
from dnewton.parallel.phases import Phase


class SlowComm:
    """A communicator whose barrier takes `arriving` seconds (the others arriving
    late) and whose allreduce `summing` seconds, on every rank."""

    def __init__(self, arriving, summing):
        self.rank, self.size = 0, 2
        self.arriving, self.summing = arriving, summing
        self.calls = []

    def Barrier(self):
        self.calls.append("barrier")
        time.sleep(self.arriving)

    def Allreduce(self, send, recv=None, op=None):
        self.calls.append("allreduce")
        time.sleep(self.summing)


def test_sync_reports_the_barrier_apart_from_the_collective():
    comm = SlowComm(arriving=0.05, summing=0.01)
    ledger = Ledger(sync=True)
    Group((0, 1), comm, ledger).allreduce(np.zeros(4), Phase.FORWARD)
    assert comm.calls == ["barrier", "allreduce"]
    seconds = ledger.collect(WORLD)["seconds"]
    forward = seconds[Phase.FORWARD.value]
    assert 0.05 <= forward["barrier"] < forward["wait"]
    assert forward["wait"] - forward["barrier"] >= 0.01  # the sum alone
    assert seconds[Phase.BACKWARD.value]["barrier"] == 0.0


def test_off_by_default_no_barrier_and_the_same_report(monkeypatch):
    monkeypatch.delenv(SYNC_VARIABLE, raising=False)
    comm = SlowComm(arriving=0.05, summing=0.0)
    ledger = Ledger()
    Group((0, 1), comm, ledger).allreduce(np.zeros(4), Phase.FORWARD)
    assert comm.calls == ["allreduce"]
    report = ledger.collect(WORLD, agree=[1.0])
    assert all(set(spent) == {"compute", "wait"} for spent in report["seconds"].values())
    assert report["agreed"] == [float(WORLD.size)]


def test_the_environment_variable_turns_it_on(monkeypatch):
    monkeypatch.setenv(SYNC_VARIABLE, "1")
    assert Ledger().sync
    report = Ledger().collect(WORLD, agree=[1.0, 0.0])
    assert report["agreed"] == [float(WORLD.size), 0.0]  # the barrier times follow them
    monkeypatch.setenv(SYNC_VARIABLE, "0")
    assert not Ledger().sync
