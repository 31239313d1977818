"""
The REST API (twisted.web): /health, /peers, /cdms, /objects, /metrics and
/openapi.json.  Bearer tokens guard /peers, /cdms and /objects (read for
GET, write for changes, admin for peer changes); every error is JSON.
"""

from __future__ import annotations

import json
import re
import time as _time
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.cred.tokens import ADMIN, READ, WRITE, Permission, TokenChecker
from suite.cred.web import requireBearer
from suite.spacecomms import openapi
from suite.spacecomms.cdm.jsonfmt import fromDict
from suite.spacecomms.cdm.model import CDMError, decode, encode, epochSeconds
from suite.spacecomms.cdm.sample import isoTime
from suite.spacecomms.config import _Checker, parsePeer
from suite.spacecomms.envelope import OBJECT_WITHDRAW_REASONS, WITHDRAW_REASONS
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.store import Record
from suite.web.errors import jsonError, jsonResponse

__all__ = ["makeAPIResource", "makeTokenChecker"]

log = Logger(namespace="spacecomms.api")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_LIMIT = 10000


class APIError(Exception):
    def __init__(self, code: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.extra = extra


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else isoTime(seconds) + "Z"


def _arg(request: IRequest, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise APIError(400, f"query parameter {name}: not UTF-8")


def _body(request: IRequest) -> bytes:
    content = request.content
    return content.read() if content is not None else b""


def _jsonBody(request: IRequest) -> Any:
    raw = _body(request)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise APIError(400, "request body: not valid JSON")


class _Base(Resource):
    """
    Method dispatch with JSON errors: 405 for other methods, the reason of
    an L{APIError}, and 500 (logged, no traceback) for anything else.
    """

    methods: tuple[str, ...] = ()

    def __init__(self, node: SpaceNode) -> None:
        super().__init__()
        self.node = node

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return _NotFound()

    def render(self, request: IRequest) -> bytes:
        method = (request.method or b"").decode("ascii", "replace").upper()
        if method == "HEAD" and "GET" in self.methods:
            method = "GET"
        if method not in self.methods:
            request.setHeader(b"Allow", ", ".join(self.methods).encode())
            return jsonError(request, 405, f"method {method[:10]} not allowed")
        handler: Callable[[IRequest], Any] = getattr(self, "do_" + method)
        try:
            result = handler(request)
        except APIError as e:
            return jsonError(request, e.code, e.reason, **e.extra)
        except Exception:
            log.failure("internal error serving {method} {path}", method=method, path=request.path[:200])
            return jsonError(request, 500, "internal error")
        if isinstance(result, bytes):
            return result
        code, body = result
        return jsonResponse(request, body, code)


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return jsonError(request, 404, "no such endpoint")


class Root(Resource):
    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return _NotFound()

    def render(self, request: IRequest) -> bytes:
        return jsonResponse(request, {"service": "spacecomms", "openapi": "/openapi.json"})


class Health(_Base):
    methods = ("GET",)

    def do_GET(self, request: IRequest) -> Any:
        n = self.node
        connected = len(n.links)
        total = len(n.peerConfigs)
        status = "healthy" if total == 0 or connected > 0 else "degraded"
        return 200, {
            "status": status,
            "node_id": n.nodeId,
            "uptime_seconds": int(n.now() - n.started),
            "peers": {"connected": connected, "total": total},
            "objects_tracked": n.store.count("object", True),
            "cdms_active": n.store.count("cdm", True),
        }


class Metrics(_Base):
    methods = ("GET",)

    def do_GET(self, request: IRequest) -> Any:
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.node.metrics.render()


class OpenAPI(_Base):
    methods = ("GET",)

    def do_GET(self, request: IRequest) -> Any:
        return 200, openapi.spec(self.node.nodeId)


def _peerView(node: SpaceNode, status: Callable[[str], str], pid: str) -> dict[str, Any]:
    p = node.peerConfigs[pid]
    pol = p.policies
    view: dict[str, Any] = {
        "peer_id": p.id,
        "address": p.address,
        "status": status(pid),
        "policies": {
            "accept_cdm": pol.accept_cdm,
            "accept_object_state": pol.accept_object_state,
            "forward_cdm": pol.forward_cdm,
            "forward_object_state": pol.forward_object_state,
            "rate_limit_per_second": pol.rate_limit_per_second,
            "rate_limit_burst": pol.rate_limit_burst,
        },
    }
    if pid in node.metrics.latency and pid in node.links:
        view["heartbeat_latency_ms"] = round(node.metrics.latency[pid], 3)
    return view


class Peers(_Base):
    methods = ("GET", "POST")

    def __init__(
        self,
        node: SpaceNode,
        status: Callable[[str], str],
        addPeer: Callable[[Any], None],
        removePeer: Callable[[str], bool],
    ) -> None:
        super().__init__(node)
        self.status = status
        self.addPeer = addPeer
        self.removePeer = removePeer

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return PeerItem(self, path.decode("utf-8", "replace"))

    def do_GET(self, request: IRequest) -> Any:
        return 200, {
            "peers": [_peerView(self.node, self.status, pid) for pid in sorted(self.node.peerConfigs)]
        }

    def do_POST(self, request: IRequest) -> Any:
        doc = _jsonBody(request)
        if not isinstance(doc, dict):
            raise APIError(400, "request body: must be a JSON object")
        c = _Checker({})
        peer = parsePeer(c, doc, "body")
        if c.errors or peer is None:
            raise APIError(400, "; ".join(c.errors) or "invalid peer", errors=c.errors)
        if peer.id == self.node.nodeId:
            raise APIError(400, "body.peer_id: must differ from this node's id")
        if peer.id in self.node.peerConfigs:
            raise APIError(409, f"peer {peer.id} already exists")
        self.addPeer(peer)
        log.info("peer {peer} added through the API", peer=peer.id)
        return 201, _peerView(self.node, self.status, peer.id)


class PeerItem(_Base):
    methods = ("GET", "DELETE")

    def __init__(self, peers: Peers, pid: str) -> None:
        super().__init__(peers.node)
        self.peers = peers
        self.pid = pid

    def do_GET(self, request: IRequest) -> Any:
        if self.pid not in self.node.peerConfigs:
            raise APIError(404, f"no peer {self.pid[:80]!r}")
        return 200, _peerView(self.node, self.peers.status, self.pid)

    def do_DELETE(self, request: IRequest) -> Any:
        if not self.peers.removePeer(self.pid):
            raise APIError(404, f"no peer {self.pid[:80]!r}")
        log.info("peer {peer} removed through the API", peer=self.pid)
        return 200, {"peer_id": self.pid, "status": "removed"}


def _cdmView(r: Record, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cdm_id": r.key,
        "status": "active" if r.active else "withdrawn",
        "origin": r.origin,
        "learned_from": r.learnedFrom,
        "created_at": _iso(r.createdAt),
        "updated_at": _iso(r.updatedAt),
        "tca": _iso(r.tca),
        "objects": r.objects,
    }
    if not r.active:
        out["reason"] = r.reason
    if r.body is not None:
        rel = r.body.get("relative_metadata_data", {})
        out["miss_distance_m"] = rel.get("MISS_DISTANCE")
        if "COLLISION_PROBABILITY" in rel:
            out["collision_probability"] = rel["COLLISION_PROBABILITY"]
        if full:
            out["cdm"] = r.body
    return out


_FORMATS = {
    "application/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/plain": "kvn",
    "text/x-kvn": "kvn",
    "application/x-kvn": "kvn",
}


def _timeArg(request: IRequest, name: str) -> float | None:
    value = _arg(request, name)
    if value is None:
        return None
    try:
        return epochSeconds(value, name)
    except CDMError:
        raise APIError(400, f"query parameter {name}: not a time (YYYY-MM-DDThh:mm:ss[.d][Z])")


def _limit(request: IRequest) -> int:
    raw = _arg(request, "limit")
    if raw is None:
        return 100
    try:
        n = int(raw)
    except ValueError:
        raise APIError(400, "query parameter limit: not an integer")
    if not 1 <= n <= MAX_LIMIT:
        raise APIError(400, f"query parameter limit: must be between 1 and {MAX_LIMIT}")
    return n


def _status(request: IRequest) -> str:
    status = _arg(request, "status") or "active"
    if status not in ("active", "withdrawn", "all"):
        raise APIError(400, "query parameter status: must be active, withdrawn or all")
    return status


class CDMs(_Base):
    methods = ("GET", "POST")

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return CDMItem(self.node, path.decode("utf-8", "replace"))

    def do_POST(self, request: IRequest) -> Any:
        started = _time.perf_counter()
        raw = _body(request)
        fmt = _arg(request, "format")
        if fmt is None:
            ctype = (
                (request.getHeader(b"content-type") or b"")
                .split(b";")[0]
                .strip()
                .lower()
                .decode("ascii", "replace")
            )
            fmt = _FORMATS.get(ctype)
        if fmt is not None and fmt not in ("kvn", "xml", "json"):
            raise APIError(400, "query parameter format: must be kvn, xml or json")
        try:
            cdm = decode(raw, fmt)
        except CDMError as e:
            self.node.metrics.invalidCDM()
            log.warn("cdm validation failed: {field}: {reason}", field=e.field, reason=e.reason)
            raise APIError(400, f"cdm validation failed: {e}", field=e.field)
        record, created = self.node.ingestCDM(cdm)
        if created:
            self.node.metrics.cdmProcessed(_time.perf_counter() - started)
        return (201 if created else 200), {
            "cdm_id": record.key,
            "status": "accepted" if created else "unchanged",
        }

    def do_GET(self, request: IRequest) -> Any:
        limit = _limit(request)
        sort = _arg(request, "sort") or "created_at"
        if sort.lstrip("-") not in ("created_at", "tca", "updated_at"):
            raise APIError(
                400, "query parameter sort: must be created_at, updated_at or tca (prefix - for descending)"
            )
        status = _status(request)
        obj = _arg(request, "object")
        origin = _arg(request, "origin")
        tcaFrom, tcaTo = _timeArg(request, "tca_from"), _timeArg(request, "tca_to")
        rows: list[Record] = []
        for rec in self.node.store.records("cdm"):
            r: Record = rec
            if status != "all" and r.active != (status == "active"):
                continue
            if obj is not None and obj not in r.objects:
                continue
            if origin is not None and r.origin != origin:
                continue
            if tcaFrom is not None and (r.tca is None or r.tca < tcaFrom):
                continue
            if tcaTo is not None and (r.tca is None or r.tca > tcaTo):
                continue
            rows.append(r)
        field = sort.lstrip("-")
        attr = {"created_at": "createdAt", "updated_at": "updatedAt", "tca": "tca"}[field]
        rows.sort(key=lambda r: (getattr(r, attr) or 0.0, r.key), reverse=sort.startswith("-"))
        return 200, {
            "cdms": [_cdmView(r) for r in rows[:limit]],
            "count": min(limit, len(rows)),
            "total": len(rows),
        }


class CDMItem(_Base):
    methods = ("GET", "DELETE")

    def __init__(self, node: SpaceNode, key: str) -> None:
        super().__init__(node)
        self.key = key

    def _record(self) -> Record:
        r = self.node.store.get("cdm", self.key)
        if r is None:
            raise APIError(404, f"no CDM {self.key[:80]!r}")
        return r

    def do_GET(self, request: IRequest) -> Any:
        r = self._record()
        fmt = _arg(request, "format") or "json"
        if fmt not in ("kvn", "xml", "json"):
            raise APIError(400, "query parameter format: must be kvn, xml or json")
        if fmt == "json" or r.body is None:
            return 200, _cdmView(r, full=True)
        text = encode(fromDict(r.body), fmt)
        request.setHeader(
            b"Content-Type",
            b"application/xml; charset=utf-8" if fmt == "xml" else b"text/plain; charset=utf-8",
        )
        return text.encode("utf-8")

    def do_DELETE(self, request: IRequest) -> Any:
        reason = _arg(request, "reason") or "FALSE_POSITIVE"
        if reason not in WITHDRAW_REASONS:
            raise APIError(400, f"query parameter reason: must be one of {', '.join(WITHDRAW_REASONS)}")
        self._record()
        r = self.node.withdrawCDM(self.key, reason)
        if r is None:
            raise APIError(409, f"CDM {self.key[:80]!r} is already withdrawn")
        return 200, _cdmView(r)


def _objectView(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object_id": r.key,
        "status": "active" if r.active else "withdrawn",
        "origin": r.origin,
        "learned_from": r.learnedFrom,
        "updated_at": _iso(r.updatedAt),
        "state": r.body,
    }
    if not r.active:
        out["reason"] = r.reason
    return out


class Objects(_Base):
    methods = ("GET", "POST")

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return ObjectItem(self.node, path.decode("utf-8", "replace"))

    def do_POST(self, request: IRequest) -> Any:
        doc = _jsonBody(request)
        if not isinstance(doc, dict):
            raise APIError(400, "request body: must be a JSON object")
        oid = doc.get("object_id")
        if not isinstance(oid, str) or not _ID.match(oid):
            raise APIError(400, "body.object_id: required, 1-128 letters, digits, '.', '_', ':' or '-'")
        state = {k: v for k, v in doc.items() if k != "object_id"}
        r = self.node.announceObject(oid, state)
        return 201, _objectView(r)

    def do_GET(self, request: IRequest) -> Any:
        limit = _limit(request)
        status = _status(request)
        rows = [
            r
            for r in self.node.store.records("object")
            if status == "all" or r.active == (status == "active")
        ]
        rows.sort(key=lambda r: r.key)
        return 200, {
            "objects": [_objectView(r) for r in rows[:limit]],
            "count": min(limit, len(rows)),
            "total": len(rows),
        }


class ObjectItem(_Base):
    methods = ("GET", "DELETE")

    def __init__(self, node: SpaceNode, key: str) -> None:
        super().__init__(node)
        self.key = key

    def do_GET(self, request: IRequest) -> Any:
        r = self.node.store.get("object", self.key)
        if r is None:
            raise APIError(404, f"no object {self.key[:80]!r}")
        return 200, _objectView(r)

    def do_DELETE(self, request: IRequest) -> Any:
        reason = _arg(request, "reason") or "NO_LONGER_TRACKED"
        if reason not in OBJECT_WITHDRAW_REASONS:
            raise APIError(
                400, f"query parameter reason: must be one of {', '.join(OBJECT_WITHDRAW_REASONS)}"
            )
        if self.node.store.get("object", self.key) is None:
            raise APIError(404, f"no object {self.key[:80]!r}")
        r = self.node.withdrawObject(self.key, reason)
        if r is None:
            raise APIError(409, f"object {self.key[:80]!r} is already withdrawn")
        return 200, _objectView(r)


def makeTokenChecker(tokens: Any) -> TokenChecker:
    """
    A token checker for the configured API tokens.
    """
    return TokenChecker({t.id: (t.secret, t.permissions) for t in tokens})


def _rule(writePermission: Permission, publicRead: bool) -> Callable[[IRequest], Permission | None]:
    def rule(request: IRequest) -> Permission | None:
        method = (request.method or b"").upper()
        if method in (b"GET", b"HEAD"):
            return READ
        return writePermission

    return rule


def makeAPIResource(
    node: SpaceNode,
    checker: TokenChecker | None,
    peerStatus: Callable[[str], str],
    addPeer: Callable[[Any], None],
    removePeer: Callable[[str], bool],
) -> IResource:
    """
    The API's root resource.  With C{checker} None (api.auth.enabled:
    false) nothing is guarded.
    """
    root = Root()
    root.putChild(b"health", Health(node))
    root.putChild(b"metrics", Metrics(node))
    root.putChild(b"openapi.json", OpenAPI(node))
    guarded: dict[bytes, tuple[IResource, Permission]] = {
        b"peers": (Peers(node, peerStatus, addPeer, removePeer), ADMIN),
        b"cdms": (CDMs(node), WRITE),
        b"objects": (Objects(node), WRITE),
    }
    for name, (resource, writePermission) in guarded.items():
        if checker is not None:
            resource = requireBearer(resource, checker, _rule(writePermission, False), realm="spacecomms")
        root.putChild(name, resource)
    return root
