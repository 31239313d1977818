"""
The replicated cluster state: every node's own entries (its node meta and
its services with their health), spread as gossip user messages and
repaired by push-pull, through L{suite.gossip}'s delegate hooks.

Only a node writes its own entries.  Each entry carries its origin's
version counter at the time of the change; an entry replaces another of
the same origin and key only with a higher version, so merging is
idempotent, commutative and never compares clocks of different nodes.  An
origin restarting picks a new, higher I{generation} (its start time: only
ever compared with its own earlier generations); entries of an older
generation of that origin are dropped as soon as one of the new
generation arrives.  Deleted keys stay as tombstones (value None) so a
stale copy cannot bring them back.

Wire format (msgpack arrays):

  - C{["D", origin, generation, [[key, version, value|nil], ...]]}: a delta
    (a user broadcast, and one per origin inside a state);
  - C{["C", id, index, total, part]}: one piece of a delta too large for a
    gossip packet, reassembled (with size, count and age limits) before use;
  - C{["S", [delta, ...]]}: the push-pull state, every known origin's entries.

A node's entries disappear when it is declared dead or leaves (L{forget});
C{admit} (the gossip membership) keeps a stale copy from bringing them back.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.gossip.interfaces import IGossipDelegate, IMembership, IMembershipListener

__all__ = ["ClusterState", "DepartureListener", "StateError", "admitFrom"]

log = Logger(namespace="constellation.state")


class StateError(ValueError):
    """
    A state message that cannot be used.
    """


@dataclass
class _Origin:
    generation: int
    entries: dict[str, tuple[int, Any]] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return max((v for v, _ in self.entries.values()), default=0)

    def delta(self, name: str, keys: Any = None) -> list[Any]:
        items = sorted(self.entries.items()) if keys is None else [(k, self.entries[k]) for k in keys]
        return ["D", name, self.generation, [[k, v, value] for k, (v, value) in items]]


@dataclass
class _Assembly:
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes, maxBytes: int) -> Any:
    if len(data) > maxBytes:
        raise StateError(f"message of {len(data)} bytes exceeds {maxBytes}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # untrusted input: any decoder error is malformed
        raise StateError(f"undecodable state message ({type(e).__name__})") from None


@implementer(IGossipDelegate)
class ClusterState:
    """
    This node's copy of the cluster state, and its gossip delegate.

    @param broadcast: sends one user message (C{GossipNode.queueBroadcast});
        set later with L{attach} when the node is built after the state.
    @param admit: C{admit(origin)} is false for an origin gossip knows as
        dead or gone; its entries are then refused.
    @param onChange: called (no arguments) after any change of the entries.
    @param maxChunk: largest user message sent; larger deltas are chunked.
    """

    def __init__(
        self,
        node: str,
        generation: int,
        clock: IReactorTime,
        broadcast: Callable[[bytes], None] | None = None,
        admit: Callable[[str], bool] = lambda origin: True,
        onChange: Callable[[], None] | None = None,
        maxChunk: int = 900,
        maxMessage: int = 4 * 1024 * 1024,
        maxAssemblies: int = 64,
        assemblyTimeout: float = 60.0,
    ) -> None:
        self.node = node
        self.clock = clock
        self.broadcast = broadcast
        self.admit = admit
        self.onChange = onChange
        self.maxChunk = maxChunk
        self.maxMessage = maxMessage
        self.maxAssemblies = maxAssemblies
        self.assemblyTimeout = assemblyTimeout
        self._origins: dict[str, _Origin] = {node: _Origin(generation)}
        self._assemblies: collections.OrderedDict[str, _Assembly] = collections.OrderedDict()
        self._done: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._chunkSeq = 0
        #: Counters: messages merged, refused, chunks dropped.
        self.stats: collections.Counter[str] = collections.Counter()

    def attach(self, broadcast: Callable[[bytes], None]) -> None:
        """
        Send this node's changes with C{broadcast} from now on.
        """
        self.broadcast = broadcast

    # -- reads -----------------------------------------------------------

    def origins(self) -> list[str]:
        """
        Every origin with entries, sorted (this node included).
        """
        return sorted(self._origins)

    def entries(self, origin: str) -> dict[str, Any]:
        """
        The live (not deleted) entries of C{origin}, key -> value.
        """
        o = self._origins.get(origin)
        if o is None:
            return {}
        return {k: value for k, (_, value) in sorted(o.entries.items()) if value is not None}

    def version(self, origin: str) -> tuple[int, int]:
        """
        C{(generation, highest version)} held for C{origin}; (0, 0) if none.
        """
        o = self._origins.get(origin)
        return (o.generation, o.version) if o else (0, 0)

    # -- this node's writes ----------------------------------------------

    def update(self, values: Mapping[str, Any], prefix: str | None = None) -> list[str]:
        """
        Set C{values} (key -> value, None deletes); with C{prefix}, also
        delete this node's keys under C{prefix} missing from C{values}.
        Changed keys get new versions and are broadcast as one delta.

        @return: the changed keys.
        """
        me = self._origins[self.node]
        wanted = dict(values)
        if prefix is not None:
            for key, (_, value) in me.entries.items():
                if key.startswith(prefix) and key not in wanted and value is not None:
                    wanted[key] = None
        version = me.version
        changed: list[str] = []
        for key in sorted(wanted):
            value = wanted[key]
            current = me.entries.get(key)
            if current is None and value is None:
                continue
            if current is not None and current[1] == value:
                continue
            version += 1
            me.entries[key] = (version, value)
            changed.append(key)
        if changed:
            self._send(me.delta(self.node, changed))
            self._changed()
        return changed

    def _send(self, delta: list[Any]) -> None:
        if self.broadcast is None:
            return
        data = _pack(delta)
        try:
            self._broadcast(data)
        except ValueError as e:
            # Too large for the gossip packet after all: push-pull still
            # carries it.
            log.warn("state change not broadcast ({reason}); push-pull will carry it", reason=str(e))

    def _broadcast(self, data: bytes) -> None:
        assert self.broadcast is not None
        if len(data) <= self.maxChunk:
            self.broadcast(data)
            return
        self._chunkSeq += 1
        ident = f"{self.node}/{self._origins[self.node].generation}/{self._chunkSeq}"
        room = self.maxChunk - len(_pack(["C", ident, 0, 0, b""])) - 16
        pieces = [data[i : i + room] for i in range(0, len(data), room)]
        for index, piece in enumerate(pieces):
            self.broadcast(_pack(["C", ident, index, len(pieces), piece]))

    # -- membership ------------------------------------------------------

    def forget(self, origin: str) -> None:
        """
        C{origin} was declared dead or left: drop its entries.
        """
        if origin != self.node and self._origins.pop(origin, None) is not None:
            self._changed()

    # -- IGossipDelegate -------------------------------------------------

    def notifyMsg(self, data: bytes) -> None:
        try:
            message = _unpack(data, self.maxChunk * 4)
            if isinstance(message, list) and message[:1] == ["C"]:
                whole = self._chunk(message)
                if whole is None:
                    return
                message = _unpack(whole, self.maxMessage)
            if self._mergeDelta(message):
                self._changed()
        except StateError as e:
            self.stats["refused"] += 1
            log.debug("state message refused: {reason}", reason=str(e))

    def localState(self, join: bool) -> bytes:
        return _pack(["S", [o.delta(name) for name, o in sorted(self._origins.items())]])

    def mergeRemoteState(self, data: bytes, join: bool) -> None:
        try:
            message = _unpack(data, self.maxMessage)
            if not (isinstance(message, list) and len(message) == 2 and message[0] == "S"):
                raise StateError("not a state")
            if not isinstance(message[1], list):
                raise StateError("not a list of deltas")
            changed = False
            for delta in message[1]:
                try:
                    changed = self._mergeDelta(delta) or changed
                except StateError as e:
                    self.stats["refused"] += 1
                    log.debug("state delta refused: {reason}", reason=str(e))
            if changed:
                self._changed()
        except StateError as e:
            self.stats["refused"] += 1
            log.debug("push-pull state refused: {reason}", reason=str(e))

    # -- merging ---------------------------------------------------------

    def _mergeDelta(self, delta: Any) -> bool:
        if not (isinstance(delta, list) and len(delta) == 4 and delta[0] == "D"):
            raise StateError("not a delta")
        _, origin, generation, items = delta
        if not isinstance(origin, str) or not isinstance(generation, int) or not isinstance(items, list):
            raise StateError("malformed delta header")
        for item in items:
            if not (isinstance(item, list) and len(item) == 3):
                raise StateError("malformed entry")
            if not isinstance(item[0], str) or not isinstance(item[1], int):
                raise StateError("malformed entry key or version")
        if origin == self.node or not self.admit(origin):
            return False
        o = self._origins.get(origin)
        changed = False
        if o is None or generation > o.generation:
            o = _Origin(generation)
            changed = origin in self._origins
            self._origins[origin] = o
        elif generation < o.generation:
            return False
        for key, version, value in items:
            current = o.entries.get(key)
            if current is None or version > current[0]:
                o.entries[key] = (version, value)
                changed = True
        self.stats["merged"] += 1
        return changed

    def _chunk(self, message: list[Any]) -> bytes | None:
        if len(message) != 5:
            raise StateError("malformed chunk")
        _, ident, index, total, part = message
        if not (isinstance(ident, str) and isinstance(index, int) and isinstance(total, int)):
            raise StateError("malformed chunk header")
        if not isinstance(part, bytes) or not 0 <= index < total:
            raise StateError("malformed chunk body")
        if total * self.maxChunk > self.maxMessage:
            raise StateError(f"chunked message of {total} pieces exceeds {self.maxMessage} bytes")
        if ident in self._done:
            return None
        now = self.clock.seconds()
        for key in [k for k, a in self._assemblies.items() if now - a.started > self.assemblyTimeout]:
            del self._assemblies[key]
            self.stats["chunksExpired"] += 1
        assembly = self._assemblies.get(ident)
        if assembly is None:
            while len(self._assemblies) >= self.maxAssemblies:
                self._assemblies.popitem(last=False)
                self.stats["chunksDropped"] += 1
            assembly = self._assemblies[ident] = _Assembly(total, now)
        if assembly.total != total:
            raise StateError("chunk total changed")
        if index not in assembly.parts:
            assembly.parts[index] = part
            assembly.size += len(part)
            if assembly.size > self.maxMessage:
                del self._assemblies[ident]
                raise StateError(f"chunked message exceeds {self.maxMessage} bytes")
        if len(assembly.parts) < total:
            return None
        del self._assemblies[ident]
        self._done[ident] = None
        while len(self._done) > 1024:
            self._done.popitem(last=False)
        return b"".join(assembly.parts[i] for i in range(total))

    def _changed(self) -> None:
        if self.onChange is not None:
            self.onChange()


@implementer(IMembershipListener)
class DepartureListener:
    """
    Forward membership events to C{inner} and drop a member's state
    entries when it is declared dead or leaves.
    """

    def __init__(self, state: ClusterState, inner: Any = None) -> None:
        self.state = state
        self.inner = None if inner is None else IMembershipListener(inner)

    def memberJoined(self, member: Any) -> None:
        if self.inner is not None:
            self.inner.memberJoined(member)

    def memberUpdated(self, member: Any) -> None:
        if self.inner is not None:
            self.inner.memberUpdated(member)

    def memberSuspected(self, member: Any) -> None:
        if self.inner is not None:
            self.inner.memberSuspected(member)

    def memberDied(self, member: Any) -> None:
        self.state.forget(member.name)
        if self.inner is not None:
            self.inner.memberDied(member)

    def memberLeft(self, member: Any) -> None:
        self.state.forget(member.name)
        if self.inner is not None:
            self.inner.memberLeft(member)


def admitFrom(membership: IMembership) -> Callable[[str], bool]:
    """
    An C{admit} predicate for L{ClusterState}: refuse origins the gossip
    membership holds as dead or left.
    """
    node = IMembership(membership)

    def admit(origin: str) -> bool:
        member = node.member(origin)
        return member is None or member.status not in ("dead", "left")

    return admit
