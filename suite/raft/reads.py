"""
Linearizable reads on the leader: ReadIndex and optional lease reads.

Every heartbeat broadcast carries a new context number; followers echo it.
A read issued when the highest context is C is confirmed once a quorum of
voters has echoed a context > C (the leader was still leader after the
read arrived); it then waits until the state machine has applied the
commit index recorded when it arrived.  Reads arriving in the same reactor
turn share one immediate heartbeat round.  With lease reads enabled, a
read is confirmed at once while a quorum acknowledged a heartbeat sent
less than 0.9 x electionTimeoutMin ago.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

if TYPE_CHECKING:
    from suite.raft.leader import LeaderState


class ReadTracker:
    """
    Pending reads of one leader term.
    """

    def __init__(self, leader: LeaderState) -> None:
        self.leader = leader
        self.node = leader.node
        self.ctx = 0
        self.ctxSentAt: dict[int, float] = {}
        self.peerCtx: dict[str, int] = {}
        self.leaseStart = -1e18
        self.reads: list[tuple[int, int, Deferred[int]]] = []
        self.confirmed: list[tuple[int, Deferred[int]]] = []
        self.waitingForTerm: list[Deferred[int]] = []
        self.call: IDelayedCall | None = None

    def request(self, d: Deferred[int]) -> None:
        """
        A new read; C{d} fires with its read index.
        """
        if not self.leader.committedInTerm:
            self.waitingForTerm.append(d)
        else:
            self._queue(d)

    def termCommitted(self) -> None:
        """
        The leader committed its first entry: reads may now start.
        """
        waiting, self.waitingForTerm = self.waitingForTerm, []
        for d in waiting:
            self._queue(d)

    def _queue(self, d: Deferred[int]) -> None:
        node = self.node
        settings = node.settings
        if (
            settings.leaseReads
            and self.leader.transferTarget is None
            and node.clock.seconds() < self.leaseStart + 0.9 * settings.electionTimeoutMin
        ):
            self.confirmed.append((node.commitIndex, d))
        else:
            self.reads.append((self.ctx + 1, node.commitIndex, d))
            if self.call is None:
                self.call = node.clock.callLater(0, self.leader.broadcastHeartbeat)
        self.confirm()

    def heartbeatSent(self) -> int:
        """
        A heartbeat round starts; returns its context.
        """
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.ctx += 1
        self.ctxSentAt[self.ctx] = self.node.clock.seconds()
        return self.ctx

    def acknowledged(self, peer: str, ctx: int) -> None:
        """
        C{peer} echoed heartbeat context C{ctx}.
        """
        if ctx > self.peerCtx.get(peer, 0):
            self.peerCtx[peer] = ctx
            self.confirm()

    def confirm(self) -> None:
        node = self.node
        config = node.configs.latest()
        acked = sorted((self.ctx if v == node.id else self.peerCtx.get(v, 0)) for v in config.voters)
        if not acked:
            return
        quorumCtx = acked[len(acked) - config.quorum()]
        if quorumCtx in self.ctxSentAt:
            self.leaseStart = max(self.leaseStart, self.ctxSentAt[quorumCtx])
            for c in [c for c in self.ctxSentAt if c < quorumCtx]:
                del self.ctxSentAt[c]
        ready = [(i, d) for c, i, d in self.reads if c <= quorumCtx]
        if ready:
            self.reads = [(c, i, d) for c, i, d in self.reads if c > quorumCtx]
            self.confirmed.extend(ready)
        if self.confirmed:
            self.applied(node.lastApplied)

    def applied(self, index: int) -> None:
        """
        The state machine reached C{index}: fire the confirmed reads it covers.
        """
        ready = [(i, d) for i, d in self.confirmed if i <= index]
        if ready:
            self.confirmed = [(i, d) for i, d in self.confirmed if i > index]
            for i, d in ready:
                d.callback(i)

    def abandon(self) -> list[Deferred[int]]:
        """
        Leadership ended: return every pending read (for the caller to fail).
        """
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        waiters = [d for _, _, d in self.reads] + [d for _, d in self.confirmed] + self.waitingForTerm
        self.reads, self.confirmed, self.waitingForTerm = [], [], []
        return waiters
