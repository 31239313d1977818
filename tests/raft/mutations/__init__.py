"""
Planted Raft bugs: each mutation is a small textual patch to a copy of
C{suite/raft}; the seeded simulation scenarios (L{tests.raft.scenarios})
are run against the copy, and a mutation counts as caught when a scenario
fails an invariant, progress, convergence or linearizability check.

C{python -m tests.raft.mutations} prints the table (mutation -> scenarios
catching it); C{tests/raft/test_mutations.py} requires every mutation to be
caught by the scenarios CI runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@dataclass(frozen=True)
class Mutation:
    name: str
    bug: str
    patches: tuple[tuple[str, str, str], ...]  # (file under suite/raft, old, new)
    families: tuple[str, ...]  # scenario families expected to catch it, tried first


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "read-unconfirmed",
        "ReadIndex served without confirming leadership (no heartbeat round)",
        (
            (
                "reads.py",
                "        if (\n            settings.leaseReads\n            and self.leader.transferTarget is None\n"
                "            and node.clock.seconds() < self.leaseStart + 0.9 * settings.electionTimeoutMin\n"
                "        ):",
                "        if True:",
            ),
        ),
        ("staleRead",),
    ),
    Mutation(
        "lease-unbounded",
        "lease reads without the clock bound (a lease, once held, never expires)",
        (
            (
                "reads.py",
                "node.clock.seconds() < self.leaseStart + 0.9 * settings.electionTimeoutMin",
                "self.leaseStart > -1e18",
            ),
        ),
        ("staleRead",),
    ),
    Mutation(
        "lease-from-ack",
        "lease measured from when the quorum's acknowledgements arrived, not from when the heartbeat was sent",
        (
            (
                "reads.py",
                "self.leaseStart = max(self.leaseStart, self.ctxSentAt[quorumCtx])",
                "self.leaseStart = node.clock.seconds()",
            ),
        ),
        ("staleRead",),
    ),
    Mutation(
        "commit-previous-term",
        "an entry of an earlier term committed by counting replicas (Figure 8)",
        (
            (
                "leader.py",
                "if n > node.commitIndex and node.log.term(n) == self.term:",
                "if n > node.commitIndex:",
            ),
        ),
        ("figure8",),
    ),
    Mutation(
        "vote-any-log",
        "votes (and pre-votes) granted without the log up-to-date check",
        (
            (
                "node.py",
                "        return lastTerm > mine or (lastTerm == mine and lastIndex >= self.log.lastIndex())",
                "        return True",
            ),
        ),
        ("staleLeader", "nemesis"),
    ),
    Mutation(
        "ack-before-fsync",
        "a follower acknowledges appended entries before they are durable",
        (
            (
                "follower.py",
                "        node.whenDurable(\n            lambda: node.send(\n                AppendEntriesResponse(\n"
                "                    node.id, m.src, m.term, True, lastNew, epoch=m.epoch, incarnation=incarnation\n"
                "                )\n            )\n        )",
                "        node.send(\n            AppendEntriesResponse(\n"
                "                node.id, m.src, m.term, True, lastNew, epoch=m.epoch, incarnation=incarnation\n"
                "            )\n        )",
            ),
        ),
        ("crashLoss",),
    ),
    Mutation(
        "stale-term-append",
        "AppendEntries with a stale term accepted",
        (
            (
                "node.py",
                "        elif m.term < self.term:",
                "        elif m.term < self.term and not isinstance(m, AppendEntries):",
            ),
        ),
        ("staleLeader",),
    ),
    Mutation(
        "keep-conflicting-suffix",
        "a follower keeps a conflicting suffix instead of truncating it",
        (
            (
                "follower.py",
                "            if t == e.term:\n                continue",
                "            if t is not None:\n                continue",
            ),
        ),
        ("staleRead", "nemesis"),
    ),
    Mutation(
        "apply-before-commit",
        "entries applied as soon as they are in the log, before they are committed",
        (
            (
                "node.py",
                "        while self.lastApplied < self.commitIndex:",
                "        while self.lastApplied < self.log.lastIndex():",
            ),
        ),
        ("crashLoss", "staleLeader", "nemesis"),
    ),
    Mutation(
        "forget-vote",
        "the vote is not made durable (forgotten across a restart)",
        (
            (
                "node.py",
                "d = self.storage.saveHardState(term, self.votedFor)",
                "d = self.storage.saveHardState(term, None)",
            ),
        ),
        ("restartStorm",),
    ),
    Mutation(
        "empty-storage-votes",
        "a member restarted on empty storage counts its vote as if it still had its log",
        (
            (
                "node.py",
                "        return votesIntact(self.configs.latest(), self.id, self.incarnation)",
                "        return True",
            ),
        ),
        ("diskLoss",),
    ),
    Mutation(
        "stale-incarnation-progress",
        "the leader keeps what a member acknowledged before it lost its storage",
        (
            (
                "membership.py",
                "            pr.match = 0\n            pr.inputs.becomeProbe(node.log.lastIndex() + 1)\n",
                "",
            ),
        ),
        ("diskLoss",),
    ),
    Mutation(
        "two-config-changes",
        "a membership change proposed while another is uncommitted",
        (
            (
                "membership.py",
                "        if node.configs.latestIndex() > node.commitIndex:\n"
                '            return fail(MembershipError("another membership change is still uncommitted"))\n',
                "",
            ),
            (
                "membership.py",
                "if pr is None or node.configs.latestIndex() > node.commitIndex:",
                "if pr is None:",
            ),
        ),
        ("membershipSplit",),
    ),
    Mutation(
        "serve-while-loading",
        "a node handles votes and appends before its own term, vote and log are loaded",
        (
            (
                "roles.py",
                "        core.actions.messageDropped(message)\n        return False",
                "        return True",
            ),
        ),
        ("slowLoad",),
    ),
    Mutation(
        "foreign-group-accepted",
        "messages of another Raft group handled like the node's own (no group-id check)",
        (
            (
                "node.py",
                "        if m.group != self.groupId and m.group and self.groupId:\n",
                "        if False:\n",
            ),
        ),
        ("groupsMeet",),
    ),
)


def byName(name: str) -> Mutation:
    for m in MUTATIONS:
        if m.name == name:
            return m
    raise KeyError(name)


def plant(mutation: Mutation | None, root: str) -> str:
    """
    Copy C{suite/raft} to C{root}/suite/raft and apply C{mutation}; return
    the directory to put first on C{suite.__path__}.  Every patch must match
    exactly once (so a refactoring that moves the code breaks loudly).
    """
    dst = os.path.join(root, "suite", "raft")
    shutil.copytree(
        os.path.join(REPO, "suite", "raft"), dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for filename, old, new in mutation.patches if mutation else ():
        path = os.path.join(dst, filename)
        with open(path) as f:
            text = f.read()
        found = text.count(old)
        if found != 1:
            raise ValueError(f"mutation {mutation.name}: patch for {filename} matches {found} times")  # type: ignore[union-attr]
        with open(path, "w") as f:
            f.write(text.replace(old, new))
    return os.path.join(root, "suite")


@dataclass
class Outcome:
    family: str
    seed: int
    caught: bool
    why: str


def run(
    mutation: Mutation | None,
    scenarios: Sequence[tuple[str, int]],
    stopAtFirst: bool = False,
    timeout: float = 600,
) -> list[Outcome]:
    """
    Run C{scenarios} (family, seed) against a planted copy, in a child
    process; return one outcome per scenario run.
    """
    with tempfile.TemporaryDirectory(prefix="raft-mutant-") as root:
        path = plant(mutation, root)
        spec = json.dumps({"path": path, "scenarios": list(scenarios), "stopAtFirst": stopAtFirst})
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        proc = subprocess.run(
            [sys.executable, "-m", "tests.raft.mutations.worker"],
            input=spec,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mutation worker failed:\n{proc.stderr[-4000:]}")
        out = []
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                d = json.loads(line)
                out.append(Outcome(d["family"], d["seed"], d["caught"], d["why"]))
        return out
