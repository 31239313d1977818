"""
A runnable replicated KV node: options, and the service tree (WAL storage,
Raft node, mTLS Raft listener, client API listener, admin site).

    python -m suite.raft --id n1 --raft-listen tcp:7001:interface=127.0.0.1 \\
        --peer n2=127.0.0.1:7002 --peer n3=127.0.0.1:7003 \\
        --client-listen tcp:7101:interface=127.0.0.1 --admin tcp:7201 \\
        --cert-dir certs/n1 --data-dir data/n1
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from suite.raft.api import clientAPIFactory
from suite.raft.embed import RaftNodeService, makeRaftNodeService
from suite.raft.kv import KeyValueStateMachine
from suite.raft.node import RaftSettings
from suite.raft.observe import RaftHealth, makeRegistry

log = Logger()


class Options(usage.Options):
    optParameters = [
        ["id", None, None, "This node's id (the common name of its certificate)."],
        ["raft-listen", None, None, "Endpoint string for the Raft listener."],
        ["client-listen", None, None, "Endpoint string for the client API."],
        ["admin", None, None, "Endpoint string for /healthz, /readyz, /metrics (loopback)."],
        ["cert-dir", None, None, "Bundle directory (ca.crt, node.crt, node.key, client-ca.crt)."],
        ["data-dir", None, "raft-data", "Root for the WAL and snapshot directories."],
        ["wal-dir", None, None, "WAL directory (default DATA_DIR/wal)."],
        ["snapshot-dir", None, None, "Snapshot directory (default DATA_DIR/snapshots)."],
        ["election-timeout-ms", None, "150", "Election timeout floor (randomised up to twice it)."],
        ["heartbeat-ms", None, "50", "Heartbeat interval."],
        ["snapshot-threshold", None, "10000", "Applied entries between snapshots."],
        [
            "coalesce-writes",
            None,
            "none",
            "Frames of one reactor turn leave in one write on: all, client, peers or none connections"
            " (TLS connections already send one record batch per turn).",
        ],
    ]
    optFlags = [
        ["insecure", None, "Plain TCP between nodes and clients (development only)."],
        [
            "join",
            None,
            "Start outside the group and wait to be added by the leader (--peer gives addresses).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["peer"] = {}

    def opt_peer(self, value: str) -> None:
        """
        A peer as ID=HOST:PORT (repeat).
        """
        name, sep, address = value.partition("=")
        if not sep or ":" not in address:
            raise usage.UsageError(f"--peer {value!r}: expected ID=HOST:PORT")
        self["peer"][name] = address

    def postOptions(self) -> None:
        for flag in ("id", "raft-listen", "client-listen"):
            if not self[flag]:
                raise usage.UsageError(f"--{flag} is required")
        if not self["insecure"] and not self["cert-dir"]:
            raise usage.UsageError("--cert-dir is required (or --insecure for development)")
        for flag in ("election-timeout-ms", "heartbeat-ms", "snapshot-threshold"):
            try:
                self[flag] = int(self[flag])
                if self[flag] <= 0:
                    raise ValueError
            except ValueError:
                raise usage.UsageError(f"--{flag} must be a positive integer, not {self[flag]!r}")
        if self["coalesce-writes"] not in ("all", "client", "peers", "none"):
            raise usage.UsageError(
                f"--coalesce-writes must be all, client, peers or none, not {self['coalesce-writes']!r}"
            )
        if self["heartbeat-ms"] * 2 > self["election-timeout-ms"]:
            raise usage.UsageError("--heartbeat-ms must be at most half of --election-timeout-ms")
        self["wal-dir"] = self["wal-dir"] or os.path.join(self["data-dir"], "wal")
        self["snapshot-dir"] = self["snapshot-dir"] or os.path.join(self["data-dir"], "snapshots")


def makeService(options: Options, reactor: Any) -> RaftNodeService:
    """
    Build the node's service tree from parsed options.
    """
    bundle = None
    if not options["insecure"]:
        from suite.pki.load import loadBundle

        bundle = loadBundle(options["cert-dir"])
    kv = KeyValueStateMachine()
    settings = RaftSettings(
        electionTimeoutMin=options["election-timeout-ms"] / 1000.0,
        electionTimeoutMax=2 * options["election-timeout-ms"] / 1000.0,
        heartbeatInterval=options["heartbeat-ms"] / 1000.0,
        snapshotThreshold=options["snapshot-threshold"],
    )
    root = makeRaftNodeService(
        options["id"],
        reactor,
        kv,
        peers=options["peer"],
        raftListen=options["raft-listen"],
        walDir=options["wal-dir"],
        snapshotDir=options["snapshot-dir"],
        bundle=bundle,
        settings=settings,
        join=bool(options["join"]),
        coalesce=options["coalesce-writes"] in ("all", "peers"),
    )
    node = root.node
    registry, latency = makeRegistry(node)
    root.listen(
        options["client-listen"],
        clientAPIFactory(node, kv, latency.observe, options["coalesce-writes"] in ("all", "client")),
        "--client-listen",
    )
    if options["admin"]:
        from suite.web.admin import makeAdminResource, makeAdminService

        resource = makeAdminResource([RaftHealth(node)], registry, forbidSecondsSuffix=True)
        makeAdminService(options["admin"], resource, reactor, flag="--admin").setServiceParent(root)
    return root
