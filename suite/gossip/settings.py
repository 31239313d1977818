"""
Timers and limits of the gossip protocol, with memberlist-like defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GossipSettings", "DEFAULT_PORT"]

#: The default gossip port (UDP for packets, TCP for push-pull).
DEFAULT_PORT = 7946


@dataclass(frozen=True)
class GossipSettings:
    """
    Every timer in seconds.  The defaults suit a LAN; L{local} suits loopback
    and tests.
    """

    #: How often a member is probed (scaled by the local health multiplier).
    probeInterval: float = 1.0
    #: How long to wait for a direct ack before asking others (scaled too).
    probeTimeout: float = 0.5
    #: How many members an indirect probe goes through.
    indirectChecks: int = 3
    #: How often pending updates are piggybacked to random members.
    gossipInterval: float = 0.2
    #: How many members each gossip round goes to.
    gossipNodes: int = 3
    #: How long a dead member still receives gossip (so it can refute).
    gossipToTheDead: float = 30.0
    #: Retransmit limit factor: each update goes out mult * ceil(log10(N+1)) times.
    retransmitMult: int = 4
    #: Suspicion timeout factor: minimum timeout is mult * max(1, log10 N) * probeInterval.
    suspicionMult: int = 4
    #: Maximum suspicion timeout as a multiple of the minimum (Lifeguard).
    suspicionMaxTimeoutMult: int = 6
    #: Full state exchange over TCP with one random member, this often.
    pushPullInterval: float = 30.0
    #: Give up on a push-pull exchange after this long.
    pushPullTimeout: float = 10.0
    #: Try to reach one dead (not left) member, or the seeds when alone, this often.
    reconnectInterval: float = 10.0
    #: Forget dead and left members after this long.
    reapAfter: float = 3600.0
    #: Highest local health score (Lifeguard); timers scale by score + 1.
    awarenessMax: int = 8
    #: How long leave() waits for the leave message to spread.
    leavePropagateDelay: float = 1.0
    #: Largest UDP packet sent or accepted.
    maxPacketBytes: int = 1400
    #: Largest encoded metadata of one member.
    maxMetaBytes: int = 512
    #: Largest push-pull frame.
    maxStateBytes: int = 4 * 1024 * 1024
    #: Most user messages (L{GossipNode.queueBroadcast}) waiting to be sent.
    maxUserBroadcasts: int = 1024
    #: Largest UDP packet accepted (memberlist sends up to its 1400-byte
    #: buffer, but accepts any datagram).
    maxIncomingPacketBytes: int = 65536
    #: The delegate protocol versions (min, max, current) advertised in
    #: alive messages.  memberlist refuses members whose current version
    #: is outside everyone's range; Serf agents speak 2..5 at 4, so the
    #: default lets a node join a Serf cluster.
    delegateVersions: tuple[int, int, int] = (2, 5, 4)
    #: Packets and streams carry this label (memberlist 0.3+); members
    #: with another label, or none, are refused.  Empty: no label.
    label: str = ""
    #: LZW-compress push-pull streams (memberlist's default) ...
    compressStreams: bool = True
    #: ... and packets, when that makes them smaller.
    compressPackets: bool = True
    #: Announce a leave to Serf agents too (Serf's leave intent, a user
    #: message), so they show this node as left rather than failed.
    serfLeaveIntent: bool = True

    @classmethod
    def local(cls) -> GossipSettings:
        """
        Faster timers for loopback clusters and tests.
        """
        return cls(
            probeInterval=0.2,
            probeTimeout=0.1,
            gossipInterval=0.05,
            suspicionMult=3,
            pushPullInterval=5.0,
            pushPullTimeout=2.0,
            reconnectInterval=2.0,
            leavePropagateDelay=0.3,
        )

    @classmethod
    def wan(cls) -> GossipSettings:
        """
        memberlist's WAN timers, for slow or relayed links.
        """
        return cls(
            probeInterval=5.0,
            probeTimeout=3.0,
            gossipInterval=0.5,
            gossipNodes=4,
            gossipToTheDead=60.0,
            suspicionMult=6,
            pushPullInterval=60.0,
            pushPullTimeout=30.0,
        )

    def retransmitLimit(self, members: int) -> int:
        """
        How many times one update is sent (lambda * log N).
        """
        return self.retransmitMult * max(1, math.ceil(math.log10(members + 1)))

    def suspicionBounds(self, members: int) -> tuple[float, float, int]:
        """
        (minimum timeout, maximum timeout, confirmations expected) for a
        cluster of C{members}.
        """
        low = self.suspicionMult * max(1.0, math.log10(max(1, members))) * self.probeInterval
        # As memberlist: a cluster too small to provide them expects no
        # confirmations at all (the suspicion then lasts the minimum).
        expected = self.suspicionMult - 2
        if members - 2 < expected:
            expected = 0
        return low, low * self.suspicionMaxTimeoutMult, expected
