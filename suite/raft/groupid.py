"""
Raft group ids: which group a node belongs to, so that two groups that
formed apart never mix their logs when their nodes later meet.

A group gets a random 64-bit id when it is founded (L{RaftNode.bootstrap}).
Every message carries the sender's id (L{suite.raft.messages.Message.group};
0 while it has none), and a node keeps its own durably (L{IRaftGroupStore};
on disk the file C{group} beside the incarnation file, L{FileGroupStore}).

  - A node whose id is set refuses every message carrying another id: it
    answers a request with L{GroupMismatch} (a reason, not a term; the
    sender records the refusal) and never takes the sender's term, votes
    for it or follows it.  One log line per foreign group and minute says
    so.
  - A node without an id (a fresh member being added, storage written
    before group ids) takes the id of the leader whose AppendEntries,
    heartbeat or snapshot it accepts, and acknowledges nothing before the
    id is durable.
  - A leader never adds a member known to belong to another group.

Groups that were not founded by one node (a static group whose members all
start with the same configuration, as CEPtra's partitions do; storage from
before group ids) have no founder to choose the id, and two leaders of
successive terms could each choose one.  So the id is agreed through the
log: a leader without an id writes one in the no-op entry that opens its
term: the id of the first such entry already in its log, else a new random
one.  Once that entry is committed the id is the group's: every node binds
it (records it) when its commit index passes the first entry carrying an
id, and a leader's messages carry an id only once it is bound.  Committed
entries are in every later leader's log (Leader Completeness), so every
later leader finds the same first id; a candidate id in an entry that
never commits is overwritten like the entry.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from suite.fileutil import writeAtomically
from suite.raft.interfaces import IRaftGroupStore
from suite.raft.messages import NOOP, Entry

__all__ = [
    "FILENAME",
    "FileGroupStore",
    "GroupFileError",
    "MemoryGroupStore",
    "entryGroup",
    "formatGroup",
    "newGroupId",
    "noopData",
    "parseGroup",
    "threadedGroupStore",
    "readGroupFile",
    "writeGroupFile",
]

#: The group file, beside the incarnation file.
FILENAME = "group"
_NOOP_PREFIX = b"raft-group:"


class GroupFileError(Exception):
    """
    The group file exists but cannot be read: the node must not start (it
    could otherwise join another group).
    """


def newGroupId(rng: random.Random | None = None) -> int:
    """
    A random, non-zero group id.
    """
    return (rng or random.SystemRandom()).randrange(1, 1 << 64)


def formatGroup(group: int) -> str:
    """
    C{group} as 16 hex digits (as logs, status and gossip show it); C{""}
    for none.
    """
    return f"{group:016x}" if group else ""


def parseGroup(text: str) -> int:
    """
    The inverse of L{formatGroup}: 0 for anything that is not a group id.
    """
    if len(text) != 16:
        return 0
    try:
        return int(text, 16)
    except ValueError:
        return 0


def noopData(group: int) -> bytes:
    """
    The data of a leader's opening no-op entry proposing C{group}.
    """
    return _NOOP_PREFIX + struct.pack(">Q", group)


def entryGroup(entry: Entry) -> int:
    """
    The group id a no-op entry carries, or 0.
    """
    data = entry.data
    if entry.kind != NOOP or len(data) != len(_NOOP_PREFIX) + 8 or not data.startswith(_NOOP_PREFIX):
        return 0
    value: int = struct.unpack(">Q", data[len(_NOOP_PREFIX) :])[0]
    return value


def readGroupFile(directory: str) -> int:
    """
    The group id recorded in C{directory}, 0 when there is no file.
    Blocking.

    @raise GroupFileError: the file is unreadable or damaged.
    """
    path = os.path.join(directory, FILENAME)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(4096))
        group = parseGroup(doc["group"])
        if not group:
            raise ValueError(f"not a group id: {doc['group']!r}")
        return group
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GroupFileError(
            f"the Raft group file {path} is unreadable ({e}): restore it, or move the node's Raft data "
            "aside to join a group afresh"
        ) from None


def writeGroupFile(directory: str, group: int) -> None:
    """
    Record C{group} in C{directory}, fsynced.  Blocking.
    """
    os.makedirs(directory, exist_ok=True)
    data = json.dumps({"group": formatGroup(group)}).encode()
    writeAtomically(os.path.join(directory, FILENAME), data)


@implementer(IRaftGroupStore)
class FileGroupStore:
    """
    The group file in C{directory}; C{run(fn, *args)} runs the blocking file
    work (in a thread: L{twisted.internet.threads.deferToThreadPool}).
    """

    def __init__(self, directory: str, run: Callable[..., Deferred[Any]]) -> None:
        self.directory = directory
        self.run = run

    def load(self) -> Deferred[int]:
        return self.run(readGroupFile, self.directory)

    def save(self, group: int) -> Deferred[None]:
        return self.run(writeGroupFile, self.directory, group)


def threadedGroupStore(directory: str, reactor: Any) -> FileGroupStore:
    """
    A L{FileGroupStore} doing its file work in C{reactor}'s thread pool.
    """
    from twisted.internet.threads import deferToThreadPool

    def run(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)

    return FileGroupStore(directory, run)


@implementer(IRaftGroupStore)
class MemoryGroupStore:
    """
    A group id kept in memory (durable at once): tests, simulation, and
    nodes given no store (then the id lasts as long as the process).
    """

    def __init__(self, group: int = 0) -> None:
        self.group = group
        self.saves = 0

    def load(self) -> Deferred[int]:
        return succeed(self.group)

    def save(self, group: int) -> Deferred[None]:
        self.group = group
        self.saves += 1
        return succeed(None)
