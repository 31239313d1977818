"""
The control plane's state file: parsing, validation and the four feed
documents it publishes (routing, features, warmup, activation).

The file is YAML or JSON (JSON is YAML, so one parser reads both)::

    nodes:                       # optional: where each replica lives
      ceptra-a: {raft: "10.0.0.1:26021", admin: "10.0.0.1:26020",
                 spiffe: "spiffe://example.org/ceptra/a"}
    partitions:                  # required (may be empty)
      - id: p0
        replicas: [ceptra-a, ceptra-b, ceptra-c]
        epoch: 1                 # placement epoch (default 1): raise it with
                                 # every change of replicas
        leader: ceptra-a         # optional hint
    features:                    # optional: flag name -> bool/number/string
      cep.sliding_windows: true
    warmup:                      # optional: partition id -> readiness
      p0: {ready: true, progress: 1.0}
    activation:                  # optional: activation barriers
      barriers:
        - {id: epoch-1, partitions: [p0], ready: false}

Every error names the file and the key path and says why, on one line.

Placement epochs fence placement changes: a partition's replicas may change
only together with a higher C{epoch}, and a reload never lowers one
(L{checkTransition}); nodes apply a partition's placement only in
increasing epoch order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from suite.daemon import ConfigError
from suite.pki.verify import parseSpiffeId
from suite.web.listen import parseHostPort

__all__ = [
    "FEEDS",
    "MAX_STATE_BYTES",
    "FeedDocument",
    "ControlPlaneState",
    "StateError",
    "checkTransition",
    "parseState",
    "loadStateFile",
]

#: The feeds the control plane publishes, in URL order.
FEEDS = ("routing", "features", "warmup", "activation")

#: A state file larger than this is refused (it is read on the reactor thread).
MAX_STATE_BYTES = 8 * 1024 * 1024

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _DuplicateKey(yaml.YAMLError):
    """
    A mapping of the file gives one key twice.
    """

    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__()
        self.problem = f"key {key!r} given twice in one mapping"
        self.problem_mark = mark


class _Loader(_BaseLoader):  # type: ignore[misc]
    """
    libyaml's safe loader when available (much faster on large files),
    refusing a key given twice in one mapping (YAML and JSON parsers
    otherwise keep the last one silently).
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for keyNode, _ in node.value:
            key = self.construct_object(keyNode, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader says why
                break
            if duplicate:
                raise _DuplicateKey(key, keyNode.start_mark)
        return super().construct_mapping(node, deep)


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TOP_KEYS = frozenset({"nodes", "partitions", "features", "warmup", "activation"})


class StateError(ConfigError):
    """
    The state file is unreadable or invalid; the message names the file and key.
    """


@dataclass(frozen=True)
class FeedDocument:
    """
    One published feed: its JSON body and a strong entity tag.

    @ivar body: the serialised JSON document (UTF-8).
    @ivar etag: quoted strong ETag, a hash of the feed's content (stable
        across restarts for the same content).
    """

    feed: str
    body: bytes
    etag: str


@dataclass(frozen=True)
class ControlPlaneState:
    """
    A validated state file.

    @ivar content: per-feed content, the JSON-able payloads without revision.
    """

    nodes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    partitions: tuple[Mapping[str, Any], ...] = ()
    features: Mapping[str, Any] = field(default_factory=dict)
    warmup: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    barriers: tuple[Mapping[str, Any], ...] = ()

    def content(self) -> dict[str, dict[str, Any]]:
        """
        The payload of each feed (without the revision field).
        """
        return {
            "routing": {"nodes": dict(self.nodes), "partitions": list(self.partitions)},
            "features": {"features": dict(self.features)},
            "warmup": {"partitions": dict(self.warmup)},
            "activation": {"barriers": list(self.barriers)},
        }

    def documents(self, revision: int) -> dict[str, FeedDocument]:
        """
        Render every feed as a L{FeedDocument} carrying C{revision}.
        """
        out: dict[str, FeedDocument] = {}
        for feed, payload in self.content().items():
            canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
            etag = '"' + hashlib.sha256(canonical).hexdigest()[:32] + '"'
            body = {"feed": feed, "revision": revision, "etag": etag.strip('"'), **payload}
            out[feed] = FeedDocument(feed, json.dumps(body, sort_keys=True).encode() + b"\n", etag)
        return out


def _fail(source: str, where: str, why: str) -> StateError:
    return StateError(f"{source}: {where}: {why}")


def _checkId(source: str, where: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise _fail(source, where, f"{value!r} is not a valid id (letters, digits, . _ : -; at most 128)")
    return value


def _mapping(source: str, where: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(source, where, "must be a mapping")
    return value


def _list(source: str, where: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(source, where, "must be a list")
    return value


def _scalar(source: str, where: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(source, where, "must be a finite number")
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise _fail(source, where, "must be a boolean, number, string or null")


def _parseNodes(source: str, raw: Any) -> dict[str, dict[str, Any]]:
    nodes: dict[str, dict[str, Any]] = {}
    #: (key, value) -> node already using it: a SPIFFE ID or a Raft address
    #: names one node (CEPtra nodes find themselves, and their peers, by them)
    owners: dict[tuple[str, str], str] = {}
    for name, spec in _mapping(source, "nodes", raw).items():
        _checkId(source, "nodes", name)
        where = f"nodes.{name}"
        spec = _mapping(source, where, spec)
        entry: dict[str, Any] = {}
        for key, value in spec.items():
            if key not in ("raft", "admin", "spiffe"):
                raise _fail(source, f"{where}.{key}", "unknown key (use raft, admin, spiffe)")
            if not isinstance(value, str) or not value:
                raise _fail(source, f"{where}.{key}", "must be a non-empty string")
            if key == "spiffe":
                try:
                    parseSpiffeId(value, allowTrustDomain=False)
                except ValueError as e:
                    raise _fail(source, f"{where}.spiffe", f"must be a spiffe:// URI naming a workload: {e}")
            else:
                try:
                    port = parseHostPort(value, "")[1]
                except ConfigError as e:
                    raise _fail(source, f"{where}.{key}", str(e).removeprefix(": ")) from None
                if port == 0:
                    raise _fail(
                        source, f"{where}.{key}", f"{value!r} has port 0 (give the port it listens on)"
                    )
            if key in ("spiffe", "raft"):
                other = owners.setdefault((key, value), name)
                if other != name:
                    raise _fail(source, f"{where}.{key}", f"{value!r} is already used by node {other!r}")
            entry[key] = value
        nodes[name] = entry
    return nodes


def _parsePartitions(source: str, raw: Any, nodes: Mapping[str, Any]) -> list[dict[str, Any]]:
    if raw is None:
        raise _fail(source, "partitions", "is required (use [] for none)")
    partitions: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, spec in enumerate(_list(source, "partitions", raw)):
        where = f"partitions[{i}]"
        spec = _mapping(source, where, spec)
        for key in spec:
            if key not in ("id", "replicas", "epoch", "leader"):
                raise _fail(source, f"{where}.{key}", "unknown key (use id, replicas, epoch, leader)")
        pid = _checkId(source, f"{where}.id", spec.get("id"))
        if pid in seen:
            raise _fail(source, f"{where}.id", f"duplicate partition {pid!r}")
        seen.add(pid)
        replicas = _list(source, f"{where}.replicas", spec.get("replicas"))
        if not replicas:
            raise _fail(source, f"{where}.replicas", "must name at least one replica")
        for r in replicas:
            _checkId(source, f"{where}.replicas", r)
            if nodes and r not in nodes:
                raise _fail(source, f"{where}.replicas", f"unknown node {r!r} (not in nodes)")
            lacking = [k for k in ("raft", "spiffe") if nodes and k not in nodes[r]]
            if lacking:
                # A replica is a Raft group member: reached at its Raft
                # address, known by its SPIFFE ID.  Without them the nodes
                # would run the group without it.
                raise _fail(
                    source,
                    f"{where}.replicas",
                    f"node {r!r} holds a replica but has no {' and no '.join(lacking)} (nodes.{r})",
                )
        if len(set(replicas)) != len(replicas):
            raise _fail(source, f"{where}.replicas", "lists a replica twice")
        epoch = spec.get("epoch", 1)
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch < 2**53:
            raise _fail(source, f"{where}.epoch", "must be an integer from 1 to 2^53-1")
        entry: dict[str, Any] = {"id": pid, "replicas": list(replicas), "epoch": epoch}
        leader = spec.get("leader")
        if leader is not None:
            if leader not in replicas:
                raise _fail(source, f"{where}.leader", f"{leader!r} is not one of the replicas")
            entry["leader"] = leader
        partitions.append(entry)
    return partitions


def _parseFeatures(source: str, raw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in _mapping(source, "features", raw).items():
        if not isinstance(name, str) or not name:
            raise _fail(source, "features", f"flag name {name!r} must be a non-empty string")
        out[name] = _scalar(source, f"features.{name}", value)
    return out


def _parseWarmup(source: str, raw: Any, partitionIds: set[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pid, spec in _mapping(source, "warmup", raw).items():
        where = f"warmup.{pid}"
        if pid not in partitionIds:
            raise _fail(source, where, f"unknown partition {pid!r}")
        if isinstance(spec, bool):
            spec = {"ready": spec}
        spec = _mapping(source, where, spec)
        ready = spec.get("ready")
        if not isinstance(ready, bool):
            raise _fail(source, f"{where}.ready", "must be true or false")
        entry: dict[str, Any] = {"ready": ready}
        for key, value in spec.items():
            if key == "ready":
                continue
            if key == "progress":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise _fail(source, f"{where}.progress", "must be a number from 0 to 1")
            entry[key] = _scalar(source, f"{where}.{key}", value)
        out[pid] = entry
    return out


def _parseActivation(source: str, raw: Any, partitionIds: set[str]) -> list[dict[str, Any]]:
    spec = _mapping(source, "activation", raw)
    for key in spec:
        if key != "barriers":
            raise _fail(source, f"activation.{key}", "unknown key (use barriers)")
    barriers: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, b in enumerate(_list(source, "activation.barriers", spec.get("barriers"))):
        where = f"activation.barriers[{i}]"
        b = _mapping(source, where, b)
        bid = _checkId(source, f"{where}.id", b.get("id"))
        if bid in seen:
            raise _fail(source, f"{where}.id", f"duplicate barrier {bid!r}")
        seen.add(bid)
        parts = _list(source, f"{where}.partitions", b.get("partitions"))
        if not parts:
            raise _fail(
                source,
                f"{where}.partitions",
                "must name at least one partition (a barrier holds back the nodes hosting them)",
            )
        for p in parts:
            if p not in partitionIds:
                raise _fail(source, f"{where}.partitions", f"unknown partition {p!r}")
        ready = b.get("ready", False)
        if not isinstance(ready, bool):
            raise _fail(source, f"{where}.ready", "must be true or false")
        entry: dict[str, Any] = {"id": bid, "partitions": list(parts), "ready": ready}
        for key, value in b.items():
            if key not in ("id", "partitions", "ready"):
                entry[key] = _scalar(source, f"{where}.{key}", value)
        barriers.append(entry)
    return barriers


def checkTransition(old: ControlPlaneState, new: ControlPlaneState, source: str = "<state>") -> None:
    """
    Refuse a new state that lowers a partition's epoch or changes its
    replicas without raising it (partitions added or removed are free).

    @raise StateError: naming C{source}, the partition's key path and why.
    """
    before = {p["id"]: p for p in old.partitions}
    for i, p in enumerate(new.partitions):
        was = before.get(p["id"])
        if was is None:
            continue
        where = f"partitions[{i}].epoch"
        if p["epoch"] < was["epoch"]:
            raise _fail(source, where, f"{p['epoch']} is lower than the published epoch {was['epoch']}")
        if p["replicas"] != was["replicas"] and p["epoch"] == was["epoch"]:
            raise _fail(
                source,
                where,
                f"replicas of {p['id']} changed from {was['replicas']} to {p['replicas']} "
                f"without raising the epoch (published {was['epoch']})",
            )
    # A node's SPIFFE ID is its identity in every group it is a member of:
    # changing it replaces those replicas, a change of placement like any.
    for name, node in new.nodes.items():
        spiffe, previous = node.get("spiffe"), old.nodes.get(name, {}).get("spiffe")
        if previous is None or spiffe == previous:
            continue
        held = [
            p["id"]
            for p in new.partitions
            if name in p["replicas"] and p["id"] in before and p["epoch"] <= before[p["id"]]["epoch"]
        ]
        if held:
            raise _fail(
                source,
                f"nodes.{name}.spiffe",
                f"changed from {previous!r} to {spiffe!r} while the node holds replicas of {held} "
                "whose epoch is not raised (a new identity is a new replica)",
            )


def parseState(text: str | bytes, source: str = "<state>") -> ControlPlaneState:
    """
    Parse and validate state file text.

    @param source: the file name used in error messages.
    @raise StateError: naming C{source}, the key and the reason.
    """
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "parse"
        problem = getattr(e, "problem", None) or "invalid YAML/JSON"
        raise _fail(source, where, str(problem)) from None
    if not isinstance(raw, dict):
        raise StateError(f"{source}: must hold a mapping with a 'partitions' key")
    for key in raw:
        if key not in _TOP_KEYS:
            raise _fail(source, str(key), "unknown key (use " + ", ".join(sorted(_TOP_KEYS)) + ")")
    nodes = _parseNodes(source, raw.get("nodes"))
    partitions = _parsePartitions(source, raw.get("partitions"), nodes)
    ids = {p["id"] for p in partitions}
    return ControlPlaneState(
        nodes=nodes,
        partitions=tuple(partitions),
        features=_parseFeatures(source, raw.get("features")),
        warmup=_parseWarmup(source, raw.get("warmup"), ids),
        barriers=tuple(_parseActivation(source, raw.get("activation"), ids)),
    )


def loadStateFile(path: str) -> ControlPlaneState:
    """
    Read and validate the state file at C{path}.

    @raise StateError: unreadable, too large or invalid, naming C{path}.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except OSError as e:
        raise StateError(f"{path}: cannot read state file: {e.strerror or e}") from None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"{path}: state file larger than {MAX_STATE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StateError(f"{path}: state file is not UTF-8") from None
    return parseState(text, os.fspath(path))
