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

__all__ = ["StorageLayout", "checkLayout", "prepareStorage", "PROBE_NAME"]

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


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def checkLayout(dataDir: str, walDir: str, snapshotDir: str) -> None:
    """
    Refuse overlapping directories: the WAL and snapshot directories each
    hold one directory per partition (and the data directory C{retired/}
    and C{placement.json}), so one inside another would mix a partition's
    WAL with its snapshots, or take a directory for a partition's replica
    (the WAL and snapshot directories inside the data directory, the
    default, are fine).

    @raise ConfigError: naming both variables and paths.
    """
    paths = {
        "CEPTRA_DATA_DIR": os.path.realpath(dataDir),
        "CEPTRA_WAL_DIR": os.path.realpath(walDir),
        "CEPTRA_SNAPSHOT_DIR": os.path.realpath(snapshotDir),
    }
    for inner, outer in (
        ("CEPTRA_WAL_DIR", "CEPTRA_DATA_DIR"),
        ("CEPTRA_SNAPSHOT_DIR", "CEPTRA_DATA_DIR"),
        ("CEPTRA_SNAPSHOT_DIR", "CEPTRA_WAL_DIR"),
        ("CEPTRA_WAL_DIR", "CEPTRA_SNAPSHOT_DIR"),
        ("CEPTRA_DATA_DIR", "CEPTRA_WAL_DIR"),
        ("CEPTRA_DATA_DIR", "CEPTRA_SNAPSHOT_DIR"),
    ):
        if inner in ("CEPTRA_WAL_DIR", "CEPTRA_SNAPSHOT_DIR") and outer == "CEPTRA_DATA_DIR":
            if paths[inner] != paths[outer]:
                continue  # below the data directory: the default layout
        if _within(paths[inner], paths[outer]):
            where = "is" if paths[inner] == paths[outer] else "is inside"
            raise ConfigError(
                f"{inner}: {paths[inner]} {where} {outer} ({paths[outer]}); the data, WAL and snapshot "
                "directories must be apart (the WAL and snapshot directories may be inside the data directory)"
            )


def prepareStorage(dataDir: str, walDir: str, snapshotDir: str) -> StorageLayout:
    """
    Check the layout (L{checkLayout}), create the three directories and
    write a C{.write_probe} in each.

    @raise ConfigError: naming the variable and the path that failed.
    """
    checkLayout(dataDir, walDir, snapshotDir)
    return StorageLayout(
        _prepare(dataDir, "CEPTRA_DATA_DIR"),
        _prepare(walDir, "CEPTRA_WAL_DIR"),
        _prepare(snapshotDir, "CEPTRA_SNAPSHOT_DIR"),
    )
