"""
The follower side of replication: AppendEntries, heartbeats, chunked
InstallSnapshot and TimeoutNow arriving from the leader of the current term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from suite.raft.messages import (
    CONFIG,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    SnapshotMeta,
    TimeoutNow,
)

if TYPE_CHECKING:
    from suite.raft.node import RaftNode

log = Logger()


class FollowerHandlers:
    """
    Handles the leader's messages for one node.
    """

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self._incoming: tuple[SnapshotMeta, bytearray] | None = None

    def heardFromLeader(self, src: str, group: int = 0) -> None:
        node = self.node
        node.adoptGroup(group, src)
        node.leaderId = src
        node.lastLeaderContact = node.clock.seconds()
        node.role.leaderDiscovered()

    def onAppendEntries(self, m: AppendEntries) -> None:
        node = self.node
        if node.leader is not None:
            log.warn("node {node}: second leader {src} in term {term}", node=node.id, src=m.src, term=m.term)
            return
        self.heardFromLeader(m.src, m.group)
        if m.prevLogIndex < node.commitIndex:
            committed = node.commitIndex
            node.whenDurable(
                lambda: node.send(
                    AppendEntriesResponse(
                        node.id,
                        m.src,
                        m.term,
                        True,
                        committed,
                        epoch=m.epoch,
                        incarnation=node.incarnationNumber,
                    )
                )
            )
            return
        prevTerm = node.log.term(m.prevLogIndex)
        if prevTerm != m.prevLogTerm:
            if prevTerm is None:
                conflictTerm, conflictIndex = 0, node.log.lastIndex() + 1
            else:
                conflictTerm, conflictIndex = prevTerm, m.prevLogIndex
                floor = max(node.commitIndex, node.log.snapshotIndex)
                while conflictIndex - 1 > floor and node.log.term(conflictIndex - 1) == prevTerm:
                    conflictIndex -= 1
            node.send(
                AppendEntriesResponse(
                    node.id,
                    m.src,
                    m.term,
                    False,
                    0,
                    m.prevLogIndex,
                    conflictTerm,
                    conflictIndex,
                    m.epoch,
                    node.incarnationNumber,
                )
            )
            return
        truncate: int | None = None
        fresh: list[Entry] = []
        for i, e in enumerate(m.entries):
            t = node.log.term(e.index)
            if t == e.term:
                continue
            if t is not None:
                if e.index <= node.commitIndex:
                    log.error("node {node}: leader overwrites committed entry {i}", node=node.id, i=e.index)
                    return
                truncate = e.index - 1
                node.log.truncateAfter(truncate)
                node.configs.truncateAfter(truncate)
            fresh = list(m.entries[i:])
            break
        if fresh:
            node.log.append(fresh)
            node.storage.appendEntries(truncate, fresh).addErrback(node._storageFailed)
            if self.noteConfigs(fresh) or truncate is not None:
                node._checkMembership()
        elif truncate is not None:
            node.storage.appendEntries(truncate, []).addErrback(node._storageFailed)
        lastNew = m.prevLogIndex + len(m.entries)
        node._commitTo(min(m.commit, lastNew))
        incarnation = node.incarnationNumber
        node.whenDurable(
            lambda: node.send(
                AppendEntriesResponse(
                    node.id, m.src, m.term, True, lastNew, epoch=m.epoch, incarnation=incarnation
                )
            )
        )

    def noteConfigs(self, entries: list[Entry]) -> bool:
        node = self.node
        changed = False
        for e in entries:
            if e.kind == CONFIG:
                config = Configuration.decode(e.data)
                node.configs.append(e.index, config)
                node.transport.updatePeers(config.addressMap())
                changed = True
        return changed

    def onHeartbeat(self, m: Heartbeat) -> None:
        node = self.node
        if node.leader is not None:
            return
        self.heardFromLeader(m.src, m.group)
        node._commitTo(min(m.commit, node.log.lastIndex()))
        reply = HeartbeatResponse(
            node.id, m.src, m.term, m.context, node.log.lastIndex(), node.incarnationNumber
        )
        if node.durableTerm == node.term and node.groupDurable:
            node.send(reply)
        else:
            node.whenDurable(lambda: node.send(reply))

    def onInstallSnapshot(self, m: InstallSnapshot) -> None:
        node = self.node
        if node.leader is not None:
            return
        self.heardFromLeader(m.src, m.group)
        meta = m.meta
        if meta.index <= node.commitIndex:
            self._incoming = None
            node.send(
                InstallSnapshotResponse(
                    node.id, m.src, m.term, meta.index, m.total, True, node.incarnationNumber
                )
            )
            return
        if m.offset == 0 or self._incoming is None or self._incoming[0] != meta:
            self._incoming = (meta, bytearray())
        buf = self._incoming[1]
        if m.offset == len(buf):
            buf.extend(m.chunk)
        if not (m.done and len(buf) == m.total):
            node.send(
                InstallSnapshotResponse(
                    node.id, m.src, m.term, meta.index, len(buf), False, node.incarnationNumber
                )
            )
            return
        data = bytes(buf)
        self._incoming = None
        log.info("node {node} installs a snapshot at {index}", node=node.id, index=meta.index)
        self.installSnapshot(meta, data)
        node.whenDurable(
            lambda: node.send(
                InstallSnapshotResponse(
                    node.id, m.src, m.term, meta.index, m.total, True, node.incarnationNumber
                )
            )
        )

    def installSnapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """
        Replace log prefix and state with a snapshot received from the leader.
        """
        node = self.node
        node.adoptGroup(meta.configuration.group, node.leaderId or "")
        node.storage.saveSnapshot(meta, data).addErrback(node._storageFailed)
        node.log.compact(meta.index, meta.term)
        node.configs.compact(meta.index, meta.configuration)
        node.transport.updatePeers(node.configs.latest().addressMap())
        node.applier.restore(data)
        node.commitIndex = max(node.commitIndex, meta.index)
        node.lastApplied = meta.index
        node._checkMembership()
        node._applyCommitted()

    def onTimeoutNow(self, m: TimeoutNow) -> None:
        node = self.node
        if node.isVoter():
            log.info("node {node} takes over leadership on request of {src}", node=node.id, src=m.src)
            node.role.timeoutNowReceived()
