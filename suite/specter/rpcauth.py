"""
Authentication of the local RPC (C{--listen-rpc}).

A TCP connection proves it may use the RPC with the node's token: a random
secret the server creates on first start in C{DATA/rpc.token} (mode 0600,
reused afterwards, never logged).  The client's first frame is the call

    [0, id, nil, "auth", [token]]

answered C{[1, id, true, true]}; the token is compared in constant time.
A unix socket connection is authenticated by its peer's uid instead
(C{SO_PEERCRED}): the server's own user or root, no token needed.

Before authentication a connection may send one frame of at most
L{HANDSHAKE_MAX} bytes.  A missing or wrong token, any other call first, an
oversized first frame or a unix peer of another user gets one error frame
(code C{unauthorized}, the message naming the client flag to give) and the
connection is closed; the refusal is logged naming the peer, at most once
per L{LOG_INTERVAL} seconds (the lines in between are counted).

Gate machine (L{GateInputs}): inputs C{peerTrusted}, C{peerRefused},
C{tokenAccepted}, C{tokenRefused}, C{call}, C{oversized}; states
Awaiting, Open, Closed.  Outputs act on L{GateCore}.
"""

from __future__ import annotations

import errno
import hmac
import os
import secrets
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.logger import Logger

from suite.daemon import ConfigError
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError

__all__ = [
    "AUTH_METHOD",
    "ENV_TOKEN_FILE",
    "GateCore",
    "GateInputs",
    "GateMachine",
    "HANDSHAKE_MAX",
    "LOG_INTERVAL",
    "NEEDS_TOKEN",
    "RefusalLog",
    "TOKEN_FILE",
    "clientToken",
    "listenerToken",
    "listenerTokenFile",
    "loadOrCreateToken",
    "peerUid",
    "readTokenFile",
    "trustedUid",
]

log = Logger()

#: the token's file in the server's data directory
TOKEN_FILE = "rpc.token"
#: the environment variable naming a client's token file
ENV_TOKEN_FILE = "SPECTER_RPC_TOKEN_FILE"
#: the method of the handshake frame
AUTH_METHOD = "auth"
#: the largest frame accepted before authentication
HANDSHAKE_MAX = 1024
#: at most one refusal line per this many seconds
LOG_INTERVAL = 10.0
#: random bytes in a token (hex-encoded in the file)
TOKEN_BYTES = 32
#: the hint every refusal of a missing or wrong token carries
NEEDS_TOKEN = (
    "this RPC needs the node's token: give the client --rpc-token-file DATA/rpc.token "
    f"(or env {ENV_TOKEN_FILE}; `specter kv` also takes --data DATA), or use a unix:// --listen-rpc"
)


# -- the token ----------------------------------------------------------------


def _check(flag: str, path: str, text: bytes) -> bytes:
    token = text.strip()
    if len(token) < 32 or len(token) > 256 or not token.isascii() or any(c <= 32 for c in token):
        raise ConfigError(f"{flag}: {path} does not hold an RPC token (32 to 256 printable characters)")
    return token


def loadOrCreateToken(dataDir: str, flag: str = "--data-dir") -> bytes:
    """
    The server's token in C{DATA/rpc.token}: read when the file exists
    (it must not be readable by other users), else created 0600 with
    L{TOKEN_BYTES} random bytes (written to a temporary file, synced and
    renamed into place).
    """
    path = os.path.join(dataDir, TOKEN_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _createToken(path, flag)
    except OSError as e:
        raise ConfigError(f"{flag}: cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{flag}: {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{flag}: {path} is readable by other users (mode {st.st_mode & 0o777:04o}); chmod 600 {path}"
            )
        text = os.read(fd, 4096)
    finally:
        os.close(fd)
    return _check(flag, path, text)


def _createToken(path: str, flag: str) -> bytes:
    token = secrets.token_hex(TOKEN_BYTES).encode()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, token + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"{flag}: cannot create {path}: {e.strerror}") from None
    return token


def readTokenFile(flag: str, path: str) -> bytes:
    """
    A client's token from C{path} (C{--rpc-token-file}, or C{DATA/rpc.token}).
    """
    try:
        with open(path, "rb") as f:
            text = f.read(4096)
    except OSError as e:
        raise ConfigError(f"{flag}: cannot read {path}: {e.strerror}") from None
    return _check(flag, path, text)


def clientToken(
    tokenFile: str | None, dataDir: str | None, environ: Any = None, dataFlag: str = "--data"
) -> bytes | None:
    """
    The token a client sends: C{--rpc-token-file}, else the file
    C{SPECTER_RPC_TOKEN_FILE} names, else C{DATA/rpc.token} when the client
    knows the server's data directory; None when none is given.
    """
    env = os.environ if environ is None else environ
    if tokenFile:
        return readTokenFile("--rpc-token-file", tokenFile)
    if env.get(ENV_TOKEN_FILE):
        return readTokenFile(ENV_TOKEN_FILE, env[ENV_TOKEN_FILE])
    if dataDir:
        return readTokenFile(dataFlag, os.path.join(dataDir, TOKEN_FILE))
    return None


def _listeningInodes(proc: str, port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", table)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode (field 9); 0A: LISTEN
            if len(fields) < 10 or fields[3] != "0A":
                continue
            try:
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
            except ValueError:
                continue
    return inodes


def _links(proc: str, pid: str) -> list[str]:
    fds = os.path.join(proc, pid, "fd")
    try:
        names = os.listdir(fds)
    except OSError:  # another user's process, or gone
        return []
    links = []
    for name in names:
        try:
            links.append(os.readlink(os.path.join(fds, name)))
        except OSError:
            continue
    return links


def listenerTokenFile(port: int, proc: str = "/proc") -> str | None:
    """
    The C{DATA/rpc.token} of the ring node listening on TCP C{port} of this
    host, found the way only its own user (or root) can: the process
    holding the listening socket (C{/proc/net/tcp}, C{/proc/PID/fd}) also
    holds its data directory's C{lock} open, and the token sits beside it.
    None when no such process is visible (another user's node, no
    C{/proc}, nothing listening).  The token found is the listener's own,
    so sending it there reveals nothing.
    """
    from suite.specter.datadir import LOCK_FILE

    inodes = {f"socket:[{inode}]" for inode in _listeningInodes(proc, port)}
    if not inodes:
        return None
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        links = _links(proc, pid)
        if inodes.isdisjoint(links):
            continue
        for link in links:
            if os.path.basename(link) == LOCK_FILE:
                path = os.path.join(os.path.dirname(link), TOKEN_FILE)
                if os.path.isfile(path):
                    return path
    return None


def listenerToken(uri: str, proc: str = "/proc") -> bytes | None:
    """
    The token for a C{tcp://HOST:PORT} RPC on a loopback address when the
    client was given none: the listening node's own (L{listenerTokenFile}),
    readable when the client runs as the node's user.  None otherwise.
    """
    import ipaddress
    from urllib.parse import urlsplit

    try:
        url = urlsplit(uri)
        host, port = url.hostname, url.port
    except ValueError:
        return None
    if url.scheme != "tcp" or host is None or port is None:
        return None
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            return None
    path = listenerTokenFile(port, proc)
    if path is None:
        return None
    try:
        return readTokenFile("--rpc", path)
    except ConfigError:
        return None


def peerUid(transport: Any) -> int | None:
    """
    The uid of a unix socket connection's peer (C{SO_PEERCRED}); None when
    the transport is not a unix socket or the platform cannot tell.
    """
    getHandle = getattr(transport, "getHandle", None)
    opt = getattr(socket, "SO_PEERCRED", None)
    if getHandle is None or opt is None:
        return None
    sock = getHandle()
    if getattr(sock, "family", None) != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    except OSError as e:
        if e.errno in (errno.ENOPROTOOPT, errno.EINVAL, errno.ENOTSOCK):
            return None
        raise
    _, uid, _ = struct.unpack("3i", raw)
    return int(uid)


def trustedUid(uid: int, ownUid: int) -> bool:
    """
    Whether a unix peer of C{uid} may use the RPC of a server running as
    C{ownUid}: the same user, or root.
    """
    return uid == ownUid or uid == 0


# -- refusal lines --------------------------------------------------------------


@dataclass
class RefusalLog:
    """
    One warning per refused connection, at most one line per
    L{LOG_INTERVAL} seconds; the refusals in between are counted into the
    next line.
    """

    clock: Any
    interval: float = LOG_INTERVAL
    nextAt: float = 0.0
    suppressed: int = 0
    refused: int = 0

    def refuse(self, peer: str, why: str) -> None:
        self.refused += 1
        now = self.clock.seconds()
        if now < self.nextAt:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more refused since the last line)" if self.suppressed else ""
        self.suppressed = 0
        self.nextAt = now + self.interval
        log.warn("--listen-rpc: refused {peer}: {why}{more}", peer=peer, why=why, more=more)


# -- the gate machine -----------------------------------------------------------


class GateInputs(Protocol):
    def peerTrusted(self) -> None:
        "A unix socket peer runs as the server's user (or root)."

    def peerRefused(self, uid: int) -> None:
        "A unix socket peer runs as another user."

    def tokenAccepted(self, rid: Any) -> None:
        "An C{auth} call carried the right token."

    def tokenRefused(self, rid: Any, why: str) -> None:
        "An C{auth} call carried a missing, malformed or wrong token."

    def call(self, rid: Any, vid: Any, method: Any, args: Any) -> None:
        "Any other call."

    def oversized(self, length: int) -> None:
        "A frame longer than the connection accepts."


@dataclass
class GateCore:
    """
    What the gate acts on: C{answer(rid, ok, result)} sends a response,
    C{serve(rid, vid, method, args)} runs a call, C{close()} drops the
    connection, C{opened()} tells the connection it is authenticated (it
    lifts the frame limit to the RPC's own and may then serve calls
    without the machine), C{refusals} logs, C{peer} names the connection.
    """

    answer: Callable[[Any, bool, Any], None]
    serve: Callable[[Any, Any, Any, Any], None]
    close: Callable[[], None]
    opened: Callable[[], None]
    refusals: RefusalLog
    peer: str
    #: why the connection was refused (empty while it was not)
    refusedFor: str = field(default="")

    def refuse(self, rid: Any, why: str, message: str) -> None:
        self.refusedFor = why
        self.refusals.refuse(self.peer, why)
        self.answer(rid, False, RemoteError(E.UNAUTHORIZED, message).toWire())
        self.close()


def _build() -> TypeMachine[GateInputs, GateCore]:
    b = TypeMachineBuilder(GateInputs, GateCore)
    awaiting = b.state("Awaiting")
    open_ = b.state("Open")
    closed = b.state("Closed")

    @awaiting.upon(GateInputs.peerTrusted).to(open_)
    def trusted(inputs: GateInputs, core: GateCore) -> None:
        core.opened()

    @awaiting.upon(GateInputs.peerRefused).to(closed)
    def otherUser(inputs: GateInputs, core: GateCore, uid: int) -> None:
        # rid 0 is never a request's: the client fails every call with it
        core.refuse(
            0,
            f"unix peer uid {uid} is not the server's user",
            f"unix peer uid {uid} is not the server's user: run the client as the node's user",
        )

    @awaiting.upon(GateInputs.tokenAccepted).to(open_)
    def accepted(inputs: GateInputs, core: GateCore, rid: Any) -> None:
        core.opened()
        core.answer(rid, True, True)

    @awaiting.upon(GateInputs.tokenRefused).to(closed)
    def wrongToken(inputs: GateInputs, core: GateCore, rid: Any, why: str) -> None:
        core.refuse(rid, why, f"{why}: {NEEDS_TOKEN}")

    @awaiting.upon(GateInputs.call).to(closed)
    def callFirst(inputs: GateInputs, core: GateCore, rid: Any, vid: Any, method: Any, args: Any) -> None:
        core.refuse(
            rid, f"call {str(method)[:32]!r} before authenticating", f"not authenticated: {NEEDS_TOKEN}"
        )

    @awaiting.upon(GateInputs.oversized).to(closed)
    def bigFirst(inputs: GateInputs, core: GateCore, length: int) -> None:
        core.refuse(
            0,
            f"a {length}-byte frame before authenticating",
            f"not authenticated (first frame {length} bytes, the handshake is at most {HANDSHAKE_MAX}): "
            f"{NEEDS_TOKEN}",
        )

    # Authenticated: calls run; a repeated handshake is answered but changes
    # nothing (the connection already proved itself); an oversized frame
    # closes it.
    @open_.upon(GateInputs.call).loop()
    def serve(inputs: GateInputs, core: GateCore, rid: Any, vid: Any, method: Any, args: Any) -> None:
        core.serve(rid, vid, method, args)

    @open_.upon(GateInputs.tokenAccepted).loop()
    def again(inputs: GateInputs, core: GateCore, rid: Any) -> None:
        core.answer(rid, True, True)

    @open_.upon(GateInputs.tokenRefused).loop()
    def againWrong(inputs: GateInputs, core: GateCore, rid: Any, why: str) -> None:
        core.answer(rid, False, RemoteError(E.UNAUTHORIZED, why).toWire())

    @open_.upon(GateInputs.oversized).to(closed)
    def bigLater(inputs: GateInputs, core: GateCore, length: int) -> None:
        log.warn(
            "--listen-rpc: {peer} sent an oversized frame ({length} bytes); closing",
            peer=core.peer,
            length=length,
        )
        core.close()

    # the peer is judged once, on connection, while Awaiting
    open_.upon(GateInputs.peerTrusted).loop().returns(None)
    open_.upon(GateInputs.peerRefused).loop().returns(None)
    # Closed: whatever was already received or in flight is dropped
    closed.upon(GateInputs.peerTrusted).loop().returns(None)
    closed.upon(GateInputs.peerRefused).loop().returns(None)
    closed.upon(GateInputs.tokenAccepted).loop().returns(None)
    closed.upon(GateInputs.tokenRefused).loop().returns(None)
    closed.upon(GateInputs.call).loop().returns(None)
    closed.upon(GateInputs.oversized).loop().returns(None)
    return b.build()


GateMachine = _build()


def checkToken(expected: bytes, args: Any) -> str | None:
    """
    Why the C{auth} call's C{args} do not carry C{expected} (None: they do);
    compared in constant time.
    """
    if not isinstance(args, list) or len(args) != 1:
        return "malformed auth call"
    given = args[0]
    if isinstance(given, str):
        given = given.encode()
    if not isinstance(given, bytes) or not given:
        return "missing token"
    if not hmac.compare_digest(given, expected):
        return "wrong token"
    return None
