"""
Tests for the real UDP/TCP transport on loopback.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.gossip.interfaces import IGossipTransport, IPacketReceiver
from suite.gossip.udp import NetworkTransport
from tests.support.process import freePort


@implementer(IPacketReceiver)
class Receiver:
    def __init__(self, reply: bytes | None = b"pong") -> None:
        self.packets: Deferred[tuple[bytes, Any]] = Deferred()
        self.states: list[bytes] = []
        self.reply = reply

    def packetReceived(self, data: bytes, source: tuple[str, int]) -> None:
        if not self.packets.called:
            self.packets.callback((data, source))

    def streamComplete(self, data: bytes) -> bool:
        # A test framing: a message ends with a full stop.
        return data.endswith(b".")

    def stateReceived(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        self.states.append(data)
        return self.reply


class NetworkTransportTests(TestCase):
    """
    Datagrams and push-pull streams through the real reactor.
    """

    timeout = 20

    def transport(self, receiver: Receiver, **kw: Any) -> NetworkTransport:
        t = NetworkTransport(reactor, "127.0.0.1", freePort(), timeout=2.0, **kw)
        t.startListening(receiver)
        self.addCleanup(t.stopListening)
        return t

    def test_interface(self) -> None:
        """
        It provides IGossipTransport.
        """
        self.assertTrue(verifyObject(IGossipTransport, NetworkTransport(reactor, "127.0.0.1", 0)))

    async def test_datagram(self) -> None:
        """
        A packet arrives with its source address.
        """
        ra, rb = Receiver(), Receiver()
        a, b = self.transport(ra), self.transport(rb)
        a.sendPacket(("127.0.0.1", b.port), b"hello")
        data, source = await rb.packets
        self.assertEqual((data, source), (b"hello", ("127.0.0.1", a.port)))

    def test_packetLimit(self) -> None:
        """
        Sending more than the packet limit is a programming error.
        """
        a = self.transport(Receiver(), maxPacketBytes=100)
        self.assertRaises(ValueError, a.sendPacket, ("127.0.0.1", 9), b"x" * 101)

    async def test_exchange(self) -> None:
        """
        A state exchange delivers the request once the receiver says it is
        complete, and returns the reply (complete, or ended by the peer
        closing the stream).
        """
        ra, rb = Receiver(), Receiver(b"state-b.")
        a, b = self.transport(ra), self.transport(rb)
        reply = await a.exchangeState(("127.0.0.1", b.port), b"state-a" * 1000 + b".")
        self.assertEqual(reply, b"state-b.")
        self.assertEqual(rb.states, [b"state-a" * 1000 + b"."])
        rb.reply = b"unterminated"
        reply = await a.exchangeState(("127.0.0.1", b.port), b"again.")
        self.assertEqual(reply, b"unterminated")

    async def test_noReply(self) -> None:
        """
        A receiver that refuses (returns None) closes the stream: the
        exchange fails.
        """
        a, b = self.transport(Receiver()), self.transport(Receiver(None))
        with self.assertRaises(ConnectionDone):
            await a.exchangeState(("127.0.0.1", b.port), b"x.")

    async def test_refused(self) -> None:
        """
        An exchange with a closed port fails.
        """
        a = self.transport(Receiver())
        with self.assertRaises(ConnectionRefusedError):
            await a.exchangeState(("127.0.0.1", freePort()), b"x")

    async def test_oversizedFrame(self) -> None:
        """
        A stream growing past the state limit without completing a message
        is closed without calling the receiver.
        """
        rb = Receiver()
        b = self.transport(rb, maxStateBytes=1000)

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
                try:
                    s.sendall(b"x" * 5000)
                except OSError:
                    return b""
                try:
                    return s.recv(10)
                except ConnectionResetError:
                    return b""

        from twisted.internet.threads import deferToThread

        self.assertEqual(await deferToThread(client), b"")
        self.assertEqual(rb.states, [])


class MutualTLSTests(TestCase):
    """
    Push-pull over mTLS with suite.pki's connection creators.
    """

    timeout = 30

    async def test_exchangeOverTLS(self) -> None:
        """
        Two transports with node certificates from one CA exchange state; a
        transport without TLS cannot talk to them.
        """
        import os

        from suite.pki.ca import initBundle, writeNodeCertificate
        from suite.pki.load import loadBundle
        from suite.pki.tls import clientContextFactory, serverContextFactory

        base = self.mktemp()
        first = initBundle(os.path.join(base, "a"), ["127.0.0.1"], commonName="a")
        writeNodeCertificate(first, os.path.join(base, "b"), ["127.0.0.1"], commonName="b")
        transports = []
        receivers = []
        for name in ("a", "b"):
            bundle = loadBundle(os.path.join(base, name))

            def dial(host: str, bundle: Any = bundle) -> Any:
                return clientContextFactory(bundle, ipAddress=host)

            r = Receiver(f"state-{name}.".encode())
            t = NetworkTransport(
                reactor,
                "127.0.0.1",
                freePort(),
                timeout=5.0,
                serverTLS=serverContextFactory(bundle),
                clientTLS=dial,
            )
            t.startListening(r)
            self.addCleanup(t.stopListening)
            transports.append(t)
            receivers.append(r)
        a, b = transports
        self.assertEqual(await a.exchangeState(("127.0.0.1", b.port), b"state-a."), b"state-b.")
        self.assertEqual(receivers[1].states, [b"state-a."])
        plain = NetworkTransport(reactor, "127.0.0.1", freePort(), timeout=2.0)
        plain.startListening(Receiver())
        self.addCleanup(plain.stopListening)
        with self.assertRaises(Exception):  # noqa: B017 - a TLS alert or a close, depending on timing
            await plain.exchangeState(("127.0.0.1", b.port), b"x.")
        self.assertEqual(receivers[1].states, [b"state-a."])
