"""
The lifecycle of one hosted partition's replica, as an automat machine.

  states:  Starting (initial; the node loads its WAL and snapshot),
           Running, Retiring (placement no longer lists this node; data:
           since when), Failed (the WAL or snapshot could not be loaded;
           data: why), Stopped.
  inputs:  loaded(), loadFailed(why), placed(), unplaced(now, member,
           grace), stop(); queries serving() -> bool, describe() -> dict.
  outputs: stop the node when its load failed (it never serves: Raft's
           Stopped, not Loading, then drops its peers' messages); log
           placement changes; stop the replica (node, transport group,
           storage) when it has left its group or the grace period is over.

Until the node has loaded, its own role machine (Loading) drops every
message the group's transport delivers; nothing here gates the transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.logger import Logger

__all__ = ["PartitionInputs", "LifecycleCore", "PartitionLifecycle"]

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

    def unplaced(self, now: float, member: bool, grace: float) -> None:
        """
        The routing table does not list this node; C{member} says whether the
        group's configuration still names it.
        """

    def stop(self) -> None:
        """
        Stop the replica (retired, or the node shuts down).
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


@dataclass
class LifecycleCore:
    replica: ReplicaActions


@dataclass
class Retiring:
    since: float


@dataclass
class Failed:
    why: str


def _build() -> TypeMachine[PartitionInputs, LifecycleCore]:
    b = TypeMachineBuilder(PartitionInputs, LifecycleCore)
    starting = b.state("Starting")
    running = b.state("Running")

    def retiringData(
        inputs: PartitionInputs, core: LifecycleCore, now: float, member: bool, grace: float
    ) -> Retiring:
        return Retiring(now)

    retiring = b.state("Retiring", retiringData)

    def failedData(inputs: PartitionInputs, core: LifecycleCore, why: str) -> Failed:
        return Failed(why)

    failed = b.state("Failed", failedData)
    stopped = b.state("Stopped")

    # Starting
    starting.upon(PartitionInputs.loaded).to(running).returns(None)

    @starting.upon(PartitionInputs.loadFailed).to(failed)
    def fail(inputs: PartitionInputs, core: LifecycleCore, why: str) -> None:
        log.critical("partition {pid} failed to start: {why}", pid=core.replica.pid, why=why)
        core.replica.abandon()

    starting.upon(PartitionInputs.placed).loop().returns(None)
    starting.upon(PartitionInputs.unplaced).loop().returns(None)

    @starting.upon(PartitionInputs.stop).to(stopped)
    def stopStarting(inputs: PartitionInputs, core: LifecycleCore) -> None:
        core.replica.shutdown()

    starting.upon(PartitionInputs.serving).loop().returns(False)
    starting.upon(PartitionInputs.describe).loop().returns({"state": "starting"})

    # Running
    running.upon(PartitionInputs.loaded).loop().returns(None)
    running.upon(PartitionInputs.loadFailed).loop().returns(None)
    running.upon(PartitionInputs.placed).loop().returns(None)

    @running.upon(PartitionInputs.unplaced).to(retiring)
    def retire(inputs: PartitionInputs, core: LifecycleCore, now: float, member: bool, grace: float) -> None:
        log.info("partition {pid} is no longer placed on this node; retiring", pid=core.replica.pid)

    @running.upon(PartitionInputs.stop).to(stopped)
    def stopRunning(inputs: PartitionInputs, core: LifecycleCore) -> None:
        core.replica.shutdown()

    running.upon(PartitionInputs.serving).loop().returns(True)
    running.upon(PartitionInputs.describe).loop().returns({"state": "running"})

    # Retiring
    retiring.upon(PartitionInputs.loaded).loop().returns(None)
    retiring.upon(PartitionInputs.loadFailed).loop().returns(None)

    @retiring.upon(PartitionInputs.placed).to(running)
    def placedAgain(inputs: PartitionInputs, core: LifecycleCore, data: Retiring) -> None:
        log.info("partition {pid} is placed on this node again", pid=core.replica.pid)

    @retiring.upon(PartitionInputs.unplaced).loop()
    def checkRetired(
        inputs: PartitionInputs, core: LifecycleCore, data: Retiring, now: float, member: bool, grace: float
    ) -> None:
        if not member or now - data.since > grace:
            inputs.stop()

    @retiring.upon(PartitionInputs.stop).to(stopped)
    def stopRetiring(inputs: PartitionInputs, core: LifecycleCore, data: Retiring) -> None:
        log.info("stopping partition {pid}: this node left its group", pid=core.replica.pid)
        core.replica.shutdown()

    retiring.upon(PartitionInputs.serving).loop().returns(True)

    @retiring.upon(PartitionInputs.describe).loop()
    def describeRetiring(inputs: PartitionInputs, core: LifecycleCore, data: Retiring) -> dict[str, Any]:
        return {"state": "retiring", "since": data.since}

    # Failed
    for name in ("loaded", "loadFailed", "placed", "unplaced"):
        failed.upon(getattr(PartitionInputs, name)).loop().returns(None)

    @failed.upon(PartitionInputs.stop).to(stopped)
    def stopFailed(inputs: PartitionInputs, core: LifecycleCore, data: Failed) -> None:
        core.replica.shutdown()

    failed.upon(PartitionInputs.serving).loop().returns(False)

    @failed.upon(PartitionInputs.describe).loop()
    def describeFailed(inputs: PartitionInputs, core: LifecycleCore, data: Failed) -> dict[str, Any]:
        return {"state": "failed", "error": data.why}

    # Stopped
    for name in ("loaded", "loadFailed", "placed", "unplaced", "stop"):
        stopped.upon(getattr(PartitionInputs, name)).loop().returns(None)
    stopped.upon(PartitionInputs.serving).loop().returns(False)
    stopped.upon(PartitionInputs.describe).loop().returns({"state": "stopped"})
    return b.build()


#: One per replica: C{PartitionLifecycle(LifecycleCore(replica))}.
PartitionLifecycle = _build()
