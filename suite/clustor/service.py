"""
Wiring of C{twistd clustor-cp}: the state store, its reloader, and one
listener serving the feeds plus C{/healthz}, C{/readyz} and C{/metrics}.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.application.service import MultiService
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from suite.clustor.server import ControlPlaneStore, StateReloader, addFeedResources, runSynchronously
from suite.daemon import attachCommon
from suite.pki.load import loadIdentity
from suite.pki.tls import serverContextFactory
from suite.pki.verify import PeerPolicy
from suite.web.admin import makeAdminResource
from suite.web.health import HealthReport
from suite.web.interfaces import IHealth
from suite.web.limits import LimitedSite
from suite.web.listen import listenService

__all__ = ["makeService", "StateHealth"]

log = Logger(namespace="clustor.cp")


@implementer(IHealth)
class StateHealth:
    """
    Ready while a valid state is loaded (always, once started); the details
    show the revision and the state file, and whether the last reload failed.
    """

    name = "state"

    def __init__(self, store: ControlPlaneStore) -> None:
        self.store = store

    def check(self) -> HealthReport:
        return HealthReport(
            True,
            (),
            {
                "revision": self.store.revision,
                "path": self.store.path,
                "partitions": len(self.store.state.partitions),
                "reloadFailures": self.store.reloadFailures,
            },
        )


class _StoreCollector:
    """
    Metrics read from the store at scrape time.
    """

    def __init__(self, store: ControlPlaneStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "clustor_cp_revision", "Revision of the published control-plane state.", value=self.store.revision
        )
        yield GaugeMetricFamily(
            "clustor_cp_partitions",
            "Partitions in the published routing table.",
            value=len(self.store.state.partitions),
        )
        yield CounterMetricFamily(
            "clustor_cp_reload_failures",
            "State file reloads refused as invalid.",
            value=self.store.reloadFailures,
        )


def _metrics(store: ControlPlaneStore) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_StoreCollector(store))
    return registry


def _tlsContext(options: Mapping[str, Any]) -> Any:
    if not options.get("tls"):
        return None
    bundle = loadIdentity(
        options["tls-identity-cert"],
        options["tls-identity-key"],
        options["tls-trust-bundle"],
        certLabel="--tls-identity-cert (CLUSTOR_CP_TLS_IDENTITY_CERT)",
        keyLabel="--tls-identity-key (CLUSTOR_CP_TLS_IDENTITY_KEY)",
        trustLabel="--tls-trust-bundle (CLUSTOR_CP_TLS_TRUST_BUNDLE)",
    )
    verifier = PeerPolicy(spiffeId=options["client-spiffe"]) if options.get("client-spiffe") else None
    return serverContextFactory(bundle, requireClientCert=True, trustClientCA=False, peerVerifier=verifier)


def makeService(options: Mapping[str, Any], reactor: Any = None) -> MultiService:
    """
    Build the control plane's root service from parsed L{Options}.

    @raise suite.daemon.ConfigError: for an invalid state file, TLS material
        or endpoint, naming it.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    store = ControlPlaneStore(options["state"])
    root = MultiService()
    # A signal handler hands work to the reactor with callFromThread (the
    # thread-safe hand-off); a reactor without threads gets callLater(0).
    handOff = getattr(reactor, "callFromThread", None) or (lambda f: reactor.callLater(0, f))
    runInThread: Any = runSynchronously
    if hasattr(reactor, "getThreadPool"):

        def runInThread(f: Any, *args: Any) -> Any:
            return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    reloader = StateReloader(
        store, reactor, float(options["reload-interval"]), handOff, runInThread=runInThread
    )
    reloader.setName("reloader")
    reloader.setServiceParent(root)

    resource = makeAdminResource([StateHealth(store)], registry=_metrics(store), clock=reactor)
    addFeedResources(resource, store)
    # plain HTTP on loopback: no web page may read it (DNS rebinding)
    site = LimitedSite(resource, reactor=reactor, localHostsOnly=not options["tls"])
    tls = _tlsContext(options)
    listener = listenService(options["listen"], site, reactor, tls, flag="--listen (CLUSTOR_CP_LISTEN)")
    listener.setName("http")
    listener.setServiceParent(root)
    log.info(
        "clustor control plane serving {path} (revision {revision}) on {listen} ({scheme})",
        path=store.path,
        revision=store.revision,
        listen=options["listen"],
        scheme="mTLS" if tls is not None else "plain HTTP",
    )
    attachCommon(root, options, {"store": store, "reloader": reloader}, reactor)
    return root
