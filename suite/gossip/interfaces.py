"""
Interfaces of the gossip membership package.

L{IGossipTransport} moves opaque bytes (L{suite.gossip.udp} over real UDP
and TCP, L{suite.gossip.memory} in one process); L{IPacketReceiver} is what
the transport delivers to (the node); L{IMembershipListener} is told about
other members' state changes; L{IMembership} is the API a daemon uses; L{IGossipDelegate} lets a daemon
carry its own state on the membership protocol (user messages and the user
state of push-pull, as memberlist's Delegate does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from suite.gossip.member import Member

__all__ = ["IGossipTransport", "IPacketReceiver", "IMembershipListener", "IMembership", "IGossipDelegate"]


class IPacketReceiver(Interface):
    """
    The node side of a transport: the transport calls these.
    """

    def packetReceived(data: bytes, source: tuple[str, int]) -> None:
        """
        One datagram arrived from C{source}.
        """

    def streamComplete(data: bytes) -> bool:
        """
        Whether C{data}, the bytes a stream brought so far, hold a whole
        message (or can never become one): the transport then stops reading
        and hands them over.
        """

    def stateReceived(data: bytes, source: tuple[str, int]) -> bytes | None:
        """
        A stream message (push-pull request, fallback ping, user message)
        arrived; return the reply to send back, or None to close the stream
        without a reply.
        """


class IGossipTransport(Interface):
    """
    Packets (lossy, size-limited) and state exchanges (reliable stream) to
    addresses.  The node seals, encodes and checks everything; a transport
    only moves bytes.
    """

    maxPacketBytes = Attribute("Largest datagram (C{int}) the transport sends or accepts.")

    def startListening(receiver: IPacketReceiver) -> None:
        """
        Deliver packets and state requests to C{receiver} from now on.
        """

    def stopListening() -> Deferred[object] | None:
        """
        Stop receiving; return a L{Deferred} that fires when closed (or None).
        """

    def sendPacket(address: tuple[str, int], data: bytes) -> None:
        """
        Send one datagram to C{address}; best effort, never raises for
        network errors.
        """

    def exchangeState(address: tuple[str, int], data: bytes) -> Deferred[bytes]:
        """
        Open a stream to C{address}, send C{data}, and return a L{Deferred}
        firing with the peer's reply (C{bytes}) or failing.
        """


class IMembershipListener(Interface):
    """
    Told about state changes of other members (never about the local node).
    Called synchronously from the node's event handling: do not block, and
    defer any call back into the node to a later reactor turn.
    """

    def memberJoined(member: Member) -> None:
        """
        A member (a L{suite.gossip.member.Member}) is alive for the first
        time, or again after being dead or gone.
        """

    def memberUpdated(member: Member) -> None:
        """
        An alive member changed its metadata or address, or refuted a
        suspicion.
        """

    def memberSuspected(member: Member) -> None:
        """
        A member is suspected of having failed.
        """

    def memberDied(member: Member) -> None:
        """
        A member was declared dead.
        """

    def memberLeft(member: Member) -> None:
        """
        A member left gracefully.
        """


class IMembership(Interface):
    """
    What a daemon holds: one node's view of the cluster.
    """

    name = Attribute("This node's name (C{str}).")

    def start(seeds: Iterable[tuple[str, int]]) -> Deferred[int]:
        """
        Start listening, probing and gossiping, and join through C{seeds}
        (a sequence of C{(host, port)}); return a L{Deferred} firing with the
        number of seeds that answered (retries continue in the background).
        """

    def members() -> list[Member]:
        """
        A list of L{suite.gossip.member.Member} for every known member,
        including this node.
        """

    def member(name: str) -> Member | None:
        """
        The L{suite.gossip.member.Member} called C{name} (this node too), or
        C{None} for a name never heard of or already reaped.
        """

    def setMetadata(meta: Mapping[str, Any]) -> None:
        """
        Replace this node's metadata (a small dict) and tell the cluster.
        """

    def queueBroadcast(data: bytes) -> None:
        """
        Queue a user message (opaque bytes) for the cluster: it is
        piggybacked on gossip like membership updates, each one sent a
        bounded number of times (memberlist's retransmit limit), and handed
        to every other member's L{IGossipDelegate.notifyMsg}.  Delivery is
        best effort; state that must converge belongs in
        L{IGossipDelegate.localState}, which push-pull carries.

        @raise ValueError: if C{data} is not bytes or cannot fit in one
            packet.
        """

    def leave() -> Deferred[None]:
        """
        Tell the cluster this node is leaving, stop, and return a L{Deferred}
        firing when done.
        """


class IGossipDelegate(Interface):
    """
    A daemon's hook into the gossip protocol, given to the node as
    C{GossipNode(..., delegate=...)}.  Called synchronously from the node's
    event handling: do not block.
    """

    def notifyMsg(data: bytes) -> None:
        """
        A user message queued by some member's C{queueBroadcast} arrived.
        The same message may arrive more than once.
        """

    def localState(join: bool) -> bytes:
        """
        This node's state for a push-pull exchange (sent both ways);
        C{join} is true when the exchange is part of a join.
        """

    def mergeRemoteState(data: bytes, join: bool) -> None:
        """
        Merge the state another member sent in a push-pull exchange (what its
        L{localState} returned).
        """
