"""
Proof that a log entry is committed, asked of a group's members by a
replica that holds the entry but never heard it commit.

A replica excluded by a configuration entry (index I, term T) that missed
the leader's word that it committed can ask the group's current members
(L{CommitQuery}).  A member answers C{committed} (L{CommitAnswer}) only when

  - it belongs to the asker's group (the same non-zero group id,
    L{suite.raft.groupid}): another group's log proves nothing;
  - its log holds an entry at I of term T: by Log Matching its log and the
    asker's are then identical up to I;
  - its commit index is at least I: the entry is committed, and committed
    entries stay in every later leader's log (Leader Completeness).

The answer is read-only and cheap: one term lookup, a comparison, and a
walk over the few configurations the member holds.  A member answers only
a node named by one of those configurations (it was a member of the group
while this member's log covers it) and only over the group's
authenticated links (the transport checks that C{src} is the link's
peer).  A member that cannot tell (the entry compacted into a snapshot,
its log shorter, another term there, not committed yet) answers
C{committed=False}; it stays silent for another group, an asker it does
not know, or while it loads its log.

Both messages carry term 0: they are not Raft RPCs, and no node takes
their term.
"""

from __future__ import annotations

from typing import Protocol

from suite.raft.membership import ConfigurationHistory
from suite.raft.messages import CommitAnswer, CommitQuery

__all__ = ["CommitSource", "answerCommitQuery", "knownMember", "proves"]


class _Log(Protocol):
    def term(self, index: int) -> int | None: ...


class CommitSource(Protocol):
    """
    What a member answers from (a L{suite.raft.node.RaftNode}).
    """

    @property
    def id(self) -> str: ...

    @property
    def groupId(self) -> int: ...

    @property
    def loading(self) -> bool: ...

    @property
    def commitIndex(self) -> int: ...

    @property
    def log(self) -> _Log: ...

    @property
    def configs(self) -> ConfigurationHistory: ...


def knownMember(configs: ConfigurationHistory, node: str) -> bool:
    """
    Whether C{node} is a member of one of the configurations C{configs}
    holds (the one at the snapshot point, and every one after it).
    """
    if node in configs.base.members():
        return True
    return any(node in config.members() for _, config in configs.entries)


def answerCommitQuery(member: CommitSource, query: CommitQuery) -> CommitAnswer | None:
    """
    C{member}'s answer to C{query}, or C{None} when it does not answer
    (it has no group id yet, the asker speaks for another group, the asker
    is no member it knows of, or its log is still loading).
    """
    if member.loading or not member.groupId or query.group != member.groupId:
        return None
    if query.dst != member.id or not knownMember(member.configs, query.src):
        return None
    committed = (
        query.index > 0
        and query.index <= member.commitIndex
        and member.log.term(query.index) == query.entryTerm
    )
    return CommitAnswer(
        member.id, query.src, 0, query.index, query.entryTerm, committed, group=member.groupId
    )


def proves(answer: CommitAnswer, index: int, term: int, group: int) -> bool:
    """
    Whether C{answer} proves that the entry at C{index} of C{term} in the
    group C{group} is committed.
    """
    return (
        bool(group)
        and answer.group == group
        and answer.index == index
        and answer.entryTerm == term
        and answer.committed is True
    )
