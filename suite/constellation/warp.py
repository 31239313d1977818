"""
WARP egress health: every C{interval} seconds (30 by default) the WARP
gateway container's state and Docker health through the engine API, and
an egress probe (an HTTP GET of C{--warp-probe-url} that must answer 2xx
within C{timeout}).  Healthy when the container runs, its healthcheck (if
it has one) says healthy, and the probe succeeds.

Where the probe runs (C{--warp-probe-from}): C{container} (the default)
runs it inside the WARP container through the engine's exec API, so it
takes the tunnel's way out (C{curl}, else busybox C{wget}; a Cloudflare
trace URL must also say C{warp=on} or C{warp=plus}); C{host} fetches it
from the agent, which checks this host's way to the URL only.  Then only
the container's own healthcheck (as in C{conf/constellation/stack.yml})
checks the tunnel: a container without one is said to be so, once, and
C{tunnelChecked} is false in the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import treq
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger

from suite.constellation.interfaces import IContainerEngine
from suite.serial import SerialJob
from suite.web.client import BodyTooLarge, collectBody

__all__ = ["WarpMonitor"]

log = Logger(namespace="constellation.warp")

#: Most of the egress probe's answer that is read (the trace page is ~300 bytes).
MAX_PROBE_BYTES = 64 * 1024

#: The probe run inside the WARP container, with the URL as C{$0} and the
#: timeout as C{$1}: 1 when the fetch fails, 3 when a Cloudflare trace does
#: not show WARP.  Shell built-ins besides the fetch (images may lack grep);
#: busybox wget is run without C{-T}, which some static builds crash on.
CONTAINER_PROBE = (
    'out=$(curl -fsS -m "$1" "$0" 2>/dev/null || wget -q -O - "$0" 2>/dev/null) || exit 1; '
    'case "$0" in */cdn-cgi/trace) case "$out" in *warp=on*|*warp=plus*) ;; *) exit 3;; esac;; esac'
)


class WarpMonitor(Service):
    name = "warp"

    def __init__(
        self,
        engine: IContainerEngine | None,
        reactor: Any,
        container: str,
        probeURL: str | None,
        interval: float = 30.0,
        timeout: float = 10.0,
        wallClock: Callable[[], float] = time.time,
        onChange: Callable[[dict[str, Any]], None] | None = None,
        probeFrom: str = "host",
    ) -> None:
        self.engine, self.reactor, self.container = engine, reactor, container
        self.probeFrom = probeFrom
        self.probeURL, self.interval, self.timeout = probeURL, interval, timeout
        self.wallClock = wallClock
        self.onChange = onChange
        self.last: dict[str, Any] = {
            "monitored": True,
            "container": container,
            "healthy": False,
            "reason": "not checked yet",
        }
        self.checks = 0
        self._toldNoHealthcheck = False
        self._timer: Any = None
        # One check at a time: a tick during a slow check is skipped.
        self._checks = SerialJob(lambda: Deferred.fromCoroutine(self.check()), "WARP check", log=log)

    def startService(self) -> None:
        super().startService()
        self._timer = self.reactor.callLater(0, self._tick)

    def stopService(self) -> None:
        super().stopService()
        self._checks.stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _tick(self) -> None:
        self._timer = self.reactor.callLater(self.interval, self._tick)
        self._checks.poll()

    async def check(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "monitored": True,
            "container": self.container,
            "checkedAt": self.wallClock(),
        }
        reasons: list[str] = []
        if self.engine is None:
            status["containerState"] = None
            reasons.append("no Docker engine configured (--docker)")
        else:
            try:
                doc = await self.engine.inspect(self.container)
                state = doc.get("State") or {}
                status["containerState"] = state.get("Status")
                health = (state.get("Health") or {}).get("Status")
                status["containerHealth"] = health
                status["tunnelChecked"] = health is not None or bool(
                    self.probeURL and self.probeFrom == "container"
                )
                if not status["tunnelChecked"] and state.get("Running") and not self._toldNoHealthcheck:
                    self._toldNoHealthcheck = True
                    log.warn(
                        "WARP container {container} has no healthcheck: traffic through the tunnel is "
                        "not checked (the egress probe runs from the agent's host); give it one, e.g. "
                        "curl -fsS https://www.cloudflare.com/cdn-cgi/trace | grep -q warp=on",
                        container=self.container,
                    )
                if not state.get("Running"):
                    reasons.append(f"container {self.container} is {state.get('Status') or 'not running'}")
                elif health not in (None, "healthy"):
                    reasons.append(f"container {self.container} health is {health}")
            except Exception as e:  # health boundary: the reason is reported
                status["containerState"] = None
                reasons.append(f"container {self.container}: {e}")
        if self.probeURL and self.probeFrom == "container":
            if self.engine is not None and status.get("containerState") == "running":
                started = self.reactor.seconds()
                status["egressFrom"] = "container"
                try:
                    code = await self.engine.execute(
                        self.container,
                        ["sh", "-c", CONTAINER_PROBE, self.probeURL, f"{self.timeout:g}"],
                        timeout=self.timeout + 5,
                    )
                    status["egressExit"] = code
                    if code == 1:
                        reasons.append(f"egress probe through the tunnel failed ({self.probeURL})")
                    elif code == 3:
                        reasons.append("the Cloudflare trace seen through the tunnel does not say warp=on")
                    elif code != 0:
                        reasons.append(f"egress probe in the container exited {code}")
                except Exception as e:  # health boundary: the reason is reported
                    status["egressExit"] = None
                    reasons.append(f"egress probe in the container failed: {e}")
                status["egressMs"] = round((self.reactor.seconds() - started) * 1000.0, 1)
        elif self.probeURL:
            status["egressFrom"] = "host"
            started = self.reactor.seconds()
            try:
                probe = Deferred.fromCoroutine(self._probe(self.probeURL))
                probe.addTimeout(self.timeout, self.reactor)
                code = await probe
                status["egressStatus"] = code
                if not 200 <= code < 300:
                    reasons.append(f"egress probe answered HTTP {code}")
            except BodyTooLarge:
                status["egressStatus"] = None
                reasons.append(f"egress probe answered more than {MAX_PROBE_BYTES} bytes")
            except (TimeoutError, CancelledError):
                status["egressStatus"] = None
                reasons.append(f"egress probe took longer than {self.timeout:g} s")
            except Exception as e:  # health boundary: the reason is reported
                status["egressStatus"] = None
                reasons.append(f"egress probe failed: {e.__class__.__name__}")
            status["egressMs"] = round((self.reactor.seconds() - started) * 1000.0, 1)
        status["healthy"] = not reasons
        status["reason"] = "; ".join(reasons) if reasons else "ok"
        if status["healthy"] != self.last.get("healthy") or self.checks == 0:
            if status["healthy"]:
                log.info("WARP egress healthy ({container})", container=self.container)
            else:
                log.warn("WARP egress unhealthy: {reason}", reason=status["reason"])
        self.checks += 1
        self.last = status
        if self.onChange is not None:
            self.onChange(status)
        return status

    async def _probe(self, url: str) -> int:
        """
        Fetch C{url}, reading at most L{MAX_PROBE_BYTES} of its answer (the
        whole fetch is bounded by the caller's timeout); its status code.
        """
        response = await treq.get(url, persistent=False, reactor=self.reactor)
        await collectBody(response, MAX_PROBE_BYTES)
        return int(response.code)

    def status(self) -> dict[str, Any]:
        return dict(self.last)
