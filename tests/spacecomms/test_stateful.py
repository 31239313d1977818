"""
A hypothesis state machine drives a four-node network (triangle plus a
tail) through ingests, withdrawals, link failures and reordered delivery.
No node ever loses an entry it accepted; once every link is back, the
re-syncs of the reconnections alone (anti-entropy is off) bring all nodes
to agree within a second (a few message delays, see "Convergence" in
docs/spacecomms-protocol.md), and no node applies the same message twice.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Policies
from tests.spacecomms.sim import SimNet

EDGES = [("A", "B"), ("B", "C"), ("A", "C"), ("C", "D")]
NAMES = ["A", "B", "C", "D"]


class RoutingMachine(RuleBasedStateMachine):
    """
    Random operations on a simulated network, checked for convergence.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = SimNet(0, reorder=True)
        for n in NAMES:
            peers = {b if a == n else a: Policies() for a, b in EDGES if n in (a, b)}
            # Anti-entropy off: convergence must come from the re-syncs.
            self.net.addNode(n, peers, anti_entropy_interval_seconds=0)
        for a, b in EDGES:
            self.net.connect(a, b)
        self.count = 0
        self.active: list[tuple[str, str]] = []
        self.held: dict[str, set[str]] = {n: set() for n in NAMES}

    @rule(node=st.sampled_from(NAMES))
    def ingest(self, node: str) -> None:
        self.count += 1
        cid = f"ST-{self.count}"
        now = self.net.clock.seconds()
        self.net.nodes[node].ingestCDM(sampleCDM(cid, tca=now + 86400, created=now, object2=str(self.count)))
        self.active.append((node, cid))

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        node, cid = self.active.pop(data.draw(st.integers(0, len(self.active) - 1)))
        self.net.nodes[node].withdrawCDM(cid, "FALSE_POSITIVE")

    @rule(edge=st.sampled_from(EDGES))
    def toggleLink(self, edge: tuple[str, str]) -> None:
        a, b = edge
        if (a, b) in self.net.links:
            self.net.disconnect(a, b)
        else:
            self.net.connect(a, b)

    @rule(seconds=st.floats(0, 0.1))
    def advance(self, seconds: float) -> None:
        self.net.run(seconds)

    @invariant()
    def nothingLost(self) -> None:
        """
        A node never loses an entry it accepted (withdrawn ones stay as
        tombstones).
        """
        for n in NAMES:
            keys = set(self.net.state(n))
            assert self.held[n] <= keys, f"{n} lost {sorted(self.held[n] - keys)}"
            self.held[n] = keys

    def teardown(self) -> None:
        try:
            for a, b in EDGES:
                if (a, b) not in self.net.links:
                    self.net.connect(a, b)
            # Messages take at most 50 ms; the re-syncs and the forwarding
            # they cause span a few hops.
            self.net.run(1)
            self.nothingLost()
            states = {n: self.net.state(n) for n in NAMES}
            for n in NAMES:
                assert states[n] == states["A"], f"{n} differs from A: {states[n]} != {states['A']}"
            assert len(states["A"]) == self.count
            dups = [k for k, v in Counter(self.net.applied()).items() if v > 1]
            assert dups == [], dups
        finally:
            self.net.stop()


RoutingMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRouting = RoutingMachine.TestCase
