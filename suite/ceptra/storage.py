"""
The node's storage layout: data root, WAL and snapshot directories, each
created at start-up and proven writable with a C{.write_probe} file.

This runs in C{makeService}, before the reactor starts, so its blocking
file-system calls never stall the reactor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from suite.daemon import ConfigError

__all__ = ["StorageLayout", "prepareStorage", "PROBE_NAME"]

PROBE_NAME = ".write_probe"


@dataclass(frozen=True)
class StorageLayout:
    """
    Absolute paths of the node's directories.
    """

    dataDir: str
    walDir: str
    snapshotDir: str


def _prepare(path: str, label: str) -> str:
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o750, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{label}: {path} exists and is not a directory") from None
    except OSError as e:
        raise ConfigError(f"{label}: cannot create {path}: {e.strerror or e}") from None
    if not os.path.isdir(path):
        raise ConfigError(f"{label}: {path} exists and is not a directory")
    probe = os.path.join(path, PROBE_NAME)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ceptra write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise ConfigError(f"{label}: cannot write {probe}: {e.strerror or e}") from None
    return path


def prepareStorage(dataDir: str, walDir: str, snapshotDir: str) -> StorageLayout:
    """
    Create the three directories and write a C{.write_probe} in each.

    @raise ConfigError: naming the variable and the path that failed.
    """
    return StorageLayout(
        _prepare(dataDir, "CEPTRA_DATA_DIR"),
        _prepare(walDir, "CEPTRA_WAL_DIR"),
        _prepare(snapshotDir, "CEPTRA_SNAPSHOT_DIR"),
    )
