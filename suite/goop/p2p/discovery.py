"""
Finding other peers: the rendezvous hub (WAN) and mDNS (LAN).

L{HubClient} publishes a signed record every C{heartbeat_seconds} with the
configured TTL, reads C{/peers.json}, and follows C{/events} (SSE) for
joins and leaves (one stream at a time, retried 2 s after it ends: the
machine in L{suite.goop.p2p.hubfollow}); on shutdown it publishes
C{offline}.  L{MdnsDiscovery} announces and browses
C{_<mdns_tag>._tcp.local.} with zeroconf (its blocking calls run on
threads); an empty C{p2p.mdns_tag} turns it off, and C{p2p.mdns_interfaces}
(IP addresses) limits it to those interfaces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.goop.identity import Identity
from suite.goop.jsonutil import parseJSON
from suite.goop.limits import MAX_PEER_NAME
from suite.goop.p2p.hubfollow import FollowCore, FollowMachine

__all__ = ["PeerDirectory", "HubClient", "MdnsDiscovery", "signedPublication"]

log = Logger()
MAX_PEERS_JSON = 32 * 1024 * 1024


def signedPublication(
    identity: Identity,
    label: str,
    port: int,
    ttl: int,
    kind: str = "online",
    rendezvous: bool = False,
    now: float | None = None,
    seq: int | None = None,
    name: str = "",
) -> tuple[bytes, str]:
    """
    The body and signature of one C{/publish}.  C{label} is the site's
    display name, C{name} the peer's own short name (sent when set).
    C{seq} orders a peer's publications (the hub refuses one not newer than
    the last it saw); by default the time in microseconds.
    """
    ts = time.time() if now is None else now
    doc: dict[str, Any] = {
        "peer_id": identity.peerId,
        "public_key": identity.publicB64,
        "label": label,
        "port": port,
        "ttl": ttl,
        "ts": ts,
        "seq": int(ts * 1e6) if seq is None else seq,
        "kind": kind,
        "rendezvous": rendezvous,
    }
    if name:
        doc["name"] = name
    body = json.dumps(doc).encode()
    return body, identity.sign(body)


class PeerDirectory:
    """Known peers from every source, keyed by peer id."""

    def __init__(self, selfId: str) -> None:
        self.selfId = selfId
        self.known: dict[str, dict[str, Any]] = {}
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def update(self, record: dict[str, Any], source: str) -> None:
        pid = record.get("peer_id")
        if not isinstance(pid, str) or pid == self.selfId:
            return
        old = self.known.get(pid, {})
        addrs = list(dict.fromkeys([*record.get("addrs", []), *old.get("addrs", [])]))[:8]
        merged = {**old, **record, "addrs": addrs, "source": source}
        self.known[pid] = merged
        for f in list(self.listeners):
            f("join" if not old else "update", merged)

    def remove(self, peerId: str) -> None:
        rec = self.known.pop(peerId, None)
        if rec is not None:
            for f in list(self.listeners):
                f("leave", rec)

    def peers(self) -> list[dict[str, Any]]:
        return sorted(self.known.values(), key=lambda r: (r.get("label", ""), r["peer_id"]))

    def get(self, peerId: str) -> dict[str, Any] | None:
        return self.known.get(peerId)


class HubClient:
    """Publish to and follow one rendezvous hub."""

    def __init__(
        self,
        reactor: Any,
        identity: Identity,
        url: str,
        directory: PeerDirectory,
        label: Callable[[], str],
        port: Callable[[], int],
        ttl: int,
        heartbeat: float,
        rendezvous: bool = False,
        name: Callable[[], str] = lambda: "",
    ) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        self.reactor = reactor
        self.identity = identity
        self.url = url.rstrip("/")
        self.directory = directory
        self.label = label
        self.name = name
        self.port = port
        self.ttl = ttl
        self.rendezvous = rendezvous
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 2
        self.pool = pool
        self.http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=10))
        self._loop = LoopingCall(self.heartbeat)
        self._loop.clock = reactor
        self.interval = heartbeat
        self.published = 0
        self.beats = 0
        self.seq = 0
        #: Following C{/events}: one stream at a time, 2 s between them.
        self._followCore = FollowCore(reactor, self._readStream, self._streamAnswered)
        self._follow = FollowMachine(self._followCore)
        #: Events seen so far, and the event count at which each peer was
        #: last changed by one: a peers.json snapshot requested before an
        #: event must not undo it (re-add a peer that left, drop one that
        #: joined, or overwrite newer details).
        self._eventsSeen = 0
        self._touched: dict[str, int] = {}
        #: Requests started on their own (heartbeats, the publish and list
        #: read on a stream's answer): stop() cancels those still running,
        #: so none is left behind (or retried by the agent) after it.
        self._running: set[Deferred[None]] = set()
        # The full list is read on start, on every event-stream (re)connect and
        # every few minutes; in between, SSE events keep the directory current.
        self.refreshEvery = max(1, int(300 // max(heartbeat, 1)))

    @property
    def streams(self) -> int:
        """Event streams the hub answered so far."""
        return self._followCore.streams

    def start(self) -> None:
        self._loop.start(self.interval, now=True).addErrback(lambda f: log.failure("hub heartbeat", f))
        self._follow.start()

    async def _publish(self, kind: str = "online") -> None:
        now = self.reactor.seconds()
        self.seq = max(self.seq + 1, int(now * 1e6))
        body, sig = signedPublication(
            self.identity,
            self.label(),
            self.port(),
            self.ttl,
            kind,
            self.rendezvous,
            now,
            self.seq,
            name=self.name(),
        )
        hdrs: Any = {"content-type": "application/json", "x-goop-signature": sig}
        resp = await self.http.post(
            self.url + "/publish",
            data=body,
            headers=hdrs,
        )
        text = await resp.content()
        if resp.code != 200:
            log.warn(
                "rendezvous {url} refused publish: {code} {text}",
                url=self.url,
                code=resp.code,
                text=text[:200],
            )
        else:
            self.published += 1

    async def _refresh(self) -> None:
        from suite.web.client import BodyTooLarge, collectBody

        since = self._eventsSeen
        resp = await self.http.get(self.url + "/peers.json", unbuffered=True)
        try:
            body = await collectBody(resp, MAX_PEERS_JSON)
        except BodyTooLarge:
            raise ValueError("peers.json larger than the limit") from None
        if resp.code != 200:
            return
        records = parseJSON(body)
        if not isinstance(records, list):
            return
        newer = {pid for pid, n in self._touched.items() if n > since}
        self._touched = {pid: n for pid, n in self._touched.items() if n > since}
        seen = set()
        for r in records:
            if isinstance(r, dict) and "peer_id" in r:
                seen.add(r["peer_id"])
                if r["peer_id"] not in newer:
                    self.directory.update(r, "rendezvous")
        for pid, r in list(self.directory.known.items()):
            if r.get("source") == "rendezvous" and pid not in seen and pid not in newer:
                self.directory.remove(pid)

    def heartbeat(self) -> Deferred[None]:
        async def beat() -> None:
            await self._publish()
            self.beats += 1
            if self.beats == 1 or self.beats % self.refreshEvery == 0:
                await self._refresh()

        d = self._track(Deferred.fromCoroutine(beat()))
        d.addErrback(
            lambda f: log.info("rendezvous {url} unreachable: {err}", url=self.url, err=f.getErrorMessage())
        )
        return d

    def _track(self, d: Deferred[None]) -> Deferred[None]:
        """
        Keep C{d} among the running requests until it ends; a cancel by
        L{stop} ends it quietly.
        """
        self._running.add(d)

        def ended(result: Any) -> Any:
            self._running.discard(d)
            if isinstance(result, Failure) and result.check(CancelledError):
                return None
            return result

        return d.addBoth(ended)

    def _readStream(self, opened: Callable[[], None]) -> Deferred[None]:
        """
        Request C{/events}, say when the hub answers it, and read its
        frames until it ends.  (An answer that arrives while the machine
        is still entering Following, which only a synchronous test double
        does, is said once that transition is over: automat queues it.)
        """
        buf = bytearray()

        def chunk(data: bytes) -> None:
            buf.extend(data)
            if len(buf) > 1024 * 1024:
                raise ValueError("SSE frame too large")
            while b"\n\n" in buf:
                frame, _, rest = bytes(buf).partition(b"\n\n")
                buf[:] = rest
                self._frame(frame.decode("utf-8", "replace"))

        async def run() -> None:
            resp = await self.http.get(self.url + "/events", unbuffered=True)
            if resp.code != 200:
                await resp.content()
                return
            import treq

            opened()
            await treq.collect(resp, chunk)

        return Deferred.fromCoroutine(run())

    def _streamAnswered(self, again: bool) -> None:
        """
        The hub answered an event stream: re-read the peer list, and when
        the stream came back (a hub restart, a proxy timeout) publish now
        rather than at the next heartbeat, as the hub may have lost this
        peer.
        """
        if again:
            republish = self._track(Deferred.fromCoroutine(self._publish()))
            republish.addErrback(lambda f: log.info("republish failed: {err}", err=f.getErrorMessage()))
        refresh = self._track(Deferred.fromCoroutine(self._refresh()))
        refresh.addErrback(lambda f: log.info("peer list refresh failed: {err}", err=f.getErrorMessage()))

    def _frame(self, frame: str) -> None:
        event, data = "message", []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if not data:
            return
        try:
            record = parseJSON("\n".join(data))
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        if event not in ("leave", "join", "update", "heartbeat"):
            return
        self._eventsSeen += 1
        self._touched[str(record.get("peer_id"))] = self._eventsSeen
        if event == "leave":
            self.directory.remove(str(record.get("peer_id")))
        else:
            self.directory.update(record, "rendezvous")

    def stop(self) -> Deferred[None]:
        if self._loop.running:
            self._loop.stop()
        self._follow.stop()
        for running in list(self._running):
            running.cancel()
        d = Deferred.fromCoroutine(self._publish("offline"))
        d.addTimeout(2, self.reactor)
        d.addErrback(lambda f: None)
        d.addBoth(lambda _: self.pool.closeCachedConnections())
        return d


def lanAddresses() -> list[str]:
    """This host's non-loopback IPv4 addresses (loopback if it has none)."""
    import ipaddress

    try:
        import ifaddr

        found = [
            str(ip.ip)
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback
        ]
    except (ImportError, OSError, ValueError):
        found = []
    return found or ["127.0.0.1"]


def _fitTXT(key: str, value: str) -> str:
    """
    C{value} cut (at a character boundary) so C{key=value} fits in one
    255-byte DNS-SD TXT string.
    """
    room = 255 - len(key.encode()) - 1
    raw = value.encode("utf-8")
    if len(raw) <= room:
        return value
    return raw[:room].decode("utf-8", "ignore")


class MdnsDiscovery:
    """Announce and browse peers on the LAN with zeroconf."""

    def __init__(
        self,
        reactor: Any,
        identity: Identity,
        tag: str,
        port: Callable[[], int],
        label: str,
        directory: PeerDirectory,
        interfaces: Sequence[str] = (),
        name: str = "",
    ) -> None:
        self.reactor = reactor
        self.identity = identity
        self.interfaces = list(interfaces)
        self.serviceType = f"_{tag}._tcp.local."
        self.port = port
        self.label = label
        self.name = name
        self.directory = directory
        self.zc: Any = None
        self.info: Any = None
        self.browser: Any = None
        self.names: dict[str, str] = {}

    def start(self) -> Deferred[None]:
        def work() -> None:
            import socket

            from zeroconf import ServiceBrowser, ServiceInfo, Zeroconf

            if self.interfaces:
                self.zc = Zeroconf(interfaces=self.interfaces)
                announced = [a for a in self.interfaces if ":" not in a]
            else:
                self.zc = Zeroconf()
                announced = lanAddresses()
            name = f"{self.identity.peerId[:32]}.{self.serviceType}"
            self.info = ServiceInfo(
                self.serviceType,
                name,
                addresses=[socket.inet_aton(a) for a in announced],
                port=self.port(),
                properties=self.properties(),
            )
            self.zc.register_service(self.info)
            self.browser = ServiceBrowser(self.zc, self.serviceType, handlers=[self._changed])

        d = deferToThread(work)
        d.addErrback(lambda f: log.warn("mDNS unavailable: {err}", err=f.getErrorMessage()))
        return d

    def properties(self) -> dict[str, str]:
        """
        The TXT properties announced: peer id, label and (when set) name,
        each cut to fit one TXT string (255 bytes with its key): 200
        characters of non-ASCII text can be 800 bytes, which zeroconf refuses,
        and the peer would not be announced at all.
        """
        props = {"peer_id": self.identity.peerId, "label": _fitTXT("label", self.label[:200])}
        if self.name:
            props["name"] = _fitTXT("name", self.name[:MAX_PEER_NAME])
        return props

    def _changed(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if getattr(state_change, "name", "") == "Removed":
            pid = self.names.pop(name, None)
            if pid is not None:
                self.reactor.callFromThread(self.directory.remove, pid)
            return
        info = zeroconf.get_service_info(service_type, name, timeout=2000)
        if info is None:
            return
        props = {k.decode(): (v or b"").decode("utf-8", "replace") for k, v in info.properties.items()}
        pid = props.get("peer_id", "")
        record: dict[str, Any] = {
            "peer_id": pid,
            "label": props.get("label", "")[:200],
            "name": props.get("name", "")[:MAX_PEER_NAME],
            "addrs": [
                f"[{a}]:{info.port}" if ":" in a else f"{a}:{info.port}" for a in info.parsed_addresses()
            ],
        }
        if pid:
            self.names[name] = pid
            self.reactor.callFromThread(self.directory.update, record, "mdns")

    def stop(self) -> Deferred[None]:
        def work() -> None:
            if self.zc is not None:
                if self.info is not None:
                    self.zc.unregister_service(self.info)
                self.zc.close()

        return deferToThread(work)
