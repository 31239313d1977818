"""
The seeded nemesis scenarios run by tests/raft/test_simulation.py and the
mutation check (tests/raft/mutations): families of scenarios, each a
function of its seed that runs one simulation to completion and raises
L{InvariantViolation} on any violated invariant, missing progress,
divergent replicas or a non-linearizable history.

  - C{nemesis}: random schedules of partitions, one-way links, crashes,
    restarts, slow disks, pauses, clock drift, transfers and membership
    changes under random message loss, duplication, reordering and
    corruption.
  - C{staleRead}: the leader is cut off (or frozen) while readers stay
    pinned to it and writers move on to its successor: reads racing
    partitions and pauses, with and without lease reads, under clock drift
    within the documented bound.
  - C{staleLeader}: a deposed leader that has not heard of its successor
    is reconnected to one follower while clients pinned to it keep
    writing.
  - C{figure8}: the schedule of the Raft paper's Figure 8, where an entry
    of an earlier term reaches a majority and is then overwritten.
  - C{crashLoss}: a follower with a slow disk and its leader crash together
    just after a write was acknowledged.
  - C{restartStorm}: voters are killed and restarted right after they vote.
  - C{membershipSplit}: two voters added at once, then the old members are
    cut off from the leader and the new ones.
  - C{diskLoss}: a member loses its disk and restarts empty under the same
    id (storage incarnations on), while another follower lags and the
    leader is then cut off or crashed; or the leader itself loses its disk.
    The empty member's vote must not count until the leader has caught it
    up and recorded its new incarnation, and it must get its vote back.
  - C{slowLoad}: reading the log back at start-up takes from a millisecond
    to a second while clients keep writing and the others keep electing
    and replicating; leaders, followers, two members at once, members right
    after they voted, and members still loading are crashed and restarted.
    A loading member must not act on anything (no vote, term, leader,
    write or reply) before its own term, vote and log are loaded.
  - C{groupsMeet}: two Raft groups founded on the two sides of a partition
    at first start meet when it heals (L{tests.raft.groupsim}).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

from suite.raft.kv import encodeCommand
from suite.raft.messages import AppendEntries, Message
from suite.raft.node import RaftSettings
from tests.raft.groupsim import runGroups
from tests.support.lincheck import checkHistory
from tests.support.raftsim import Faults, SimClient, Simulation


@dataclass(frozen=True)
class Family:
    run: Callable[[int], object]
    ci: int  # scenarios (seeds 0..ci-1) CI runs


def finish(sim: Simulation, clients: list[SimClient], requireProgress: bool = True) -> Simulation:
    """
    Heal everything, require progress and convergence, check linearizability.
    """
    sim.network.heal()
    sim.network.mangle = None
    for m in sorted(sim.nodes):
        sim.restart(m)
        holder = sim.nodes[m]
        if holder.storage is not None:
            holder.storage.slow = 1.0
    sim.faults.drop = min(sim.faults.drop, 0.01)
    sim.faults.corrupt = min(sim.faults.corrupt, 0.01)
    before = sum(c.done for c in clients)
    if requireProgress and not sim.runUntil(lambda: sum(c.done for c in clients) > before + 5, 8.0):
        sim.fail(f"no progress after healing (leader: {sim.leader() and sim.leader().id})")  # type: ignore[union-attr]
    for c in clients:
        c.running = False
    sim.run(1.5)
    leader = sim.leader()
    if leader is None:
        sim.fail("no leader after healing")
    assert leader is not None
    final = leader.configs.latest().members()
    if not sim.runUntil(
        lambda: all(n.lastApplied == leader.commitIndex for n in sim.live() if n.id in final),
        5.0,
    ):
        sim.fail("replicas did not converge: " + str({n.id: n.lastApplied for n in sim.live()}))
    states = {n.id: n.applier.stateMachine.data for n in sim.live() if n.id in final}  # type: ignore[attr-defined]
    if len({repr(sorted(s.items())) for s in states.values()}) != 1:
        sim.fail(f"replica states differ: {states}")
    bad = checkHistory(sim.history)
    if bad:
        sim.fail(f"history not linearizable for keys {bad}")
    return sim


def startClients(sim: Simulation, clients: list[SimClient]) -> list[SimClient]:
    sim.clients = clients
    for c in clients:
        c.start()
    return clients


def driftAll(sim: Simulation, plan: random.Random, bound: float) -> None:
    """
    Give every node a clock rate within 1 +- C{bound} and a random offset.
    """
    for m in sorted(sim.nodes):
        sim.drift(m, 1.0 + plan.uniform(-bound, bound))
        sim.nodes[m].disk.offset += plan.uniform(-1000, 1000)


def nemesis(seed: int) -> Simulation:
    plan = random.Random(seed * 7919 + 17)
    faults = Faults(
        drop=plan.choice([0.0, 0.01, 0.05, 0.15]),
        duplicate=plan.choice([0.0, 0.02, 0.1]),
        minDelay=0.0005,
        maxDelay=plan.choice([0.002, 0.01, 0.03]),
        diskDelay=(0.0002, plan.choice([0.001, 0.005, 0.02])),
        wire=plan.random() < 0.15,
        corrupt=plan.choice([0.0, 0.0, 0.01]),
        torn=plan.random() < 0.5,
    )
    settings = RaftSettings(
        snapshotThreshold=plan.choice([15, 40, 1000]),
        snapshotChunkBytes=plan.choice([64, 1024, 65536]),
        maxInflight=plan.choice([2, 16, 64]),
        maxAppendBytes=plan.choice([100, 4096, 262144]),
        leaseReads=plan.random() < 0.2,
    )
    sim = Simulation(seed, plan.choice([3, 3, 5]), faults, settings)
    if plan.random() < 0.3:
        driftAll(sim, plan, 0.04)
    clients = startClients(
        sim,
        [
            SimClient(sim, f"c{i}", ["x", "y", "z"][: plan.choice([1, 2, 3])])
            for i in range(plan.choice([2, 4]))
        ],
    )
    extra = 0
    for _ in range(plan.randint(4, 10)):
        sim.run(plan.uniform(0.1, 0.9))
        what = plan.choice(
            [
                "partition",
                "isolateLeader",
                "oneWay",
                "crash",
                "crashLeader",
                "restart",
                "slowDisk",
                "heal",
                "transfer",
                "membership",
                "pause",
            ]
        )
        members = sorted(sim.nodes)
        leader = sim.leader()
        if what == "partition":
            plan.shuffle(members)
            cut = plan.randint(1, len(members) - 1)
            sim.network.partition(set(members[:cut]), set(members[cut:]))
        elif what == "isolateLeader" and leader is not None:
            sim.network.partition({leader.id}, set(members) - {leader.id})
        elif what == "oneWay":
            a, b = plan.sample(members, 2)
            sim.network.oneWay(a, b)
        elif what == "crash":
            sim.crash(plan.choice(members))
        elif what == "crashLeader" and leader is not None:
            sim.crash(leader.id)
        elif what == "restart":
            for m in members:
                sim.restart(m)
        elif what == "slowDisk":
            holder = sim.nodes[plan.choice(members)]
            if holder.storage is not None:
                holder.storage.slow = plan.choice([1.0, 20.0])
        elif what == "heal":
            sim.network.heal()
        elif what == "transfer" and leader is not None:
            leader.transferLeadership().addErrback(lambda f: None)
        elif what == "membership" and leader is not None:
            voters = sorted(leader.configs.latest().voters)
            if plan.random() < 0.5 and len(voters) > 3:
                leader.changeMembership("remove", plan.choice(voters)).addErrback(lambda f: None)
            else:
                extra += 1
                new = f"m{extra}"
                sim.addNode(new)
                leader.changeMembership("addVoter", new).addErrback(lambda f: None)
        elif what == "pause":
            victim = leader.id if leader is not None and plan.random() < 0.5 else plan.choice(members)
            sim.pause(victim, plan.uniform(0.05, 0.8))
    return finish(sim, clients)


def waitLeader(sim: Simulation, seconds: float = 3.0) -> bool:
    return sim.runUntil(lambda: sim.leader() is not None and sim.leader().leader.committedInTerm, seconds)  # type: ignore[union-attr]


def staleRead(seed: int) -> Simulation:
    plan = random.Random(seed * 104729 + 3)
    faults = Faults(drop=plan.choice([0.0, 0.01]), minDelay=0.0005, maxDelay=plan.choice([0.002, 0.01]))
    settings = RaftSettings(leaseReads=plan.random() < 0.5)
    size = plan.choice([3, 5])
    sim = Simulation(seed, size, faults, settings, family="staleRead")
    driftAll(sim, plan, 0.04)
    keys = ["x", "y"][: plan.choice([1, 2])]
    clients = [SimClient(sim, f"w{i}", keys, timeout=0.1, ops=("put", "append", "cas")) for i in range(2)]
    clients += [SimClient(sim, f"r{m}", keys, ops=("get",), pinned=m) for m in sorted(sim.nodes)]
    startClients(sim, clients)
    for _ in range(plan.randint(2, 4)):
        if not waitLeader(sim):
            break
        sim.run(plan.uniform(0.05, 0.3))
        leader = sim.leader()
        if leader is None:
            continue
        others = set(sim.nodes) - {leader.id}
        how = plan.choice(["isolate", "pause", "pauseIsolated"])
        if how in ("isolate", "pauseIsolated"):
            sim.network.partition({leader.id}, others)
        if how in ("pause", "pauseIsolated"):
            sim.pause(leader.id, plan.uniform(0.3, 0.8))
        sim.run(plan.uniform(0.5, 1.0))
        sim.network.heal()
    return finish(sim, clients)


def staleLeader(seed: int) -> Simulation:
    """
    A leader is cut off; once its successor has committed, one follower
    stops hearing from the successor and is reconnected to the deposed
    leader, which has not heard of the new term and whose pinned clients
    keep writing.
    """
    plan = random.Random(seed * 122949823 + 19)
    faults = Faults(minDelay=0.0005, maxDelay=plan.choice([0.002, 0.005]))
    sim = Simulation(seed, 3, faults, family="staleLeader")
    keys = ["x"]
    clients = [SimClient(sim, f"w{i}", keys, timeout=0.1, ops=("put", "append", "cas")) for i in range(2)]
    for m in sorted(sim.nodes):
        for i in range(2):
            clients.append(
                SimClient(sim, f"p{m}.{i}", keys, timeout=0.01, ops=("put",), pinned=m, maxBackoff=0.002)
            )
    startClients(sim, clients)
    for _ in range(plan.randint(2, 4)):
        if not waitLeader(sim):
            break
        sim.run(plan.uniform(0.05, 0.2))
        old = sim.leader()
        if old is None:
            continue
        others = set(sim.nodes) - {old.id}
        sim.network.partition({old.id}, others)
        if not sim.runUntil(lambda old=old: any(n.leader and n.id != old.id for n in sim.live()), 2.0):  # type: ignore[misc]
            continue
        new = next(n for n in sim.live() if n.leader and n.id != old.id)
        sim.run(plan.uniform(0.05, 0.15))
        peer = plan.choice(sorted(others - {new.id}))
        sim.network.blocked -= {(old.id, peer), (peer, old.id)}
        sim.network.oneWay(new.id, peer)
        sim.run(plan.uniform(0.1, 0.3))
        sim.network.heal()
        sim.run(0.2)
    return finish(sim, clients)


def figure8(seed: int) -> Simulation:
    """
    S1 leads and gets an entry to S2 only, then crashes; S5 wins the next
    term with S3 and S4 and appends its own entry at that index, unseen,
    then crashes; S1 returns and leads again, copying its old entry to S3
    (but not its new no-op); S1 and S2 crash and S5 returns.  Only the
    rule that a leader commits entries of its own term by counting keeps
    S5 from overwriting a committed entry.
    """
    plan = random.Random(seed * 15485863 + 11)
    faults = Faults(minDelay=0.0005, maxDelay=plan.choice([0.002, 0.005]))
    sim = Simulation(seed, 5, faults, RaftSettings(maxAppendBytes=1), family="figure8")
    net = sim.network
    if not waitLeader(sim):
        return sim
    sim.run(0.1)
    s1 = sim.leader()
    if s1 is None:
        return sim
    base = s1.log.lastIndex()
    rest = sorted(set(sim.nodes) - {s1.id})
    plan.shuffle(rest)
    s2 = rest[0]
    for other in rest[1:]:
        net.oneWay(s1.id, other)
    s1.propose(encodeCommand("put", "f", "s1"), "f8", 1).addErrback(lambda f: None)
    n2 = sim.nodes[s2]
    if not sim.runUntil(lambda: n2.node is not None and n2.node.log.lastIndex() > base, 0.5):
        return sim
    sim.run(0.01)
    sim.crash(s1.id)
    trio = set(rest[1:])

    def quiet(m: Message) -> Message | None:
        # The trio's leader appends but nobody receives its entries.
        if isinstance(m, AppendEntries) and m.src in trio and m.entries:
            return None
        return m

    net.mangle = quiet
    net.partition({s2}, trio)
    if not sim.runUntil(lambda: any(sim.nodes[t].node and sim.nodes[t].node.leader for t in trio), 3.0):  # type: ignore[union-attr]
        return sim
    s5 = next(t for t in sorted(trio) if sim.nodes[t].node and sim.nodes[t].node.leader)  # type: ignore[union-attr]
    sim.run(0.05)
    sim.crash(s5)
    s3s4 = trio - {s5}

    def prefixOnly(m: Message) -> Message | None:
        # S3 and S4 get S1's old entry but none after it.
        if isinstance(m, AppendEntries) and m.dst in s3s4 and m.entries:
            kept = tuple(e for e in m.entries if e.index <= base + 1)
            return dataclasses.replace(m, entries=kept)
        return m

    net.mangle = prefixOnly
    net.heal()
    net.partition({s1.id, s2} | s3s4, {s5})
    sim.restart(s1.id)
    if not sim.runUntil(lambda: sim.leader() is not None and sim.leader().id in (s1.id, s2), 3.0):  # type: ignore[union-attr]
        return sim
    sim.run(0.3)
    sim.crash(s1.id)
    sim.crash(s2)
    net.mangle = None
    net.heal()
    sim.restart(s5)
    sim.runUntil(lambda: sim.leader() is not None, 3.0)
    sim.run(0.2)
    return sim


def crashLoss(seed: int) -> Simulation:
    plan = random.Random(seed * 32452843 + 5)
    faults = Faults(minDelay=0.0005, maxDelay=0.002, diskDelay=(0.0002, 0.001), torn=plan.random() < 0.5)
    sim = Simulation(seed, 3, faults, family="crashLoss")
    clients = startClients(
        sim, [SimClient(sim, f"c{i}", ["x"], timeout=0.2, ops=("put", "append", "get")) for i in range(3)]
    )
    for _ in range(plan.randint(2, 4)):
        if not waitLeader(sim):
            break
        sim.run(plan.uniform(0.05, 0.2))
        leader = sim.leader()
        if leader is None:
            continue
        f1, f2 = plan.sample(sorted(set(sim.nodes) - {leader.id}), 2)
        slow = sim.nodes[f1].storage
        if slow is not None:
            slow.slow = 60.0
        sim.network.partition({leader.id, f1}, {f2})
        sim.run(plan.uniform(0.01, 0.04))
        sim.crash(leader.id)
        sim.crash(f1)
        sim.network.heal()
        sim.restart(f1)
        sim.run(plan.uniform(0.6, 1.0))
        sim.restart(leader.id)
        sim.run(0.3)
    return finish(sim, clients)


def restartStorm(seed: int) -> Simulation:
    plan = random.Random(seed * 49979687 + 7)
    faults = Faults(
        minDelay=0.0005, maxDelay=plan.choice([0.004, 0.01]), duplicate=0.3, diskDelay=(0.0002, 0.0008)
    )
    settings = RaftSettings(electionTimeoutMin=0.15, electionTimeoutMax=0.151)
    sim = Simulation(seed, plan.choice([3, 5, 5]), faults, settings, family="restartStorm")
    clients = startClients(
        sim, [SimClient(sim, f"c{i}", ["x"], ops=("put", "append", "get")) for i in range(2)]
    )
    for _ in range(plan.randint(4, 6)):
        if not waitLeader(sim):
            break
        leader = sim.leader()
        assert leader is not None
        sim.crash(leader.id)
        sim.restart(leader.id)
        end = sim.clock.seconds() + 1.0
        while sim.clock.seconds() < end:
            sim.run(0.002)
            for s in list(sim.nodes.values()):
                n = s.node
                if (
                    n is not None
                    and n.votedFor not in (None, n.id)
                    and n.leaderId is None
                    and n.durableTerm == n.term
                    and s.storage is not None
                    and not s.storage.queue
                ):
                    sim.crash(n.id)
                    sim.restart(n.id)
    return finish(sim, clients)


def membershipSplit(seed: int) -> Simulation:
    plan = random.Random(seed * 86028121 + 13)
    faults = Faults(minDelay=0.0005, maxDelay=plan.choice([0.002, 0.005]))
    sim = Simulation(seed, 3, faults, family="membershipSplit")
    clients = startClients(sim, [SimClient(sim, f"c{i}", ["x"], timeout=0.2) for i in range(3)])
    if not waitLeader(sim):
        return finish(sim, clients)
    sim.run(plan.uniform(0.05, 0.2))
    leader = sim.leader()
    if leader is None:
        return finish(sim, clients)
    old = set(sim.nodes) - {leader.id}
    sim.addNode("m1")
    sim.addNode("m2")
    for new in ("m1", "m2"):
        leader.changeMembership("addVoter", new).addErrback(lambda f: None)
    sim.network.partition({leader.id, "m1", "m2"}, old)
    sim.run(plan.uniform(0.8, 1.5))
    return finish(sim, clients)


def diskLoss(seed: int) -> Simulation:
    plan = random.Random(seed * 67867967 + 23)
    faults = Faults(
        drop=plan.choice([0.0, 0.01, 0.05]),
        duplicate=plan.choice([0.0, 0.05]),
        minDelay=0.0005,
        maxDelay=plan.choice([0.002, 0.01]),
        diskDelay=(0.0002, plan.choice([0.001, 0.005])),
        torn=plan.random() < 0.5,
    )
    settings = RaftSettings(
        snapshotThreshold=plan.choice([15, 40, 1000]), snapshotChunkBytes=plan.choice([64, 65536])
    )
    sim = Simulation(seed, plan.choice([3, 3, 5]), faults, settings, family="diskLoss", incarnations=True)
    clients = startClients(
        sim,
        [SimClient(sim, f"c{i}", ["x", "y"], timeout=0.2, ops=("put", "append", "get")) for i in range(3)],
    )
    for _ in range(plan.randint(2, 4)):
        if not waitLeader(sim) or not sim.runUntil(lambda: not sim.unrecorded, 3.0):
            break
        sim.run(plan.uniform(0.05, 0.2))
        leader = sim.leader()
        if leader is None:
            continue
        victim, lagging = plan.sample(sorted(set(sim.nodes) - {leader.id}), 2)
        how = plan.choice(["isolateLeader", "crashLeader", "plain", "wipeLeader"])
        if how in ("isolateLeader", "crashLeader"):
            # Entries now commit without the lagging follower.
            sim.network.oneWay(leader.id, lagging)
            sim.run(plan.uniform(0.05, 0.2))
        if how == "wipeLeader":
            victim = leader.id
        sim.wipe(victim)
        sim.restart(victim)
        sim.run(plan.uniform(0.0, 0.05))
        if how == "isolateLeader":
            sim.network.partition({leader.id}, set(sim.nodes) - {leader.id})
        elif how == "crashLeader":
            sim.crash(leader.id)
            sim.network.heal()
        sim.run(plan.uniform(0.5, 1.0))
        sim.network.heal()
        for m in sorted(sim.nodes):
            sim.restart(m)
    finish(sim, clients)
    if not sim.runUntil(lambda: not sim.unrecorded, 5.0):
        sim.fail(f"{sorted(sim.unrecorded)} never got their vote back")
    return sim


def slowLoad(seed: int) -> Simulation:
    plan = random.Random(seed * 92821 + 29)
    faults = Faults(
        drop=plan.choice([0.0, 0.01, 0.05]),
        duplicate=plan.choice([0.0, 0.1, 0.3]),
        minDelay=0.0005,
        maxDelay=plan.choice([0.002, 0.01, 0.03]),
        diskDelay=(0.0002, plan.choice([0.001, 0.005])),
        torn=plan.random() < 0.5,
        loadDelay=(0.001, plan.choice([0.05, 0.3, 1.0])),
    )
    settings = RaftSettings(
        snapshotThreshold=plan.choice([15, 40, 1000]), snapshotChunkBytes=plan.choice([64, 65536])
    )
    sim = Simulation(seed, plan.choice([3, 3, 5]), faults, settings, family="slowLoad")
    clients = startClients(
        sim,
        [SimClient(sim, f"c{i}", ["x", "y"], timeout=0.2, ops=("put", "append", "get")) for i in range(3)],
    )

    def bounce(member: str) -> None:
        sim.crash(member)
        sim.restart(member)

    for _ in range(plan.randint(3, 6)):
        if not waitLeader(sim):
            sim.run(0.5)
            continue
        sim.run(plan.uniform(0.02, 0.3))
        leader = sim.leader()
        if leader is None:
            continue
        followers = sorted(set(sim.nodes) - {leader.id})
        what = plan.choice(["leader", "follower", "two", "voters", "whileLoading"])
        if what == "leader":
            bounce(leader.id)
        elif what == "follower":
            bounce(plan.choice(followers))
        elif what == "two":
            bounce(leader.id)
            bounce(plan.choice(followers))
        elif what == "whileLoading":
            victim = plan.choice(sorted(sim.nodes))
            bounce(victim)
            sim.run(plan.uniform(0.001, 0.05))
            bounce(victim)
        else:
            # Restart voters as soon as they have voted for someone else, so
            # that vote requests of that term reach them while they load.
            bounce(leader.id)
            end = sim.clock.seconds() + plan.uniform(0.3, 1.0)
            while sim.clock.seconds() < end:
                sim.run(0.002)
                for holder in list(sim.nodes.values()):
                    n = holder.node
                    if (
                        n is not None
                        and n.votedFor not in (None, n.id)
                        and n.leaderId is None
                        and n.durableTerm == n.term
                        and holder.storage is not None
                        and not holder.storage.queue
                    ):
                        bounce(n.id)
        sim.run(plan.uniform(0.2, 1.0))
    return finish(sim, clients)


FAMILIES: dict[str, Family] = {
    "nemesis": Family(nemesis, 400),
    "staleRead": Family(staleRead, 24),
    "staleLeader": Family(staleLeader, 16),
    "figure8": Family(figure8, 8),
    "crashLoss": Family(crashLoss, 16),
    "restartStorm": Family(restartStorm, 16),
    "membershipSplit": Family(membershipSplit, 8),
    "diskLoss": Family(diskLoss, 24),
    "slowLoad": Family(slowLoad, 24),
    "groupsMeet": Family(runGroups, 48),
}
