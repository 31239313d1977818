"""
Helpers for real-process ring tests: a CA, ring processes and an RPC client.
"""

from __future__ import annotations

import os
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from suite.pki.ca import initBundle, writeNodeCertificate
from suite.specter.addresses import clientEndpoint
from suite.specter.rpc import RPCClient, connectRPC
from suite.specter.rpcauth import TOKEN_FILE, readTokenFile
from tests.support.process import DaemonProcess, freePort, scriptArgs

#: The C{/_internal} credentials of L{RingProcess.withInternalAuth}.
INTERNAL_AUTH = ("ops", "ring-test")


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

    def withInternalAuth(self) -> RingProcess:
        """
        Serve C{/_internal} with L{INTERNAL_AUTH} (for L{chordStats}).
        """
        self.proc.env.update(INTERNAL_USER=INTERNAL_AUTH[0], INTERNAL_PASS=INTERNAL_AUTH[1])
        return self

    def start(self) -> RingProcess:
        self.proc.start()
        # a ring stopping all at once has nobody to hand keys to: end it fast
        self.test.addCleanup(self.proc.kill9)
        return self

    async def ready(self) -> None:
        await self.proc.waitForHTTP(f"http://127.0.0.1:{self.httpPort}/readyz", timeout=60)

    async def rpc(self) -> RPCClient:
        if self.client is None or self.client.proto.closed:
            self.client = await connectRPC(reactor, self.rpcEndpoint, self.rpcToken())
            self.test.addCleanup(self._closeClient)
        return self.client

    def rpcToken(self) -> bytes:
        """
        The node's RPC token (its data directory's C{rpc.token}).
        """
        return readTokenFile("--data", os.path.join(self.dataDir, TOKEN_FILE))

    def _closeClient(self) -> None:
        if self.client is not None and not self.client.proto.closed:
            self.client.close()

    async def call(self, method: str, *args: Any) -> Any:
        client = await self.rpc()
        return await client.call(method, *args)


async def chordStats(p: RingProcess) -> Any:
    """
    C{p}'s C{/_internal/chord/stats}.
    """
    r = await treq.get(
        f"http://127.0.0.1:{p.httpPort}/_internal/chord/stats",
        auth=INTERNAL_AUTH,
        persistent=False,
        timeout=5,
    )
    return await r.json()


async def waitOneRing(ring: list[RingProcess], timeout: float = 60) -> None:
    """
    Wait until the processes' stats agree on one ring: every vnode serves
    and its first successor is the next vnode of all of them, in ring order.
    """

    async def agree() -> bool:
        everyone = [await chordStats(p) for p in ring]
        vnodes = sorted(
            ((int(v["id"], 16), f"{s['addr']}#{v['index']}") for s in everyone for v in s["vnodes"]),
        )
        nextOf = {vnodes[i][1]: vnodes[(i + 1) % len(vnodes)] for i in range(len(vnodes))}
        for s in everyone:
            for v in s["vnodes"]:
                if not v["serving"] or not v["successors"]:
                    return False
                want = nextOf[f"{s['addr']}#{v['index']}"]
                if v["successors"][0] != f"{want[1]}@{want[0]:016x}":
                    return False
        return True

    await ring[0].proc.waitFor(agree, "one ring agreed by every process", timeout=timeout, interval=0.5)
