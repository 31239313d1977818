"""
The DNS writer: the cluster's address records, written only by the holder
of the C{dns_writer} lease, under its fencing token.

Records (L{plan}): the apex and C{*.DOMAIN} point at the LB leader's public
IP (the C{lb_leader} lease holder); C{*.<node>.DOMAIN} at each node's public
IP.  L{DNSWriter} reconciles every C{interval} seconds and whenever the
leases or the cluster state change, at most once per C{minGap} seconds
(rate limit), writing only the names whose addresses differ (minimal diff).
It checks that it still holds the lease right before every write and hands
the provider the token, so a provider that can fence rejects a deposed
writer's late write (see each provider's C{fencing}).  A pass that fails
(the provider unreachable or erring) is retried sooner than the next
interval, after a capped backoff (C{retryInitial} seconds, doubling up to
C{interval}), by the reconcile job itself (L{SerialJob}'s C{retry}: a poke
during the wait runs the pass sooner); any pass that does not fail starts
the backoff again from C{retryInitial}.  A fenced write is not
retried (a writer with a higher token has written).  With C{dryRun} it
logs the plan and the changes it would make and writes nothing.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from suite.backoff import Backoff
from suite.constellation.interfaces import IDNSProvider
from suite.serial import SerialJob

__all__ = ["plan", "diff", "Fenced", "DNSWriter", "DNSCollector", "FENCE_LABEL"]

log = Logger(namespace="constellation.dns")

#: Owner label of the fencing record (TXT) that providers keep in the zone.
FENCE_LABEL = "_constellation-fence"


class Fenced(Exception):
    """
    A writer with a higher fencing token has written: this write was refused.
    """


def plan(domain: str, lbLeaderIP: str | None, nodeIPs: Mapping[str, str | None]) -> dict[str, list[str]]:
    """
    The records the cluster wants: C{{name: sorted addresses}}.
    """
    out: dict[str, list[str]] = {}
    if lbLeaderIP:
        out[domain] = [lbLeaderIP]
        out[f"*.{domain}"] = [lbLeaderIP]
    for node, ip in sorted(nodeIPs.items()):
        if ip:
            out[f"*.{node.lower()}.{domain}"] = [ip]
    return out


def diff(desired: Mapping[str, list[str]], current: Mapping[str, list[str]]) -> list[tuple[str, list[str]]]:
    """
    The changes that make C{current} equal C{desired} on the names of
    C{desired} (other names are never touched): C{(name, addresses)}.
    """
    return [
        (name, sorted(addrs))
        for name, addrs in sorted(desired.items())
        if sorted(current.get(name) or []) != sorted(addrs)
    ]


def addressType(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


class DNSWriter(Service):
    """
    Reconcile the provider with L{plan} while this node holds the DNS
    writer lease (or always, logging only, with C{dryRun}).

    @param acting: the fencing token of the DNS writer lease while this node
        may act, else None.
    @param desired: the current plan.
    """

    name = "dns-writer"

    def __init__(
        self,
        provider: IDNSProvider | None,
        reactor: Any,
        acting: Callable[[], int | None],
        desired: Callable[[], dict[str, list[str]]],
        *,
        dryRun: bool = False,
        interval: float = 60.0,
        minGap: float = 1.0,
        retryInitial: float = 1.0,
        wallClock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.reactor = reactor
        self.acting = acting
        self.desired = desired
        self.dryRun = dryRun or provider is None
        self.interval = interval
        self.minGap = minGap
        self.wallClock = wallClock
        self.lastStart = -1e18
        self.lastPlan: dict[str, list[str]] = {}
        self.lastToken: int | None = None
        self.last: dict[str, Any] | None = None
        self.writes = 0
        self.failures = 0
        self._timer: Any = None
        # After a failed pass: the next try sooner than the interval.
        self._backoff = Backoff(initial=retryInitial, maximum=max(retryInitial, interval), jitter=False)
        # One pass at a time, each at least minGap after the last one began;
        # a poke during a pass asks for one more after it.
        # A failed pass is retried after the backoff's delay.
        self._passes = SerialJob(
            self._run, "DNS reconcile", clock=reactor, delay=self._wait, log=log, retry=self._retryIn
        )

    def startService(self) -> None:
        super().startService()
        log.info(
            "DNS writer: provider {provider}{dry}",
            provider=self.provider.name if self.provider is not None else "none",
            dry=" (dry run: plans are logged, nothing is written)" if self.dryRun else "",
        )
        self._timer = self.reactor.callLater(0, self._periodic)

    def stopService(self) -> None:
        super().stopService()
        self._passes.stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _periodic(self) -> None:
        self._timer = self.reactor.callLater(self.interval, self._periodic)
        self.poke()

    def poke(self) -> None:
        """
        Something changed: reconcile soon (rate-limited, coalesced).
        """
        if self.running:
            self._passes.request()

    def _wait(self) -> float:
        return max(0.0, self.lastStart + self.minGap - float(self.reactor.seconds()))

    def pokeIfChanged(self) -> None:
        """
        The cluster state or the leases changed: reconcile only if the plan
        or the token under which this node may write did (a lease renewal,
        every fifth of the lease, changes neither).
        """
        if self.running and (self.desired() != self.lastPlan or self.acting() != self.lastToken):
            self.poke()

    def _run(self) -> Deferred[dict[str, Any]]:
        self.lastStart = self.reactor.seconds()
        return Deferred.fromCoroutine(self.reconcile())

    def _retryIn(self, result: object) -> float | None:
        """
        After a failed pass, the backoff's next delay (or longer, when the
        provider asked to wait: a rate limit's Retry-After); after any
        other, none (and the backoff starts again).
        """
        if not isinstance(result, dict) or not str(result.get("outcome", "")).startswith("failed"):
            self._backoff.reset()
            return None
        delay = self._backoff.next()
        if isinstance(result.get("retryAfter"), float):
            delay = max(delay, result["retryAfter"])
        result["retryIn"] = delay
        log.info("DNS reconcile: retrying in {delay:.0f} s", delay=delay)
        return delay

    async def reconcile(self) -> dict[str, Any]:
        """
        One pass; returns (and records in L{last}) what happened.
        """
        desired = self.desired()
        if desired != self.lastPlan:
            log.info("DNS plan: {plan}", plan=_describe(desired))
            self.lastPlan = desired
        result: dict[str, Any] = {"at": self.wallClock(), "changes": [], "token": None}
        token = self.lastToken = self.acting()
        if self.dryRun:
            result["outcome"] = "dry run"
            if self.provider is not None and token is not None:
                current = await self.provider.records(sorted(desired))
                result["changes"] = [list(c) for c in diff(desired, current)]
                for name, addrs in result["changes"]:
                    log.info("DNS dry run: would set {name} to {addrs}", name=name, addrs=addrs or "nothing")
            self.last = result
            return result
        if token is None:
            result["outcome"] = "not the DNS writer"
            self.last = result
            return result
        assert self.provider is not None
        result["token"] = token
        try:
            current = await self.provider.records(sorted(desired))
            changes = diff(desired, current)
            # The lease may have run out while we read: check right before writing.
            if changes and self.acting() == token:
                await self.provider.apply(changes, token)
                self.writes += 1
                for name, addrs in changes:
                    log.info(
                        "DNS updated: {name} -> {addrs} (fencing token {fence})",
                        name=name,
                        addrs=", ".join(addrs),
                        fence=token,
                    )
                result["outcome"] = "updated"
            elif changes:
                result["outcome"] = "lease lost before writing"
            else:
                result["outcome"] = "in sync"
            result["changes"] = [list(c) for c in changes]
        except Fenced as e:
            self.failures += 1
            result["outcome"] = f"fenced: {e}"
            log.warn(
                "DNS write refused by the fence: {why}; if no other cluster writes this zone "
                "(this cluster's Raft data was reset or restored from a backup, so its tokens "
                "started again), delete the zone's {fence} TXT record and the writer takes over",
                why=str(e),
                fence=FENCE_LABEL,
            )
        except Exception as e:  # the loop keeps running: counted, logged
            self.failures += 1
            result["outcome"] = f"failed: {e}"
            retryAfter = getattr(e, "retryAfter", None)
            if isinstance(retryAfter, int | float):
                result["retryAfter"] = float(retryAfter)  # the provider's rate limit asks to wait
            log.warn("DNS reconcile failed: {why}", why=str(e))
        self.last = result
        return result

    def status(self) -> dict[str, Any]:
        return {
            "provider": self.provider.name if self.provider is not None else None,
            "fencing": self.provider.fencing if self.provider is not None else None,
            "dryRun": self.dryRun,
            "writer": self.acting() is not None,
            "plan": self.desired(),
            "lastReconcile": self.last,
            "writes": self.writes,
            "failures": self.failures,
        }


class DNSCollector:
    """
    The writer's counters, read at scrape time: C{constellation_dns_writes_total}
    (write batches applied by this node) and C{constellation_dns_failures_total}
    (failed or fenced passes).
    """

    def __init__(self, writer: DNSWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[CounterMetricFamily]:
        # CounterMetricFamily adds the _total suffix to the exposed samples.
        yield CounterMetricFamily(
            "constellation_dns_writes", "DNS write batches applied by this node.", value=self.writer.writes
        )
        yield CounterMetricFamily(
            "constellation_dns_failures",
            "DNS reconcile passes of this node that failed or were fenced.",
            value=self.writer.failures,
        )


def _describe(p: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{name} -> {', '.join(addrs)}" for name, addrs in sorted(p.items())) or "(nothing)"
