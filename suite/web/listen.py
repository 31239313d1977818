"""
Listening helpers every daemon can use: C{HOST:PORT} binds to endpoint
strings, and a service that listens on an endpoint while running (plain
HTTP on loopback or a unix socket only, unless remote access is asked for
or TLS is on), failing loudly when it cannot.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.daemon import ConfigError, barrierFor
from suite.pki.endpoints import HandshakeDeadlineFactory
from suite.web.endpoint import EndpointError, loopbackEndpoint

__all__ = ["parseHostPort", "hostPortEndpoint", "listenService", "ListenerService"]

log = Logger(namespace="suite.web.listen")


def parseHostPort(value: str, name: str) -> tuple[str, int]:
    """
    Split C{HOST:PORT} (C{[V6]:PORT} for IPv6).

    @param name: the flag or variable named in the error.
    @raise ConfigError: naming C{name} and the reason.
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{name}: {value!r} is not HOST:PORT ([V6ADDR]:PORT for IPv6)")
        portText = rest[1:]
    else:
        host, sep, portText = text.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(f"{name}: {value!r} is not HOST:PORT ([V6ADDR]:PORT for IPv6)")
    if not host:
        raise ConfigError(f"{name}: {value!r} has no host")
    try:
        port = int(portText)
    except ValueError:
        raise ConfigError(f"{name}: port {portText!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: port {port} is out of range 0-65535")
    return host, port


def hostPortEndpoint(host: str, port: int) -> str:
    """
    The server endpoint string listening on C{host}:C{port}.
    """
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return f"tcp:{port}:interface={host}"
    if addr.version == 6:
        return f"tcp6:{port}:interface=" + host.replace(":", "\\:")
    return f"tcp:{port}:interface={host}"


def listenService(
    description: str,
    factory: IProtocolFactory,
    reactor: Any,
    tlsContextFactory: Any = None,
    flag: str = "endpoint",
    allowRemote: bool | None = None,
    onListening: Callable[[IListeningPort], object] | None = None,
) -> ListenerService:
    """
    A service listening on endpoint C{description} with C{factory}, wrapped
    in TLS when C{tlsContextFactory} (an OpenSSL server context factory) is
    given.  Without TLS the endpoint must be loopback or a unix socket (a TCP
    endpoint without C{interface=} gets 127.0.0.1).

    @param flag: the option or variable that gave C{description}, for errors.
    @param allowRemote: accept a non-loopback bind without TLS too (the
        operator asked for it); by default only TLS listeners may be remote.
    @param onListening: called with the port once listening (for a daemon's
        own start-up line).
    @raise ConfigError: naming C{flag}, for a malformed or refused endpoint.
    """
    try:
        remote = tlsContextFactory is not None if allowRemote is None else allowRemote
        checked = loopbackEndpoint(description, allowRemote=remote, what=flag)
        endpoint = serverFromString(reactor, checked)
    except EndpointError as e:
        raise ConfigError(str(e)) from None
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{flag} {description!r}: {e}") from None
    if tlsContextFactory is not None:
        # a connection that does not finish its handshake is closed in 10 s
        factory = HandshakeDeadlineFactory(tlsContextFactory, factory, reactor)
    return ListenerService(endpoint, factory, reactor, checked, flag, onListening)


class ListenerService(Service):
    """
    Listen on an endpoint while running.  A listen failure (port in use,
    permission) fails the daemon's start-up barrier (L{suite.daemon}): one
    critical line naming the flag, exit status 1.  Outside a daemon it is
    logged as one critical line and the reactor is stopped, so the daemon
    never runs without its listener.

    @ivar port: the listening port once listening (tests read its address).
    """

    def __init__(
        self,
        endpoint: Any,
        factory: IProtocolFactory,
        reactor: Any,
        description: str,
        flag: str,
        onListening: Callable[[IListeningPort], object] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.onListening = onListening
        self.factory = factory
        self.reactor = reactor
        self.description = description
        self.flag = flag
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        self.listening = self.endpoint.listen(self.factory)
        self.listening.addCallback(self._listened)
        barrier = barrierFor(self)
        if barrier is not None:
            barrier.expect(self.flag, self.description, self.listening)
        else:
            self.listening.addErrback(self._failed)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info("listening on {endpoint} ({flag})", endpoint=self.description, flag=self.flag)
        if self.onListening is not None:
            self.onListening(port)
        return port

    def _failed(self, failure: Failure) -> None:
        log.critical(
            "{flag}: cannot listen on {endpoint}: {reason}",
            flag=self.flag,
            endpoint=self.description,
            reason=failure.getErrorMessage(),
        )
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        if self.listening is not None and not self.listening.called:
            self.listening.cancel()
        return None
