"""
The calls of one process's ring: outgoing calls to vnodes of other
processes (KV calls batched per process, timeouts counted so lookups route
around an unresponsive process) and the dispatcher that runs the calls
arriving from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.kv.records import StoreWriteFailed
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef

if TYPE_CHECKING:
    from suite.specter.chord.node import ChordNode

__all__ = ["BATCH_INFLIGHT", "BATCH_MAX", "Batcher", "Calls", "dispatch", "fail"]

log = Logger()
BATCH_INFLIGHT = 4
BATCH_MAX = 1024


class Batcher:
    """
    KV calls to one peer process: up to L{BATCH_INFLIGHT} C{multi} calls in
    flight; calls made meanwhile travel together in the next one.
    """

    def __init__(self, node: ChordNode, addr: str) -> None:
        self.node = node
        self.addr = addr
        self.queue: list[tuple[int, list[Any], Deferred[Any]]] = []
        self.inflight = 0

    def send(self, vid: int, args: list[Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queue.append((vid, args, d))
        if self.inflight < BATCH_INFLIGHT:
            self._flush()
        return d

    def _flush(self) -> None:
        batch, self.queue = self.queue[:BATCH_MAX], self.queue[BATCH_MAX:]
        self.inflight += 1
        calls = [[vid, "kv", args] for vid, args, _ in batch]
        d = self.node.transport.call(self.addr, None, "multi", [calls], self.node.config.rpcTimeout)

        def done(results: Any) -> None:
            self.inflight -= 1
            if isinstance(results, Failure) or not isinstance(results, list) or len(results) != len(batch):
                err = (
                    results.value
                    if isinstance(results, Failure) and isinstance(results.value, RemoteError)
                    else RemoteError(E.GONE, "batch failed")
                )
                if err.code == E.TIMEOUT:
                    self.node._timedOut(self.addr)
                for _, _, waiting in batch:
                    waiting.errback(err)
            else:
                for (_, _, waiting), (ok, value) in zip(batch, results, strict=True):
                    if ok:
                        waiting.callback(value)
                    else:
                        waiting.errback(RemoteError.fromWire(value))
            if self.queue and self.inflight < BATCH_INFLIGHT:
                self._flush()

        d.addBoth(done)


class Calls:
    """
    Outgoing calls of C{node}: local ones run in place, KV calls go through
    a L{Batcher} per process, and a process whose calls time out twice in a
    row is suspected for two call timeouts.
    """

    def __init__(self, node: ChordNode) -> None:
        self.node = node
        self.suspects: dict[str, float] = {}
        self.timeouts: dict[str, int] = {}
        self.batchers: dict[str, Batcher] = {}

    def call(self, target: VnodeRef, method: str, args: list[Any]) -> Deferred[Any]:
        node = self.node
        if target.addr == node.addr:
            return node.dispatch(target.id, method, args)
        if method == "kv":
            batcher = self.batchers.get(target.addr)
            if batcher is None:
                batcher = self.batchers[target.addr] = Batcher(node, target.addr)
            return batcher.send(target.id, args)
        d: Deferred[Any] = node.transport.call(target.addr, target.id, method, args, node.config.rpcTimeout)

        def answered(result: Any) -> Any:
            self.timeouts.pop(target.addr, None)
            return result

        def failed(f: Failure) -> Any:
            if isinstance(f.value, RemoteError) and f.value.code == E.TIMEOUT:
                self.timedOut(target.addr)
            else:
                self.timeouts.pop(target.addr, None)
            return f

        return d.addCallbacks(answered, failed)

    def timedOut(self, addr: str) -> None:
        count = self.timeouts[addr] = self.timeouts.get(addr, 0) + 1
        if count >= 2:
            self.suspects[addr] = self.node.clock.seconds() + 2 * self.node.config.rpcTimeout

    def suspected(self, addr: str) -> bool:
        until = self.suspects.get(addr)
        if until is None:
            return False
        if until < self.node.clock.seconds():
            del self.suspects[addr]
            return False
        return True

    def forget(self) -> None:
        """
        Drop every suspicion (the process joined another ring).
        """
        self.suspects.clear()
        self.timeouts.clear()


def dispatch(node: ChordNode, vid: int | None, method: str, args: list[Any]) -> Deferred[Any]:
    """
    Run a call that arrived for C{node} (C{vid} None: for the process
    itself); failures are L{RemoteError}s.
    """
    if vid is None:
        if method == "hello":
            return maybeDeferred(node.hello)
        if method == "status":
            return maybeDeferred(node.status)
        if method == "heal" and len(args) == 1:
            return maybeDeferred(node.healRequested, args[0])
        if method == "multi" and len(args) == 1 and isinstance(args[0], list) and len(args[0]) <= BATCH_MAX:
            return _multi(node, args[0])
        return fail(RemoteError(E.BAD_REQUEST, f"unknown node method {method!r}"))
    v = node.byId.get(vid) if isinstance(vid, int) else None
    if v is None or v.gone:
        return fail(RemoteError(E.GONE, "no such vnode"))
    handler = v.handler(method) if isinstance(method, str) else None
    if handler is None:
        return fail(RemoteError(E.BAD_REQUEST, f"unknown method {method!r}"))
    if not isinstance(args, list):
        return fail(RemoteError(E.BAD_REQUEST, "arguments must be a list"))

    def run() -> Any:
        result = handler(*args)
        if hasattr(result, "__await__"):
            return Deferred.fromCoroutine(result)
        return result

    d = maybeDeferred(run)

    def wrap(f: Failure) -> Any:
        if f.check(RemoteError):
            return f
        if f.check(StoreWriteFailed):
            # logged by the store; the caller learns its change was not kept
            raise RemoteError(E.STORE_FAILED, f.getErrorMessage())
        if f.check(TypeError, ValueError, KeyError, IndexError, AttributeError):
            raise RemoteError(E.BAD_REQUEST, f"{method}: bad arguments")
        log.failure("vnode call {method} failed", f, method=method)
        raise RemoteError(E.INTERNAL, f"{method} failed")

    return d.addErrback(wrap)


def _multi(node: ChordNode, calls: list[Any]) -> Deferred[Any]:
    """
    Run a batch of vnode calls; answer C{[ok, result-or-error]} for each.
    """
    ds = []
    for call in calls:
        if not isinstance(call, list) or len(call) != 3 or call[1] == "multi":
            ds.append(fail(RemoteError(E.BAD_REQUEST, "malformed batched call")))
        else:
            ds.append(dispatch(node, call[0], call[1], call[2]))

    def collect(results: list[tuple[bool, Any]]) -> list[Any]:
        out = []
        for ok, value in results:
            if ok:
                out.append([True, value])
            else:
                err = (
                    value.value
                    if isinstance(value.value, RemoteError)
                    else RemoteError(E.INTERNAL, "call failed")
                )
                out.append([False, err.toWire()])
        return out

    return DeferredList(ds, consumeErrors=True).addCallback(collect)


def fail(e: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(e)
    return d
