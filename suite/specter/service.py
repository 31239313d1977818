"""
Wiring of C{specter server}: stores, the ring node, the mTLS listener, the
RPC listener and the loopback helper site, as one L{MultiService}.

The ring node enters the ring only once every listener listens (the
daemon's start-up barrier): a process that cannot bind a port never joins,
so it never announces, hands off or leaves vnodes of its address.  On stop
(SIGINT/SIGTERM) every vnode first Leaves, handing its keys to its
successor, before the listeners close and the stores are flushed.  The data
directory is locked for the life of the process (L{DataDirLock}).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from suite import kv
from suite.daemon import (
    ConfigError,
    GuardedEndpointService,
    barrierFor,
    errorLine,
    listenFailureReason,
    notImplementedYet,
)
from suite.specter.addresses import privateSocket
from suite.specter.chord.ids import vnodeId
from suite.specter.chord.node import ChordConfig, ChordNode
from suite.specter.chord.ringstate import RingStateFile
from suite.specter.chord.wire import ALPN, ChordServerFactory, WireTransport
from suite.specter.datadir import DataDirLock
from suite.specter.rpc import RPCFactory
from suite.specter.web import RingCollector, RingHealth, makeHelperResource

__all__ = ["SpecterService", "makeServerService", "listenOrExit", "LEAVE_TIMEOUT"]

log = Logger()
LEAVE_TIMEOUT = 110.0


def listenOrExit(start: Any) -> None:
    """
    Run C{start} (a service's start method); a listener that cannot bind
    ends start-up with one line naming the address, exit status 1, instead
    of a traceback.
    """
    try:
        start()
    except CannotListenError as e:
        where = (
            e.interface
            if isinstance(e.interface, str) and e.port is None
            else f"{e.interface or '*'}:{e.port}"
        )
        reason = listenFailureReason(e)
        sys.stderr.write(errorLine("specter", ConfigError(f"cannot listen on {where}: {reason}")))
        sys.stderr.flush()
        raise SystemExit(1) from None


class SpecterService(MultiService):
    """
    The root service of a ring node.
    """

    def __init__(
        self,
        node: ChordNode,
        seed: str | None,
        pools: list[ThreadPool],
        stores: list[Any],
        transport: WireTransport,
        reactor: Any,
        bootstrap: bool = False,
        alsoJoin: tuple[str, ...] = (),
        dataLock: DataDirLock | None = None,
    ) -> None:
        super().__init__()
        self.dataLock = dataLock
        #: whether the node was started (it is not when a listener failed)
        self.nodeStarted = False
        self.node = node
        self.seed = seed
        self.bootstrap = bootstrap
        self.alsoJoin = alsoJoin
        self.pools = pools
        self.stores = stores
        self.transport = transport
        self.reactor = reactor

    def _listenErrors(self, start: Any) -> None:
        listenOrExit(start)

    def privilegedStartService(self) -> None:
        self._listenErrors(super().privilegedStartService)

    def startService(self) -> None:
        for pool in self.pools:
            pool.start()
        if self.dataLock is not None:
            self.dataLock.writePid()
        self._listenErrors(super().startService)
        barrier = barrierFor(self)
        if barrier is None:
            self._startNode()
            return
        # only once every listener listens; a failed bind never joins the ring
        barrier.whenStarted().addCallbacks(lambda _: self._startNode(), lambda _: None)

    def _startNode(self) -> None:
        if not self.running or self.nodeStarted:
            return
        self.nodeStarted = True
        log.info(
            "ring node {addr} starting {count} vnodes (join {seed})",
            addr=self.node.addr,
            count=len(self.node.vnodes),
            seed=self.seed or "not given",
        )
        self.node.start(self.seed, bootstrap=self.bootstrap, alsoJoin=self.alsoJoin)

    async def _stop(self) -> None:
        if self.nodeStarted:
            await self._leave()
        self.node.stop()
        # the view saved before leaving reaches ring.json before the pool stops
        await self.node.closeRingState()
        self.transport.close()
        await super().stopService()
        await DeferredList([s.close() for s in self.stores], consumeErrors=True)
        for pool in self.pools:
            pool.stop()
        if self.dataLock is not None:
            self.dataLock.release()

    async def _leave(self) -> None:
        log.info("leaving the ring: handing keys on")
        leave = self.node.leave()
        timer = self.reactor.callLater(LEAVE_TIMEOUT, leave.cancel)
        try:
            await leave
        except CancelledError:  # by the timer
            log.warn("leave did not finish in {s}s", s=LEAVE_TIMEOUT)
        except Exception:
            # the node stops whatever went wrong; what did is logged
            log.failure("leaving the ring failed; stopping anyway")
        if timer.active():
            timer.cancel()
        log.info("left the ring")

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())


def _gatewayWiring() -> Any:
    """
    The gateway's wiring module, when the gateway is part of this build.
    """
    try:
        from suite.specter.gateway import wiring
    except ImportError:
        return None
    return wiring


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("twisted-suite")
    except PackageNotFoundError:
        return "0"


def _checkAdvertised(bundle: Any, host: str) -> None:
    """
    The node certificate must name the advertised host: peers dial that
    address and refuse a certificate that does not name it.
    """
    from suite.pki.verify import VerificationError, verifyCertificate

    try:
        verifyCertificate(bundle.nodeCert, hostname=host)
    except (VerificationError, ValueError):
        raise ConfigError(
            f"--advertise-addr: the node certificate does not name {host} "
            f"(it has {bundle.identity.describe()}); mint one for this address"
        ) from None


def _loadBundle(options: Any) -> Any:
    from suite.pki.load import loadBundle, loadBundleFromEnv

    if options["cert-env"]:
        return loadBundleFromEnv(options.environ)
    return loadBundle(options["cert-dir"])


def makeServerService(options: Any, reactor: Any) -> SpecterService:
    """
    Build the ring node from parsed L{suite.specter.options.ServerOptions}:
    the root service, then one child per builder below.
    """
    wiring = _gatewayWiring()
    withGateway = _checkFeatures(options, wiring)
    bundle = _loadBundle(options)
    dataDir = _prepareDataDir(options)
    addr = _advertisedAddress(options, bundle)
    # before any store or ring state file is opened
    dataLock = DataDirLock("--data-dir", dataDir)
    pools: list[ThreadPool] = []
    node, transport = _ringNode(options, reactor, bundle, dataDir, addr, pools)
    root = _rootService(options, reactor, node, pools, transport, dataLock)
    addSentry(options, root, reactor)
    chordFactory = ChordServerFactory(node.dispatch, reactor)
    gatewayService = None
    if withGateway:
        # the gateway owns the TCP port and hands the ring's ALPN to chordFactory
        gatewayService = wiring.makeRingGateway(options, bundle, node, chordFactory, reactor)
        gatewayService.setServiceParent(root)
    else:
        _addRingListeners(options, reactor, bundle, chordFactory, root)
    rpcFactory = _addRPC(options, reactor, node, root)
    registry = _metricsRegistry(node, rpcFactory)
    ldap = _ldapChecker(options, reactor)
    resource = _helperResource(options, reactor, node, registry, ldap)
    if gatewayService is not None:
        views = _addACME(options, reactor, node, root, gatewayService, registry)
        password = options["auth_pass"]
        secret = password.reveal() if password else None
        wiring.observeGateway(
            gatewayService, registry, resource, options["auth_user"], secret, ldap, more=views
        )
    _addHelper(options, reactor, resource, root)
    return root


def _checkFeatures(options: Any, wiring: Any) -> bool:
    """
    Whether the gateway is part of this node; features asked for but not
    built (yet, or without the gateway) stop start-up.
    """
    withGateway = wiring is not None and wiring.gatewayRequested(options)
    later = options.laterFeatures()
    if withGateway:
        later = [f for f in later if f not in wiring.GATEWAY_FEATURES]
    if later:
        raise notImplementedYet("; ".join(later))
    if options.get("acme") and not withGateway:
        raise notImplementedYet("ACME certificates (--acme) without the gateway")
    return bool(withGateway)


def _prepareDataDir(options: Any) -> str:
    """
    C{--data-dir}, created if needed; it must be writable.
    """
    dataDir: str = options["data-dir"]
    try:
        # private: the KV files hold ACME private keys and every value
        os.makedirs(dataDir, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--data-dir: cannot create {dataDir}: {e.strerror}") from None
    if not os.access(dataDir, os.W_OK):
        raise ConfigError(f"--data-dir: {dataDir} is not writable")
    mode = os.stat(dataDir).st_mode & 0o777
    if mode & 0o007:
        log.warn(
            "--data-dir: {dir} is open to other users (mode {mode}); it holds the ring KV, "
            "ACME private keys included: chmod 700 {dir}",
            dir=dataDir,
            mode=f"{mode:04o}",
        )
    return dataDir


def _advertisedAddress(options: Any, bundle: Any) -> str:
    """
    C{HOST:PORT} (C{[V6]:PORT}) peers dial; the node certificate must name
    the host.
    """
    host, port = options["advertise-addr"]
    _checkAdvertised(bundle, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _storeFactory(
    options: Any, reactor: Any, dataDir: str, addr: str, shared: ThreadPool, pools: list[ThreadPool]
) -> Callable[[int], Any]:
    """
    Opens vnode C{index}'s store (C{--kv}); SQLite gets a thread of its own
    per store, the append-only files share C{shared}.  The store stamps its
    versions with the id of the vnode it belongs to (C{addr}'s vnode C{index}).
    """
    backend = options["kv"]
    if backend == "memory":
        log.warn(
            "--kv memory: this node keeps its keys in memory only; they are lost when it stops (tests only)"
        )

    def storeFactory(index: int) -> Any:
        pool = shared
        if backend == "sqlite":
            pool = ThreadPool(1, 1, name=f"specter-sqlite-{index}")
            pools.append(pool)

        def runner(f: Any) -> Any:
            return deferToThreadPool(reactor, pool, f)

        return kv.openStore(
            backend,
            dataDir,
            index,
            reactor,
            runner,
            flushInterval=options["aof-flush-interval"],
            sync=bool(options.get("aof-sync")),
            # the writer id in every version this vnode stamps
            origin=vnodeId(addr, index),
            horizon=options["tombstone-horizon"],
        )

    return storeFactory


def _ringNode(
    options: Any, reactor: Any, bundle: Any, dataDir: str, addr: str, pools: list[ThreadPool]
) -> tuple[ChordNode, WireTransport]:
    """
    The Chord node (its vnodes and their stores) and its mTLS transport.
    """
    from suite.pki.tls import clientContextFactory

    config = ChordConfig(
        virtual=options["virtual"],
        replicas=options["replicas"],
        successors=max(8, min(32, options["replicas"] * options["virtual"] + 2)),
        stabilizeInterval=options["stabilize-interval"],
        rpcTimeout=options["rpc-timeout"],
    )
    shared = ThreadPool(1, 2, name="specter-aof")
    pools.append(shared)

    def dialling(peerHost: str) -> Any:
        # the peer's certificate must name the address it is dialled at
        return clientContextFactory(bundle, hostname=peerHost, acceptableProtocols=[ALPN])

    transport = WireTransport(reactor, dialling)
    ringState = RingStateFile(dataDir, lambda f: deferToThreadPool(reactor, shared, f))
    storeFactory = _storeFactory(options, reactor, dataDir, addr, shared, pools)
    node = ChordNode(addr, transport, reactor, config, storeFactory, ringState=ringState)
    return node, transport


def _rootService(
    options: Any,
    reactor: Any,
    node: ChordNode,
    pools: list[ThreadPool],
    transport: WireTransport,
    dataLock: DataDirLock | None = None,
) -> SpecterService:
    """
    The root service: joins through the first C{--join}, leaves on stop.
    """
    joins = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in options["join"]]
    return SpecterService(
        node,
        joins[0] if joins else None,
        pools,
        [v.store for v in node.vnodes],
        transport,
        reactor,
        bootstrap=options["bootstrap"],
        alsoJoin=tuple(joins[1:]),
        dataLock=dataLock,
    )


def addSentry(options: Any, root: MultiService, reactor: Any) -> None:
    """
    Report errors to Sentry, with C{--sentry} (C{specter server} and C{specter dns}).
    """
    if options.get("sentry"):
        from suite.sentry import SentryService

        SentryService(options["sentry"], reactor, release=f"specter@{_version()}").setServiceParent(root)
        log.info("errors are reported to Sentry, with info-level breadcrumbs")


def _addRingListeners(
    options: Any, reactor: Any, bundle: Any, chordFactory: ChordServerFactory, root: SpecterService
) -> None:
    """
    The ring's own mTLS listeners (C{--listen-tcp}), when no gateway owns
    the port.
    """
    from suite.pki.endpoints import HandshakeDeadlineFactory
    from suite.pki.tls import serverContextFactory

    tlsFactory = serverContextFactory(bundle, requireClientCert=True, acceptableProtocols=[ALPN])
    # the flag that named the binds (--listen-tcp, else --listen-addr, else the default)
    flag = "--listen-addr" if options["listen-addr"] and not options["listen-tcp"] else "--listen-tcp"
    for h, p in options["tcp-binds"]:
        endpoint = serverFromString(reactor, f"tcp:{p}:interface={h.replace(':', chr(92) + ':')}")
        # a connection that does not finish its handshake is closed in 10 s
        wrapped = HandshakeDeadlineFactory(tlsFactory, chordFactory, reactor)
        svc = GuardedEndpointService(endpoint, wrapped, flag, f"{h}:{p}")
        svc.setServiceParent(root)


def _addRPC(options: Any, reactor: Any, node: ChordNode, root: SpecterService) -> RPCFactory:
    """
    The RPC listener (C{--listen-rpc}) for C{specter kv} and friends.
    """
    from suite.specter.rpcauth import loadOrCreateToken

    rpcFactory = RPCFactory(node, reactor, token=loadOrCreateToken(options["data-dir"]))
    rpc = GuardedEndpointService(
        serverFromString(reactor, privateSocket("--listen-rpc", options["rpc-endpoint"])),
        rpcFactory,
        "--listen-rpc",
        options["rpc-endpoint"],
    )
    rpc.setServiceParent(root)
    return rpcFactory


def _metricsRegistry(node: ChordNode, rpcFactory: RPCFactory) -> Any:
    """
    The Prometheus registry /metrics serves, with the ring's collector.
    """
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(RingCollector(node, rpcFactory))
    return registry


def _ldapChecker(options: Any, reactor: Any) -> Any:
    """
    The LDAP bind checker of C{--auth-ldap}, or None.
    """
    if not options["auth-ldap"]:
        return None
    from suite.cred.ldap import LDAPBindChecker

    try:
        return LDAPBindChecker(
            options["auth-ldap"],
            options["auth-ldap-dn"],
            groupFilter=options["auth-ldap-group"],
            reactor=reactor,
        )
    except ValueError as e:
        raise ConfigError(f"--auth-ldap: {e}") from None


def _helperResource(options: Any, reactor: Any, node: ChordNode, registry: Any, ldap: Any) -> Any:
    """
    The loopback helper's resource: health, metrics, the ring's views.
    """
    from suite.web.admin import makeAdminResource

    admin = makeAdminResource([RingHealth(node)], registry=registry, clock=reactor)
    password = options["auth_pass"]
    return makeHelperResource(
        node,
        admin,
        options["auth_user"],
        password.reveal() if password else None,
        ldap,
        registry=registry,
        clock=reactor,
    )


def _addACME(
    options: Any, reactor: Any, node: ChordNode, root: SpecterService, gatewayService: Any, registry: Any
) -> dict[bytes, Any]:
    """
    With C{--acme}: certificates for the apexes and the custom domains,
    renewed once the ring serves; returns the helper views it adds.
    """
    views: dict[bytes, Any] = {}
    if not options["acme"]:
        from suite.specter.acme import ACMEOff

        views[b"acme"] = ACMEOff()
        return views
    from suite.specter.acme import ACMECollector, ACMEInventory, makeACMEService
    from suite.specter.customdomains import CustomDomainWatcher, makeCustomDomains

    certificates = gatewayService.certificates
    assert certificates is not None

    def install(name: str, stored: Any) -> None:
        if name in certificates.apexes:
            # TCP and QUIC (HTTP/3) both choose it by SNI from here on
            certificates.install(name, stored.chainPEM, stored.keyPEM)
        else:
            certificates.installCustom(name, stored.chainPEM, stored.keyPEM)

    acme = makeACMEService(options, node, reactor, install)
    domains = makeCustomDomains(options, node, reactor)
    gatewayService.gateway.customDomains = domains

    def forget(domain: str) -> None:
        acme.renewal.remove(domain)
        certificates.uninstallCustom(domain)

    acme.watcher = CustomDomainWatcher(
        domains, gatewayService.gateway, reactor, acme.renewal.add, removeCertificate=forget
    )
    acme.setServiceParent(root)
    registry.register(ACMECollector(acme))
    views[b"acme"] = ACMEInventory(acme, options["acme-directory"], certificates.serves)
    return views


def _addHelper(options: Any, reactor: Any, resource: Any, root: SpecterService) -> None:
    """
    The loopback helper site (C{--listen-internal}).
    """
    from suite.web.admin import makeAdminService

    helper = makeAdminService(options["internal-endpoint"], resource, reactor, flag="--listen-internal")
    helper.setServiceParent(root)
