"""
What the demo starts: one L{DemoDaemon} per daemon, with its arguments,
environment and the URLs printed for the operator, plus the files each needs
(a private CA, configuration files) written under the demo directory.

Everything binds to 127.0.0.1, except Goop's P2P port (goop.json's
C{p2p.listen_port} has no bind address: it listens on every interface, and
its streams are authenticated and encrypted).  Ports are fixed so the printed
URLs stay the same from one run to the next; C{--port-base} moves the whole
set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from suite.pki.ca import initBundle

DEMO_SPIFFE = "spiffe://suite.local/ceptra/demo"


@dataclass(frozen=True)
class DemoDaemon:
    """
    One process of the demo; C{argv[0]} is a console script of the virtualenv.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    urls: list[tuple[str, str]] = field(default_factory=list)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def ensureCA(base: str) -> str:
    """
    Create the demo's private CA bundle once; return its directory.
    """
    ca = os.path.join(base, "ca")
    if not os.path.exists(os.path.join(ca, "ca.crt")):
        initBundle(ca, ["127.0.0.1", "localhost"], spiffeIds=[DEMO_SPIFFE])
    return ca


SPACECOMMS_CONFIG = """\
# Written by the demo: one SpaceComms node on loopback, file store under the demo directory.
node:
  id: "demo-1"
  name: "Demo node"
server:
  host: "127.0.0.1"
  port: {api}
  peer_host: "127.0.0.1"
  peer_port: {peer}
  tls:
    enabled: false
api:
  auth:
    enabled: true
    tokens:
      - id: "admin"
        secret: "demo-admin-token"
        permissions: ["read", "write", "admin"]
      - id: "readonly"
        secret: "demo-readonly-token"
        permissions: ["read"]
storage:
  type: "file"
  file_path: "{store}"
logging:
  level: "info"
  format: "json"
  output: "stderr"
protocol:
  heartbeat_interval_seconds: 5
  session_timeout_seconds: 20
"""

CLUSTOR_STATE = """\
# Written by the demo: one CEPtra node hosting two partitions.
nodes:
  demo: {{raft: "127.0.0.1:{raft}", admin: "127.0.0.1:{admin}", spiffe: "{spiffe}"}}
partitions:
  - id: p0
    replicas: [demo]
  - id: p1
    replicas: [demo]
features:
  cep.sliding_windows: true
warmup:
  p0: {{ready: true, progress: 1.0}}
  p1: {{ready: true, progress: 1.0}}
activation:
  barriers: []
"""


def plan(base: str, portBase: int = 0) -> list[DemoDaemon]:
    """
    The daemons of the demo, with state under C{base}; every port is offset
    by C{portBase}.
    """

    def port(n: int) -> int:
        return n + portBase

    ca = ensureCA(base)
    daemons: list[DemoDaemon] = []

    # Specter: a one-process ring (5 vnodes) with its KV RPC and internal pages.
    daemons.append(
        DemoDaemon(
            "specter",
            [
                "specter",
                "server",
                "--data-dir",
                os.path.join(base, "specter"),
                "--cert-dir",
                ca,
                "--listen-tcp",
                f"127.0.0.1:{port(7440)}",
                "--listen-rpc",
                f"tcp://127.0.0.1:{port(11180)}",
                "--listen-internal",
                f"tcp://127.0.0.1:{port(9990)}",
            ],
            env={"INTERNAL_USER": "demo", "INTERNAL_PASS": "demo"},
            urls=[
                ("readiness", f"http://127.0.0.1:{port(9990)}/readyz"),
                ("ring (demo/demo)", f"http://127.0.0.1:{port(9990)}/_internal/chord/graph"),
                ("KV RPC", f"tcp://127.0.0.1:{port(11180)}  (specter kv --rpc ... put k v)"),
            ],
        )
    )

    # SpaceComms: one node with a file store.
    scConfig = os.path.join(base, "spacecomms", "config.yaml")
    _write(
        scConfig,
        SPACECOMMS_CONFIG.format(
            api=port(8080), peer=port(8443), store=os.path.join(base, "spacecomms", "store")
        ),
    )
    daemons.append(
        DemoDaemon(
            "spacecomms",
            ["spacecomms", "start", "--config", scConfig],
            urls=[
                ("health", f"http://127.0.0.1:{port(8080)}/health"),
                ("API (demo-admin-token)", f"http://127.0.0.1:{port(8080)}/openapi.json"),
            ],
        )
    )

    # Clustor control plane and one CEPtra node following it over mTLS.
    state = os.path.join(base, "clustor", "state.yaml")
    _write(state, CLUSTOR_STATE.format(raft=port(26021), admin=port(26020), spiffe=DEMO_SPIFFE))
    daemons.append(
        DemoDaemon(
            "clustor-cp",
            [
                "clustor-cp",
                "--state",
                state,
                "--listen",
                f"tcp:{port(26010)}:interface=127.0.0.1",
                "--tls-identity-cert",
                os.path.join(ca, "node.crt"),
                "--tls-identity-key",
                os.path.join(ca, "node.key"),
                "--tls-trust-bundle",
                os.path.join(ca, "ca.crt"),
            ],
            urls=[("routing feed (mTLS)", f"https://127.0.0.1:{port(26010)}/routing")],
        )
    )
    daemons.append(
        DemoDaemon(
            "ceptra",
            ["ceptra"],
            env={
                "CEPTRA_CONTROL_PLANE_URL": f"https://127.0.0.1:{port(26010)}",
                "CEPTRA_TLS_IDENTITY_CERT": os.path.join(ca, "node.crt"),
                "CEPTRA_TLS_IDENTITY_KEY": os.path.join(ca, "node.key"),
                "CEPTRA_TLS_TRUST_BUNDLE": os.path.join(ca, "ca.crt"),
                "CEPTRA_NODE_SPIFFE": DEMO_SPIFFE,
                "CEPTRA_ADMIN_BIND": f"127.0.0.1:{port(26020)}",
                "CEPTRA_RAFT_BIND": f"127.0.0.1:{port(26021)}",
                "CEPTRA_ADMIN_TLS": "off",
                "CEPTRA_DATA_DIR": os.path.join(base, "ceptra"),
            },
            urls=[
                ("readiness", f"http://127.0.0.1:{port(26020)}/readyz"),
                ("metrics", f"http://127.0.0.1:{port(26020)}/metrics"),
            ],
        )
    )

    # Constellation: the Traefik HTTP provider.
    cbase = os.path.join(base, "constellation")
    for sub in ("volumes", "secrets", "data"):
        os.makedirs(os.path.join(cbase, sub), exist_ok=True)
    daemons.append(
        DemoDaemon(
            "constellation",
            [
                "constellation",
                "--http-provider",
                f"tcp:{port(8081)}:interface=127.0.0.1",
                "--bind-addr",
                "127.0.0.1",
                "--bind-port",
                str(port(7946)),
                "--raft-port",
                str(port(8300)),
                # a one-node demo on loopback: never join this host's tailnet
                "--discover",
                "none",
            ],
            env={
                "TS_HOSTNAME": "demo-node",
                "DOMAIN": "demo.localhost",
                "PUBLIC_IP": "127.0.0.1",
                "CONFIG_PATH": os.path.join(cbase, "volumes"),
                "SECRETS_PATH": os.path.join(cbase, "secrets"),
                "DATA_DIR": os.path.join(cbase, "data"),
            },
            urls=[("Traefik routers", f"http://127.0.0.1:{port(8081)}/api/http/routers")],
        )
    )

    # Goop2: a rendezvous hub and one peer publishing to it.
    hub = os.path.join(base, "goop", "hub")
    peer = os.path.join(base, "goop", "peer")
    hubConfig = {
        "profile": {"label": "Demo rendezvous", "email": ""},
        "presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": port(8787)},
        "viewer": {"http_addr": f"127.0.0.1:{port(9090)}"},
    }
    peerConfig = {
        "profile": {"label": "Demo peer", "email": ""},
        "p2p": {"listen_port": port(4001), "mdns_tag": ""},
        "presence": {
            "rendezvous_wan": f"http://127.0.0.1:{port(8787)}",
            "heartbeat_seconds": 10,
            "ttl_seconds": 60,
        },
        "viewer": {"http_addr": f"127.0.0.1:{port(8088)}"},
    }
    # Rewritten on every start, so a new --port-base reaches Goop too.
    for directory, config in ((hub, hubConfig), (peer, peerConfig)):
        _write(os.path.join(directory, "goop.json"), json.dumps(config, indent=2) + "\n")
    daemons.append(
        DemoDaemon(
            "goop-hub",
            ["goop2", "rendezvous", hub],
            urls=[("dashboard", f"http://127.0.0.1:{port(8787)}/")],
        )
    )
    daemons.append(
        DemoDaemon(
            "goop-peer",
            ["goop2", "peer", peer],
            urls=[("viewer", f"http://127.0.0.1:{port(8088)}/")],
        )
    )
    return daemons
