"""
L{suite.web.client.collectBody}: an answer's body read within a limit.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from suite.web.client import BodyTooLarge, collectBody


class _Response:
    """
    Just enough of an C{IResponse}: delivers C{chunks}, then its end.
    """

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.length = sum(map(len, chunks))
        self.transport = StringTransport()

    def deliverBody(self, protocol: Protocol) -> None:
        protocol.makeConnection(self.transport)
        for chunk in self.chunks:
            protocol.dataReceived(chunk)
        protocol.connectionLost(Failure(ResponseDone()))


class CollectBodyTests(SynchronousTestCase):
    def test_withinLimit(self) -> None:
        """
        A body of up to the limit is returned whole.
        """
        response = _Response(b"ab", b"cd")
        self.assertEqual(self.successResultOf(collectBody(response, 4)), b"abcd")
        self.assertFalse(response.transport.disconnecting)

    def test_tooLarge(self) -> None:
        """
        One byte past the limit fails with L{BodyTooLarge}, a C{ValueError}
        naming the limit, and drops the connection.
        """
        response = _Response(b"ab", b"cde", b"f")
        failure = self.failureResultOf(collectBody(response, 4), BodyTooLarge)
        self.assertIsInstance(failure.value, ValueError)
        self.assertEqual(str(failure.value), "answer larger than 4 bytes")
        self.assertEqual(failure.value.limit, 4)
        self.assertTrue(response.transport.disconnecting)
