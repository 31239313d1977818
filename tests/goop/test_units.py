"""
Unit tests for goop.json, the data store, the identity, the site paths and
the template store.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from suite.daemon import ConfigError
from suite.goop.config import CONFIG_NAME, defaultDocument, loadConfig
from suite.goop.identity import loadIdentity, verifySignature
from suite.goop.peer.site import resolveSitePath
from suite.goop.peer.store import DataStore
from suite.goop.rendezvous.templates import TemplateStore


def write(path: str, doc: object) -> None:
    with open(path, "w") as f:
        json.dump(doc, f)


class ConfigTests(SynchronousTestCase):
    def test_createdWithDefaults(self) -> None:
        """An absent goop.json is written with exactly the guide's keys and defaults."""
        d = self.mktemp()
        c = loadConfig(d)
        with open(os.path.join(d, CONFIG_NAME)) as f:
            doc = json.load(f)
        self.assertEqual(doc, defaultDocument())
        self.assertEqual(set(doc), {"profile", "p2p", "presence", "viewer"})
        self.assertEqual(
            set(doc["presence"]),
            {
                "ttl_seconds",
                "heartbeat_seconds",
                "rendezvous_wan",
                "rendezvous_host",
                "rendezvous_port",
                "rendezvous_only",
                "templates_dir",
                "peer_db_path",
            },
        )
        self.assertEqual(c.rendezvousPort, 8787)
        self.assertEqual(c.warnings, ())

    def test_unknownKeysWarned(self) -> None:
        """Unknown keys at any level are reported as warnings, not errors."""
        d = self.mktemp()
        os.makedirs(d)
        write(os.path.join(d, CONFIG_NAME), {"profile": {"label": "x", "colour": "red"}, "extra": 1})
        c = loadConfig(d)
        self.assertEqual(c.label, "x")
        self.assertIn("goop.json: profile.colour: unknown key, ignored", c.warnings)
        self.assertIn("goop.json: extra: unknown key, ignored", c.warnings)

    def test_badValuesNameTheKey(self) -> None:
        """A wrong value is refused with a message naming its key."""
        cases = [
            ({"presence": {"rendezvous_port": "8787"}}, "presence.rendezvous_port"),
            ({"presence": {"rendezvous_port": 70000}}, "presence.rendezvous_port"),
            ({"presence": {"rendezvous_host": "yes"}}, "presence.rendezvous_host"),
            ({"viewer": {"http_addr": "nowhere"}}, "viewer.http_addr"),
            ({"presence": {"rendezvous_wan": "ftp://x"}}, "presence.rendezvous_wan"),
            ({"p2p": []}, "p2p"),
            ({"profile": {"label": "two\nlines"}}, "profile.label: 'two\\nlines' holds a control character"),
            ({"profile": {"email": "a@b\r\nBcc: c"}}, "profile.email:"),
            ({"site": "tab\there"}, "site:"),
        ]
        for doc, key in cases:
            d = self.mktemp()
            os.makedirs(d)
            write(os.path.join(d, CONFIG_NAME), doc)
            e = self.assertRaises(ConfigError, loadConfig, d)
            self.assertIn(key, str(e))

    def test_directoryIsAFile(self) -> None:
        """A peer directory that is a file (or under one) is one line naming it, not an errno."""
        f = os.path.abspath(self.mktemp())
        with open(f, "w") as out:
            out.write("x")
        e = self.assertRaises(ConfigError, loadConfig, f)
        self.assertEqual(str(e), f"{f}: not a directory (the peer directory)")
        e = self.assertRaises(ConfigError, loadConfig, os.path.join(f, "peer"))
        self.assertIn(f"{f}/peer: cannot create the peer directory: ", str(e))
        # a mistyped path: only the peer directory itself is created, never its parents
        missing = os.path.join(os.path.abspath(self.mktemp()), "typo", "peer")
        e = self.assertRaises(ConfigError, loadConfig, missing)
        self.assertEqual(
            str(e), f"{missing}: cannot create the peer directory: {os.path.dirname(missing)} does not exist"
        )
        self.assertFalse(os.path.exists(os.path.dirname(missing)))
        made = os.path.join(os.path.dirname(f), "new-peer")
        self.assertEqual(loadConfig(made).directory, made)

    def test_notJSON(self) -> None:
        """A file that is not JSON is refused naming the file."""
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, CONFIG_NAME), "w") as f:
            f.write("{nope")
        e = self.assertRaises(ConfigError, loadConfig, d)
        self.assertIn("goop.json", str(e))


class IdentityTests(SynchronousTestCase):
    def test_persistentAndSigned(self) -> None:
        """The key is created 0600 once, reloaded, and its signatures verify to its peer id."""
        d = self.mktemp()
        os.makedirs(d)
        a = loadIdentity(d)
        self.assertEqual(os.stat(os.path.join(d, "identity.key")).st_mode & 0o777, 0o600)
        b = loadIdentity(d)
        self.assertEqual(a.peerId, b.peerId)
        sig = a.sign(b"hello")
        self.assertEqual(verifySignature(a.publicB64, sig, b"hello"), a.peerId)
        self.assertRaises(ValueError, verifySignature, a.publicB64, sig, b"hellO")


class SitePathTests(SynchronousTestCase):
    def test_refusesLuaHiddenTraversal(self) -> None:
        """lua/, dot-files, traversal and symlinks out of the site are not servable."""
        root = self.mktemp()
        os.makedirs(os.path.join(root, "lua"))
        os.makedirs(os.path.join(root, "a"))
        for p in ("index.html", "lua/x.lua", ".secret", "a/b.txt"):
            with open(os.path.join(root, p), "w") as f:
                f.write("x")
        os.symlink("/etc/passwd", os.path.join(root, "a", "pw"))
        self.assertTrue(resolveSitePath(root, "/"))
        self.assertTrue(resolveSitePath(root, "a/b.txt"))
        for bad in (
            "lua/x.lua",
            "LUA/x.lua",
            "a/../lua/x.lua",
            ".secret",
            "../../etc/passwd",
            "a/pw",
            "a\\..\\x",
        ):
            self.assertIsNone(resolveSitePath(root, bad), bad)


class TemplateTests(SynchronousTestCase):
    def test_bundleAndTraversal(self) -> None:
        """Bundles hold the template's files only; traversal names are refused."""
        root = self.mktemp()
        os.makedirs(os.path.join(root, "blog"))
        write(os.path.join(root, "blog", "manifest.json"), {"title": "Blog"})
        with open(os.path.join(root, "blog", "index.html"), "w") as f:
            f.write("hi")
        os.symlink("/etc/passwd", os.path.join(root, "blog", "pw"))
        store = TemplateStore(root)
        self.assertEqual([t["name"] for t in store.list()], ["blog"])
        data = store.bundle("blog")
        assert data is not None
        names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
        self.assertEqual(sorted(names), ["blog/index.html", "blog/manifest.json"])
        for bad in ("..", "../etc", "blog/..", ".hidden", "nope"):
            self.assertIsNone(store.bundle(bad), bad)
            self.assertIsNone(store.manifest(bad), bad)

    def test_onlyTemplatesBundled(self) -> None:
        """
        A directory without a manifest (not listed) is not served as a
        bundle; a templates_dir that is the peer directory or holds it (it
        would serve lua/) stops start-up naming the key.
        """
        root = self.mktemp()
        os.makedirs(os.path.join(root, "private"))
        with open(os.path.join(root, "private", "secret.lua"), "w") as f:
            f.write("-- source")
        store = TemplateStore(root)
        self.assertEqual(store.list(), [])
        self.assertIsNone(store.bundle("private"))
        peer = os.path.abspath(os.path.join(self.mktemp(), "peer"))
        os.makedirs(peer)
        for bad in ("", ".", "..", "/", "./", peer):
            write(os.path.join(peer, "goop.json"), {"presence": {"templates_dir": bad}})
            with self.assertRaises(ConfigError) as e:
                loadConfig(peer)
            self.assertIn("goop.json: presence.templates_dir:", str(e.exception), bad)
        for good in ("templates", "site/templates", os.path.join(os.path.dirname(peer), "shared")):
            write(os.path.join(peer, "goop.json"), {"presence": {"templates_dir": good}})
            self.assertEqual(loadConfig(peer).templatesDir, good)


class StoreTests(TestCase):
    def setUp(self) -> Deferred[None]:  # type: ignore[override]  # trial waits for a Deferred from setUp
        d = self.mktemp()
        os.makedirs(d)
        self.owner = "o" * 64
        self.other = "p" * 64
        self.store = DataStore(reactor, os.path.join(d, "data.db"), self.owner)
        self.addCleanup(self.store.stop)
        return self.store.start()

    async def test_durableCommits(self) -> None:
        """
        data.db commits with C{synchronous=FULL}: a write the store has
        answered survives a power loss, not only a crash of the peer.
        """
        level = await self.store.db.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        self.assertEqual(level, 2)

    async def test_fileMode(self) -> None:
        """
        data.db (with its -wal and -shm files) is created readable by the
        peer's user only, whatever the umask: it holds owner-only tables.
        """
        import stat

        await self.store.execute(self.owner, {"op": "create-table", "table": "t", "columns": {"a": "TEXT"}})
        path = self.store.db.path
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                self.assertEqual(stat.S_IMODE(os.stat(path + suffix).st_mode), 0o600, suffix)

    async def test_permissions(self) -> None:
        """owner-only, peers-read and peers-write are enforced on every op for other peers."""
        s, o, p = self.store, self.owner, self.other
        for name, perm in (("secret", "owner-only"), ("board", "peers-read"), ("wall", "peers-write")):
            r = await s.execute(
                o,
                {
                    "op": "create-table",
                    "table": name,
                    "columns": [{"name": "text", "type": "TEXT"}],
                    "data": {"permission": perm},
                },
            )
            self.assertTrue(r["ok"], r)
            r = await s.execute(o, {"op": "insert", "table": name, "data": {"text": "by owner"}})
            self.assertTrue(r["ok"], r)
        tables = await s.execute(p, {"op": "tables"})
        self.assertEqual({t["name"] for t in tables["data"]}, {"board", "wall"})
        self.assertFalse((await s.execute(p, {"op": "query", "table": "secret"}))["ok"])
        self.assertTrue((await s.execute(p, {"op": "query", "table": "board"}))["ok"])
        self.assertFalse(
            (await s.execute(p, {"op": "insert", "table": "board", "data": {"text": "x"}}))["ok"]
        )
        r = await s.execute(p, {"op": "insert", "table": "wall", "data": {"text": "by peer"}})
        self.assertTrue(r["ok"], r)
        rows = (await s.execute(p, {"op": "query", "table": "wall"}))["data"]
        self.assertEqual([(x["text"], x["_owner"]) for x in rows], [("by owner", o), ("by peer", p)])
        # a peer may change only its own rows
        r = await s.execute(p, {"op": "update", "table": "wall", "id": 1, "data": {"text": "hijack"}})
        self.assertEqual(r["data"]["changed"], 0)
        r = await s.execute(p, {"op": "delete", "table": "wall", "where": {"text": "by peer"}})
        self.assertEqual(r["data"]["deleted"], 1)
        for op in (
            {"op": "create-table", "table": "t", "columns": ["a"]},
            {"op": "delete-table", "table": "wall"},
            {"op": "add-column", "table": "wall", "columns": ["b"]},
            {"op": "drop-column", "table": "wall", "columns": ["text"]},
            {"op": "rename-table", "table": "wall", "data": {"name": "w2"}},
        ):
            r = await s.execute(p, op)
            self.assertFalse(r["ok"], op)
            self.assertIn("permission denied", r["error"])
        r = await s.execute(p, {"op": "insert", "table": "wall", "data": {"_owner": o}})
        self.assertFalse(r["ok"])

    async def test_peerRateLimit(self) -> None:
        """Other peers are rate-limited per peer; the owner is not."""
        self.store.limiter.rate, self.store.limiter.burst = 0.001, 3
        results = [(await self.store.execute(self.other, {"op": "tables"}))["ok"] for _ in range(4)]
        self.assertEqual(results, [True, True, True, False])
        self.assertTrue((await self.store.execute(self.owner, {"op": "tables"}))["ok"])
        self.assertTrue((await self.store.execute("q" * 64, {"op": "tables"}))["ok"])

    async def test_identifiersValidated(self) -> None:
        """Identifiers that are not plain names never reach SQL text."""
        s, o = self.store, self.owner
        for bad in ('x"; DROP TABLE y; --', "sqlite_master", "_goop_tables", "1abc", ""):
            r = await s.execute(o, {"op": "create-table", "table": bad, "columns": ["a"]})
            self.assertFalse(r["ok"])
            self.assertIn("invalid identifier", r["error"])
        await s.execute(o, {"op": "create-table", "table": "t", "columns": ["a"]})
        r = await s.execute(o, {"op": "query", "table": "t", "where": "1=1; DROP TABLE t"})
        self.assertFalse(r["ok"])
        r = await s.execute(o, {"op": "query", "table": "t", "where": {"a": "' OR 1=1 --"}})
        self.assertEqual(r, {"ok": True, "data": []})

    async def test_finiteNumbersOnly(self) -> None:
        """1e400, NaN and Infinity (which Python's JSON parser accepts) are refused, in data and in where."""
        s, o = self.store, self.owner
        await s.execute(o, {"op": "create-table", "table": "t", "columns": {"a": "REAL"}})
        for value in (float("inf"), float("-inf"), float("nan")):
            r = await s.execute(o, {"op": "insert", "table": "t", "data": {"a": value}})
            self.assertEqual(r, {"ok": False, "error": "numbers must be finite"})
            r = await s.execute(o, {"op": "query", "table": "t", "where": {"a": value}})
            self.assertEqual(r, {"ok": False, "error": "numbers must be finite"})
        self.assertEqual((await s.execute(o, {"op": "insert", "table": "t", "data": {"a": 1.5}}))["ok"], True)

    async def test_queryPaging(self) -> None:
        """
        C{limit} above 1000 is refused with the reason (never cut short, which
        a pager would read as the end of the table); a boolean is not a
        number; C{limit}/C{offset} page through the rows in C{_id} order.
        """
        s, o = self.store, self.owner
        await s.execute(o, {"op": "create-table", "table": "t", "columns": ["a"]})
        for i in range(5):
            await s.execute(o, {"op": "insert", "table": "t", "data": {"a": str(i)}})
        r = await s.execute(o, {"op": "query", "table": "t", "limit": 1001})
        self.assertEqual(r, {"ok": False, "error": "limit must be at most 1000 (page with offset)"})
        for bad in ({"limit": True}, {"offset": False}, {"limit": -1}, {"offset": "1"}):
            r = await s.execute(o, {"op": "query", "table": "t", **bad})
            self.assertEqual(r["error"], "limit and offset must be non-negative integers", bad)
        r = await s.execute(o, {"op": "query", "table": "t", "columns": ["a"], "limit": 2, "offset": 3})
        self.assertEqual(r, {"ok": True, "data": [{"a": "3"}, {"a": "4"}]})
        r = await s.execute(o, {"op": "query", "table": "t", "columns": ["a"], "limit": 1000})
        self.assertEqual(len(r["data"]), 5)


class InterfaceTests(SynchronousTestCase):
    def test_verifyFoundationInterfaces(self) -> None:
        """Health checks, the log buffer and the TLS creator provide the Twisted/suite interfaces."""
        from twisted.internet.defer import succeed
        from twisted.internet.interfaces import (
            IOpenSSLClientConnectionCreator,
            IOpenSSLServerConnectionCreator,
        )
        from twisted.internet.task import Clock
        from twisted.logger import ILogObserver

        from suite.goop.health import DatabaseHealth, LoopLag
        from suite.goop.logbuffer import LogBuffer
        from suite.goop.p2p.tls import PeerTLS
        from suite.web.interfaces import IHealth

        clock = Clock()
        verifyObject(IHealth, LoopLag(clock))
        verifyObject(IHealth, DatabaseHealth("db", lambda: succeed(True), clock))
        verifyObject(ILogObserver, LogBuffer())
        d = self.mktemp()
        os.makedirs(d)
        tls = PeerTLS(loadIdentity(d))
        verifyObject(IOpenSSLClientConnectionCreator, tls)
        verifyObject(IOpenSSLServerConnectionCreator, tls)


class MdnsRecordTests(SynchronousTestCase):
    def test_browsedServiceUpdatesDirectory(self) -> None:
        """A browsed mDNS service becomes a peer record; its removal removes it (no sockets used)."""
        from suite.goop.p2p.discovery import MdnsDiscovery, PeerDirectory, lanAddresses

        class Reactor:
            def callFromThread(self, f: object, *a: object) -> None:
                f(*a)  # type: ignore[operator]

        class Info:
            port = 4555
            properties = {b"peer_id": b"abc", b"label": b"lan peer"}

            def parsed_addresses(self) -> list[str]:
                return ["192.0.2.7"]

        class ZC:
            def get_service_info(self, t: str, n: str, timeout: int) -> Info:
                return Info()

        class Change:
            def __init__(self, name: str) -> None:
                self.name = name

        d = self.mktemp()
        os.makedirs(d)
        directory = PeerDirectory("self")
        m = MdnsDiscovery(Reactor(), loadIdentity(d), "goop-test", lambda: 1, "me", directory)
        self.assertEqual(m.serviceType, "_goop-test._tcp.local.")
        m._changed(ZC(), m.serviceType, "x", Change("Added"))
        self.assertEqual(directory.peers()[0]["addrs"], ["192.0.2.7:4555"])
        self.assertEqual(directory.peers()[0]["source"], "mdns")
        m._changed(ZC(), m.serviceType, "x", Change("Removed"))
        self.assertEqual(directory.peers(), [])
        self.assertTrue(lanAddresses())


class HealthTests(SynchronousTestCase):
    def test_unhealthyReasons(self) -> None:
        """/healthz answers 503 naming a failing database and a lagging event loop."""
        from twisted.internet.defer import fail
        from twisted.internet.task import Clock
        from twisted.web.test.requesthelper import DummyRequest

        from suite.goop.health import DatabaseHealth, HealthzResource, LoopLag

        clock = Clock()
        lag = LoopLag(clock, interval=0.5, maxLag=1.0)
        lag.start()
        clock.advance(3.0)  # one tick fires 2.5 s late
        db = DatabaseHealth("data_db", lambda: fail(OSError("disk I/O error")), clock)
        # Any: DummyRequest stands in for a server Request without being one.
        req: Any = DummyRequest([b""])
        HealthzResource(lambda: [lag, db]).render_GET(req)
        self.assertEqual(req.responseCode, 503)
        body = json.loads(b"".join(req.written))
        self.assertEqual(body["status"], "unhealthy")
        self.assertTrue(any("event_loop" in r for r in body["reasons"]))
        self.assertIn("data_db: database: disk I/O error", body["reasons"])
        lag.stop()

        ok: Any = DummyRequest([b""])
        HealthzResource(lambda: []).render_GET(ok)
        self.assertEqual(json.loads(b"".join(ok.written))["status"], "ok")

    def test_raisingProviderLogged(self) -> None:
        """
        A provider whose check raises makes /healthz answer 503 naming the
        error, and the error is logged with its traceback, not swallowed.
        """
        from twisted.logger import capturedLogs
        from twisted.web.test.requesthelper import DummyRequest

        from suite.goop.health import HealthzResource

        class Broken:
            name = "broken"

            def check(self) -> object:
                raise KeyError("oops")

        req: Any = DummyRequest([b""])
        with capturedLogs() as events:
            HealthzResource(lambda: [Broken()]).render_GET(req)  # type: ignore[list-item]
        self.assertEqual(req.responseCode, 503)
        self.assertEqual(json.loads(b"".join(req.written))["reasons"], ["broken: 'oops'"])
        [event] = [e for e in events if "log_failure" in e]
        self.assertEqual(event["name"], "broken")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


class InjectionPropertyTests(SynchronousTestCase):
    def test_arbitraryNamesAndValues(self) -> None:
        """Any table name, column name or value either is refused cleanly or stays data, never SQL."""
        import sqlite3

        from hypothesis import given, settings
        from hypothesis import strategies as st

        from suite.goop.peer.store import META, DataError, runOp

        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute(f"CREATE TABLE {META} (name TEXT PRIMARY KEY, permission TEXT NOT NULL)")
        owner = "o" * 64
        runOp(
            conn,
            owner,
            owner,
            {"op": "create-table", "table": "t", "columns": ["a"], "data": {"permission": "peers-write"}},
        )
        text = st.text(min_size=0, max_size=40)

        @settings(max_examples=200, deadline=None)
        @given(name=text, col=text, value=st.one_of(text, st.integers(), st.none()))  # big ints too
        def check(name: str, col: str, value: object) -> None:
            for req in (
                {"op": "query", "table": name},
                {"op": "insert", "table": "t", "data": {col: value}},
                {"op": "query", "table": "t", "where": {col: value}},
                {"op": "create-table", "table": name, "columns": [col]},
            ):
                try:
                    runOp(conn, owner, "p" * 64, req)
                except DataError:
                    pass
            try:
                rid = runOp(conn, owner, owner, {"op": "insert", "table": "t", "data": {"a": value}})["id"]
            except DataError:
                self.assertIsInstance(value, int)  # only out-of-range integers are refused
                return
            rows = runOp(conn, owner, owner, {"op": "query", "table": "t", "id": rid})
            # column a has TEXT affinity: numbers come back as their text
            self.assertEqual(rows[0]["a"], None if value is None else str(value))
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            self.assertEqual(names - {"sqlite_sequence"}, {META, "t"})

        check()


class FuzzTests(SynchronousTestCase):
    def test_configNeverCrashes(self) -> None:
        """Any JSON document is either a config (with warnings) or one ConfigError, never another exception."""
        from hypothesis import given, settings
        from hypothesis import strategies as st

        from suite.goop.config import validateDocument

        scalars = st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
        )
        values = st.recursive(
            scalars,
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
            max_leaves=8,
        )
        sections = st.sampled_from(
            ["profile", "p2p", "presence", "viewer", "other", "site", "peerName", "rendezvous"]
        )
        keys = st.sampled_from(
            [
                "label",
                "name",
                "email",
                "listen_port",
                "mdns_tag",
                "ttl_seconds",
                "heartbeat_seconds",
                "rendezvous_wan",
                "rendezvous_host",
                "rendezvous_port",
                "rendezvous_only",
                "templates_dir",
                "peer_db_path",
                "http_addr",
                "x",
            ]
        )
        docs = st.dictionaries(
            sections, st.one_of(values, st.dictionaries(keys, values, max_size=4)), max_size=4
        )

        @settings(max_examples=300, deadline=None)
        @given(doc=docs)
        def check(doc: dict) -> None:
            try:
                validateDocument("/tmp", doc)
            except ConfigError as e:
                self.assertNotIn("\n", str(e))
                self.assertTrue(str(e).startswith("goop.json: "))

        check()

    def test_publishNeverCrashes(self) -> None:
        """Arbitrary /publish bodies and signatures are refused with PublishError, never another exception."""
        from hypothesis import given, settings
        from hypothesis import strategies as st

        from suite.goop.rendezvous.registry import PublishError, verifyPublication

        @settings(max_examples=300, deadline=None)
        @given(
            body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), sig=st.text(max_size=100)
        )
        def check(body: bytes, sig: str) -> None:
            try:
                verifyPublication(body, sig, 1000.0, "1.2.3.4")
            except PublishError:
                pass

        check()

    def test_signedFieldsValidated(self) -> None:
        """Correctly signed bodies with odd field values are refused or give a sane record."""
        import math

        from hypothesis import given, settings
        from hypothesis import strategies as st

        from suite.goop.rendezvous.registry import PublishError, verifyPublication

        d = self.mktemp()
        os.makedirs(d)
        who = loadIdentity(d)
        odd = st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=20),
            st.lists(st.integers(), max_size=3),
        )

        @settings(max_examples=150, deadline=None)
        @given(
            fields=st.dictionaries(
                st.sampled_from(["ts", "ttl", "port", "label", "name", "addrs", "kind", "rendezvous"]), odd
            )
        )
        def check(fields: dict) -> None:
            doc = {"peer_id": who.peerId, "public_key": who.publicB64, "ts": 1000.0, **fields}
            body = json.dumps(doc).encode()
            try:
                pub = verifyPublication(body, who.sign(body), 1000.0, "1.2.3.4")
            except PublishError:
                return
            self.assertTrue(math.isfinite(pub["ts"]))
            self.assertIsInstance(pub["port"], int)
            self.assertNotIsInstance(pub["port"], bool)
            self.assertTrue(all(isinstance(a, str) for a in pub["addrs"]))
            self.assertTrue(isinstance(pub["name"], str) and len(pub["name"]) <= 64)
            json.dumps(pub, allow_nan=False)

        check()


class HostGuardTests(SynchronousTestCase):
    def guard(self, bind: str = "127.0.0.1", names: tuple[str, ...] = ()) -> Any:
        from twisted.web.resource import Resource

        from suite.goop.webutil import HostGuard

        g = HostGuard(Resource(), bind, "s" * 43, names)
        g.port = 8080
        return g

    def request(self, host: str | None, method: bytes = b"GET", token: str | None = None) -> Any:
        from twisted.web.test.requesthelper import DummyRequest

        r = DummyRequest([b""])
        r.method = method
        if host is not None:
            r.requestHeaders.setRawHeaders(b"host", [host.encode()])
        if token is not None:
            r.requestHeaders.setRawHeaders(b"x-goop-token", [token.encode()])
        return r

    def test_hosts(self) -> None:
        """Only the listening address, loopback literals, localhost and configured names on the right port pass."""
        g = self.guard(names=("peer.lan",))
        for ok in (
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "LOCALHOST:8080",
            "peer.lan:8080",
            "127.0.0.2:8080",
        ):
            self.assertIsNone(g.refusal(self.request(ok)), ok)
        for bad in (
            None,
            "",
            "evil.example:8080",
            "127.0.0.1.evil.example:8080",
            "localhost.evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "192.168.1.5:8080",
            "[::1:8080",
            "a:b:8080",
        ):
            self.assertEqual(g.refusal(self.request(bad))[0], 421, bad)

    def test_wildcardAcceptsLiterals(self) -> None:
        """A viewer on 0.0.0.0 answers any IP literal with its port (a rebinding page sends a name), but no name."""
        g = self.guard("0.0.0.0")
        self.assertIsNone(g.refusal(self.request("192.168.1.5:8080")))
        self.assertEqual(g.refusal(self.request("evil.example:8080"))[0], 421)

    def test_tokenForChanges(self) -> None:
        """POST, PUT and DELETE need the token; GET does not."""
        g = self.guard()
        self.assertIsNone(g.refusal(self.request("localhost:8080", b"GET")))
        for method in (b"POST", b"PUT", b"DELETE"):
            self.assertEqual(g.refusal(self.request("localhost:8080", method))[0], 403)
            self.assertEqual(g.refusal(self.request("localhost:8080", method, "x" * 43))[0], 403)
            self.assertIsNone(g.refusal(self.request("localhost:8080", method, "s" * 43)))

    def test_secretFile(self) -> None:
        """The secret is created 0600 once and read back unchanged."""
        from suite.goop.webutil import loadSecret

        path = self.mktemp()
        first = loadSecret(path)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(loadSecret(path), first)
        self.assertGreaterEqual(len(first), 32)

    def test_securityKeysValidated(self) -> None:
        """trusted_proxies, allowed_hosts and mdns_interfaces are checked at start-up, naming the key."""
        for section, key, value in (
            ("presence", "trusted_proxies", ["not-an-ip"]),
            ("presence", "trusted_proxies", "127.0.0.1"),
            ("viewer", "allowed_hosts", ["bad host!"]),
            ("p2p", "mdns_interfaces", ["lo"]),
        ):
            d = self.mktemp()
            os.makedirs(d)
            write(os.path.join(d, CONFIG_NAME), {section: {key: value}})
            with self.assertRaises(ConfigError) as cm:
                loadConfig(d)
            self.assertIn(f"{section}.{key}", str(cm.exception))
        d = self.mktemp()
        os.makedirs(d)
        write(
            os.path.join(d, CONFIG_NAME),
            {
                "presence": {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]},
                "viewer": {"allowed_hosts": ["Peer.LAN."]},
                "p2p": {"mdns_interfaces": ["127.0.0.1"]},
            },
        )
        c = loadConfig(d)
        self.assertEqual(
            (c.trustedProxies, c.allowedHosts, c.mdnsInterfaces),
            (("127.0.0.1/32", "10.0.0.0/8"), ("peer.lan",), ("127.0.0.1",)),
        )


class LogBufferTests(SynchronousTestCase):
    """
    L{suite.goop.logbuffer.LogBuffer} keeps every event at or above its
    level, formatted.
    """

    def test_unformattableEventKept(self) -> None:
        """
        An event whose format cannot be filled is kept, its text saying so
        and naming the format, and listeners hear of it.
        """
        from twisted.logger import LogLevel

        from suite.goop.logbuffer import LogBuffer

        buffer = LogBuffer()
        heard: list[dict[str, object]] = []
        buffer.listeners.append(heard.append)
        buffer(
            {
                "log_format": "{missing!r:bad}",
                "log_level": LogLevel.warn,
                "log_time": 1.0,
                "log_namespace": "x",
            }
        )
        [entry] = buffer.snapshot()
        self.assertEqual(heard, [entry])
        self.assertEqual(entry["level"], "warn")
        self.assertIn("Unable to format event", str(entry["text"]))
        self.assertIn("{missing!r:bad}", str(entry["text"]))
