"""
The private Twisted APIs the suite builds on are still there and still the
same.  Each check names the suite module relying on it: when one fails after
a Twisted upgrade, review that module against the new Twisted, then update
the check (and the C{twisted} upper bound in setup.cfg).
"""

from __future__ import annotations

import configparser
import hashlib
import inspect
import os
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import twisted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Twisted's HTTP/2 sending loop and the three methods that feed it, which
#: suite/specter/gateway/h2.py's BatchingH2Connection re-implements (frames
#: of a turn written together): fingerprints of the reviewed version's source.
H2_SEND_LOOP = "962d5b59c8d38671"
H2_FEEDERS = {
    "writeHeaders": "2780487f07d28fd7",
    "writeDataToStream": "073b03004c5d6012",
    "endRequest": "12a4b4c2ddd303c6",
}


def _fingerprint(f: Any) -> str:
    return hashlib.sha256(inspect.getsource(f).encode()).hexdigest()[:16]


class PrivateAPITests(SynchronousTestCase):
    """
    One test per private API, failing with what to review.
    """

    def test_http2Connection(self) -> None:
        """
        suite/specter/gateway/h2.py subclasses twisted.web._http2.H2Connection
        and re-implements its sending loop over its private state.
        """
        from twisted.web._http2 import _END_STREAM_SENTINEL, H2Connection

        self.assertIsNotNone(_END_STREAM_SENTINEL)
        self.assertEqual(
            _fingerprint(H2Connection._sendPrioritisedData),
            H2_SEND_LOOP,
            "twisted.web._http2.H2Connection._sendPrioritisedData changed: review "
            "BatchingH2Connection in suite/specter/gateway/h2.py, then update H2_SEND_LOOP",
        )
        for method, print_ in H2_FEEDERS.items():
            self.assertEqual(
                _fingerprint(getattr(H2Connection, method)),
                print_,
                f"twisted.web._http2.H2Connection.{method} changed: review "
                f"BatchingH2Connection.{method} in suite/specter/gateway/h2.py, then update H2_FEEDERS",
            )
        connection = H2Connection(MemoryReactorClock())
        for name in (
            "_stillProducing",
            "priority",
            "_sendingDeferred",
            "_consumerBlocked",
            "conn",
            "_outboundStreamQueues",
            "streams",
            "_reactor",
        ):
            self.assertTrue(hasattr(connection, name), f"H2Connection.{name} is gone")
        for name in ("_requestDone", "remainingOutboundWindow", "resetTimeout", "_tryToWriteControlData"):
            self.assertTrue(callable(getattr(connection, name, None)), f"H2Connection.{name}() is gone")

    def test_newclient(self) -> None:
        """
        suite/specter/gateway/h2.py drives HTTP/1.1 over tunnel streams with
        twisted.web._newclient's protocol and request.
        """
        from twisted.web._newclient import HTTP11ClientProtocol, Request

        self.assertEqual(
            list(inspect.signature(Request.__init__).parameters),
            ["self", "method", "uri", "headers", "bodyProducer", "persistent"],
        )
        self.assertIn("quiescentCallback", inspect.signature(HTTP11ClientProtocol.__init__).parameters)

    def test_clientFactory(self) -> None:
        """
        suite/ceptra/service.py swaps HTTPConnectionPool._factory for a
        quiet subclass of twisted.web.client._HTTP11ClientFactory.
        """
        from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

        pool = HTTPConnectionPool(MemoryReactorClock())
        self.assertIs(pool._factory, _HTTP11ClientFactory)
        self.assertTrue(hasattr(_HTTP11ClientFactory, "noisy"))

    def test_alpn(self) -> None:
        """
        suite/pki/tls.py reuses twisted.internet._sslverify.protosFromProtocol
        in its ALPN select callback.
        """
        from twisted.internet._sslverify import protosFromProtocol

        self.assertEqual(
            list(inspect.signature(protosFromProtocol).parameters), ["tlsProto", "acceptableProtocols"]
        )

    def test_haproxy(self) -> None:
        """
        suite/specter/gateway/proxyproto.py subclasses the PROXY protocol
        wrapper and reads its parser state.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory

        factory = HAProxyWrappingFactory(Factory.forProtocol(Protocol))
        wrapper = factory.buildProtocol(None)
        self.assertIsInstance(wrapper, HAProxyProtocolWrapper)
        for name in ("_proxyInfo", "_parser", "wrappedProtocol"):
            self.assertTrue(hasattr(wrapper, name), f"HAProxyProtocolWrapper.{name} is gone")

    def test_upperBound(self) -> None:
        """
        setup.cfg caps twisted, and the installed version is inside the cap.
        """
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        requirement = next(
            line.strip()
            for line in parser["options"]["install_requires"].splitlines()
            if line.strip().startswith("twisted[")
        )
        self.assertIn(",<", requirement)
        cap = int(requirement.split(",<", 1)[1].split(".")[0])
        self.assertLess(int(twisted.__version__.split(".")[0]), cap)
