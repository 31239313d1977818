"""
Incarnations: which copy of a member's durable state its group counts on.

Raft's safety rests on every voter remembering what it acknowledged and
whom it voted for.  A member restarted under the same id with its storage
lost (a replaced disk, an emptied data directory) remembers neither; if its
vote counted, a candidate missing committed entries could win.

So each replica's storage carries an I{incarnation}: a random number chosen
when the storage is created empty, kept beside the log.  The leader learns
each member's incarnation from its responses and records it in the
configuration (L{suite.raft.messages.Configuration.incarnations}).  A
voter's vote is I{intact} when its configuration records its current
incarnation (or records none and the storage predates incarnations).  A
candidate wins with a majority of intact votes, or with the votes of every
voter (a unanimous election is at least as up to date as every surviving
copy; it is how a new group forms, when no member is recorded yet).

A member that comes back with new storage is therefore a voter whose vote
does not count: it follows the leader and acknowledges what it really
stores.  The leader, seeing a new incarnation in its responses, forgets
what the member had acknowledged before and records the new incarnation in
its next configuration entry.  The member reads that entry only once its
log reaches it (by entries or by a snapshot), so it holds every entry
committed before, and only then does its vote count again.  There is no
window in which it can help elect a leader on an empty log.

Storage that exists without an incarnation record (written before
incarnations, or restored by an operator from another replica or a
snapshot) is I{adopted}: trusted while the configuration records nothing
for the member; the leader then records it like any other.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from suite.fileutil import writeAtomically
from suite.raft.messages import Configuration

__all__ = [
    "FILENAME",
    "Claim",
    "Incarnation",
    "MemoryIncarnations",
    "claimFile",
    "fileClaim",
    "votesIntact",
]

log = Logger()

#: The incarnation file, in the directory of the replica's WAL.
FILENAME = "incarnation"


@dataclass(frozen=True)
class Incarnation:
    """
    One replica storage's identity.

    @ivar number: random, non-zero, fixed for the life of the storage.
    @ivar adopted: the storage held state before it had an incarnation
        (trusted while the configuration records none for the member).
    """

    number: int
    adopted: bool = False


Claim = Callable[[bool], "Deferred[Incarnation]"]
"""
C{claim(hasState)}: the incarnation of a node's storage, created on first
use; C{hasState} says whether the storage held any Raft state.
"""


def votesIntact(config: Configuration, nodeId: str, incarnation: Incarnation | None) -> bool:
    """
    Whether C{nodeId}'s vote counts toward a majority under C{config}.
    """
    if incarnation is None:
        return True
    recorded = config.incarnationOf(nodeId)
    if recorded is None:
        return incarnation.adopted
    return recorded == incarnation.number


def _newNumber(rng: random.Random) -> int:
    return rng.randrange(1, 1 << 63)


def claimFile(directory: str, hasState: bool, rng: random.Random | None = None) -> Incarnation:
    """
    Read (or create, fsynced) the incarnation file in C{directory}.  Blocking:
    run it in a thread.

    Storage without state never counts as adopted, whatever the file says;
    an unreadable file is replaced by a new incarnation (the member then
    waits for the leader to record it, which is always safe).
    """
    path = os.path.join(directory, FILENAME)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(4096))
        number, adopted = doc["incarnation"], doc.get("adopted", False)
        if type(number) is not int or number <= 0 or type(adopted) is not bool:
            raise ValueError("bad fields")
        if adopted and not hasState:
            adopted = False
        else:
            return Incarnation(number, adopted)
    except FileNotFoundError:
        number, adopted = _newNumber(rng or random.SystemRandom()), hasState
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warn(
            "incarnation file {path} is unreadable ({why}); starting a new incarnation", path=path, why=e
        )
        number, adopted = _newNumber(rng or random.SystemRandom()), False
    os.makedirs(directory, exist_ok=True)
    writeAtomically(path, json.dumps({"incarnation": number, "adopted": adopted}).encode())
    return Incarnation(number, adopted)


def fileClaim(directory: str, reactor: Any) -> Claim:
    """
    A L{Claim} on the incarnation file in C{directory}, run in the reactor's
    thread pool.
    """

    def claim(hasState: bool) -> Deferred[Incarnation]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), claimFile, directory, hasState)

    return claim


class MemoryIncarnations:
    """
    Incarnations kept in memory, one per storage key (tests and simulation:
    losing a disk is L{forget}).
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.known: dict[str, Incarnation] = {}

    def claim(self, key: str) -> Claim:
        def claim(hasState: bool) -> Deferred[Incarnation]:
            current = self.known.get(key)
            if current is None or (current.adopted and not hasState):
                number = current.number if current is not None else _newNumber(self.rng)
                current = self.known[key] = Incarnation(number, hasState and current is None)
            return succeed(current)

        return claim

    def forget(self, key: str) -> None:
        self.known.pop(key, None)
