"""
CPU time per call of Specter's frame protocol (L{suite.specter.chord.wire},
used by the ring and the local RPC), in process: a server end fed
pipelined C{kv put} calls (64 per read) from memory and answering them at
once, the writes going to an in-memory transport.  Best of five runs of
3,000 reads; no sockets, so the figure is the protocol's own cost.

    .venv/bin/python bench/specter_frames.py [--reads 3000]
    PYTHONPATH=OLD_TREE .venv/bin/python bench/specter_frames.py   # another tree's code

The last line holds the figure as a key=value pair.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.dirname(HERE))

import _benchcli  # noqa: E402


def main() -> None:
    parser = _benchcli.parser(__doc__, ["frame_cpu_us_per_call", "load1"])
    parser.add_argument("--reads", type=int, default=3000, help="reads of 64 calls per run")
    args = parser.parse_args()
    _benchcli.setPhase("calls")
    from twisted.internet.defer import Deferred, succeed
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from suite.specter.chord import wire

    def dispatch(vid: Any, method: str, callArgs: list[Any]) -> Deferred[Any]:
        return succeed(None)

    clock = Clock()
    proto = wire.FrameProtocol(dispatch, clock)
    transport = StringTransport()
    proto.makeConnection(transport)

    def frame(value: Any) -> bytes:
        data = wire.pack(value)
        return struct.pack(">I", len(data)) + data

    calls = 64
    chunk = b"".join(frame([0, i, None, "kv", ["put", b"key-%d" % i, [b"v" * 64]]]) for i in range(calls))
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(args.reads):
            proto.dataReceived(chunk)
            clock.advance(0)
            transport.clear()
        best = min(best, (time.process_time() - start) / (args.reads * calls))
    print(f"code: {os.path.dirname(wire.__file__)}")
    print(f"frame_cpu_us_per_call={best * 1e6:.2f} load1={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    _benchcli.run(main)
