"""
The Raft transport over real mTLS on loopback: node identity comes from the
certificate.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol, wrapClientTLS
from twisted.trial.unittest import TestCase

from suite.pki.endpoints import TLSServerEndpoint
from suite.pki.load import loadBundle
from suite.pki.tls import clientContextFactory, serverContextFactory
from suite.raft.messages import Heartbeat, Message, encodeMessage
from suite.raft.transport import LENGTH, FrameProtocol, RaftTransport
from tests.raft.cluster import makeCluster
from tests.support.process import freePort, waitUntil


class Sender(FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class MutualTLSTests(TestCase):
    """
    A listener with a node bundle accepts known nodes and rejects others.
    """

    async def setUpServer(self) -> tuple[RaftTransport, list[Message], int, list[Any], str]:
        base = self.mktemp()
        specs, clientDir = makeCluster(base, 2, freePort)
        received: list[Message] = []
        owner = RaftTransport("n1", reactor, lambda a, f: None, {"n2": "127.0.0.1:1"}, secure=True)
        owner.setReceiver(received.append)
        server = TLSServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
            serverContextFactory(loadBundle(specs[0].certDir), trustClientCA=True),
            reactor,
        )
        port = await server.listen(owner.serverFactory())
        self.addCleanup(port.stopListening)
        return owner, received, port.getHost().port, specs, clientDir  # type: ignore[attr-defined]

    async def send(self, certDir: str, port: int, message: Message) -> Sender:
        creator = clientContextFactory(loadBundle(certDir), ipAddress="127.0.0.1")
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        proto = await connectProtocol(endpoint, Sender())
        frame = encodeMessage(message)
        proto.transport.write(LENGTH.pack(len(frame)) + frame)
        return proto

    async def test_knownNodeDelivered(self) -> None:
        """
        A frame from n2 over a connection with n2's certificate is delivered.
        """
        owner, received, port, specs, _ = await self.setUpServer()
        proto = await self.send(specs[1].certDir, port, Heartbeat("n2", "n1", 1, 0, 0))
        await waitUntil(lambda: received, "the heartbeat to be delivered", 10, 0.02)
        self.assertEqual(received, [Heartbeat("n2", "n1", 1, 0, 0)])
        proto.transport.loseConnection()  # type: ignore[union-attr]
        await proto.lost

    async def test_unknownCertificateRejected(self) -> None:
        """
        A valid certificate naming no known node is disconnected and its
        frames are never delivered, even when they claim to be from n2.
        """
        owner, received, port, specs, clientDir = await self.setUpServer()
        proto = await self.send(clientDir, port, Heartbeat("n2", "n1", 1, 0, 0))
        await proto.lost
        self.assertEqual(received, [])
