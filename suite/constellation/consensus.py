"""
Raft in the agent: the node on C{--raft-port} (L{suite.raft.embed}), its
TLS identity, membership that follows gossip, and the lease keeper.

Storage is C{DATA_DIR/raft/}: C{logs/} (the write-ahead log; term and vote
are records in it), C{snapshots/}, and C{stable/} (C{bootstrapped}, the
marker of a node that founded its group).

Identity (mTLS between Raft peers): with C{--raft-cert-dir} a suite PKI
bundle whose node certificate names this node (common name = node name,
IP SAN = the advertised Raft address).  Otherwise, when the gossip keyring
is configured, a cluster CA is derived from the primary gossip key (HKDF
to a P-256 key; every node derives the same CA) and each node mints its
own certificate under it at start-up: whoever holds the gossip key can
already join and speak for any member, so this adds no new trust, and it
needs no distribution step.  Rotating the primary gossip key changes that
CA: restart every agent after a rotation.  Without either, Raft runs on
plain TCP, bound where gossip is (L{suite.constellation.bind}: without a
key, the Tailscale address or loopback unless told otherwise; a warning
names an exposure beyond them).

Membership: a node with an empty data directory starts with no
configuration.  It founds a new group (L{RaftNode.bootstrap}) with
C{--bootstrap}, or when after C{--raft-bootstrap-wait} no alive gossip
member reports being a Raft member and it is the best (priority, name) of
the alive members that are not.  The leader adds every alive gossip member
that publishes a Raft address (learner first, then voter: a real
membership change) and removes members that gossip has seen dead or gone
for C{--raft-remove-after} seconds, one change at a time (the machine in
L{suite.raft.memberchange}).

Groups formed apart (L{suite.raft.groupid}): each node publishes its Raft
group id in gossip (the C{raft} record's C{group}).  The leader adds only
nodes that publish its group id, or no id and no membership (new nodes);
nodes of another group are I{foreign members}: never added (a member of
ours found to be one, e.g. one that lost its data and was taken by the
other group, is removed), reported in one log line naming both
groups and their members whenever the set changes, in C{/api/state}
(C{raft.foreignMembers}) and in C{constellation_raft_foreign_members}.
The groups stay apart: merging them is the operator's step (stop the nodes
of one group, move C{DATA_DIR/raft} aside, start them: they join as new
members).  No automatic merge: one group's leases and their fencing tokens
would have to be discarded, and which group may lose its state is not a
choice the nodes can make safely on their own.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.constellation.leases import LeaseKeeper, LeaseSettings, LeaseStateMachine, candidateOrder
from suite.daemon import ConfigError
from suite.fileutil import DirectoryLock, DirectoryLocked
from suite.raft.embed import RaftNodeService, makeRaftNodeService
from suite.raft.groupid import formatGroup
from suite.raft.memberchange import ChangeInputs, newMembershipChange
from suite.raft.settings import RaftSettings

__all__ = [
    "derivedBundle",
    "RaftAgent",
    "makeRaftAgent",
    "BOOTSTRAP_MARKER",
]

log = Logger(namespace="constellation.raft")

BOOTSTRAP_MARKER = "bootstrapped"
_CURVE_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def _hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(b"constellation-raft", key, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def derivedBundle(gossipKey: bytes, nodeId: str, address: str) -> Any:
    """
    A bundle for C{nodeId} at IP C{address} under the CA derived from
    C{gossipKey}.
    """
    from suite.pki.bundle import Bundle
    from suite.pki.mint import mintCA, mintCertificate

    scalar = int.from_bytes(_hkdf(gossipKey, b"raft ca key", 48), "big") % (_CURVE_ORDER - 1) + 1
    caKey = ec.derive_private_key(scalar, ec.SECP256R1())
    epoch = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    caCert, _ = mintCA(
        "Constellation Raft CA",
        key=caKey,
        notBefore=epoch,
        notAfter=epoch + datetime.timedelta(days=365 * 30),
    )
    nodeCert, nodeKey = mintCertificate(caCert, caKey, nodeId, ipAddresses=[address], dnsNames=[nodeId])
    return Bundle(caCert, nodeCert, nodeKey, caCert, source="derived from the gossip key")


def _changeEnded(what: str, failure: Failure | None) -> None:
    if failure is None:
        log.info("raft membership: {what} done", what=what)
    else:
        log.info("raft membership: {what} failed: {why}", what=what, why=failure.getErrorMessage())


class RaftAgent(MultiService):
    """
    Follows gossip to manage Raft membership and runs the lease keeper.
    The Raft service is its child: on stop the leases are released and
    leadership handed over first, and only then does the node stop.

    @param members: the gossip members (L{suite.gossip.member.Member}).
    @param raftAddress: node name -> published Raft address, for members
        alive in gossip.
    """

    name = "raft-agent"

    def __init__(
        self,
        raftService: RaftNodeService,
        machine: LeaseStateMachine,
        reactor: Any,
        members: Callable[[], list[Any]],
        raftAddresses: Callable[[], Mapping[str, tuple[str, bool]]],
        publish: Callable[[dict[str, Any]], None],
        address: str,
        *,
        bootstrap: bool,
        bootstrapped: bool,
        stableDir: str,
        joinConfigured: bool = False,
        bootstrapWait: float = 5.0,
        removeAfter: float = 60.0,
        interval: float = 1.0,
        leaseSettings: LeaseSettings | None = None,
        now: Callable[[], float] = time.monotonic,
        raftGroups: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.raftService = raftService
        self.node = raftService.node
        self.reactor = reactor
        self.members = members
        self.raftAddresses = raftAddresses
        #: node name -> the Raft group id it publishes ("" for none)
        self.raftGroups = raftGroups
        #: members of other Raft groups -> their group id (last step)
        self.foreign: dict[str, str] = {}
        self._foreignReported: dict[str, tuple[str, ...]] = {}
        self.publish = publish
        self.address = address
        self.bootstrapFlag = bootstrap
        self.bootstrapped = bootstrapped
        self.stableDir = stableDir
        self.joinConfigured = joinConfigured
        self._aloneLogged = -1e18
        self.bootstrapWait = bootstrapWait
        self.removeAfter = removeAfter
        self.interval = interval
        self.now = now
        self.startedAt = 0.0
        self.deadSince: dict[str, float] = {}
        self.change: ChangeInputs = newMembershipChange(_changeEnded)
        self.lastPublished: dict[str, Any] | None = None
        self.keeper = LeaseKeeper(
            self.node, machine, reactor, now, leaseSettings, candidates=self._handoverCandidates
        )
        self._timer: Any = None
        super().__init__()
        raftService.setServiceParent(self)

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.startedAt = self.now()
        log.info("Initializing Raft consensus...")
        log.info(
            "raft node {node} on {address} (data {state})",
            node=self.node.id,
            address=self.address,
            state="bootstrapped earlier" if self.bootstrapped else "new",
        )
        self.keeper.start()
        self._schedule()

    def stopService(self) -> Deferred[Any]:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        d = self.keeper.stop()
        timeout = self.reactor.callLater(3.0, d.cancel)

        def stopRaft(result: Any) -> Any:
            if timeout.active():
                timeout.cancel()
            return MultiService.stopService(self)

        d.addBoth(stopRaft)
        return d

    def _schedule(self) -> None:
        if self.running:
            self._timer = self.reactor.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.step()
        except Exception:  # the loop must keep running: logged
            log.failure("raft membership step failed")
        self._schedule()

    # -- one round ---------------------------------------------------------

    def isMember(self) -> bool:
        return self.node.id in self.node.configs.latest().members()

    def status(self) -> dict[str, Any]:
        s = self.node.status()
        return {
            "role": s["role"],
            "term": s["term"],
            "leader": s["leader"],
            "commitIndex": s["commitIndex"],
            "voters": s["voters"],
            "learners": s["learners"],
            "member": self.isMember(),
            "address": self.address,
            "group": formatGroup(self.node.groupId),
            "foreignMembers": dict(sorted(self.foreign.items())),
            "leases": self.keeper.status(),
        }

    def step(self) -> None:
        now = self.now()
        self._publish()
        # Peers' addresses from gossip: a node being added must be able to
        # answer the leader before the configuration naming it reaches it.
        known = {n: a for n, (a, _) in self.raftAddresses().items() if n != self.node.id and a}
        if known:
            self.raftService.transport.updatePeers(known)
        self._findForeign()
        if not self.isMember():
            self._maybeBootstrap(now)
            return
        if self.node.leader is not None:
            self._manageMembership(now)

    def _publish(self) -> None:
        record: dict[str, Any] = {"addr": self.address, "member": self.isMember()}
        if self.node.groupId:
            record["group"] = formatGroup(self.node.groupId)
        if record != self.lastPublished:
            self.lastPublished = record
            self.publish(record)

    def _findForeign(self) -> None:
        """
        Note the members of other Raft groups (their gossip record, or their
        refusal of our messages) and log the meeting once per change.
        """
        mine = formatGroup(self.node.groupId)
        if not mine:
            self.foreign = {}
            return
        alive = self._alive()
        foreign = {
            name: group
            for name, group in self.raftGroups().items()
            if group and group != mine and name in alive and name != self.node.id
        }
        for name, number in self.node.foreignPeers.items():
            if name in alive and name not in foreign:
                foreign[name] = formatGroup(number)
        self.foreign = foreign
        groups: dict[str, tuple[str, ...]] = {}
        for name, group in sorted(foreign.items()):
            groups[group] = (*groups.get(group, ()), name)
        if groups != self._foreignReported:
            self._foreignReported = groups
            if groups:
                ours = sorted(self.node.configs.latest().members()) or [self.node.id]
                log.warn(
                    "Raft group {mine} (members {ours}) has met {theirs}: the groups stay apart and "
                    "each keeps its own leases; to merge, stop the nodes of one group, move their "
                    "DATA_DIR/raft aside and start them again (they join as new members)",
                    mine=mine,
                    ours=", ".join(ours),
                    theirs="; ".join(
                        f"Raft group {g} (members {', '.join(names)})" for g, names in sorted(groups.items())
                    ),
                )
            else:
                log.info("no member of another Raft group is alive in gossip any more")

    def _addable(self, name: str, member: bool) -> bool:
        """
        Whether the leader may add C{name}: it publishes our group id, or no
        id and no membership (a new node); never a member of another group.
        """
        if name in self.foreign:
            return False
        group = self.raftGroups().get(name, "")
        return group == formatGroup(self.node.groupId) if group else not member

    def _alive(self) -> dict[str, Any]:
        return {m.name: m for m in self.members() if m.status == "alive"}

    def _maybeBootstrap(self, now: float) -> None:
        if self.node.loading:
            return  # its term and log are not read yet: nothing to decide on
        if self.node.term != 0 or self.node.log.lastIndex() != 0:
            return  # it has history: a leader will (re)add it
        if not self.bootstrapFlag:
            if now - self.startedAt < self.bootstrapWait:
                return
            alive = self._alive()
            published = self.raftAddresses()
            if any(published.get(name, ("", False))[1] for name in alive if name != self.node.id):
                return  # a group exists: wait for its leader to add us
            others = [n for n in alive if n != self.node.id]
            if not others and self.joinConfigured:
                # told to join a cluster but nobody reached yet (slow or
                # failed --join): founding alone here would split the
                # cluster into two groups, each with its own lease holders
                if now - self._aloneLogged >= 30.0:
                    self._aloneLogged = now
                    log.warn(
                        "no --join peer reached yet: not founding a Raft group alone "
                        "(start the first node without --join, or with --bootstrap)"
                    )
                return
            if min([*others, self.node.id], key=candidateOrder) != self.node.id:
                return  # a better node will found the group
            if others:
                log.info("no Raft group among {n} peers: this node founds it", n=len(others))
            else:
                log.info("no peer answered: this node founds a new Raft group")
        self._markBootstrapped()
        if self.node.bootstrap(self.address):
            self.bootstrapped = True
            self._publish()

    def _markBootstrapped(self) -> None:
        path = os.path.join(self.stableDir, BOOTSTRAP_MARKER)
        with open(path, "w") as f:
            f.write(self.node.id + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _handoverCandidates(self) -> list[str]:
        alive = self._alive()
        config = self.node.configs.latest()
        return [n for n in config.voters if n in alive and n != self.node.id]

    def _manageMembership(self, now: float) -> None:
        if self.change.busy():
            return
        config = self.node.configs.latest()
        alive = self._alive()
        published = self.raftAddresses()
        members = config.members()
        for name in sorted(members - {self.node.id}):
            if name in alive:
                self.deadSince.pop(name, None)
            else:
                since = self.deadSince.setdefault(name, now)
                if now - since >= self.removeAfter:
                    log.info(
                        "removing {node} from the Raft group (gone from gossip for {secs:.0f} s)",
                        node=name,
                        secs=now - since,
                    )
                    self.change.begin(
                        f"remove {name}", partial(self.node.changeMembership, "remove", name, "")
                    )
                    return
        for name in sorted(members - {self.node.id}):
            if name in self.foreign:
                # (it refuses this group's messages: of no use to it)
                log.info(
                    "removing {node} from the Raft group: it belongs to Raft group {group}",
                    node=name,
                    group=self.foreign[name],
                )
                self.change.begin(f"remove {name}", partial(self.node.changeMembership, "remove", name, ""))
                return
        for name in sorted(alive, key=candidateOrder):
            if name in members or name == self.node.id:
                continue
            entry = published.get(name)
            if entry is None or not entry[0] or not self._addable(name, entry[1]):
                continue
            log.info("peer {node} discovered via gossip: adding it to the Raft group", node=name)
            self.change.begin(
                f"addVoter {name}", partial(self.node.changeMembership, "addVoter", name, entry[0])
            )
            return
        for name in list(self.deadSince):
            if name not in members:
                del self.deadSince[name]


def loadRaftBundle(directory: str, nodeId: str, address: str) -> Any:
    """
    Load the C{--raft-cert-dir} bundle and check that its node certificate
    is this node's for Raft: peers take a link's sender from the
    certificate's common name and dial the advertised address, so the
    common name must be the node name and the address one of its IP SANs.

    @raise ConfigError: naming the flag, the file and what is wrong.
    """
    from suite.pki.bundle import BundleError
    from suite.pki.load import checkNodeIdentity, loadBundle

    label = "--raft-cert-dir (CONSTELLATION_RAFT_CERT_DIR)"
    try:
        bundle = loadBundle(directory)
        identity = checkNodeIdentity(bundle, ipAddress=address, label=os.path.join(directory, "node.crt"))
    except BundleError as e:
        raise ConfigError(f"{label}: {e}") from None
    if identity.commonName != nodeId:
        raise ConfigError(
            f"{label}: {os.path.join(directory, 'node.crt')}: the node certificate's common name is "
            f"{identity.commonName!r}, not this node's name {nodeId!r} (--ts-hostname)"
        )
    return bundle


def makeRaftAgent(
    options: Mapping[str, Any],
    reactor: Any,
    *,
    advertise: str,
    gossipKey: bytes | None,
    members: Callable[[], list[Any]],
    raftAddresses: Callable[[], Mapping[str, tuple[str, bool]]],
    publish: Callable[[dict[str, Any]], None],
    raftGroups: Callable[[], Mapping[str, str]] = dict,
    bind: str | None = None,
) -> tuple[RaftNodeService, RaftAgent, LeaseStateMachine, DirectoryLock]:
    """
    Build the Raft service and the agent that follows gossip.

    @param advertise: the IP address peers dial for Raft.
    @param bind: the address Raft listens on (gossip's, chosen by
        L{suite.constellation.bind}); default C{--bind-addr}, else all
        interfaces.
    @raise ConfigError: naming the setting.
    """
    nodeId = options["ts-hostname"]
    root = os.path.join(options["data-dir"], "raft")
    dirs = {name: os.path.join(root, name) for name in ("logs", "stable", "snapshots")}
    for path in dirs.values():
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--data-dir (DATA_DIR): cannot create {path}: {e.strerror or e}") from None
    try:
        # One agent per data directory: a second process on the same WAL would corrupt it.
        lock = DirectoryLock(root, dirs["logs"])
    except DirectoryLocked as e:
        raise ConfigError(f"--data-dir (DATA_DIR): {e}: is another agent running on it?") from None
    except OSError as e:
        raise ConfigError(f"--data-dir (DATA_DIR): cannot lock {root}: {e.strerror or e}") from None
    bootstrapped = os.path.exists(os.path.join(dirs["stable"], BOOTSTRAP_MARKER))
    port = int(options["raft-port"])
    host = advertise
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bundle = None
    if options.get("raft-cert-dir"):
        bundle = loadRaftBundle(options["raft-cert-dir"], nodeId, host)
        identity = "mTLS with the --raft-cert-dir bundle"
    elif gossipKey is not None:
        bundle = derivedBundle(gossipKey, nodeId, host)
        identity = "mTLS with an identity derived from the gossip key"
    else:
        # Who can reach it is the gossip service's bind line (suite.constellation.bind).
        identity = "plain TCP (no gossip key, no --raft-cert-dir)"
    bind = bind or options.get("bind-addr") or "0.0.0.0"
    log.info("Raft on {bind}:{port}: {identity}", bind=bind, port=port, identity=identity)
    iface = bind if ipaddress.ip_address(bind).version == 4 else bind.replace(":", r"\:")
    settings = RaftSettings(
        electionTimeoutMin=float(options.get("raft-election-ms") or 1000) / 1000.0,
        electionTimeoutMax=2 * float(options.get("raft-election-ms") or 1000) / 1000.0,
        heartbeatInterval=float(options.get("raft-election-ms") or 1000) / 1000.0 / 5,
        snapshotThreshold=1000,
    )
    machine = LeaseStateMachine()
    service = makeRaftNodeService(
        nodeId,
        reactor,
        machine,
        peers={},
        raftListen=f"tcp:{port}:interface={iface}",
        walDir=dirs["logs"],
        snapshotDir=dirs["snapshots"],
        bundle=bundle,
        settings=settings,
        listenFlag="--raft-port",
        join=not bootstrapped,
        address=address,
        groupDir=dirs["stable"],
    )
    service.setName("raft")
    duration = float(options.get("lease-seconds") or 5.0)
    leaseSettings = LeaseSettings(duration=duration, renewInterval=duration / 5, handoverAfter=duration / 2)
    agent = RaftAgent(
        service,
        machine,
        reactor,
        members,
        raftAddresses,
        publish,
        address,
        bootstrap=bool(options.get("bootstrap")),
        bootstrapped=bootstrapped,
        stableDir=dirs["stable"],
        joinConfigured=bool(options.get("join")),
        bootstrapWait=float(options.get("raft-bootstrap-wait") or 5.0),
        removeAfter=float(options.get("raft-remove-after") or 60.0),
        leaseSettings=leaseSettings,
        raftGroups=raftGroups,
    )
    return service, agent, machine, lock
