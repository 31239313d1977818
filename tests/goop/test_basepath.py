"""
The hub under a URL prefix (C{presence.rendezvous_base_path}), as the
guide's Caddy example routes it (C{handle /rendezvous*}: the prefix is
forwarded unchanged), tested behind Debian's nginx doing the same.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.daemon import ConfigError
from suite.goop.config import validateDocument
from suite.goop.identity import loadIdentity
from suite.goop.p2p.discovery import HubClient, PeerDirectory
from tests.support.process import DaemonProcess, freePort, scriptArgs

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


class BasePathConfigTests(SynchronousTestCase):
    def test_values(self) -> None:
        """
        A prefix is normalised to C{/a/b}; "/" and "" mean the root; a
        path with odd characters or dot segments is refused naming the key.
        """
        d = self.mktemp()
        for value, expected in (
            ("/rendezvous", "/rendezvous"),
            ("rv/a/", "/rv/a"),
            ("/", ""),
            ("", ""),
            ("//a//", "/a"),
        ):
            cfg = validateDocument(d, {"presence": {"rendezvous_base_path": value}})
            self.assertEqual(cfg.rendezvousBasePath, expected)
        for bad in ("/a/../b", "/a b", "/a?x", "/a//b"):
            e = self.assertRaises(
                ConfigError, validateDocument, d, {"presence": {"rendezvous_base_path": bad}}
            )
            self.assertIn("presence.rendezvous_base_path", str(e))


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /rendezvous {{
      proxy_pass http://127.0.0.1:{hub};
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_read_timeout 1h;
    }}
  }}
}}
"""


class BehindNginxTests(TestCase):
    timeout = 180

    async def test_prefixThroughNginx(self) -> None:
        """
        Behind nginx forwarding /rendezvous unchanged: the dashboard at
        /rendezvous/ (the bare prefix redirects there), a peer publishing
        and following events through the proxy URL, /peers.json listing
        it; the root is not the hub's.
        """
        if NGINX is None:
            self.skipTest("nginx is not installed")
        hubPort, proxyPort = freePort(), freePort()
        hubDir = os.path.abspath(self.mktemp())
        os.makedirs(hubDir)
        with open(os.path.join(hubDir, "goop.json"), "w") as f:
            json.dump(
                {
                    "presence": {
                        "rendezvous_only": True,
                        "rendezvous_host": True,
                        "rendezvous_port": hubPort,
                        "rendezvous_base_path": "/rendezvous",
                    }
                },
                f,
            )
        hub = DaemonProcess(self, scriptArgs("goop2", "rendezvous", hubDir), name="hub").start()
        await hub.waitForLog(r"rendezvous hub listening on http://127\.0\.0\.1:\d+/rendezvous/")
        ngDir = os.path.abspath(self.mktemp())
        os.makedirs(ngDir)
        conf = os.path.join(ngDir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=ngDir, port=proxyPort, hub=hubPort))
        proxy = DaemonProcess(self, [NGINX, "-p", ngDir, "-c", conf], name="nginx", stopTimeout=5).start()
        await proxy.waitForPort(proxyPort)
        base = f"http://127.0.0.1:{proxyPort}/rendezvous"

        r = await treq.get(base, persistent=False, allow_redirects=False)
        await r.content()
        self.assertEqual(r.code, 302)
        self.assertEqual(r.headers.getRawHeaders(b"location"), [b"/rendezvous/"])
        r = await treq.get(base + "/", persistent=False)
        self.assertEqual(r.code, 200)
        self.assertIn(b"EventSource", await r.content())
        r = await treq.get(f"http://127.0.0.1:{hubPort}/peers.json", persistent=False)
        self.assertEqual(r.code, 404)
        self.assertIn("error", json.loads(await r.content()))

        peerDir = os.path.abspath(self.mktemp())
        os.makedirs(peerDir)
        identity = loadIdentity(peerDir)
        directory = PeerDirectory(identity.peerId)
        client = HubClient(reactor, identity, base, directory, lambda: "behind-nginx", lambda: 1, 120, 3600)
        client.start()
        self.addCleanup(client.stop)

        async def listed() -> bool:
            r = await treq.get(base + "/peers.json", persistent=False)
            peers: Any = json.loads(await r.content())
            return any(p.get("peer_id") == identity.peerId for p in peers)

        await hub.waitFor(listed, "the publication through nginx")
        await hub.waitFor(lambda: client.streams == 1, "the event stream through nginx")
        self.assertEqual(client.published, 1)
        self.assertNotIn("Traceback", hub.output())
