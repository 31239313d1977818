"""
Two real agents, each started with --bootstrap while they cannot see each
other, founding two Raft groups; then one is restarted with --join of the
other and gossip brings them together.  Each stays in its own group (no
membership change, no term or leader taken across), and each reports the
other group: one log line naming both groups and members, /api/state and
the constellation_raft_foreign_members metric.  Then the operator's merge
(docs/constellation.md): the second agent is stopped, its DATA_DIR/raft
moved aside and the agent started again, and it joins the first group as a
new member.
"""

from __future__ import annotations

import os
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from tests.constellation.support import Agent, startAgent
from tests.support.process import DaemonProcess, waitUntil


async def raftState(agent: Agent) -> dict[str, Any]:
    try:
        state = await agent.state()
    except Exception:
        return {}
    raft = state.get("raft")
    return raft if isinstance(raft, dict) else {}


async def metric(agent: Agent, name: str) -> float | None:
    try:
        r = await treq.get(f"{agent.url}/metrics", timeout=2, persistent=False)
        text = (await r.content()).decode()
    except Exception:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class GroupsMeetTests(TestCase):
    """
    Raft groups formed apart stay apart when their gossip meets.
    """

    timeout = 120

    def start(self, name: str, join: list[str] = ()) -> Agent:  # type: ignore[assignment]
        return startAgent(
            self,
            name,
            extra=["--bootstrap", "--discover", "none", "--raft-election-ms", "300"],
            join=join,
        )

    async def leading(self, agent: Agent) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            raft = await raftState(agent)
            return raft if raft.get("role") == "leader" and raft.get("group") else None

        found: dict[str, Any] = await waitUntil(check, f"{agent.name} leads its own group", 30, 0.2)
        return found

    async def test_groupsStayApart(self) -> None:
        """
        Each agent leads its own group with its own id; once gossip joins
        them, each reports the other's members as foreign, logs the meeting
        once, and neither group's membership, leader or id changes.  Moving
        one node's Raft data aside merges it into the other group.
        """
        a = self.start("node-a")
        b = self.start("node-b")
        before = {agent.name: await self.leading(agent) for agent in (a, b)}
        groupA, groupB = before["node-a"]["group"], before["node-b"]["group"]
        self.assertNotEqual(groupA, groupB)
        # node-b is restarted (same data) with --join of node-a: the groups meet.
        await b.proc.stop()
        argv = [*b.argv, "--join", f"127.0.0.1:{a.gossip}"]
        b.proc = DaemonProcess(self, argv, env=b.env, name="node-b-joined").start()
        self.assertEqual((await self.leading(b))["group"], groupB)

        async def reported() -> bool:
            ra, rb = await raftState(a), await raftState(b)
            return ra.get("foreignMembers") == {"node-b": groupB} and rb.get("foreignMembers") == {
                "node-a": groupA
            }

        await waitUntil(reported, "each agent reports the other group's member", 30, 0.3)
        self.assertEqual(await metric(a, "constellation_raft_foreign_members"), 1.0)
        self.assertEqual(await metric(b, "constellation_raft_foreign_members"), 1.0)
        for agent, own, other, peer in ((a, groupA, groupB, "node-b"), (b, groupB, groupA, "node-a")):
            raft = await raftState(agent)
            self.assertEqual(
                (raft["role"], raft["group"], raft["voters"], raft["learners"]),
                ("leader", own, [agent.name], []),
            )
            output = agent.proc.output()
            meetings = [line for line in output.splitlines() if "has met" in line]
            self.assertEqual(len(meetings), 1, output[-3000:])
            self.assertIn(f"Raft group {own} (members {agent.name}) has met Raft group {other}", meetings[0])
            self.assertIn(f"(members {peer})", meetings[0])
            self.assertNotIn("adding it to the Raft group", output)

        # The merge: node-b stopped, its Raft data moved aside, started again (without --bootstrap).
        await b.proc.stop()
        raftDir = os.path.join(b.env["DATA_DIR"], "raft")
        os.rename(raftDir, raftDir + ".old")
        argv = [arg for arg in argv if arg != "--bootstrap"]
        b.proc = DaemonProcess(self, argv, env=b.env, name="node-b-merged").start()

        async def merged() -> bool:
            ra, rb = await raftState(a), await raftState(b)
            return (
                ra.get("voters") == ["node-a", "node-b"]
                and rb.get("group") == groupA
                and rb.get("leader") == "node-a"
                and not ra.get("foreignMembers")
                and not rb.get("foreignMembers")
            )

        await waitUntil(merged, "node-b joins node-a's group", 40, 0.3)
        self.assertEqual(await metric(a, "constellation_raft_foreign_members"), 0.0)
        self.assertIn("no member of another Raft group is alive in gossip any more", a.proc.output())
        self.assertTrue(os.path.isdir(os.path.join(raftDir + ".old", "logs")))
