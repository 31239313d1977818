"""
The partitions a CEPtra node hosts: one Raft group per partition, all over
one shared multi-Raft transport (L{suite.raft.multi}) on C{CEPTRA_RAFT_BIND}.

Raft node ids are SPIFFE IDs.  The routing feed names, for each node, its
Raft address and SPIFFE ID, and for each partition its replicas; this node
finds itself by C{CEPTRA_NODE_SPIFFE}.  A peer is accepted only with a
certificate from the trust bundle carrying the SPIFFE ID the routing table
gives for that address (outbound: checked in the TLS handshake and again by
the link; inbound: the SPIFFE ID must be a known node, and each message's
sender must be that ID).

Placements are taken from the feed in increasing epoch order only
(L{suite.ceptra.placement.PlacementLedger}).  Reconciliation (every
C{interval} seconds, and whenever the feed changes):

  - a partition listed for this node gets a Raft group: its records in
    the node's shared WAL in C{WAL_DIR} (one fsync per batch across
    groups, L{suite.raft.wal.SharedWAL}; a single-group WAL found in
    C{WAL_DIR/<partition>} is taken over), the storage's incarnation in
    C{WAL_DIR/<partition>} (L{suite.raft.incarnation}), snapshots under
    C{SNAPSHOT_DIR/<partition>},
    the partition's engine (L{suite.ceptra.machine.PartitionMachine}) as
    state machine, and the placement's replicas as bootstrap voters;
  - the leader of a hosted partition moves the group's configuration toward
    the applied placement one single-server change at a time, each
    recording the placement's epoch in the configuration: missing replicas
    are added (as learners, promoted once caught up), extra members
    removed; a leader that is itself to leave hands leadership to a
    remaining voter.  A leader whose applied epoch is older than the
    configuration's changes nothing, so no epoch transition is applied
    twice or undone, across restarts and leader changes;
  - a partition no longer listed keeps running, taking part in its group
    (voting, replicating, answering the leader), until a configuration
    without this node is committed (the leader tells a removed replica so),
    then stops; the grace period (C{retireGrace} seconds) stops only a
    replica whose own latest configuration already excludes it (it missed
    the leader's word) or whose log is empty, or every replica of a
    partition dropped from the routing table (the replica's lifecycle
    machine, L{suite.ceptra.partitions.lifecycle});
  - a replica found on disk at start-up (its incarnation file in
    C{WAL_DIR/<partition>}) of a partition still routed but placed
    elsewhere is started too, and retires as above: a node restarted in the
    middle of a move still takes part until its group has removed it;
  - a replica stopped because a configuration without this node committed
    is retired: with C{dataDir}, its data is moved to
    C{DATA_DIR/retired/} (L{suite.ceptra.partitions.retire}; copies older
    than C{retiredKeep} seconds are deleted), and it is never started
    again (its marker; a retirement cut short is finished at start-up).
    Until a copy is deleted it is reported as retired (every copy: status
    pages, C{ceptra_partition_retired}), never as a replica not started;
  - a replica stopped by the grace period whose log holds nothing (no
    entry, no snapshot: it never stored anything of its group's) is
    retired the same way: nothing of it can be the last copy of anything;
  - any other replica stopped by the grace period alone keeps its data in place,
    never deleted by the node (it may hold the only copy of acknowledged
    writes: L{suite.ceptra.partitions.disk} tells why), and is reported as
    C{stopped}, or C{orphaned} once its partition is not in the routing
    table (also found so on disk at start-up), with the command that
    removes it.

The package: L{lifecycle} (a replica's lifecycle machine), L{replica} (a
hosted partition), L{manager} (the service: reconciliation, requests),
L{membership} (the leader's membership changes), L{peers} (dialling and
naming peers), L{reports} (status pages and readiness), L{disk} (retired
copies and stopped replicas), L{retire} (the file steps of a retirement),
L{status} (the metrics).
"""

from __future__ import annotations

from suite.ceptra.partitions.disk import RetiredCopy, StoppedReplica
from suite.ceptra.partitions.manager import SNAPSHOT_BACKSTOP, PartitionManager
from suite.ceptra.partitions.replica import NotHosted, Partition
from suite.ceptra.partitions.status import REPORTED_STATES, PartitionCollector
from suite.raft.settings import NotLeader

#: (the name the collector had before the package was split)
_PartitionCollector = PartitionCollector

__all__ = [
    "NotHosted",
    "NotLeader",
    "Partition",
    "PartitionCollector",
    "PartitionManager",
    "REPORTED_STATES",
    "RetiredCopy",
    "SNAPSHOT_BACKSTOP",
    "StoppedReplica",
]
