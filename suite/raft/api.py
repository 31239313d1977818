"""
The client API of a Raft KV node: length-prefixed msgpack frames.

Request: C{[id, op, key, value, client, seq]} with C{op} one of C{put},
C{append}, C{delete}, C{cas}, C{get} (linearizable, ReadIndex), C{status},
or a membership change C{addLearner}, C{addVoter}, C{promote}, C{remove}
(C{key} the node id, C{value} its Raft address for the additions), which
answers with the resulting configuration once committed and succeeds at once
when the configuration already is as asked (so a retry is harmless).
A connection may carry many outstanding requests (pipelining); each is
answered once, in completion order, under its C{id}.
Response: C{[id, ok, value, error, leader]}: C{error} explains a refusal
(e.g. why this node is not the leader) and C{leader} names the leader
when known.  Frames are limited to C{maxFrameBytes}.
"""

from __future__ import annotations

from typing import Any

import msgpack
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from suite.raft.kv import KeyValueStateMachine, encodeCommand
from suite.raft.messages import Configuration
from suite.raft.node import NotLeader, RaftNode
from suite.raft.transport import FrameProtocol, WriteCoalescer

log = Logger()
WRITES = {"put", "append", "delete", "cas"}
MEMBERSHIP = {"addLearner", "addVoter", "promote", "remove"}
MAX_CLIENT_FRAME = 1024 * 1024


class ClientAPIProtocol(FrameProtocol):
    maxFrameBytes = MAX_CLIENT_FRAME

    def __init__(
        self,
        node: RaftNode,
        kv: KeyValueStateMachine,
        observe: Any,
        coalescer: WriteCoalescer | None = None,
    ) -> None:
        super().__init__()
        self.node, self.kv, self.observe = node, kv, observe
        # Replies completing in one reactor turn (a commit answers many
        # pipelined requests at once) leave in one write.
        self.coalescer = coalescer

    def frameReceived(self, frame: bytes) -> None:
        try:
            request = msgpack.unpackb(frame, raw=False)
            reqId, op, key, value, client, seq = request
            if not (
                isinstance(op, str)
                and isinstance(key, str)
                and isinstance(client, str)
                and isinstance(seq, int)
            ):
                raise TypeError("field types")
        except Exception as e:  # untrusted input: logged, answered
            log.warn(
                "rejecting malformed client request from {peer}: {why}", peer=self.describePeer(), why=str(e)
            )
            self.sendFrame(msgpack.packb([None, False, None, "malformed request", None]))
            return
        if op in WRITES:
            started = self.node.clock.seconds()

            def written(result: object, error: Exception | None) -> None:
                if error is not None:
                    self._refused(reqId, error)
                    return
                self.observe((self.node.clock.seconds() - started) * 1000.0)
                self._reply(reqId, True, result, "")

            self.node.submit(encodeCommand(op, key, value), client, seq, written)
            return
        if op in MEMBERSHIP:
            self._membership(reqId, op, key, value)
            return
        if op == "get":
            d = self.node.readIndex().addCallback(lambda _: self.kv.get(key))
        elif op == "status":
            self._reply(reqId, True, self.node.status(), "")
            return
        else:
            self._reply(reqId, False, None, f"unknown operation {op!r}")
            return
        d.addCallbacks(lambda v: self._reply(reqId, True, v, ""), lambda f: self._failed(reqId, f))

    def _membership(self, reqId: Any, op: str, nodeId: str, address: Any) -> None:
        node = self.node
        if not nodeId or not (address is None or isinstance(address, str)):
            self._reply(reqId, False, None, f"{op} needs a node id and an optional address string")
            return
        if op in ("addLearner", "addVoter") and not address:
            self._reply(reqId, False, None, f"{op} needs the new node's Raft address (HOST:PORT)")
            return
        if node.leader is not None and _alreadyDone(node.configs.latest(), op, nodeId):
            self._reply(reqId, True, _describe(node.configs.latest()), "")
            return
        log.info("client {peer} asks: {op} {node}", peer=self.describePeer(), op=op, node=nodeId)
        d = node.changeMembership(op, nodeId, address or "")
        d.addCallbacks(
            lambda _: self._reply(reqId, True, _describe(node.configs.latest()), ""),
            lambda f: self._failed(reqId, f),
        )

    def _failed(self, reqId: Any, failure: Any) -> None:
        self._refused(reqId, failure.value)

    def _refused(self, reqId: Any, err: BaseException) -> None:
        leader = err.leader if isinstance(err, NotLeader) else self.node.leaderId
        self._reply(reqId, False, None, str(err) or err.__class__.__name__, leader)

    def _reply(self, reqId: Any, ok: bool, value: Any, error: str, leader: str | None = None) -> None:
        if self.transport is None or getattr(self.transport, "disconnecting", False):
            return
        if leader is None:
            leader = self.node.leaderId
        self.sendFrame(msgpack.packb([reqId, ok, value, error, leader], use_bin_type=True))


def _alreadyDone(config: Configuration, op: str, nodeId: str) -> bool:
    if op == "addLearner":
        return nodeId in config.members()
    if op in ("addVoter", "promote"):
        return nodeId in config.voters
    return nodeId not in config.members()


def _describe(config: Configuration) -> dict[str, Any]:
    return {
        "voters": sorted(config.voters),
        "learners": sorted(config.learners),
        "addresses": dict(config.addresses),
    }


def clientAPIFactory(
    node: RaftNode, kv: KeyValueStateMachine, observe: Any = lambda ms: None, coalesce: bool = False
) -> Factory:
    """
    A factory serving the client API for C{node}; with C{coalesce}, the
    replies of one reactor turn on a connection leave in one write.
    """
    coalescer = WriteCoalescer(node.clock) if coalesce else None
    return Factory.forProtocol(lambda: ClientAPIProtocol(node, kv, observe, coalescer))
