"""
The template store: C{templates_dir/<name>/manifest.json} plus files,
listed, described and downloaded as a tar.gz bundle.

Names are validated before they touch the file system; the bundle holds only
regular files found under the template directory (symlinks and anything that
resolves outside it are skipped), so no path traversal can reach other files.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

from suite.goop.jsonutil import parseJSON

__all__ = ["TemplateStore", "validName", "MAX_BUNDLE_BYTES"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_MANIFEST_BYTES = 64 * 1024
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


def validName(name: str) -> bool:
    return bool(NAME.match(name)) and ".." not in name


class TemplateStore:
    """Read-only access to a templates directory."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.realpath(directory)

    def _dir(self, name: str) -> str | None:
        if not validName(name):
            return None
        path = os.path.join(self.directory, name)
        real = os.path.realpath(path)
        if os.path.dirname(real) != self.directory or not os.path.isdir(real):
            return None
        return real

    def manifest(self, name: str) -> dict[str, Any] | None:
        """The template's manifest (name filled in), or None."""
        d = self._dir(name)
        if d is None:
            return None
        path = os.path.join(d, "manifest.json")
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
            doc = parseJSON(raw) if len(raw) <= MAX_MANIFEST_BYTES else None
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        doc.setdefault("name", name)
        return doc

    def list(self) -> list[dict[str, Any]]:
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        out = []
        for n in names:
            m = self.manifest(n)
            if m is not None:
                out.append({"name": n, "title": m.get("title", n), "description": m.get("description", "")})
        return out

    def bundle(self, name: str) -> bytes | None:
        """Build the tar.gz for C{name} (blocking: call it from a thread)."""
        root = self._dir(name)
        # Only a template (a directory with a manifest, as listed) is served.
        if root is None or self.manifest(name) is None:
            return None
        # Imported here: a hub that never serves a bundle does not load tarfile.
        import tarfile

        buf = io.BytesIO()
        total = 0
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
                for fn in sorted(filenames):
                    full = os.path.join(dirpath, fn)
                    if os.path.islink(full) or not os.path.isfile(full):
                        continue
                    real = os.path.realpath(full)
                    if not real.startswith(root + os.sep):
                        continue
                    total += os.path.getsize(real)
                    if total > MAX_BUNDLE_BYTES:
                        raise ValueError("template larger than the bundle limit")
                    arc = os.path.relpath(real, root)
                    info = tar.gettarinfo(real, arcname=f"{name}/{arc}")
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with open(real, "rb") as f:
                        tar.addfile(info, f)
        return buf.getvalue()
