"""
The start-up barrier every daemon's listeners report to: a daemon is
started (one C{started} line, systemd C{READY=1}) only when every listener
is listening, and the first one that cannot bind is one critical line
naming its flag, address and reason, then exit status 1 under twistd.

L{GuardedEndpointService} is an endpoint service whose bind the barrier
watches; L{watchListening} registers any other bind.  The names are also
importable from L{suite.daemon}, the daemons' front door.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "BARRIER_ATTRIBUTE",
    "StartupBarrier",
    "barrierFor",
    "watchListening",
    "GuardedEndpointService",
    "listenFailureReason",
    "boundDescription",
]

log = Logger(namespace="suite.daemon")


#: The attribute of a daemon's root service holding its L{StartupBarrier}.
BARRIER_ATTRIBUTE = "startupBarrier"


def listenFailureReason(failure: Failure | BaseException) -> str:
    """
    The reason a listener could not bind, in the words an operator expects
    (Twisted reports a unix socket held by a live process as a lock it
    cannot acquire).
    """
    error = failure.value if isinstance(failure, Failure) else failure
    socketError = getattr(error, "socketError", None)
    text = str(socketError) if socketError is not None else str(error)
    if "Cannot acquire lock" in text or "Cannot acquire lock" in str(error):
        return "address already in use (another process listens on this socket)"
    if isinstance(socketError, OSError) and socketError.strerror:
        return socketError.strerror.lower()
    return " ".join(text.split()) or error.__class__.__name__


#: The port 0 of a listener description (C{tcp:0:interface=...},
#: C{port=0}, C{127.0.0.1:0}, C{[::1]:0}): the OS chooses the port.
_ZERO_PORT = re.compile(r"^(?:tcp6?|ssl|udp):0(?=:|$)|(?<=port=)0(?=:|$)|(?<=:)0$")


def boundDescription(description: str, port: Any) -> str:
    """
    C{description} of a listener that asked for port 0 with the port the
    OS chose (read from the listening C{port}'s C{getHost()}) in its place;
    any other description unchanged.
    """
    getHost = getattr(port, "getHost", None)
    if getHost is None:
        return description
    try:
        number = getattr(getHost(), "port", None)
    except Exception:  # only makes the description more precise
        return description
    if not isinstance(number, int) or number <= 0:
        return description
    return _ZERO_PORT.sub(lambda m: m.group(0)[:-1] + str(number), description, count=1)


def _hardExit(code: int, pidfile: str | None) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if pidfile:
        try:
            os.unlink(pidfile)
        except OSError:
            pass
    os._exit(code)


def _notifySystemd(state: bytes, environ: Mapping[str, str]) -> None:
    """
    Tell systemd (C{Type=notify} units) about C{state}, when
    C{NOTIFY_SOCKET} names a socket; otherwise do nothing.
    """
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(state)
    except OSError as e:
        log.warn("cannot notify systemd on {path}: {error}", path=path, error=e)


class StartupBarrier:
    """
    The start-up barrier of one daemon: every listener registers the
    Deferred of its bind (L{watchListening}); once the reactor runs and every
    registered listener is listening, the daemon logs one C{started} line
    naming them, tells systemd C{READY=1} and fires L{whenStarted}.  The
    first listener that cannot bind is one critical line naming its flag,
    its address and the reason; under twistd the process then stops with
    exit status 1, so a supervisor sees the failure instead of a
    half-started daemon.

    @ivar fatal: end the process with exit status 1 on failure (true when
        run by twistd; services built by tests only log).
    @ivar stopOnFailure: stop the reactor on failure (by default when
        C{fatal}); a runner that is not twistd checks L{failed} afterwards.
    """

    def __init__(
        self,
        prog: str,
        reactor: Any = None,
        fatal: bool = False,
        pidfile: str | None = None,
        environ: Mapping[str, str] | None = None,
        stopOnFailure: bool | None = None,
    ) -> None:
        self.prog = prog
        self.reactor = reactor
        self.fatal = fatal
        self.stopOnFailure = fatal if stopOnFailure is None else stopOnFailure
        self.pidfile = pidfile
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.listening: list[str] = []
        self.failed: str | None = None
        self._pending = 0
        self._sealed = False
        self._done = False
        self._waiters: list[Deferred[list[str]]] = []

    def expect(self, what: str, description: str, d: Deferred[Any]) -> Deferred[Any]:
        """
        Wait for the listener C{what} (its flag or key) binding
        C{description}; C{d} fires with the listening port or fails.  The
        result passes through unchanged; a failure is consumed here.
        """
        self._pending += 1

        def listened(port: Any) -> Any:
            self._pending -= 1
            # a listener asked for port 0 is named with the port it got
            self.listening.append(f"{boundDescription(description, port)} ({what})")
            self._check()
            return port

        def failed(f: Failure) -> None:
            self._pending -= 1
            self.fail(what, f"cannot listen on {description}: {listenFailureReason(f)}")

        return d.addCallbacks(listened, failed)

    def fail(self, what: str, reason: str) -> None:
        """
        Start-up failed: one critical line, then (when fatal) stop with
        exit status 1.  Only the first failure is reported.
        """
        if self.failed is not None:
            return
        self.failed = f"{what}: {reason}"
        log.critical("{what}: {reason}", what=what, reason=reason, fatal=True)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(RuntimeError(self.failed))
        reactor = self.reactor
        if reactor is None or not (self.fatal or self.stopOnFailure):
            return
        if self.fatal:
            reactor.addSystemEventTrigger("after", "shutdown", _hardExit, 1, self.pidfile)
        if getattr(reactor, "running", False):
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    def whenStarted(self) -> Deferred[list[str]]:
        """
        A Deferred firing with the listeners' descriptions once every one
        listens (failing if one cannot).
        """
        d: Deferred[list[str]] = Deferred()
        if self.failed is not None:
            d.errback(RuntimeError(self.failed))
        elif self._done:
            d.callback(list(self.listening))
        else:
            self._waiters.append(d)
        return d

    def attach(self, root: IService) -> StartupBarrier:
        """
        Become the barrier of the daemon whose root service is C{root}, and
        seal once the reactor runs (after twistd started every service):
        from then on, the daemon is started when nothing is pending.
        """
        setattr(root, BARRIER_ATTRIBUTE, self)
        reactor = self.reactor
        if getattr(reactor, "running", False) and hasattr(reactor, "callLater"):
            reactor.callLater(0, self._seal)
        elif reactor is not None and hasattr(reactor, "callWhenRunning"):
            reactor.callWhenRunning(self._seal)
        else:
            self._seal()
        return self

    def _seal(self) -> None:
        self._sealed = True
        self._check()

    def _check(self) -> None:
        if not self._sealed or self._pending or self._done or self.failed is not None:
            return
        self._done = True
        if self.listening:
            log.info(
                "{prog} started: listening on {listeners}",
                prog=self.prog,
                listeners=", ".join(self.listening),
            )
        else:
            log.info("{prog} started", prog=self.prog)
        _notifySystemd(b"READY=1", self.environ)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(list(self.listening))


def barrierFor(service: IService) -> StartupBarrier | None:
    """
    The L{StartupBarrier} of the daemon C{service} belongs to: the one
    attached to C{service} or to any of its parents.
    """
    node: Any = service
    while node is not None:
        found = getattr(node, BARRIER_ATTRIBUTE, None)
        if isinstance(found, StartupBarrier):
            return found
        node = getattr(node, "parent", None)
    return None


def watchListening(
    service: IService,
    what: str,
    description: str,
    d: Deferred[Any],
    reactor: Any = None,
) -> Deferred[Any]:
    """
    Register the bind C{d} of the listener C{what} (a flag or key) on
    C{description} with the barrier of C{service}'s daemon.  Without a
    barrier (a service built outside a daemon), a failure is logged as one
    critical line and the reactor, when given, is stopped.
    """
    barrier = barrierFor(service)
    if barrier is not None:
        return barrier.expect(what, description, d)

    def failed(f: Failure) -> None:
        log.critical(
            "{what}: cannot listen on {endpoint}: {reason}",
            what=what,
            endpoint=description,
            reason=listenFailureReason(f),
        )
        if reactor is not None and hasattr(reactor, "stop"):
            if getattr(reactor, "running", False):
                reactor.stop()
            else:
                reactor.callWhenRunning(reactor.stop)

    return d.addErrback(failed)


class GuardedEndpointService(StreamServerEndpointService):
    """
    A L{StreamServerEndpointService} whose bind is watched by the daemon's
    L{StartupBarrier}: a port that cannot be bound fails start-up with one
    line naming C{flag} and C{description} instead of an unhandled error.
    """

    def __init__(self, endpoint: Any, factory: Any, flag: str, description: str, reactor: Any = None) -> None:
        super().__init__(endpoint, factory)
        self.flag = flag
        self.description = description
        self.reactor = reactor
        self.port: Any = None

    def privilegedStartService(self) -> None:
        if self._waitingForPort is not None:
            return
        Service.privilegedStartService(self)
        self._waitingForPort = self.endpoint.listen(self.factory)

        def listened(port: Any) -> Any:
            self.port = port
            return port

        self._waitingForPort.addCallback(listened)
        watchListening(self, self.flag, self.description, self._waitingForPort, self.reactor)

    def startService(self) -> None:
        Service.startService(self)
        if self._waitingForPort is None:
            self.privilegedStartService()

    def stopService(self) -> Any:
        d = self._waitingForPort
        Service.stopService(self)
        if d is None:
            return None
        self._waitingForPort = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        if not d.called:
            d.cancel()
        return None
