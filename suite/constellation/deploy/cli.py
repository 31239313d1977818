"""
C{constellation deploy FILE [--dry-run] [--prune]}: apply a deployment file
to this node's Docker engine.

With a running agent (C{--agent}, default C{http://127.0.0.1:8081}), its
C{/api/state} names this node and the live cluster, and each service is
deployed here only when its placement picks this node; without one, every
service whose placement does not name other nodes is deployed here.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import treq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError
from twisted.internet.task import react
from twisted.python import usage

from suite.constellation.deploy.placement import clusterPlacer, localPlacer
from suite.constellation.deploy.plan import DeployError, applyPlan, makePlan
from suite.constellation.deploy.spec import ServiceSpec, SpecError, loadStack
from suite.constellation.docker import DockerClient, DockerError
from suite.constellation.interfaces import IContainerEngine
from suite.constellation.options import ENV as AGENT_ENV
from suite.web.client import BodyTooLarge, collectBody

__all__ = ["DeployOptions", "deploy", "main", "DEFAULT_AGENT", "MAX_ANSWER"]

#: The agent's HTTP provider, where C{/api/state} is served by default.
DEFAULT_AGENT = "http://127.0.0.1:8081"
#: Largest agent answer read (C{/api/state}, C{/api/deploy}), body included.
MAX_ANSWER = 1024 * 1024
_VARS = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class DeployOptions(usage.Options):
    """
    Options of C{constellation deploy}.
    """

    synopsis = "constellation deploy FILE [--dry-run] [--prune] [options]"
    optFlags = [
        ["dry-run", "n", "Print the plan (with a diff of each changed service) and change nothing."],
        ["prune", None, "Remove containers of this stack's services that are no longer declared."],
        ["no-agent", None, "Do not ask an agent for placement; deploy for this node only."],
    ]
    optParameters = [
        [
            "docker",
            None,
            None,
            "Docker Engine API endpoint (CONSTELLATION_DOCKER; unix:/var/run/docker.sock).",
        ],
        [
            "agent",
            None,
            None,
            f"Agent whose /api/state decides placement (CONSTELLATION_AGENT; {DEFAULT_AGENT}).",
        ],
        ["node", None, None, "This node's name without an agent (TS_HOSTNAME; the system hostname)."],
        [
            "timeout",
            None,
            None,
            "Seconds a new container may take to get healthy (default: from its healthcheck).",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ = dict(os.environ if environ is None else environ)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse, accepting options after FILE too (C{deploy FILE --dry-run}).
        """
        args = list(sys.argv[1:] if options is None else options)
        valued = {f"--{p[0]}" for p in self.optParameters}
        flags: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                positional.extend(args[i + 1 :])
                break
            if arg.startswith("-") and arg != "-":
                flags.append(arg)
                if arg in valued and i + 1 < len(args):
                    flags.append(args[i + 1])
                    i += 1
            else:
                positional.append(arg)
            i += 1
        super().parseOptions([*flags, "--", *positional] if positional else flags)

    def parseArgs(self, *paths: str) -> None:
        if len(paths) != 1:
            raise usage.UsageError(f"expected one deployment FILE, got {len(paths)}")
        self["file"] = paths[0]

    def postOptions(self) -> None:
        env = self.environ
        self["docker"] = self["docker"] or env.get("CONSTELLATION_DOCKER") or "unix:/var/run/docker.sock"
        self["agentExplicit"] = bool(self["agent"] or env.get("CONSTELLATION_AGENT"))
        self["agent"] = (self["agent"] or env.get("CONSTELLATION_AGENT") or DEFAULT_AGENT).rstrip("/")
        if not re.match(r"^https?://[^/?#\s]+$", self["agent"]):
            raise usage.UsageError(
                f"--agent (CONSTELLATION_AGENT): {self['agent']!r} is not http(s)://HOST[:PORT]"
            )
        self["node"] = self["node"] or env.get("TS_HOSTNAME") or socket.gethostname()
        self["config-path"] = env.get("CONFIG_PATH") or "/opt/constellation/volumes"
        self["secrets-path"] = env.get("SECRETS_PATH") or "/opt/constellation/secrets"
        # Unset, the agent's DOMAIN is used when one answers (the hash of
        # what is deployed must be the one its reconciler computes), else
        # the agent's default.
        self["domain-set"] = bool(env.get("DOMAIN"))
        self["domain"] = env.get("DOMAIN") or AGENT_ENV["domain"][1]
        if self["timeout"] is not None:
            try:
                self["timeout"] = float(self["timeout"])
            except ValueError:
                raise usage.UsageError(f"--timeout: {self['timeout']!r} is not a number") from None
            if self["timeout"] <= 0:
                raise usage.UsageError("--timeout: must be positive")


async def _readAnswer(reactor: Any, response: Any, agent: str, path: str, timeout: float = 10.0) -> bytes:
    """
    The body of an agent's answer, at most L{MAX_ANSWER} bytes within
    C{timeout} seconds; reading stops (and the connection is dropped) as
    soon as the answer is larger.
    """
    reading = collectBody(response, MAX_ANSWER)
    reading.addTimeout(timeout, reactor)
    try:
        return await reading
    except BodyTooLarge:
        raise DeployError(
            f"agent {agent}: {path} answer is larger than {MAX_ANSWER} bytes (1 MiB); is this the agent?"
        ) from None
    except (TimeoutError, CancelledError):
        raise DeployError(f"agent {agent}: {path} answer not read within {timeout:g} s") from None


async def _agentState(reactor: Any, url: str) -> dict[str, Any]:
    response = await treq.get(url + "/api/state", timeout=10, persistent=False, reactor=reactor)
    if response.code != 200:
        raise DeployError(f"agent {url}: /api/state answered HTTP {response.code}")
    body = await _readAnswer(reactor, response, url, "/api/state")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or "node" not in doc or "nodes" not in doc:
        raise DeployError(f"agent {url}: /api/state is not the agent's state document")
    return doc


async def _publish(reactor: Any, options: Mapping[str, Any], stack: str) -> None:
    """
    Hand the declaration (the file, the values of the variables it uses) to the agent.
    """
    with open(options["file"], encoding="utf-8", errors="replace") as f:
        text = f.read()
    environ = options.get("environ") or os.environ
    env = {name: environ[name] for name in sorted(set(_VARS.findall(text))) if name in environ}
    body = json.dumps({"stack": stack, "file": text, "env": env, "prune": bool(options["prune"])})
    url = options["agent"] + "/api/deploy"
    headers: dict[bytes | str, list[bytes | str]] = {"Content-Type": ["application/json"]}
    try:
        response = await treq.post(
            url,
            body.encode("utf-8"),
            headers=headers,
            timeout=10,
            persistent=False,
            reactor=reactor,
        )
        answer = await _readAnswer(reactor, response, options["agent"], "/api/deploy")
    except DeployError:
        raise
    except Exception as e:  # command line: one DeployError line
        raise DeployError(
            f"agent {options['agent']}: declaration not handed over: {type(e).__name__}: {e}"
        ) from None
    if response.code != 202:
        try:
            reason = json.loads(answer).get("error")
        except (ValueError, AttributeError, RecursionError):
            reason = None
        raise DeployError(
            f"agent {options['agent']}: declaration refused: HTTP {response.code} {reason or ''}".strip()
        )


async def _placement(
    reactor: Any, options: Mapping[str, Any], say: Callable[[str], None]
) -> tuple[str, Callable[[ServiceSpec], tuple[bool, str]], bool, str | None]:
    """
    This node, the placer, whether an agent answered, and the agent's domain.
    """
    if options["no-agent"]:
        return options["node"], localPlacer(options["node"]), False, None
    url = options["agent"]
    try:
        state = await _agentState(reactor, url)
    except DeployError:
        raise
    except Exception as e:  # command line: one DeployError line
        if not options["agentExplicit"] and isinstance(e, ConnectError):
            say(f"no agent at {url}; deploying for node {options['node']} only")
            return options["node"], localPlacer(options["node"]), False, None
        raise DeployError(f"agent {url}: {type(e).__name__}: {e}") from None
    node = str(state["node"])
    say(f"agent {url}: node {node}, {len(state['nodes'])} node(s) in the cluster")
    domain = state.get("domain")
    return node, clusterPlacer(state["nodes"], node), True, domain if isinstance(domain, str) else None


async def deploy(
    reactor: Any,
    options: Mapping[str, Any],
    out: TextIO,
    engine: IContainerEngine | None = None,
) -> int:
    """
    Run one deployment; the exit status (0 done or nothing to do, 1 failed).
    """

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    try:
        stack = loadStack(
            options["file"],
            options.get("environ") or os.environ,
            options["secrets-path"],
            options["config-path"],
            options["domain"],
        )
        if engine is None:
            engine = DockerClient(reactor, options["docker"])
        node, placed, agentUsed, agentDomain = await _placement(reactor, options, say)
        if not options.get("domain-set") and agentDomain and agentDomain != options["domain"]:
            # DOMAIN unset here: build what the agents' reconcilers build.
            stack = loadStack(
                options["file"],
                options.get("environ") or os.environ,
                options["secrets-path"],
                options["config-path"],
                agentDomain,
            )
        plan = await makePlan(engine, stack, node, placed, prune=bool(options["prune"]))
    except (SpecError, DeployError, DockerError) as e:
        sys.stderr.write(f"constellation deploy: error: {e}\n")
        return 1
    for line in plan.describe(diffs=bool(options["dry-run"])):
        say(line)
    if options["dry-run"]:
        say("dry run: nothing was changed")
        return 0
    failures: list[str] = []
    if plan.changes:
        failures = await applyPlan(engine, plan, reactor, say, options.get("timeout"))
    if agentUsed:
        try:
            await _publish(reactor, options, stack.name)
            say("declaration handed to the agent: every node applies its part")
        except DeployError as e:
            failures.append(str(e))
    for failure in failures:
        sys.stderr.write(f"constellation deploy: error: {failure}\n")
    if failures:
        say(f"{len(failures)} failed; the services named above were left as they were")
        return 1
    if plan.changes:
        say(f"deployed: {len(plan.changes)} change(s) applied")
    return 0


def main(argv: Sequence[str]) -> None:
    """
    C{constellation deploy ARGS}: parse, then run under L{react}.
    """
    options = DeployOptions()
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        sys.stderr.write(f"constellation deploy: error: {e}\n")
        sys.stderr.write("constellation deploy: run 'constellation deploy --help' for usage\n")
        raise SystemExit(2) from None
    options["environ"] = options.environ

    async def run(reactor: Any) -> None:
        code = await deploy(reactor, options, sys.stdout)
        if code:
            raise SystemExit(code)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
