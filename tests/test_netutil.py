"""
Tests for L{suite.netutil}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.netutil import boundPort, isIPAddress, isLoopbackHost, noDelay


class _TCP(StringTransport):
    def __init__(self, fail: BaseException | None = None) -> None:
        super().__init__()
        self.calls: list[bool] = []
        self.fail = fail

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.calls.append(enabled)
        if self.fail is not None:
            raise self.fail


class _Wrapper:
    def __init__(self, inner: object) -> None:
        self.transport = inner

    def __getattr__(self, name: str) -> object:
        # like TLS wrappers: unknown attributes come from the wrapped one
        return getattr(self.transport, name)


class NoDelayTests(SynchronousTestCase):
    """
    L{noDelay} finds the TCP transport through wrappers.
    """

    def test_direct(self) -> None:
        """
        A TCP transport gets Nagle turned off.
        """
        t = _TCP()
        noDelay(t)
        self.assertEqual(t.calls, [True])

    def test_throughWrappers(self) -> None:
        """
        Two wrapping layers are looked through; the wrappers' proxied
        attribute is not mistaken for their own.
        """
        t = _TCP()
        noDelay(_Wrapper(_Wrapper(t)))
        self.assertEqual(t.calls, [True])

    def test_withoutOption(self) -> None:
        """
        A transport without the option, None, or a failing setter, is left
        alone without an error.
        """
        noDelay(StringTransport())
        noDelay(None)
        t = _TCP(OSError("not a TCP socket"))
        noDelay(t)
        self.assertEqual(t.calls, [True])


class IsIPAddressTests(SynchronousTestCase):
    """
    L{isIPAddress} accepts literal addresses only.
    """

    def test_addresses(self) -> None:
        """
        IPv4 and IPv6 literals are addresses; names, bracketed and empty
        strings are not.
        """
        for text in ("127.0.0.1", "::1", "2001:db8::5"):
            self.assertTrue(isIPAddress(text), text)
        for text in ("localhost", "[::1]", "", "1.2.3", "example.com"):
            self.assertFalse(isIPAddress(text), text)


@implementer(IListeningPort)
class _Port:
    def __init__(self, address: IAddress) -> None:
        self.address = address

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        pass

    def getHost(self) -> IAddress:
        return self.address


class BoundPortTests(SynchronousTestCase):
    """
    L{boundPort} reads the port number of an IP listener.
    """

    def test_ip(self) -> None:
        """
        TCP and UDP listeners on IPv4 or IPv6 give their port number.
        """
        self.assertEqual(boundPort(_Port(IPv4Address("TCP", "127.0.0.1", 8081))), 8081)
        self.assertEqual(boundPort(_Port(IPv6Address("UDP", "::1", 7946))), 7946)

    def test_notIP(self) -> None:
        """
        A listener on a unix socket has no port number: a L{TypeError} says so.
        """
        e = self.assertRaises(TypeError, boundPort, _Port(UNIXAddress("/tmp/x.sock")))
        self.assertIn("not an IP listener", str(e))


class LoopbackHostTests(SynchronousTestCase):
    def test_loopback(self) -> None:
        """
        C{localhost} and literal loopback addresses of either family are
        loopback; other addresses, names and bracketed forms are not.
        """
        for host in ["localhost", "127.0.0.1", "127.8.9.10", "::1"]:
            self.assertTrue(isLoopbackHost(host), host)
        for host in ["0.0.0.0", "10.0.0.1", "::", "[::1]", "example.org", "", "localhost.example"]:
            self.assertFalse(isLoopbackHost(host), host)
