"""
The hub under a URL prefix (C{presence.rendezvous_base_path}), as the
guide's Caddy example routes it (C{handle /rendezvous*}: the prefix is
forwarded unchanged), tested behind Debian's Caddy running the guide's
block and behind Debian's nginx doing the same.
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
from suite.goop.p2p.discovery import HubClient, PeerDirectory, signedPublication
from tests.support.http import httpHeaders
from tests.support.process import DaemonProcess, freePort, scriptArgs

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
CADDY = shutil.which("caddy") or ("/usr/bin/caddy" if os.path.exists("/usr/bin/caddy") else None)


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


#: The guide's path-based Caddyfile block, its site address and upstream
#: port moved to free loopback ports (plain HTTP: no certificate to obtain),
#: with Caddy's admin API off.
CADDYFILE = """
{{
  admin off
}}

http://127.0.0.1:{port} {{
    handle /rendezvous* {{
        reverse_proxy localhost:{hub}
    }}
}}
"""


class PrefixThroughProxy:
    """One check for every proxy that forwards C{/rendezvous} unchanged."""

    async def startHub(self, case: TestCase) -> tuple[DaemonProcess, int]:
        hubPort = freePort()
        hubDir = os.path.abspath(case.mktemp())
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
        hub = DaemonProcess(case, scriptArgs("goop2", "rendezvous", hubDir), name="hub").start()
        await hub.waitForLog(r"rendezvous hub listening on http://127\.0\.0\.1:\d+/rendezvous/")
        return hub, hubPort

    async def checkPrefix(self, case: TestCase, hub: DaemonProcess, hubPort: int, proxyPort: int) -> None:
        """
        Through the proxy: the dashboard at /rendezvous/ (the bare prefix
        redirects there), unknown paths under the prefix are JSON 404s, a
        peer publishes and follows events at the proxy URL, /peers.json
        lists it, a join reaches it over the open stream; the hub's own
        root is not the hub (a JSON 404).
        """
        base = f"http://127.0.0.1:{proxyPort}/rendezvous"
        r = await treq.get(base, persistent=False, allow_redirects=False)
        await r.content()
        case.assertEqual(r.code, 302)
        case.assertEqual(r.headers.getRawHeaders(b"location"), [b"/rendezvous/"])
        r = await treq.get(base + "/", persistent=False)
        case.assertEqual(r.code, 200)
        case.assertIn(b"EventSource", await r.content())
        r = await treq.get(base + "/nothing", persistent=False)
        case.assertEqual(r.code, 404)
        case.assertIn("error", json.loads(await r.content()))
        r = await treq.get(f"http://127.0.0.1:{hubPort}/peers.json", persistent=False)
        case.assertEqual(r.code, 404)
        case.assertIn("error", json.loads(await r.content()))

        peerDir = os.path.abspath(case.mktemp())
        os.makedirs(peerDir)
        identity = loadIdentity(peerDir)
        directory = PeerDirectory(identity.peerId)
        client = HubClient(reactor, identity, base, directory, lambda: "behind-proxy", lambda: 1, 120, 3600)
        client.start()
        case.addCleanup(client.stop)

        async def listed() -> bool:
            r = await treq.get(base + "/peers.json", persistent=False)
            peers: Any = json.loads(await r.content())
            return any(p.get("peer_id") == identity.peerId for p in peers)

        await hub.waitFor(listed, "the publication through the proxy")
        await hub.waitFor(lambda: client.streams == 1, "the event stream through the proxy")
        # the hub lists the peer before its answer to the publish is back
        # through the proxy: wait for the answer, then it was exactly one
        await hub.waitFor(lambda: client.published >= 1, "the answer to the publication")
        case.assertEqual(client.published, 1)
        # An event arrives through the proxy as it happens: a second peer's
        # join reaches the first one's directory over the open stream.
        otherDir = os.path.abspath(case.mktemp())
        os.makedirs(otherDir)
        other = loadIdentity(otherDir)
        body, sig = signedPublication(other, "second", 2, 120, "online", False, reactor.seconds(), 1)
        r = await treq.post(
            base + "/publish",
            data=body,
            headers=httpHeaders({"content-type": "application/json", "x-goop-signature": sig}),
            persistent=False,
        )
        case.assertEqual(r.code, 200, await r.text())
        await hub.waitFor(lambda: directory.get(other.peerId) is not None, "the join event through the proxy")
        case.assertEqual(client.streams, 1)
        case.assertNotIn("Traceback", hub.output())


class BehindCaddyTests(PrefixThroughProxy, TestCase):
    timeout = 180

    async def test_guideCaddyfile(self) -> None:
        """
        Behind Caddy running the guide's C{handle /rendezvous*} block
        (C{reverse_proxy localhost:PORT}): the prefix checks hold.
        """
        if CADDY is None:
            self.skipTest("caddy is not installed (Debian package caddy)")
        hub, hubPort = await self.startHub(self)
        proxyPort = freePort()
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        conf = os.path.join(home, "Caddyfile")
        with open(conf, "w") as f:
            f.write(CADDYFILE.format(port=proxyPort, hub=hubPort))
        env = {"HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home}
        proxy = DaemonProcess(
            self,
            [CADDY, "run", "--config", conf, "--adapter", "caddyfile"],
            env=env,
            name="caddy",
            stopTimeout=5,
        ).start()
        await proxy.waitForPort(proxyPort)
        await self.checkPrefix(self, hub, hubPort, proxyPort)


class BehindNginxTests(PrefixThroughProxy, TestCase):
    timeout = 180

    async def test_prefixThroughNginx(self) -> None:
        """
        Behind nginx forwarding /rendezvous unchanged (C{location
        /rendezvous}): the prefix checks hold.
        """
        if NGINX is None:
            self.skipTest("nginx is not installed")
        hub, hubPort = await self.startHub(self)
        proxyPort = freePort()
        ngDir = os.path.abspath(self.mktemp())
        os.makedirs(ngDir)
        conf = os.path.join(ngDir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=ngDir, port=proxyPort, hub=hubPort))
        proxy = DaemonProcess(self, [NGINX, "-p", ngDir, "-c", conf], name="nginx", stopTimeout=5).start()
        await proxy.waitForPort(proxyPort)
        await self.checkPrefix(self, hub, hubPort, proxyPort)
