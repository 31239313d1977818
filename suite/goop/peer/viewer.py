"""
The peer's local viewer (C{viewer.http_addr}, loopback by default).

  - C{/}: this peer and the peers it knows, with links to their sites;
  - C{/peers} (and C{/api/peers}): the same as JSON;
  - C{/p/<peer-id>/<path>}: another peer's site file, fetched over
    C{/goop/site/1.0.0} and served with a C{Content-Security-Policy: sandbox}
    (opaque origin) so remote pages cannot act on the viewer's origin;
  - C{/site/<path>}: this peer's own site (never C{lua/});
  - C{/self}: settings (GET page, POST JSON {label, name, email} or {config});
  - C{/logs}: live log tail (SSE at C{/api/logs/stream}), C{/api/logs} JSON;
  - C{/api/data}: POST JSON {peer?, request} runs a data request locally or
    on another peer;
  - C{/api/groups}: groups hosted here and joined elsewhere (GET), actions
    (POST JSON {action, group, host?, data?});
  - C{/healthz}.

Every request on every path must name this viewer in C{Host} (its listening
address, a loopback literal or C{localhost} with its port, or a name listed
in C{viewer.allowed_hosts}); others get 421, which defeats DNS rebinding.
State-changing requests must also carry the install's secret (kept in
C{viewer.secret}, embedded in the pages) in C{X-Goop-Token}, be
C{application/json} and have no foreign C{Origin}.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from suite.goop.health import HealthzResource
from suite.goop.jsonutil import parseJSON
from suite.goop.metrics import PeerCollector, addAdminResources
from suite.goop.peer.errors import SettingsError
from suite.goop.sse import SSEHub, formatEvent
from suite.goop.webutil import (
    HostGuard,
    JSONDirectory,
    JSONErrorPage,
    finishRequest,
    header,
    jsonResponse,
    readBody,
)

__all__ = ["makeViewer"]

MAX_API_BODY = 256 * 1024
# Remote pages run in an opaque origin: their scripts cannot read the viewer's
# responses or send it JSON (the Origin is "null"), and forms cannot post JSON.
REMOTE_CSP = b"sandbox allow-scripts allow-forms allow-popups"
PAGE_CSP = b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"


def _nav(peer: Any) -> str:
    if peer is not None and peer.minimal:
        hub = f' · <a href="{html.escape(peer.hubURL)}/">Rendezvous dashboard</a>' if peer.hubURL else ""
        return f'<p><a href="/self">Settings</a> · <a href="/logs">Logs</a>{hub}</p>'
    return '<p><a href="/">Peers</a> · <a href="/self">Settings</a> · <a href="/logs">Logs</a></p>'


def _page(title: str, body: str, peer: Any = None) -> bytes:
    token = html.escape(getattr(peer, "viewerSecret", "") or "")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=goop-token content='{token}'><title>"
        + html.escape(title)
        + "</title><style>body{font-family:system-ui,sans-serif;margin:2em}code{font-size:90%}"
        "td,th{padding:.2em .6em;text-align:left}</style></head><body>" + _nav(peer) + body + "</body></html>"
    ).encode()


def _jsonRequestOK(request: Request) -> str | None:
    ctype = (header(request, "content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return "content-type must be application/json"
    origin = header(request, "origin")
    host = header(request, "host") or ""
    if origin and origin.split("://", 1)[-1] != host:
        return "cross-origin requests are refused"
    return None


_finish = finishRequest


class _PeerResource(Resource):
    """A viewer resource serving one peer's state."""

    def __init__(self, peer: Any) -> None:
        super().__init__()
        self.peer = peer


class _RootPage(_PeerResource):
    """A viewer root: renders itself at C{/}; unknown children are 404."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return JSONErrorPage(404, "no such page")


class _Home(_RootPage):
    def render_GET(self, request: Request) -> bytes:
        p = self.peer
        rows = "".join(
            f'<tr class="peer" data-peer="{html.escape(r["peer_id"])}"><td><a href="/p/{html.escape(r["peer_id"])}/">'
            f"{html.escape(r.get('label') or '(no label)')}</a></td><td class=name>{html.escape(str(r.get('name') or ''))}</td>"
            f"<td><code>{html.escape(r['peer_id'][:16])}…</code></td>"
            f"<td>{html.escape(', '.join(r.get('addrs', [])))}</td><td>{html.escape(r.get('source', ''))}</td></tr>"
            for r in (p.directory.peers() if p.directory else [])
        )
        own = f"Peer name <b id=name>{html.escape(p.config.peerName)}</b> · " if p.config.peerName else ""
        body = (
            f"<h1>{html.escape(p.config.displayLabel)}</h1><p>{own}Peer ID <code id=self>{html.escape(p.identity.peerId)}</code>"
            f" · P2P port {p.p2pPort} · <a href='/site/'>own site</a></p>"
            f"<h2>Peers</h2><table><tr><th>Label</th><th>Name</th><th>ID</th><th>Addresses</th><th>Via</th></tr>{rows}</table>"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", PAGE_CSP)
        return _page(p.config.displayLabel, body, p)


class _PeersJSON(_PeerResource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return jsonResponse(request, 200, self.peer.directory.peers() if self.peer.directory else [])


class _Remote(_PeerResource):
    """C{/p/<peer-id>/<path>}."""

    isLeaf = True
    takesSubpaths = True

    def render_GET(self, request: Request) -> bytes | int:
        parts = request.postpath
        if not parts or not parts[0]:
            return jsonResponse(request, 404, {"error": "peer id required"})
        peerId = parts[0].decode("ascii", "replace")
        path = b"/".join(parts[1:]).decode("utf-8", "replace")
        d: Deferred[dict[str, Any]] = self.peer.remoteRequest(peerId, "site", {"path": path})

        def done(resp: dict[str, Any]) -> None:
            if not resp.get("ok"):
                _finish(request, jsonResponse(request, 404, {"error": str(resp.get("error", "not found"))}))
                return
            # The answer is the other peer's word: anything but a file is a
            # 502 naming the fault, never a request left hanging.
            data = resp.get("data")
            ctype = data.get("content_type", "application/octet-stream") if isinstance(data, dict) else None
            try:
                if not isinstance(ctype, str) or not isinstance(data, dict):
                    raise ValueError
                body = base64.b64decode(data.get("body", ""), validate=True)
            except (ValueError, TypeError):
                _finish(request, jsonResponse(request, 502, {"error": "the peer sent a malformed file"}))
                return
            request.setHeader(b"content-type", ctype.encode("utf-8", "replace"))
            request.setHeader(b"content-security-policy", REMOTE_CSP)
            request.setHeader(b"x-content-type-options", b"nosniff")
            _finish(request, body)

        d.addErrback(lambda f: {"ok": False, "error": f"peer unreachable: {f.getErrorMessage()}"})
        d.addCallback(done)
        return NOT_DONE_YET


class _OwnSite(_PeerResource):
    isLeaf = True
    takesSubpaths = True

    def render_GET(self, request: Request) -> int:
        path = b"/".join(request.postpath or []).decode("utf-8", "replace")

        def done(found: tuple[str, bytes] | None) -> None:
            if found is None:
                _finish(request, jsonResponse(request, 404, {"error": "not found"}))
                return
            if not found[0]:
                _finish(request, jsonResponse(request, 413, {"error": "file too large"}))
                return
            request.setHeader(b"content-type", found[0].encode())
            request.setHeader(b"x-content-type-options", b"nosniff")
            _finish(request, found[1])

        self.peer.site.read(path).addCallback(done)
        return NOT_DONE_YET


class _Self(_PeerResource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        c = self.peer.config
        if (header(request, "accept") or "").startswith("application/json"):
            return jsonResponse(request, 200, self.peer.settings())
        body = (
            f"<h1>Settings</h1><p>Peer ID <code>{html.escape(self.peer.identity.peerId)}</code></p>"
            f"<form id=f><label>Label <input name=label value='{html.escape(c.label)}'></label> "
            f"<label>Peer name <input name=name maxlength=64 value='{html.escape(c.peerName)}'></label> "
            f"<label>Email <input name=email value='{html.escape(c.email)}'></label> <button>Save</button></form>"
            f"<p id=msg></p><h2>goop.json</h2><form id=c><textarea id=cfg name=cfg rows=24 cols=70>"
            f"{html.escape(json.dumps(self.peer.settings()['config'], indent=2))}</textarea><br>"
            "<button>Save goop.json</button> (other keys apply at the next start)</form>"
            + (
                "<p><a id=hub href='" + html.escape(self.peer.hubURL) + "/'>Rendezvous dashboard</a></p>"
                if self.peer.hubURL
                else ""
            )
            + "<script>const TOKEN=document.querySelector('meta[name=goop-token]').content;"
            "document.getElementById('f').onsubmit=async(e)=>{e.preventDefault();"
            "const f=new FormData(e.target);const r=await fetch('/self',{method:'POST',headers:{'content-type':'application/json','x-goop-token':TOKEN},"
            "body:JSON.stringify({label:f.get('label'),name:f.get('name'),email:f.get('email')})});"
            "document.getElementById('msg').textContent=r.ok?'saved':(await r.text());};"
            "document.getElementById('c').onsubmit=async(e)=>{e.preventDefault();let doc;"
            "try{doc=JSON.parse(document.getElementById('cfg').value)}catch(x){document.getElementById('msg').textContent='not JSON: '+x;return}"
            "const r=await fetch('/self',{method:'POST',headers:{'content-type':'application/json','x-goop-token':TOKEN},body:JSON.stringify({config:doc})});"
            "document.getElementById('msg').textContent=r.ok?'saved; restart the peer to apply':(await r.text());};</script>"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", PAGE_CSP)
        return _page("Settings", body, self.peer)

    def render_POST(self, request: Request) -> bytes:
        bad = _jsonRequestOK(request)
        if bad:
            return jsonResponse(request, 403, {"error": bad})
        raw = readBody(request, 16 * 1024)
        if raw is None:
            return jsonResponse(request, 413, {"error": "body too large"})
        try:
            doc = parseJSON(raw)
            assert isinstance(doc, dict)
        except (ValueError, AssertionError):
            return jsonResponse(request, 400, {"error": "body must be a JSON object"})
        unknown = sorted(set(doc) - {"label", "name", "email", "config"})
        if unknown:
            return jsonResponse(
                request,
                400,
                {"error": f"{unknown[0][:40]}: unknown key (expected label, name, email or config)"},
            )
        try:
            self.peer.updateProfile(doc)
        except ValueError as e:
            return jsonResponse(request, 400, {"error": str(e)})
        except SettingsError as e:
            return jsonResponse(request, 500, {"error": str(e)})
        return jsonResponse(request, 200, self.peer.settings())


class _Logs(_PeerResource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        body = (
            "<h1>Logs</h1><pre id=log></pre><script>const el=document.getElementById('log');let last=0;"
            "const show=(x)=>{if(x.seq<=last)return;last=x.seq;el.textContent+=(x.level+' '+x.text+'\\n');};"
            "fetch('/api/logs').then((r)=>r.json()).then((xs)=>{xs.forEach(show);}).finally(()=>{"
            "const es=new EventSource('/api/logs/stream');"
            "es.addEventListener('log',(e)=>show(JSON.parse(e.data)));});</script>"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", PAGE_CSP)
        return _page("Logs", body, self.peer)


class _LogsJSON(_PeerResource):
    isLeaf = False

    def render_GET(self, request: Request) -> bytes:
        return jsonResponse(request, 200, self.peer.logs.snapshot())


class _Data(_PeerResource):
    isLeaf = True

    def render_POST(self, request: Request) -> bytes | int:
        bad = _jsonRequestOK(request)
        if bad:
            return jsonResponse(request, 403, {"error": bad})
        raw = readBody(request, MAX_API_BODY)
        if raw is None:
            return jsonResponse(request, 413, {"error": "body too large"})
        try:
            doc = parseJSON(raw)
            req = doc["request"]
            assert isinstance(req, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return jsonResponse(request, 400, {"error": "body must be {peer?, request: {...}}"})
        target = doc.get("peer")
        if target and target != self.peer.identity.peerId:
            d = self.peer.remoteRequest(str(target), "data", req)
        else:
            d = self.peer.store.execute(self.peer.identity.peerId, req)
        d.addErrback(lambda f: {"ok": False, "error": f"peer unreachable: {f.getErrorMessage()}"})
        d.addCallback(lambda resp: _finish(request, jsonResponse(request, 200, resp)))
        return NOT_DONE_YET


class _Groups(_PeerResource):
    """C{/api/groups}: GET state; POST {action: create|close|join|send|state|leave, group, host?, data?}."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return jsonResponse(request, 200, self.peer.groups.describe())

    def render_POST(self, request: Request) -> bytes:
        bad = _jsonRequestOK(request)
        if bad:
            return jsonResponse(request, 403, {"error": bad})
        raw = readBody(request, 64 * 1024)
        if raw is None:
            return jsonResponse(request, 413, {"error": "body too large"})
        try:
            doc = parseJSON(raw)
            action, group = doc["action"], doc["group"]
            assert isinstance(group, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return jsonResponse(request, 400, {"error": "body must be {action, group, host?, data?}"})
        if not 0 < len(group) <= 64 or not group.isprintable() or group != group.strip():
            # Group names reach log lines and every member's page.
            return jsonResponse(
                request,
                400,
                {
                    "error": "group: 1 to 64 printable characters without control characters or surrounding spaces"
                },
            )
        g = self.peer.groups
        host = doc.get("host", "")
        if action not in _GROUP_ACTIONS:
            return jsonResponse(
                request, 400, {"error": f"action: must be one of {', '.join(_GROUP_ACTIONS)}"}
            )
        if action in ("join", "send", "state", "leave"):
            if not isinstance(host, str) or not _PEER_ID.match(host):
                return jsonResponse(
                    request, 400, {"error": f"host: {action} needs the hosting peer's id (64 hex digits)"}
                )
            if host == g.selfId:
                return jsonResponse(
                    request,
                    400,
                    {"error": "host: this peer; groups hosted here are used with create and close"},
                )
            if action != "join" and f"{host}/{group}" not in g.memberships:
                return jsonResponse(
                    request, 404, {"error": f"not a member of group {group!r} at {host[:16]}"}
                )
        elif action == "close" and group not in g.hosted:
            return jsonResponse(request, 404, {"error": f"no group {group!r} hosted here"})
        try:
            if action == "create":
                g.createGroup(group)
            elif action == "close":
                g.closeGroup(group)
            elif action == "join":
                g.join(host, group)
            elif action in ("send", "state"):
                g.send(host, group, doc.get("data"), "msg" if action == "send" else "state")
            else:
                g.leave(host, group)
        except ValueError as e:
            return jsonResponse(request, 400, {"error": str(e)})
        return jsonResponse(request, 200, g.describe())


_GROUP_ACTIONS = ("create", "close", "join", "send", "state", "leave")
_PEER_ID = re.compile(r"^[0-9a-f]{64}$")


def makeViewer(
    peer: Any, clock: Any, minimal: bool = False, bindHost: str = "127.0.0.1", names: Sequence[str] = ()
) -> tuple[HostGuard, SSEHub]:
    """The viewer's resource tree (behind its L{HostGuard}) and its log-tail SSE hub."""
    tail = SSEHub(
        clock,
        maxClients=32,
        maxPerIP=32,
        initial=lambda: [formatEvent("log", e) for e in peer.logs.snapshot(200)],
    )
    peer.logs.listeners.append(lambda entry: tail.publish("log", entry))
    root: Resource = _MinimalRoot(peer) if minimal else _Home(peer)
    api: Resource = JSONDirectory()
    api.putChild(b"logs", _LogsJSON(peer))
    api.children[b"logs"].putChild(b"stream", tail.resource())
    root.putChild(b"api", api)
    root.putChild(b"self", _Self(peer))
    root.putChild(b"logs", _Logs(peer))
    root.putChild(b"healthz", HealthzResource(peer.healthProviders))
    addAdminResources(root, peer.healthProviders, PeerCollector(peer), clock)
    if not minimal:
        root.putChild(b"peers", _PeersJSON(peer))
        api.putChild(b"peers", _PeersJSON(peer))
        api.putChild(b"data", _Data(peer))
        api.putChild(b"groups", _Groups(peer))
        root.putChild(b"p", _Remote(peer))
        root.putChild(b"site", _OwnSite(peer))
    return HostGuard(root, bindHost, peer.viewerSecret, names), tail


class _MinimalRoot(_RootPage):
    def render_GET(self, request: Request) -> bytes:
        request.redirect(b"/self")
        return b""
