"""
A peer's groups: those it hosts and its memberships of others' groups
(L{GroupService}), signing what this peer sends and checking what hosts
relay (L{suite.goop.groups.wire}).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from suite.goop.groups.host import HostGroup, HostSession
from suite.goop.groups.member import MemberCore, MemberInputs, memberMachine
from suite.goop.groups.wire import signedBytes, verifyRelayed, verifyWelcome

__all__ = ["INBOX", "MAX_GROUPS", "GroupService"]

#: Groups one peer hosts, and memberships it holds.
MAX_GROUPS = 64
#: Recent events kept per membership.
INBOX = 100


class GroupService:
    """Hosted groups and this peer's memberships."""

    def __init__(
        self, clock: Any, selfId: str, openStream: Callable[[str], Deferred[Any]], identity: Any = None
    ) -> None:
        self.clock = clock
        self.selfId = selfId
        self.openStream = openStream
        #: signs this peer's msg/state (an L{suite.goop.identity.Identity});
        #: None sends them unsigned
        self.identity = identity
        self.hosted: dict[str, HostGroup] = {}
        self.memberships: dict[str, tuple[MemberInputs, MemberCore]] = {}
        self.inbox: dict[str, collections.deque[dict[str, Any]]] = {}
        self._lastSent = 0
        #: per membership and sender, the highest signed seq accepted
        self._lastSeen: dict[str, dict[str, int]] = {}

    def createGroup(self, name: str) -> HostGroup:
        if name not in self.hosted:
            if len(self.hosted) >= MAX_GROUPS:
                raise ValueError("too many groups")
            self.hosted[name] = HostGroup(name, self.selfId)
        return self.hosted[name]

    def closeGroup(self, name: str) -> None:
        g = self.hosted.pop(name, None)
        if g is not None:
            g.broadcast({"type": "close", "group": name})

    def hostSession(
        self,
        peerId: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        transport: Any = None,
    ) -> HostSession:
        return HostSession(self, peerId, send, close, transport)

    def join(
        self, hostId: str, name: str, onEvent: Callable[[dict[str, Any]], None] | None = None
    ) -> MemberInputs:
        """Join C{name} hosted by C{hostId}; events go to C{onEvent} and the inbox."""
        key = f"{hostId}/{name}"
        if key in self.memberships:
            return self.memberships[key][0]
        if len(self.memberships) >= MAX_GROUPS:
            raise ValueError(f"too many group memberships (at most {MAX_GROUPS})")
        inbox = self.inbox.setdefault(key, collections.deque(maxlen=INBOX))
        seen = self._lastSeen.setdefault(key, {})

        def deliver(event: dict[str, Any]) -> None:
            inbox.append(event)
            if onEvent is not None:
                onEvent(event)

        def verify(event: dict[str, Any]) -> bool:
            kind = event.get("type")
            if kind in ("msg", "state"):
                return verifyRelayed(self.clock, hostId, name, event, seen)
            if kind == "welcome":
                return verifyWelcome(self.clock, hostId, name, event, seen)
            return True

        core = MemberCore(self.clock, name, lambda: self.openStream(hostId), deliver, verify=verify)
        machine = memberMachine(core)
        core.machine = machine
        self.memberships[f"{hostId}/{name}"] = (machine, core)
        machine.start()
        return machine

    def send(self, hostId: str, name: str, data: Any, kind: str = "msg") -> None:
        entry = self.memberships.get(f"{hostId}/{name}")
        if entry is None:
            return
        message: dict[str, Any] = {"type": kind, "group": name, "data": data}
        if self.identity is not None:
            seq = max(self._lastSent + 1, int(self.clock.seconds() * 1e6))
            self._lastSent = seq
            message.update(
                seq=seq,
                key=self.identity.publicB64,
                sig=self.identity.sign(signedBytes(hostId, name, kind, seq, data)),
            )
        entry[1].send(message)

    def leave(self, hostId: str, name: str) -> None:
        self._lastSeen.pop(f"{hostId}/{name}", None)
        entry = self.memberships.pop(f"{hostId}/{name}", None)
        if entry is not None:
            entry[0].leave()

    def describe(self) -> dict[str, Any]:
        """Hosted groups with their members, memberships with their recent events."""
        return {
            "hosted": {n: g.memberList() for n, g in self.hosted.items()},
            "memberships": [
                {
                    "host": k.split("/", 1)[0],
                    "group": k.split("/", 1)[1],
                    "events": list(self.inbox.get(k, ())),
                }
                for k in self.memberships
            ],
        }

    def stop(self) -> None:
        for machine, _ in self.memberships.values():
            machine.leave()
        for name in list(self.hosted):
            self.closeGroup(name)
