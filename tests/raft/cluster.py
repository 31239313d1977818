"""
Helpers to run a local cluster of real Raft KV processes (for the
end-to-end test and bench/raft.py): certificates, argv and a client.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.endpoints import clientFromString, wrapClientTLS

from suite.raft.client import ClientSettings, RaftClient


@dataclass
class NodeSpec:
    id: str
    raftPort: int
    clientPort: int
    adminPort: int
    certDir: str
    dataDir: str
    peers: dict[str, int] = field(default_factory=dict)

    def argv(self, snapshotThreshold: int = 10000) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "suite.raft",
            "--id",
            self.id,
            "--raft-listen",
            f"tcp:{self.raftPort}:interface=127.0.0.1",
            "--client-listen",
            f"tcp:{self.clientPort}:interface=127.0.0.1",
            "--admin",
            f"tcp:{self.adminPort}:interface=127.0.0.1",
            "--cert-dir",
            self.certDir,
            "--data-dir",
            self.dataDir,
            "--snapshot-threshold",
            str(snapshotThreshold),
        ]
        for peer, port in sorted(self.peers.items()):
            args += ["--peer", f"{peer}=127.0.0.1:{port}"]
        return args


def makeCluster(base: str, size: int, freePort: Any) -> tuple[list[NodeSpec], str]:
    """
    Certificates and ports for C{size} nodes under C{base}; returns the
    specs and the client bundle directory.
    """
    from suite.pki.ca import initBundle, writeNodeCertificate

    os.makedirs(base, exist_ok=True)
    ids = [f"n{i}" for i in range(1, size + 1)]
    ports = {i: (freePort(), freePort(), freePort()) for i in ids}
    first = initBundle(os.path.join(base, "certs", ids[0]), ["127.0.0.1"], commonName=ids[0])
    for i in ids[1:]:
        writeNodeCertificate(first, os.path.join(base, "certs", i), ["127.0.0.1"], commonName=i)
    clientDir = os.path.join(base, "certs", "client")
    writeNodeCertificate(first, clientDir, ["127.0.0.1"], commonName="client")
    specs = []
    for i in ids:
        r, c, a = ports[i]
        specs.append(
            NodeSpec(
                i,
                r,
                c,
                a,
                os.path.join(base, "certs", i),
                os.path.join(base, "data", i),
                {p: ports[p][0] for p in ids if p != i},
            )
        )
    return specs, clientDir


def makeClient(reactor: Any, specs: list[NodeSpec], clientDir: str, **settings: Any) -> RaftClient:
    """
    A L{RaftClient} over mTLS to every node in C{specs}.
    """
    from suite.pki.load import loadBundle
    from suite.pki.tls import clientContextFactory

    bundle = loadBundle(clientDir)
    creator = clientContextFactory(bundle, ipAddress="127.0.0.1")

    def connect(address: str, factory: Any) -> Any:
        host, port = address.rsplit(":", 1)
        return wrapClientTLS(
            creator, clientFromString(reactor, f"tcp:host={host}:port={port}:timeout=2")
        ).connect(factory)

    servers = {s.id: f"127.0.0.1:{s.clientPort}" for s in specs}
    return RaftClient(reactor, connect, servers, ClientSettings(**settings))
