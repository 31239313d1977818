"""
Helpers for SpaceComms tests and the benchmark: a shared CA with one
certificate per node, node configuration files, and real node processes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml
from twisted.web.http_headers import Headers

from tests.support.process import DaemonProcess, freePort, twistdArgs

ADMIN = "admin-token-0123456789"
READONLY = "readonly-token-0123456789"
PEER_TOKEN = "peer-shared-token-0123"


def makeCertificates(base: str, nodes: list[str]) -> dict[str, str]:
    """
    One CA and a certificate for 127.0.0.1 per node; returns node -> dir.
    """
    from suite.pki.ca import initBundle, writeNodeCertificate

    dirs = {}
    first = os.path.join(base, nodes[0])
    initBundle(first, ["127.0.0.1", "localhost"], commonName=nodes[0])
    dirs[nodes[0]] = first
    for name in nodes[1:]:
        d = os.path.join(base, name)
        writeNodeCertificate(first, d, ["127.0.0.1", "localhost"], commonName=name)
        dirs[name] = d
    return dirs


class NodeSpec:
    """
    Ports, paths and peers of one test node.
    """

    def __init__(self, base: str, name: str, certDir: str | None) -> None:
        self.name = name
        self.base = base
        self.apiPort = freePort()
        self.peerPort = freePort()
        self.certDir = certDir
        self.configPath = os.path.join(base, f"{name}.yaml")
        self.storePath = os.path.join(base, f"{name}.db")
        self.peers: list[dict[str, Any]] = []
        self.logLevel = "info"
        self.protocol: dict[str, Any] = {
            "heartbeat_interval_seconds": 0.5,
            "session_timeout_seconds": 3,
            "resync_grace_seconds": 5,
            "reconnect_initial_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
        }

    def addPeer(self, other: NodeSpec, **policies: Any) -> None:
        entry: dict[str, Any] = {
            "id": other.name,
            "address": f"https://127.0.0.1:{other.peerPort}",
            "auth_token": PEER_TOKEN,
        }
        if policies:
            entry["policies"] = policies
        self.peers.append(entry)

    def document(self) -> dict[str, Any]:
        tls: dict[str, Any] = {"enabled": False}
        if self.certDir:
            tls = {
                "enabled": True,
                "cert_path": os.path.join(self.certDir, "node.crt"),
                "key_path": os.path.join(self.certDir, "node.key"),
                "ca_path": os.path.join(self.certDir, "ca.crt"),
            }
        return {
            "node": {"id": self.name, "name": f"Node {self.name}"},
            "server": {
                "host": "127.0.0.1",
                "port": self.apiPort,
                "peer_host": "127.0.0.1",
                "peer_port": self.peerPort,
                "tls": tls,
            },
            "api": {
                "auth": {
                    "enabled": True,
                    "tokens": [
                        {
                            "id": "admin",
                            "secret": "${SPACECOMMS_ADMIN_TOKEN}",
                            "permissions": ["read", "write", "admin"],
                        },
                        {"id": "readonly", "secret": "${SPACECOMMS_READONLY_TOKEN}", "permissions": ["read"]},
                    ],
                }
            },
            "peers": self.peers,
            "storage": {"type": "file", "file_path": self.storePath},
            "logging": {"level": self.logLevel, "format": "json", "output": "stdout"},
            "protocol": dict(self.protocol, max_hop_count=10),
        }

    def write(self) -> None:
        with open(self.configPath, "w") as f:
            yaml.safe_dump(self.document(), f)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.apiPort}{path}"


def env() -> dict[str, str]:
    return {"SPACECOMMS_ADMIN_TOKEN": ADMIN, "SPACECOMMS_READONLY_TOKEN": READONLY}


def startNode(testCase: Any, spec: NodeSpec, extraEnv: dict[str, str] | None = None) -> DaemonProcess:
    """
    Write the node's configuration and start it under twistd.
    """
    spec.write()
    proc = DaemonProcess(
        testCase,
        twistdArgs("spacecomms", "--config", spec.configPath),
        env={**env(), **(extraEnv or {})},
        name=spec.name,
    )
    return proc.start()


def auth(token: str = ADMIN) -> Headers:
    return Headers({b"Authorization": [f"Bearer {token}".encode()]})


async def getJSON(url: str, token: str = ADMIN) -> tuple[int, Any]:
    import treq

    r = await treq.get(url, headers=auth(token), timeout=5, persistent=False)
    body = await r.content()
    try:
        return r.code, json.loads(body)
    except ValueError:
        return r.code, body


async def send(
    method: str, url: str, body: bytes = b"", token: str = ADMIN, contentType: str = "application/json"
) -> tuple[int, Any]:
    import treq

    headers = auth(token)
    headers.setRawHeaders(b"Content-Type", [contentType.encode()])
    r = await treq.request(method, url, data=body, headers=headers, timeout=5, persistent=False)
    content = await r.content()
    try:
        return r.code, json.loads(content)
    except ValueError:
        return r.code, content
