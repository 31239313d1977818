"""
Starting real constellation agents on loopback, shared by the agent's
process tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from tests.support.process import DaemonProcess, freePort, scriptArgs


def agentArgs(
    http: int,
    gossip: int,
    raft: int,
    *,
    profile: str | None = "local",
    extra: Sequence[str] = (),
    join: Sequence[str] = (),
    bind: str | None = "127.0.0.1",
) -> list[str]:
    """
    The agent's arguments for a Traefik provider on C{127.0.0.1:http},
    gossip on C{bind:gossip} (no C{--bind-addr} when C{bind} is None) and
    Raft on C{raft}; then C{extra}, then C{--join} of C{join} (C{host:port}
    each) when there are any.
    """
    args = ["--http-provider", f"tcp:{http}:interface=127.0.0.1"]
    if bind is not None:
        args += ["--bind-addr", bind]
    args += [
        "--bind-port",
        str(gossip),
        "--raft-port",
        str(raft),
    ]
    if profile is not None:
        args += ["--gossip-profile", profile]
    args += list(extra)
    if join:
        args += ["--join", ",".join(join)]
    return args


def dockerArgs(endpoint: str, node: str, interval: float | None = None) -> list[str]:
    """
    The arguments of an agent watching the containers labelled
    C{constellation.node=node} on the Docker engine at C{endpoint}, routing
    them on the C{web} entry point without certificates.
    """
    args = ["--docker", endpoint, "--docker-label", f"constellation.node={node}"]
    if interval is not None:
        args += ["--docker-interval", f"{interval:g}"]
    return args + ["--entrypoints", "web", "--cert-resolver", "none"]


@dataclass
class Agent:
    """
    One agent process: its Traefik provider's base URL, gossip port and
    node name, and how to start it again.
    """

    proc: DaemonProcess
    url: str
    gossip: int
    name: str
    argv: list[str]
    env: dict[str, str]

    def restart(self, test: TestCase) -> None:
        """Start the agent again, same arguments and environment."""
        self.proc = DaemonProcess(test, self.argv, env=self.env, name=self.name + "-2").start()

    async def state(self) -> Any:
        """The agent's C{/api/state}."""
        r = await treq.get(f"{self.url}/api/state", timeout=2, persistent=False)
        return json.loads(await r.content())


def startAgent(
    test: TestCase,
    name: str,
    *,
    http: int | None = None,
    gossip: int | None = None,
    raft: int | None = None,
    profile: str | None = "local",
    extra: Sequence[str] = (),
    join: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    procName: str | None = None,
    bind: str | None = "127.0.0.1",
) -> Agent:
    """
    Start an agent for node C{name} (C{TS_HOSTNAME}) with its own
    C{DATA_DIR}, no public-address lookup, no tailscaled and C{env} on
    top; ports the OS chose unless given.
    """
    http = freePort() if http is None else http
    gossip = freePort() if gossip is None else gossip
    raft = freePort() if raft is None else raft
    environ = {
        "TS_HOSTNAME": name,
        "DATA_DIR": test.mktemp(),
        "CONSTELLATION_PUBLIC_IP_SOURCES": "none",
        # Tailscale discovery stays on, but never reads the host's own tailscaled.
        "CONSTELLATION_TAILSCALE_SOCKET": test.mktemp(),
    }
    environ.update(env or {})
    argv = scriptArgs(
        "constellation", *agentArgs(http, gossip, raft, profile=profile, extra=extra, join=join, bind=bind)
    )
    proc = DaemonProcess(test, argv, env=environ, name=procName or name).start()
    return Agent(proc, f"http://127.0.0.1:{http}", gossip, name, argv, environ)
