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
from twisted.trial.unittest import TestCase

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
        for missing in (m.group(1) + "/api/peers", m.group(1) + "/api/nothing", url + "/api/nothing"):
            r = await treq.get(missing, persistent=False)
            self.assertEqual(r.code, 404, missing)
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
