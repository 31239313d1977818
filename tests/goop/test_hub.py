"""
The rendezvous hub over real loopback sockets: signed publish, limits, SSE,
health, templates, TTL eviction and the shared peer DB.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.goop.identity import Identity, loadIdentity
from suite.goop.p2p.discovery import signedPublication
from suite.goop.rendezvous.hub import RendezvousHub
from suite.goop.rendezvous.registry import PeerRegistry, PublishError, TokenBucket, verifyPublication
from suite.netutil import boundPort
from tests.support.http import httpHeaders


async def hubURL(hub: RendezvousHub) -> str:
    """
    The base URL of a started C{hub}, once it listens.
    """
    for _ in range(100):
        if hub.listening is not None:
            return f"http://127.0.0.1:{boundPort(hub.listening)}"
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("the hub did not start listening")


async def syncNow(hub: RendezvousHub) -> None:
    """
    One whole sync of C{hub} with its peer DB, begun now: C{sync} does not
    start one while its periodic sync is still running.
    """
    while True:
        d = hub.sync()
        if d is not None:
            await d
            return
        await deferLater(reactor, 0.01, lambda: None)


def ident(case: SynchronousTestCase) -> Identity:
    d = case.mktemp()
    os.makedirs(d)
    return loadIdentity(d)


class RegistryTests(SynchronousTestCase):
    def test_verification(self) -> None:
        """Forged, tampered, replayed or skewed publications are refused."""
        a, b = ident(self), ident(self)
        body, sig = signedPublication(a, "a", 4001, 60, now=1000.0)
        pub = verifyPublication(body, sig, 1000.0, "1.2.3.4")
        self.assertEqual(pub["addrs"], ["1.2.3.4:4001"])
        self.assertRaises(PublishError, verifyPublication, body.replace(b'"a"', b'"b"'), sig, 1000.0, "x")
        self.assertRaises(PublishError, verifyPublication, body, b.sign(body), 1000.0, "x")
        self.assertRaises(PublishError, verifyPublication, body, sig, 5000.0, "x")
        reg = PeerRegistry()
        self.assertEqual(reg.apply(pub, 1000.0)[0], "join")  # type: ignore[index]
        self.assertRaises(PublishError, reg.apply, pub, 1001.0)  # replay
        self.assertEqual(reg.evict(1059.0), [])
        self.assertEqual([r["peer_id"] for r in reg.evict(1061.0)], [a.peerId])

    def test_onlyTheSourceAddressRecorded(self) -> None:
        """
        A publication's own C{addrs} are ignored (followers would dial
        them); a TTL outside 5..86400 or a C{rendezvous} that is not a
        boolean is refused with the reason, not clamped or coerced.
        """
        a = ident(self)

        def publish(**fields: object) -> dict[str, object]:
            doc = {"peer_id": a.peerId, "public_key": a.publicB64, "ts": 1000.0, "ttl": 60, **fields}
            body = json.dumps(doc).encode()
            return verifyPublication(body, a.sign(body), 1000.0, "1.2.3.4")

        self.assertEqual(
            publish(port=4001, addrs=["10.0.0.7:22", "127.0.0.1:6379"])["addrs"], ["1.2.3.4:4001"]
        )
        self.assertEqual(publish(port=0, addrs=["10.0.0.7:22"])["addrs"], [])
        body = json.dumps(
            {"peer_id": a.peerId, "public_key": a.publicB64, "ts": 1000.0, "port": 4001}
        ).encode()
        self.assertEqual(
            verifyPublication(body, a.sign(body), 1000.0, "2001:db8::1")["addrs"], ["[2001:db8::1]:4001"]
        )
        self.assertEqual(publish(ttl=5)["ttl"], 5)
        self.assertEqual(publish(ttl=86400)["ttl"], 86400)
        for ttl in (4, 0, -1, 86401, 10**12):
            with self.assertRaises(PublishError) as e:
                publish(ttl=ttl)
            self.assertEqual(str(e.exception), "ttl must be an integer from 5 to 86400")
        self.assertIs(publish(rendezvous=True)["rendezvous"], True)
        for label in ("two\nlines", "bell\x07", "esc\x1b[31m"):
            with self.assertRaises(PublishError) as e:
                publish(label=label)
            self.assertEqual(str(e.exception), "label: one line of text without control characters")
        self.assertEqual(publish(label="Mon site · été")["label"], "Mon site · été")
        for bad in ("yes", 1, None):
            with self.assertRaises(PublishError) as e:
                publish(rendezvous=bad)
            self.assertEqual(str(e.exception), "rendezvous must be true or false")

    def test_replayAfterOfflineRefused(self) -> None:
        """A peer's old "online" record replayed after its "offline" is refused (per-peer sequence)."""
        a = ident(self)
        reg = PeerRegistry()
        online = verifyPublication(*signedPublication(a, "a", 4001, 60, now=1000.0, seq=1), 1000.0, "1.2.3.4")
        offline = verifyPublication(
            *signedPublication(a, "a", 4001, 60, "offline", now=1001.0, seq=2), 1001.0, "1.2.3.4"
        )
        self.assertEqual(reg.apply(online, 1000.0)[0], "join")  # type: ignore[index]
        self.assertEqual(reg.apply(offline, 1001.0)[0], "leave")  # type: ignore[index]
        with self.assertRaises(PublishError) as cm:
            reg.apply(online, 1002.0)
        self.assertIn("replayed", str(cm.exception))
        self.assertEqual(reg.list(), [])
        newer = verifyPublication(*signedPublication(a, "a", 4001, 60, now=1003.0, seq=3), 1003.0, "1.2.3.4")
        self.assertEqual(reg.apply(newer, 1003.0)[0], "join")  # type: ignore[index]
        # the memory of a departed peer outlives the skew window, then goes
        reg.apply(
            verifyPublication(*signedPublication(a, "a", 1, 60, "offline", now=1004.0, seq=4), 1004.0, "x"),
            1004.0,
        )
        reg.evict(1004.0 + 599.0)
        self.assertIn(a.peerId, reg.lastSeq)
        reg.evict(1004.0 + 601.0)
        self.assertNotIn(a.peerId, reg.lastSeq)

    def test_forwardedForTrustedOnly(self) -> None:
        """X-Forwarded-For is believed only from a configured proxy, and then its right-most untrusted hop."""
        from twisted.internet.address import IPv4Address
        from twisted.web.test.requesthelper import DummyRequest

        from suite.goop.webutil import clientIP, parseNetworks

        def req(peer: str, xff: str) -> Any:
            # Any: DummyRequest stands in for a server Request without being one.
            r = DummyRequest([b""])
            r.client = IPv4Address("TCP", peer, 1234)
            r.requestHeaders.addRawHeader(b"x-forwarded-for", xff.encode())
            return r

        self.assertEqual(clientIP(req("127.0.0.1", "203.0.113.9")), "127.0.0.1")
        trusted = parseNetworks(["127.0.0.1", "10.0.0.0/8"])
        self.assertEqual(clientIP(req("127.0.0.1", "1.1.1.1, 203.0.113.9"), trusted), "203.0.113.9")
        self.assertEqual(clientIP(req("127.0.0.1", "203.0.113.9, 10.1.1.1"), trusted), "203.0.113.9")
        self.assertEqual(clientIP(req("198.51.100.7", "203.0.113.9"), trusted), "198.51.100.7")

    def test_tokenBucket(self) -> None:
        """A client over its burst is refused until tokens refill."""
        tb = TokenBucket(rate=1.0, burst=3)
        self.assertEqual([tb.allow("ip", 0.0) for _ in range(4)], [True, True, True, False])
        self.assertTrue(tb.allow("other", 0.0))
        self.assertTrue(tb.allow("ip", 1.5))


class HubTests(TestCase):
    async def startHub(self, **kw: object) -> tuple[RendezvousHub, str]:
        hub = RendezvousHub(reactor, port=0, **kw)  # type: ignore[arg-type]
        hub.startService()
        self.addCleanup(hub.stopService)
        return hub, await hubURL(hub)

    async def publish(
        self, url: str, who: Identity, label: str = "p", kind: str = "online", ip: str | None = None
    ) -> int:
        body, sig = signedPublication(who, label, 4001, 60, kind)
        headers = {"content-type": "application/json", "x-goop-signature": sig}
        if ip:
            headers["x-forwarded-for"] = ip
        r = await treq.post(url + "/publish", data=body, headers=httpHeaders(headers), persistent=False)
        await r.content()
        return int(r.code)

    async def getJSON(self, url: str) -> tuple[int, Any]:
        r = await treq.get(url, persistent=False)
        return r.code, json.loads(await r.content())

    async def test_peerDbUnopenable(self) -> None:
        """
        A shared peer DB that cannot be opened fails the hub's start naming
        presence.peer_db_path, and stopping it then logs no failed "final
        sync" (there is nothing to sync).
        """
        from twisted.logger import globalLogPublisher

        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        fatal: list[tuple[str, str]] = []
        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        hub = RendezvousHub(
            reactor,
            port=0,
            peerDbFile=os.path.join(blocker, "peers.db"),
            onFatal=lambda what, f: fatal.append((what, f.getErrorMessage())),
        )
        hub.startService()
        for _ in range(100):
            if fatal:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(len(fatal), 1)
        self.assertIn("presence.peer_db_path: cannot open", fatal[0][1])
        stopped: Any = hub.stopService()
        await stopped
        self.assertEqual([e for e in events if "final peer DB sync" in str(e.get("log_format"))], [])

    async def test_publishAndList(self) -> None:
        """A signed publish appears in /peers.json; a forged one is refused; offline removes it."""
        hub, url = await self.startHub()
        a = ident(self)
        self.assertEqual(await self.publish(url, a, "alpha"), 200)
        code, peers = await self.getJSON(url + "/peers.json")
        self.assertEqual([p["label"] for p in peers], ["alpha"])
        r = await treq.post(
            url + "/publish",
            data=b'{"peer_id": "x"}',
            headers=httpHeaders({"x-goop-signature": "AA=="}),
            persistent=False,
        )
        self.assertEqual(r.code, 400)
        self.assertIn("public_key", (await r.json())["error"])
        r = await treq.post(url + "/publish", data=b"x" * 20000, persistent=False)
        self.assertEqual(r.code, 413)
        await r.content()
        self.assertEqual(await self.publish(url, a, kind="offline"), 200)
        self.assertEqual((await self.getJSON(url + "/peers.json"))[1], [])

    async def test_publishRateLimit(self) -> None:
        """Per-IP rate limit on /publish answers 429; other addresses are unaffected."""
        hub, url = await self.startHub(publishRate=0.01, publishBurst=2, trustedProxies=["127.0.0.1"])
        a = ident(self)
        codes = [await self.publish(url, a, ip="9.9.9.9") for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])
        self.assertEqual(await self.publish(url, a, ip="8.8.8.8"), 200)

    async def test_sseCapAndEvents(self) -> None:
        """SSE clients get join events; one over the cap gets 429."""
        hub, url = await self.startHub(maxSSEClients=1)
        received: list[bytes] = []
        r = await treq.get(url + "/events", unbuffered=True, persistent=False)
        self.assertEqual(r.code, 200)
        done = treq.collect(r, received.append)
        r2 = await treq.get(url + "/events", persistent=False)
        self.assertEqual(r2.code, 429)
        await r2.content()
        await self.publish(url, ident(self), "joiner")
        for _ in range(100):
            if b"event: join" in b"".join(received):
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertIn(b"joiner", b"".join(received))
        hub.sse.stop()
        await done

    async def test_ssePerForwardedAddress(self) -> None:
        """Behind a configured proxy, the per-address SSE cap counts X-Forwarded-For addresses."""
        hub, url = await self.startHub(maxSSEPerIP=1, trustedProxies=["127.0.0.1"])
        r1 = await treq.get(
            url + "/events",
            headers=httpHeaders({"x-forwarded-for": "203.0.113.1"}),
            unbuffered=True,
            persistent=False,
        )
        self.assertEqual(r1.code, 200)
        r2 = await treq.get(
            url + "/events", headers=httpHeaders({"x-forwarded-for": "203.0.113.1"}), persistent=False
        )
        self.assertEqual(r2.code, 429)
        await r2.content()
        r3 = await treq.get(
            url + "/events",
            headers=httpHeaders({"x-forwarded-for": "203.0.113.2"}),
            unbuffered=True,
            persistent=False,
        )
        self.assertEqual(r3.code, 200)
        self.assertEqual(hub.sse.clientCount, 2)
        done = [treq.collect(r, lambda b: None) for r in (r1, r3)]
        hub.sse.stop()
        for d in done:
            await d

    async def test_forwardedForIgnoredByDefault(self) -> None:
        """Without trusted_proxies, rotating X-Forwarded-For does not get past the per-address SSE cap."""
        hub, url = await self.startHub(maxSSEPerIP=1)
        r1 = await treq.get(
            url + "/events",
            headers=httpHeaders({"x-forwarded-for": "203.0.113.1"}),
            unbuffered=True,
            persistent=False,
        )
        self.assertEqual(r1.code, 200)
        r2 = await treq.get(
            url + "/events", headers=httpHeaders({"x-forwarded-for": "203.0.113.2"}), persistent=False
        )
        self.assertEqual(r2.code, 429)
        await r2.content()
        done = treq.collect(r1, lambda b: None)
        hub.sse.stop()
        await done

    async def test_healthAndTemplates(self) -> None:
        """/healthz reports real checks; the template store serves manifests and bundles safely."""
        tdir = self.mktemp()
        os.makedirs(os.path.join(tdir, "blog"))
        with open(os.path.join(tdir, "blog", "manifest.json"), "w") as f:
            json.dump({"title": "Blog"}, f)
        db = os.path.join(self.mktemp() + "-peers.db")
        hub, url = await self.startHub(templatesDir=tdir, peerDbFile=db)
        code, body = await self.getJSON(url + "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(set(body["checks"]), {"event_loop", "peer_db"})
        self.assertEqual((await self.getJSON(url + "/api/templates"))[1][0]["name"], "blog")
        self.assertEqual((await self.getJSON(url + "/api/templates/blog/manifest.json"))[1]["title"], "Blog")
        r = await treq.get(url + "/api/templates/blog/bundle", persistent=False)
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["application/gzip"])
        self.assertEqual((await r.content())[:2], b"\x1f\x8b")
        for bad in (
            "/api/templates/../bundle",
            "/api/templates/..%2f..%2fetc/bundle",
            "/api/templates/nope/bundle",
        ):
            r = await treq.get(url + bad, persistent=False)
            self.assertEqual(r.code, 404, bad)
            await r.content()

    async def test_sharedPeerDB(self) -> None:
        """Two hubs on one peer DB: a peer published to one appears, with its event, on the other."""
        db = self.mktemp() + "-shared.db"
        hub1, url1 = await self.startHub(peerDbFile=db)
        hub2, url2 = await self.startHub(peerDbFile=db)
        events: list[tuple[str, object]] = []
        hub2.sse.publish = lambda event, data, id=None: events.append((event, data))  # type: ignore[method-assign]
        a = ident(self)
        self.assertEqual(await self.publish(url1, a, "shared"), 200)
        await syncNow(hub1)
        await syncNow(hub2)
        code, peers = await self.getJSON(url2 + "/peers.json")
        self.assertEqual([p["label"] for p in peers], ["shared"])
        self.assertEqual([(e, d["peer_id"]) for e, d in events], [("join", a.peerId)])  # type: ignore[index]
        self.assertEqual(await self.publish(url1, a, kind="offline"), 200)
        await syncNow(hub1)
        await syncNow(hub2)
        self.assertEqual((await self.getJSON(url2 + "/peers.json"))[1], [])
        self.assertEqual(events[-1][0], "leave")


class EvictionTests(SynchronousTestCase):
    def test_ttlEviction(self) -> None:
        """A peer that stops heart-beating leaves when its TTL runs out (Clock-driven)."""
        clock = Clock()
        clock.advance(10_000)
        hub = RendezvousHub(clock, port=0)
        left: list[str] = []
        hub.sse.publish = lambda event, data, id=None: left.append(event)  # type: ignore[method-assign]
        a = ident(self)
        body, sig = signedPublication(a, "a", 1, 30, now=clock.seconds())
        hub.publish(body, sig, "1.1.1.1")
        hub._evict.start(1.0, now=False)
        clock.advance(29)
        self.assertEqual(len(hub.registry), 1)
        clock.advance(2)
        self.assertEqual(len(hub.registry), 0)
        self.assertEqual(left, ["join", "leave"])
        hub._evict.stop()
