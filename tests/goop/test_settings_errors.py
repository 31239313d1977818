"""
Bad input to the settings page (C{/self}) and the manager's API is an HTTP
error with a reason, never a traceback or a 500 "internal error"; a
goop.json that no longer reads is named, and a whole document saved on
C{/self} replaces (repairs) it.  goop.json is written durably.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.goop.config import readDocument, writeConfig
from tests.goop.test_e2e import tokenFor
from tests.goop.test_e2e import writeConfig as writeRaw
from tests.support.http import httpHeaders
from tests.support.process import DaemonProcess, freePort, scriptArgs, twistdArgs, waitUntil


async def post(url: str, token: str, body: bytes, method: str = "POST") -> tuple[int, Any]:
    r = await treq.request(
        method,
        url,
        data=body,
        headers=httpHeaders({"content-type": "application/json", "x-goop-token": token}),
        persistent=False,
    )
    return r.code, json.loads(await r.content())


def loopbackPeer(test: TestCase, viewer: str) -> str:
    """
    A peer directory (via C{test.mktemp}) whose P2P port is chosen by the OS
    on 127.0.0.1, mDNS off, its viewer on C{viewer} (C{HOST:PORT}).
    """
    return writeRaw(
        os.path.abspath(test.mktemp()),
        {
            "p2p": {"listen_port": 0, "listen_addr": "127.0.0.1", "mdns_tag": ""},
            "viewer": {"http_addr": viewer},
        },
    )


class SettingsPageErrorsTests(TestCase):
    async def test_selfBadInput(self) -> None:
        """
        C{/self}: a C{profile} that is not an object is 400 naming it; a
        goop.json broken on disk makes a label change a 500 naming the file
        (the file untouched); saving a whole document repairs it.
        """
        hubPort, vport = freePort(), freePort()
        d = writeRaw(
            os.path.abspath(self.mktemp()),
            {
                "presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": hubPort},
                "viewer": {"http_addr": f"127.0.0.1:{vport}"},
            },
        )
        proc = DaemonProcess(self, twistdArgs("goop", "rendezvous", d), name="settings").start()
        viewer = f"http://127.0.0.1:{vport}"
        await proc.waitForHTTP(viewer + "/healthz")
        token = await tokenFor(viewer)
        for body in (
            b'{"config": {"profile": 5}}',
            b'{"config": {"profile": [1]}}',
            b'{"config": {"profile": "ab"}}',
        ):
            code, doc = await post(viewer + "/self", token, body)
            self.assertEqual(code, 400, body)
            self.assertEqual(doc["error"], "goop.json: profile: must be an object")
        deep = b'{"config": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        code, doc = await post(viewer + "/self", token, deep)
        self.assertEqual((code, doc), (400, {"error": "body must be a JSON object"}))
        code, doc = await post(
            viewer + "/self",
            token,
            b'{"config": {"presence": {"rendezvous_only": true, "rendezvous_host": false}}}',
        )
        self.assertEqual(code, 400)
        self.assertTrue(doc["error"].startswith("goop.json: presence.rendezvous_host: must be true"), doc)
        self.assertTrue(readDocument(d)["presence"]["rendezvous_host"])
        path = os.path.join(d, "goop.json")
        with open(path, "w") as f:
            f.write("{broken")
        code, doc = await post(viewer + "/self", token, b'{"label": "x"}')
        self.assertEqual(code, 500)
        self.assertIn("goop.json: not valid JSON", doc["error"])
        self.assertIn("save a whole goop.json", doc["error"])
        with open(path) as f:
            self.assertEqual(f.read(), "{broken")
        whole = {
            "profile": {"label": "repaired"},
            "presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": hubPort},
            "viewer": {"http_addr": f"127.0.0.1:{vport}"},
        }
        code, doc = await post(viewer + "/self", token, json.dumps({"config": whole}).encode())
        self.assertEqual(code, 200, doc)
        self.assertEqual(readDocument(d)["profile"]["label"], "repaired")
        self.assertNotIn("Traceback", proc.output())
        self.assertNotIn('"critical"', proc.output())


class ManagerErrorsTests(TestCase):
    async def test_managerBadInput(self) -> None:
        """
        The manager's API: a body that is not an object, a name that is not
        a string, starting a peer that does not exist or whose goop.json
        does not read: 400 with the reason.
        """
        peersDir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(peersDir, "broken"))
        with open(os.path.join(peersDir, "broken", "goop.json"), "w") as f:
            f.write("{broken")
        mgr = DaemonProcess(
            self,
            scriptArgs("goop2", "manager", "--peers-dir", peersDir, "--listen", f"127.0.0.1:{freePort()}"),
            name="manager",
        ).start()
        m = await mgr.waitForLog(r"goop2 manager: (http://127\.0\.0\.1:\d+)/")
        api = m.group(1) + "/api/peers"
        token = await tokenFor(m.group(1))
        cases = [
            ("", b"[1]", "body must be a JSON object"),
            ("", b'{"name": 5}', "body must be {name: string"),
            ("", b'{"name": "a", "rendezvous": "yes"}', "body must be {name: string"),
            ("/nope/start", b"{}", "no peer named nope"),
            ("/broken/start", b"{}", "goop.json: not valid JSON"),
        ]
        for path, body, reason in cases:
            code, doc = await post(api + path, token, body)
            self.assertEqual(code, 400, (path, body))
            self.assertIn(reason, doc["error"], (path, body))
        self.assertEqual(sorted(os.listdir(peersDir)), [".manager.secret", "broken"])
        self.assertNotIn("Traceback", mgr.output())


class DurableWriteTests(SynchronousTestCase):
    def test_flushedBeforeReplace(self) -> None:
        """
        The new goop.json is fsynced before it replaces the old one, and the
        directory after; a failed write leaves the old file and no temporary.
        """
        d = self.mktemp()
        os.makedirs(d)
        calls: list[str] = []
        realFsync, realReplace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            calls.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
            realFsync(fd)

        def replace(a: str, b: str) -> None:
            calls.append("replace")
            realReplace(a, b)

        self.patch(os, "fsync", fsync)
        self.patch(os, "replace", replace)
        writeConfig(d, {"profile": {"label": "one"}})
        self.assertEqual(calls, ["fsync-file", "replace", "fsync-dir"])

        def failing(fd: int) -> None:
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", failing)
        with self.assertRaises(OSError):
            writeConfig(d, {"profile": {"label": "two"}})
        self.assertEqual(readDocument(d), {"profile": {"label": "one"}})
        self.assertEqual(sorted(os.listdir(d)), ["goop.json"])


class GroupNameTests(TestCase):
    async def test_groupNamesPrintable(self) -> None:
        """
        C{/api/groups}: a group name that is empty, longer than 64
        characters, holds a control character or surrounding spaces is 400
        with the reason and no group is created; a plain name is accepted.
        """
        vport = freePort()
        d = loopbackPeer(self, f"127.0.0.1:{vport}")
        proc = DaemonProcess(self, twistdArgs("goop", "peer", d), name="groups").start()
        viewer = f"http://127.0.0.1:{vport}"
        await proc.waitForHTTP(viewer + "/healthz")
        token = await tokenFor(viewer)
        for name in ("", "g\n2", "x" * 65, " g", "g\x00"):
            code, doc = await post(
                viewer + "/api/groups", token, json.dumps({"action": "create", "group": name}).encode()
            )
            self.assertEqual(code, 400, name)
            self.assertTrue(doc["error"].startswith("group: 1 to 64 printable characters"), doc)
        code, doc = await post(viewer + "/api/groups", token, b'{"action": "create", "group": "chat room"}')
        self.assertEqual((code, doc), (200, {"hosted": {"chat room": []}, "memberships": []}))


class RemoteSiteAnswerTests(SynchronousTestCase):
    def render(self, answer: Any) -> Any:
        from twisted.internet.defer import succeed
        from twisted.web.test.requesthelper import DummyRequest

        from suite.goop.peer.viewer import _Remote

        class Peer:
            def remoteRequest(self, peerId: str, kind: str, request: dict[str, Any]) -> Any:
                return succeed(answer)

        request = DummyRequest([b"a" * 64, b"index.html"])
        _Remote(Peer()).render(request)
        self.assertEqual(request.finished, 1)
        return request

    def test_malformedAnswers(self) -> None:
        """
        C{/p/<peer>/<path>}: an answer from the other peer that is not a
        file (no data, a body that is not base64, a content type that is not
        a string) is a 502 with the reason, never a request left hanging.
        """
        for answer in (
            {"ok": True},
            {"ok": True, "data": "x"},
            {"ok": True, "data": {"body": "not base64!"}},
            {"ok": True, "data": {"body": 5}},
            {"ok": True, "data": {"content_type": 5, "body": ""}},
        ):
            request = self.render(answer)
            self.assertEqual(request.responseCode, 502, answer)
            self.assertEqual(
                json.loads(b"".join(request.written)), {"error": "the peer sent a malformed file"}
            )

    def test_file(self) -> None:
        """A file is served with its type, sandboxed."""
        request = self.render({"ok": True, "data": {"content_type": "text/html", "body": "aGk="}})
        self.assertEqual(b"".join(request.written), b"hi")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/html"])
        self.assertTrue(
            request.responseHeaders.getRawHeaders(b"content-security-policy")[0].startswith(b"sandbox")
        )


class PeerDirectoryErrorsTests(TestCase):
    def peerDir(self) -> str:
        return loopbackPeer(self, f"127.0.0.1:{freePort()}")

    async def test_siteNotADirectory(self) -> None:
        """A file where site/ belongs stops start-up naming it (exit 2), not an errno."""
        d = self.peerDir()
        with open(os.path.join(d, "site"), "w") as f:
            f.write("not a directory")
        proc = DaemonProcess(self, twistdArgs("goop", "peer", d), name="site-file").start()
        self.assertEqual(await proc.waitExit(30), 2)
        self.assertIn(f"{d}/site: exists and is not a directory", proc.output())
        self.assertNotIn("Errno", proc.output())

    async def test_corruptDatabase(self) -> None:
        """A data.db SQLite cannot open stops start-up with a line naming the file (non-zero exit)."""
        d = self.peerDir()
        with open(os.path.join(d, "data.db"), "wb") as f:
            f.write(b"garbage" * 1000)
        proc = DaemonProcess(self, twistdArgs("goop", "peer", d), name="bad-db").start()
        self.assertNotEqual(await proc.waitExit(30), 0)
        self.assertIn(f"{d}/data.db: cannot open: file is not a database", proc.output())
        self.assertNotIn("Traceback", proc.output())


class RemoteAnswerTimeoutTests(SynchronousTestCase):
    def test_silentPeer(self) -> None:
        """
        A site or data request to a peer that accepts the stream but never
        answers ends after 60 s with a reason, and the stream is closed.
        """
        from twisted.internet.defer import Deferred, succeed
        from twisted.internet.task import Clock

        from suite.goop.p2p import streams
        from suite.goop.peer.service import REMOTE_ANSWER_TIMEOUT, PeerService

        class Stream:
            closed = False

            def request(self, obj: dict[str, Any]) -> Deferred[dict[str, Any]]:
                return Deferred()

            def close(self) -> None:
                self.closed = True

        stream = Stream()
        self.patch(streams, "openStream", lambda *a: succeed(stream))

        class Peer:
            reactor = Clock()
            tls = None

            def addressOf(self, peerId: str) -> str:
                return "127.0.0.1:1"

        peer = Peer()
        results: list[dict[str, Any]] = []
        PeerService.remoteRequest(peer, "a" * 64, "data", {"op": "tables"}).addCallback(results.append)  # type: ignore[arg-type]
        peer.reactor.advance(REMOTE_ANSWER_TIMEOUT - 1)
        self.assertEqual((results, stream.closed), ([], False))
        peer.reactor.advance(1)
        self.assertEqual(results, [{"ok": False, "error": "the peer did not answer within 60 s"}])
        self.assertTrue(stream.closed)

    def test_clientClosesOnNonObject(self) -> None:
        """
        A stream answer that is not a JSON object (here an array nested
        deeper than the decoder follows) closes the stream; the request fails.
        """
        from twisted.internet.testing import StringTransport

        from suite.goop.p2p.streams import StreamClient

        client = StreamClient(None, "/goop/data/1.0.0")
        client.ready.addErrback(lambda f: None)  # no TLS handshake here
        transport = StringTransport()
        client.makeConnection(transport)
        answer = client.request({"op": "tables"})
        failures: list[Any] = []
        answer.addErrback(failures.append)
        client.lineReceived(b"[" * 100000 + b"]" * 100000)  # deeper than the decoder follows
        self.assertTrue(transport.disconnecting)
        client.connectionLost(None)
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0].value, ConnectionError)


class ManagerDeleteTests(TestCase):
    async def test_deleteWaitsForThePeer(self) -> None:
        """
        Deleting a running peer answers once its process has ended and its
        directory is gone (nothing left behind by a peer still writing);
        deleting a peer that does not exist is 400, not "deleted".
        """
        peersDir = os.path.abspath(self.mktemp())
        mgr = DaemonProcess(
            self,
            scriptArgs("goop2", "manager", "--peers-dir", peersDir, "--listen", f"127.0.0.1:{freePort()}"),
            name="manager",
        ).start()
        m = await mgr.waitForLog(r"goop2 manager: (http://127\.0\.0\.1:\d+)/")
        api = m.group(1) + "/api/peers"
        token = await tokenFor(m.group(1))
        self.assertEqual((await post(api, token, b'{"name": "doomed"}'))[0], 200)
        code, started = await post(api + "/doomed/start", token, b"{}")
        self.assertEqual(code, 200, started)
        viewer = started["viewer"]
        # wait until the peer answers, so it is really running and writing

        async def answers() -> bool:
            try:
                r = await treq.get(viewer + "/healthz", persistent=False)
                await r.content()
                return r.code == 200
            except Exception:
                return False

        await waitUntil(answers, "the peer's viewer", 30)
        code, doc = await post(api + "/doomed", token, b"", method="DELETE")
        self.assertEqual((code, doc), (200, {"name": "doomed", "deleted": True}))
        self.assertFalse(os.path.exists(os.path.join(peersDir, "doomed")))
        r = await treq.get(api, persistent=False)
        self.assertEqual(json.loads(await r.content()), [])
        self.assertFalse(await answers())
        code, doc = await post(api + "/nope", token, b"", method="DELETE")
        self.assertEqual((code, doc), (400, {"error": "no peer named nope"}))


class IPv6ViewerTests(TestCase):
    async def test_viewerOnIPv6Loopback(self) -> None:
        """
        C{viewer.http_addr: "[::1]:PORT"} (accepted by the config check)
        serves the viewer there; it failed start-up with an internal
        endpoint-string error.
        """
        import socket

        from twisted.trial.unittest import SkipTest

        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
        except OSError:
            raise SkipTest("no IPv6 loopback here") from None
        vport = freePort()
        d = loopbackPeer(self, f"[::1]:{vport}")
        proc = DaemonProcess(self, twistdArgs("goop", "peer", d), name="v6").start()
        await proc.waitForLog(rf"viewer on http://\[::1\]:{vport}/")

        def get() -> tuple[int, bytes]:
            import http.client

            conn = http.client.HTTPConnection("::1", vport, timeout=10)
            try:
                conn.request("GET", "/healthz")  # Host: [::1]:PORT
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        from twisted.internet.threads import deferToThread

        code, body = await deferToThread(get)
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["status"], "ok")


class DeepJSONTests(SynchronousTestCase):
    def test_deepJSONRefused(self) -> None:
        """
        JSON nested deeper than the decoder follows is a ValueError like
        any malformed input: a publication is refused with the reason, a
        goop.json names the file.
        """
        from suite.daemon import ConfigError
        from suite.goop.config import loadConfig
        from suite.goop.jsonutil import parseJSON
        from suite.goop.rendezvous.registry import PublishError, verifyPublication

        deep = b"[" * 100000 + b"]" * 100000
        with self.assertRaises(ValueError):
            parseJSON(deep)
        with self.assertRaises(PublishError) as e:
            verifyPublication(deep, "AA==", 1000.0, "127.0.0.1")
        self.assertEqual(str(e.exception), "body is not JSON")
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, "goop.json"), "wb") as f:
            f.write(deep)
        with self.assertRaises(ConfigError) as c:
            loadConfig(d)
        self.assertIn("goop.json: not valid JSON: JSON nested too deeply", str(c.exception))
