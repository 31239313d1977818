"""
A peer's own short name (C{profile.name}, the guide's C{peerName}) beside
its site's display name (C{profile.label}, the guide's C{site}): published
signed to the hub and over mDNS, checked by the hub, kept in the shared peer
DB, and shown by the hub, the viewer and the manager.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.goop.identity import Identity, loadIdentity
from suite.goop.p2p.discovery import MdnsDiscovery, PeerDirectory, signedPublication
from suite.goop.rendezvous.hub import RendezvousHub
from suite.goop.rendezvous.registry import PeerRegistry, PublishError, verifyPublication
from tests.goop.test_e2e import getJSON, postJSON, writeConfig
from tests.goop.test_hub import hubURL, syncNow
from tests.support.http import httpHeaders
from tests.support.process import DaemonProcess, freePort, twistdArgs


def ident(case: SynchronousTestCase) -> Identity:
    d = case.mktemp()
    os.makedirs(d)
    return loadIdentity(d)


def signed(who: Identity, fields: dict[str, Any], now: float = 1000.0) -> tuple[bytes, str]:
    """A correctly signed publication with C{fields} over the usual ones."""
    doc = {"peer_id": who.peerId, "public_key": who.publicB64, "label": "L", "port": 1, "ts": now, **fields}
    body = json.dumps(doc).encode()
    return body, who.sign(body)


class RegistryNameTests(SynchronousTestCase):
    def test_nameKeptBesideLabel(self) -> None:
        """A publication's name is recorded beside its label; a changed name is an update event."""
        a = ident(self)
        body, sig = signedPublication(a, "My Site", 4001, 60, now=1000.0, seq=1, name="my-peer")
        self.assertEqual(json.loads(body)["name"], "my-peer")
        pub = verifyPublication(body, sig, 1000.0, "1.2.3.4")
        self.assertEqual((pub["label"], pub["name"]), ("My Site", "my-peer"))
        reg = PeerRegistry()
        self.assertEqual(reg.apply(pub, 1000.0)[0], "join")  # type: ignore[index]
        same = verifyPublication(
            *signedPublication(a, "My Site", 4001, 60, now=1001.0, seq=2, name="my-peer"), 1001.0, "1.2.3.4"
        )
        self.assertEqual(reg.apply(same, 1001.0)[0], "heartbeat")  # type: ignore[index]
        renamed = verifyPublication(
            *signedPublication(a, "My Site", 4001, 60, now=1002.0, seq=3, name="other"), 1002.0, "1.2.3.4"
        )
        event, record = reg.apply(renamed, 1002.0)  # type: ignore[misc]
        self.assertEqual((event, record["name"]), ("update", "other"))
        self.assertIn(b'"name":"other"', reg.listJSON())

    def test_olderPublicationWithoutName(self) -> None:
        """A publication without a name (an older peer) stays valid: its record has an empty name."""
        a = ident(self)
        body, sig = signedPublication(a, "old", 4001, 60, now=1000.0)
        self.assertNotIn("name", json.loads(body))
        pub = verifyPublication(body, sig, 1000.0, "1.2.3.4")
        self.assertEqual((pub["label"], pub["name"]), ("old", ""))
        pub = verifyPublication(*signed(a, {"name": ""}), 1000.0, "1.2.3.4")
        self.assertEqual(pub["name"], "")

    def test_badNameRefusedWithReason(self) -> None:
        """A name that is not a string, too long or not printable is refused, saying why."""
        a = ident(self)
        for value, reason in (
            (7, "name must be a string"),
            (None, "name must be a string"),
            (["x"], "name must be a string"),
            ({"x": 1}, "name must be a string"),
            ("x" * 65, "name: longer than 64 characters"),
            ("a\nb", "name: not printable text"),
            ("padded ", "name: not printable text"),
        ):
            with self.assertRaises(PublishError, msg=repr(value)) as cm:
                verifyPublication(*signed(a, {"name": value}), 1000.0, "1.2.3.4")
            self.assertTrue(str(cm.exception).startswith(reason), str(cm.exception))
        self.assertEqual(verifyPublication(*signed(a, {"name": "n" * 64}), 1000.0, "x")["name"], "n" * 64)


class MdnsNameTests(SynchronousTestCase):
    def test_announcedAndBrowsed(self) -> None:
        """The mDNS TXT properties carry the name when set; a browsed service's name reaches the directory."""

        class Reactor:
            def callFromThread(self, f: Any, *a: Any) -> None:
                f(*a)

        class Info:
            port = 4555
            properties = {b"peer_id": b"abc", b"label": b"Lan Site", b"name": b"lan-peer"}

            def parsed_addresses(self) -> list[str]:
                return ["192.0.2.7"]

        class ZC:
            def get_service_info(self, t: str, n: str, timeout: int) -> Info:
                return Info()

        class Added:
            name = "Added"

        who = ident(self)
        directory = PeerDirectory("self")
        m = MdnsDiscovery(Reactor(), who, "goop-test", lambda: 1, "My Site", directory, name="my-peer")
        self.assertEqual(m.properties(), {"peer_id": who.peerId, "label": "My Site", "name": "my-peer"})
        unnamed = MdnsDiscovery(Reactor(), who, "goop-test", lambda: 1, "My Site", directory)
        self.assertEqual(unnamed.properties(), {"peer_id": who.peerId, "label": "My Site"})
        # A long non-ASCII label and name still make a TXT record zeroconf
        # accepts (each string at most 255 bytes), cut at a character boundary.
        import socket

        from zeroconf import ServiceInfo

        wide = MdnsDiscovery(Reactor(), who, "goop-test", lambda: 1, "é" * 200, directory, name="ü" * 64)
        props = wide.properties()
        ServiceInfo(
            wide.serviceType,
            "x." + wide.serviceType,
            addresses=[socket.inet_aton("127.0.0.1")],
            port=1,
            properties=props,
        )
        self.assertEqual(props["label"], "é" * 124)
        self.assertEqual(props["name"], "ü" * 64)
        m._changed(ZC(), m.serviceType, "x", Added())
        [record] = directory.peers()
        self.assertEqual((record["label"], record["name"]), ("Lan Site", "lan-peer"))


class ManagerNameTests(SynchronousTestCase):
    def test_listedBesideLabel(self) -> None:
        """The manager's peer list gives each peer's label and its peer name."""
        from suite.goop.manager.app import Manager

        peersDir = self.mktemp()
        manager = Manager(None, peersDir)
        writeConfig(os.path.join(peersDir, "one"), {"site": "My Site", "peerName": "my-peer"})
        writeConfig(os.path.join(peersDir, "two"), {"profile": {"label": "Two"}})
        entries = {e["name"]: (e["label"], e["peer_name"]) for e in manager.peers()}
        self.assertEqual(entries, {"one": ("My Site", "my-peer"), "two": ("Two", "")})


class SharedDBNameTests(TestCase):
    async def startHub(self, db: str) -> tuple[RendezvousHub, str]:
        hub = RendezvousHub(reactor, port=0, peerDbFile=db)
        hub.startService()
        self.addCleanup(hub.stopService)
        return hub, await hubURL(hub)

    async def test_nameTravelsThroughPeerDB(self) -> None:
        """A name published to one hub is stored in the shared peer DB and listed by the other hub."""
        db = self.mktemp() + "-shared.db"
        hub1, url1 = await self.startHub(db)
        hub2, url2 = await self.startHub(db)
        a = ident(self)
        body, sig = signedPublication(a, "Shared Site", 4001, 60, name="shared-peer")
        r = await treq.post(
            url1 + "/publish", data=body, headers=httpHeaders({"x-goop-signature": sig}), persistent=False
        )
        self.assertEqual(r.code, 200, await r.content())
        await syncNow(hub1)
        await syncNow(hub2)
        peers = await getJSON(url2 + "/peers.json")
        self.assertEqual([(p["label"], p["name"]) for p in peers], [("Shared Site", "shared-peer")])


class PeerNameEndToEndTests(TestCase):
    timeout = 120

    async def test_guideExampleThroughHub(self) -> None:
        """
        A peer configured as the guide's client example (site and peerName)
        shows both in the hub's /peers.json and on its settings page; renaming it on the settings page reaches the hub;
        a bad name is refused naming the key; the viewer lists other peers'
        names.
        """
        hubPort = freePort()
        hubDir = writeConfig(
            os.path.abspath(self.mktemp()),
            {"presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": hubPort}},
        )
        hub = DaemonProcess(self, twistdArgs("goop", "rendezvous", hubDir), name="hub").start()
        hubURL = f"http://127.0.0.1:{hubPort}"
        await hub.waitForHTTP(hubURL + "/healthz")
        vport = freePort()
        peerDir = writeConfig(
            os.path.abspath(self.mktemp()),
            {
                "site": "My Site",
                "peerName": "my-peer",
                "rendezvous": hubURL,
                "p2p": {"listen_port": 0, "mdns_tag": ""},
                "presence": {"heartbeat_seconds": 1, "ttl_seconds": 10},
                "viewer": {"http_addr": f"127.0.0.1:{vport}"},
            },
        )
        peer = DaemonProcess(self, twistdArgs("goop", "peer", peerDir), name="peer").start()
        viewer = f"http://127.0.0.1:{vport}"
        await peer.waitForHTTP(viewer + "/healthz")
        settings = await getJSON(viewer + "/self", headers={"accept": "application/json"})
        self.assertEqual((settings["label"], settings["name"]), ("My Site", "my-peer"))
        pid = settings["peer_id"]

        async def onHub(label: str, name: str) -> bool:
            return any(
                (p["peer_id"], p.get("label"), p.get("name")) == (pid, label, name)
                for p in await getJSON(hubURL + "/peers.json")
            )

        await peer.waitFor(lambda: onHub("My Site", "my-peer"), "label and name on the hub")
        self.assertIn("peerName: legacy key, read as profile.name", peer.output())
        # the settings page edits the name like the label; the hub follows
        r = await treq.get(viewer + "/self", persistent=False)
        self.assertIn(b"<input name=name maxlength=64 value='my-peer'>", await r.content())
        code, res = await postJSON(viewer + "/self", {"name": "renamed-peer"})
        self.assertEqual(
            (code, res["name"], res["config"]["profile"]["name"]), (200, "renamed-peer", "renamed-peer")
        )
        await peer.waitFor(lambda: onHub("My Site", "renamed-peer"), "the new name on the hub")
        code, res = await postJSON(viewer + "/self", {"name": "x" * 65})
        self.assertEqual(code, 400)
        self.assertIn("profile.name", res["error"])
        # another peer's name reaches this peer's list and page
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        other = loadIdentity(d)
        body, sig = signedPublication(other, "Other Site", 4002, 60, name="other-peer")
        r = await treq.post(
            hubURL + "/publish", data=body, headers=httpHeaders({"x-goop-signature": sig}), persistent=False
        )
        self.assertEqual(r.code, 200, await r.content())

        async def listed() -> bool:
            return any(
                (p["peer_id"], p.get("name")) == (other.peerId, "other-peer")
                for p in await getJSON(viewer + "/peers")
            )

        await peer.waitFor(listed, "the other peer's name in the viewer's list")
        r = await treq.get(viewer + "/", persistent=False)
        page = await r.content()
        self.assertIn(b"<td class=name>other-peer</td>", page)
        self.assertIn(b"Peer name <b id=name>renamed-peer</b>", page)
