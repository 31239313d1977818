"""
The lifecycle of one hosted partition's replica, as an automat machine.

  states:  Starting (initial; the node loads its WAL and snapshot),
           Running, Retiring (placement no longer lists this node, its
           group's configuration still does; data: since when), Leaving
           (this node's latest configuration excludes it, but it does not
           know that configuration committed yet; data: since when),
           Dropped (the partition left the routing table; data: since
           when), Failed (the WAL or snapshot could not be loaded; data:
           why), Retired (a configuration without this node is committed:
           the replica stopped and its data is reclaimed; data: the
           placement epoch of that configuration), Confirming (stopped by
           the grace period while Leaving, data in place, asking its
           partition's current members whether the configuration entry
           excluding it is committed; data: the question, its backoff and
           timer), Stopped.
  inputs:  loaded(), loadFailed(why), placed(); when placement does not
           list this node: unplaced(now) (the group's latest configuration
           still names it), excluded(now, grace) (it does not, or this
           replica's log is empty: nothing of the group's is here),
           removed(epoch) (a configuration without this node, of placement
           C{epoch}, is committed),
           dropped(now, grace) (the partition left the routing table: no
           leader moves its group, every replica retires); stop();
           leftEmpty(epoch) (private: the grace period ended for a replica
           whose log holds nothing, no entry and no snapshot);
           askMembers(query) (private: the grace period ended for a
           Leaving replica that holds the entry excluding it), retry()
           (private: the timer of the next round of questions),
           answered(answer) (a member's L{CommitAnswer}), confirmed(epoch)
           (private: an answer proved the entry committed); queries
           serving() -> bool, describe() -> dict.
  outputs: stop the node when its load failed (it never serves: Raft's
           Stopped, not Loading, then drops its peers' messages); log
           placement changes; stop the replica (node, transport group,
           storage); retire it (stop it, then move its data out of the
           storage directories: L{suite.ceptra.partitions.retire}).

A replica being moved away keeps taking part in its group (voting,
replicating, answering the leader) until a configuration without it is
committed: the group may need its vote until then (a group of two cannot
commit without it); only then is it Retired and its data reclaimed.  The
leader tells a removed replica once the configuration removing it is
committed (L{suite.raft.leader}); the grace
period only ends a replica that the group cannot need any more (Leaving:
the configuration in its own log excludes it) or whose partition was
dropped altogether (Dropped), never one its group still counts as a
member.  The replica it ends keeps its data in place (Stopped: it may hold
the only copy of acknowledged writes), unless its log holds nothing at
that moment (no entry, no snapshot): such a replica never stored anything
of its group's, so nothing of it can be the last copy of anything, and it
is retired (C{leftEmpty}, the loop's private input) like one its group
removed, under the placement epoch of the configuration it holds.

A Leaving replica the grace period ends while its partition is still
routed, whose latest configuration (excluding it) is an entry of its log
and which has a group id, is Confirming rather than Stopped: shut down,
data in place, it asks the partition's current members (placed by the
routing table) whether that entry (index, term) is committed
(L{suite.raft.commitproof}), at once and then after its backoff's delays
(30 s doubling to 300 s; one more round a short while after a round that
could only dial a member).  One answer proving it (a current member, the
same group id, the same index and term, committed) retires it like a
replica its leader told; nothing else does.  Placed here again, dropped
from the routing table or stopped, it asks no more (Stopped).

Until the node has loaded, its own role machine (Loading) drops every
message the group's transport delivers; nothing here gates the transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from suite.backoff import Backoff
from suite.raft.commitproof import proves
from suite.raft.messages import CommitAnswer

__all__ = ["DESCRIBED_STATES", "ExclusionQuery", "LifecycleCore", "PartitionInputs", "PartitionLifecycle"]

log = Logger(namespace="ceptra.partitions")


class PartitionInputs(Protocol):
    def loaded(self) -> None:
        """
        The node loaded its storage and joined its group.
        """

    def loadFailed(self, why: str) -> None:
        """
        The node could not load its storage.
        """

    def placed(self) -> None:
        """
        The routing table lists this node for the partition.
        """

    def unplaced(self, now: float) -> None:
        """
        The routing table does not list this node; the group's latest
        configuration (as this replica holds it) still names it.
        """

    def excluded(self, now: float, grace: float) -> None:
        """
        The routing table does not list this node, and the latest
        configuration this replica holds does not name it (or its log is
        empty), but it does not know that configuration committed.
        """

    def removed(self, epoch: int) -> None:
        """
        The routing table does not list this node, and a configuration
        without it (of placement C{epoch}) is committed.
        """

    def dropped(self, now: float, grace: float) -> None:
        """
        The partition is no longer in the routing table at all.
        """

    def stop(self) -> None:
        """
        Stop the replica (retired, or the node shuts down).
        """

    def leftEmpty(self, epoch: int) -> None:
        """
        The grace period ended for a replica whose log holds nothing (no
        entry, no snapshot); C{epoch}: the placement epoch of the
        configuration it holds (private: fed by the grace period's checks).
        """

    def askMembers(self, query: ExclusionQuery) -> None:
        """
        The grace period ended for a replica that holds the configuration
        entry excluding it (C{query}) but did not hear it commit (private:
        fed by the grace period's checks): it stops, data in place, and
        asks its group's current members whether that entry is committed.
        """

    def retry(self) -> None:
        """
        Time to ask the members again (private: the machine's timer).
        """

    def answered(self, answer: CommitAnswer) -> None:
        """
        A member answered this replica's commit query.
        """

    def confirmed(self, epoch: int) -> None:
        """
        A current member of the group proved the excluding configuration
        (of placement C{epoch}) committed (private: fed by C{answered}).
        """

    def serving(self) -> bool:
        """
        Whether the replica takes part in its group (requests may use it).
        """

    def describe(self) -> dict[str, Any]:
        """
        The state, for status pages.
        """


class ReplicaActions(Protocol):
    """
    What the machine's outputs do to the replica.
    """

    pid: str

    def abandon(self) -> None:
        """
        Stop the node, whose storage could not be loaded.
        """

    def shutdown(self) -> None: ...

    def retire(self, epoch: int) -> None:
        """
        Shut the replica down and reclaim its data: it left its group for
        good (a configuration of placement C{epoch} without it committed),
        or holds nothing of it.
        """

    def holdsEntries(self) -> bool:
        """
        Whether the replica's log holds anything: an entry or a snapshot.
        """

    def configEpoch(self) -> int:
        """
        The placement epoch of the latest configuration the replica holds.
        """

    def exclusion(self) -> ExclusionQuery | None:
        """
        The configuration entry excluding this replica that its members
        could prove committed: the latest configuration it holds, when that
        excludes it, is an entry of its log (index and term known), and the
        replica has a group id; C{None} otherwise.
        """

    def ask(self, query: ExclusionQuery) -> tuple[int, int]:
        """
        Ask the partition's current members (placed by the routing table)
        whether C{query}'s entry is committed; return how many were asked,
        and how many of them had no link yet (their question only started
        a dial, and is lost).
        """

    def askBackoff(self) -> Backoff:
        """
        The delays between two rounds of questions.
        """

    def linkWait(self) -> float:
        """
        How long a dial takes at most: a round that found members without
        a link is followed by one more after this long.
        """

    def later(self, delay: float, call: Callable[[], None]) -> IDelayedCall:
        """
        Call C{call} in C{delay} seconds.
        """

    def currentMember(self, peer: str) -> bool:
        """
        Whether C{peer} is one of the partition's current members (placed
        by the routing table), other than this node.
        """

    def retireStopped(self, epoch: int) -> None:
        """
        Reclaim the data of this replica, already shut down: a
        configuration of placement C{epoch} without it is proven committed.
        """

    def stopAsking(self) -> None:
        """
        This stopped replica asks no more (placed here again, its partition
        left the routing table, or the node shuts down).
        """


@dataclass
class LifecycleCore:
    replica: ReplicaActions


@dataclass
class Retiring:
    since: float


@dataclass
class Leaving:
    since: float


@dataclass
class Dropped:
    since: float


@dataclass
class Retired:
    epoch: int


@dataclass
class Failed:
    why: str


@dataclass(frozen=True)
class ExclusionQuery:
    """
    The configuration entry that excluded a replica, to be proven
    committed by a current member of its group.
    """

    #: the entry's log index and term
    index: int
    term: int
    #: the replica's Raft group id (an answer from another group is no proof)
    group: int
    #: the placement epoch of that configuration (names the retired copy)
    epoch: int


@dataclass
class Confirming:
    """
    Stopped, data in place, asking its group's members (the question, its
    delays, the timer of the next round, the rounds so far).
    """

    query: ExclusionQuery
    backoff: Backoff
    timer: IDelayedCall | None = None
    rounds: int = 0
    #: whether the round scheduled is the quick one after a round that
    #: found members without a link
    quick: bool = False

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


UNPLACED = ("unplaced", "excluded", "removed", "dropped", "leftEmpty")
#: The inputs of a stopped replica asking its members (Confirming).
ASKING = ("askMembers", "retry", "answered", "confirmed")

#: The C{state} each of the machine's states describes itself as (its
#: C{describe()["state"]}), in the machine's order: the label values of
#: C{ceptra_partition_state}.
DESCRIBED_STATES = ("starting", "running", "retiring", "leaving", "dropped", "failed", "retired", "stopped")


def _build() -> TypeMachine[PartitionInputs, LifecycleCore]:
    b = TypeMachineBuilder(PartitionInputs, LifecycleCore)
    starting = b.state("Starting")
    running = b.state("Running")

    def retiringData(inputs: PartitionInputs, core: LifecycleCore, now: float) -> Retiring:
        return Retiring(now)

    retiring = b.state("Retiring", retiringData)

    def droppedData(inputs: PartitionInputs, core: LifecycleCore, now: float, grace: float) -> Dropped:
        return Dropped(now)

    dropped = b.state("Dropped", droppedData)

    def leavingData(inputs: PartitionInputs, core: LifecycleCore, now: float, grace: float) -> Leaving:
        return Leaving(now)

    leaving = b.state("Leaving", leavingData)

    def failedData(inputs: PartitionInputs, core: LifecycleCore, why: str) -> Failed:
        return Failed(why)

    failed = b.state("Failed", failedData)

    def retiredData(inputs: PartitionInputs, core: LifecycleCore, epoch: int) -> Retired:
        return Retired(epoch)

    retired = b.state("Retired", retiredData)

    def confirmingData(inputs: PartitionInputs, core: LifecycleCore, query: ExclusionQuery) -> Confirming:
        # (the first round at the next turn of the reactor, once stopped)
        return Confirming(query, core.replica.askBackoff(), core.replica.later(0.0, inputs.retry))

    def askRound(inputs: PartitionInputs, core: LifecycleCore, data: Confirming) -> None:
        # One round of questions, then the timer of the next: the backoff's
        # next delay, or once after a round that found members without a
        # link (the question only dialled them) a quick one.
        data.rounds += 1
        asked, unlinked = core.replica.ask(data.query)
        if unlinked and not data.quick:
            data.quick = True
            delay = core.replica.linkWait()
        else:
            data.quick = False
            delay = data.backoff.next()
        data.timer = core.replica.later(delay, inputs.retry)
        if not asked:
            log.info(
                "partition {pid}: no current member of its group to ask (the routing table names none "
                "with a SPIFFE ID); asking again in {delay} s",
                pid=core.replica.pid,
                delay=delay,
            )

    confirming = b.state("Confirming", confirmingData)
    stopped = b.state("Stopped")

    def leftGroup(core: LifecycleCore, epoch: int) -> None:
        log.info("stopping partition {pid}: this node left its group", pid=core.replica.pid)
        core.replica.retire(epoch)

    def graceEnded(inputs: PartitionInputs, core: LifecycleCore) -> None:
        # Stopped with its data in place, unless there is none to keep.
        if core.replica.holdsEntries():
            inputs.stop()
        else:
            inputs.leftEmpty(core.replica.configEpoch())

    def exclusionGraceEnded(inputs: PartitionInputs, core: LifecycleCore) -> None:
        # Its partition still routed elsewhere: the group's current members
        # may prove the configuration excluding it committed.
        if not core.replica.holdsEntries():
            inputs.leftEmpty(core.replica.configEpoch())
            return
        query = core.replica.exclusion()
        if query is None:
            inputs.stop()
        else:
            inputs.askMembers(query)

    def retireEmpty(core: LifecycleCore, epoch: int) -> None:
        log.info(
            "stopping partition {pid}: this node's replica never stored anything of its group's "
            "(its log is empty); retiring it",
            pid=core.replica.pid,
        )
        core.replica.retire(epoch)

    # Starting: until loaded, the replica's configuration is not known.
    starting.upon(PartitionInputs.loaded).to(running).returns(None)

    @starting.upon(PartitionInputs.loadFailed).to(failed)
    def fail(inputs: PartitionInputs, core: LifecycleCore, why: str) -> None:
        log.critical("partition {pid} failed to start: {why}", pid=core.replica.pid, why=why)
        core.replica.abandon()

    for name in ("placed",) + UNPLACED:
        starting.upon(getattr(PartitionInputs, name)).loop().returns(None)

    @starting.upon(PartitionInputs.stop).to(stopped)
    def stopStarting(inputs: PartitionInputs, core: LifecycleCore) -> None:
        core.replica.shutdown()

    for name in ASKING:
        starting.upon(getattr(PartitionInputs, name)).loop().returns(None)
    starting.upon(PartitionInputs.serving).loop().returns(False)
    starting.upon(PartitionInputs.describe).loop().returns({"state": "starting"})

    # Running
    running.upon(PartitionInputs.loaded).loop().returns(None)
    running.upon(PartitionInputs.loadFailed).loop().returns(None)
    running.upon(PartitionInputs.placed).loop().returns(None)

    @running.upon(PartitionInputs.unplaced).to(retiring)
    def retire(inputs: PartitionInputs, core: LifecycleCore, now: float) -> None:
        log.info(
            "partition {pid} is no longer placed on this node; it keeps taking part in its group "
            "until a configuration without it is committed",
            pid=core.replica.pid,
        )

    @running.upon(PartitionInputs.excluded).to(leaving)
    def leave(inputs: PartitionInputs, core: LifecycleCore, now: float, grace: float) -> None:
        log.info(
            "partition {pid} is no longer placed on this node, and its group's latest configuration "
            "excludes it; stopping once that is committed",
            pid=core.replica.pid,
        )

    @running.upon(PartitionInputs.dropped).to(dropped)
    def drop(inputs: PartitionInputs, core: LifecycleCore, now: float, grace: float) -> None:
        log.info(
            "partition {pid} is no longer in the routing table; stopping in {grace} s",
            pid=core.replica.pid,
            grace=grace,
        )

    @running.upon(PartitionInputs.removed).to(retired)
    def stopRemoved(inputs: PartitionInputs, core: LifecycleCore, epoch: int) -> None:
        leftGroup(core, epoch)

    @running.upon(PartitionInputs.stop).to(stopped)
    def stopRunning(inputs: PartitionInputs, core: LifecycleCore) -> None:
        core.replica.shutdown()

    for name in ("leftEmpty",) + ASKING:
        running.upon(getattr(PartitionInputs, name)).loop().returns(None)
    running.upon(PartitionInputs.serving).loop().returns(True)
    running.upon(PartitionInputs.describe).loop().returns({"state": "running"})

    # Retiring: still a member of the group's latest configuration.
    retiring.upon(PartitionInputs.loaded).loop().returns(None)
    retiring.upon(PartitionInputs.loadFailed).loop().returns(None)

    @retiring.upon(PartitionInputs.placed).to(running)
    def placedAgain(inputs: PartitionInputs, core: LifecycleCore, data: Retiring) -> None:
        log.info("partition {pid} is placed on this node again", pid=core.replica.pid)

    retiring.upon(PartitionInputs.unplaced).loop().returns(None)

    @retiring.upon(PartitionInputs.excluded).to(leaving)
    def leaveRetiring(
        inputs: PartitionInputs, core: LifecycleCore, data: Retiring, now: float, grace: float
    ) -> None:
        log.info(
            "partition {pid}: its group's latest configuration excludes this node; stopping once "
            "that is committed",
            pid=core.replica.pid,
        )

    @retiring.upon(PartitionInputs.dropped).to(dropped)
    def dropRetiring(
        inputs: PartitionInputs, core: LifecycleCore, data: Retiring, now: float, grace: float
    ) -> None:
        log.info(
            "partition {pid} is no longer in the routing table; stopping in {grace} s",
            pid=core.replica.pid,
            grace=grace,
        )

    @retiring.upon(PartitionInputs.removed).to(retired)
    def stopRetiring(inputs: PartitionInputs, core: LifecycleCore, data: Retiring, epoch: int) -> None:
        leftGroup(core, epoch)

    @retiring.upon(PartitionInputs.stop).to(stopped)
    def stopRetired(inputs: PartitionInputs, core: LifecycleCore, data: Retiring) -> None:
        core.replica.shutdown()

    for name in ("leftEmpty",) + ASKING:
        retiring.upon(getattr(PartitionInputs, name)).loop().returns(None)
    retiring.upon(PartitionInputs.serving).loop().returns(True)

    @retiring.upon(PartitionInputs.describe).loop()
    def describeRetiring(inputs: PartitionInputs, core: LifecycleCore, data: Retiring) -> dict[str, Any]:
        return {"state": "retiring", "since": data.since}

    # Leaving: the latest configuration this replica holds excludes it.
    leaving.upon(PartitionInputs.loaded).loop().returns(None)
    leaving.upon(PartitionInputs.loadFailed).loop().returns(None)

    @leaving.upon(PartitionInputs.placed).to(running)
    def placedBack(inputs: PartitionInputs, core: LifecycleCore, data: Leaving) -> None:
        log.info("partition {pid} is placed on this node again", pid=core.replica.pid)

    @leaving.upon(PartitionInputs.unplaced).to(retiring)
    def undone(inputs: PartitionInputs, core: LifecycleCore, data: Leaving, now: float) -> None:
        log.info(
            "partition {pid}: the configuration excluding this node was undone; it still takes part",
            pid=core.replica.pid,
        )

    @leaving.upon(PartitionInputs.excluded).loop()
    def checkLeft(
        inputs: PartitionInputs, core: LifecycleCore, data: Leaving, now: float, grace: float
    ) -> None:
        if now - data.since > grace:
            log.info(
                "partition {pid}: excluded from its group's configuration for {grace} s without "
                "hearing that it committed; stopping",
                pid=core.replica.pid,
                grace=grace,
            )
            exclusionGraceEnded(inputs, core)

    @leaving.upon(PartitionInputs.dropped).loop()
    def checkLeftDropped(
        inputs: PartitionInputs, core: LifecycleCore, data: Leaving, now: float, grace: float
    ) -> None:
        if now - data.since > grace:
            graceEnded(inputs, core)

    @leaving.upon(PartitionInputs.removed).to(retired)
    def stopLeaving(inputs: PartitionInputs, core: LifecycleCore, data: Leaving, epoch: int) -> None:
        leftGroup(core, epoch)

    @leaving.upon(PartitionInputs.stop).to(stopped)
    def stopLeft(inputs: PartitionInputs, core: LifecycleCore, data: Leaving) -> None:
        core.replica.shutdown()

    @leaving.upon(PartitionInputs.leftEmpty).to(retired)
    def retireLeft(inputs: PartitionInputs, core: LifecycleCore, data: Leaving, epoch: int) -> None:
        retireEmpty(core, epoch)

    @leaving.upon(PartitionInputs.askMembers).to(confirming)
    def askLeft(inputs: PartitionInputs, core: LifecycleCore, data: Leaving, query: ExclusionQuery) -> None:
        core.replica.shutdown()
        log.info(
            "partition {pid}: its replica stopped, data in place; asking the group's current members "
            "whether the configuration excluding this node (entry {index}, term {term}) is committed",
            pid=core.replica.pid,
            index=query.index,
            term=query.term,
        )

    for name in ("retry", "answered", "confirmed"):
        leaving.upon(getattr(PartitionInputs, name)).loop().returns(None)
    leaving.upon(PartitionInputs.serving).loop().returns(True)

    @leaving.upon(PartitionInputs.describe).loop()
    def describeLeaving(inputs: PartitionInputs, core: LifecycleCore, data: Leaving) -> dict[str, Any]:
        return {"state": "leaving", "since": data.since}

    # Dropped: the partition left the routing table; no leader moves its
    # group, every replica stops after the grace period.
    dropped.upon(PartitionInputs.loaded).loop().returns(None)
    dropped.upon(PartitionInputs.loadFailed).loop().returns(None)

    @dropped.upon(PartitionInputs.placed).to(running)
    def placedOnceMore(inputs: PartitionInputs, core: LifecycleCore, data: Dropped) -> None:
        log.info("partition {pid} is placed on this node again", pid=core.replica.pid)

    @dropped.upon(PartitionInputs.unplaced).to(retiring)
    def routedAgain(inputs: PartitionInputs, core: LifecycleCore, data: Dropped, now: float) -> None:
        log.info("partition {pid} is in the routing table again (elsewhere)", pid=core.replica.pid)

    @dropped.upon(PartitionInputs.excluded).to(leaving)
    def leaveDropped(
        inputs: PartitionInputs, core: LifecycleCore, data: Dropped, now: float, grace: float
    ) -> None:
        log.info("partition {pid} is in the routing table again (elsewhere)", pid=core.replica.pid)

    @dropped.upon(PartitionInputs.dropped).loop()
    def checkDropped(
        inputs: PartitionInputs, core: LifecycleCore, data: Dropped, now: float, grace: float
    ) -> None:
        if now - data.since > grace:
            graceEnded(inputs, core)

    @dropped.upon(PartitionInputs.removed).to(retired)
    def stopDropped(inputs: PartitionInputs, core: LifecycleCore, data: Dropped, epoch: int) -> None:
        leftGroup(core, epoch)

    @dropped.upon(PartitionInputs.stop).to(stopped)
    def stopDroppedNow(inputs: PartitionInputs, core: LifecycleCore, data: Dropped) -> None:
        log.info("stopping partition {pid}: no longer in the routing table", pid=core.replica.pid)
        core.replica.shutdown()

    @dropped.upon(PartitionInputs.leftEmpty).to(retired)
    def retireDropped(inputs: PartitionInputs, core: LifecycleCore, data: Dropped, epoch: int) -> None:
        retireEmpty(core, epoch)

    for name in ASKING:
        dropped.upon(getattr(PartitionInputs, name)).loop().returns(None)
    dropped.upon(PartitionInputs.serving).loop().returns(True)

    @dropped.upon(PartitionInputs.describe).loop()
    def describeDropped(inputs: PartitionInputs, core: LifecycleCore, data: Dropped) -> dict[str, Any]:
        return {"state": "dropped", "since": data.since}

    # Failed
    for name in ("loaded", "loadFailed", "placed") + UNPLACED + ASKING:
        failed.upon(getattr(PartitionInputs, name)).loop().returns(None)

    @failed.upon(PartitionInputs.stop).to(stopped)
    def stopFailed(inputs: PartitionInputs, core: LifecycleCore, data: Failed) -> None:
        core.replica.shutdown()

    failed.upon(PartitionInputs.serving).loop().returns(False)

    @failed.upon(PartitionInputs.describe).loop()
    def describeFailed(inputs: PartitionInputs, core: LifecycleCore, data: Failed) -> dict[str, Any]:
        return {"state": "failed", "error": data.why}

    # Retired: stopped for good, its data reclaimed.
    for name in ("loaded", "loadFailed", "placed", "stop") + UNPLACED + ASKING:
        retired.upon(getattr(PartitionInputs, name)).loop().returns(None)
    retired.upon(PartitionInputs.serving).loop().returns(False)

    @retired.upon(PartitionInputs.describe).loop()
    def describeRetired(inputs: PartitionInputs, core: LifecycleCore, data: Retired) -> dict[str, Any]:
        return {"state": "retired", "epoch": data.epoch}

    # Confirming: stopped, data in place; asking the partition's current
    # members whether the configuration excluding it is committed.
    for name in ("loaded", "loadFailed", "unplaced", "excluded", "removed", "leftEmpty", "askMembers"):
        confirming.upon(getattr(PartitionInputs, name)).loop().returns(None)

    @confirming.upon(PartitionInputs.retry).loop()
    def askAgain(inputs: PartitionInputs, core: LifecycleCore, data: Confirming) -> None:
        askRound(inputs, core, data)

    @confirming.upon(PartitionInputs.answered).loop()
    def check(inputs: PartitionInputs, core: LifecycleCore, data: Confirming, answer: CommitAnswer) -> None:
        query = data.query
        if not core.replica.currentMember(answer.src):
            return
        if not proves(answer, query.index, query.term, query.group):
            return
        log.info(
            "partition {pid}: {member}, a current member of its group, holds the configuration excluding "
            "this node (entry {index}, term {term}) committed",
            pid=core.replica.pid,
            member=answer.src,
            index=query.index,
            term=query.term,
        )
        inputs.confirmed(query.epoch)

    @confirming.upon(PartitionInputs.confirmed).to(retired)
    def retireConfirmed(inputs: PartitionInputs, core: LifecycleCore, data: Confirming, epoch: int) -> None:
        data.cancel()
        core.replica.stopAsking()
        log.info("stopping partition {pid}: this node left its group", pid=core.replica.pid)
        core.replica.retireStopped(epoch)

    def quit(core: LifecycleCore, data: Confirming) -> None:
        data.cancel()
        core.replica.stopAsking()

    @confirming.upon(PartitionInputs.placed).to(stopped)
    def placedStopped(inputs: PartitionInputs, core: LifecycleCore, data: Confirming) -> None:
        # (the manager starts it again, with its data)
        quit(core, data)

    @confirming.upon(PartitionInputs.dropped).to(stopped)
    def droppedStopped(
        inputs: PartitionInputs, core: LifecycleCore, data: Confirming, now: float, grace: float
    ) -> None:
        # (no group is left to ask: orphaned)
        quit(core, data)

    @confirming.upon(PartitionInputs.stop).to(stopped)
    def stopConfirming(inputs: PartitionInputs, core: LifecycleCore, data: Confirming) -> None:
        quit(core, data)

    confirming.upon(PartitionInputs.serving).loop().returns(False)

    @confirming.upon(PartitionInputs.describe).loop()
    def describeConfirming(inputs: PartitionInputs, core: LifecycleCore, data: Confirming) -> dict[str, Any]:
        query = data.query
        return {
            "state": "stopped",
            "asking": {"index": query.index, "term": query.term, "rounds": data.rounds},
        }

    # Stopped
    for name in ("loaded", "loadFailed", "placed", "stop") + UNPLACED + ASKING:
        stopped.upon(getattr(PartitionInputs, name)).loop().returns(None)
    stopped.upon(PartitionInputs.serving).loop().returns(False)
    stopped.upon(PartitionInputs.describe).loop().returns({"state": "stopped"})
    return b.build()


#: One per replica: C{PartitionLifecycle(LifecycleCore(replica))}.
PartitionLifecycle = _build()
