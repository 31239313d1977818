"""
twistd plugin entry for Goop2: C{twistd goop peer DIR} and
C{twistd goop rendezvous DIR}.

All configuration is read from C{DIR/goop.json} (created with defaults on
first start); the few flags here only tune the hub's abuse limits.
"""

from __future__ import annotations

import math
import os
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger, globalLogPublisher
from twisted.python import usage

from suite.daemon import ConfigError, DaemonOptions, attachCommon, exitOnConfigError, withSuiteOptions

__all__ = ["Options", "makeService", "PeerOptions", "RendezvousOptions", "ManagerOptions"]

log = Logger()


class _DirOptions(usage.Options):
    def parseArgs(self, directory: str | None = None) -> None:
        if not directory:
            raise usage.UsageError("a peer directory is required")
        self["directory"] = directory

    def postOptions(self) -> None:
        # A rate with a burst below one request would refuse every publication.
        if self.get("publish-rate", 0) > 0 and self.get("publish-burst", 1) < 1:
            raise usage.UsageError("--publish-burst: must be at least 1 while --publish-rate is set")

    def getSynopsis(self) -> str:
        return super().getSynopsis() + " <peer-directory>"


def _positive(name: str) -> Any:
    def coerce(v: str) -> float:
        try:
            f = float(v)
        except ValueError:
            raise ValueError(f"--{name}: not a number: {v!r}") from None
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"--{name}: must be a finite number, not negative: {v!r}")
        return f

    return coerce


def _count(name: str, lo: int) -> Any:
    def coerce(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise ValueError(f"--{name}: not an integer: {v!r}") from None
        if not lo <= n <= 1_000_000:
            raise ValueError(f"--{name}: must be between {lo} and 1000000, got {n}")
        return n

    return coerce


HUB_PARAMETERS: list[list[Any]] = [
    [
        "max-sse-clients",
        None,
        2048,
        "Cap on concurrent /events clients (429 above it).",
        _count("max-sse-clients", 1),
    ],
    [
        "max-sse-per-ip",
        None,
        64,
        "Cap on /events clients per client address.",
        _count("max-sse-per-ip", 1),
    ],
    [
        "publish-rate",
        None,
        5.0,
        "Sustained /publish requests per second per client address (0: no limit); "
        "5/s covers 150 peers with 30 s heartbeats behind one address.",
        _positive("publish-rate"),
    ],
    [
        "publish-burst",
        None,
        20.0,
        "Burst of /publish requests allowed per client address.",
        _positive("publish-burst"),
    ],
]


class _PeerHelp(_DirOptions):
    longdesc = (
        "Runs a full peer (site, data, viewer, P2P streams, discovery) from the peer "
        "directory's goop.json. A peer whose goop.json sets presence.rendezvous_host also "
        "runs the rendezvous hub and accepts the hub's limits (see 'rendezvous --help')."
    )


class PeerOptions(_DirOptions):
    """goop peer DIR: run a full peer (site, data, viewer, P2P, discovery)."""

    # Accepted for a peer that hosts the hub, shown only by 'rendezvous --help'.
    optParameters = HUB_PARAMETERS

    def getUsage(self, width: int | None = None) -> str:
        shown = withSuiteOptions(_PeerHelp)()
        shown.parent = self.parent
        return shown.getUsage(width)


class RendezvousOptions(_DirOptions):
    """goop rendezvous DIR: run the rendezvous hub and a minimal settings viewer."""

    optParameters = HUB_PARAMETERS


class ManagerOptions(usage.Options):
    """goop2 (no arguments) / goop2 manager: the local multi-peer manager page."""

    optParameters = [
        ["peers-dir", None, "peers", "Directory holding one sub-directory per peer."],
        ["listen", None, "127.0.0.1:0", "Address of the manager page (loopback only)."],
    ]


class Options(DaemonOptions):
    """Options for twistd goop."""

    synopsis = "[options] peer|rendezvous <peer-directory>"
    subCommands = [
        ["peer", None, PeerOptions, "Run a peer from the peer directory."],
        ["rendezvous", None, RendezvousOptions, "Run the rendezvous hub of the peer directory."],
        [
            "manager",
            None,
            ManagerOptions,
            "Serve the local peer manager page: goop2 only (goop2 manager, or goop2 with no arguments), "
            "not under twistd.",
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self.subCommand is None:
            raise usage.UsageError("a subcommand is required: peer <dir> or rendezvous <dir>")


def hubKwargs(sub: Any) -> dict[str, Any]:
    return {
        "maxSSEClients": int(sub["max-sse-clients"]),
        "maxSSEPerIP": int(sub["max-sse-per-ip"]),
        "publishRate": float(sub["publish-rate"]),
        "publishBurst": float(sub["publish-burst"]),
    }


def _fileLimit(hub: bool, subOptions: Any) -> None:
    """
    Raise the open-file limit; warn when a hub's SSE cap cannot fit in it.
    """
    from suite.goop.limits import FD_HEADROOM, raiseFileLimit

    needed = int(subOptions["max-sse-clients"]) + FD_HEADROOM if hub else FD_HEADROOM
    before, after, warning = raiseFileLimit(needed)
    if after != before:
        log.info("open-file limit raised from {before} to {after}", before=before, after=after)
    if warning:
        log.warn("{warning}", warning=warning)


def _checkWritable(key: str, path: str) -> None:
    """
    Refuse at start-up (naming C{key}) a file that cannot be created or
    written, rather than failing once the reactor runs.
    """
    if os.path.isdir(path):
        raise ConfigError(f"goop.json: {key}: {path} is a directory, not a file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"goop.json: {key}: directory does not exist: {parent}")
    target = path if os.path.exists(path) else parent
    if not os.access(target, os.W_OK):
        raise ConfigError(f"goop.json: {key}: cannot write {target}")


@exitOnConfigError("goop")
def makeService(options: usage.Options, reactor: Any = None) -> MultiService:
    """Build the peer or rendezvous service tree (C{reactor} for tests)."""
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor

    from suite.goop.config import loadConfig
    from suite.goop.logbuffer import LogBuffer

    sub = options.subCommand
    if sub == "manager":
        raise ConfigError("manager: run it as 'goop2' (no arguments), not under twistd")
    subOptions = options.subOptions
    directory = os.path.abspath(subOptions["directory"])
    config = loadConfig(directory)
    if config.peerDbFile and (sub == "rendezvous" or config.rendezvousHost):
        _checkWritable("presence.peer_db_path", config.peerDbFile)
    logs = LogBuffer()
    globalLogPublisher.addObserver(logs)
    for w in config.warnings:
        log.warn("{warning}", warning=w)
    _fileLimit(sub == "rendezvous" or config.rendezvousHost or config.rendezvousOnly, subOptions)
    root = MultiService()
    namespace: dict[str, object] = {"config": config}
    if sub == "rendezvous" or config.rendezvousOnly:
        if not config.rendezvousHost:
            raise ConfigError(
                f"{directory}/goop.json: presence.rendezvous_host: must be true for rendezvous mode"
            )
        from suite.goop.peer.service import makeRendezvousOnly

        svc = makeRendezvousOnly(config, reactor, logs, **hubKwargs(subOptions))
    else:
        from suite.goop.peer.service import makePeerService

        svc = makePeerService(config, reactor, logs, **hubKwargs(subOptions))
    svc.setServiceParent(root)
    namespace["peer"] = svc
    attachCommon(root, options, namespace, reactor)
    return root
