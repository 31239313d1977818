"""
Offline tools for a node's shared WAL (run them with the node stopped):

    python -m suite.raft wal groups WAL_DIR
    python -m suite.raft wal export WAL_DIR GROUP DEST_DIR
    python -m suite.raft wal drop WAL_DIR GROUP

C{groups} lists the groups the log holds (term, vote, compaction point, last
index).  C{export} writes one group's state as a single-group WAL in
C{DEST_DIR}; placed as C{<wal dir>/<group>/} on a node whose log holds
nothing for the group, it is taken over at start-up
(L{suite.raft.wal.SharedWAL.group} with C{importFrom}).  C{drop} forgets a
group's state (the replica must not come back with it: see the disaster
recovery procedures).
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from suite.fileutil import DirectoryLocked, lockDirectory
from suite.raft.segments import (
    DROP,
    CorruptLog,
    GroupLog,
    SegmentWriter,
    checkpointRecord,
    encodeRecord,
    groupHeader,
)

__all__ = ["main"]

USAGE = """usage: python -m suite.raft wal groups WAL_DIR
       python -m suite.raft wal export WAL_DIR GROUP DEST_DIR
       python -m suite.raft wal drop WAL_DIR GROUP
(run with the node stopped)
"""


def readGroups(walDir: str) -> dict[str, GroupLog]:
    """
    Every group's state in the log at C{walDir}, read without writing.
    """
    if not os.path.isdir(walDir):
        raise CorruptLog(f"{walDir} is not a directory")
    return SegmentWriter(walDir, 0).recover(repair=False)


def describe(groups: dict[str, GroupLog]) -> list[str]:
    lines = []
    for name, g in sorted(groups.items()):
        r = g.recovered
        last = r.entries[-1].index if r.entries else g.base
        lines.append(
            f"{name or '(unnamed)'}\tterm={r.term}\tvote={r.votedFor or '-'}\t"
            f"compacted_to={g.base}\tlast_index={last}"
        )
    return lines


def _stopped(walDir: str) -> BinaryIO:
    """
    The lock of C{walDir}, which a running node holds (L{lockDirectory}).

    @raise CorruptLog: a node runs on it.
    """
    if not os.path.isdir(walDir):
        raise CorruptLog(f"{walDir} is not a directory")
    try:
        return lockDirectory(walDir)
    except DirectoryLocked as e:
        raise CorruptLog(f"{e}: stop the node first") from None


def export(walDir: str, group: str, dest: str) -> str:
    """
    Write C{group}'s state as a single-group WAL in C{dest} (created; must
    not hold a WAL already).  Refused while a node runs on C{walDir}.
    """
    with _stopped(walDir):
        return _export(walDir, group, dest)


def _export(walDir: str, group: str, dest: str) -> str:
    groups = readGroups(walDir)
    state = groups.get(group)
    if state is None:
        raise CorruptLog(f"the WAL in {walDir} holds no group {group!r}")
    os.makedirs(dest, exist_ok=True)
    if any(n.startswith("wal-") for n in os.listdir(dest)):
        raise CorruptLog(f"{dest} already holds a WAL")
    writer = SegmentWriter(dest, 1024 * 1024)
    writer.recover()
    writer.append(checkpointRecord("", state))
    writer.close()
    return describe({group: state})[0]


def drop(walDir: str, group: str) -> None:
    """
    Append a record that forgets C{group}.  Refused while a node runs on
    C{walDir}.
    """
    with _stopped(walDir):
        _drop(walDir, group)


def _drop(walDir: str, group: str) -> None:
    if group not in readGroups(walDir):
        raise CorruptLog(f"the WAL in {walDir} holds no group {group!r}")
    writer = SegmentWriter(walDir, 16 * 1024 * 1024)
    writer.recover()
    writer.append(encodeRecord(DROP, groupHeader(group)))
    writer.close()


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["groups"] and len(argv) == 2:
            sys.stdout.write("".join(line + "\n" for line in describe(readGroups(argv[1]))))
        elif argv[:1] == ["export"] and len(argv) == 4:
            sys.stdout.write(f"exported {export(argv[1], argv[2], argv[3])} to {argv[3]}\n")
        elif argv[:1] == ["drop"] and len(argv) == 3:
            drop(argv[1], argv[2])
            sys.stdout.write(f"dropped group {argv[2]} from {argv[1]}\n")
        else:
            sys.stderr.write(USAGE)
            return 2
    except (CorruptLog, OSError, ValueError) as e:
        sys.stderr.write(f"suite.raft wal: {e}\n")
        return 1
    return 0
