"""
The peer's static site (C{site/}), served over C{/goop/site/1.0.0} and by
the local viewer.

Paths are normalised and resolved inside C{site/}; dot-files, anything under
a C{lua/} folder, symlinks leading outside the site, and files over 4 MiB are
never served.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import posixpath
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

__all__ = ["resolveSitePath", "SiteFiles", "MAX_FILE_BYTES"]

MAX_FILE_BYTES = 4 * 1024 * 1024


def resolveSitePath(siteDir: str, path: str) -> str | None:
    """The real file for C{path} inside C{siteDir}, or None if not servable."""
    if not isinstance(path, str) or "\x00" in path or "\\" in path or len(path) > 1024:
        return None
    clean = posixpath.normpath("/" + path.lstrip("/")).lstrip("/")
    if clean in ("", "."):
        clean = "index.html"
    parts = clean.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    if parts[0].lower() == "lua" or any(p.lower() == "lua" for p in parts):
        return None
    root = os.path.realpath(siteDir)
    full = os.path.realpath(os.path.join(root, *parts))
    if not full.startswith(root + os.sep):
        return None
    if os.path.isdir(full):
        full = os.path.join(full, "index.html")
    if not os.path.isfile(full):
        return None
    return full


class SiteFiles:
    """Read site files off the reactor thread."""

    def __init__(self, reactor: Any, siteDir: str, pool: Any = None) -> None:
        self.reactor = reactor
        self.siteDir = siteDir
        self._pool = pool

    def read(self, path: str) -> Deferred[tuple[str, bytes] | None]:
        """Fire with (content type, bytes) or None when the path is not servable."""

        def work() -> tuple[str, bytes] | None:
            full = resolveSitePath(self.siteDir, path)
            if full is None:
                return None
            if os.path.getsize(full) > MAX_FILE_BYTES:
                return "", b""
            with open(full, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
            return ctype, data

        pool = self._pool if self._pool is not None else self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, work)

    def handle(self, peerId: str, request: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """The C{/goop/site/1.0.0} request handler: {path} -> {ok, data}."""
        d = self.read(str(request.get("path", "")))

        def answer(found: tuple[str, bytes] | None) -> dict[str, Any]:
            if found is None:
                return {"ok": False, "error": "not found"}
            ctype, data = found
            if not ctype:
                return {"ok": False, "error": f"file larger than {MAX_FILE_BYTES} bytes"}
            return {
                "ok": True,
                "data": {"content_type": ctype, "size": len(data), "body": base64.b64encode(data).decode()},
            }

        return d.addCallback(answer)
