"""
A real agent with every secret it reads configured, run with C{--verbose}:
none of them appears in its log, while it writes DNS through Cloudflare
with the token.
"""

from __future__ import annotations

import base64
import os

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.constellation.support import startAgent
from tests.support.cloudflare import CloudflareStandIn
from tests.support.process import waitUntil

ZONE = "0123456789abcdef0123456789abcdef"
DOMAIN = "example.test"
TOKEN = "cf-token-Zq8wX3vB7nYp"


class SecretsNotLoggedTests(TestCase):
    timeout = 120

    async def test_verboseLogHasNoSecret(self) -> None:
        """
        The Cloudflare token (and its Authorization header) and the gossip
        key are used (records written, gossip encrypted) and never logged.
        """
        standIn = CloudflareStandIn(ZONE, TOKEN)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(standIn))
        self.addCleanup(port.stopListening)
        secrets = os.path.abspath(self.mktemp())
        os.makedirs(secrets, mode=0o700)
        tokenFile = os.path.join(secrets, "cf-api-token.txt")
        with open(os.open(tokenFile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(TOKEN + "\n")
        key = base64.b64encode(os.urandom(32)).decode()
        keyFile = os.path.abspath(self.mktemp())
        with open(os.open(keyFile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(key + "\n")
        agent = startAgent(
            self,
            "cloudserver1",
            extra=["--verbose", "--bootstrap", "--raft-election-ms", "300", "--lease-seconds", "2"],
            env={
                "SECRETS_PATH": secrets,
                "CLOUDFLARE_ZONE_ID": ZONE,
                "CONSTELLATION_CLOUDFLARE_API": f"http://127.0.0.1:{port.getHost().port}/client/v4",
                "CONSTELLATION_GOSSIP_KEY_FILE": keyFile,
                "DOMAIN": DOMAIN,
                "PUBLIC_IP": "192.0.2.1",
            },
        )
        await waitUntil(
            lambda: standIn.addresses(DOMAIN) == ["192.0.2.1"],
            lambda: "no DNS record written\n" + agent.proc.output()[-3000:],
            60,
        )
        await agent.proc.waitForLog("DNS updated")
        output = agent.proc.output()
        for secret in (TOKEN, key, key[:16], base64.b64decode(key).hex()):
            self.assertNotIn(secret, output)
