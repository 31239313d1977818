"""
The REST API in memory (treq's StubTreq over the resource tree).
"""

from __future__ import annotations

import json
from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.api import makeAPIResource, makeTokenChecker
from suite.spacecomms.cdm import decode, encode
from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Config, PeerConfig, Policies, TokenConfig
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.store import MemoryStore
from tests.spacecomms.sim import stored

ADMIN, WRITER, READER = "admin-secret-1", "writer-secret-1", "reader-secret-1"


class _APIBase(SynchronousTestCase):
    """
    A node A with one peer B and three tokens, its API over StubTreq.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        cfg = Config(
            node_id="A",
            node_name="A",
            tokens=(
                TokenConfig("admin", ADMIN, ("read", "write", "admin")),
                TokenConfig("writer", WRITER, ("read", "write")),
                TokenConfig("readonly", READER, ("read",)),
            ),
            peers=(PeerConfig("B", "https://127.0.0.1:9", "127.0.0.1", 9, "t", Policies()),),
        )
        self.node = SpaceNode(cfg, MemoryStore(), self.clock)
        self.node.start()
        self.addCleanup(self.node.stop)
        self.peers: dict[str, Any] = {}

        def add(peer: PeerConfig) -> None:
            self.node.setPeers([*self.node.peerConfigs.values(), peer])

        def remove(pid: str) -> bool:
            if pid not in self.node.peerConfigs:
                return False
            self.node.setPeers([p for p in self.node.peerConfigs.values() if p.id != pid])
            return True

        resource = makeAPIResource(
            self.node, makeTokenChecker(cfg.tokens), lambda pid: "disconnected", add, remove
        )
        self.resource = resource
        # StubTreq makes its request methods at run time.
        self.client: Any = StubTreq(resource)
        self.events: list[dict] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        token: str | None = ADMIN,
        ctype: str = "application/json",
    ) -> tuple[int, Any]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = ctype
            if isinstance(body, str):
                body = body.encode()
        r = self.successResultOf(
            self.client.request(method, "http://node" + path, data=body, headers=headers)
        )
        content = self.successResultOf(self.client.content(r))
        if r.headers.getRawHeaders("content-type", [""])[0].startswith("application/json"):
            return r.code, json.loads(content)
        return r.code, content

    def logged(self, text: str) -> bool:
        return any(text in e.get("log_format", "") for e in self.events)


class APITests(_APIBase):
    """
    Every endpoint, its auth rules and its errors.
    """

    def test_health(self) -> None:
        """
        /health answers the guide's fields without a token.
        """
        self.call("POST", "/cdms", encode(sampleCDM("H-1"), "json"))
        code, body = self.call("GET", "/health", token=None)
        self.assertEqual(code, 200)
        self.assertEqual(body["node_id"], "A")
        self.assertEqual(body["cdms_active"], 1)
        self.assertEqual(body["peers"], {"connected": 0, "total": 1})
        self.assertEqual(
            set(body), {"status", "node_id", "uptime_seconds", "peers", "objects_tracked", "cdms_active"}
        )

    def test_authentication(self) -> None:
        """
        No token or a bad token is 401 (logged `authentication failed`); a
        read-only token reads but cannot write; only admin changes peers.
        """
        self.assertEqual(self.call("GET", "/cdms", token=None)[0], 401)
        self.assertEqual(self.call("GET", "/cdms", token="wrong-token")[0], 401)
        self.assertTrue(self.logged("authentication failed"))
        self.assertEqual(self.call("GET", "/cdms", token=READER)[0], 200)
        self.assertEqual(self.call("POST", "/cdms", encode(sampleCDM(), "json"), token=READER)[0], 403)
        self.assertEqual(self.call("POST", "/objects", '{"object_id": "X"}', token=READER)[0], 403)
        self.assertEqual(self.call("POST", "/cdms", encode(sampleCDM(), "json"), token=WRITER)[0], 201)
        peer = json.dumps({"peer_id": "C", "address": "https://127.0.0.1:7"})
        self.assertEqual(self.call("POST", "/peers", peer, token=WRITER)[0], 403)
        self.assertEqual(self.call("GET", "/peers", token=READER)[0], 200)

    def test_postCDMEachEncoding(self) -> None:
        """
        CDMs are accepted in KVN, XML and JSON (by Content-Type or sniffed);
        an identical resubmission is 200.
        """
        cdms = [sampleCDM(f"P-{i}", object2=str(i)) for i in range(3)]
        for cdm, (fmt, ctype) in zip(
            cdms,
            (("kvn", "text/plain"), ("xml", "application/xml"), ("json", "application/octet-stream")),
            strict=True,
        ):
            code, body = self.call("POST", "/cdms", encode(cdm, fmt), ctype=ctype)
            self.assertEqual((code, body["cdm_id"]), (201, cdm.messageId))
        code, body = self.call("POST", "/cdms", encode(cdms[0], "xml"), ctype="application/xml")
        self.assertEqual((code, body["status"]), (200, "unchanged"))

    def test_invalidCDM(self) -> None:
        """
        An invalid CDM is 400 naming the field, logged `cdm validation failed`.
        """
        text = encode(sampleCDM(), "kvn").replace(
            "REF_FRAME                    = EME2000", "REF_FRAME = TEME", 1
        )
        code, body = self.call("POST", "/cdms", text, ctype="text/plain")
        self.assertEqual(code, 400)
        self.assertEqual(body["field"], "OBJECT1.REF_FRAME")
        self.assertIn("cdm validation failed", body["error"])
        self.assertTrue(self.logged("cdm validation failed"))
        self.assertEqual(self.call("POST", "/cdms?format=yaml", "x")[0], 400)

    def test_listFilters(self) -> None:
        """
        GET /cdms honours limit, sort, object, tca_from/tca_to and status.
        """
        now = self.clock.seconds()
        for i in range(5):
            self.clock.advance(1)
            self.call(
                "POST",
                "/cdms",
                encode(sampleCDM(f"L-{i}", tca=now + 86400 * (i + 1), object2=str(100 + i)), "json"),
            )
        code, body = self.call("GET", "/cdms?limit=2&sort=created_at")
        self.assertEqual([c["cdm_id"] for c in body["cdms"]], ["L-0", "L-1"])
        self.assertEqual(body["total"], 5)
        code, body = self.call("GET", "/cdms?sort=-created_at&limit=1")
        self.assertEqual(body["cdms"][0]["cdm_id"], "L-4")
        code, body = self.call("GET", "/cdms?object=102")
        self.assertEqual([c["cdm_id"] for c in body["cdms"]], ["L-2"])
        from suite.spacecomms.cdm.sample import isoTime

        q = f"/cdms?tca_from={isoTime(now + 86400 * 2 - 1)}&tca_to={isoTime(now + 86400 * 3 + 1)}Z&sort=tca"
        code, body = self.call("GET", q)
        self.assertEqual([c["cdm_id"] for c in body["cdms"]], ["L-1", "L-2"])
        self.call("DELETE", "/cdms/L-3")
        self.assertEqual(
            [c["cdm_id"] for c in self.call("GET", "/cdms?status=withdrawn")[1]["cdms"]], ["L-3"]
        )
        # A date alone (ISO calendar or CCSDS day-of-year) is midnight UTC.
        day = isoTime(now + 86400 * 2)[:10]
        code, body = self.call("GET", f"/cdms?tca_from={day}&tca_to=2100-001&sort=tca")
        self.assertEqual([c["cdm_id"] for c in body["cdms"]], ["L-1", "L-2", "L-4"])
        code, body = self.call("GET", "/cdms?tca_to=2000-01-01")
        self.assertEqual((code, body["cdms"]), (200, []))
        for bad in (
            "limit=0",
            "limit=x",
            "sort=name",
            "tca_from=today",
            "tca_from=2026-13-01",
            "status=gone",
        ):
            self.assertEqual(self.call("GET", f"/cdms?{bad}")[0], 400, bad)

    def test_unknownOrRepeatedQueryParameters(self) -> None:
        """
        A query parameter an endpoint does not take (a typo such as
        C{?limt=}, C{?override=} on objects) or one given twice is 400
        naming it, never silently ignored; nothing is changed.
        """
        self.call("POST", "/cdms", encode(sampleCDM("Q-1"), "json"))
        self.call("POST", "/objects", '{"object_id": "SAT-1"}')
        for method, path, name in (
            ("GET", "/cdms?limt=1", "limt"),
            ("GET", "/cdms?limit=1&limit=2", "limit"),
            ("GET", "/cdms/Q-1?reason=ERROR", "reason"),
            ("DELETE", "/cdms/Q-1?reasn=ERROR", "reasn"),
            ("GET", "/objects?sort=tca", "sort"),
            ("POST", "/objects?override=true", "override"),
            ("DELETE", "/objects/SAT-1?reason=DECAYED&override=true", "override"),
            ("GET", "/peers?status=connected", "status"),
            ("DELETE", "/peers/B?force=1", "force"),
        ):
            body = '{"object_id": "SAT-2"}' if method == "POST" else None
            code, answer = self.call(method, path, body)
            self.assertEqual(code, 400, path)
            self.assertIn(f"query parameter {name}:", answer["error"], path)
        # What was refused changed nothing.
        self.assertEqual(self.call("GET", "/cdms/Q-1")[1]["status"], "active")
        self.assertEqual(self.call("GET", "/objects/SAT-1")[1]["status"], "active")
        self.assertEqual(self.call("GET", "/objects/SAT-2")[0], 404)
        self.assertEqual(self.call("GET", "/peers/B")[0], 200)
        # ?override= is an admin matter only where it exists (CDMs): a
        # writer's object request is refused for the parameter, not for
        # lacking admin.
        code, answer = self.call("POST", "/objects?override=true", '{"object_id": "SAT-3"}', token=WRITER)
        self.assertEqual(code, 400)
        self.assertEqual(self.call("POST", "/cdms?override=true", "{}", token=WRITER)[0], 403)
        # The parameters each endpoint takes still work, and --tca is no sort.
        self.assertEqual(self.call("GET", "/cdms?limit=1&sort=-tca&status=all&object=12345")[0], 200)
        self.assertEqual(self.call("GET", "/cdms?sort=--tca")[0], 400)

    def test_getAndDeleteCDM(self) -> None:
        """
        GET /cdms/{id} returns JSON, KVN or XML; DELETE withdraws it once.
        """
        cdm = sampleCDM("G-1")
        self.call("POST", "/cdms", encode(cdm, "json"))
        code, body = self.call("GET", "/cdms/G-1")
        self.assertEqual((code, body["status"], body["cdm"]["header"]["MESSAGE_ID"]), (200, "active", "G-1"))
        for fmt in ("kvn", "xml"):
            code, text = self.call("GET", f"/cdms/G-1?format={fmt}")
            self.assertEqual(decode(text, fmt), cdm)
        self.assertEqual(self.call("GET", "/cdms/G-1?format=pdf")[0], 400)
        self.assertEqual(self.call("DELETE", "/cdms/G-1?reason=BOGUS")[0], 400)
        code, body = self.call("DELETE", "/cdms/G-1?reason=ERROR")
        self.assertEqual((code, body["status"], body["reason"]), (200, "withdrawn", "ERROR"))
        self.assertEqual(self.call("DELETE", "/cdms/G-1")[0], 409)
        # A withdrawn CDM has no document: KVN/XML is 410 with the reason,
        # JSON the summary.
        for fmt in ("kvn", "xml"):
            code, body = self.call("GET", f"/cdms/G-1?format={fmt}")
            self.assertEqual((code, body["status"], body["withdraw_reason"]), (410, "withdrawn", "ERROR"))
            self.assertIn("withdrawn", body["error"])
        self.assertEqual(self.call("GET", "/cdms/G-1")[1]["status"], "withdrawn")
        self.assertEqual(self.call("GET", "/cdms/NOPE")[0], 404)
        self.assertEqual(self.call("DELETE", "/cdms/NOPE")[0], 404)

    def test_debugAccessLines(self) -> None:
        """
        At logging level debug each API request through the API's site is
        logged once: one debug line with the method, the path (without the
        query string), the status and the token id (never its secret), and
        no shared access-log line beside it; at info there is none.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from suite.spacecomms import logsetup
        from suite.spacecomms.apibase import APISite

        site = APISite(self.resource, timeout=None)

        def request(path: str, token: str | None) -> bytes:
            proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5))
            assert proto is not None
            transport = StringTransport()
            proto.makeConnection(transport)
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            proto.dataReceived(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
            proto.connectionLost(None)
            return transport.value()

        def perRequest() -> list[dict[str, Any]]:
            return [
                e
                for e in self.events
                if e.get("log_namespace") in ("spacecomms.api", "suite.web.access")
                and "{method}" in e.get("log_format", "")
            ]

        before = dict(logsetup._settings)
        self.addCleanup(logsetup._settings.update, before)
        logsetup.configure("json", "info", "stderr")
        self.assertIn(b" 200 ", request("/peers", ADMIN))
        self.assertEqual(perRequest(), [])
        logsetup.configure("json", "debug", "stderr")
        request("/cdms?origin=" + WRITER, READER)
        request("/cdms/NOPE", ADMIN)
        request("/cdms", None)
        lines = [
            (e["log_namespace"], e["method"], e["path"], e["code"], e["principal"]) for e in perRequest()
        ]
        self.assertEqual(
            lines,
            [
                ("spacecomms.api", "GET", "/cdms", 200, "readonly"),
                ("spacecomms.api", "GET", "/cdms/NOPE", 404, "admin"),
                ("spacecomms.api", "GET", "/cdms", 401, "-"),
            ],
        )
        self.assertNotIn(READER, repr(self.events))
        self.assertNotIn(WRITER, repr(self.events))

    def test_objects(self) -> None:
        """
        Object states are announced, listed, fetched and withdrawn.
        """
        code, body = self.call(
            "POST",
            "/objects",
            json.dumps({"object_id": "SAT-1", "name": "one", "epoch": "2026-01-01T00:00:00"}),
        )
        self.assertEqual((code, body["state"]["name"]), (201, "one"))
        self.assertEqual(self.call("POST", "/objects", '{"name": "no id"}')[0], 400)
        self.assertEqual(self.call("POST", "/objects", "[1]")[0], 400)
        self.assertEqual(self.call("POST", "/objects", "{")[0], 400)
        # NaN, Infinity and numbers beyond the float range are not JSON: a
        # state holding them could not be served back (or read by a peer's
        # JSON client), so they are refused with the reason.
        for bad in (
            '{"object_id": "N", "x": NaN}',
            '{"object_id": "N", "x": {"y": [-Infinity]}}',
            '{"object_id": "N", "x": 1e999}',
            '{"object_id": "N", "x": ' + "[" * 40 + "]" * 40 + "}",
        ):
            code, body = self.call("POST", "/objects", bad)
            self.assertEqual(code, 400, bad)
            self.assertIn("error", body)
        self.assertEqual(self.call("GET", "/objects/N")[0], 404)
        big = json.dumps({"object_id": "BIG", "blob": "x" * 300_000})
        self.assertEqual(self.call("POST", "/objects", big)[0], 413)
        self.assertEqual([o["object_id"] for o in self.call("GET", "/objects")[1]["objects"]], ["SAT-1"])
        self.assertEqual(self.call("GET", "/objects/SAT-1")[1]["status"], "active")
        code, body = self.call("DELETE", "/objects/SAT-1?reason=DECAYED")
        self.assertEqual((code, body["reason"]), (200, "DECAYED"))
        self.assertEqual(self.call("GET", "/objects")[1]["objects"], [])
        self.assertEqual(self.call("GET", "/objects/NOPE")[0], 404)

    def test_peers(self) -> None:
        """
        Peers are added (errors name the key), listed, fetched and removed.
        """
        code, body = self.call("GET", "/peers")
        self.assertEqual([p["peer_id"] for p in body["peers"]], ["B"])
        new = {
            "peer_id": "C",
            "address": "https://c.example.com:8443",
            "auth_token": "tok",
            "policies": {"accept_cdm": True, "accept_object_state": False},
        }
        code, body = self.call("POST", "/peers", json.dumps(new))
        self.assertEqual(
            (code, body["status"], body["policies"]["accept_object_state"]), (201, "disconnected", False)
        )
        self.assertEqual(self.call("POST", "/peers", json.dumps(new))[0], 409)
        code, body = self.call(
            "POST",
            "/peers",
            json.dumps({"peer_id": "D", "address": "ftp://x", "policies": {"accept_cdm": "maybe"}}),
        )
        self.assertEqual(code, 400)
        self.assertIn("body.address", body["error"])
        self.assertIn("body.policies.accept_cdm", body["error"])
        # A JSON number is no token (nor id, nor address).
        for key, value in (("auth_token", 12345678), ("peer_id", 7), ("address", None)):
            code, body = self.call("POST", "/peers", json.dumps({**new, "peer_id": "E", key: value}))
            self.assertEqual((code, body["error"]), (400, f"body.{key}: must be a string"))
        self.assertEqual(self.call("GET", "/peers/E")[0], 404)
        self.assertEqual(self.call("GET", "/peers/C")[1]["address"], "https://c.example.com:8443")
        self.assertEqual(self.call("DELETE", "/peers/C")[0], 200)
        self.assertEqual(self.call("GET", "/peers/C")[0], 404)
        self.assertEqual(self.call("DELETE", "/peers/C")[0], 404)

    def test_metricsOpenAPIAndErrors(self) -> None:
        """
        /metrics names the guide's metrics; /openapi.json lists every path;
        unknown paths and methods get JSON errors.
        """
        code, text = self.call("GET", "/metrics", token=None)
        for name in (
            "peers_connected",
            "heartbeat_latency_ms",
            "cdm_processing_time_ms",
            "message_queue_depth",
            "error_rate",
        ):
            self.assertIn(name.encode(), text)
        code, spec = self.call("GET", "/openapi.json", token=None)
        self.assertEqual(
            set(spec["paths"]),
            {
                "/health",
                "/metrics",
                "/openapi.json",
                "/peers",
                "/peers/{peer_id}",
                "/cdms",
                "/cdms/{cdm_id}",
                "/objects",
                "/objects/{object_id}",
            },
        )
        self.assertEqual(self.call("GET", "/nothing", token=None)[0], 404)
        for path in ("/healthz/x", "/readyz/anything", "/metrics/x", "/health/x"):
            code, body = self.call("GET", path, token=None)
            self.assertEqual((code, "error" in body), (404, True), path)
        self.assertEqual(self.call("GET", "/healthz", token=None), (200, b"ok\n"))
        code, body = self.call("PUT", "/cdms", "{}")
        self.assertEqual((code, "error" in body), (405, True))


class AuthorityAPITests(_APIBase):
    """
    The API refuses what peers would ignore: changes to another node's CDM
    (unless an admin overrides) and CDMs whose TCA has passed.
    """

    def _foreign(self, key: str) -> None:
        from suite.spacecomms.cdm.jsonfmt import toDict
        from suite.spacecomms.store import Record

        cdm = sampleCDM(key, object2="42001")
        now = self.clock.seconds()
        self.node.store.put(
            Record(
                "cdm",
                key,
                "B",
                int(now * 1e6),
                True,
                toDict(cdm),
                None,
                now,
                now,
                "B",
                cdm.tcaSeconds,
                list(cdm.objectDesignators()),
            )
        )

    def test_foreignCDMRefused(self) -> None:
        """
        DELETE or re-POST of B's CDM is 409 naming the originator; the
        override needs the admin permission and is then applied and
        reported as an override.
        """
        self._foreign("F-1")
        code, body = self.call("DELETE", "/cdms/F-1", token=WRITER)
        self.assertEqual(code, 409)
        self.assertIn("belongs to originator B, not A", body["error"])
        self.assertEqual(body["origin"], "B")
        code, body = self.call(
            "POST", "/cdms", encode(sampleCDM("F-1", object2="42001"), "json"), token=WRITER
        )
        self.assertEqual(code, 409)
        self.assertEqual(stored(self.node.store, "cdm", "F-1").origin, "B")
        self.assertEqual(self.call("DELETE", "/cdms/F-1?override=true", token=WRITER)[0], 403)
        self.assertEqual(self.call("DELETE", "/cdms/F-1?override=maybe")[0], 400)
        code, body = self.call("DELETE", "/cdms/F-1?override=true&reason=ERROR")
        self.assertEqual(code, 200, body)
        self.assertEqual((body["status"], body["origin"], body["override"]), ("withdrawn", "A", True))
        self.assertTrue(self.logged("authority: admin override of cdm"))

    def test_pastTCARefused(self) -> None:
        """
        A CDM whose TCA has passed is 422 naming TCA and is not stored.
        """
        now = self.clock.seconds()
        old = encode(sampleCDM("OLD-1", tca=now - 10, created=now - 3600), "json")
        code, body = self.call("POST", "/cdms", old)
        self.assertEqual(code, 422)
        self.assertEqual(body["field"], "TCA")
        self.assertIn("has passed", body["error"])
        self.assertIsNone(self.node.store.get("cdm", "OLD-1"))


class FullDiskTests(SynchronousTestCase):
    """
    A file store that cannot append (a full disk): the API answers 503 and
    keeps nothing it did not log; the TCA timer keeps running.
    """

    def test_postRefusedThenAccepted(self) -> None:
        import errno
        import os

        from suite.spacecomms.store import FileStore

        clock = Clock()
        clock.advance(1_700_000_000)
        path = os.path.join(os.path.abspath(self.mktemp()), "data")
        os.makedirs(os.path.dirname(path))
        store = FileStore(path, clock)
        cfg = Config(
            node_id="A", node_name="A", tokens=(TokenConfig("admin", ADMIN, ("read", "write", "admin")),)
        )
        node = SpaceNode(cfg, store, clock)
        node.start()
        self.addCleanup(node.stop)
        client: Any = StubTreq(
            makeAPIResource(node, makeTokenChecker(cfg.tokens), lambda pid: "-", print, bool)
        )
        headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}

        def post(body: str) -> tuple[int, Any, Any]:
            r = self.successResultOf(client.request("POST", "http://node/cdms", data=body, headers=headers))
            return r.code, json.loads(self.successResultOf(client.content(r))), r.headers

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        realWrite = os.write
        self.patch(os, "write", full)
        code, body, responseHeaders = post(encode(sampleCDM("FULL-1", tca=clock.seconds() + 5), "json"))
        self.assertEqual(code, 503)
        self.assertIn("cannot append (No space left on device); not done, retry later", body["error"])
        self.assertEqual(responseHeaders.getRawHeaders("retry-after"), ["10"])
        self.assertIsNone(store.get("cdm", "FULL-1"))

        # A CDM stored before the disk filled passes its TCA: its
        # withdrawal waits for the disk, and the timer keeps running.
        self.patch(os, "write", realWrite)
        self.assertEqual(post(encode(sampleCDM("TCA-1", tca=clock.seconds() + 2), "json"))[0], 201)
        self.patch(os, "write", full)
        clock.advance(3)
        clock.advance(1)
        self.assertTrue(stored(store, "cdm", "TCA-1").active)
        self.patch(os, "write", realWrite)
        clock.advance(1)
        self.assertEqual(stored(store, "cdm", "TCA-1").reason, "TCA_PASSED")
        self.assertEqual(post(encode(sampleCDM("FULL-1", tca=clock.seconds() + 86400), "json"))[0], 201)


class KeptPeersFailTests(_APIBase):
    """
    A peer that cannot be kept (its file cannot be written) is neither added
    nor removed: 503 with the reason.
    """

    def test_cannotKeep(self) -> None:
        import errno

        def fail(peer: object) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device")

        client: Any = StubTreq(makeAPIResource(self.node, None, lambda pid: "-", fail, fail))
        body = json.dumps({"peer_id": "C", "address": "https://c:1", "auth_token": "peer-token-c"})
        r = self.successResultOf(client.request("POST", "http://node/peers", data=body))
        self.assertEqual(r.code, 503)
        error = json.loads(self.successResultOf(client.content(r)))["error"]
        self.assertEqual(error, "cannot keep the peer (No space left on device): not added; retry later")
        r = self.successResultOf(client.request("DELETE", "http://node/peers/B"))
        self.assertEqual(r.code, 503)
        self.assertEqual(sorted(self.node.peerConfigs), ["B"])
