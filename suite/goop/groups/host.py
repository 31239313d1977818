"""
The host side of groups: each hosted group (L{HostGroup}) and the host's end
of one member stream (L{HostSession}), which dispatches each member message
through a table of handlers, one per message type.  The host stamps C{from}
itself (a member cannot speak for another), relays the sender's signature of
each C{msg} and C{state}, and hands a joining member the group state with
the signature of the member who set it (C{stateSignature} in the
C{welcome}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from suite.goop.groups.hostlink import HostMember
from suite.goop.groups.wire import relayedSignature

if TYPE_CHECKING:
    from suite.goop.groups.service import GroupService

__all__ = ["MAX_MEMBERS", "HostGroup", "HostSession"]

#: Members of one hosted group.
MAX_MEMBERS = 256


class HostGroup:
    """One hosted group: its members and shared state."""

    def __init__(self, name: str, hostId: str) -> None:
        self.name = name
        self.hostId = hostId
        self.members: dict[str, HostMember] = {}
        self.state: Any = None
        #: who set L{state} and their signature of it (empty when unsigned)
        self.stateSignature: dict[str, Any] = {}

    def broadcast(self, message: dict[str, Any], exclude: str | None = None) -> None:
        for pid, m in list(self.members.items()):
            if pid != exclude:
                m.sendMessage(message)

    def memberList(self) -> list[str]:
        return sorted(self.members)

    def announce(self) -> None:
        self.broadcast({"type": "members", "group": self.name, "members": self.memberList()})

    def remove(self, peerId: str) -> None:
        if self.members.pop(peerId, None) is not None:
            self.broadcast({"type": "leave", "group": self.name, "from": peerId})
            self.announce()


class HostSession:
    """The host's end of one member stream."""

    def __init__(
        self,
        service: GroupService,
        peerId: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        transport: Any,
    ) -> None:
        self.service = service
        self.member = HostMember(peerId, send, close, transport, service.clock, onOverflow=self.lost)
        self.groups: set[str] = set()

    def received(self, msg: dict[str, Any]) -> None:
        m = self.member
        m.lastHeard = self.service.clock.seconds()
        kind = msg.get("type")
        if kind == "ping":
            m.sendMessage({"type": "pong"})
            return
        name = msg.get("group")
        group = self.service.hosted.get(name) if isinstance(name, str) else None
        if group is None:
            m.sendMessage({"type": "error", "group": name, "error": "no such group"})
            return
        if kind == "join":
            self._join(group)
            return
        handler = self._MEMBER_HANDLERS.get(kind) if isinstance(kind, str) else None
        if m.peerId not in group.members:
            m.sendMessage({"type": "error", "group": name, "error": "join first"})
        elif handler is None:
            m.sendMessage({"type": "error", "error": "unknown message type"})
        else:
            handler(self, group, msg)

    def _join(self, group: HostGroup) -> None:
        m = self.member
        if len(group.members) >= MAX_MEMBERS:
            m.sendMessage({"type": "error", "group": group.name, "error": "group is full"})
            return
        group.members[m.peerId] = m
        self.groups.add(group.name)
        welcome = {
            "type": "welcome",
            "group": group.name,
            "host": group.hostId,
            "members": group.memberList(),
            "state": group.state,
        }
        if group.stateSignature:
            welcome["stateSignature"] = dict(group.stateSignature)
        m.sendMessage(welcome)
        group.announce()

    def _msg(self, group: HostGroup, msg: dict[str, Any]) -> None:
        peerId = self.member.peerId
        group.broadcast(
            {
                "type": "msg",
                "group": group.name,
                "from": peerId,
                "data": msg.get("data"),
                **relayedSignature(msg),
            },
            exclude=peerId,
        )

    def _state(self, group: HostGroup, msg: dict[str, Any]) -> None:
        group.state = msg.get("data")
        signature = relayedSignature(msg)
        group.stateSignature = {"from": self.member.peerId, **signature} if signature else {}
        group.broadcast(
            {
                "type": "state",
                "group": group.name,
                "from": self.member.peerId,
                "data": group.state,
                **signature,
            }
        )

    def _leave(self, group: HostGroup, msg: dict[str, Any]) -> None:
        self.groups.discard(group.name)
        group.remove(self.member.peerId)

    #: what a member of the group may send, by message type
    _MEMBER_HANDLERS: dict[str, Callable[[HostSession, HostGroup, dict[str, Any]], None]] = {
        "msg": _msg,
        "state": _state,
        "leave": _leave,
    }

    def lost(self) -> None:
        for name in list(self.groups):
            g = self.service.hosted.get(name)
            if g is not None and g.members.get(self.member.peerId) is self.member:
                g.remove(self.member.peerId)
        self.groups.clear()
