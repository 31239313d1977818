"""
Client sessions: the layer between the log and the application state
machine that makes a retried command (same client id and sequence number)
take effect once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import msgpack

from suite.raft.interfaces import IRaftSnapshotCapture, IRaftStateMachine
from suite.raft.messages import NORMAL, Entry
from suite.raft.snapshot import binHeader


class StaleRequest(Exception):
    """
    The client already moved past this sequence number; the command was not
    applied now (it was applied earlier, or superseded).
    """


def _packSnapshot(sessions: list[list[object]], data: bytes) -> bytes:
    """
    C{msgpack.packb([sessions, data])} without copying C{data} twice.
    """
    return b"".join((b"\x92", msgpack.packb(sessions, use_bin_type=True), binHeader(len(data)), data))


class SessionApplier:
    """
    Apply committed entries to an L{IRaftStateMachine}, deduplicating
    session commands; keeps at most C{maxSessions} sessions (least recently
    used evicted, deterministically on every replica).
    """

    def __init__(self, stateMachine: IRaftStateMachine, maxSessions: int = 10000) -> None:
        self.stateMachine = IRaftStateMachine(stateMachine)
        self.maxSessions = maxSessions
        self.sessions: OrderedDict[str, tuple[int, object]] = OrderedDict()

    def apply(self, entry: Entry) -> object:
        """
        Apply one committed entry; return the result (or a L{StaleRequest}
        instance for an out-of-date session command).
        """
        if entry.kind != NORMAL:
            return None
        if not entry.client:
            return self.stateMachine.apply(entry.index, entry.data)
        known = self.sessions.get(entry.client)
        if known is not None:
            seq, result = known
            if entry.seq == seq:
                self.sessions.move_to_end(entry.client)
                return result
            if entry.seq < seq:
                return StaleRequest(f"sequence {entry.seq} is older than {seq}")
        result = self.stateMachine.apply(entry.index, entry.data)
        self.sessions[entry.client] = (entry.seq, result)
        self.sessions.move_to_end(entry.client)
        while len(self.sessions) > self.maxSessions:
            self.sessions.popitem(last=False)
        return result

    def snapshot(self) -> bytes:
        # At once, on the calling thread (the node's own snapshot): the state
        # machine's snapshot, never its capture, whose encoding is meant for
        # a thread.
        return _packSnapshot([[k, s, r] for k, (s, r) in self.sessions.items()], self.stateMachine.snapshot())

    def captureSnapshot(self) -> Callable[[], bytes]:
        """
        Freeze the sessions and the state machine now; the function returned
        gives the bytes L{snapshot} gives now, in any thread.  A state
        machine that provides L{IRaftSnapshotCapture} is captured (cheap);
        any other is snapshotted at once, here.
        """
        sessions = [[k, s, r] for k, (s, r) in self.sessions.items()]
        capture = IRaftSnapshotCapture(self.stateMachine, None)
        if capture is not None:
            inner = capture.captureSnapshot()
        else:
            data = self.stateMachine.snapshot()

            def inner() -> bytes:
                return data

        def encode() -> bytes:
            return _packSnapshot(sessions, inner())

        return encode

    def restore(self, data: bytes) -> None:
        sessions, inner = msgpack.unpackb(data, raw=False)
        self.sessions = OrderedDict((k, (s, r)) for k, s, r in sessions)
        self.stateMachine.restore(inner)
