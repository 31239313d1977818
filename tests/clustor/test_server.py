"""
The control-plane store, its feed resources and the reloader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.clustor.interfaces import IControlPlaneStore
from suite.clustor.server import ControlPlaneStore, StateReloader, addFeedResources
from suite.clustor.state import FEEDS, FeedDocument, StateError
from suite.web.admin import AdminRoot
from tests.clustor.helpers import STATE_YAML, captureLogs, writeState


def _bump(path: str) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


class StoreTests(SynchronousTestCase):
    """
    L{ControlPlaneStore} loads, reloads and keeps the last good state.
    """

    def setUp(self) -> None:
        self.path = writeState(self.mktemp())
        self.store = ControlPlaneStore(self.path)
        self.events = captureLogs(self)

    def test_interface(self) -> None:
        """
        The store provides L{IControlPlaneStore}.
        """
        self.assertTrue(verifyObject(IControlPlaneStore, self.store))

    def test_badFileAtStart(self) -> None:
        """
        An invalid file at construction is a L{StateError} naming it.
        """
        bad = writeState(self.mktemp(), "partitions: 3\n")
        with self.assertRaises(StateError) as cm:
            ControlPlaneStore(bad)
        self.assertIn(bad, str(cm.exception))

    def test_reloadChanged(self) -> None:
        """
        A changed file bumps the revision and the published documents.
        """
        writeState(
            os.path.dirname(self.path),
            STATE_YAML.replace("cep.sliding_windows: true", "cep.sliding_windows: false"),
        )
        self.assertTrue(self.store.reload())
        self.assertEqual(self.store.revision, 2)
        doc = json.loads(self.store.document("features").body)
        self.assertEqual(doc["revision"], 2)
        self.assertIs(doc["features"]["cep.sliding_windows"], False)

    def test_reloadUnchanged(self) -> None:
        """
        Re-reading identical content keeps the revision.
        """
        self.assertFalse(self.store.reload())
        self.assertEqual(self.store.revision, 1)

    def test_reloadEpochs(self) -> None:
        """
        Replicas change only with a higher epoch, and no reload lowers an
        epoch: such files are refused like invalid ones, naming the key.
        """
        directory = os.path.dirname(self.path)
        moved = STATE_YAML.replace("replicas: [ceptra-b]", "replicas: [ceptra-a]")
        for text, why in (
            (moved, "partitions[1].epoch: replicas of p1 changed from ['ceptra-b'] to ['ceptra-a'] without"),
            (moved.replace("replicas: [ceptra-a]", "replicas: [ceptra-a]\n    epoch: 3"), None),
            (STATE_YAML.replace("replicas: [ceptra-b]", "replicas: [ceptra-a]\n    epoch: 2"), "lower"),
        ):
            writeState(directory, text)
            self.assertEqual(self.store.reload(), why is None)
            if why is not None:
                self.assertIn(why, self.events[-1]["reason"])
        self.assertEqual(self.store.reloadFailures, 2)
        doc = json.loads(self.store.document("routing").body)
        self.assertEqual(doc["partitions"][1], {"id": "p1", "replicas": ["ceptra-a"], "epoch": 3})

    def test_reloadNodeIdentity(self) -> None:
        """
        A node's SPIFFE ID changes only together with a higher epoch of
        every partition it holds a replica of (a new identity is a new
        replica); a node holding none may change it freely.
        """
        directory = os.path.dirname(self.path)
        renamed = STATE_YAML.replace("spiffe://example.org/ceptra/b", "spiffe://example.org/ceptra/b2")
        writeState(directory, renamed)
        self.assertFalse(self.store.reload())
        self.assertIn(
            "nodes.ceptra-b.spiffe: changed from 'spiffe://example.org/ceptra/b' to "
            "'spiffe://example.org/ceptra/b2' while the node holds replicas of ['p0', 'p1'] whose epoch "
            "is not raised",
            self.events[-1]["reason"],
        )
        raised = renamed.replace("leader: ceptra-a", "leader: ceptra-a\n    epoch: 2").replace(
            "replicas: [ceptra-b]", "replicas: [ceptra-b]\n    epoch: 2"
        )
        writeState(directory, raised)
        self.assertTrue(self.store.reload())
        doc = json.loads(self.store.document("routing").body)
        self.assertEqual(doc["nodes"]["ceptra-b"]["spiffe"], "spiffe://example.org/ceptra/b2")
        # ceptra-b holds nothing any more: its identity may change
        free = raised.replace("replicas: [ceptra-a, ceptra-b]", "replicas: [ceptra-a]").replace(
            "replicas: [ceptra-b]\n    epoch: 2", "replicas: [ceptra-a]\n    epoch: 3"
        )
        free = free.replace("epoch: 2\n  - id: p1", "epoch: 3\n  - id: p1")
        writeState(directory, free)
        self.assertTrue(self.store.reload(), self.events[-1].get("reason"))
        writeState(directory, free.replace("ceptra/b2", "ceptra/b3"))
        self.assertTrue(self.store.reload(), self.events[-1].get("reason"))

    def test_reloadInvalidKeepsOld(self) -> None:
        """
        An invalid file on reload is logged with its reason; the previous
        state stays published.
        """
        before = self.store.document("routing")
        writeState(os.path.dirname(self.path), "partitions: [{id: p0}]\n")
        self.assertFalse(self.store.reload())
        self.assertEqual(self.store.document("routing"), before)
        self.assertEqual(self.store.reloadFailures, 1)
        reasons = [e.get("reason", "") for e in self.events if "reload failed" in e.get("log_format", "")]
        self.assertEqual(len(reasons), 1)
        self.assertIn("partitions[0].replicas", reasons[0])


class _FeedClientMixin(SynchronousTestCase):
    """
    C{get} through the test's in-memory client (a L{StubTreq}).
    """

    client: Any

    def get(self, path: str, **kw: Any) -> tuple[Any, bytes]:
        d = self.client.get("http://cp.test" + path, **kw)
        self.client.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response, body


class FeedResourceTests(_FeedClientMixin):
    """
    The feed resources serve JSON with an ETag and honour If-None-Match.
    """

    def setUp(self) -> None:
        self.path = writeState(self.mktemp())
        self.store = ControlPlaneStore(self.path)
        root = AdminRoot()
        addFeedResources(root, self.store)
        self.client = StubTreq(root)

    def test_everyFeed(self) -> None:
        """
        /routing, /features, /warmup and /activation answer 200 with their document.
        """
        for feed in ("routing", "features", "warmup", "activation"):
            response, body = self.get("/" + feed)
            self.assertEqual(response.code, 200)
            self.assertEqual(json.loads(body)["feed"], feed)
            self.assertEqual(response.headers.getRawHeaders(b"x-clustor-revision"), [b"1"])
            self.assertEqual(
                response.headers.getRawHeaders(b"etag"), [self.store.document(feed).etag.encode()]
            )

    def test_notModified(self) -> None:
        """
        A matching If-None-Match gets 304 with no body; a stale one gets the document.
        """
        etag = self.store.document("routing").etag
        response, body = self.get("/routing", headers={"If-None-Match": etag})
        self.assertEqual((response.code, body), (304, b""))
        response, body = self.get("/routing", headers={"If-None-Match": '"other"'})
        self.assertEqual(response.code, 200)

    def test_notModifiedWeakAndAny(self) -> None:
        """
        If-None-Match compares weakly and takes lists and C{*} (RFC 9110).
        """
        etag = self.store.document("routing").etag
        for match in ("W/" + etag, '"other", ' + etag, "*"):
            response, body = self.get("/routing", headers={"If-None-Match": match})
            self.assertEqual((response.code, body), (304, b""), match)

    def test_methodNotAllowed(self) -> None:
        """
        Feeds are read-only: every other method is a JSON 405 naming GET and
        HEAD (never Twisted's HTML pages, nor 501); a path below a feed is
        a JSON 404.
        """
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            d = self.client.request(method, "http://cp.test/routing", data=b"{}")
            self.client.flush()
            response = self.successResultOf(d)
            self.assertEqual(response.code, 405, method)
            body = json.loads(self.successResultOf(response.content()))
            self.assertEqual(body["error"], f"method {method} not allowed")
            self.assertEqual(sorted(body["allowed"]), ["GET", "HEAD"])
        response, body = self.get("/routing/x")
        self.assertEqual((response.code, json.loads(body)), (404, {"error": "no feed /routing/x"}))
        response, body = self.get("/routing/")
        self.assertEqual(json.loads(body)["feed"], "routing")

    def test_head(self) -> None:
        """
        HEAD answers the headers of GET, the length of the document and no
        body, without Twisted's warning about a HEAD body.
        """
        events = captureLogs(self)
        d = self.client.head("http://cp.test/features")
        self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-length"),
            [str(len(self.store.document("features").body)).encode()],
        )
        self.assertEqual(self.successResultOf(response.content()), b"")
        self.assertEqual([e for e in events if "HEAD" in e.get("log_format", "")], [])


@implementer(IControlPlaneStore)
class _MemoryStore:
    """
    An L{IControlPlaneStore} holding documents given in memory (no file):
    each C{publish} changes one feed and bumps the revision.
    """

    path = "<memory>"

    def __init__(self) -> None:
        self.revision = 1
        self.documents = {f: FeedDocument(f, b'{"feed": "%s"}' % f.encode(), f'"{f}-1"') for f in FEEDS}
        self.reloads = 0

    def document(self, feed: str) -> FeedDocument:
        return self.documents[feed]

    def reload(self) -> bool:
        self.reloads += 1
        return False

    def publish(self, feed: str, body: bytes) -> None:
        self.revision += 1
        self.documents[feed] = FeedDocument(feed, body, f'"{feed}-{self.revision}"')


class FeedResourceSeamTests(_FeedClientMixin):
    """
    The feed resources depend only on L{IControlPlaneStore}: served from an
    in-memory store they follow its documents, tags and revision.
    """

    def setUp(self) -> None:
        self.store = _MemoryStore()
        root = AdminRoot()
        addFeedResources(root, self.store)
        self.client = StubTreq(root)

    def test_interface(self) -> None:
        """
        The in-memory store provides L{IControlPlaneStore}.
        """
        self.assertTrue(verifyObject(IControlPlaneStore, self.store))

    def test_followsTheStore(self) -> None:
        """
        A publication shows at once: new body, new ETag, new revision; the
        old tag no longer matches and the new one gets 304.
        """
        response, body = self.get("/features")
        self.assertEqual(body, b'{"feed": "features"}')
        self.assertEqual(response.headers.getRawHeaders(b"etag"), [b'"features-1"'])
        self.store.publish("features", b'{"feed": "features", "flags": {}}')
        response, body = self.get("/features", headers={"If-None-Match": '"features-1"'})
        self.assertEqual((response.code, body), (200, b'{"feed": "features", "flags": {}}'))
        self.assertEqual(response.headers.getRawHeaders(b"x-clustor-revision"), [b"2"])
        response, body = self.get("/features", headers={"If-None-Match": '"x", "features-2"'})
        self.assertEqual((response.code, body), (304, b""))
        self.assertEqual(self.store.reloads, 0)


class ReloaderTests(SynchronousTestCase):
    """
    L{StateReloader} reloads on file change (polled on the clock) and on SIGHUP.
    """

    def setUp(self) -> None:
        self.path = writeState(self.mktemp())
        self.store = ControlPlaneStore(self.path)
        self.clock = Clock()
        self.handlers: list[Callable[[], None]] = []
        self.uninstalled: list[bool] = []

        def installer(handler: Callable[[], None]) -> Callable[[], None]:
            self.handlers.append(handler)
            return lambda: self.uninstalled.append(True)

        self.reloader = StateReloader(self.store, self.clock, 2.0, lambda f: f(), installer)

    def test_pollsForChanges(self) -> None:
        """
        A file change is noticed at the next poll; stopping cancels the poll.
        """
        self.reloader.startService()
        with open(self.path, "a") as f:
            f.write("# comment changes size only\n")
        self.clock.advance(2)
        self.assertEqual(self.store.revision, 1)  # content identical
        writeState(os.path.dirname(self.path), STATE_YAML.replace("60000", "1000"))
        _bump(self.path)
        self.clock.advance(2)
        self.assertEqual(self.store.revision, 2)
        self.reloader.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.uninstalled, [True])

    def test_sighup(self) -> None:
        """
        The SIGHUP handler reloads through the reactor-thread hand-off.
        """
        self.reloader.startService()
        self.addCleanup(self.reloader.stopService)
        writeState(os.path.dirname(self.path), STATE_YAML.replace("60000", "5"))
        self.assertEqual(len(self.handlers), 1)
        self.handlers[0]()
        self.assertEqual(self.store.revision, 2)

    def test_noPolling(self) -> None:
        """
        Interval 0 turns polling off.
        """
        reloader = StateReloader(self.store, self.clock, 0, lambda f: f(), None)
        reloader.startService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        reloader.stopService()


class ThreadedReloadTests(SynchronousTestCase):
    """
    Reloads read the file through C{runInThread} and never overlap.
    """

    def test_coalesced(self) -> None:
        """
        A reload asked for while one runs is done once after it; the new
        state is published when the read finishes.
        """
        path = writeState(self.mktemp())
        store = ControlPlaneStore(path)
        calls: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

        def runInThread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            calls.append((d, f, args))
            return d

        reloader = StateReloader(store, Clock(), 0, lambda f: f(), None, runInThread)
        reloader.startService()
        self.addCleanup(reloader.stopService)
        writeState(os.path.dirname(path), STATE_YAML.replace("60000", "7"))
        reloader.reloadNow()
        reloader.reloadNow()
        reloader.reloadNow()
        self.assertEqual(len(calls), 1)
        d, f, args = calls[0]
        d.callback(f(*args))
        self.assertEqual(store.revision, 2)
        self.assertEqual(len(calls), 2)
        d, f, args = calls[1]
        d.callback(f(*args))
        self.assertEqual(store.revision, 2)  # same content the second time
        self.assertEqual(len(calls), 2)

    def test_invalidInThread(self) -> None:
        """
        A validation error raised in the thread is counted and logged.
        """
        path = writeState(self.mktemp())
        store = ControlPlaneStore(path)
        reloader = StateReloader(store, Clock(), 0, lambda f: f(), None)
        writeState(os.path.dirname(path), "partitions: {}\n")
        reloader.reloadNow()
        self.assertEqual((store.revision, store.reloadFailures), (1, 1))
