"""
The REST API (twisted.web): /health (and the suite's /healthz, /readyz),
/peers, /cdms, /objects, /metrics and /openapi.json.  Bearer tokens guard /peers, /cdms and /objects (read for
GET, write for changes, admin for peer changes); every error is JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.cred.tokens import ADMIN, READ, WRITE, Permission, TokenChecker
from suite.cred.web import requireBearer
from suite.spacecomms import openapi
from suite.spacecomms.apibase import APIError, Base, NotFound, jsonBody, log
from suite.spacecomms.config import _Checker, parsePeer
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.records import CDMs, Objects
from suite.web.errors import jsonResponse
from suite.web.health import FunctionHealth, HealthReport, LivenessResource, ReadinessResource
from suite.web.metrics import CONTENT_TYPE

__all__ = ["makeAPIResource", "makeTokenChecker"]


class Root(Resource):
    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        return jsonResponse(request, {"service": "spacecomms", "openapi": "/openapi.json"})


class Health(Base):
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


class Metrics(Base):
    methods = ("GET",)

    def do_GET(self, request: IRequest) -> Any:
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return self.node.metrics.render()


class OpenAPI(Base):
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
        "policies": asdict(pol),
    }
    if pid in node.metrics.latency and pid in node.links:
        view["heartbeat_latency_ms"] = round(node.metrics.latency[pid], 3)
    return view


class Peers(Base):
    methods = ("GET", "POST")
    queryParameters: dict[str, tuple[str, ...]] = {}

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
        doc = jsonBody(request)
        if not isinstance(doc, dict):
            raise APIError(400, "request body: must be a JSON object")
        for key in ("peer_id", "id", "address", "auth_token"):
            # (The file's YAML may spell a number for a string; JSON says what it means.)
            if key in doc and not isinstance(doc[key], str):
                raise APIError(400, f"body.{key}: must be a string", errors=[f"body.{key}: must be a string"])
        c = _Checker({})
        peer = parsePeer(c, doc, "body")
        if c.errors or peer is None:
            raise APIError(400, "; ".join(c.errors) or "invalid peer", errors=c.errors)
        if peer.id == self.node.nodeId:
            raise APIError(400, "body.peer_id: must differ from this node's id")
        if peer.id in self.node.peerConfigs:
            raise APIError(409, f"peer {peer.id} already exists")
        try:
            self.addPeer(peer)
        except OSError as e:
            raise APIError(503, f"cannot keep the peer ({e.strerror or e}): not added; retry later")
        log.info("peer {peer} added through the API", peer=peer.id)
        if not peer.auth_token:
            log.warn(
                "peer {peer} was added without an auth_token: any node that claims to be {peer} "
                "(with TLS: that holds a certificate naming it) is accepted as that peer",
                peer=peer.id,
            )
        return 201, _peerView(self.node, self.status, peer.id)


class PeerItem(Base):
    methods = ("GET", "DELETE")
    queryParameters: dict[str, tuple[str, ...]] = {}

    def __init__(self, peers: Peers, pid: str) -> None:
        super().__init__(peers.node)
        self.peers = peers
        self.pid = pid

    def do_GET(self, request: IRequest) -> Any:
        if self.pid not in self.node.peerConfigs:
            raise APIError(404, f"no peer {self.pid[:80]!r}")
        return 200, _peerView(self.node, self.peers.status, self.pid)

    def do_DELETE(self, request: IRequest) -> Any:
        try:
            removed = self.peers.removePeer(self.pid)
        except OSError as e:
            raise APIError(
                503, f"cannot rewrite the kept peers ({e.strerror or e}): not removed; retry later"
            )
        if not removed:
            raise APIError(404, f"no peer {self.pid[:80]!r}")
        log.info("peer {peer} removed through the API", peer=self.pid)
        return 200, {"peer_id": self.pid, "status": "removed"}


def makeTokenChecker(tokens: Any) -> TokenChecker:
    """
    A token checker for the configured API tokens.
    """
    return TokenChecker({t.id: (t.secret, t.permissions) for t in tokens})


def _rule(writePermission: Permission, override: bool = False) -> Callable[[IRequest], Permission | None]:
    """
    read for GET/HEAD, C{writePermission} for anything else, admin for an
    C{?override=} where it exists (changing another operator's CDM).
    """

    def rule(request: IRequest) -> Permission | None:
        method = (request.method or b"").upper()
        if method in (b"GET", b"HEAD"):
            return READ
        if override and b"override" in (request.args or {}):
            return ADMIN
        return writePermission

    return rule


def _storeHealth(node: SpaceNode) -> HealthReport:
    try:
        count = node.store.count("cdm", True)
    except Exception as e:  # health boundary: /readyz shows the error
        return HealthReport(False, (f"store: {e}",))
    return HealthReport(True, (), {"cdms_active": count})


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
    # The suite's admin surface beside the guide's /health (docs/admin.md).
    root.putChild(b"healthz", LivenessResource())
    root.putChild(b"readyz", ReadinessResource([FunctionHealth("store", lambda: _storeHealth(node))]))
    root.putChild(b"metrics", Metrics(node))
    root.putChild(b"openapi.json", OpenAPI(node))
    guarded: dict[bytes, tuple[IResource, Permission, bool]] = {
        b"peers": (Peers(node, peerStatus, addPeer, removePeer), ADMIN, False),
        b"cdms": (CDMs(node), WRITE, True),
        b"objects": (Objects(node), WRITE, False),
    }
    for name, (resource, writePermission, override) in guarded.items():
        if checker is not None:
            resource = requireBearer(resource, checker, _rule(writePermission, override), realm="spacecomms")
        root.putChild(name, resource)
    return root
