"""
The runnable node's options and service tree, and the client's retries.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from suite.raft.client import ClientSettings, RaftClient, RaftClientError
from suite.raft.service import Options, makeService
from suite.raft.transport import LENGTH
from suite.raft.wal import StorageDirectoryError


class OptionsTests(SynchronousTestCase):
    """
    Bad flags get one clear message.
    """

    def parse(self, *args: str) -> Options:
        o = Options()
        o.parseOptions(list(args))
        return o

    def base(self) -> list[str]:
        return ["--id", "n1", "--raft-listen", "tcp:0", "--client-listen", "tcp:0", "--insecure"]

    def test_required(self) -> None:
        """
        Missing --id is named.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--raft-listen", "tcp:0")
        self.assertIn("--id", str(e))

    def test_badPeer(self) -> None:
        """
        A peer without ID=HOST:PORT is refused, quoting it.
        """
        e = self.assertRaises(usage.UsageError, self.parse, *self.base(), "--peer", "nope")
        self.assertIn("'nope'", str(e))

    def test_badTiming(self) -> None:
        """
        Heartbeat must be well under the election timeout.
        """
        e = self.assertRaises(
            usage.UsageError,
            self.parse,
            *self.base(),
            "--heartbeat-ms",
            "100",
            "--election-timeout-ms",
            "150",
        )
        self.assertIn("--heartbeat-ms", str(e))

    def test_directoriesDefaultUnderDataDir(self) -> None:
        """
        WAL and snapshot directories default under --data-dir.
        """
        o = self.parse(*self.base(), "--data-dir", "/srv/raft")
        self.assertEqual((o["wal-dir"], o["snapshot-dir"]), ("/srv/raft/wal", "/srv/raft/snapshots"))

    def test_unwritableWalDir(self) -> None:
        """
        makeService fails naming the WAL directory it cannot write.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("x")
        o = self.parse(*self.base(), "--wal-dir", os.path.join(blocker, "wal"))
        e = self.assertRaises(StorageDirectoryError, makeService, o, MemoryReactorClock())
        self.assertIn(os.path.join(blocker, "wal"), str(e))

    def test_serviceTree(self) -> None:
        """
        The tree holds the Raft and client listeners and the admin site.
        """
        o = self.parse(*self.base(), "--data-dir", self.mktemp(), "--admin", "tcp:0")
        service = makeService(o, MemoryReactorClock())
        names = sorted(s.name for s in service if s.name)
        self.assertEqual(names, ["admin", "client-listen", "raft-listen"])


class FakeServer:
    """
    Answers client frames from a script of responses per node.
    """

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, list[Any]]] = []

    def connect(self, address: str, factory: Any) -> Deferred[Any]:
        node = address
        proto = factory.buildProtocol(None)
        server = self

        class T(StringTransport):
            def write(self, data: bytes) -> None:
                request = msgpack.unpackb(data[4:], raw=False)
                server.requests.append((node, request))
                script = server.answers[node]
                answer = script.pop(0) if script else None
                if answer is not None:
                    payload = msgpack.packb([request[0], *answer])
                    proto.dataReceived(LENGTH.pack(len(payload)) + payload)

        proto.makeConnection(T())
        return succeed(proto)


class ClientTests(SynchronousTestCase):
    """
    L{RaftClient} follows hints, retries with the same sequence, and gives up.
    """

    def test_followsLeaderHint(self) -> None:
        """
        A refusal naming the leader sends the retry there, with the same
        client id and sequence number.
        """
        server = FakeServer({"a": [[False, None, "not leader", "b"]], "b": [[True, "old", "", "b"]]})
        client = RaftClient(Clock(), server.connect, {"a": "a", "b": "b"})
        d = Deferred.fromCoroutine(client.call("put", "k", "v"))
        self.assertEqual(self.successResultOf(d), "old")
        [(n1, r1), (n2, r2)] = server.requests
        self.assertEqual((n1, n2), ("a", "b"))
        self.assertEqual(r1[4:], r2[4:])

    def test_timeoutThenGiveUp(self) -> None:
        """
        Unanswered requests time out, back off and fail after the
        configured attempts with the last reason.
        """
        clock = Clock()
        server = FakeServer({"a": [], "b": []})
        client = RaftClient(clock, server.connect, {"a": "a", "b": "b"}, ClientSettings(100, 3, 10))
        d = Deferred.fromCoroutine(client.call("put", "k", "v"))
        for _ in range(20):
            clock.advance(0.1)
        f = self.failureResultOf(d, RaftClientError)
        self.assertIn("TimeoutError", str(f.value))
        self.assertEqual(len(server.requests), 3)


class ClientAPITests(SynchronousTestCase):
    """
    The node's client protocol on a StringTransport.
    """

    def setUp(self) -> None:
        import random

        from suite.raft.api import ClientAPIProtocol
        from suite.raft.kv import KeyValueStateMachine
        from suite.raft.messages import Configuration
        from suite.raft.node import RaftNode
        from suite.raft.storage import MemoryStorage
        from tests.raft.test_roles import NullTransport

        self.clock = Clock()
        self.kv = KeyValueStateMachine()
        self.node = RaftNode(
            "a",
            self.clock,
            MemoryStorage(),
            NullTransport(),
            self.kv,
            Configuration(frozenset({"a"})),
            rng=random.Random(2),
        )
        self.successResultOf(Deferred.fromCoroutine(self.node.start()))
        self.addCleanup(self.node.stop)
        self.proto = ClientAPIProtocol(self.node, self.kv, lambda ms: None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def request(self, *fields: Any) -> list[Any]:
        payload = msgpack.packb(list(fields))
        self.transport.clear()
        self.proto.dataReceived(LENGTH.pack(len(payload)) + payload)
        self.clock.advance(0)
        out = self.transport.value()
        return msgpack.unpackb(out[4:], raw=False) if out else []

    def test_notLeaderExplains(self) -> None:
        """
        Before an election the reply says why this node cannot serve.
        """
        reply = self.request(1, "put", "k", "v", "c", 1)
        self.assertEqual(reply[:2], [1, False])
        self.assertIn("no leader is known", reply[3])

    def test_writeThenRead(self) -> None:
        """
        On the leader a put is acknowledged and a linearizable get sees it.
        """
        self.clock.advance(0.31)
        self.assertEqual(self.request(1, "put", "k", "v", "c", 1)[:3], [1, True, None])
        self.assertEqual(self.request(2, "get", "k", None, "c", 0)[:3], [2, True, "v"])

    def test_malformed(self) -> None:
        """
        A request of the wrong shape is refused with a reason.
        """
        reply = self.request("just", "three", "fields")
        self.assertEqual(reply[1:4], [False, None, "malformed request"])
