"""
The opt-in manhole: a Python prompt inside a running daemon, for live
debugging (C{--manhole ENDPOINT}).

Two forms, both local only:

  - C{tcp:PORT[:interface=127.0.0.1]}: an SSH server on loopback; a client
    logs in (any user name) with a key listed in the authorized_keys file
    given by C{--manhole-keys}, within L{LOGIN_GRACE_SECONDS} of connecting
    (then the connection is closed), and at most L{MAX_UNAUTHENTICATED}
    connections wait for their login at a time.  The host key is generated at start-up and
    kept in memory, or loaded from (and first written to) C{hostKeyPath}.
  - C{unix:PATH}: a telnet-speaking prompt on a unix socket created mode
    0600 (no password: the file mode is the access control).

The prompt's namespace holds the daemon's root service and main objects.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.application.service import IService
from twisted.conch import manhole, manhole_ssh, telnet
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import keys
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.cred import portal
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from suite.daemon import ConfigError, GuardedEndpointService
from suite.netutil import dropConnection, peerText
from suite.web.endpoint import EndpointError, checkSocketDirectory, isLoopbackHost, splitEndpoint

__all__ = [
    "ManholeError",
    "validateManholeEndpoint",
    "makeManholeService",
    "AuthorizedKeysFile",
    "loadOrCreateHostKey",
]

log = Logger()


class ManholeError(ConfigError, ValueError):
    """
    A manhole setting is wrong.  Both a L{ValueError} (what option parsers
    catch) and a L{ConfigError} (one line and exit code 2 at start-up).
    """


def _tcpInterface(args: list[str], kwargs: dict[str, str]) -> str:
    if "interface" in kwargs:
        return kwargs["interface"]
    if len(args) > 1:
        return args[1]
    return ""


def _readKeys(path: str) -> list[keys.Key]:
    with open(path, "rb") as f:
        return list(readAuthorizedKeyFile(f))


def validateManholeEndpoint(description: str, authorizedKeys: str | None) -> str:
    """
    Check a C{--manhole} value and return the endpoint string that will be
    listened on (a TCP endpoint without an interface gets
    C{interface=127.0.0.1}; a unix endpoint gets C{mode=600}).

    @raise ManholeError: (a C{ValueError}) one line naming what is wrong: an interface that is
        not loopback, a missing or unreadable or empty authorized_keys file
        for SSH, a unix socket mode other than 600, another endpoint type.
    """
    try:
        kind, args, kwargs = splitEndpoint(description)
    except EndpointError as e:
        raise ManholeError(str(e)) from None
    if kind == "tcp":
        if not args and "port" not in kwargs:
            raise ManholeError(f"{description!r}: a tcp manhole needs a port")
        port = kwargs.get("port", args[0] if args else "")
        if not port.isdigit() or int(port) > 65535:
            raise ManholeError(f"{description!r}: port {port!r} is not a number from 0 to 65535")
        interface = _tcpInterface(args, kwargs)
        if "interface" in kwargs and not interface:
            raise ManholeError(
                f"{description!r} listens on all interfaces, which is not loopback; use interface=127.0.0.1"
            )
        if interface and not isLoopbackHost(interface):
            raise ManholeError(
                f"{description!r} listens on {interface}, which is not loopback; "
                f"the manhole only listens on loopback or a unix socket"
            )
        if not authorizedKeys:
            raise ManholeError(
                f"{description!r} is an SSH manhole and needs an authorized_keys file (--manhole-keys)"
            )
        try:
            found = _readKeys(authorizedKeys)
        except OSError as e:
            raise ManholeError(f"--manhole-keys {authorizedKeys}: cannot read: {e.strerror or e}") from None
        if not found:
            raise ManholeError(f"--manhole-keys {authorizedKeys}: no usable public key in the file")
        if not interface:
            return f"{description}:interface=127.0.0.1"
        return description
    if kind == "unix":
        path = kwargs.get("address", args[0] if args else "")
        if not path:
            raise ManholeError(f"{description!r}: a unix manhole needs a socket path")
        mode = kwargs.get("mode")
        if mode is not None and mode.lstrip("0o") not in ("600", "0600"):
            raise ManholeError(
                f"{description!r}: the manhole socket must be mode 600 (owner only), not {mode}"
            )
        parent = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(parent):
            raise ManholeError(f"{description!r}: directory {parent} does not exist")
        try:
            checkSocketDirectory(path, "--manhole")
        except EndpointError as e:
            raise ManholeError(str(e)) from None
        if os.path.exists(path) and not stat.S_ISSOCK(os.stat(path).st_mode):
            raise ManholeError(f"{description!r}: {path} exists and is not a socket")
        return description if mode is not None else description + ":mode=600"
    raise ManholeError(
        f"{description!r}: the manhole listens on tcp:PORT:interface=127.0.0.1 (SSH) "
        f"or unix:PATH, not {kind!r}"
    )


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """
    Keys from one authorized_keys file, allowed for any user name.  The file
    is re-read at each login so keys can be changed without a restart.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def getAuthorizedKeys(self, username: bytes) -> Iterable[keys.Key]:
        try:
            return _readKeys(self.path)
        except OSError as e:
            log.error("manhole authorized_keys {path} unreadable: {error}", path=self.path, error=str(e))
            return []


def loadOrCreateHostKey(path: str | None = None) -> keys.Key:
    """
    Return the SSH host key: loaded from C{path}, or generated (ECDSA P-256)
    and, when C{path} is given, written there with mode 0600.

    @raise ManholeError: when C{path} holds something that is not a private key.
    """
    if path:
        fp = FilePath(path)
        if fp.exists():
            try:
                key: keys.Key = keys.Key.fromString(fp.getContent())
            except (keys.BadKeyError, keys.EncryptedKeyError, ValueError) as e:
                raise ManholeError(f"manhole host key {path}: not a usable private key ({e})") from None
            if key.isPublic():
                raise ManholeError(f"manhole host key {path}: holds a public key, not a private one")
            return key
    key = keys.Key(ec.generate_private_key(ec.SECP256R1()))
    if path:
        data = key.toString("OPENSSH")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return key


class _ManholeSession(manhole_ssh.TerminalSession):
    """
    A terminal session that follows window resizes and ends cleanly when the
    client sends EOF (Twisted's own raises C{NotImplementedError}).
    """

    _terminal: Any = None

    def openShell(self, proto: Any) -> None:
        self._terminal = self.transportFactory(
            proto,
            self.chainedProtocolFactory(),
            IConchUser(self.original),
            self.width,
            self.height,
        )

    def windowChanged(self, newWindowSize: tuple[int, int, int, int]) -> None:
        if self._terminal is not None:
            rows, cols = newWindowSize[:2]
            self._terminal.chainedProtocol.terminalProtocol.terminalSize(cols, rows)

    def eofReceived(self) -> None:
        if self._terminal is not None:
            self._terminal.proto.loseConnection()


@implementer(portal.IRealm)
class _ManholeRealm(manhole_ssh.TerminalRealm):
    sessionFactory = _ManholeSession

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        log.info("manhole SSH login as {user}", user=avatarId)
        return super().requestAvatar(avatarId, mind, *interfaces)


#: Seconds from an SSH connection's accept to a successful login; then it
#: is closed.  The manhole takes keys only, from a client on this host: key
#: exchange and a key login take well under a second, and the margin is for
#: an operator typing a key's passphrase (OpenSSH's LoginGraceTime of 120 s
#: also covers typing passwords, which the manhole has none of).
LOGIN_GRACE_SECONDS = 30.0
#: SSH connections that have not logged in yet, at most; further ones are
#: closed on accept until one logs in or goes (OpenSSH's MaxStartups starts
#: dropping at 10 as well).
MAX_UNAUTHENTICATED = 10


class _ManholeSSHTransport(SSHServerTransport):
    """
    The server side of an SSH connection that must log in within the
    factory's C{loginGraceTime} of its accept, and counts as
    unauthenticated (against C{maxUnauthenticated}) until it does.
    """

    factory: _ManholeSSHFactory
    _loginCall: Any = None
    _pending = False

    def connectionMade(self) -> None:
        factory = self.factory
        factory.unauthenticated += 1
        self._pending = True
        self._loginCall = factory.clock.callLater(factory.loginGraceTime, self._loginLate)
        super().connectionMade()

    def _loggedIn(self) -> None:
        if self._loginCall is not None and self._loginCall.active():
            self._loginCall.cancel()
        self._loginCall = None
        if self._pending:
            self._pending = False
            self.factory.released()

    def _loginLate(self) -> None:
        self._loginCall = None
        log.warn(
            "manhole: closing SSH connection from {peer}: no login within {seconds:g} seconds",
            peer=peerText(self.transport),
            seconds=self.factory.loginGraceTime,
        )
        dropConnection(self.transport)

    def setService(self, service: Any) -> None:
        # The user-auth service sets the avatar just before it starts the
        # connection service: the login succeeded.
        if hasattr(self, "avatar"):
            self._loggedIn()
        super().setService(service)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._loggedIn()
        super().connectionLost(reason)


class _ManholeSSHFactory(manhole_ssh.ConchFactory):
    """
    The SSH manhole's factory: connections past C{maxUnauthenticated} not
    yet logged in are closed on accept (one log line per run of them).
    """

    protocol = _ManholeSSHTransport

    def __init__(
        self,
        portal: portal.Portal,
        clock: IReactorTime,
        loginGraceTime: float = LOGIN_GRACE_SECONDS,
        maxUnauthenticated: int = MAX_UNAUTHENTICATED,
    ) -> None:
        super().__init__(portal)
        self.clock = clock
        self.loginGraceTime = loginGraceTime
        self.maxUnauthenticated = maxUnauthenticated
        self.unauthenticated = 0
        self._refusing = False

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if self.unauthenticated >= self.maxUnauthenticated:
            if not self._refusing:
                self._refusing = True
                log.warn(
                    "manhole: {count} SSH connections have not logged in yet; "
                    "closing new ones until one does or goes",
                    count=self.unauthenticated,
                )
            return None
        return super().buildProtocol(addr)

    def released(self) -> None:
        """
        A connection logged in or went: one slot more.
        """
        self.unauthenticated -= 1
        self._refusing = False


def _sshFactory(
    namespace: dict[str, Any],
    authorizedKeys: str,
    hostKey: keys.Key,
    clock: IReactorTime,
    loginGraceTime: float = LOGIN_GRACE_SECONDS,
    maxUnauthenticated: int = MAX_UNAUTHENTICATED,
) -> _ManholeSSHFactory:
    realm = _ManholeRealm()

    def chainedProtocolFactory() -> insults.ServerProtocol:
        return insults.ServerProtocol(manhole.ColoredManhole, namespace)

    # Twisted types this as the ServerProtocol class; any callable making one will do.
    realm.chainedProtocolFactory = chainedProtocolFactory  # type: ignore[assignment]
    checker = SSHPublicKeyChecker(AuthorizedKeysFile(authorizedKeys))
    factory = _ManholeSSHFactory(portal.Portal(realm, [checker]), clock, loginGraceTime, maxUnauthenticated)
    # Instance attributes: on ConchFactory these are shared class attributes.
    factory.publicKeys = {hostKey.sshType(): hostKey.public()}
    # Twisted annotates the values as bytes, but its SSH transport uses keys.Key objects.
    factory.privateKeys = {hostKey.sshType(): hostKey}  # type: ignore[dict-item]
    return factory


class _TelnetBootstrap(telnet.TelnetBootstrapProtocol):
    """
    Telnet option negotiation that tolerates clients which never answer
    (C{socat}, C{nc -U}): an unanswered or refused option, or a client that
    leaves mid-negotiation, is not an error worth a traceback.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        transport: Any = self.transport
        transport.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        transport.negotiationMap[telnet.LINEMODE] = self.telnet_LINEMODE
        for opt in (telnet.LINEMODE, telnet.NAWS, telnet.SGA):
            transport.do(opt).addErrback(self._negotiationFailed, opt)
        transport.will(telnet.ECHO).addErrback(self._negotiationFailed, telnet.ECHO)
        self.protocol = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        self.protocol.factory = getattr(self, "factory", None)
        self.protocol.makeConnection(self)

    def _negotiationFailed(self, failure: Failure, opt: bytes) -> None:
        log.debug(
            "manhole telnet option {opt!r} not negotiated: {why}",
            opt=opt,
            why=failure.getErrorMessage(),
        )


def _telnetFactory(namespace: dict[str, Any]) -> Factory:
    factory = ServerFactory()
    factory.protocol = lambda: telnet.TelnetTransport(
        _TelnetBootstrap,
        insults.ServerProtocol,
        manhole.ColoredManhole,
        namespace,
    )
    return factory


def _removeStaleSocket(path: str) -> None:
    """
    Remove a socket file nobody listens on any more (left by a crash); a
    live one is left alone, so listening fails with "address in use".
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("removing stale manhole socket {path}", path=path)
        with contextlib.suppress(OSError):
            os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


@implementer(IStreamServerEndpoint)
class _PrivateUnixEndpoint:
    """
    Listen on a unix endpoint with a umask that keeps the socket file owner-
    only from the moment it is created (not only after the chmod).
    """

    def __init__(self, wrapped: IStreamServerEndpoint, path: str) -> None:
        self._wrapped = wrapped
        self._path = path

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        _removeStaleSocket(self._path)
        old = os.umask(0o177)
        try:
            return self._wrapped.listen(protocolFactory)
        finally:
            os.umask(old)


def makeManholeService(
    description: str,
    namespace: dict[str, Any],
    authorizedKeys: str | None = None,
    reactor: Any = None,
    hostKeyPath: str | None = None,
) -> IService:
    """
    Build the manhole child service for C{description} (see the module
    docstring), with C{namespace} as the prompt's globals.

    @raise ManholeError: (a C{ValueError} and a L{ConfigError}) as
        L{validateManholeEndpoint}, prefixed with C{--manhole:}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    try:
        checked = validateManholeEndpoint(description, authorizedKeys)
    except ManholeError as e:
        raise ManholeError(f"--manhole: {e}") from None
    kind, _, _ = splitEndpoint(checked)
    endpoint: IStreamServerEndpoint
    factory: Factory
    if kind == "tcp":
        assert authorizedKeys is not None
        factory = _sshFactory(namespace, authorizedKeys, loadOrCreateHostKey(hostKeyPath), reactor)
        endpoint = serverFromString(reactor, checked)
    else:
        factory = _telnetFactory(namespace)
        _, args, kwargs = splitEndpoint(checked)
        path = kwargs.get("address", args[0] if args else "")
        endpoint = _PrivateUnixEndpoint(serverFromString(reactor, checked), path)
    service = GuardedEndpointService(endpoint, factory, "--manhole", checked)
    service.setName("manhole")
    log.info("manhole enabled on {endpoint}", endpoint=checked)
    return service
