"""
The deployment file: YAML declaring networks and services, validated into
L{Stack}, L{NetworkSpec} and L{ServiceSpec} values.

Every error is one L{SpecError} line naming the service (or network) and
the field: C{service jellyfin: healthcheck.interval: '3x' is not a duration}.

Values are resolved here, once: C{${VAR}} / C{${VAR:-default}} from the
environment, C{{secret: FILE}} from C{SECRETS_PATH}, relative volume sources
under C{CONFIG_PATH}.  A secret's value only ever goes into the engine's
container config; what is shown (L{ServiceSpec.display}) names the secret
file instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from suite.constellation.deploy.values import (
    Resolver,
    SpecError,
    boolean,
    mapping,
    parseBytes,
    parseDuration,
    parsePort,
    strings,
)

__all__ = [
    "NetworkSpec",
    "ServiceSpec",
    "SpecError",
    "Stack",
    "loadStack",
    "loadYAML",
    "parseStack",
    "parseDuration",
    "parseBytes",
    "LABEL_SERVICE",
    "LABEL_STACK",
    "LABEL_HASH",
    "LABEL_SPEC",
    "LABEL_NODE",
]

#: Label naming the declared service a container runs.
LABEL_SERVICE = "constellation.deploy.service"
#: Label naming the stack (deployment file) that declared it.
LABEL_STACK = "constellation.deploy.stack"
#: Label holding the content hash of the declared container config.
LABEL_HASH = "constellation.deploy.hash"
#: Label holding the displayable declaration (no secret values), for diffs.
LABEL_SPEC = "constellation.deploy.spec"
#: Label naming the node the container was deployed for (the agent's C{--docker-label} filter).
LABEL_NODE = "constellation.node"

_MAX_FILE = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESTART = ("no", "always", "unless-stopped", "on-failure")

_TOP_KEYS = {"name", "version", "networks", "services"}
_NETWORK_KEYS = {"driver", "internal", "attachable", "subnet", "external", "labels"}
_SERVICE_KEYS = {
    "image",
    "command",
    "entrypoint",
    "environment",
    "volumes",
    "networks",
    "network_mode",
    "ports",
    "healthcheck",
    "labels",
    "expose",
    "restart",
    "resources",
    "placement",
    "user",
    "working_dir",
    "stop_grace_period",
    "cap_add",
    "sysctls",
    "devices",
}
_HEALTH_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
_EXPOSE_KEYS = {"host", "port", "entrypoints", "certresolver", "middlewares", "network", "scheme"}
_RESOURCE_KEYS = {"cpus", "memory", "pids"}
_PLACEMENT_KEYS = {"nodes", "replicas", "priority"}


@dataclass(frozen=True)
class NetworkSpec:
    """
    One declared network.
    """

    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = True
    subnet: str | None = None
    external: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    def engineConfig(self, stack: str) -> dict[str, Any]:
        """
        The engine's C{POST /networks/create} body.
        """
        config: dict[str, Any] = {
            "Name": self.name,
            "Driver": self.driver,
            "Internal": self.internal,
            "Attachable": self.attachable,
            "CheckDuplicate": True,
            "Labels": {**self.labels, LABEL_STACK: stack},
        }
        if self.subnet:
            config["IPAM"] = {"Config": [{"Subnet": self.subnet}]}
        return config


@dataclass(frozen=True)
class ServiceSpec:
    """
    One declared service, resolved.

    @ivar config: the engine's C{POST /containers/create} body, without the
        deployment labels (L{containerConfig} adds them).
    @ivar display: the declaration as shown in plans (secrets named, not shown).
    @ivar networks: extra networks to attach after creation (the first is in C{config}).
    @ivar exclusive: the service publishes host ports or uses the host
        network, so an old and a new container cannot run side by side.
    """

    name: str
    image: str
    config: Mapping[str, Any]
    display: Mapping[str, Any]
    networks: tuple[str, ...] = ()
    placementNodes: tuple[str, ...] = ()
    replicas: int = 1
    priority: str = "high"
    exclusive: bool = False
    healthcheck: bool = False
    healthWait: float = 0.0
    stopGrace: int = 10

    def containerConfig(self, stack: str, node: str) -> dict[str, Any]:
        """
        The create body with the deployment labels (service, stack, node,
        content hash and displayable spec).
        """
        config: dict[str, Any] = json.loads(json.dumps(self.config))
        labels = config.setdefault("Labels", {})
        labels[LABEL_SERVICE] = self.name
        labels[LABEL_STACK] = stack
        labels[LABEL_NODE] = node
        labels.setdefault("com.docker.compose.service", self.name)
        labels[LABEL_SPEC] = json.dumps(self.display, sort_keys=True, separators=(",", ":"))
        labels[LABEL_HASH] = _hash(config)
        return config


@dataclass(frozen=True)
class Stack:
    """
    A whole deployment file.
    """

    name: str
    networks: tuple[NetworkSpec, ...]
    services: tuple[ServiceSpec, ...]

    def service(self, name: str) -> ServiceSpec:
        """
        The service called C{name}.
        """
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


#: libyaml's safe loader when available: faster, and it refuses documents
#: nested past its depth limit instead of recursing until Python's limit.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def loadYAML(text: str | bytes) -> Any:
    """
    Parse a deployment file's YAML with the safe loader.

    @raise yaml.YAMLError: for bad YAML, including a document nested too
        deeply to parse.
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def _hash(config: Mapping[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()[:32]


def _network(name: str, raw: Any, r: Resolver) -> NetworkSpec:
    where = f"network {name}"
    if not _NAME.match(name):
        raise SpecError(f"{where}: not a valid network name")
    body = mapping(raw, where, _NETWORK_KEYS)
    labels = {
        str(k): r.text(v, f"{where}: labels.{k}") for k, v in mapping(body.get("labels"), where).items()
    }
    return NetworkSpec(
        name=name,
        driver=r.text(body.get("driver", "bridge"), f"{where}: driver"),
        internal=boolean(body.get("internal", False), f"{where}: internal"),
        attachable=boolean(body.get("attachable", True), f"{where}: attachable"),
        subnet=r.text(body["subnet"], f"{where}: subnet") if body.get("subnet") else None,
        external=boolean(body.get("external", False), f"{where}: external"),
        labels=labels,
    )


def _service(
    name: str, raw: Any, r: Resolver, networks: Mapping[str, NetworkSpec], domain: str | None
) -> ServiceSpec:
    where = f"service {name}"
    if not _NAME.match(name):
        raise SpecError(f"{where}: not a valid service name (letters, digits, _ . -)")
    body = mapping(raw, where, _SERVICE_KEYS)
    if "image" not in body:
        raise SpecError(f"{where}: image: required")
    image = r.text(body["image"], f"{where}: image").strip()
    if not image or any(c.isspace() for c in image):
        raise SpecError(f"{where}: image: {image!r} is not an image reference")
    config: dict[str, Any] = {"Image": image}
    display: dict[str, Any] = {"image": image}
    hostConfig: dict[str, Any] = {}

    for key, engineKey in (("command", "Cmd"), ("entrypoint", "Entrypoint")):
        if key in body:
            value = strings(body[key], f"{where}: {key}", r, split=True)
            config[engineKey] = value
            display[key] = value

    env: dict[str, str] = {}
    shown: dict[str, str] = {}
    rawEnv = body.get("environment")
    if isinstance(rawEnv, list):
        items: list[tuple[str, Any]] = []
        for i, item in enumerate(rawEnv):
            if not isinstance(item, str) or "=" not in item:
                raise SpecError(f"{where}: environment[{i}]: expected KEY=VALUE")
            k, v = item.split("=", 1)
            items.append((k, v))
    else:
        items = list(mapping(rawEnv, f"{where}: environment").items())
    for k, v in items:
        fieldName = f"{where}: environment.{k}"
        if not _ENV_NAME.match(k):
            raise SpecError(f"{fieldName}: not a variable name")
        if isinstance(v, dict):
            spec = mapping(v, fieldName, {"secret"})
            if "secret" not in spec:
                raise SpecError(f"{fieldName}: expected {{secret: FILE}}")
            env[k] = r.secret(spec["secret"], fieldName)
            shown[k] = f"<secret {spec['secret']}>"
        elif v is None:
            env[k] = ""
            shown[k] = ""
        else:
            env[k] = r.text(v, fieldName)
            shown[k] = env[k]
    if env:
        config["Env"] = [f"{k}={v}" for k, v in sorted(env.items())]
        display["environment"] = dict(sorted(shown.items()))

    binds: list[str] = []
    for i, vol in enumerate(body.get("volumes") or []):
        fieldName = f"{where}: volumes[{i}]"
        text = r.text(vol, fieldName)
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise SpecError(f"{fieldName}: {text!r} is not SOURCE:/container/path[:ro|rw]")
        if len(parts) == 3 and parts[2] not in ("ro", "rw"):
            raise SpecError(f"{fieldName}: mode {parts[2]!r} is not ro or rw")
        base = os.path.realpath(r.configPath)
        source = os.path.normpath(os.path.join(base, parts[0]))
        if source != base and not source.startswith(base + os.sep):
            raise SpecError(f"{fieldName}: source {parts[0]!r} is outside CONFIG_PATH ({r.configPath})")
        binds.append(":".join([source, *parts[1:]]))
    if binds:
        hostConfig["Binds"] = binds
        display["volumes"] = binds

    netNames = strings(body.get("networks"), f"{where}: networks", r)
    for n in netNames:
        if n not in networks:
            raise SpecError(f"{where}: networks: {n!r} is not declared under networks")
    mode = body.get("network_mode")
    if mode is not None:
        mode = r.text(mode, f"{where}: network_mode")
        if mode not in ("host", "none"):
            raise SpecError(f"{where}: network_mode: {mode!r} is not host or none")
        if netNames:
            raise SpecError(f"{where}: network_mode: cannot be used with networks")
        hostConfig["NetworkMode"] = mode
        display["network_mode"] = mode
    elif netNames:
        hostConfig["NetworkMode"] = netNames[0]
        config["NetworkingConfig"] = {"EndpointsConfig": {netNames[0]: {"Aliases": [name]}}}
        display["networks"] = netNames
    exclusive = mode == "host"

    ports = body.get("ports") or []
    if ports:
        if not isinstance(ports, list):
            raise SpecError(f"{where}: ports: expected a list like ['80:80']")
        exposed: dict[str, dict[str, Any]] = {}
        bindings: dict[str, list[dict[str, str]]] = {}
        for i, p in enumerate(ports):
            fieldName = f"{where}: ports[{i}]"
            text = r.text(p, fieldName)
            proto = "tcp"
            if "/" in text:
                text, proto = text.rsplit("/", 1)
                if proto not in ("tcp", "udp"):
                    raise SpecError(f"{fieldName}: protocol {proto!r} is not tcp or udp")
            pieces = text.split(":")
            if len(pieces) == 2:
                hostIP, hostPort, containerPort = "", pieces[0], pieces[1]
            elif len(pieces) == 3:
                hostIP, hostPort, containerPort = pieces
            else:
                raise SpecError(f"{fieldName}: {p!r} is not [IP:]HOST:CONTAINER[/tcp|udp]")
            key = f"{parsePort(containerPort, fieldName)}/{proto}"
            exposed[key] = {}
            bindings.setdefault(key, []).append(
                {"HostIp": hostIP, "HostPort": str(parsePort(hostPort, fieldName))}
            )
        config["ExposedPorts"] = exposed
        hostConfig["PortBindings"] = bindings
        display["ports"] = [str(p) for p in ports]
        exclusive = True

    health = mapping(body.get("healthcheck"), f"{where}: healthcheck", _HEALTH_KEYS)
    healthWait = 0.0
    hasHealth = False
    if health.get("disable"):
        config["Healthcheck"] = {"Test": ["NONE"]}
        display["healthcheck"] = "disabled"
    elif health:
        if "test" not in health:
            raise SpecError(f"{where}: healthcheck.test: required")
        test = health["test"]
        if isinstance(test, str):
            testList = ["CMD-SHELL", r.text(test, f"{where}: healthcheck.test")]
        else:
            testList = strings(test, f"{where}: healthcheck.test", r)
            if not testList or testList[0] not in ("CMD", "CMD-SHELL", "NONE"):
                raise SpecError(f"{where}: healthcheck.test: a list must start with CMD or CMD-SHELL")
        hc: dict[str, Any] = {"Test": testList}
        shownHc: dict[str, Any] = {"test": testList}
        times = {"interval": 30.0, "timeout": 30.0, "start_period": 0.0}
        for k, engineKey in (
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start_period", "StartPeriod"),
        ):
            if k in health:
                seconds = parseDuration(health[k], f"{where}: healthcheck.{k}")
                if k != "start_period" and seconds < 0.001:
                    raise SpecError(f"{where}: healthcheck.{k}: must be at least 1ms")
                hc[engineKey] = int(seconds * 1e9)
                shownHc[k] = health[k]
                times[k] = seconds
        retries = 3
        if "retries" in health:
            retries = health["retries"]
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
                raise SpecError(f"{where}: healthcheck.retries: {retries!r} is not a positive integer")
            hc["Retries"] = retries
            shownHc["retries"] = retries
        config["Healthcheck"] = hc
        display["healthcheck"] = shownHc
        hasHealth = True
        healthWait = times["start_period"] + (retries + 1) * (times["interval"] + times["timeout"])

    labels = {
        str(k): r.text(v, f"{where}: labels.{k}")
        for k, v in mapping(body.get("labels"), f"{where}: labels").items()
    }
    if "expose" in body:
        labels.update(_exposeLabels(name, body["expose"], r, where, domain, hostConfig))
    if labels:
        config["Labels"] = dict(sorted(labels.items()))
        display["labels"] = dict(sorted(labels.items()))

    restart = r.text(body.get("restart", "unless-stopped"), f"{where}: restart")
    policy, _, count = restart.partition(":")
    if policy not in _RESTART or (count and (policy != "on-failure" or not count.isdigit())):
        raise SpecError(
            f"{where}: restart: {restart!r} is not one of no, always, unless-stopped, on-failure[:N]"
        )
    hostConfig["RestartPolicy"] = {
        "Name": policy if policy != "no" else "",
        "MaximumRetryCount": int(count or 0),
    }
    display["restart"] = restart

    resources = mapping(body.get("resources"), f"{where}: resources", _RESOURCE_KEYS)
    if "cpus" in resources:
        cpus = resources["cpus"]
        try:
            nano = int(float(cpus) * 1e9)
        except (TypeError, ValueError):
            nano = 0
        if isinstance(cpus, bool) or nano <= 0:
            raise SpecError(f"{where}: resources.cpus: {cpus!r} is not a positive number")
        hostConfig["NanoCpus"] = nano
    if "memory" in resources:
        hostConfig["Memory"] = parseBytes(resources["memory"], f"{where}: resources.memory")
    if "pids" in resources:
        pids = resources["pids"]
        if isinstance(pids, bool) or not isinstance(pids, int) or pids < 1:
            raise SpecError(f"{where}: resources.pids: {pids!r} is not a positive integer")
        hostConfig["PidsLimit"] = pids
    if resources:
        display["resources"] = dict(resources)

    for key, engineKey in (("user", "User"), ("working_dir", "WorkingDir")):
        if key in body:
            config[engineKey] = r.text(body[key], f"{where}: {key}")
            display[key] = config[engineKey]
    if "cap_add" in body:
        caps = strings(body["cap_add"], f"{where}: cap_add", r)
        for c in caps:
            if not re.match(r"^(CAP_)?[A-Z_]+$", c):
                raise SpecError(f"{where}: cap_add: {c!r} is not a capability name")
        hostConfig["CapAdd"] = caps
        display["cap_add"] = caps
    if "sysctls" in body:
        sysctls = {
            str(k): r.text(v, f"{where}: sysctls.{k}")
            for k, v in mapping(body["sysctls"], f"{where}: sysctls").items()
        }
        hostConfig["Sysctls"] = sysctls
        display["sysctls"] = sysctls
    if "devices" in body:
        devices = []
        for i, d in enumerate(strings(body["devices"], f"{where}: devices", r)):
            hostPath, _, inside = d.partition(":")
            if not hostPath.startswith("/") or (inside and not inside.startswith("/")):
                raise SpecError(f"{where}: devices[{i}]: {d!r} is not /dev/host[:/dev/container]")
            devices.append(
                {"PathOnHost": hostPath, "PathInContainer": inside or hostPath, "CgroupPermissions": "rwm"}
            )
        hostConfig["Devices"] = devices
        display["devices"] = strings(body["devices"], f"{where}: devices", r)
    stopGrace = 10
    if "stop_grace_period" in body:
        stopGrace = max(0, int(parseDuration(body["stop_grace_period"], f"{where}: stop_grace_period")))
        config["StopTimeout"] = stopGrace
        display["stop_grace_period"] = body["stop_grace_period"]

    placement = mapping(body.get("placement"), f"{where}: placement", _PLACEMENT_KEYS)
    nodes = tuple(strings(placement.get("nodes"), f"{where}: placement.nodes", r))
    replicas = placement.get("replicas", 1)
    if replicas == "all":
        replicas = 0
    elif isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise SpecError(f"{where}: placement.replicas: {replicas!r} is not a positive integer or 'all'")
    priority = placement.get("priority", "high")
    if priority not in ("high", "low"):
        raise SpecError(f"{where}: placement.priority: {priority!r} is not high or low")
    if placement:
        display["placement"] = dict(placement)

    config["HostConfig"] = hostConfig
    return ServiceSpec(
        name=name,
        image=image,
        config=config,
        display=display,
        networks=tuple(netNames[1:]),
        placementNodes=nodes,
        replicas=replicas,
        priority=priority,
        exclusive=exclusive,
        healthcheck=hasHealth,
        healthWait=healthWait,
        stopGrace=stopGrace,
    )


def _exposeLabels(
    name: str, raw: Any, r: Resolver, where: str, domain: str | None, hostConfig: Mapping[str, Any]
) -> dict[str, str]:
    """
    Traefik router and service labels from C{expose: {host, port, ...}}.
    """
    expose = mapping(raw, f"{where}: expose", _EXPOSE_KEYS)
    if "port" not in expose:
        raise SpecError(f"{where}: expose.port: required")
    port = parsePort(expose["port"], f"{where}: expose.port")
    host = r.text(expose.get("host", name), f"{where}: expose.host").strip()
    if not host or any(c in host for c in "`, /"):
        raise SpecError(f"{where}: expose.host: {host!r} is not a host name")
    if "." not in host and domain:
        host = f"{host}.{domain}"
    router = name.replace(".", "-")
    labels = {
        "traefik.enable": "true",
        f"traefik.http.routers.{router}.rule": f"Host(`{host}`)",
        f"traefik.http.routers.{router}.service": router,
        f"traefik.http.services.{router}.loadbalancer.server.port": str(port),
    }
    for key, label in (("entrypoints", "entrypoints"), ("middlewares", "middlewares")):
        if key in expose:
            labels[f"traefik.http.routers.{router}.{label}"] = ",".join(
                strings(expose[key], f"{where}: expose.{key}", r)
            )
    if "certresolver" in expose:
        labels[f"traefik.http.routers.{router}.tls.certresolver"] = r.text(
            expose["certresolver"], f"{where}: expose.certresolver"
        )
    if "scheme" in expose:
        scheme = r.text(expose["scheme"], f"{where}: expose.scheme")
        if scheme not in ("http", "https", "h2c"):
            raise SpecError(f"{where}: expose.scheme: {scheme!r} is not http, https or h2c")
        labels[f"traefik.http.services.{router}.loadbalancer.server.scheme"] = scheme
    network = expose.get("network")
    if network is None and hostConfig.get("NetworkMode") not in (None, "host", "none"):
        network = hostConfig["NetworkMode"]
    if network:
        labels["traefik.docker.network"] = r.text(network, f"{where}: expose.network")
    return labels


def parseStack(
    document: Any,
    name: str,
    environ: Mapping[str, str],
    secretsPath: str,
    configPath: str,
    domain: str | None = None,
) -> Stack:
    """
    Validate and resolve a loaded YAML C{document}.

    @param name: the stack name when the file has no C{name:} key.
    @raise SpecError: naming the service or network and the field.
    """
    top = mapping(document, "file", _TOP_KEYS)
    r = Resolver(environ, secretsPath, configPath)
    if "version" in top and top["version"] not in (1, "1"):
        raise SpecError(f"file: version: {top['version']!r} is not supported (1 is)")
    stackName = r.text(top.get("name", name), "file: name")
    if not _NAME.match(stackName):
        raise SpecError(f"file: name: {stackName!r} is not a valid stack name")
    networks = {
        str(n): _network(str(n), v, r) for n, v in mapping(top.get("networks"), "file: networks").items()
    }
    services = mapping(top.get("services"), "file: services")
    if not services:
        raise SpecError("file: services: at least one service is required")
    return Stack(
        name=stackName,
        networks=tuple(networks[n] for n in sorted(networks)),
        services=tuple(_service(n, services[n], r, networks, domain) for n in sorted(services)),
    )


def loadStack(
    path: str, environ: Mapping[str, str], secretsPath: str, configPath: str, domain: str | None = None
) -> Stack:
    """
    Read and validate the deployment file at C{path}.

    @raise SpecError: for an unreadable file, bad YAML, or a bad declaration.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > _MAX_FILE:
        raise SpecError(f"{path}: larger than {_MAX_FILE} bytes")
    try:
        document = loadYAML(data)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    return parseStack(
        document, re.sub(r"[^A-Za-z0-9_.-]", "-", stem) or "stack", environ, secretsPath, configPath, domain
    )
