"""
Compare a declared L{Stack} with what the engine runs, and apply the difference.

    plan = await makePlan(engine, stack, node, placed)
    for line in plan.describe(): print(line)
    failures = await applyPlan(engine, plan, clock)

A service's containers carry its content hash (L{LABEL_HASH}); a container
whose hash equals the declared one is left alone.  A changed service is
replaced create-then-swap: the new container starts beside the old one
under a temporary name, and only once it is healthy (or, without a
healthcheck, still running after a short settle time) is the old one
removed and the new one renamed.  A service publishing host ports or on
the host network cannot run twice, so its old container is stopped first
and started again if the new one fails.  Either way a failure leaves the
service as it was.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from suite.constellation.deploy.spec import (
    LABEL_HASH,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_SPEC,
    LABEL_STACK,
    NetworkSpec,
    ServiceSpec,
    Stack,
)
from suite.constellation.docker import DockerError
from suite.constellation.interfaces import IContainerEngine

__all__ = ["Action", "Plan", "makePlan", "applyPlan", "DeployError"]

#: Seconds a container without healthcheck must stay running after start.
SETTLE = 1.0
#: Seconds between health polls while waiting for a new container.
POLL = 0.5


class DeployError(Exception):
    """
    One service (or network) could not be deployed; one line naming it.
    """


@dataclass
class Action:
    """
    One step of a plan.

    @ivar kind: C{network} (create), C{create}, C{replace}, C{start},
        C{unchanged}, C{remove} (pruned or moved away), C{undeclared} (kept:
        no C{--prune}), C{elsewhere} (placed on other nodes).
    """

    kind: str
    name: str
    spec: ServiceSpec | None = None
    network: NetworkSpec | None = None
    config: Mapping[str, Any] | None = None
    current: list[Mapping[str, Any]] = field(default_factory=list)
    pull: bool = False
    diff: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def changes(self) -> bool:
        """
        Whether applying this action changes anything.
        """
        return self.kind in ("network", "create", "replace", "start", "remove")


@dataclass
class Plan:
    """
    Everything a deployment would do on one node.
    """

    stack: str
    node: str
    actions: list[Action]

    @property
    def changes(self) -> list[Action]:
        """
        The actions that change something.
        """
        return [a for a in self.actions if a.changes]

    def describe(self, diffs: bool = False) -> list[str]:
        """
        One line per action (with C{diffs}, a unified diff under each replacement).
        """
        out: list[str] = []
        for a in self.actions:
            what = "network" if a.kind == "network" else "service"
            text = {
                "network": "create",
                "create": "create",
                "replace": "replace (declaration changed)",
                "start": "start (stopped container is up to date)",
                "unchanged": "unchanged",
                "remove": "remove",
                "undeclared": "not declared (kept; --prune removes it)",
                "elsewhere": "placed on another node",
            }[a.kind]
            line = f"{what} {a.name}: {text}"
            if a.pull:
                line += f", pulling {a.spec.image if a.spec else ''}"
            if a.note:
                line += f" ({a.note})"
            out.append(line)
            if diffs and a.diff:
                out.extend("    " + d for d in a.diff)
        n = len(self.changes)
        if n == 0:
            out.append(f"nothing to change: stack {self.stack} is up to date on node {self.node}")
        else:
            out.append(f"{n} change{'s' if n != 1 else ''} for stack {self.stack} on node {self.node}")
        return out


def _labels(c: Mapping[str, Any]) -> Mapping[str, str]:
    return c.get("Labels") or {}


def _name(c: Mapping[str, Any]) -> str:
    names = c.get("Names") or [c.get("Id", "")[:12]]
    return str(names[0]).lstrip("/")


def _diff(current: Mapping[str, Any], declared: Mapping[str, Any], name: str) -> list[str]:
    try:
        old = json.loads(_labels(current).get(LABEL_SPEC) or "{}")
    except ValueError:
        old = {}
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(dict(declared), indent=2, sort_keys=True).splitlines()
    lines = list(difflib.unified_diff(a, b, f"{name} (running)", f"{name} (declared)", lineterm="", n=1))
    return lines or ["(secret values, placement node or engine settings changed)"]


async def makePlan(
    engine: IContainerEngine,
    stack: Stack,
    node: str,
    placed: Callable[[ServiceSpec], tuple[bool, str]],
    prune: bool = False,
) -> Plan:
    """
    What to do on C{node}: C{placed(service)} says whether C{service} runs
    here (and, when not, a note on where it runs).

    @raise DockerError: when the engine cannot be read.
    """
    actions: list[Action] = []
    existing = {str(n["Name"]) for n in await engine.networks()}
    for net in stack.networks:
        if net.name in existing:
            continue
        if net.external:
            raise DeployError(f"network {net.name}: external network does not exist")
        actions.append(Action("network", net.name, network=net))
    running = await engine.containers([f"{LABEL_STACK}={stack.name}", f"{LABEL_NODE}={node}"], all=True)
    byService: dict[str, list[Mapping[str, Any]]] = {}
    for c in running:
        byService.setdefault(_labels(c).get(LABEL_SERVICE, ""), []).append(c)
    images: dict[str, bool] = {}
    for spec in stack.services:
        current = sorted(byService.pop(spec.name, []), key=_name)
        here, note = placed(spec)
        if not here:
            if current:
                actions.append(Action("remove", spec.name, spec=spec, current=current, note=note))
            else:
                actions.append(Action("elsewhere", spec.name, spec=spec, note=note))
            continue
        config = spec.containerConfig(stack.name, node)
        want = config["Labels"][LABEL_HASH]
        same = [c for c in current if _labels(c).get(LABEL_HASH) == want and _name(c) == spec.name]
        if len(current) == 1 and same:
            kind = "unchanged" if current[0].get("State") == "running" else "start"
            actions.append(Action(kind, spec.name, spec=spec, config=config, current=current))
            continue
        if spec.image not in images:
            images[spec.image] = await engine.image(spec.image) is not None
        kind = "replace" if current else "create"
        diff = _diff(current[0], spec.display, spec.name) if current else []
        actions.append(
            Action(
                kind,
                spec.name,
                spec=spec,
                config=config,
                current=current,
                pull=not images[spec.image],
                diff=diff,
            )
        )
    for service, containers in sorted(byService.items()):
        kind = "remove" if prune else "undeclared"
        note = "not declared" if prune else ""
        actions.append(Action(kind, service or "(unnamed)", current=containers, note=note))
    return Plan(stack.name, node, actions)


async def _wait(
    engine: IContainerEngine, cid: str, spec: ServiceSpec, clock: IReactorTime, limit: float
) -> None:
    """
    Wait for a new container to be healthy (or to keep running, without a
    healthcheck).

    @raise DeployError: it exited, turned unhealthy, or did not get healthy in time.
    """
    waited = 0.0
    limit = max(limit, SETTLE)
    while True:
        info = await engine.inspect(cid)
        state = info.get("State") or {}
        if not state.get("Running"):
            raise DeployError(
                f"service {spec.name}: new container exited with code {state.get('ExitCode')}"
                + (f" ({state['Error']})" if state.get("Error") else "")
            )
        health = (state.get("Health") or {}).get("Status")
        if spec.healthcheck:
            if health == "healthy":
                return
            if health == "unhealthy":
                log = (state.get("Health") or {}).get("Log") or [{}]
                output = str(log[-1].get("Output") or "").strip().splitlines()
                raise DeployError(
                    f"service {spec.name}: new container is unhealthy"
                    + (f" (healthcheck said: {output[-1][:200]})" if output else "")
                )
        elif waited >= SETTLE:
            return
        if waited >= limit:
            raise DeployError(f"service {spec.name}: new container not healthy within {limit:g} s")
        await deferLater(clock, POLL, lambda: None)
        waited += POLL


async def _removeAll(
    engine: IContainerEngine, containers: Sequence[Mapping[str, Any]], grace: int | None
) -> None:
    for c in containers:
        cid = str(c["Id"])
        if c.get("State") == "running":
            await engine.stopContainer(cid, grace)
        await engine.removeContainer(cid, True)


async def _swap(
    engine: IContainerEngine,
    action: Action,
    clock: IReactorTime,
    timeout: float | None,
    report: Callable[[str], None],
) -> None:
    spec, config = action.spec, action.config
    assert spec is not None and config is not None
    if action.pull:
        report(f"service {spec.name}: pulling {spec.image}")
        try:
            await engine.pull(spec.image)
        except DockerError as e:
            raise DeployError(f"service {spec.name}: image: {e}") from None
    if action.kind == "start":
        await engine.startContainer(str(action.current[0]["Id"]))
        return
    temp = f"{spec.name}-next-{config['Labels'][LABEL_HASH][:8]}"
    old = [c for c in action.current if _name(c) != temp]
    stale = [c for c in action.current if _name(c) == temp]
    # A new container left running by an interrupted run (its swap never
    # finished) is adopted rather than created again.
    adopted = [
        c
        for c in stale
        if _labels(c).get(LABEL_HASH) == config["Labels"][LABEL_HASH] and c.get("State") == "running"
    ][:1]
    await _removeAll(engine, [c for c in stale if c not in adopted], 0)
    stopped: list[str] = []
    if spec.exclusive:
        for c in old:
            if c.get("State") == "running":
                await engine.stopContainer(str(c["Id"]), spec.stopGrace)
                stopped.append(str(c["Id"]))
    cid: str | None = str(adopted[0]["Id"]) if adopted else None
    try:
        try:
            if cid is None:
                cid = await engine.createContainer(temp, config)
                for net in spec.networks:
                    await engine.connectNetwork(net, cid, [spec.name])
                await engine.startContainer(cid)
        except DockerError as e:
            raise DeployError(f"service {spec.name}: {e}") from None
        await _wait(engine, cid, spec, clock, spec.healthWait if timeout is None else timeout)
    except BaseException:  # clean up and re-raise
        if cid is not None:
            try:
                await engine.removeContainer(cid, True)
            except DockerError as e:
                report(f"service {spec.name}: could not remove the failed new container: {e}")
        for oldID in stopped:
            try:
                await engine.startContainer(oldID)
            except DockerError as e:
                report(f"service {spec.name}: could not restart the old container: {e}")
        raise
    await _removeAll(engine, old, spec.stopGrace)
    await engine.renameContainer(cid, spec.name)


async def applyPlan(
    engine: IContainerEngine,
    plan: Plan,
    clock: IReactorTime,
    report: Callable[[str], None],
    timeout: float | None = None,
) -> list[str]:
    """
    Carry out C{plan}: networks first, then each service on its own (a
    failure of one leaves it as it was and does not stop the others).

    @param timeout: seconds a new container may take to get healthy
        (default: from its healthcheck: start period plus retries+1
        intervals and timeouts).
    @return: one line per failure (empty when everything was applied).
    """
    failures: list[str] = []
    for a in plan.actions:
        if a.kind != "network" or a.network is None:
            continue
        try:
            await engine.createNetwork(a.network.engineConfig(plan.stack))
            report(f"network {a.name}: created")
        except DockerError as e:
            failures.append(f"network {a.name}: {e}")
    if failures:
        return failures
    for a in plan.actions:
        try:
            if a.kind in ("create", "replace", "start"):
                await _swap(engine, a, clock, timeout, report)
                report(f"service {a.name}: {'started' if a.kind == 'start' else a.kind + 'd'}")
            elif a.kind == "remove":
                await _removeAll(engine, a.current, a.spec.stopGrace if a.spec else None)
                report(f"service {a.name}: removed")
        except DeployError as e:
            failures.append(str(e))
        except DockerError as e:
            failures.append(f"service {a.name}: {e}")
    return failures
