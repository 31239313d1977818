"""
Small helpers shared by the gateway tests.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from suite.pki.ca import initBundle, writeClientCertificate
from suite.specter.gateway.core import Gateway, GatewayConfig, GatewayLink
from suite.specter.gateway.routes import MemoryRouteStore
from tests.support.process import DaemonProcess, freePort

PY = sys.executable
APEX = "example.test"


def linkedGateway(host: str) -> tuple[Clock, Gateway, GatewayLink, StringTransport]:
    """
    A gateway for the apex C{example.test} on a fake clock, with one tunnel
    link (owner C{owner}, its wire a L{StringTransport}) registered for
    C{host}: the clock, the gateway, the link and the wire.
    """
    clock = Clock()
    gateway = Gateway(GatewayConfig(apexes=[APEX], advertise="127.0.0.1:443"), MemoryRouteStore(clock), clock)
    link = GatewayLink(gateway, "owner")
    wire = StringTransport()
    link.makeConnection(wire)
    gateway.registry.add(host, link)
    return clock, gateway, link, wire


def listenLocal(factory: Any) -> tuple[Any, int]:
    """
    Listen on an OS-chosen loopback port; return the port object and number.
    """
    from twisted.internet import reactor

    port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return port, int(port.getHost().port)


async def curlTLS(
    host: str, port: int, cacert: str, path: str, *flags: str, maxTime: float = 10
) -> tuple[str, str, int]:
    """
    C{curl https://HOST:PORT/PATH} on loopback (C{--resolve}), trusting
    C{cacert}, with C{flags} before the URL: its output, error output and
    exit code.
    """
    out, err, code = await getProcessOutputAndValue(
        "curl",
        [
            "-sS",
            "--max-time",
            f"{maxTime:g}",
            "--cacert",
            cacert,
            "--resolve",
            f"{host}:{port}:127.0.0.1",
            *flags,
            f"https://{host}:{port}{path}",
        ],
        env=os.environ,
    )
    return out.decode(), err.decode(), code


class GatewayHarness:
    """
    A CA, a gateway process and helpers for one test.
    """

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.base = os.path.abspath(test.mktemp())
        os.makedirs(self.base)
        self.certs = os.path.join(self.base, "certs")
        bundle = initBundle(self.certs, ["127.0.0.1"])
        self.alice = os.path.join(self.base, "alice")
        writeClientCertificate(bundle, "alice", self.alice)
        self.port = freePort()
        self.data = os.path.join(self.base, "data")
        self.cacert = os.path.join(self.data, "gateway", "selfsigned.crt")

    async def start(self, *extra: str) -> None:
        argv = [
            PY,
            "-m",
            "suite.specter.gateway",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--cert-dir",
            self.certs,
            "--apex",
            APEX,
            "--data-dir",
            self.data,
            *extra,
        ]
        self.gateway = DaemonProcess(self.test, argv, name="gateway")
        self.gateway.start()
        await self.gateway.waitForPort(self.port)

    def clientArgs(self, *args: str, identity: str | None = None) -> list[str]:
        """
        The arguments (after the interpreter) of C{specter client ARGS}
        against the gateway with C{identity} (alice's by default).
        """
        return [
            "-m",
            "suite.specter.client",
            "--server",
            f"127.0.0.1:{self.port}",
            "--cert-dir",
            identity or self.alice,
            *args,
        ]

    def client(self, *args: str, identity: str | None = None, name: str = "client") -> DaemonProcess:
        return DaemonProcess(self.test, [PY, *self.clientArgs(*args, identity=identity)], name=name).start()

    def foreignClient(self, name: str = "mallory") -> str:
        """
        A client certificate directory for C{name} from another CA; it
        trusts the gateway's CA, so only the gateway's own check can refuse
        it.
        """
        other = initBundle(os.path.join(self.base, "other"), ["127.0.0.1"])
        directory = os.path.join(self.base, name)
        writeClientCertificate(other, name, directory)
        with (
            open(os.path.join(self.certs, "ca.crt"), "rb") as f,
            open(os.path.join(directory, "ca.crt"), "wb") as g,
        ):
            g.write(f.read())
        return directory

    async def runClient(self, *args: str, identity: str | None = None) -> tuple[bytes, bytes, int]:
        """
        Run C{specter client ARGS} against the gateway with C{identity}
        (alice's by default) to its end: its output, error output and code.
        """
        out, err, code = await getProcessOutputAndValue(
            PY, self.clientArgs(*args, identity=identity), env=os.environ
        )
        return out, err, code

    async def tunnel(self, target: str) -> tuple[DaemonProcess, str]:
        proc = self.client("tunnel", "--target", target, name=f"tunnel-{freePort()}")
        match = await proc.waitForLog(r"tunnel (\S+) linked through")
        return proc, match.group(1)

    async def curl(self, host: str, *extra: str) -> tuple[str, str, int]:
        return await curlTLS(
            host, self.port, self.cacert, "/path?q=1", "-w", "\n%{http_code} %{http_version}", *extra
        )
