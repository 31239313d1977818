"""
Interfaces of the SpaceComms node.

The node core (L{suite.spacecomms.node.SpaceNode}) owns an L{IRecordStore};
peer sessions (L{suite.spacecomms.session}) deliver envelopes to an
L{IMessageSink} and are reached back through L{IPeerLink}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from suite.spacecomms.envelope import Envelope
    from suite.spacecomms.store import Record

__all__ = ["IRecordStore", "IMessageSink", "IPeerLink"]


class IRecordStore(Interface):
    """
    Where CDMs and object states (and their withdrawal tombstones) live.
    The node calls it on the reactor thread; implementations must not block.
    """

    def load() -> None:
        """
        Bring earlier state back (replay a log); called once before use.
        """

    def put(record: Record) -> None:
        """
        Insert or replace C{record} (a L{suite.spacecomms.store.Record}).
        """

    def remove(kind: str, key: str) -> None:
        """
        Forget a record entirely (retention cleanup, stale re-sync entries).
        """

    def get(kind: str, key: str) -> Record | None:
        """
        The record of C{kind} (C{cdm} or C{object}) named C{key}, or None.
        """

    def records(kind: str) -> list[Record]:
        """
        Every record of C{kind}, active or withdrawn.
        """

    def digest(kind: str) -> list[int]:
        """
        The anti-entropy digest of the active records of C{kind}: for each
        bucket, the XOR of the hashes of its records (see
        L{suite.spacecomms.antientropy}).
        """

    def count(kind: str, active: bool) -> int:
        """
        How many records of C{kind} are (in)active.
        """

    def close() -> object:
        """
        Flush and close; may return a Deferred.
        """


class IPeerLink(Interface):
    """
    One established session to a peer, as the node sees it.
    """

    peerId = Attribute("The configured id of the peer at the other end.")

    def sendEnvelope(envelope: Envelope) -> None:
        """
        Queue one L{suite.spacecomms.envelope.Envelope} to the peer.
        """

    def close(reason: str) -> None:
        """
        End the session (the peer manager may reconnect).
        """


class IMessageSink(Interface):
    """
    What a session hands authenticated peers and their messages to.
    """

    def checkHello(hello: Envelope, expectedPeer: str | None) -> tuple[str, str] | None:
        """
        Return None to accept a HELLO envelope, or an (error code, reason)
        tuple to refuse it.
        """

    def sessionEstablished(link: IPeerLink) -> None:
        """
        A session to C{link.peerId} finished its handshake.
        """

    def sessionLost(link: IPeerLink, reason: str) -> None:
        """
        An established session ended.
        """

    def envelopeReceived(link: IPeerLink, envelope: Envelope) -> None:
        """
        A routed message arrived on an established session.
        """

    def heartbeatCounts() -> dict[str, int]:
        """
        The counts sent in HEARTBEAT payloads.
        """
