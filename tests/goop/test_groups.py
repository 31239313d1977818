"""
Groups: relaying with a stamped sender, slow members dropped without
delaying others, and host failure detected by heartbeats (Clock-driven).
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.goop.groups import (
    PING_SECONDS,
    SILENCE_SECONDS,
    GroupService,
    HostMember,
    MemberCore,
    MemberInputs,
    memberMachine,
)
from tests.goop.test_host_link_table import linkState


class FakeStream:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.onMessage: Any = None
        self.onLost: Any = None

    def send(self, m: dict[str, Any]) -> None:
        self.sent.append(m)

    def close(self) -> None:
        self.closed = True


class HostTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.svc = GroupService(self.clock, "host", lambda p: Deferred())
        self.svc.createGroup("g")

    def member(self, pid: str) -> tuple[Any, list[dict[str, Any]], StringTransport]:
        out: list[dict[str, Any]] = []
        t = StringTransport()
        s = self.svc.hostSession(pid, out.append, t.loseConnection, t)
        s.received({"type": "join", "group": "g"})
        return s, out, t

    def test_relayStampsFrom(self) -> None:
        """The host stamps 'from' with the authenticated sender, whatever the message says."""
        a, outA, _ = self.member("a")
        b, outB, _ = self.member("b")
        self.assertEqual(outA[0]["type"], "welcome")
        a.received({"type": "msg", "group": "g", "data": "hi", "from": "b"})
        msgs = [m for m in outB if m["type"] == "msg"]
        self.assertEqual(msgs, [{"type": "msg", "group": "g", "from": "a", "data": "hi"}])
        self.assertEqual([m for m in outA if m["type"] == "msg"], [])

    def test_slowMemberDropped(self) -> None:
        """A member whose connection pushes back is queued, then dropped; others get every message at once."""
        a, outA, _ = self.member("a")
        b, outB, _ = self.member("b")
        slow, outSlow, tSlow = self.member("slow")
        slow.member.pauseProducing()
        for i in range(2000):
            a.received({"type": "msg", "group": "g", "data": i})
        self.assertEqual([m["data"] for m in outB if m["type"] == "msg"], list(range(2000)))
        self.assertEqual(linkState(slow.member.link), "Dropped")
        self.assertTrue(tSlow.disconnecting)
        self.assertNotIn("slow", self.svc.hosted["g"].members)
        self.assertEqual(len(slow.member.core.queue), 0)

    def test_queueDrainsOnResume(self) -> None:
        """A briefly paused member gets its queued messages, in order, on resume."""
        t = StringTransport()
        out: list[dict[str, Any]] = []
        m = HostMember("m", out.append, t.loseConnection, t, self.clock, maxQueue=10)
        m.pauseProducing()
        for i in range(5):
            m.sendMessage({"n": i})
        self.assertEqual(out, [])
        m.resumeProducing()
        self.assertEqual([x["n"] for x in out], list(range(5)))


class MemberTests(SynchronousTestCase):
    def test_hostCrashDetectedAndReconnect(self) -> None:
        """A silent host is declared lost within 11 s and the member reconnects."""
        clock = Clock()
        streams: list[FakeStream] = []

        def open(peer: str) -> Deferred[Any]:
            s = FakeStream()
            streams.append(s)
            return succeed(s)

        svc = GroupService(clock, "me", open)
        events: list[dict[str, Any]] = []
        svc.join("host", "g", events.append)
        self.assertEqual(streams[0].sent, [{"type": "join", "group": "g"}])
        streams[0].onMessage({"type": "welcome", "group": "g", "members": ["me"]})
        # host answers pings for a while
        for _ in range(20):
            clock.advance(1)
            streams[0].onMessage({"type": "pong"})
        crashedAt = clock.seconds()
        while not any(e["type"] == "host-lost" for e in events):
            clock.advance(0.5)
            self.assertLessEqual(clock.seconds() - crashedAt, 11)
        self.assertEqual(clock.seconds() - crashedAt, 11)
        self.assertTrue(streams[0].closed)
        clock.advance(1.0)
        self.assertEqual(len(streams), 2)
        self.assertEqual(streams[1].sent[0], {"type": "join", "group": "g"})
        svc.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_silenceDetectionBound(self) -> None:
        """
        The heartbeat pings every PING_SECONDS (1 s); the host is declared
        lost at the first tick more than SILENCE_SECONDS after its last
        message, whenever within the tick that message came: never later
        than 11 s (the figure docs/goop.md and docs/security.md give), and
        exactly 11 s when it came on a tick.
        """
        self.assertEqual((PING_SECONDS, SILENCE_SECONDS), (1.0, 10.0))
        for offset in (0.0, 0.25, 0.5, 0.999):
            clock = Clock()
            stream = FakeStream()
            svc = GroupService(clock, "me", SignedMessageTests.opener(stream))
            events: list[dict[str, Any]] = []
            svc.join("host", "g", events.append)
            stream.onMessage({"type": "welcome", "group": "g", "members": ["me"]})
            for _ in range(5):
                clock.advance(1)
            self.assertEqual(sum(m["type"] == "ping" for m in stream.sent), 5)  # one a second
            clock.advance(offset)
            stream.onMessage({"type": "msg", "group": "g", "from": "x", "data": 1})
            lastHeard = clock.seconds()
            while not any(e["type"] == "host-lost" for e in events):
                clock.advance(math.floor(clock.seconds()) + 1 - clock.seconds())  # to the next tick
            lost = clock.seconds() - lastHeard
            self.assertGreater(lost, SILENCE_SECONDS)
            self.assertLessEqual(lost, 11.0 + 1e-9)
            self.assertAlmostEqual(lost, 11.0 - offset, places=6)
            svc.stop()

    def test_noWelcomeRetries(self) -> None:
        """A host that accepts the stream but never welcomes is treated as silent; the member retries."""
        clock = Clock()
        streams: list[FakeStream] = []

        def open(peer: str) -> Deferred[Any]:
            streams.append(FakeStream())
            return succeed(streams[-1])

        svc = GroupService(clock, "me", open)
        svc.join("host", "g")
        clock.advance(SILENCE_SECONDS + 0.1)
        self.assertTrue(streams[0].closed)
        clock.advance(1.0)
        self.assertEqual(len(streams), 2)
        svc.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_leaveAndClose(self) -> None:
        """Leaving sends leave and stops timers; a host close ends the membership."""
        clock = Clock()
        s = FakeStream()
        svc = GroupService(clock, "me", lambda p: succeed(s))
        events: list[dict[str, Any]] = []
        m = svc.join("host", "g", events.append)
        s.onMessage({"type": "welcome", "group": "g"})
        s.onMessage({"type": "close", "group": "g"})
        self.assertEqual(clock.getDelayedCalls(), [])
        m.leave()
        self.assertEqual(events[-1]["type"], "close")


class MemberMachineTests(SynchronousTestCase):
    """
    The member machine: every state answers every input, and its timers
    (state data) never outlive the state.
    """

    INPUTS = (
        "start",
        "welcomed",
        "connectFailed",
        "connectionLost",
        "hostSilent",
        "hostClosed",
        "retryDue",
        "leave",
    )
    PATHS: dict[str, list[str]] = {
        "Idle": [],
        "Connecting": ["start"],
        "Joined": ["start", "welcomed"],
        "Waiting": ["start", "connectFailed"],
        "Left": ["leave"],
    }

    def machine(self, clock: Clock) -> MemberInputs:
        core = MemberCore(clock, "g", lambda: succeed(FakeStream()), lambda event: None)
        m = memberMachine(core)
        core.machine = m
        return m

    def test_everyStateAnswersEveryInput(self) -> None:
        """
        Each state, reached by its shortest path, answers each input; after
        a leave no timer is left on the clock.
        """
        for state, path in self.PATHS.items():
            for name in self.INPUTS:
                clock = Clock()
                m = self.machine(clock)
                for step in path:
                    getattr(m, step)()
                try:
                    getattr(m, name)()
                except Exception as e:
                    self.fail(f"{state} does not answer {name}: {e!r}")
                m.leave()
                self.assertEqual(clock.getDelayedCalls(), [], (state, name))

    def test_backoffDoublesAndResets(self) -> None:
        """
        Consecutive failed attempts wait 1, 2, 4 ... seconds (at most 30); a
        welcome starts over at 1.
        """
        clock = Clock()
        m = self.machine(clock)
        m.start()
        delays = []
        for _ in range(7):
            m.connectFailed()
            (call,) = clock.getDelayedCalls()
            delays.append(call.getTime() - clock.seconds())
            clock.advance(delays[-1])
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
        m.welcomed()
        m.connectionLost()
        retry = [c for c in clock.getDelayedCalls() if c.getTime() - clock.seconds() == 1.0]
        self.assertEqual(len(retry), 1)
        m.leave()
        self.assertEqual(clock.getDelayedCalls(), [])


class GroupsAPITests(SynchronousTestCase):
    """
    The viewer's C{POST /api/groups}: bad input is a 4xx with the reason,
    never a membership that can only fail (a made-up host) or a silent 200
    for a group this peer neither hosts nor belongs to.
    """

    SELF, OTHER = "a" * 64, "b" * 64

    def setUp(self) -> None:
        from suite.goop.peer.viewer import _Groups

        self.clock = Clock()
        self.svc = GroupService(self.clock, self.SELF, lambda p: Deferred())
        self.addCleanup(self.svc.stop)

        class Peer:
            groups = self.svc

        self.resource = _Groups(Peer())

    def post(self, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import io
        import json

        from twisted.web.test.requesthelper import DummyRequest

        # Any: DummyRequest stands in for a server Request without being one.
        request: Any = DummyRequest([b""])
        request.method = b"POST"
        request.requestHeaders.setRawHeaders(b"content-type", [b"application/json"])
        request.content = io.BytesIO(json.dumps(doc).encode())
        body = self.resource.render(request)
        return request.responseCode or 200, json.loads(body)

    def test_badInput(self) -> None:
        """
        Unknown actions, host ids that are not peer ids (or this peer's own),
        and actions on groups not joined or not hosted are refused.
        """
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"action": "nope", "group": "g"}, 400, "action"),
            ({"action": "join", "group": "g"}, 400, "host"),
            ({"action": "join", "group": "g", "host": "abc"}, 400, "host"),
            ({"action": "join", "group": "g", "host": 5}, 400, "host"),
            ({"action": "join", "group": "g", "host": self.SELF}, 400, "host"),
            ({"action": "send", "group": "g", "host": self.OTHER, "data": 1}, 404, "not a member"),
            ({"action": "state", "group": "g", "host": self.OTHER}, 404, "not a member"),
            ({"action": "leave", "group": "g", "host": self.OTHER}, 404, "not a member"),
            ({"action": "close", "group": "g"}, 404, "hosted here"),
        ]
        for doc, code, reason in cases:
            got, body = self.post(doc)
            self.assertEqual(got, code, doc)
            self.assertIn(reason, body["error"], doc)
        self.assertEqual(self.svc.memberships, {})

    def test_validFlow(self) -> None:
        """
        Joining a real peer id, sending, leaving, creating and closing work;
        memberships are capped like hosted groups.
        """
        from suite.goop.groups import MAX_GROUPS

        self.assertEqual(self.post({"action": "join", "group": "g", "host": self.OTHER})[0], 200)
        self.assertEqual(self.post({"action": "send", "group": "g", "host": self.OTHER, "data": 1})[0], 200)
        self.assertEqual(self.post({"action": "leave", "group": "g", "host": self.OTHER})[0], 200)
        self.assertEqual(self.post({"action": "create", "group": "mine"})[0], 200)
        self.assertEqual(self.post({"action": "close", "group": "mine"})[0], 200)
        for i in range(MAX_GROUPS):
            self.assertEqual(self.post({"action": "join", "group": f"g{i}", "host": self.OTHER})[0], 200)
        code, body = self.post({"action": "join", "group": "one-more", "host": self.OTHER})
        self.assertEqual(code, 400)
        self.assertIn("too many", body["error"])


class SettingsAPITests(SynchronousTestCase):
    """
    The viewer's C{POST /self} names a key it does not know instead of
    answering 200 and ignoring it (a misspelt C{"lable"} was silently lost).
    """

    def test_unknownKey(self) -> None:
        """
        Only label, name, email and config are accepted.
        """
        import io
        import json

        from twisted.web.test.requesthelper import DummyRequest

        from suite.goop.peer.viewer import _Self

        updates: list[dict[str, Any]] = []

        class Peer:
            def updateProfile(self, doc: dict[str, Any]) -> None:
                updates.append(doc)

            def settings(self) -> dict[str, Any]:
                return {"label": "x"}

        resource = _Self(Peer())

        def post(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            # Any: DummyRequest stands in for a server Request without being one.
            request: Any = DummyRequest([b""])
            request.method = b"POST"
            request.requestHeaders.setRawHeaders(b"content-type", [b"application/json"])
            request.content = io.BytesIO(json.dumps(doc).encode())
            body = resource.render(request)
            return request.responseCode or 200, json.loads(body)

        code, body = post({"lable": "typo"})
        self.assertEqual(code, 400)
        self.assertIn("lable: unknown key", body["error"])
        self.assertEqual(updates, [])
        self.assertEqual(post({"label": "ok", "email": "a@b"})[0], 200)
        self.assertEqual(updates, [{"label": "ok", "email": "a@b"}])


class SignedMessageTests(SynchronousTestCase):
    """
    Members sign what they send (host, group, kind, seq, data); the host
    relays the signature; receivers mark a message verified, or drop one
    whose signature does not hold, so a host can neither put words in a
    member's mouth nor replay them (the guide's audit item 15).
    """

    def setUp(self) -> None:
        from suite.goop.identity import loadIdentity

        def ident() -> Any:
            import os

            d = self.mktemp()
            os.makedirs(d)
            return loadIdentity(d)

        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.alice, self.bob, self.host = ident(), ident(), ident()
        self.hostSvc = GroupService(self.clock, self.host.peerId, lambda p: Deferred())
        self.hostSvc.createGroup("g")
        self.streams: dict[str, FakeStream] = {}
        self.members: dict[str, GroupService] = {}
        self.out: dict[str, list[dict[str, Any]]] = {}
        self.sessions: dict[str, Any] = {}
        for name, who in (("alice", self.alice), ("bob", self.bob)):
            stream = FakeStream()
            self.streams[name] = stream
            svc = GroupService(self.clock, who.peerId, self.opener(stream), identity=who)
            svc.join(self.host.peerId, "g")
            self.members[name] = svc
            out: list[dict[str, Any]] = []
            t = StringTransport()
            session = self.hostSvc.hostSession(who.peerId, out.append, t.loseConnection, t)
            session.received({"type": "join", "group": "g"})
            self.out[name], self.sessions[name] = out, session
            stream.onMessage({"type": "welcome", "group": "g", "members": []})
        for svc in self.members.values():
            self.addCleanup(svc.stop)

    @staticmethod
    def opener(stream: FakeStream) -> Any:
        return lambda peer: succeed(stream)

    def relay(self, sender: str, receiver: str) -> dict[str, Any]:
        """Pass sender's last message through the host; return what the receiver's host link carried."""
        self.sessions[sender].received(self.streams[sender].sent[-1])
        return [m for m in self.out[receiver] if m["type"] in ("msg", "state")][-1]

    def events(self, name: str) -> list[dict[str, Any]]:
        inbox = self.members[name].inbox[f"{self.host.peerId}/g"]
        return [e for e in inbox if e["type"] in ("msg", "state")]

    def test_verified(self) -> None:
        """A relayed msg and state arrive marked verified, without the key and signature."""
        self.members["alice"].send(self.host.peerId, "g", {"text": "hi", "n": 1.5})
        relayed = self.relay("alice", "bob")
        self.assertIn("sig", relayed)
        self.streams["bob"].onMessage(relayed)
        (event,) = self.events("bob")
        self.assertEqual(
            (event["from"], event["data"], event["verified"]),
            (self.alice.peerId, {"text": "hi", "n": 1.5}, True),
        )
        self.assertNotIn("sig", event)

    def test_forgedAndReplayedDropped(self) -> None:
        """
        Changed data, a sender the signature does not belong to, a replay
        and a stale seq are dropped; an unsigned message passes unverified.
        """
        self.members["alice"].send(self.host.peerId, "g", "pay bob 1")
        relayed = self.relay("alice", "bob")
        forged = [
            {**relayed, "data": "pay bob 100"},
            {**relayed, "from": self.host.peerId},
            {**relayed, "group": "g", "type": "state"},
        ]
        for message in forged:
            self.streams["bob"].onMessage(message)
        self.assertEqual(self.events("bob"), [])
        self.streams["bob"].onMessage(dict(relayed))
        self.streams["bob"].onMessage(dict(relayed))  # the host replays it
        self.assertEqual(len(self.events("bob")), 1)
        self.clock.advance(400)
        self.members["alice"].send(self.host.peerId, "g", "late")
        late = self.relay("alice", "bob")
        self.clock.advance(400)  # held back by the host past the window
        self.streams["bob"].onMessage(late)
        self.assertEqual(len(self.events("bob")), 1)
        self.streams["bob"].onMessage(
            {"type": "msg", "group": "g", "from": self.alice.peerId, "data": "old peer"}
        )
        self.assertEqual(self.events("bob")[-1]["verified"], False)

    def welcomeFor(self) -> dict[str, Any]:
        """What the host sends a member joining now (the state set by alice)."""
        out: list[dict[str, Any]] = []
        t = StringTransport()
        self.hostSvc.hostSession("carol", out.append, t.loseConnection, t).received(
            {"type": "join", "group": "g"}
        )
        return out[0]

    def joinWith(self, welcome: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        """
        A fresh member handed C{welcome}: its membership events, its inbox
        and the warnings logged.
        """
        from suite.goop.identity import loadIdentity

        d = self.mktemp()
        import os

        os.makedirs(d)
        who = loadIdentity(d)
        stream = FakeStream()
        svc = GroupService(self.clock, who.peerId, self.opener(stream), identity=who)
        self.addCleanup(svc.stop)
        svc.join(self.host.peerId, "g")
        logged: list[str] = []

        def warned(event: dict[str, Any]) -> None:
            if event.get("log_level") == LogLevel.warn:
                logged.append(formatEvent(event) or "")

        observe: Any = warned

        globalLogPublisher.addObserver(observe)
        try:
            stream.onMessage(welcome)
        finally:
            globalLogPublisher.removeObserver(observe)
        core = svc.memberships[f"{self.host.peerId}/g"][1]
        return list(core.events), list(svc.inbox[f"{self.host.peerId}/g"]), logged

    def test_welcomeSnapshotSigned(self) -> None:
        """
        The welcome carries the state with the signature of the member who
        set it; the joining member marks it verified.
        """
        self.members["alice"].send(self.host.peerId, "g", {"score": 3}, kind="state")
        self.sessions["alice"].received(self.streams["alice"].sent[-1])
        welcome = self.welcomeFor()
        self.assertEqual(welcome["state"], {"score": 3})
        self.assertEqual(welcome["stateSignature"]["from"], self.alice.peerId)
        events, inbox, logged = self.joinWith(welcome)
        self.assertEqual((events, logged), (["joined"], []))
        self.assertEqual(
            (inbox[0]["type"], inbox[0]["state"], inbox[0]["verified"], inbox[0]["stateFrom"]),
            ("welcome", {"score": 3}, True, self.alice.peerId),
        )
        self.assertNotIn("stateSignature", inbox[0])

    def test_forgedWelcomeRefused(self) -> None:
        """
        A welcome whose snapshot the host altered, attributed to another
        peer, signed for another group or kind, or whose signature is
        malformed is refused with a logged reason: the member does not join
        (its welcome timer runs out and it retries).
        """
        self.members["alice"].send(self.host.peerId, "g", {"score": 3}, kind="state")
        self.sessions["alice"].received(self.streams["alice"].sent[-1])
        welcome = self.welcomeFor()
        proof = welcome["stateSignature"]
        self.members["alice"].send(self.host.peerId, "g", {"score": 3}, kind="msg")
        asMsg = self.streams["alice"].sent[-1]
        forged = [
            ({**welcome, "state": {"score": 300}}, "state signature"),
            ({**welcome, "stateSignature": {**proof, "from": self.bob.peerId}}, "another peer"),
            (
                {**welcome, "group": "g", "stateSignature": {**proof, "seq": proof["seq"] + 1}},
                "state signature",
            ),
            (
                {**welcome, "stateSignature": {**proof, "seq": asMsg["seq"], "sig": asMsg["sig"]}},
                "state signature",
            ),
            ({**welcome, "stateSignature": "yes"}, "malformed"),
            ({**welcome, "stateSignature": {**proof, "seq": True}}, "malformed"),
        ]
        for message, reason in forged:
            events, inbox, logged = self.joinWith(dict(message))
            self.assertEqual((events, inbox), ([], []), message)
            self.assertEqual(len(logged), 1, logged)
            self.assertIn("refused the welcome", logged[0])
            self.assertIn(reason, logged[0])
        # An unsigned snapshot (set by a member without a key) joins unverified.
        events, inbox, _ = self.joinWith({"type": "welcome", "group": "g", "members": [], "state": None})
        self.assertEqual((events, inbox[0]["verified"]), (["joined"], False))
