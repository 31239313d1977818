"""
Deterministic simulation of groups: one host and several members over an
in-memory network with random (seeded) per-link delays, driven by one Clock.
Checks that every member gets every other member's messages in order with a
correct 'from', that a silent host crash is detected by every member within
15 s, and that members rejoin once the host is back.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.goop.groups import GroupService


class Link:
    """One direction of a FIFO connection with random delay."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.last = 0.0

    def deliver(self, f: Any, *args: Any) -> None:
        at = max(self.last, self.net.clock.seconds() + self.net.rng.uniform(0.001, 0.2))
        self.last = at
        self.net.clock.callLater(at - self.net.clock.seconds(), self.net.ifUp, f, *args)


class MemberStream:
    """The member's end of a simulated stream to the host."""

    def __init__(self, net: Net, member: str) -> None:
        self.net = net
        self.member = member
        self.closed = False
        self.onMessage: Any = None
        self.onLost: Any = None
        self.up = Link(net)
        self.down = Link(net)
        self.session: Any = None

    def send(self, m: dict[str, Any]) -> None:
        if not self.closed:
            self.up.deliver(self._toHost, m)

    def _toHost(self, m: dict[str, Any]) -> None:
        if not self.closed and self.session is not None:
            self.session.received(m)

    def fromHost(self, m: dict[str, Any]) -> None:
        if not self.closed:
            self.down.deliver(self._toMember, m)

    def _toMember(self, m: dict[str, Any]) -> None:
        if not self.closed and self.onMessage is not None:
            self.onMessage(m)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.session is not None:
                self.net.clock.callLater(0.01, self.net.ifUp, self.session.lost)


class Net:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.hostUp = True
        self.host = self.newHost()

    def newHost(self) -> GroupService:
        h = GroupService(self.clock, "host", lambda p: fail(ConnectionError()))
        h.createGroup("g")
        return h

    def run(self, seconds: float, step: float = 0.01) -> None:
        """Advance in small steps (Clock runs nested calls at the end of one big step)."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def ifUp(self, f: Any, *args: Any) -> None:
        # A crashed host neither receives nor sends anything (silent failure).
        if self.hostUp:
            f(*args)

    def open(self, member: str) -> Deferred[Any]:
        if not self.hostUp:
            return fail(ConnectionRefusedError())
        s = MemberStream(self, member)
        s.session = self.host.hostSession(member, s.fromHost, s.close, None)
        return succeed(s)


class GroupSimulationTests(SynchronousTestCase):
    def run_seed(self, seed: int) -> None:
        net = Net(seed)
        names = [f"m{i}" for i in range(5)]
        inbox: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        members = {}
        for n in names:

            def dial(host: str, n: str = n) -> Any:
                return net.open(n)

            svc = GroupService(net.clock, n, dial)
            svc.join("host", "g", inbox[n].append)
            members[n] = svc
        net.run(1.0)
        self.assertEqual(sorted(net.host.hosted["g"].members), names)
        sent: dict[str, list[int]] = {n: [] for n in names}
        for step in range(300):
            n = net.rng.choice(names)
            sent[n].append(step)
            members[n].send("host", "g", step)
            net.run(net.rng.uniform(0, 0.1))
        net.run(2.0)
        for receiver in names:
            for sender in names:
                if sender == receiver:
                    continue
                got = [e["data"] for e in inbox[receiver] if e["type"] == "msg" and e["from"] == sender]
                self.assertEqual(got, sent[sender], (seed, receiver, sender))
        # silent host crash
        net.hostUp = False
        crashed = net.clock.seconds()
        detected: dict[str, float] = {}
        while len(detected) < len(names) and net.clock.seconds() - crashed < 20:
            net.run(0.25)
            for n in names:
                if n not in detected and any(e["type"] == "host-lost" for e in inbox[n]):
                    detected[n] = net.clock.seconds() - crashed
        self.assertEqual(sorted(detected), names, seed)
        self.assertLess(max(detected.values()), 15.0, seed)
        # host back: everyone rejoins
        net.run(net.rng.uniform(1, 10))
        net.host = net.newHost()
        net.hostUp = True
        for n in names:
            inbox[n].clear()
        net.run(40.0)
        for n in names:
            self.assertTrue(any(e["type"] == "welcome" for e in inbox[n]), (seed, n))
        self.assertEqual(sorted(net.host.hosted["g"].members), names)
        for svc in members.values():
            svc.stop()
        net.host.stop()
        net.run(5.0)

    def test_seeds(self) -> None:
        """Ordering, sender stamping, crash detection and rejoin hold for several seeds."""
        for seed in range(8):
            self.run_seed(seed)
