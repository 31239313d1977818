"""
Helpers for real-process ring tests: a CA, ring processes and an RPC client.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from suite.pki.ca import initBundle, writeNodeCertificate
from suite.specter.addresses import clientEndpoint
from suite.specter.rpc import RPCClient, connectRPC
from tests.support.process import DaemonProcess, freePort, scriptArgs


def makeBundles(base: str, count: int) -> list[str]:
    """
    One CA and C{count} node bundles signed by it.
    """
    first = os.path.join(base, "cert0")
    initBundle(first, ["127.0.0.1"])
    dirs = [first]
    for i in range(1, count):
        d = os.path.join(base, f"cert{i}")
        writeNodeCertificate(first, d, ["127.0.0.1"])
        dirs.append(d)
    return dirs


class RingProcess:
    """
    One C{specter server} process on loopback.
    """

    def __init__(
        self,
        test: TestCase,
        base: str,
        name: str,
        cert: str,
        *extra: str,
        port: int | None = None,
        dataDir: str | None = None,
    ) -> None:
        self.test = test
        self.name = name
        self.port = port or freePort()
        self.rpcPort = freePort()
        self.httpPort = freePort()
        self.dataDir = dataDir or os.path.join(base, name)
        self.addr = f"127.0.0.1:{self.port}"
        self.argv = scriptArgs(
            "specter",
            "server",
            "--data",
            self.dataDir,
            "--cert",
            cert,
            "--listen-tcp",
            self.addr,
            "--advertise-addr",
            self.addr,
            *([] if "--listen-rpc" in extra else ["--listen-rpc", f"tcp://127.0.0.1:{self.rpcPort}"]),
            "--listen-internal",
            f"tcp://127.0.0.1:{self.httpPort}",
            "--stabilize-interval",
            "0.2",
            "--rpc-timeout",
            "2",
            *extra,
        )
        self.rpcEndpoint = f"tcp:host=127.0.0.1:port={self.rpcPort}"
        if "--listen-rpc" in extra:
            self.rpcEndpoint = clientEndpoint("--listen-rpc", extra[extra.index("--listen-rpc") + 1])
        self.proc = DaemonProcess(test, self.argv, name=name, stopTimeout=60)
        self.client: RPCClient | None = None

    def start(self) -> RingProcess:
        self.proc.start()
        # a ring stopping all at once has nobody to hand keys to: end it fast
        self.test.addCleanup(self.proc.kill9)
        return self

    async def ready(self) -> None:
        await self.proc.waitForHTTP(f"http://127.0.0.1:{self.httpPort}/readyz", timeout=60)

    async def rpc(self) -> RPCClient:
        if self.client is None or self.client.proto.closed:
            self.client = await connectRPC(reactor, self.rpcEndpoint)
            self.test.addCleanup(self._closeClient)
        return self.client

    def _closeClient(self) -> None:
        if self.client is not None and not self.client.proto.closed:
            self.client.close()

    async def call(self, method: str, *args: Any) -> Any:
        client = await self.rpc()
        return await client.call(method, *args)
