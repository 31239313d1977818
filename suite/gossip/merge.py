"""
Merging what the cluster says about its members: alive, suspect, dead and
left messages (gossiped or carried by push-pull) become inputs of each
remote member's machine (L{suite.gossip.member}), new members are added to
the roster, and each status a machine announces is recorded, logged and
told to the listener.  Messages about this node itself are handed to the
node, which refutes them.

L{MemberUpdates} is also the L{MemberActions} every member machine calls,
and it keeps what memberlist needs passed on unchanged about each member:
its protocol versions and its metadata bytes as received.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from suite.gossip.dissemination import Disseminator
from suite.gossip.fields import PROTOCOL_CURRENT, checkMeta
from suite.gossip.interfaces import IMembershipListener
from suite.gossip.member import Member, MemberCore, Status, Suspicion, newMemberMachine
from suite.gossip.messages import Alive, Dead, Left, MemberState, Suspect, Update, encodeMessage
from suite.gossip.pushpull import DropLog, formatAddress
from suite.gossip.roster import Roster
from suite.gossip.settings import GossipSettings

__all__ = ["MemberUpdates", "LocalMember"]

log = Logger(namespace="suite.gossip.node")

_LISTENER_METHODS = {
    "joined": "memberJoined",
    "updated": "memberUpdated",
    "suspect": "memberSuspected",
    "dead": "memberDied",
    "left": "memberLeft",
}


class LocalMember(Protocol):
    """
    What merging needs of this node: who it is, and how it answers a
    message about itself.
    """

    name: str
    incarnation: int
    vsn: bytes

    @property
    def leaving(self) -> bool: ...

    def refute(self, incarnation: int, unhealthy: bool) -> None: ...
    def accused(self, incarnation: int) -> None: ...


class MemberUpdates:
    """
    Applies membership messages to the roster and the member machines.
    """

    def __init__(
        self,
        local: LocalMember,
        settings: GossipSettings,
        clock: IReactorTime,
        roster: Roster,
        dissemination: Disseminator,
        listener: IMembershipListener | None,
        drops: DropLog,
        count: Callable[[str], None],
    ) -> None:
        self.local = local
        self.settings = settings
        self.clock = clock
        self.roster = roster
        self.dissemination = dissemination
        self.listener = listener
        self.drops = drops
        self.count = count
        #: Each member's Vsn and metadata bytes as last received.
        self.versions: dict[str, bytes] = {}
        self.rawMeta: dict[str, bytes] = {}

    # -- messages ----------------------------------------------------------

    def alive(self, m: Alive) -> None:
        """
        Someone says C{m.name} is alive at C{m.incarnation}.
        """
        if m.vsn[0] > PROTOCOL_CURRENT or m.vsn[1] < PROTOCOL_CURRENT:
            self.drops.drop("incompatible alive", m.name, f"protocol versions {list(m.vsn[:3])}")
            return
        local = self.local
        if m.name == local.name:
            if m.incarnation > local.incarnation and not local.leaving:
                # An older life of this node, or someone else's stale view.
                local.refute(m.incarnation, unhealthy=False)
            return
        entry = self.roster.get(m.name)
        if entry is None or not self.roster.known(m.name):
            try:
                meta = checkMeta(m.meta, self.settings.maxMetaBytes)
            except ValueError:
                self.count("oversizedMeta")
                return
            self._remember(m)
            core = MemberCore(m.name, m.address, m.incarnation, meta, self, clock=self.clock)
            self.roster.add(core, newMemberMachine(core))
            self.rebroadcast(m)
            self.notify("joined", core.snapshot(Status.ALIVE))
            return
        core, machine = entry
        if m.incarnation > core.incarnation:
            self._remember(m)
            machine.aliveNewer(m.incarnation, m.address, m.meta)

    def _remember(self, m: Alive) -> None:
        # What memberlist needs passed on unchanged, and the versions that
        # decide how to talk to the member.
        self.versions[m.name] = m.vsn
        if m.rawMeta is None:
            self.rawMeta.pop(m.name, None)
        else:
            self.rawMeta[m.name] = m.rawMeta
        if m.vsn[1] < 5:
            self.dissemination.oldProtocol.add(m.address)
        else:
            self.dissemination.oldProtocol.discard(m.address)

    def suspect(self, m: Suspect) -> None:
        """
        C{m.source} suspects C{m.name} (this node's own probes too).
        """
        if m.name == self.local.name:
            self.local.accused(m.incarnation)
            return
        entry = self.roster.get(m.name)
        if entry is None:
            return
        if m.incarnation > entry[0].incarnation:
            entry[1].suspectedAgain(m.incarnation, m.source)
        elif m.incarnation == entry[0].incarnation:
            entry[1].suspected(m.incarnation, m.source)

    def dead(self, m: Dead) -> None:
        """
        C{m.source} declares C{m.name} dead.
        """
        if m.name == self.local.name:
            self.local.accused(m.incarnation)
            return
        entry = self.roster.get(m.name)
        if entry is not None and m.incarnation >= entry[0].incarnation:
            entry[1].declaredDead(m.incarnation, m.source)

    def left(self, m: Left) -> None:
        """
        C{m.name} says it left.
        """
        local = self.local
        if m.name == local.name:
            if m.incarnation >= local.incarnation and not local.leaving:
                local.refute(m.incarnation, unhealthy=False)
            return
        entry = self.roster.get(m.name)
        if entry is not None and m.incarnation >= entry[0].incarnation:
            entry[1].departed(m.incarnation)

    def mergeStates(self, states: Iterable[MemberState], source: str) -> None:
        """
        Merge the member states a push-pull from C{source} carried.
        """
        for s in states:
            known = s.name == self.local.name or self.roster.known(s.name)
            if s.status == "alive":
                self.alive(Alive(s.name, s.incarnation, s.address, s.meta, s.vsn, s.rawMeta))
            elif s.status == "suspect":
                self.alive(Alive(s.name, s.incarnation, s.address, s.meta, s.vsn, s.rawMeta))
                self.suspect(Suspect(s.name, s.incarnation, source))
            elif s.status == "dead" and known:
                # Another node's verdict is only a suspicion here: the member
                # may be reachable from this side.
                self.suspect(Suspect(s.name, s.incarnation, source))
            elif s.status == "left" and known:
                self.left(Left(s.name, s.incarnation))

    def memberStates(self) -> list[MemberState]:
        """
        Every remote member's state as push-pull carries it.
        """
        return [
            MemberState(
                c.name,
                c.address,
                c.incarnation,
                standing.status,
                c.meta,
                self.versions.get(c.name, self.local.vsn),
                self.rawMeta.get(c.name),
            )
            for c, _, standing in self.roster.current()
        ]

    def protocolVersion(self, name: str) -> int:
        """
        The highest memberlist protocol member C{name} speaks.
        """
        return self.versions.get(name, self.local.vsn)[1]

    # -- MemberActions (called by member machines) -------------------------

    def notify(self, event: str, member: Member) -> None:
        """
        Record a member's state change in the roster, log it and tell the
        listener.
        """
        self.roster.observe(member)
        fields = {
            "member": member.name,
            "address": formatAddress(member.address),
            "incarnation": member.incarnation,
        }
        if event == "dead":
            log.warn("member {member} at {address} is dead (incarnation {incarnation})", **fields)
        elif event == "joined":
            log.info("member {member} joined at {address} (incarnation {incarnation})", **fields)
        elif event == "suspect":
            log.info("member {member} at {address} is suspect (incarnation {incarnation})", **fields)
        elif event == "left":
            log.info("member {member} at {address} left (incarnation {incarnation})", **fields)
        else:
            log.info("member {member} at {address} updated (incarnation {incarnation})", **fields)
        if self.listener is not None:
            try:
                getattr(self.listener, _LISTENER_METHODS[event])(member)
            except Exception:  # listener boundary: logged, gossip goes on
                log.failure(
                    "membership listener failed on {event} of {member}", event=event, member=member.name
                )

    def rebroadcast(self, message: Update) -> None:
        """
        Queue an update about a member for piggybacking.
        """
        if isinstance(message, Alive) and message.name in self.versions:
            message = replace(
                message, vsn=self.versions[message.name], rawMeta=self.rawMeta.get(message.name)
            )
        self.dissemination.queueUpdate(message.name, encodeMessage(message))

    def newSuspicion(self, core: MemberCore, source: str, expire: Callable[[], None]) -> Suspicion:
        """
        A suspicion timer sized for the current cluster.
        """
        low, high, expected = self.settings.suspicionBounds(self.roster.liveCount())
        return Suspicion(self.clock, low, high, expected, source, expire, self.local.name)
