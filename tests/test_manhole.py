"""
Tests for L{suite.manhole}, over real connections: the unix-socket telnet
manhole and the SSH manhole on loopback with public-key authentication.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.application.service import IService
from twisted.conch.ssh import channel, connection, keys, session, transport, userauth
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.daemon import ConfigError, DaemonOptions
from suite.manhole import (
    AuthorizedKeysFile,
    loadOrCreateHostKey,
    makeManholeService,
    validateManholeEndpoint,
)


class Thing:
    """
    A live object reachable from the manhole prompt.
    """

    value = 21


EXPRESSION = b"thing.value * 2 + sum(range(100))\r"
ANSWER = b"4992"


def newKey() -> keys.Key:
    return keys.Key(ec.generate_private_key(ec.SECP256R1()))


def listeningPort(service: IService) -> Any:
    return service._waitingForPort.result  # type: ignore[attr-defined]


class _Reader(Protocol):
    def __init__(self, expression: bytes, answer: bytes) -> None:
        self.expression = expression
        self.answer = answer
        self.data = b""
        self.found: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        first = not self.data
        self.data += data
        if first:
            assert self.transport is not None
            self.transport.write(self.expression + b"\n")
        if self.answer in self.data and not self.found.called:
            self.found.callback(self.data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost.callback(None)


class UnixManholeTests(TestCase):
    """
    The unauthenticated manhole on a 0600 unix socket.
    """

    async def test_evaluate(self) -> None:
        """
        Connect to the socket, evaluate an expression over the namespace and
        read the answer; the socket file is mode 0600.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "manhole.sock")
        service = makeManholeService(f"unix:{path}", {"thing": Thing()}, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))

        reader = _Reader(EXPRESSION, ANSWER)
        protocol = await connectProtocol(UNIXClientEndpoint(reactor, path), reader)
        output = await reader.found
        self.assertIn(b">>> ", output)
        self.assertIn(b"\n" + ANSWER, output)
        protocol.transport.loseConnection()
        await reader.lost

    async def test_staleSocket(self) -> None:
        """
        A socket file left behind by a crashed process does not stop the
        manhole from starting.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "manhole.sock")
        import socket

        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        service = makeManholeService(f"unix:{path}", {}, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = listeningPort(service)
        self.assertTrue(port.connected)


class _ClientTransport(transport.SSHClientTransport):
    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        self.factory.hostKeys.append(keys.Key.fromString(hostKey))
        return succeed(True)

    def connectionSecure(self) -> None:
        self.requestService(_UserAuth(b"operator", _Connection(self.factory), self.factory))


class _UserAuth(userauth.SSHUserAuthClient):
    def __init__(self, user: bytes, instance: connection.SSHConnection, factory: Any) -> None:
        super().__init__(user, instance)
        self.key = factory.clientKey
        self.offered = False

    def getPublicKey(self) -> keys.Key | None:
        if self.offered:
            return None
        self.offered = True
        return self.key.public()

    def getPrivateKey(self) -> Deferred[keys.Key]:
        return succeed(self.key)


class _Connection(connection.SSHConnection):
    def __init__(self, factory: Any) -> None:
        super().__init__()
        self.clientFactory = factory

    def serviceStarted(self) -> None:
        self.clientFactory.authenticated.callback(True)
        self.openChannel(_Shell(self.clientFactory, conn=self))


class _Shell(channel.SSHChannel):
    name = b"session"

    def __init__(self, factory: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.clientFactory = factory
        self.output = b""
        self.sent = False

    def channelOpen(self, specificData: bytes) -> None:
        pty = session.packRequest_pty_req(b"xterm", (24, 80, 0, 0), b"")
        conn: Any = self.conn
        d = conn.sendRequest(self, b"pty-req", pty, wantReply=True)
        d.addCallback(lambda _: conn.sendRequest(self, b"shell", b"", wantReply=True))
        d.addErrback(self.clientFactory.answer.errback)

    def dataReceived(self, data: bytes) -> None:
        self.output += data
        if not self.sent and b">>> " in self.output:
            self.sent = True
            self.write(EXPRESSION)
        if ANSWER in self.output and not self.clientFactory.answer.called:
            self.clientFactory.answer.callback(self.output)
            self.loseConnection()


class _ClientFactory(Factory):
    protocol = _ClientTransport

    def __init__(self, clientKey: keys.Key) -> None:
        self.clientKey = clientKey
        self.hostKeys: list[keys.Key] = []
        self.authenticated: Deferred[bool] = Deferred()
        self.answer: Deferred[bytes] = Deferred()


class SSHManholeTests(TestCase):
    """
    The SSH manhole on loopback.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.clientKey = newKey()
        self.keysFile = os.path.join(self.directory, "authorized_keys")
        with open(self.keysFile, "wb") as f:
            f.write(b"# operators\n\n" + self.clientKey.public().toString("OPENSSH") + b" ops@example\n")

    def startManhole(self, **kw: Any) -> int:
        service = makeManholeService(
            "tcp:0:interface=127.0.0.1",
            {"thing": Thing()},
            authorizedKeys=self.keysFile,
            reactor=reactor,
            **kw,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return int(listeningPort(service).getHost().port)

    async def connect(self, port: int, key: keys.Key) -> tuple[_ClientFactory, Any]:
        factory = _ClientFactory(key)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        protocol: Any = await endpoint.connect(factory)
        lost: Deferred[None] = Deferred()
        original = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            original(reason)
            lost.callback(None)

        protocol.connectionLost = connectionLost
        self.addCleanup(lambda: lost if protocol.transport.connected else None)
        self.addCleanup(protocol.transport.loseConnection)
        factory.lost = lost  # type: ignore[attr-defined]
        return factory, protocol

    async def test_evaluate(self) -> None:
        """
        Log in with an authorized key (any user name) and evaluate an
        expression over the namespace.
        """
        hostKeyPath = os.path.join(self.directory, "host_key")
        port = self.startManhole(hostKeyPath=hostKeyPath)
        factory, protocol = await self.connect(port, self.clientKey)
        self.assertTrue(await factory.authenticated)
        output = await factory.answer
        self.assertIn(b"\n" + ANSWER, output)
        self.assertEqual(stat.S_IMODE(os.stat(hostKeyPath).st_mode), 0o600)
        self.assertEqual(factory.hostKeys, [loadOrCreateHostKey(hostKeyPath).public()])
        protocol.transport.loseConnection()
        await factory.lost  # type: ignore[attr-defined]

    async def test_wrongKeyRefused(self) -> None:
        """
        A key not in the authorized_keys file is refused: the connection is
        closed without a session.
        """
        port = self.startManhole()
        factory, protocol = await self.connect(port, newKey())
        await factory.lost  # type: ignore[attr-defined]
        self.assertFalse(factory.authenticated.called)
        self.assertFalse(factory.answer.called)


class _SSHProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.sent = False
        self.answered: Deferred[bytes] = Deferred()
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        assert self.transport is not None
        if not self.sent and b">>> " in self.output:
            self.sent = True
            self.transport.write(EXPRESSION)
        if ANSWER in self.output and not self.answered.called:
            self.answered.callback(self.output)
            self.transport.closeStdin()

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


class OpenSSHClientTests(TestCase):
    """
    The stock OpenSSH client logs in to the manhole too.
    """

    if shutil.which("ssh") is None:
        skip = "no ssh binary"

    async def test_openssh(self) -> None:
        """
        C{ssh -tt} with an Ed25519 key evaluates an expression; closing its
        input ends the session cleanly.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        identity = os.path.join(directory, "id")
        with open(os.open(identity, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key.toString("OPENSSH"))
        authorized = os.path.join(directory, "authorized_keys")
        with open(authorized, "wb") as f:
            f.write(key.public().toString("OPENSSH") + b"\n")
        service = makeManholeService(
            "tcp:0:interface=127.0.0.1", {"thing": Thing()}, authorizedKeys=authorized, reactor=reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        port = listeningPort(service).getHost().port
        protocol = _SSHProcess()
        argv = [
            shutil.which("ssh") or "ssh", "-tt", "-F", "/dev/null", "-i", identity, "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            "operator@127.0.0.1",
        ]  # fmt: skip
        process = reactor.spawnProcess(protocol, argv[0], argv, env={"HOME": directory})
        self.addCleanup(lambda: protocol.ended if protocol.ended.called else _kill(process, protocol))
        output = await protocol.answered
        self.assertIn(b"\n" + ANSWER, output)
        await protocol.ended


def _kill(process: Any, protocol: _SSHProcess) -> Deferred[int | None]:
    with contextlib.suppress(Exception):
        process.signalProcess("KILL")
    return protocol.ended


class ValidationTests(SynchronousTestCase):
    """
    C{--manhole} values are checked before anything listens.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.keysFile = os.path.join(self.directory, "authorized_keys")
        with open(self.keysFile, "wb") as f:
            f.write(newKey().public().toString("OPENSSH") + b"\n")

    def test_nonLoopbackRefused(self) -> None:
        """
        An SSH manhole on a non-loopback interface is refused, naming it.
        """
        for description in (
            "tcp:2222:interface=0.0.0.0",
            "tcp:2222:10.0.0.5",
            "tcp:2222:interface=\\:\\:",
            "tcp:2222:interface=",
        ):
            e = self.assertRaises(ValueError, validateManholeEndpoint, description, self.keysFile)
            self.assertIn("not loopback", str(e))
            self.assertIn(repr(description), str(e))
        self.assertRaises(
            ValueError, makeManholeService, "tcp:2222:interface=0.0.0.0", {}, self.keysFile, reactor
        )

    def test_defaultsToLoopback(self) -> None:
        """
        Without an interface the SSH manhole listens on 127.0.0.1; a unix
        socket gets mode 600.
        """
        self.assertEqual(validateManholeEndpoint("tcp:2222", self.keysFile), "tcp:2222:interface=127.0.0.1")
        self.assertEqual(
            validateManholeEndpoint("tcp:2222:interface=127.0.0.1", self.keysFile),
            "tcp:2222:interface=127.0.0.1",
        )
        path = os.path.join(self.directory, "m.sock")
        self.assertEqual(validateManholeEndpoint(f"unix:{path}", None), f"unix:{path}:mode=600")

    def test_sshNeedsKeys(self) -> None:
        """
        SSH needs a readable authorized_keys file with at least one key.
        """
        e = self.assertRaises(ValueError, validateManholeEndpoint, "tcp:2222", None)
        self.assertIn("--manhole-keys", str(e))
        missing = os.path.join(self.directory, "nope")
        e = self.assertRaises(ValueError, validateManholeEndpoint, "tcp:2222", missing)
        self.assertIn(missing, str(e))
        empty = os.path.join(self.directory, "empty")
        open(empty, "w").close()
        e = self.assertRaises(ValueError, validateManholeEndpoint, "tcp:2222", empty)
        self.assertIn("no usable public key", str(e))

    def test_badUnix(self) -> None:
        """
        A unix socket with a looser mode, in a missing directory or over a
        regular file is refused.
        """
        path = os.path.join(self.directory, "m.sock")
        self.assertRaises(ValueError, validateManholeEndpoint, f"unix:{path}:mode=666", None)
        self.assertRaises(ValueError, validateManholeEndpoint, f"unix:{self.directory}/no/m.sock", None)
        shared = os.path.join(self.directory, "shared")
        os.makedirs(shared)
        os.chmod(shared, 0o1777)
        e = self.assertRaises(ValueError, validateManholeEndpoint, f"unix:{shared}/m.sock", None)
        self.assertIn("writable by everyone", str(e))
        self.assertRaises(ValueError, validateManholeEndpoint, f"unix:{self.keysFile}", None)

    def test_otherTypesRefused(self) -> None:
        """
        Only tcp and unix endpoints are accepted; a bad port is named.
        """
        self.assertRaises(ValueError, validateManholeEndpoint, "ssl:2222", self.keysFile)
        e = self.assertRaises(ValueError, validateManholeEndpoint, "tcp:http", self.keysFile)
        self.assertIn("'http'", str(e))

    def test_serviceErrorIsConfigError(self) -> None:
        """
        C{makeManholeService} errors are both ValueErrors and one-line
        ConfigErrors naming C{--manhole}, so start-up exits with code 2.
        """
        e = self.assertRaises(
            ConfigError, makeManholeService, "tcp:2222:interface=10.0.0.1", {}, self.keysFile, reactor
        )
        self.assertIsInstance(e, ValueError)
        self.assertTrue(str(e).startswith("--manhole: 'tcp:2222:interface=10.0.0.1' listens on 10.0.0.1"))

    def test_badHostKeyFile(self) -> None:
        """
        A host key path holding garbage or a public key is refused, naming it.
        """
        garbage = os.path.join(self.directory, "garbage")
        with open(garbage, "w") as f:
            f.write("not a key\n")
        e = self.assertRaises(ConfigError, loadOrCreateHostKey, garbage)
        self.assertIn(garbage, str(e))
        public = os.path.join(self.directory, "public")
        with open(public, "wb") as f:
            f.write(newKey().public().toString("OPENSSH"))
        e = self.assertRaises(ConfigError, loadOrCreateHostKey, public)
        self.assertIn("public key", str(e))

    def test_daemonOptions(self) -> None:
        """
        The shared daemon options turn a bad C{--manhole} into a one-line
        ConfigError naming the flag.
        """
        options = DaemonOptions(environ={})
        e = self.assertRaises(
            ConfigError,
            options.parseOptions,
            ["--manhole", "tcp:2222:interface=0.0.0.0", "--manhole-keys", self.keysFile],
        )
        self.assertTrue(str(e).startswith("--manhole: "))
        self.assertNotIn("\n", str(e))

    def test_authorizedKeysReread(self) -> None:
        """
        The authorized_keys file is read at each login, for any user name.
        """
        db = AuthorizedKeysFile(self.keysFile)
        self.assertEqual(len(list(db.getAuthorizedKeys(b"anyone"))), 1)
        with open(self.keysFile, "ab") as f:
            f.write(newKey().public().toString("OPENSSH") + b"\n")
        self.assertEqual(len(list(db.getAuthorizedKeys(b"root"))), 2)
        os.remove(self.keysFile)
        self.assertEqual(list(db.getAuthorizedKeys(b"root")), [])

    def test_hostKey(self) -> None:
        """
        Without a path the host key is fresh each time; with one it is
        written once (0600) and reused.
        """
        self.assertNotEqual(loadOrCreateHostKey().public(), loadOrCreateHostKey().public())
        path = os.path.join(self.directory, "host")
        first = loadOrCreateHostKey(path)
        self.assertEqual(loadOrCreateHostKey(path), first)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)


class InterfaceTests(SynchronousTestCase):
    """
    The manhole's small implementations provide their interfaces.
    """

    def test_verify(self) -> None:
        """
        L{AuthorizedKeysFile} is an C{IAuthorizedKeysDB}; the private unix
        endpoint is an C{IStreamServerEndpoint}.
        """
        from twisted.conch.checkers import IAuthorizedKeysDB
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.interfaces import IStreamServerEndpoint
        from twisted.internet.testing import MemoryReactor
        from zope.interface.verify import verifyObject

        from suite.manhole import _PrivateUnixEndpoint

        self.assertTrue(verifyObject(IAuthorizedKeysDB, AuthorizedKeysFile("/nonexistent")))
        inner = serverFromString(MemoryReactor(), "unix:/tmp/x.sock:mode=600")
        self.assertTrue(verifyObject(IStreamServerEndpoint, _PrivateUnixEndpoint(inner, "/tmp/x.sock")))


class LoginDeadlineTests(SynchronousTestCase):
    """
    An SSH connection must log in within the grace time; at most
    C{maxUnauthenticated} wait for their login at a time.  Driven by a
    L{Clock} over in-memory transports.
    """

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from suite.manhole import _sshFactory

        directory = self.mktemp()
        os.makedirs(directory)
        self.clientKey = newKey()
        keysFile = os.path.join(directory, "authorized_keys")
        with open(keysFile, "wb") as f:
            f.write(self.clientKey.public().toString("OPENSSH") + b"\n")
        self.clock = Clock()
        self.factory = _sshFactory({"thing": Thing()}, keysFile, newKey(), self.clock, 30.0, 3)
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)

    def accept(self) -> tuple[Any, Any]:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        if proto is None:
            return None, None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        proto.makeConnection(transport)
        return proto, transport

    def test_silentClientClosed(self) -> None:
        """
        A client that sends nothing (or never finishes logging in) is cut
        30 s after the accept, with one line naming it.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        proto, transport = self.accept()
        proto.dataReceived(b"SSH-2.0-OpenSSH_9.6\r\n")
        self.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        lines = [e for e in events if "no login within" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["seconds"], 30.0)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.unauthenticated, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unauthenticatedBounded(self) -> None:
        """
        Past three connections waiting for their login, new ones are closed
        on accept until one of them goes.
        """
        accepted = [self.accept() for _ in range(3)]
        self.assertEqual(self.factory.unauthenticated, 3)
        self.assertEqual(self.accept(), (None, None))
        self.assertEqual(self.accept(), (None, None))
        proto, _ = accepted[0]
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.unauthenticated, 2)
        self.assertIsNotNone(self.accept()[0])
        self.assertEqual(self.factory.unauthenticated, 3)

    def test_loggedInKept(self) -> None:
        """
        A client that logs in with its key no longer counts against the
        limit, and its session outlives the grace time.
        """
        from twisted.test.iosim import connect, makeFakeClient, makeFakeServer

        server = self.factory.buildProtocol(None)
        clientFactory = _ClientFactory(self.clientKey)
        client = clientFactory.buildProtocol(None)
        pump = connect(server, makeFakeServer(server), client, makeFakeClient(client), greet=False)
        pump.flush()
        self.assertTrue(clientFactory.authenticated.called)
        self.assertEqual(self.factory.unauthenticated, 0)
        self.clock.advance(3600)
        pump.flush()
        self.assertFalse(server.transport.disconnecting)
        self.assertIn(ANSWER, self.successResultOf(clientFactory.answer))
