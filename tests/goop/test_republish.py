"""
A peer re-registers as soon as its hub's event stream reconnects after a
hub restart (the guide: "within 5 s"), not at its next heartbeat; the hub
and its rendezvous-only viewer answer unknown API paths in JSON.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH

from suite.goop.identity import loadIdentity
from suite.goop.p2p.discovery import HubClient, PeerDirectory
from tests.support.process import DaemonProcess, freePort, scriptArgs


class RepublishTests(TestCase):
    timeout = 180

    def hub(self, d: str, name: str) -> DaemonProcess:
        return DaemonProcess(self, scriptArgs("goop2", "rendezvous", d), name=name).start()

    async def test_republishOnReconnect(self) -> None:
        """
        With an hour between heartbeats, a restarted hub process (empty
        registry, same port) lists the peer again once the event stream is
        back: the peer published on reconnecting.
        """
        port = freePort()
        hubDir = os.path.abspath(self.mktemp())
        os.makedirs(hubDir)
        with open(os.path.join(hubDir, "goop.json"), "w") as f:
            json.dump(
                {"presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": port}}, f
            )
        url = f"http://127.0.0.1:{port}"
        first = self.hub(hubDir, "hub1")
        await first.waitForHTTP(url + "/peers.json")
        # JSON errors everywhere: the rendezvous-only viewer has no peer list,
        # and neither it nor the hub answers an unknown API path with HTML.
        m = await first.waitForLog(r"viewer on (http://127\.0\.0\.1:\d+)/")
        viewer = m.group(1)
        for method, missing, code in (
            ("GET", viewer + "/api/peers", 404),
            ("GET", viewer + "/api/nothing", 404),
            ("GET", viewer + "/api/logs/nothing", 404),
            ("GET", url + "/api/nothing", 404),
            ("GET", url + "/nothing", 404),
            ("PUT", url + "/publish", 405),
            ("DELETE", url + "/peers.json", 405),
        ):
            r = await treq.request(method, missing, persistent=False)
            self.assertEqual(r.code, code, missing)
            self.assertTrue(r.headers.getRawHeaders(b"content-type")[0].startswith(b"application/json"))
            self.assertIn("error", json.loads(await r.content()))

        peerDir = os.path.abspath(self.mktemp())
        os.makedirs(peerDir)
        identity = loadIdentity(peerDir)
        client = HubClient(
            reactor,
            identity,
            url,
            PeerDirectory(identity.peerId),
            lambda: "republisher",
            lambda: 1,
            120,
            3600,
        )
        client.start()
        self.addCleanup(client.stop)

        async def listed() -> bool:
            r = await treq.get(url + "/peers.json", persistent=False)
            peers: Any = json.loads(await r.content())
            return any(p.get("peer_id") == identity.peerId for p in peers)

        await first.waitFor(listed, "the first publication")
        await first.waitFor(lambda: client.streams == 1, "the event stream")
        await first.stop()

        second = self.hub(hubDir, "hub2")
        await second.waitForHTTP(url + "/peers.json")
        await second.waitFor(listed, "the republication", timeout=10)
        self.assertEqual((client.streams, client.beats), (2, 1))
        self.assertEqual(client.published, 2)


class _Response:
    """What the hub client reads of a response: code, body, length."""

    def __init__(self, code: int, body: bytes = b"", stream: bool = False) -> None:
        self.code = code
        self.body = body
        self.stream = stream
        self.length = UNKNOWN_LENGTH
        self.protocol: Protocol | None = None

    def content(self) -> Deferred[bytes]:
        return succeed(self.body)

    def deliverBody(self, protocol: Protocol) -> None:
        self.protocol = protocol
        if not self.stream:
            protocol.dataReceived(self.body)
            protocol.connectionLost(Failure(ResponseDone()))

    def end(self) -> None:
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(ResponseDone()))


class _Hub:
    """The hub as the client sees it over HTTP, up or down, on one clock."""

    def __init__(self, clock: MemoryReactorClock) -> None:
        self.clock = clock
        self.up = True
        self.requests: list[tuple[float, str, str]] = []
        self.streams: list[_Response] = []

    def _record(self, method: str, url: str) -> None:
        self.requests.append((self.clock.seconds(), method, url.rsplit("/", 1)[1]))

    def post(self, url: str, **kw: Any) -> Deferred[_Response]:
        self._record("POST", url)
        return succeed(_Response(200, b"{}")) if self.up else fail(ConnectionRefusedError())

    def get(self, url: str, **kw: Any) -> Deferred[_Response]:
        self._record("GET", url)
        if not self.up:
            return fail(ConnectionRefusedError())
        if url.endswith("/events"):
            self.streams.append(_Response(200, stream=True))
            return succeed(self.streams[-1])
        return succeed(_Response(200, b"[]"))


class ReconnectTests(SynchronousTestCase):
    def test_publishOnEveryReconnect(self) -> None:
        """
        The event stream ends (the hub went away) and the hub is down for a
        while: the client retries the stream every 2 s and publishes the
        moment it is back, with an hour between heartbeats; then follows
        the new stream.
        """
        clock = MemoryReactorClock()
        identity = loadIdentity(self._dir())
        client = HubClient(
            clock, identity, "http://hub", PeerDirectory(identity.peerId), lambda: "p", lambda: 1, 120, 3600
        )
        hub = _Hub(clock)
        client.http = hub  # type: ignore[assignment]
        client.start()
        self.assertEqual(
            [r[1:] for r in hub.requests],
            [("POST", "publish"), ("GET", "peers.json"), ("GET", "events"), ("GET", "peers.json")],
        )
        clock.advance(100)
        hub.requests.clear()
        hub.up = False
        hub.streams[0].end()
        clock.advance(2)
        clock.advance(2)
        self.assertEqual(hub.requests, [(102.0, "GET", "events"), (104.0, "GET", "events")])
        hub.up = True
        clock.advance(2)
        self.assertEqual(
            hub.requests[2:],
            [(106.0, "GET", "events"), (106.0, "POST", "publish"), (106.0, "GET", "peers.json")],
        )
        self.assertEqual((client.streams, client.beats, client.published), (2, 1, 2))
        # The stream is followed again: an event on it updates the directory.
        assert hub.streams[1].protocol is not None
        hub.streams[1].protocol.dataReceived(
            b'event: join\ndata: {"peer_id": "other", "addrs": ["127.0.0.1:2"]}\n\n'
        )
        self.assertIsNotNone(client.directory.get("other"))
        client.stop()
        self.assertEqual(hub.requests[-1][1:], ("POST", "publish"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_oneStreamAtATime(self) -> None:
        """
        The event stream is followed by one request at a time: each end of
        it (or failure to open it) schedules exactly one retry 2 s later,
        however often the heartbeat runs meanwhile; a stop while waiting
        cancels the retry and no stream is requested after it.
        """
        clock = MemoryReactorClock()
        identity = loadIdentity(self._dir())
        client = HubClient(
            clock, identity, "http://hub", PeerDirectory(identity.peerId), lambda: "p", lambda: 1, 120, 0.5
        )
        hub = _Hub(clock)
        client.http = hub  # type: ignore[assignment]
        client.start()

        def streamRequests() -> list[float]:
            return [t for t, _, what in hub.requests if what == "events"]

        self.assertEqual(streamRequests(), [0.0])
        clock.advance(5)  # ten heartbeats: the open stream is not requested again
        self.assertEqual(streamRequests(), [0.0])
        hub.up = False
        hub.streams[0].end()
        for _ in range(8):
            clock.advance(0.5)
        self.assertEqual(streamRequests(), [0.0, 7.0, 9.0])
        self.assertEqual(len(hub.streams), 1)
        client.stop()
        clock.advance(10)
        self.assertEqual(streamRequests(), [0.0, 7.0, 9.0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def _dir(self) -> str:
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        return d


class _SlowListHub(_Hub):
    """A hub whose peers.json answers only when the test says so."""

    def __init__(self, clock: MemoryReactorClock) -> None:
        super().__init__(clock)
        self.lists: list[Deferred[_Response]] = []

    def get(self, url: str, **kw: Any) -> Deferred[_Response]:
        if url.endswith("/peers.json"):
            self._record("GET", url)
            d: Deferred[_Response] = Deferred()
            self.lists.append(d)
            return d
        return super().get(url, **kw)


class SnapshotRaceTests(SynchronousTestCase):
    def test_eventNewerThanTheList(self) -> None:
        """
        A peers.json requested before an event arrives after it: the list
        neither drops a peer that joined meanwhile, nor brings back one that
        left, nor overwrites newer details; peers the events did not touch
        follow the list.
        """
        clock = MemoryReactorClock()
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        identity = loadIdentity(d)
        directory = PeerDirectory(identity.peerId)
        directory.update({"peer_id": "gone", "addrs": []}, "rendezvous")
        directory.update({"peer_id": "stale", "addrs": []}, "rendezvous")
        client = HubClient(clock, identity, "http://hub", directory, lambda: "p", lambda: 1, 120, 3600)
        hub = _SlowListHub(clock)
        client.http = hub  # type: ignore[assignment]
        client.start()
        assert hub.streams[0].protocol is not None
        events = hub.streams[0].protocol
        events.dataReceived(b'event: join\ndata: {"peer_id": "new", "label": "fresh", "addrs": []}\n\n')
        events.dataReceived(b'event: leave\ndata: {"peer_id": "left"}\n\n')
        old = [
            {"peer_id": "left", "addrs": []},
            {"peer_id": "new", "label": "old", "addrs": []},
            {"peer_id": "kept", "addrs": []},
        ]
        for pending in hub.lists:
            pending.callback(_Response(200, json.dumps(old).encode()))
        self.assertEqual(sorted(directory.known), ["kept", "new"])
        self.assertEqual(directory.get("new")["label"], "fresh")  # type: ignore[index]
        # A list requested after the events is authoritative again.
        later = Deferred.fromCoroutine(client._refresh())
        hub.lists[-1].callback(_Response(200, json.dumps([{"peer_id": "kept", "addrs": []}]).encode()))
        self.successResultOf(later)
        self.assertEqual(sorted(directory.known), ["kept"])
        client.stop()


class StopTests(SynchronousTestCase):
    def test_stopCancelsRunningRequests(self) -> None:
        """
        Requests the client started on its own (the first heartbeat's and
        the answered stream's peer-list reads) and still running when it
        stops are cancelled by the stop: nothing of the client is left
        running after it, for the agent to retry against a hub that is gone.
        """
        clock = MemoryReactorClock()
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        identity = loadIdentity(d)
        client = HubClient(
            clock, identity, "http://hub", PeerDirectory(identity.peerId), lambda: "p", lambda: 1, 120, 3600
        )
        hub = _SlowListHub(clock)
        client.http = hub  # type: ignore[assignment]
        client.start()
        self.assertEqual(len(hub.lists), 2)
        self.assertEqual([pending.called for pending in hub.lists], [False, False])
        stopped = client.stop()
        self.assertEqual([pending.called for pending in hub.lists], [True, True])
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(hub.requests[-1][1:], ("POST", "publish"))
        self.assertEqual(client.published, 2)
        self.assertEqual(clock.getDelayedCalls(), [])
