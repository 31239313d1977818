"""
Authentication of the local RPC (L{suite.specter.rpcauth}): the token file,
the handshake over an in-memory transport, the unix peer check, the gate
machine in every state, and the client's handling of refusals.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import tempfile
from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.wire import pack, unpack
from suite.specter.interfaces import IRing
from suite.specter.options import ConsoleOptions
from suite.specter.rpc import RPC_MAX_FRAME, RPCClient, RPCClientProtocol, RPCFactory, RPCServerProtocol
from suite.specter.rpcauth import (
    ENV_TOKEN_FILE,
    HANDSHAKE_MAX,
    TOKEN_FILE,
    GateCore,
    GateInputs,
    GateMachine,
    RefusalLog,
    checkToken,
    clientToken,
    listenerToken,
    listenerTokenFile,
    loadOrCreateToken,
    peerUid,
    readTokenFile,
    trustedUid,
)

TOKEN = b"0123456789abcdef" * 4
OWN_UID = 1000


@implementer(IRing)
class FakeRing:
    """
    The part of a ring the RPC reaches: a dict of values.
    """

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def kv(self, op: str, key: bytes, args: list[Any]) -> Deferred[Any]:
        if op == "put":
            self.values[key] = args[0]
            return succeed(None)
        return succeed(self.values.get(key))

    def stats(self) -> dict[str, Any]:
        return {"values": len(self.values)}

    def lookup(self, key: bytes) -> Deferred[Any]:
        raise NotImplementedError

    def lookupVersions(self, key: bytes) -> Deferred[Any]:
        raise NotImplementedError

    def holders(self, key: bytes) -> Deferred[Any]:
        raise NotImplementedError


class FakeUnixSocket:
    family = socket.AF_UNIX

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def getsockopt(self, level: int, opt: int, size: int) -> bytes:
        assert (level, opt, size) == (socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return struct.pack("3i", 4242, self.uid, self.uid)


class UnixTransport(StringTransport):
    def __init__(self, uid: int) -> None:
        super().__init__()
        self.sock = FakeUnixSocket(uid)

    def getHandle(self) -> Any:
        return self.sock


def frame(value: Any) -> bytes:
    data = pack(value)
    return struct.pack(">I", len(data)) + data


def frames(data: bytes) -> list[Any]:
    out = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        out.append(unpack(data[4 : 4 + n]))
        data = data[4 + n :]
    return out


class Capture:
    """
    The log events of a test.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        observe: Any = self.events.append
        globalLogPublisher.addObserver(observe)
        test.addCleanup(globalLogPublisher.removeObserver, observe)

    def refusals(self) -> list[LogEvent]:
        return [e for e in self.events if "refused" in e.get("log_format", "")]


class HandshakeTests(SynchronousTestCase):
    """
    A TCP connection over an in-memory transport.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.ring = FakeRing()
        self.factory = RPCFactory(self.ring, self.clock, token=TOKEN, uid=OWN_UID)
        self.log = Capture(self)

    def connect(self, transport: StringTransport | None = None) -> tuple[RPCServerProtocol, StringTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert isinstance(proto, RPCServerProtocol)
        transport = transport or StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def send(self, proto: RPCServerProtocol, transport: StringTransport, *values: Any) -> list[Any]:
        proto.dataReceived(b"".join(frame(v) for v in values))
        self.clock.advance(0)
        out = frames(transport.value())
        transport.clear()
        return out

    def assertRefused(self, answer: Any, rid: int, why: str) -> None:
        self.assertEqual(answer[:3], [1, rid, False])
        code, message, _ = answer[3]
        self.assertEqual(code, E.UNAUTHORIZED)
        self.assertIn(why, message)
        self.assertIn("--rpc-token-file", message)

    def test_missingToken(self) -> None:
        """
        A call before the handshake gets one error naming the flag to give,
        and the connection is closed; the call never reaches the ring.
        """
        proto, transport = self.connect()
        out = self.send(proto, transport, [0, 1, None, "kv", ["put", b"k", [b"v"]]])
        self.assertEqual(len(out), 1)
        self.assertRefused(out[0], 1, "not authenticated")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ring.values, {})
        self.assertEqual(self.factory.requests, 0)
        self.assertEqual(self.factory.refusals.refused, 1)

    def test_emptyHandshake(self) -> None:
        """
        An C{auth} call without a token, or a malformed one, is refused.
        """
        for args, why in (([b""], "missing token"), ([], "malformed auth call"), ([5], "missing token")):
            proto, transport = self.connect()
            out = self.send(proto, transport, [0, 1, None, "auth", args])
            self.assertRefused(out[0], 1, why)
            self.assertTrue(transport.disconnecting)

    def test_wrongToken(self) -> None:
        """
        A wrong token is refused with one error frame and the connection
        closed; the log line names the peer, never a token.
        """
        proto, transport = self.connect()
        wrong = b"f" * 64
        out = self.send(
            proto, transport, [0, 1, None, "auth", [wrong]], [0, 2, None, "kv", ["get", b"k", []]]
        )
        self.assertEqual(len(out), 1)
        self.assertRefused(out[0], 1, "wrong token")
        self.assertTrue(transport.disconnecting)
        [line] = self.log.refusals()
        self.assertEqual(line["peer"], "127.0.0.1:40000")
        self.assertEqual(line["why"], "wrong token")
        text = repr([e for e in self.log.events])
        self.assertNotIn(TOKEN.decode(), text)
        self.assertNotIn(wrong.decode(), text)

    def test_rightToken(self) -> None:
        """
        The right token is answered C{true}; calls then run, frames up to the
        RPC's own limit are accepted, and a repeated handshake changes
        nothing.
        """
        proto, transport = self.connect()
        self.assertEqual(
            self.send(proto, transport, [0, 1, None, "auth", [TOKEN.decode()]]), [[1, 1, True, True]]
        )
        big = b"v" * (HANDSHAKE_MAX * 4)
        out = self.send(proto, transport, [0, 2, None, "kv", ["put", b"k", [big]]])
        self.assertEqual(out, [[1, 2, True, None]])
        self.assertEqual(self.ring.values, {b"k": big})
        self.assertEqual(proto.MAX_LENGTH, RPC_MAX_FRAME)
        out = self.send(proto, transport, [0, 3, None, "auth", [b"x" * 40]], [0, 4, None, "auth", [TOKEN]])
        self.assertEqual(out[0][:3], [1, 3, False])
        self.assertEqual(out[1], [1, 4, True, True])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.log.refusals(), [])

    def test_oversizedHandshake(self) -> None:
        """
        A first frame longer than L{HANDSHAKE_MAX} is refused (response id
        0, outside any call) without reading it.
        """
        proto, transport = self.connect()
        proto.dataReceived(struct.pack(">I", HANDSHAKE_MAX + 1) + b"x" * 100)
        self.clock.advance(0)
        [out] = frames(transport.value())
        self.assertEqual(out[:3], [1, 0, False])
        self.assertEqual(out[3][0], E.UNAUTHORIZED)
        self.assertIn(f"first frame {HANDSHAKE_MAX + 1} bytes", out[3][1])
        self.assertTrue(transport.disconnecting)

    def test_oversizedAfterAuth(self) -> None:
        """
        Once authenticated, only frames over the RPC's limit close the
        connection (not a refusal).
        """
        proto, transport = self.connect()
        self.send(proto, transport, [0, 1, None, "auth", [TOKEN]])
        proto.dataReceived(struct.pack(">I", RPC_MAX_FRAME + 1))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.factory.refusals.refused, 0)

    def test_refusalsRateLimited(self) -> None:
        """
        Refusals log at most one line per interval; the next line counts
        the ones in between.
        """
        for _ in range(3):
            proto, transport = self.connect()
            self.send(proto, transport, [0, 1, None, "stats", []])
        self.assertEqual(len(self.log.refusals()), 1)
        self.clock.advance(self.factory.refusals.interval)
        proto, transport = self.connect()
        self.send(proto, transport, [0, 1, None, "auth", [b"y" * 64]])
        lines = self.log.refusals()
        self.assertEqual(len(lines), 2)
        self.assertIn("2 more refused", lines[1]["more"])
        self.assertEqual(self.factory.refusals.refused, 4)


class UnixPeerTests(SynchronousTestCase):
    """
    A unix socket connection is judged by its peer's uid.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.ring = FakeRing()
        self.factory = RPCFactory(self.ring, self.clock, token=TOKEN, uid=OWN_UID)
        self.log = Capture(self)

    def connect(self, uid: int) -> tuple[RPCServerProtocol, UnixTransport]:
        proto = self.factory.buildProtocol(UNIXAddress(b"/run/specter/rpc.sock"))
        assert isinstance(proto, RPCServerProtocol)
        transport = UnixTransport(uid)
        proto.makeConnection(transport)
        return proto, transport

    def test_sameUserAndRoot(self) -> None:
        """
        The server's own user and root need no token.
        """
        for uid in (OWN_UID, 0):
            proto, transport = self.connect(uid)
            proto.dataReceived(frame([0, 1, None, "stats", []]))
            self.clock.advance(0)
            self.assertEqual(frames(transport.value()), [[1, 1, True, {"values": 0}]])
            self.assertFalse(transport.disconnecting)

    def test_otherUser(self) -> None:
        """
        Another user is refused at once, naming its uid.
        """
        proto, transport = self.connect(1001)
        self.clock.advance(0)
        [out] = frames(transport.value())
        self.assertEqual(out[:3], [1, 0, False])
        self.assertIn("uid 1001", out[3][1])
        self.assertTrue(transport.disconnecting)
        [line] = self.log.refusals()
        self.assertIn("uid 1001", line["peer"])
        transport.clear()
        proto.dataReceived(frame([0, 1, None, "auth", [TOKEN]]))
        self.clock.advance(0)
        self.assertEqual(transport.value(), b"")

    def test_realSocketPair(self) -> None:
        """
        L{peerUid} reads this process's uid from a real unix socket pair,
        and nothing from a TCP socket.
        """
        a, b = socket.socketpair(socket.AF_UNIX)
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        class Handle:
            def getHandle(self) -> Any:
                return a

        self.assertEqual(peerUid(Handle()), os.getuid())
        t = socket.socket()
        self.addCleanup(t.close)

        class TCPHandle:
            def getHandle(self) -> Any:
                return t

        self.assertIsNone(peerUid(TCPHandle()))
        self.assertIsNone(peerUid(StringTransport()))

    def test_trustedUid(self) -> None:
        self.assertTrue(trustedUid(5, 5))
        self.assertTrue(trustedUid(0, 5))
        self.assertFalse(trustedUid(6, 5))


class Recorder:
    """
    A L{GateCore}'s effects, recorded.
    """

    def __init__(self) -> None:
        self.effects: list[Any] = []
        self.core = GateCore(
            answer=lambda rid, ok, result: self.effects.append(("answer", rid, ok)),
            serve=lambda rid, vid, method, args: self.effects.append(("serve", rid, method)),
            close=lambda: self.effects.append(("close",)),
            opened=lambda: self.effects.append(("opened",)),
            refusals=RefusalLog(Clock()),
            peer="p",
        )


class GateMachineTests(SynchronousTestCase):
    """
    Every input of L{GateMachine} in every state.
    """

    INPUTS: list[tuple[str, tuple[Any, ...]]] = [
        ("peerTrusted", ()),
        ("peerRefused", (7,)),
        ("tokenAccepted", (1,)),
        ("tokenRefused", (1, "wrong token")),
        ("call", (1, None, "stats", [])),
        ("oversized", (9999,)),
    ]

    #: the effects of each input in each state, and the state after it
    EXPECTED: dict[str, dict[str, tuple[list[Any], str]]] = {
        "Awaiting": {
            "peerTrusted": ([("opened",)], "Open"),
            "peerRefused": ([("answer", 0, False), ("close",)], "Closed"),
            "tokenAccepted": ([("opened",), ("answer", 1, True)], "Open"),
            "tokenRefused": ([("answer", 1, False), ("close",)], "Closed"),
            "call": ([("answer", 1, False), ("close",)], "Closed"),
            "oversized": ([("answer", 0, False), ("close",)], "Closed"),
        },
        "Open": {
            "peerTrusted": ([], "Open"),
            "peerRefused": ([], "Open"),
            "tokenAccepted": ([("answer", 1, True)], "Open"),
            "tokenRefused": ([("answer", 1, False)], "Open"),
            "call": ([("serve", 1, "stats")], "Open"),
            "oversized": ([("close",)], "Closed"),
        },
        "Closed": {name: ([], "Closed") for name, _ in INPUTS},
    }

    def machineIn(self, state: str) -> tuple[GateInputs, Recorder]:
        r = Recorder()
        m = GateMachine(r.core)
        if state == "Open":
            m.peerTrusted()
        elif state == "Closed":
            m.tokenRefused(0, "wrong token")
        r.effects.clear()
        return m, r

    def test_everyInputInEveryState(self) -> None:
        for state, table in self.EXPECTED.items():
            for name, args in self.INPUTS:
                m, r = self.machineIn(state)
                getattr(m, name)(*args)
                effects, after = table[name]
                self.assertEqual(r.effects, effects, (state, name))
                # the state after: a call is served only when Open, refused
                # only when Awaiting, ignored when Closed
                r.effects.clear()
                m.call(2, None, "stats", [])
                served = {
                    "Open": [("serve", 2, "stats")],
                    "Closed": [],
                    "Awaiting": [("answer", 2, False), ("close",)],
                }
                self.assertEqual(r.effects, served[after], (state, name, after))

    def test_refusalRecordsWhy(self) -> None:
        m, r = self.machineIn("Awaiting")
        m.tokenRefused(3, "wrong token")
        self.assertEqual(r.core.refusedFor, "wrong token")
        self.assertEqual(r.core.refusals.refused, 1)


class CheckTokenTests(SynchronousTestCase):
    def test_check(self) -> None:
        self.assertIsNone(checkToken(TOKEN, [TOKEN]))
        self.assertIsNone(checkToken(TOKEN, [TOKEN.decode()]))
        self.assertEqual(checkToken(TOKEN, [TOKEN[:-1]]), "wrong token")
        self.assertEqual(checkToken(TOKEN, [None]), "missing token")
        self.assertEqual(checkToken(TOKEN, "nope"), "malformed auth call")


class ClientRefusalTests(SynchronousTestCase):
    """
    L{RPCClientProtocol}: a refusal outside any call fails every pending
    call with the server's reason.
    """

    def test_refusalFailsPending(self) -> None:
        proto = RPCClientProtocol()
        transport = StringTransport()
        proto.makeConnection(transport)
        client = RPCClient(proto)
        d = client.call("stats")
        proto.dataReceived(
            frame([1, 0, False, [E.UNAUTHORIZED, "unix peer uid 5 is not the server's user", None]])
        )
        proto.connectionLost()
        err = self.failureResultOf(d, RemoteError).value
        self.assertEqual(err.code, E.UNAUTHORIZED)
        self.assertIn("uid 5", err.message)

    def test_plainLoss(self) -> None:
        proto = RPCClientProtocol()
        proto.makeConnection(StringTransport())
        d = RPCClient(proto).call("stats")
        proto.connectionLost()
        self.assertEqual(self.failureResultOf(d, RemoteError).value.code, E.GONE)

    def test_authenticate(self) -> None:
        """
        The handshake is the client's first frame; it fires with the client.
        """
        proto = RPCClientProtocol()
        transport = StringTransport()
        proto.makeConnection(transport)
        client = RPCClient(proto)
        d = client.authenticate(TOKEN)
        [sent] = frames(transport.value())
        self.assertEqual(sent, [0, 1, None, "auth", [TOKEN]])
        proto.dataReceived(frame([1, 1, True, True]))
        self.assertIs(self.successResultOf(d), client)


class TokenFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, True))

    def test_createdPrivateAndReused(self) -> None:
        token = loadOrCreateToken(self.dir)
        path = os.path.join(self.dir, TOKEN_FILE)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(len(token), 64)
        self.assertEqual(loadOrCreateToken(self.dir), token)
        self.assertEqual(readTokenFile("--rpc-token-file", path), token)
        self.assertNotEqual(loadOrCreateToken(tempfile.mkdtemp(dir=self.dir)), token)

    def test_openFileRefused(self) -> None:
        loadOrCreateToken(self.dir)
        path = os.path.join(self.dir, TOKEN_FILE)
        os.chmod(path, 0o644)
        e = self.assertRaises(ConfigError, loadOrCreateToken, self.dir)
        self.assertIn("--data-dir", str(e))
        self.assertIn("chmod 600", str(e))

    def test_garbageRefused(self) -> None:
        path = os.path.join(self.dir, TOKEN_FILE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"short\n")
        os.close(fd)
        e = self.assertRaises(ConfigError, loadOrCreateToken, self.dir)
        self.assertIn("does not hold an RPC token", str(e))
        e = self.assertRaises(ConfigError, readTokenFile, "--rpc-token-file", os.path.join(self.dir, "nope"))
        self.assertIn("--rpc-token-file: cannot read", str(e))

    def test_clientTokenPrecedence(self) -> None:
        token = loadOrCreateToken(self.dir)
        other = os.path.join(self.dir, "other")
        with open(other, "wb") as f:
            f.write(b"z" * 64 + b"\n")
        path = os.path.join(self.dir, TOKEN_FILE)
        self.assertEqual(clientToken(other, self.dir, {ENV_TOKEN_FILE: path}), b"z" * 64)
        self.assertEqual(clientToken(None, None, {ENV_TOKEN_FILE: other}), b"z" * 64)
        self.assertEqual(clientToken(None, self.dir, {}), token)
        self.assertIsNone(clientToken(None, None, {}))

    def test_kvOptions(self) -> None:
        """
        C{specter kv --data DIR} reads DIR's token for a tcp:// --rpc; a
        unix socket needs none.
        """
        token = loadOrCreateToken(self.dir)
        o = ConsoleOptions({})
        o.parseOptions(["kv", "--data", self.dir, "stats"])
        self.assertEqual(o.subOptions["rpc-token"].reveal().encode(), token)
        self.assertNotIn(token.decode(), repr(o.subOptions["rpc-token"]))
        o = ConsoleOptions({})
        o.parseOptions(["kv", "--rpc", "unix:///run/specter/rpc.sock", "stats"])
        self.assertIsNone(o.subOptions["rpc-token"])
        e = self.assertRaises(
            ConfigError, ConsoleOptions({}).parseOptions, ["kv", "--rpc-token-file", "/nonexistent", "stats"]
        )
        self.assertIn("--rpc-token-file", str(e))
        o = ConsoleOptions({ENV_TOKEN_FILE: os.path.join(self.dir, TOKEN_FILE)})
        o.parseOptions(["kv", "stats"])
        self.assertEqual(o.subOptions["rpc-token"].reveal().encode(), token)
        o = ConsoleOptions({})
        o.parseOptions(["kv", "stats"])
        self.assertIsNone(o.subOptions["rpc-token"])

    def test_dnsOptions(self) -> None:
        """
        C{specter dns} takes --rpc-token-file (or the environment) for a
        tcp:// --rpc; the guide's unix socket command needs nothing.
        """
        token = loadOrCreateToken(self.dir)
        path = os.path.join(self.dir, TOKEN_FILE)
        dns = (
            "dns",
            "--acme",
            "acme://ops@example.net@acme-hosted.net",
            "--acme-ns",
            "ns1.acme-hosted.net/203.0.113.10",
        )
        o = ConsoleOptions({})
        o.parseOptions([*dns, "--rpc", "unix:///var/run/specter-rpc.sock"])
        self.assertIsNone(o.subOptions["rpc-token"])
        o = ConsoleOptions({})
        o.parseOptions([*dns, "--rpc-token-file", path])
        self.assertEqual(o.subOptions["rpc-token"].reveal().encode(), token)
        o = ConsoleOptions({ENV_TOKEN_FILE: path})
        o.parseOptions(list(dns))
        self.assertEqual(o.subOptions["rpc-token"].reveal().encode(), token)
        e = self.assertRaises(
            ConfigError, ConsoleOptions({}).parseOptions, [*dns, "--rpc-token-file", "/nonexistent"]
        )
        self.assertIn("--rpc-token-file: cannot read /nonexistent", str(e))


class ListenerTokenTests(SynchronousTestCase):
    """
    L{listenerTokenFile} and L{listenerToken} on a made-up C{/proc}: the
    token of the data directory whose C{lock} the listening process holds.
    """

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, True))
        self.proc = os.path.join(self.dir, "proc")
        os.makedirs(os.path.join(self.proc, "net"))
        header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        rows = [
            # 127.0.0.1:11180 (0x2BAC) LISTEN, inode 555
            "   0: 0100007F:2BAC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555",
            # a connection from port 11180 (state 01): not the listener
            "   1: 0100007F:2BAC 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 777",
        ]
        with open(os.path.join(self.proc, "net", "tcp"), "w") as f:
            f.write(header + "\n".join(rows) + "\n")
        self.node = os.path.join(self.dir, "node")
        other = os.path.join(self.dir, "other")
        os.makedirs(self.node)
        os.makedirs(other)
        self.token = loadOrCreateToken(self.node)
        loadOrCreateToken(other)
        self.process("42", ["socket:[555]", "/dev/null", os.path.join(self.node, "lock")])
        self.process("43", ["socket:[777]", os.path.join(other, "lock")])
        os.makedirs(os.path.join(self.proc, "44"))  # no fd directory (another user's)

    def process(self, pid: str, links: list[str]) -> None:
        fds = os.path.join(self.proc, pid, "fd")
        os.makedirs(fds)
        for n, target in enumerate(links):
            os.symlink(target, os.path.join(fds, str(n)))

    def test_listenerTokenFile(self) -> None:
        self.assertEqual(listenerTokenFile(11180, self.proc), os.path.join(self.node, TOKEN_FILE))
        self.assertIsNone(listenerTokenFile(11181, self.proc))
        self.assertIsNone(listenerTokenFile(11180, os.path.join(self.dir, "none")))

    def test_noLockNoToken(self) -> None:
        """
        A listener holding no data directory's lock (not a ring node, or
        one whose token is gone) gives no token.
        """
        os.remove(os.path.join(self.node, TOKEN_FILE))
        self.assertIsNone(listenerTokenFile(11180, self.proc))

    def test_listenerToken(self) -> None:
        for uri in ("tcp://127.0.0.1:11180", "tcp://localhost:11180", "tcp://127.0.0.2:11180"):
            self.assertEqual(listenerToken(uri, self.proc), self.token, uri)
        for uri in (
            "tcp://10.0.0.1:11180",
            "tcp://example.com:11180",
            "unix:///run/specter/rpc.sock",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:x",
        ):
            self.assertIsNone(listenerToken(uri, self.proc), uri)
