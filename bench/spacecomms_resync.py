"""
Re-sync traffic in the deterministic simulation (tests/spacecomms/sim.py):
N CDMs originated by A on the line A - B - C.

- relay: the B - C session drops and comes back; messages and bytes each
  way of its re-sync (C re-announces to B what B taught it).
- steady: the A - B session drops and comes back, A's store intact;
  what B sends A (none of A's own CDMs: A states it holds them) and what
  A sends B (its CDMs, unless B's summary shows it holds them).
- restore: A loses its store and restarts under the same node id; messages
  and bytes B sends A on reconnection, and how many of A's own CDMs A holds
  again afterwards.

Last line: key=value figures.  Usage: bench/spacecomms_resync.py [N]
"""

from __future__ import annotations

import os
import sys
import time

from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Policies
from suite.spacecomms.store import MemoryStore
from tests.spacecomms.sim import SimNet


def traffic(net: SimNet, src: str, dst: str) -> tuple[int, int]:
    sent = net.links[(src, dst)].sent
    return len(sent), sum(4 + len(e.encode()) for e in sent)


def main(n: int) -> str:
    net = SimNet(1)
    open_ = Policies()
    net.addNode("A", {"B": open_})
    net.addNode("B", {"A": open_, "C": open_})
    net.addNode("C", {"B": open_})
    net.connect("A", "B")
    net.connect("B", "C")
    now = net.clock.seconds()
    for i in range(n):
        net.nodes["A"].ingestCDM(
            sampleCDM(f"R-{i}", tca=now + 86400 + i, created=now, object2=str(50000 + i))
        )
    net.run(2)
    assert len(net.state("C")) == n
    cpu = time.process_time()
    net.disconnect("B", "C")
    net.connect("B", "C")
    net.run(2)
    bcMsgs, bcBytes = traffic(net, "B", "C")
    cbMsgs, cbBytes = traffic(net, "C", "B")
    net.disconnect("A", "B")
    net.connect("A", "B")
    net.run(2)
    steadyMsgs, steadyBytes = traffic(net, "B", "A")
    steadyAbMsgs, steadyAbBytes = traffic(net, "A", "B")
    net.crash("A")
    net.stores["A"] = MemoryStore()
    net.restart("A")
    net.connect("A", "B")
    net.run(2)
    baMsgs, baBytes = traffic(net, "B", "A")
    restored = sum(1 for r in net.stores["A"].records("cdm") if r.origin == "A")
    cpu = time.process_time() - cpu
    net.stop()
    return (
        f"n={n} relay_b_to_c_msgs={bcMsgs} relay_b_to_c_bytes={bcBytes} relay_c_to_b_msgs={cbMsgs} "
        f"relay_c_to_b_bytes={cbBytes} steady_b_to_a_msgs={steadyMsgs} steady_b_to_a_bytes={steadyBytes} "
        f"steady_a_to_b_msgs={steadyAbMsgs} steady_a_to_b_bytes={steadyAbBytes} "
        f"restore_b_to_a_msgs={baMsgs} restore_b_to_a_bytes={baBytes} "
        f"restored={restored} cpu_s={cpu:.2f} load1={os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
