"""
A process's view of its ring membership: the peers it knows now and knew
before (kept across restarts in the ring state), the seeds it gets in
through, why it is not in the ring while it cannot get in, and who waits
for all its vnodes to serve.

The ring state is saved one write at a time: a view asked to be saved
while a write is in progress is written once more after it (the newest
view asked for, however many were), and L{RingView.close} waits for the
write in progress and writes the last view asked for if the file does not
hold it yet, so a stop never loses the view saved before leaving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.serial import SerialJob
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, ref
from suite.specter.interfaces import IRingState

if TYPE_CHECKING:
    from suite.specter.chord.node import ChordNode

__all__ = ["JOIN_LOG_INTERVAL", "MAX_PEERS", "REFUSE_AFTER", "RingView"]

log = Logger()
#: seconds between two reports of the same trouble getting into the ring
JOIN_LOG_INTERVAL = 5.0
#: the most processes a node asks while looking for its ring
MAX_PEERS = 1024
#: seconds out of reach of the ring before KV calls are refused outright
REFUSE_AFTER = 3.0


class RingView:
    """
    The membership view of C{node}; C{ringState} keeps it across restarts.
    """

    def __init__(self, node: ChordNode, ringState: Any = None) -> None:
        self.node = node
        addr = node.addr
        #: where this process's ring membership is kept across restarts
        self.ringState = IRingState(ringState) if ringState is not None else None
        history = self.ringState.load() if self.ringState is not None else None
        #: processes this one was in a ring with (its last saved view)
        previous = (history or {}).get("addr")
        self.knownPeers: list[str] = [
            p for p in (history or {}).get("peers", []) if p not in (addr, previous)
        ]
        if previous and previous != addr:
            # Node identity is the advertise address (vnode ids hash it): a new
            # one means new ring positions.  Rejoin through the peers known.
            log.warn(
                "advertise address changed from {old} to {new}: joining as new vnodes through "
                "the {count} peers known; this directory's records are merged into the new "
                "ranges and the ring drops the vnodes of {old} once they stop answering",
                old=previous,
                new=addr,
                count=len(self.knownPeers),
            )
        self._savedPeers = set(self.knownPeers)
        #: every process this one has been in a ring with (for healing splits)
        self.formerPeers: set[str] = set(self.knownPeers)
        #: writes the ring state one at a time, coalescing requests made meanwhile
        self._saver = SerialJob(self._write, "saving the ring state", log=log)
        #: the newest view asked to be saved, and the last one written
        self._pending: dict[str, Any] | None = None
        self._written: dict[str, Any] | None = None
        #: addresses tried, in order, when no vnode of this process serves
        self.seeds: list[str] = []
        #: whether this process founds the ring (rather than joining one)
        self.founding = False
        #: why this process is not in the ring, while it cannot get in
        self.joinProblem: str | None = None
        self._joinLoggedAt: float | None = None
        self._troubleSince = 0.0
        self._joinSuppressed = 0
        #: who waits for every vnode here to serve (L{whenServing})
        self._servingWaiters: list[Deferred[None]] = []

    # -- seeds ---------------------------------------------------------------------
    def plan(self, seed: str | None, bootstrap: bool, alsoJoin: tuple[str, ...]) -> None:
        """
        Choose how to get in: through C{seed} and C{alsoJoin}, then the
        peers known; found a new ring when told to or when none is known.
        """
        given = ([seed] if seed else []) + [a for a in alsoJoin if a != seed]
        self.seeds = given + [p for p in self.knownPeers if p not in given]
        self.founding = bootstrap or not self.seeds
        if self.founding:
            log.info("founding a new ring" + (" (--bootstrap)" if bootstrap else ""))
        elif seed is None:
            log.info(
                "rejoining the ring through the {count} peers this node knew: {peers}",
                count=len(self.knownPeers),
                peers=", ".join(self.knownPeers),
            )

    def rejoining(self, peer: str) -> None:
        """
        The process joins the ring C{peer} serves in (after a split).
        """
        self.formerPeers.add(peer)
        self.seeds = [peer] + sorted(self.formerPeers - {peer, self.node.addr})
        self.founding = False

    # -- ring state ----------------------------------------------------------------
    def currentPeers(self) -> set[str]:
        """
        The other processes this one's vnodes know now (successors,
        predecessors, fingers).
        """
        out: set[str] = set()
        for v in self.node.vnodes:
            if v.gone:
                continue
            for r in (*v.succs, v.pred, *v.fingers):
                if r is not None and r.addr != self.node.addr:
                    out.add(r.addr)
        return out

    def snapshot(self, peers: set[str]) -> dict[str, Any]:
        return {
            "format": 1,
            "addr": self.node.addr,
            "peers": sorted(peers),
            "vnodes": [
                {
                    "index": v.ref.index,
                    "predecessor": list(v.pred) if v.pred else None,
                    "successors": [list(s) for s in v.succs],
                }
                for v in self.node.vnodes
            ],
        }

    def save(self, force: bool = False) -> None:
        """
        Save the ring membership when the set of peers changed (or when
        C{force}d); an empty view never replaces a saved one, so a process
        that lost every peer still knows where its ring was.  Asked while a
        write is in progress, the view is written once more after it.
        """
        if self.ringState is None:
            return
        if not any(v.serving for v in self.node.vnodes):
            return
        peers = self.currentPeers()
        if not peers or (peers == self._savedPeers and not force):
            return
        self._savedPeers = peers
        if len(self.formerPeers) < MAX_PEERS:
            self.formerPeers |= peers
        self.knownPeers = sorted(peers)
        self._pending = self.snapshot(peers)
        self._saver.request()

    def _write(self) -> Deferred[None]:
        """
        Write the newest view asked for (one write at a time, see L{save}).
        """
        assert self.ringState is not None and self._pending is not None
        state = self._pending

        def written(_: object) -> None:
            self._written = state

        def failed(f: Failure) -> None:
            log.failure("cannot save the ring state", f)
            self._savedPeers = set()

        d: Deferred[None] = self.ringState.save(state)
        return d.addCallbacks(written, failed)

    def close(self) -> Deferred[None]:
        """
        Stop saving (at shutdown): wait for the write in progress, then write
        the last view asked for if the file does not hold it yet.  Later
        views are not saved.
        """
        stopped = self._saver.stop()

        def last(_: object) -> Deferred[None] | None:
            ringState, state = self.ringState, self._pending
            if ringState is None or state is None or state is self._written:
                return None
            d: Deferred[None] = ringState.save(state)
            return d.addErrback(lambda f: log.failure("cannot save the ring state", f))

        return stopped.addCallback(last)

    # -- getting in ----------------------------------------------------------------
    def joinTrouble(self, reason: str) -> None:
        """
        Record why this process is not in the ring and log it, at most once
        every L{JOIN_LOG_INTERVAL} seconds (with how many retries failed since).
        """
        now = self.node.clock.seconds()
        if self.joinProblem is None:
            self._troubleSince = now
        self.joinProblem = reason
        if self._joinLoggedAt is not None and now - self._joinLoggedAt < JOIN_LOG_INTERVAL:
            self._joinSuppressed += 1
            return
        log.warn(
            "not in the ring: {reason} (retrying; {count} more failed attempts since the last report)",
            reason=reason,
            count=self._joinSuppressed,
        )
        self._joinLoggedAt = now
        self._joinSuppressed = 0

    def inTouch(self) -> None:
        """
        Heard from the ring (a serving vnode found): no trouble getting in.
        """
        self.joinProblem = None

    def outOfRing(self) -> str | None:
        """
        Why KV calls are refused here: no vnode serves and the ring has been
        out of reach for L{REFUSE_AFTER} seconds or more.
        """
        if self.joinProblem is None or any(v.serving for v in self.node.vnodes):
            return None
        if self.node.clock.seconds() - self._troubleSince < REFUSE_AFTER:
            return None
        return self.joinProblem

    def becameServing(self) -> None:
        if self.joinProblem is not None:
            log.info("in the ring again")
        self.joinProblem = None
        self._joinLoggedAt = None
        if self._servingWaiters and all(v.serving for v in self.node.vnodes):
            waiters, self._servingWaiters = self._servingWaiters, []
            for d in waiters:
                d.callback(None)

    def whenServing(self) -> Deferred[None]:
        if all(v.serving for v in self.node.vnodes):
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._servingWaiters.remove(d))
        self._servingWaiters.append(d)
        return d

    async def contactSeeds(self) -> VnodeRef:
        """
        A serving vnode of another process, found through the seeds and,
        transitively, the peers each of them knew.  When every process so
        found answers and none serves (the whole ring is restarting), the
        one with the lowest address founds it again: all of them see the
        same set, so exactly one does.
        """
        node = self.node
        if not self.seeds:
            raise RemoteError(E.BUSY, "no serving vnode yet")
        queue = list(self.seeds)
        seen = set(queue)
        answered: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        i = 0
        while i < len(queue):
            addr = queue[i]
            i += 1
            try:
                try:
                    info = await node.transport.call(addr, None, "status", [], node.config.rpcTimeout)
                except RemoteError as e:
                    if e.code != E.BAD_REQUEST:
                        raise
                    # a peer from before the status call: it only knows hello
                    hello = await node.transport.call(addr, None, "hello", [], node.config.rpcTimeout)
                    info = {"serving": hello, "history": False}
            except RemoteError as e:
                errors.append(f"{addr}: {e.message or e.code}")
                continue
            if not isinstance(info, dict):
                errors.append(f"{addr}: malformed status answer")
                continue
            refs = [r for r in (ref(x) for x in info.get("serving") or []) if r is not None]
            if refs:
                self.joinProblem = None
                return node.rng.choice(refs)
            answered[addr] = info
            for peer in info.get("peers") or []:
                if isinstance(peer, str) and peer != node.addr and peer not in seen and len(seen) < MAX_PEERS:
                    seen.add(peer)
                    queue.append(peer)
        if not answered:
            self.joinTrouble("cannot reach any known ring peer (" + "; ".join(errors) + ")")
            raise RemoteError(E.NOT_IN_RING, self.joinProblem or "")
        restarting = {a for a, info in answered.items() if info.get("history")}
        if self.knownPeers and restarting == seen and all(node.addr < a for a in seen):
            if not self.founding:
                log.info(
                    "every ring peer is restarting too ({peers}): this node re-forms the ring",
                    peers=", ".join(sorted(seen)),
                )
            self.founding = True
            raise RemoteError(E.BUSY, "re-forming the ring")
        self.joinTrouble(
            "no ring peer serves yet: "
            + ", ".join(sorted(answered))
            + " answered (waiting for the ring to re-form"
            + (f"; unreachable: {'; '.join(errors)})" if errors else ")")
        )
        raise RemoteError(E.NOT_IN_RING, self.joinProblem or "")
