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

    def test_coalesceWrites(self) -> None:
        """
        --coalesce-writes takes all, client, peers or none (the default);
        anything else is refused, naming the flag.
        """
        self.assertEqual(self.parse(*self.base())["coalesce-writes"], "none")
        self.assertEqual(self.parse(*self.base(), "--coalesce-writes", "client")["coalesce-writes"], "client")
        e = self.assertRaises(usage.UsageError, self.parse, *self.base(), "--coalesce-writes", "some")
        self.assertIn("--coalesce-writes", str(e))

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

    def test_pipelinedRepliesCoalesce(self) -> None:
        """
        Several requests may be outstanding on one connection: each is
        answered under its own id, and the replies completing in one turn
        leave in one write (without coalescing, one write each).
        """
        from suite.raft.api import ClientAPIProtocol
        from suite.raft.transport import WriteCoalescer
        from tests.raft.test_wire import CountingTransport

        self.clock.advance(0.31)
        for coalesce, writes in ((True, 1), (False, 3)):
            coalescer = WriteCoalescer(self.clock) if coalesce else None
            proto = ClientAPIProtocol(self.node, self.kv, lambda ms: None, coalescer)
            transport = CountingTransport()
            proto.makeConnection(transport)
            data = b""
            for reqId, client in ((7, "x"), (8, "y"), (9, "z")):
                payload = msgpack.packb([reqId, "put", f"k{reqId}", "v", f"{client}{coalesce}", 1])
                data += LENGTH.pack(len(payload)) + payload
            proto.dataReceived(data)
            self.clock.advance(0)
            self.clock.advance(0)
            self.assertEqual(len(transport.writes), writes)
            out, replies = transport.value(), []
            while out:
                (length,) = LENGTH.unpack_from(out)
                replies.append(msgpack.unpackb(out[4 : 4 + length], raw=False)[:2])
                out = out[4 + length :]
            self.assertEqual(sorted(replies), [[7, True], [8, True], [9, True]])

    def test_malformed(self) -> None:
        """
        A request of the wrong shape is refused with a reason.
        """
        reply = self.request("just", "three", "fields")
        self.assertEqual(reply[1:4], [False, None, "malformed request"])

    def test_membershipChanges(self) -> None:
        """
        The leader adds and removes a learner on request, answering with the
        configuration; asking again for what is already so succeeds at once;
        an addition without an address is refused with a reason.
        """
        self.clock.advance(0.31)
        reply = self.request(1, "addLearner", "b", None, "op", 0)
        self.assertEqual(reply[:2], [1, False])
        self.assertIn("needs the new node's Raft address", reply[3])
        reply = self.request(2, "addLearner", "b", "127.0.0.1:7002", "op", 0)
        self.assertEqual(reply[:2], [2, True])
        self.assertEqual((reply[2]["voters"], reply[2]["learners"]), (["a"], ["b"]))
        self.assertEqual(reply[2]["addresses"], {"b": "127.0.0.1:7002"})
        self.assertEqual(self.request(3, "addLearner", "b", "127.0.0.1:7002", "op", 0)[:2], [3, True])
        reply = self.request(4, "remove", "b", None, "op", 0)
        self.assertEqual(reply[:2], [4, True])
        self.assertEqual((reply[2]["voters"], reply[2]["learners"]), (["a"], []))
        self.assertEqual(self.request(5, "remove", "b", None, "op", 0)[:2], [5, True])

    def test_membershipNotLeader(self) -> None:
        """
        A follower refuses a membership change, explaining why.
        """
        reply = self.request(1, "remove", "b", None, "op", 0)
        self.assertEqual(reply[:2], [1, False])
        self.assertIn("no leader is known", reply[3])


class MemberOptionsTests(SynchronousTestCase):
    """
    C{python -m suite.raft member} flags.
    """

    def parse(self, *args: str) -> Any:
        from suite.raft.admin import MemberOptions

        o = MemberOptions()
        o.parseOptions(list(args))
        return o

    def test_actions(self) -> None:
        """
        Operator verbs map to the node's membership actions.
        """
        o = self.parse("add-voter", "n4", "127.0.0.1:7004", "--server", "n1=127.0.0.1:7101", "--insecure")
        self.assertEqual((o["action"], o["id"], o["address"]), ("addVoter", "n4", "127.0.0.1:7004"))
        self.assertEqual(o["server"], {"n1": "127.0.0.1:7101"})
        o = self.parse("remove", "n4", "--server", "n1=127.0.0.1:7101", "--cert-dir", "certs")
        self.assertEqual((o["action"], o["address"]), ("remove", ""))

    def test_bad(self) -> None:
        """
        Bad usage gets one clear message.
        """
        from twisted.python.usage import UsageError

        cases = [
            (["frobnicate", "n4", "--server", "n1=h:1", "--insecure"], "unknown action 'frobnicate'"),
            (["add-learner", "n4", "--server", "n1=h:1", "--insecure"], "needs the new node's Raft address"),
            (["remove", "n4", "--insecure"], "--server is required"),
            (["remove", "n4", "--server", "n1=h:1"], "--cert-dir is required"),
            (["remove", "n4", "--server", "n1"], "expected ID=HOST:PORT"),
        ]
        for args, message in cases:
            with self.assertRaises(UsageError) as e:
                self.parse(*args)
            self.assertIn(message, str(e.exception))
