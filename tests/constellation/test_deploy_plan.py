"""
Plans and their application against an in-memory engine, on a fake clock:
the orders of operations the real engine tests cannot force (a service
that cannot run twice, an engine refusing a network, a health wait
running out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.constellation.deploy.placement import localPlacer
from suite.constellation.deploy.plan import applyPlan, makePlan
from suite.constellation.deploy.spec import (
    LABEL_HASH,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_STACK,
    Stack,
    parseStack,
)
from suite.constellation.docker import DockerError
from suite.constellation.interfaces import IContainerEngine


@implementer(IContainerEngine)
class FakeEngine:
    """
    Containers and networks in dictionaries; every call is recorded.

    @ivar behaviour: image command word -> what a started container does:
        C{exit} (stops at once), C{unhealthy}, C{starting} (never healthy),
        anything else: healthy.
    """

    description = "fake"
    apiVersion = "1.44"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.containers_: dict[str, dict[str, Any]] = {}
        self.nets: list[str] = []
        self.images = {"img"}
        self.failNetworks = False
        self.seq = 0

    async def negotiate(self) -> str:
        return self.apiVersion

    async def containers(self, labels: Any = (), all: bool = False) -> list[dict[str, Any]]:
        wanted = [tuple(x.split("=", 1)) for x in labels]
        return [
            {"Id": c["Id"], "Names": ["/" + c["Name"]], "Labels": c["Labels"], "State": c["State"]}
            for c in self.containers_.values()
            if not [k for k, v in wanted if c["Labels"].get(k) != v]
        ]

    async def inspect(self, containerID: str) -> dict[str, Any]:
        c = self.containers_[containerID]
        state: dict[str, Any] = {
            "Running": c["State"] == "running",
            "ExitCode": 0 if c["State"] == "running" else 1,
        }
        if c["Health"]:
            state["Health"] = {"Status": c["Health"], "Log": [{"Output": "no /tmp/ok\n"}]}
        return {"Id": containerID, "State": state}

    async def monitored(self, labels: Any = ()) -> list[Any]:
        return []

    def events(self, onEvent: Any, labels: Any = ()) -> Any:
        raise NotImplementedError()

    async def networks(self) -> list[dict[str, Any]]:
        return [{"Name": n} for n in self.nets]

    async def createNetwork(self, config: Mapping[str, Any]) -> str:
        self.calls.append(("createNetwork", config["Name"]))
        if self.failNetworks:
            raise DockerError("docker: POST /networks/create on fake: HTTP 500: no pool")
        self.nets.append(config["Name"])
        return config["Name"]

    async def connectNetwork(self, network: str, containerID: str, aliases: Any = ()) -> None:
        self.calls.append(("connect", network, self.containers_[containerID]["Name"]))

    async def image(self, name: str) -> dict[str, Any] | None:
        return {"Id": name} if name in self.images else None

    async def pull(self, image: str, timeout: float = 600.0) -> None:
        self.calls.append(("pull", image))
        raise DockerError(f"docker: pull {image}: registry unreachable")

    async def createContainer(self, name: str, config: Mapping[str, Any]) -> str:
        self.seq += 1
        cid = f"c{self.seq}"
        if any(c["Name"] == name for c in self.containers_.values()):
            raise DockerError(f"docker: name {name} in use")
        self.containers_[cid] = {
            "Id": cid,
            "Name": name,
            "Labels": dict(config["Labels"]),
            "State": "created",
            "Health": None,
            "Cmd": list(config.get("Cmd") or []),
            "healthcheck": "Healthcheck" in config,
        }
        self.calls.append(("create", name))
        return cid

    async def startContainer(self, containerID: str) -> None:
        c = self.containers_[containerID]
        self.calls.append(("start", c["Name"]))
        behaviour = (c["Cmd"] or ["ok"])[0]
        c["State"] = "exited" if behaviour == "exit" else "running"
        if c["healthcheck"]:
            c["Health"] = {"unhealthy": "unhealthy", "starting": "starting"}.get(behaviour, "healthy")

    async def stopContainer(self, containerID: str, grace: int | None = None) -> None:
        self.calls.append(("stop", self.containers_[containerID]["Name"]))
        self.containers_[containerID]["State"] = "exited"

    async def renameContainer(self, containerID: str, name: str) -> None:
        self.calls.append(("rename", self.containers_[containerID]["Name"], name))
        self.containers_[containerID]["Name"] = name

    async def removeContainer(self, containerID: str, force: bool = True) -> None:
        self.calls.append(("remove", self.containers_.pop(containerID)["Name"]))

    async def execute(self, containerID: str, command: Any, timeout: float = 15.0) -> int:
        raise NotImplementedError()


def stack(services: dict[str, Any], networks: dict[str, Any] | None = None) -> Stack:
    return parseStack({"services": services, "networks": networks or {}}, "s", {}, "/", "/v", None)


class PlanTests(SynchronousTestCase):
    """
    L{makePlan} and L{applyPlan} on L{FakeEngine}.
    """

    def setUp(self) -> None:
        self.engine = FakeEngine()
        self.clock = Clock()
        self.lines: list[str] = []

    def apply(self, s: Stack, prune: bool = False, timeout: float | None = None) -> tuple[Any, list[str]]:
        plan = self.successResultOf(
            Deferred.fromCoroutine(makePlan(self.engine, s, "n", localPlacer("n"), prune))
        )
        d = Deferred.fromCoroutine(applyPlan(self.engine, plan, self.clock, self.lines.append, timeout))
        for _ in range(1000):
            if d.called:
                break
            self.clock.advance(0.5)
        return plan, self.successResultOf(d)

    def test_interface(self) -> None:
        """
        The in-memory engine provides L{IContainerEngine}, as the real client does.
        """
        self.assertTrue(verifyObject(IContainerEngine, self.engine))

    def test_createThenSwap(self) -> None:
        """
        A changed service gets its new container under a temporary name,
        healthy, before the old one is stopped and removed and the new one
        renamed; the extra networks are attached before start.
        """
        nets: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
        self.apply(
            stack(
                {
                    "web": {
                        "image": "img",
                        "command": "one",
                        "networks": ["a", "b"],
                        "healthcheck": {"test": "true", "interval": "1s"},
                    }
                },
                nets,
            )
        )
        self.engine.calls.clear()
        plan, failures = self.apply(
            stack(
                {
                    "web": {
                        "image": "img",
                        "command": "two",
                        "networks": ["a", "b"],
                        "healthcheck": {"test": "true", "interval": "1s"},
                    }
                },
                nets,
            )
        )
        self.assertEqual(failures, [])
        temp = [c[1] for c in self.engine.calls if c[0] == "create"][0]
        self.assertTrue(temp.startswith("web-next-"))
        self.assertEqual(
            self.engine.calls,
            [
                ("create", temp),
                ("connect", "b", temp),
                ("start", temp),
                ("stop", "web"),
                ("remove", "web"),
                ("rename", temp, "web"),
            ],
        )
        self.assertEqual([c["Name"] for c in self.engine.containers_.values()], ["web"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_interruptedSwapAdopted(self) -> None:
        """
        A run interrupted after starting the new container (both running,
        the new one under its temporary name) is finished by the next run:
        the new container is adopted, not created again.
        """
        hc = {"test": "true", "interval": "1s"}
        self.apply(stack({"web": {"image": "img", "command": "one", "healthcheck": hc}}))
        declared = stack({"web": {"image": "img", "command": "two", "healthcheck": hc}})
        config = declared.service("web").containerConfig("s", "n")
        temp = f"web-next-{config['Labels'][LABEL_HASH][:8]}"
        cid = self.successResultOf(Deferred.fromCoroutine(self.engine.createContainer(temp, config)))
        self.successResultOf(Deferred.fromCoroutine(self.engine.startContainer(cid)))
        self.engine.calls.clear()
        plan, failures = self.apply(declared)
        self.assertEqual(failures, [])
        self.assertEqual([a.kind for a in plan.actions], ["replace"])
        self.assertEqual(self.engine.calls, [("stop", "web"), ("remove", "web"), ("rename", temp, "web")])
        self.assertEqual(list(self.engine.containers_), [cid])

    def test_exclusiveRestoresOld(self) -> None:
        """
        A service on the host network is stopped before its replacement
        starts; when the replacement exits, it is removed and the old
        container is started again; the error names the service.
        """
        self.apply(stack({"proxy": {"image": "img", "command": "ok", "network_mode": "host"}}))
        old = list(self.engine.containers_)
        self.engine.calls.clear()
        _, failures = self.apply(
            stack({"proxy": {"image": "img", "command": "exit", "network_mode": "host"}})
        )
        self.assertEqual(failures, ["service proxy: new container exited with code 1"])
        names = [c for c in self.engine.calls]
        temp = names[1][1]
        self.assertEqual(
            names,
            [("stop", "proxy"), ("create", temp), ("start", temp), ("remove", temp), ("start", "proxy")],
        )
        self.assertEqual(list(self.engine.containers_), old)
        self.assertEqual(self.engine.containers_[old[0]]["State"], "running")

    def test_unhealthyAndTimeout(self) -> None:
        """
        An unhealthy replacement is reported with its healthcheck's output;
        one stuck in C{starting} fails once the timeout runs out; the old
        container stays in both cases.
        """
        hc = {"test": "true", "interval": "1s", "timeout": "1s", "retries": 1}
        self.apply(stack({"w": {"image": "img", "command": "ok", "healthcheck": hc}}))
        old = dict(self.engine.containers_)
        _, failures = self.apply(stack({"w": {"image": "img", "command": "unhealthy", "healthcheck": hc}}))
        self.assertEqual(failures, ["service w: new container is unhealthy (healthcheck said: no /tmp/ok)"])
        _, failures = self.apply(
            stack({"w": {"image": "img", "command": "starting", "healthcheck": hc}}), timeout=5
        )
        self.assertEqual(failures, ["service w: new container not healthy within 5 s"])
        self.assertEqual(list(self.engine.containers_), list(old))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_networkFailureStopsServices(self) -> None:
        """
        A network the engine refuses is reported and no service is touched.
        """
        self.engine.failNetworks = True
        _, failures = self.apply(stack({"a": {"image": "img", "networks": ["n1"]}}, {"n1": {}}))
        self.assertEqual(failures, ["network n1: docker: POST /networks/create on fake: HTTP 500: no pool"])
        self.assertEqual(self.engine.containers_, {})

    def test_pullFailureAndOthers(self) -> None:
        """
        A failed pull fails its service only; the other service is created.
        """
        _, failures = self.apply(stack({"a": {"image": "remote/x:1"}, "b": {"image": "img"}}))
        self.assertEqual(failures, ["service a: image: docker: pull remote/x:1: registry unreachable"])
        self.assertEqual([c["Name"] for c in self.engine.containers_.values()], ["b"])

    def test_scopeAndPrune(self) -> None:
        """
        Only this stack's containers for this node are considered; an
        undeclared one is listed, and removed only with prune; a service
        whose placement excludes this node has its container removed here.
        """
        self.engine.containers_["x"] = {
            "Id": "x",
            "Name": "other",
            "State": "running",
            "Health": None,
            "Cmd": [],
            "healthcheck": False,
            "Labels": {LABEL_STACK: "s", LABEL_SERVICE: "other", LABEL_NODE: "elsewhere"},
        }
        self.apply(stack({"a": {"image": "img"}, "gone": {"image": "img"}}))
        plan, _ = self.apply(
            stack({"a": {"image": "img"}, "moved": {"image": "img", "placement": {"nodes": ["m"]}}})
        )
        self.assertEqual(
            [(a.kind, a.name) for a in plan.actions],
            [("unchanged", "a"), ("elsewhere", "moved"), ("undeclared", "gone")],
        )
        self.assertIn("service gone: not declared (kept; --prune removes it)", plan.describe())
        plan, _ = self.apply(stack({"a": {"image": "img"}}), prune=True)
        self.assertEqual([(a.kind, a.name) for a in plan.actions], [("unchanged", "a"), ("remove", "gone")])
        self.assertEqual(sorted(c["Name"] for c in self.engine.containers_.values()), ["a", "other"])
        self.apply(stack({"a": {"image": "img", "placement": {"nodes": ["m"]}}}))
        self.assertEqual(sorted(c["Name"] for c in self.engine.containers_.values()), ["other"])
        plan, _ = self.apply(stack({"a": {"image": "img", "placement": {"nodes": ["m"]}}}))
        self.assertEqual(plan.describe()[-1], "nothing to change: stack s is up to date on node n")
