"""
The agent's cluster membership: a L{suite.gossip} node on C{--bind-addr}:
C{--bind-port} (7946), joined through C{--join}, whose members become the
catalog's nodes.  An unset C{--bind-addr} is chosen here, once discovery
has run (L{suite.constellation.bind}); Raft binds the same address.

Each agent announces its priority (and public IP when known) as gossip
metadata; every agent therefore sees every node's priority without
computing it from names it may spell differently.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from suite.constellation.bind import bindNote, canBindSoon, chooseBind
from suite.constellation.priority import nodePriority
from suite.constellation.state import ClusterState, DepartureListener, admitFrom
from suite.constellation.tailscale import DEFAULT_SOCKET, TailnetView, TailscaleError, discover
from suite.daemon import ConfigError, watchListening
from suite.gossip.__main__ import advertisable, parseAddress
from suite.gossip.interfaces import IMembershipListener
from suite.gossip.node import GossipNode
from suite.gossip.security import Keyring, readKeyFile
from suite.gossip.settings import GossipSettings
from suite.gossip.udp import NetworkTransport
from suite.netutil import isIPAddress

__all__ = ["GossipService", "gossipSettings", "readGossipKey", "resolvePeers"]

log = Logger(namespace="constellation.gossip")

#: Seconds between readings of the tailnet while this node is alone.
REDISCOVER_INTERVAL = 30.0


def readGossipKey(path: str | None) -> Keyring | None:
    """
    The cluster's gossip keyring from C{path} (base64 AES keys as
    C{serf keygen} prints and C{serf agent -encrypt} takes, one a line, the
    primary first), or None when no file is configured.

    @raise ConfigError: naming the flag and the file.
    """
    if not path:
        return None
    try:
        return readKeyFile(path)
    except ValueError as e:
        raise ConfigError(f"--gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE): {e}") from None


def gossipSettings(profile: str) -> GossipSettings:
    """
    The timers of C{--gossip-profile}: C{lan} (memberlist's LAN defaults),
    C{wan} (memberlist's WAN timers, for slow or relayed links: the guide's
    "increase timeout for slow networks") or C{local} (loopback, tests).
    """
    if profile == "local":
        return GossipSettings.local()
    if profile == "wan":
        return GossipSettings.wan()
    return GossipSettings()


@implementer(IMembershipListener)
class _MembershipLog:
    """
    One log line per change of another member's state.
    """

    def memberJoined(self, member: Any) -> None:
        log.info("node {node} joined the cluster", node=member.name)

    def memberUpdated(self, member: Any) -> None:
        log.debug("node {node} updated its state", node=member.name)

    def memberSuspected(self, member: Any) -> None:
        log.warn("node {node} is suspected of failure", node=member.name)

    def memberDied(self, member: Any) -> None:
        log.warn("node {node} failed (declared dead)", node=member.name)

    def memberLeft(self, member: Any) -> None:
        log.info("node {node} left the cluster", node=member.name)


class GossipService(Service):
    """
    Run the gossip node while the agent runs; leave gracefully on stop.

    A port that cannot be bound is one critical line and the reactor stops,
    so the agent never runs outside its cluster.
    """

    name = "gossip"

    def __init__(
        self,
        options: Mapping[str, Any],
        reactor: Any,
        state: ClusterState | None = None,
        discoverer: Callable[[str, int], TailnetView | None] = discover,
        bindable: Callable[[str], bool] = canBindSoon,
    ) -> None:
        self.reactor = reactor
        self.state = state
        settings = gossipSettings(options.get("gossip-profile") or "lan")
        explicit = options.get("bind-addr") or None
        port = int(options["bind-port"])
        version = ipaddress.ip_address(explicit).version if explicit else 4
        #: Seeds found by Tailscale discovery (used when --join is not given).
        self.discovered: list[tuple[str, int]] = []
        #: What discovery said, logged when the service starts: (level, format, fields).
        self.discoveryNote: tuple[str, str, dict[str, Any]] | None = None
        #: Why discovery gave no Tailscale address (for the loopback fallback's line).
        self.noTailnet = ""
        tailnet = self._discover(options, version, discoverer)
        #: Read the tailnet again every L{REDISCOVER_INTERVAL} seconds while
        #: alone (no --join; tailscaled came up late, or peers changed).
        self.rediscover: Callable[[], Deferred[TailnetView | None]] | None = None
        if options.get("discover") == "tailscale" and not options.get("join"):
            path = options.get("tailscale-socket") or DEFAULT_SOCKET
            self.rediscover = lambda: deferToThreadPool(
                reactor, reactor.getThreadPool(), discoverer, path, version
            )
        self._rediscovery: LoopingCall | None = None
        self.key = readGossipKey(options.get("gossip-key-file"))
        try:
            peers = [parseAddress(p) for p in options.get("join") or []]
        except usage.UsageError as e:
            raise ConfigError(f"--join / --bind-addr: {e}") from None
        self.seeds = [p for p in peers if isIPAddress(p[0])]
        self.named = [p for p in peers if not isIPAddress(p[0])]
        #: Where gossip and Raft listen (L{suite.constellation.bind}).
        self.choice = chooseBind(
            explicit,
            self.key is not None,
            tailnet.selfAddresses if tailnet is not None else [],
            [h for h, _ in self.seeds],
            version=version,
            discovery=self.noTailnet,
            bindable=bindable,
        )
        host = self.choice.address
        #: The line logged about the bind address at start-up (level, format, fields).
        self.bindNote = bindNote(
            self.choice,
            self.key is not None,
            bool(options.get("raft-cert-dir")),
            port,
            int(options["raft-port"]),
        )
        try:
            if tailnet is not None and not peers:
                self.discovered = [(ip, port) for _, ip in tailnet.peers]
            candidates = self.seeds or self.discovered
            toward = candidates[0] if candidates else None
            if (
                tailnet is not None
                and tailnet.selfAddresses
                and not self.seeds
                and ipaddress.ip_address(host).is_unspecified
            ):
                # Peers reach this node over the tailnet (named --join peers
                # are not resolved yet, so no route can be asked for).
                address = (tailnet.selfAddresses[0], port)
            else:
                address = advertisable((host, port), toward)
        except usage.UsageError as e:
            raise ConfigError(f"--join / --bind-addr: {e}") from None
        meta: dict[str, Any] = {"priority": nodePriority(options["ts-hostname"])}
        if options.get("public-ip"):
            meta["ip"] = options["public-ip"]
        transport = NetworkTransport(
            reactor, host, port, settings.maxPacketBytes, settings.maxStateBytes, settings.pushPullTimeout
        )
        self.node = GossipNode(
            options["ts-hostname"],
            address,
            transport,
            reactor,
            settings,
            key=self.key,
            listener=_MembershipLog() if state is None else DepartureListener(state, _MembershipLog()),
            meta=meta,
            delegate=state,
        )
        if state is not None:
            state.attach(self.node.queueBroadcast)
            state.admit = admitFrom(self.node)
        #: The address gossip and Raft bind.
        self.bindAddress = host
        self.bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _discover(
        self,
        options: Mapping[str, Any],
        version: int,
        discoverer: Callable[[str, int], TailnetView | None],
    ) -> TailnetView | None:
        """
        Read the tailnet when C{--discover tailscale}; remember what to log,
        and why no Tailscale address was found.
        """
        if options.get("discover") != "tailscale":
            self.noTailnet = "--discover none"
            return None
        path = options.get("tailscale-socket") or DEFAULT_SOCKET
        try:
            tailnet = discoverer(path, version)
        except TailscaleError as e:
            self.noTailnet = f"tailscaled on {path} cannot be read"
            self.discoveryNote = (
                "warn",
                "Tailscale discovery: cannot read the status of tailscaled on {path}: {why}; "
                "peers only from --join",
                {"path": path, "why": str(e)},
            )
            return None
        if tailnet is None:
            self.noTailnet = f"no tailscaled socket at {path}"
            self.discoveryNote = (
                "info",
                "Tailscale discovery: no tailscaled socket at {path}; peers only from --join",
                {"path": path},
            )
            return None
        if tailnet.backendState != "Running":
            self.noTailnet = f"tailscaled is {tailnet.backendState}"
            self.discoveryNote = (
                "warn",
                "Tailscale discovery: tailscaled on {path} is {backend}, not Running: "
                "no peers discovered; peers only from --join",
                {"path": path, "backend": tailnet.backendState},
            )
            return None
        if options.get("join"):
            self.discoveryNote = (
                "info",
                "Tailscale discovery: --join is given, so the tailnet's peers are not used as seeds",
                {},
            )
        else:
            self.discoveryNote = (
                "info",
                "Tailscale discovery: {count} online tailnet peer(s) ({names}); joining through them",
                {"count": len(tailnet.peers), "names": ", ".join(n for n, _ in tailnet.peers) or "none"},
            )
        return tailnet

    def startService(self) -> None:
        super().startService()
        log.info("Initializing gossip cluster...")
        if self.discoveryNote is not None:
            level, text, fields = self.discoveryNote
            (log.warn if level == "warn" else log.info)(text, **fields)
        if self.bindNote is not None:
            level, text, fields = self.bindNote
            (log.warn if level == "warn" else log.info)(text, **fields)
        try:
            joined = self.node.start(self.seeds + self.discovered)
        except Exception as e:  # reported to the start-up barrier
            watchListening(self, "--bind-port", f"{self.bind} (gossip)", fail(e), self.reactor)
            return
        watchListening(self, "--bind-port", f"{self.bind} (gossip)", succeed(None), self.reactor)
        total = len(self.seeds) + len(self.named)
        if self.named:

            def resolved(addresses: list[tuple[str, int]]) -> Deferred[Any]:
                known = list(self.node.seeds)
                self.node.seeds = known + [a for a in addresses if a not in known]
                return DeferredList([joined, self.node.join(addresses)], consumeErrors=True)

            def report(results: list[tuple[bool, Any]]) -> None:
                self._joined(sum(v for ok, v in results if ok), total)

            d: Deferred[Any] = resolvePeers(self.reactor, self.named)
            d.addCallback(resolved).addCallback(report)
        elif self.seeds:
            joined.addCallback(self._joined, total)
        elif self.discovered:
            joined.addCallback(self._joined, len(self.discovered), discovered=True)
        if self.rediscover is not None:
            self._rediscovery = LoopingCall(self._rediscoverIfAlone)
            self._rediscovery.clock = self.reactor
            self._rediscovery.start(REDISCOVER_INTERVAL, now=False)

    def _rediscoverIfAlone(self) -> Deferred[None] | None:
        """
        While no other member is alive, read the tailnet again and join
        the online peers not tried yet (they also become seeds, retried
        while alone).  A failed read is logged at debug level only.
        """
        if self.rediscover is None or self.node.summary()["members"].get("alive", 0) > 1:
            return None

        def found(tailnet: TailnetView | None) -> None:
            if tailnet is None or tailnet.backendState != "Running":
                return
            port = self.node.address[1]
            new = [(name, (ip, port)) for name, ip in tailnet.peers if (ip, port) not in self.node.seeds]
            if not new:
                return
            log.info(
                "Tailscale discovery: {count} new online tailnet peer(s) ({names}); joining through them",
                count=len(new),
                names=", ".join(n for n, _ in new),
            )
            addresses = [a for _, a in new]
            self.node.seeds = list(self.node.seeds) + addresses
            self.node.join(addresses)

        done: Deferred[None] = self.rediscover().addCallback(found)
        done.addErrback(lambda f: log.debug("Tailscale discovery: {why}", why=f.getErrorMessage()))
        return done

    def _joined(self, count: int, total: int, discovered: bool = False) -> None:
        if count:
            log.info("joined the cluster through {count} of {total} peers", count=count, total=total)
        elif discovered:
            log.info(
                "none of the {total} Tailscale peers answered gossip: running alone until one does",
                total=total,
            )
        else:
            log.warn(
                "no peer of --join answered ({total} tried); running alone until one does",
                total=total,
            )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._rediscovery is not None and self._rediscovery.running:
            self._rediscovery.stop()
        self._rediscovery = None
        return self.node.leave()

    def summary(self) -> dict[str, Any]:
        return self.node.summary()


def resolvePeers(reactor: Any, peers: Sequence[tuple[str, int]]) -> Deferred[list[tuple[str, int]]]:
    """
    Resolve C{--join} host names (Tailscale names too) with the system
    resolver, in the reactor's thread pool; every address of every name is
    a peer.  A name that does not resolve is logged and left out.
    """

    def lookup() -> tuple[list[tuple[str, int]], list[str]]:
        out: list[tuple[str, int]] = []
        errors: list[str] = []
        for host, port in peers:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as e:
                errors.append(f"{host}: {e.strerror or e}")
                continue
            for _, _, _, _, sockaddr in infos:
                address = (str(sockaddr[0]), int(sockaddr[1]))
                if address not in out:
                    out.append(address)
        return out, errors

    def report(result: tuple[list[tuple[str, int]], list[str]]) -> list[tuple[str, int]]:
        addresses, errors = result
        for error in errors:
            log.warn("--join: cannot resolve {error}", error=error)
        return addresses

    d: Deferred[tuple[list[tuple[str, int]], list[str]]] = deferToThreadPool(
        reactor, reactor.getThreadPool(), lookup
    )
    return d.addCallback(report)
