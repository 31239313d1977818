"""
Re-sync traffic in the deterministic simulation (tests/spacecomms/sim.py):
N CDMs originated by A on the line A - B - C.

- relay: the B - C session drops and comes back; messages and bytes each
  way of its re-sync (C re-announces to B what B taught it).
- steady: the A - B session drops and comes back, A's store intact;
  what B sends A (none of A's own CDMs: A states it holds them) and what
  A sends B (its CDMs, unless B's summary shows it holds them).
- restore: A loses its store and restarts under the same node id; B had
  lost the oldest tenth of A's CDMs (as retention or an older backup of
  B's store would); messages and bytes B sends A on reconnection.
- restore2: then C, also a peer of A (the A - C session comes up only
  now), has its first session with A: messages and bytes C sends A (the
  tenth B lacked, the rest left out by A's summary) and A sends C (its
  summary lists the CDMs B gave back), what A sends on to B meanwhile
  (the tenth C gave back, which B lacked; nothing B holds), and how many
  of A's own CDMs A, and B, hold afterwards.

The initial spread of the N CDMs to C is awaited (polled, up to
SPREAD_TIMEOUT simulated seconds; the bench fails with a clear line if C
does not hold them all by then), and so is each re-sync (until no
session's re-sync is still open or sending).  max_turn_ms is the longest
single reactor turn (one timer or one message delivery, wall time) of the
relay re-sync, where each side builds and sends its summary (the heap built
up by then is frozen out of the garbage collector first, so its full
collections do not land on a turn being timed).

Last line: key=value figures.  Usage: bench/spacecomms_resync.py [N]
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

import _benchcli

from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Policies
from suite.spacecomms.store import MemoryStore
from tests.spacecomms.sim import SimNet

HEADLINE = (
    "n relay_b_to_c_msgs relay_b_to_c_bytes relay_c_to_b_msgs relay_c_to_b_bytes steady_b_to_a_msgs"
    " steady_b_to_a_bytes steady_a_to_b_msgs steady_a_to_b_bytes restore_b_to_a_msgs restore_b_to_a_bytes"
    " restored_from_b restore2_c_to_a_msgs restore2_c_to_a_bytes restore2_a_to_c_msgs restore2_a_to_c_bytes"
    " restore2_a_to_b_msgs restore2_a_to_b_bytes b_holds restored cpu_s max_turn_ms load1"
).split()

#: Simulated seconds the initial spread, and each re-sync, may take.
SPREAD_TIMEOUT = 600.0
SETTLE_TIMEOUT = 120.0


class TurnTimer:
    """
    Wraps the simulation clock's callLater so each call it runs (one
    reactor turn) is timed on the wall clock.
    """

    def __init__(self, net: SimNet) -> None:
        self.longest = 0.0
        original = net.clock.callLater

        def callLater(delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
            def timed(*a: Any, **kw: Any) -> Any:
                start = time.perf_counter()
                try:
                    return f(*a, **kw)
                finally:
                    self.longest = max(self.longest, time.perf_counter() - start)

            return original(delay, timed, *a, **kw)

        net.clock.callLater = callLater  # type: ignore[method-assign]


def waitFor(net: SimNet, done: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Run the simulation until C{done}, or fail naming C{what}.
    """
    waited = 0.0
    while not done():
        if waited >= timeout:
            raise SystemExit(f"spacecomms_resync: {what} not done within {timeout:.0f} simulated seconds")
        net.run(0.5)
        waited += 0.5


def settled(net: SimNet) -> bool:
    """
    Whether no session's re-sync is still open or sending.
    """
    for node in net.nodes.values():
        if any(m.syncing() for m in node.syncs.values()):
            return False
        if any(m.sending() for m in node.sends.values()):
            return False
    return True


def traffic(net: SimNet, src: str, dst: str) -> tuple[int, int]:
    sent = net.links[(src, dst)].sent
    return len(sent), sum(4 + len(e.encode()) for e in sent)


def main(n: int) -> str:
    _benchcli.setPhase(f"initial spread of {n} CDMs")
    net = SimNet(1)
    turns = TurnTimer(net)
    # A burst as large as the store: the initial spread is plain forwarding,
    # not anti-entropy repairing what the default burst (1,000) dropped.
    # Re-sync traffic is exempt from the rate limit either way.
    open_ = Policies(rate_limit_burst=max(1000, 2 * n))
    # C is a peer of A too, but their session comes up only for restore2.
    net.addNode("A", {"B": open_, "C": open_})
    net.addNode("B", {"A": open_, "C": open_})
    net.addNode("C", {"B": open_, "A": open_})
    net.connect("A", "B")
    net.connect("B", "C")
    now = net.clock.seconds()
    for i in range(n):
        net.nodes["A"].ingestCDM(
            sampleCDM(f"R-{i}", tca=now + 86400 + i, created=now, object2=str(50000 + i))
        )
        if i % 500 == 499:
            # In steps: the simulation clock sorts its pending calls on
            # every insert, so thousands in flight at once cost it minutes.
            net.run(0.1)
    waitFor(
        net,
        lambda: len(net.state("C")) >= n,
        SPREAD_TIMEOUT,
        f"initial spread of {n} CDMs to C (it holds {len(net.state('C'))})",
    )
    waitFor(net, lambda: settled(net), SETTLE_TIMEOUT, "initial re-syncs")
    # The simulation keeps three nodes and every message sent in one heap:
    # a full collection of it would land on whichever turn runs then.
    gc.collect()
    gc.freeze()
    cpu = time.process_time()
    _benchcli.setPhase("relay re-sync")
    net.disconnect("B", "C")
    turns.longest = 0.0
    net.connect("B", "C")
    net.run(2)
    waitFor(net, lambda: settled(net), SETTLE_TIMEOUT, "relay re-sync")
    longest = turns.longest
    bcMsgs, bcBytes = traffic(net, "B", "C")
    cbMsgs, cbBytes = traffic(net, "C", "B")
    _benchcli.setPhase("steady re-sync")
    net.disconnect("A", "B")
    net.connect("A", "B")
    net.run(2)
    waitFor(net, lambda: settled(net), SETTLE_TIMEOUT, "steady re-sync")
    steadyMsgs, steadyBytes = traffic(net, "B", "A")
    steadyAbMsgs, steadyAbBytes = traffic(net, "A", "B")
    _benchcli.setPhase("restore re-sync")
    net.crash("A")
    net.stores["A"] = MemoryStore()
    net.restart("A")
    oldest = sorted(net.stores["B"].records("cdm"), key=lambda r: r.sequence)[: n // 10]
    for r in oldest:
        net.stores["B"].remove("cdm", r.key)
    net.connect("A", "B")
    net.run(2)
    waitFor(net, lambda: settled(net), SETTLE_TIMEOUT, "restore re-sync")
    baMsgs, baBytes = traffic(net, "B", "A")
    fromB = sum(1 for r in net.stores["A"].records("cdm") if r.origin == "A")
    abBefore = traffic(net, "A", "B")
    _benchcli.setPhase("second restore re-sync")
    net.connect("A", "C")
    net.run(2)
    waitFor(net, lambda: settled(net), SETTLE_TIMEOUT, "second restore re-sync")
    caMsgs, caBytes = traffic(net, "C", "A")
    acMsgs, acBytes = traffic(net, "A", "C")
    abAfter = traffic(net, "A", "B")
    abMsgs, abBytes = abAfter[0] - abBefore[0], abAfter[1] - abBefore[1]
    atB = sum(1 for r in net.stores["B"].records("cdm") if r.origin == "A")
    restored = sum(1 for r in net.stores["A"].records("cdm") if r.origin == "A")
    cpu = time.process_time() - cpu
    net.stop()
    return (
        f"n={n} relay_b_to_c_msgs={bcMsgs} relay_b_to_c_bytes={bcBytes} relay_c_to_b_msgs={cbMsgs} "
        f"relay_c_to_b_bytes={cbBytes} steady_b_to_a_msgs={steadyMsgs} steady_b_to_a_bytes={steadyBytes} "
        f"steady_a_to_b_msgs={steadyAbMsgs} steady_a_to_b_bytes={steadyAbBytes} "
        f"restore_b_to_a_msgs={baMsgs} restore_b_to_a_bytes={baBytes} restored_from_b={fromB} "
        f"restore2_c_to_a_msgs={caMsgs} restore2_c_to_a_bytes={caBytes} "
        f"restore2_a_to_c_msgs={acMsgs} restore2_a_to_c_bytes={acBytes} "
        f"restore2_a_to_b_msgs={abMsgs} restore2_a_to_b_bytes={abBytes} b_holds={atB} "
        f"restored={restored} cpu_s={cpu:.2f} max_turn_ms={longest * 1000:.1f} load1={os.getloadavg()[0]:.2f}"
    )


def cli() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE)
    parser.add_argument("n", nargs="?", type=int, default=1000, help="CDMs originated by A (1000)")
    print(main(parser.parse_args().n))


if __name__ == "__main__":
    _benchcli.run(cli)
