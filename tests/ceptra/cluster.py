"""
A local CEPtra cluster for end-to-end tests and bench/ceptra.py: a CA,
node identities with SPIFFE IDs, a control-plane state file, and the
environment and argv of each process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.clustor.certs import CertAuthority, Identity

TRUST_DOMAIN = "example.org"
CLIENT_SPIFFE = "spiffe://ops.example/client"


def nodeSpiffe(name: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ceptra/{name}"


@dataclass
class CeptraCluster:
    base: str
    ca: CertAuthority
    names: list[str]
    adminPorts: dict[str, int]
    raftPorts: dict[str, int]
    cpPort: int
    identities: dict[str, Identity]
    cp: Identity
    client: Identity
    placement: dict[str, list[str]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)

    @property
    def statePath(self) -> str:
        return os.path.join(self.base, "state.json")

    def writeState(self, placement: dict[str, list[str]] | None = None, **extra: Any) -> str:
        """
        Write the control plane's state file (JSON) for C{placement}; a
        partition whose replicas change gets the next placement epoch, as an
        operator raises it.
        """
        if placement is not None:
            for p, replicas in placement.items():
                if p not in self.epochs:
                    self.epochs[p] = 1
                elif self.placement.get(p) != replicas:
                    self.epochs[p] += 1
            self.placement = placement
        state = {
            "nodes": {
                n: {
                    "raft": f"127.0.0.1:{self.raftPorts[n]}",
                    "admin": f"127.0.0.1:{self.adminPorts[n]}",
                    "spiffe": nodeSpiffe(n),
                }
                for n in self.names
            },
            "partitions": [
                {"id": p, "replicas": r, "epoch": self.epochs[p]} for p, r in sorted(self.placement.items())
            ],
            "features": {},
            "warmup": {p: {"ready": True, "progress": 1.0} for p in self.placement},
            "activation": {"barriers": []},
        }
        state.update(extra)
        tmp = self.statePath + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.statePath)
        return self.statePath

    def cpArgs(self) -> list[str]:
        return [
            "clustor-cp",
            "--state",
            self.statePath,
            "--listen",
            f"tcp:{self.cpPort}:interface=127.0.0.1",
            "--tls-identity-cert",
            self.cp.cert,
            "--tls-identity-key",
            self.cp.key,
            "--tls-trust-bundle",
            self.cp.trust,
            "--client-spiffe",
            f"spiffe://{TRUST_DOMAIN}",
            "--reload-interval",
            "0.5",
        ]

    def env(self, name: str, **extra: str) -> dict[str, str]:
        identity = self.identities[name]
        env = {
            "CEPTRA_CONTROL_PLANE_URL": f"https://127.0.0.1:{self.cpPort}",
            "CEPTRA_TLS_IDENTITY_CERT": identity.cert,
            "CEPTRA_TLS_IDENTITY_KEY": identity.key,
            "CEPTRA_TLS_TRUST_BUNDLE": identity.trust,
            "CEPTRA_NODE_SPIFFE": nodeSpiffe(name),
            "CEPTRA_DATA_DIR": os.path.join(self.base, "data", name),
            "CEPTRA_ADMIN_BIND": f"127.0.0.1:{self.adminPorts[name]}",
            "CEPTRA_RAFT_BIND": f"127.0.0.1:{self.raftPorts[name]}",
            "CEPTRA_ADMIN_ALLOWED_SPIFFE": CLIENT_SPIFFE,
            "CEPTRA_FEED_INTERVAL_MS": "200",
            "CEPTRA_RAFT_ELECTION_TIMEOUT_MS": "400",
            "CEPTRA_RAFT_HEARTBEAT_MS": "80",
            "CEPTRA_RAFT_CLIENT_TIMEOUT_MS": "3000",
            "CEPTRA_RAFT_CLIENT_RETRY_ATTEMPTS": "6",
            "CEPTRA_RAFT_CLIENT_BACKOFF_MS": "100",
        }
        env.update(extra)
        return env

    def admin(self, name: str) -> str:
        return f"https://127.0.0.1:{self.adminPorts[name]}"


def makeCluster(
    base: str, names: list[str], placement: dict[str, list[str]], freePort: Callable[[], int]
) -> CeptraCluster:
    ca = CertAuthority(os.path.join(base, "pki"))
    identities = {n: ca.identity(n, nodeSpiffe(n)) for n in names}
    cluster = CeptraCluster(
        base,
        ca,
        list(names),
        {n: freePort() for n in names},
        {n: freePort() for n in names},
        freePort(),
        identities,
        ca.identity("control-plane", f"spiffe://{TRUST_DOMAIN}/clustor-cp"),
        ca.identity("client", CLIENT_SPIFFE),
    )
    cluster.writeState(placement)
    return cluster


def clientAgent(identity: Identity, reactor: Any, persistent: bool = True) -> Any:
    """
    A twisted.web Agent presenting C{identity} over mTLS.
    """
    from twisted.web.client import Agent, HTTPConnectionPool

    from suite.ceptra.service import MTLSPolicy
    from suite.pki.load import loadIdentity

    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool.maxPersistentPerHost = 8
    return Agent(
        reactor,
        contextFactory=MTLSPolicy(loadIdentity(identity.cert, identity.key, identity.trust)),
        pool=pool,
    )


RULES = {
    "version": 1,
    "settings": {"watermark_delay_ms": 60_000, "allowed_lateness_ms": 60_000},
    "rules": [
        {
            "name": "per_key",
            "type": "aggregate",
            "group_by": ["key"],
            "window": {"kind": "tumbling", "size_ms": 3_600_000},
            "aggregate": {"fn": "count"},
        },
        {
            "name": "spend",
            "type": "aggregate",
            "window": {"kind": "sliding", "size_ms": 1000},
            "aggregate": {"fn": "sum", "field": "amount"},
        },
    ],
}
