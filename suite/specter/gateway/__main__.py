"""
A standalone gateway with in-memory routes (one process, no ring), for
development and benchmarks::

    python -m suite.specter.gateway --listen tcp:8443:interface=127.0.0.1 \\
        --cert-dir CERTS --apex example.test --data-dir DIR
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.python import usage

from suite.daemon import ConfigError, errorLine


class Options(usage.Options):
    optParameters = [
        ["listen", None, "tcp:8443:interface=127.0.0.1", "Endpoint string of the TLS port."],
        ["advertise", None, None, "HOST:PORT clients reach this gateway at (default from --listen)."],
        ["cert-dir", None, None, "CA bundle directory (ca.crt, client-ca.crt, node.crt, node.key)."],
        ["data-dir", None, None, "Where the self-signed certificate is kept."],
        ["proxy-buffer", None, "16KiB", "DATA frame size."],
        ["transport-buffer", None, "16KiB", "Socket write buffer before back-pressure."],
        ["listen-http", None, None, "Endpoint string of the plain HTTP listener (CONNECT + redirect)."],
        ["listen-udp", None, None, "HOST:PORT for QUIC/HTTP/3 (runs on the asyncio reactor)."],
    ]
    optFlags = [["proxy-protocol", None, "Require a PROXY protocol header from visitors."]]

    def __init__(self) -> None:
        super().__init__()
        self["apex"] = []

    def opt_apex(self, value: str) -> None:
        """Apex hostname (repeatable)."""
        self["apex"].append(value.lower().rstrip("."))

    def postOptions(self) -> None:
        from suite.specter.options import parseSize

        for key in ("cert-dir", "data-dir"):
            if not self[key]:
                raise ConfigError(f"--{key}: required")
        if not self["apex"]:
            raise ConfigError("--apex: at least one is required")
        for key in ("proxy-buffer", "transport-buffer"):
            self[key] = parseSize(f"--{key}", self[key])
        if not self["advertise"]:
            port = self["listen"].split(":")[1]
            self["advertise"] = f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(errorLine("specter-gateway", e))
        raise SystemExit(2) from None
    udp = None
    if options["listen-udp"]:
        from twisted.internet import asyncioreactor

        from suite.specter.client.link import splitHostPort

        asyncioreactor.install()
        udp = [splitHostPort(options["listen-udp"])]
    from twisted.internet import reactor

    from suite.logging import startLogging
    from suite.pki.load import loadBundle
    from suite.specter.gateway.core import GatewayConfig
    from suite.specter.gateway.routes import MemoryRouteStore
    from suite.specter.gateway.service import makeGatewayService

    startLogging()
    try:
        bundle = loadBundle(options["cert-dir"])
    except ConfigError as e:
        sys.stderr.write(errorLine("specter-gateway", e))
        raise SystemExit(2) from None
    config = GatewayConfig(
        apexes=options["apex"],
        advertise=options["advertise"],
        chunk=options["proxy-buffer"],
        transportBuffer=options["transport-buffer"],
    )
    r: Any = reactor
    service = makeGatewayService(
        config,
        bundle,
        MemoryRouteStore(r),
        r,
        options["data-dir"],
        [options["listen"]],
        proxyProtocol=bool(options["proxy-protocol"]),
        httpEndpoints=[options["listen-http"]] if options["listen-http"] else None,
        httpsPort=int(options["advertise"].rsplit(":", 1)[1]),
        udpBinds=udp,
    )
    try:
        service.startService()
    except CannotListenError as e:
        where = f"{e.interface or '*'}:{e.port}"
        sys.stderr.write(
            errorLine("specter-gateway", ConfigError(f"cannot listen on {where}: {e.socketError}"))
        )
        raise SystemExit(1) from None
    r.addSystemEventTrigger("before", "shutdown", service.stopService)
    r.run()


if __name__ == "__main__":
    main()
