"""
Peers added with C{POST /peers}, kept beside a file store (C{PATH.peers})
so that they come back after a restart, as peers from the configuration
file do.  The file is JSON (mode 0600: it holds each peer's auth_token),
replaced whole at every change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from suite.daemon import ConfigError
from suite.spacecomms.config import PeerConfig, _Checker, parsePeer

__all__ = ["PeerFile", "MAX_PEER_FILE_BYTES"]

#: Largest peer file read back.
MAX_PEER_FILE_BYTES = 4 * 1024 * 1024

log = Logger(namespace="spacecomms.peers")


def _entry(peer: PeerConfig) -> dict[str, Any]:
    pol = peer.policies
    return {
        "peer_id": peer.id,
        "address": peer.address,
        "auth_token": peer.auth_token,
        "policies": asdict(pol),
    }


class PeerFile:
    """
    The API's peers of one node, in the file C{path}.
    """

    def __init__(self, path: str, reactor: Any = None) -> None:
        self.path = path
        self.reactor = reactor

    def load(self) -> list[PeerConfig]:
        """
        The peers the file holds (none when it does not exist).

        @raise ConfigError: naming the file and what is wrong with it.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_PEER_FILE_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise ConfigError(f"storage.file_path: cannot read {self.path} ({e.strerror or e})") from None
        fix = "fix or remove it (it holds the peers added with POST /peers)"
        if len(data) > MAX_PEER_FILE_BYTES:
            raise ConfigError(f"{self.path}: larger than {MAX_PEER_FILE_BYTES} bytes; {fix}")
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise ConfigError(f"{self.path}: not valid JSON ({str(e)[:120]}); {fix}") from None
        if not isinstance(doc, list):
            raise ConfigError(f"{self.path}: not a JSON list of peers; {fix}")
        c = _Checker({})
        peers = [p for i, raw in enumerate(doc) if (p := parsePeer(c, raw, f"{self.path}[{i}]")) is not None]
        if c.errors:
            raise ConfigError(f"{'; '.join(c.errors)}; {fix}")
        return peers

    def save(self, peers: Iterable[PeerConfig]) -> Deferred[None] | None:
        """
        Replace the file with C{peers} (written and renamed at once; made
        durable by an fsync in a thread, whose Deferred is returned).

        @raise OSError: when it cannot be written (the old file is kept).
        """
        data = json.dumps([_entry(p) for p in peers], indent=1).encode() + b"\n"
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        return self._sync()

    def _sync(self) -> Deferred[None] | None:
        if self.reactor is None or not hasattr(self.reactor, "getThreadPool"):
            return None
        path = self.path

        def sync() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            parent = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
            try:
                os.fsync(parent)
            finally:
                os.close(parent)

        d: Deferred[None] = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), sync)
        d.addErrback(lambda f: log.failure("cannot sync {path}", f, path=path))
        return d
