"""
Reclaiming the disk of a replica that left its group for good.

Once a configuration without this node is committed (the leader said so)
the replica's data is of no use to the group: it is moved out of the
storage directories, to C{DATA_DIR/retired/<partition>-<epoch>-<time>}
(C{wal/}: its C{WAL_DIR/<partition>} directory, C{snapshots/}: its
C{SNAPSHOT_DIR/<partition>}), and retired copies older than
C{CEPTRA_RETIRED_KEEP_S} are deleted.

Crash safety: retiring starts by writing a marker, C{WAL_DIR/<partition>/
retired} (atomically, directory fsynced), naming the destination.  A
replica with a marker is never started again; at start-up the node
finishes every retirement whose marker it finds (the same destination:
each step is idempotent).  The snapshots move first and the WAL directory,
with the marker, last, so the marker is there until everything is moved;
each rename is followed by an fsync of the directories involved.

Every function here blocks (file system): call them off the reactor
thread.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from typing import Any

from suite.fileutil import syncDirectory, writeAtomically

__all__ = [
    "MARKER",
    "RETIRED_DIR",
    "marker",
    "markRetired",
    "moveRetired",
    "parseName",
    "pendingRetirements",
    "purge",
    "retiredCopies",
]

#: The marker of a replica being retired, in its C{WAL_DIR/<partition>}.
MARKER = "retired"
#: Where retired replicas go, under the data directory.
RETIRED_DIR = "retired"


def marker(walDir: str, pid: str) -> dict[str, Any] | None:
    """
    The retirement marker of C{pid}'s replica, or C{None}.
    """
    path = os.path.join(walDir, pid, MARKER)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        # A marker that cannot be read still means: retired.
        data = {"name": f"{pid}-0-{int(os.path.getmtime(path))}", "epoch": 0}
    return data


def markRetired(walDir: str, pid: str, epoch: int, now: float) -> str:
    """
    Record (durably) that C{pid}'s replica retires after the configuration
    of placement C{epoch} removed it; return the name of its retired copy.
    An existing marker is kept (its name is returned).
    """
    existing = marker(walDir, pid)
    if existing is not None:
        return str(existing["name"])
    name = f"{pid}-{epoch}-{int(now)}"
    directory = os.path.join(walDir, pid)
    os.makedirs(directory, exist_ok=True)
    body = json.dumps({"name": name, "epoch": epoch, "at": now}).encode()
    writeAtomically(os.path.join(directory, MARKER), body, 0o600)
    return name


def _move(source: str, target: str) -> None:
    try:
        os.rename(source, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        # Another file system: copy, then delete the source (a crash in
        # between leaves both; the next attempt starts the copy over).
        if os.path.exists(target):
            shutil.rmtree(target)
        shutil.copytree(source, target)
        syncDirectory(os.path.dirname(target))
        shutil.rmtree(source)
    syncDirectory(os.path.dirname(target))
    syncDirectory(os.path.dirname(source))


def moveRetired(dataDir: str, walDir: str, snapshotDir: str, pid: str, name: str) -> str:
    """
    Move C{pid}'s replica (its snapshots, then its WAL directory with the
    marker) to C{DATA_DIR/retired/NAME}; return that path.  Idempotent.
    """
    root = os.path.join(dataDir, RETIRED_DIR)
    if not os.path.isdir(root):
        os.makedirs(root, 0o700, exist_ok=True)
        syncDirectory(dataDir)
    target = os.path.join(root, name)
    if not os.path.isdir(target):
        os.mkdir(target, 0o700)
        syncDirectory(root)
    for source, sub in ((os.path.join(snapshotDir, pid), "snapshots"), (os.path.join(walDir, pid), "wal")):
        if not os.path.exists(source):
            continue
        destination = os.path.join(target, sub)
        if os.path.exists(destination):
            # Only a copy across file systems cut short leaves both.
            shutil.rmtree(destination)
        _move(source, destination)
    return target


def pendingRetirements(walDir: str) -> list[tuple[str, str]]:
    """
    (partition, retired copy's name) of every replica whose retirement a
    crash or a failure interrupted.
    """
    out = []
    try:
        names = sorted(os.listdir(walDir))
    except FileNotFoundError:
        return []
    for pid in names:
        if os.path.isdir(os.path.join(walDir, pid)):
            found = marker(walDir, pid)
            if found is not None:
                out.append((pid, str(found["name"])))
    return out


def parseName(name: str) -> tuple[str, int, int] | None:
    """
    (partition, placement epoch, unix time) of a retired copy's name
    C{<partition>-<epoch>-<time>}, or C{None}.
    """
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def retiredCopies(dataDir: str) -> list[tuple[str, str]]:
    """
    (name, path) of every retired copy kept under C{DATA_DIR/retired/}.
    """
    root = os.path.join(dataDir, RETIRED_DIR)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [(name, os.path.join(root, name)) for name in names if os.path.isdir(os.path.join(root, name))]


def _retiredAt(root: str, name: str) -> float:
    stamp = name.rsplit("-", 1)[-1]
    if stamp.isdigit():
        return float(stamp)
    return os.path.getmtime(os.path.join(root, name))


def purge(dataDir: str, keep: float, now: float) -> list[str]:
    """
    Delete the retired copies older than C{keep} seconds; return their
    paths.
    """
    root = os.path.join(dataDir, RETIRED_DIR)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    gone = []
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path) and now - _retiredAt(root, name) > keep:
            shutil.rmtree(path)
            gone.append(path)
    if gone:
        syncDirectory(root)
    return gone
