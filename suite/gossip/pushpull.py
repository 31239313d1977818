"""
Push-pull: full-state exchange over the transport's stream, both ends.

A node pushes its member states (and its delegate's user state) to one
member and merges the reply; the other end merges first, so a refutation
its merge causes is already in its reply.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.gossip.codec import Codec
from suite.gossip.fields import Address, MalformedPacket
from suite.gossip.interfaces import IGossipTransport
from suite.gossip.messages import ErrorReply, MemberState, PushPull
from suite.gossip.settings import GossipSettings

__all__ = ["PushPullHost", "exchange", "serve", "formatAddress"]

log = Logger()


class DropLog(Protocol):
    def drop(self, kind: str, source: object, reason: str) -> None: ...


class PushPullHost(Protocol):
    """
    What push-pull needs of its node.
    """

    codec: Codec
    transport: IGossipTransport
    settings: GossipSettings
    clock: IReactorTime

    @property
    def running(self) -> bool: ...

    @property
    def drops(self) -> DropLog: ...

    def localStates(self) -> list[MemberState]: ...
    def mergeStates(self, states: Iterable[MemberState], source: str) -> None: ...
    def userState(self, join: bool) -> bytes: ...
    def mergeUserState(self, data: bytes, join: bool) -> None: ...
    def count(self, what: str) -> None: ...


def exchange(host: PushPullHost, address: Address, join: bool) -> Deferred[bool]:
    """
    Push-pull with C{address}; fire with whether a valid reply was merged.
    """
    host.count("pushPulls")
    payload = host.codec.encodeStream(PushPull(join, host.localStates(), host.userState(join)))
    d = host.transport.exchangeState(address, payload)
    d.addTimeout(host.settings.pushPullTimeout, host.clock)
    where = formatAddress(address)

    def merge(reply: bytes) -> bool:
        if not host.running:
            return False
        try:
            pp = host.codec.decodeStream(reply, address)
        except MalformedPacket as e:
            host.drops.drop("malformed state reply", where, str(e))
            return False
        if isinstance(pp, ErrorReply):
            host.drops.drop("push-pull refused", where, pp.error)
            return False
        if not isinstance(pp, PushPull):
            host.drops.drop("malformed state reply", where, "not a push-pull reply")
            return False
        host.mergeStates(pp.states, f"push-pull:{where}")
        host.mergeUserState(pp.userState, join)
        return True

    def failed(f: Failure) -> bool:
        host.count("pushPullsFailed")
        log.debug("push-pull with {address} failed: {why}", address=where, why=f.getErrorMessage())
        return False

    return d.addCallbacks(merge, failed)


def serve(host: PushPullHost, message: PushPull, source: Address) -> bytes:
    """
    Answer a push-pull from C{source}: merge it, then reply with our state.
    """
    host.count("pushPullsServed")
    # Merge first, so that a refutation this causes is in the reply.
    host.mergeStates(message.states, f"push-pull:{formatAddress(source)}")
    host.mergeUserState(message.userState, message.join)
    return host.codec.encodeStream(PushPull(False, host.localStates(), host.userState(message.join)))


def formatAddress(address: object) -> str:
    """
    C{host:port}, with IPv6 hosts in brackets.
    """
    if isinstance(address, tuple) and len(address) == 2:
        h, port = address
        return f"[{h}]:{port}" if ":" in str(h) else f"{h}:{port}"
    return str(address)
