"""
The local node's lifecycle as a table (L{suite.gossip.lifecycle}): every
input in every state, with the state after, what it asks of the node and
which waiters fire, in order, the phase it names and the timers left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.fields import Address
from suite.gossip.lifecycle import LifecycleCore, LifecycleInputs, LifecycleMachine, Phase
from suite.gossip.memory import MemoryNetwork
from suite.gossip.node import GossipNode
from suite.gossip.settings import GossipSettings


def stateOf(inputs: LifecycleInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class FakeNode:
    """
    Records what the lifecycle asks of the node in C{events}.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def listen(self) -> None:
        self.events.append("listen")

    def begin(self, seeds: Sequence[Address]) -> Deferred[int]:
        self.events.append("begin")
        return succeed(2)

    def sendLeaveIntent(self) -> None:
        self.events.append("intent")

    def announceLeft(self) -> None:
        self.events.append("announce")

    def endService(self) -> Deferred[None]:
        self.events.append("end")
        return succeed(None)


class Env:
    """
    A lifecycle over a L{FakeNode}: the leave intent goes 1 s before the
    leave message, which is gossiped for 4 s.
    """

    def __init__(self, intentDelay: float = 1.0) -> None:
        self.clock = Clock()
        self.node = FakeNode()
        self.events = self.node.events
        self.core = LifecycleCore(self.node, "n", self.clock, intentDelay, 4.0)
        self.machine = LifecycleMachine(self.core)

    def waiter(self, name: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.addCallback(lambda _: self.events.append(f"{name} fired"))
        return d


#: One call of each input (the machine's whole alphabet).
CALLS: dict[str, Callable[[Env], object]] = {
    "start": lambda e: e.machine.start([]).addCallback(lambda n: e.events.append(f"started {n}")),
    "leave": lambda e: e.machine.leave(e.waiter("w")),
    "stop": lambda e: e.machine.stop(e.waiter("w")),
    "listenFailed": lambda e: e.machine.listenFailed(),
    "announceDue": lambda e: e.machine.announceDue(),
    "propagated": lambda e: e.machine.propagated(),
}


def toLeaving(env: Env) -> None:
    env.machine.start([])
    env.machine.leave(env.waiter("w0"))


def toLeft(env: Env) -> None:
    env.machine.start([])
    env.machine.leave(Deferred())
    env.clock.advance(5)


def toStopped(env: Env) -> None:
    env.machine.start([])
    env.machine.stop(Deferred())


#: How to reach each state from a new machine (Leaving's first leave waits
#: as "w0").
PATHS: dict[str, Callable[[Env], object]] = {
    "Idle": lambda e: None,
    "Running": lambda e: e.machine.start([]),
    "Leaving": toLeaving,
    "Left": toLeft,
    "Stopped": toStopped,
}

PHASES = {
    "Idle": Phase.IDLE,
    "Running": Phase.RUNNING,
    "Leaving": Phase.LEAVING,
    "Left": Phase.LEFT,
    "Stopped": Phase.STOPPED,
}

RESTART = ("Running", ["listen", "begin", "started 2"], 0)
DONE = ["w fired"]

#: (state, input) -> (state after, events, timers left).  Pairs not listed
#: change nothing, ask nothing and leave Leaving's two timers.  The private
#: inputs fed in Leaving stand for its timers firing (so they stay listed).
ANSWERS: dict[tuple[str, str], tuple[str, list[str], int]] = {
    ("Idle", "start"): RESTART,
    ("Idle", "leave"): ("Idle", DONE, 0),
    ("Idle", "stop"): ("Idle", DONE, 0),
    ("Running", "start"): ("Running", ["started 0"], 0),
    ("Running", "leave"): ("Leaving", ["intent"], 2),
    ("Running", "stop"): ("Stopped", ["end", "w fired"], 0),
    ("Running", "listenFailed"): ("Stopped", [], 0),
    ("Leaving", "start"): ("Leaving", ["started 0"], 2),
    ("Leaving", "stop"): ("Left", ["end", "w0 fired", "w fired"], 0),
    ("Leaving", "announceDue"): ("Leaving", ["announce"], 2),
    ("Leaving", "propagated"): ("Left", ["end", "w0 fired"], 0),
    ("Left", "start"): RESTART,
    ("Left", "leave"): ("Left", DONE, 0),
    ("Left", "stop"): ("Left", DONE, 0),
    ("Stopped", "start"): RESTART,
    ("Stopped", "leave"): ("Stopped", DONE, 0),
    ("Stopped", "stop"): ("Stopped", DONE, 0),
}


class LifecycleTableTests(SynchronousTestCase):
    """
    Every input in every state of the local node's lifecycle.
    """

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet.
        """
        self.assertEqual(set(CALLS), {n for n in vars(LifecycleInputs) if not n.startswith("_")})

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after, what the node is asked
        and which waiters fire (in order), the phase named, the timers left.
        """
        for state, path in PATHS.items():
            for name, call in CALLS.items():
                env = Env()
                path(env)
                self.assertEqual(stateOf(env.machine), state)
                self.assertEqual(env.core.phase, PHASES[state])
                del env.events[:]
                call(env)
                after, events, timers = ANSWERS.get(
                    (state, name), (state, [], 2 if state == "Leaving" else 0)
                )
                self.assertEqual(
                    (stateOf(env.machine), env.events, env.core.phase, len(env.clock.getDelayedCalls())),
                    (after, events, PHASES[after], timers),
                    f"{state} + {name}",
                )

    def test_leaveTimeline(self) -> None:
        """
        With a Serf leave intent: the intent at once, the leave message
        after the intent delay, the stop after the propagation delay; every
        leave asked for meanwhile fires then.
        """
        env = Env()
        env.machine.start([])
        del env.events[:]
        env.machine.leave(env.waiter("w0"))
        self.assertEqual(env.events, ["intent"])
        env.clock.advance(1)
        self.assertEqual(env.events, ["intent", "announce"])
        env.machine.leave(env.waiter("w1"))
        env.clock.advance(3.9)
        self.assertEqual(env.events, ["intent", "announce"])
        env.clock.advance(0.1)
        self.assertEqual(env.events, ["intent", "announce", "end", "w0 fired", "w1 fired"])
        self.assertEqual((stateOf(env.machine), env.clock.getDelayedCalls()), ("Left", []))

    def test_leaveWithoutIntent(self) -> None:
        """
        Without a Serf leave intent the leave message goes at once (after
        the transition that enters Leaving) and the stop follows the
        propagation delay.
        """
        env = Env(intentDelay=0.0)
        env.machine.start([])
        del env.events[:]
        env.machine.leave(env.waiter("w0"))
        self.assertEqual((env.events, len(env.clock.getDelayedCalls())), (["intent", "announce"], 1))
        env.clock.advance(4)
        self.assertEqual(env.events, ["intent", "announce", "end", "w0 fired"])


class _DeafTransport:
    """
    A gossip transport that cannot listen.
    """

    def startListening(self, receiver: object) -> None:
        raise OSError("address in use")


class NodeLifecycleTests(SynchronousTestCase):
    """
    L{GossipNode} learns its phase from its lifecycle machine.
    """

    def test_listenFailure(self) -> None:
        """
        A start whose transport cannot listen raises and leaves the node
        stopped; it can start again.
        """
        clock = Clock()
        network = MemoryNetwork(clock)
        transport = network.transport(("10.0.0.1", 7946))
        node = GossipNode("n", ("10.0.0.1", 7946), transport, clock, GossipSettings())
        real = transport.startListening
        transport.startListening = _DeafTransport().startListening  # type: ignore[method-assign]
        self.assertRaises(OSError, node.start, [])
        self.assertEqual((node.running, node.leaving, stateOf(node.lifecycle)), (False, False, "Stopped"))
        self.assertEqual(clock.getDelayedCalls(), [])
        transport.startListening = real  # type: ignore[method-assign]
        self.assertEqual(self.successResultOf(node.start([])), 0)
        self.assertTrue(node.running)
        self.successResultOf(node.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_leaveThenStop(self) -> None:
        """
        A stop asked for while leaving ends the leave at once: the node is
        left, its timers are gone and the leave's Deferred fires.
        """
        clock = Clock()
        network = MemoryNetwork(clock)
        node = GossipNode("n", ("10.0.0.1", 7946), network.transport(("10.0.0.1", 7946)), clock)
        node.start([])
        leaving = node.leave()
        self.assertEqual((node.running, node.leaving, node.members()[0].status), (True, True, "left"))
        self.assertNoResult(leaving)
        self.successResultOf(node.stop())
        self.successResultOf(leaving)
        self.assertEqual((node.running, node.leaving, clock.getDelayedCalls()), (False, True, []))
