"""
The host's link to one group member as a table (L{suite.goop.groups.hostlink}): every
input in every state, with the state after, what is written to the member
(or closed) in order, and the backlog left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.goop.groups import HostLinkCore, HostLinkInputs, HostLinkMachine, HostMember


def linkState(inputs: HostLinkInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


#: One call of each input (the machine's whole alphabet).
CALLS: dict[str, Callable[[HostLinkInputs], None]] = {
    "send": lambda m: m.send({"n": 9}),
    "paused": lambda m: m.paused(),
    "resumed": lambda m: m.resumed(),
    "drain": lambda m: m.drain(),
    "drained": lambda m: m.drained(),
    "overflowed": lambda m: m.overflowed(),
    "closed": lambda m: m.closed(),
    "stopped": lambda m: m.stopped(),
}

W1, W2, W9 = "write 1", "write 2", "write 9"

#: (state, input) -> (state after, events, backlog after).  Pairs not listed
#: change nothing and say nothing.  Paused starts with message 1 queued;
#: Draining is entered by resuming with messages 1 and 2 queued, and the
#: input is fed while message 1 is written (the only time the link is in
#: Draining), so the drain goes on after it.
ANSWERS: dict[tuple[str, str], tuple[str, list[str], int]] = {
    ("Writable", "send"): ("Writable", [W9], 0),
    ("Writable", "paused"): ("Paused", [], 0),
    ("Writable", "closed"): ("Dropped", ["close"], 0),
    ("Writable", "stopped"): ("Dropped", [], 0),
    ("Paused", "send"): ("Paused", [], 2),
    ("Paused", "resumed"): ("Writable", [W1], 0),
    ("Paused", "overflowed"): ("Dropped", ["close", "overflow"], 0),
    ("Paused", "closed"): ("Dropped", ["close"], 0),
    ("Paused", "stopped"): ("Dropped", [], 0),
    ("Draining", "send"): ("Writable", [W1, W2, W9], 0),
    ("Draining", "paused"): ("Paused", [W1], 1),
    ("Draining", "resumed"): ("Writable", [W1, W2], 0),
    ("Draining", "drain"): ("Writable", [W1, W2], 0),
    # Impossible: drained is fed only once the backlog is empty.
    ("Draining", "drained"): ("Writable", [W1], 1),
    ("Draining", "overflowed"): ("Dropped", [W1, "close", "overflow"], 0),
    ("Draining", "closed"): ("Dropped", [W1, "close"], 0),
    ("Draining", "stopped"): ("Dropped", [W1], 0),
}


class Link:
    """
    A link machine whose writes, closes and overflows are recorded in one
    list; C{during} is fed to the machine while message 1 is written.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.during: Callable[[HostLinkInputs], None] | None = None
        self.core = HostLinkCore("peer", self.write, lambda: self.events.append("close"), 2)
        self.core.onOverflow = lambda: self.events.append("overflow")
        self.machine = HostLinkMachine(self.core)

    def write(self, message: dict[str, Any]) -> None:
        self.events.append(f"write {message['n']}")
        if message["n"] == 1 and self.during is not None:
            during, self.during = self.during, None
            during(self.machine)


class HostLinkTableTests(SynchronousTestCase):
    """
    Every input in every state of the host's member link.
    """

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet.
        """
        self.assertEqual(set(CALLS), {n for n in vars(HostLinkInputs) if not n.startswith("_")})

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after, the writes and closes in
        order, the backlog left.
        """
        for state in ("Writable", "Paused", "Draining", "Dropped"):
            for name, call in CALLS.items():
                link = Link()
                m = link.machine
                if state == "Paused":
                    m.paused()
                    m.send({"n": 1})
                elif state == "Dropped":
                    m.closed()
                if state != "Draining":
                    self.assertEqual(linkState(m), state)
                    del link.events[:]
                    call(m)
                else:
                    m.paused()
                    m.send({"n": 1})
                    m.send({"n": 2})
                    link.during = call
                    m.resumed()
                    self.assertIsNone(link.during)
                self.assertEqual(
                    (linkState(m), link.events, len(link.core.queue)),
                    ANSWERS.get((state, name), (state, [], 1 if state == "Paused" else 0)),
                    f"{state} + {name}",
                )

    def test_overflowDrops(self) -> None:
        """
        The message that takes the backlog past its limit drops the member:
        the connection is closed once, the backlog emptied, and nothing is
        written or queued after.
        """
        link = Link()
        m = link.machine
        m.paused()
        m.send({"n": 1})
        m.send({"n": 2})
        self.assertEqual((linkState(m), link.events), ("Paused", []))
        m.send({"n": 3})
        self.assertEqual(
            (linkState(m), link.events, len(link.core.queue)), ("Dropped", ["close", "overflow"], 0)
        )
        m.resumed()
        m.send({"n": 4})
        self.assertEqual(link.events, ["close", "overflow"])

    def test_pushBackMidDrain(self) -> None:
        """
        A connection that pushes back while the backlog drains stops the
        drain; the rest goes out, in order, on the next resume.
        """
        link = Link()
        m = link.machine
        m.paused()
        for n in (1, 2):
            m.send({"n": n})
        link.during = lambda inputs: inputs.paused()
        m.resumed()
        self.assertEqual((linkState(m), link.events), ("Paused", [W1]))
        m.send({"n": 9})
        m.resumed()
        self.assertEqual((linkState(m), link.events), ("Writable", [W1, W2, W9]))

    def test_producer(self) -> None:
        """
        L{HostMember} is the connection's push producer and feeds the link
        its flow control.
        """
        t = StringTransport()
        out: list[dict[str, Any]] = []
        member = HostMember("m", out.append, t.loseConnection, t, Clock())
        self.assertTrue(verifyObject(IPushProducer, member))
        self.assertIs(t.producer, member)
        member.pauseProducing()
        member.sendMessage({"n": 1})
        self.assertEqual((linkState(member.link), out), ("Paused", []))
        member.resumeProducing()
        self.assertEqual((linkState(member.link), out), ("Writable", [{"n": 1}]))
        member.stopProducing()
        member.sendMessage({"n": 2})
        self.assertEqual((linkState(member.link), out, t.disconnecting), ("Dropped", [{"n": 1}], False))
        member.close()
        self.assertFalse(t.disconnecting)
