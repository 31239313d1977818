"""
Raft log entries, configurations and messages, and their msgpack encoding.

Every message is a frozen dataclass; L{encodeMessage} turns one into a
msgpack array C{[code, field...]} and L{decodeMessage} validates the shape
of an untrusted array before building the message (L{MalformedMessage}).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

import msgpack

NORMAL = 0
NOOP = 1
CONFIG = 2


class MalformedMessage(ValueError):
    """
    A frame did not decode to a well-formed Raft message.
    """


class Entry(NamedTuple):
    """
    One log entry.  C{client}/C{seq} identify a client session command
    (empty client: no session).

    A named tuple rather than a frozen dataclass: entries are made once per
    write on every node, and a tuple is both cheaper to build and packed by
    msgpack as the wire/WAL array C{[term, index, kind, data, client, seq]}
    as it is, with no conversion.
    """

    term: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, which entries never use
    kind: int = NORMAL
    data: bytes = b""
    client: str = ""
    seq: int = 0

    def astuple(self) -> tuple[int, int, int, bytes, str, int]:
        """
        The fields in order, for encoding.
        """
        return (self.term, self.index, self.kind, self.data, self.client, self.seq)

    def size(self) -> int:
        """
        Approximate encoded size, for batching.
        """
        return len(self.data) + len(self.client) + 16


@dataclass(frozen=True, slots=True)
class Configuration:
    """
    Cluster membership: voting members, non-voting learners and the
    address of each.
    """

    voters: frozenset[str]
    learners: frozenset[str] = frozenset()
    addresses: tuple[tuple[str, str], ...] = ()
    #: A number the embedder records with the configuration (CEPtra: the
    #: placement epoch it moves toward); never lowered by a change.
    epoch: int = 0
    #: Member -> the incarnation of its storage the group counts on
    #: (L{suite.raft.incarnation}); members without one are unrecorded.
    incarnations: tuple[tuple[str, int], ...] = ()
    #: The Raft group id (L{suite.raft.groupid}), recorded only in the
    #: configuration of a snapshot taken by a node that had one.
    group: int = 0

    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def addressMap(self) -> dict[str, str]:
        return dict(self.addresses)

    def incarnationOf(self, nodeId: str) -> int | None:
        """
        The incarnation recorded for C{nodeId}, or C{None}.
        """
        for member, number in self.incarnations:
            if member == nodeId:
                return number
        return None

    def encode(self) -> bytes:
        body: list[Any] = [sorted(self.voters), sorted(self.learners), [list(a) for a in self.addresses]]
        if self.epoch or self.incarnations or self.group:
            body += [self.epoch, [list(i) for i in self.incarnations]]
        if self.group:
            body.append(self.group)
        packed: bytes = msgpack.packb(body)
        return packed

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        try:
            raw = msgpack.unpackb(data)
            if len(raw) not in (3, 5, 6):
                raise ValueError(f"{len(raw)} fields")
            voters, learners, addresses = raw[:3]
            epoch, incarnations = raw[3:5] if len(raw) >= 5 else (0, [])
            group = raw[5] if len(raw) == 6 else 0
            if type(group) is not int or not 0 <= group < 1 << 64:
                raise ValueError("group is not a group id")
            if type(epoch) is not int or epoch < 0:
                raise ValueError("epoch is not a non-negative integer")
            recorded = tuple((str(n), i) for n, i in incarnations)
            if any(type(i) is not int for _, i in recorded):
                raise ValueError("an incarnation is not an integer")
            return cls(
                frozenset(str(v) for v in voters),
                frozenset(str(v) for v in learners),
                tuple((str(a), str(b)) for a, b in addresses),
                epoch,
                tuple(sorted(recorded)),
                group,
            )
        except (ValueError, TypeError) as e:
            raise MalformedMessage(f"bad configuration: {e}")


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """
    What a snapshot covers: the last included index/term and the
    configuration in force there.
    """

    index: int
    term: int
    configuration: Configuration


@dataclass(frozen=True)
class Message:
    """
    Base of every Raft RPC: sender, receiver and the sender's term, and the
    sender's Raft group id (L{suite.raft.groupid}; 0: the sender has none).
    The group id is encoded last, after every other field, and left out
    while it is 0 (the format of nodes without group ids).
    """

    code: ClassVar[int] = -1
    src: str
    dst: str
    term: int
    group: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class RequestVote(Message):
    code: ClassVar[int] = 1
    lastLogIndex: int
    lastLogTerm: int
    preVote: bool = False
    transfer: bool = False


@dataclass(frozen=True)
class RequestVoteResponse(Message):
    code: ClassVar[int] = 2
    granted: bool
    preVote: bool = False
    #: Whether the voter's storage is the incarnation its configuration
    #: records (or may be trusted without one): only intact votes make a
    #: majority; any vote counts toward a unanimous election.
    intact: bool = True


@dataclass(frozen=True)
class AppendEntries(Message):
    code: ClassVar[int] = 3
    prevLogIndex: int
    prevLogTerm: int
    entries: tuple[Entry, ...]
    commit: int
    epoch: int = 0


@dataclass(frozen=True)
class AppendEntriesResponse(Message):
    code: ClassVar[int] = 4
    success: bool
    matchIndex: int
    rejectIndex: int = 0
    conflictTerm: int = 0
    conflictIndex: int = 0
    epoch: int = 0
    incarnation: int = 0


@dataclass(frozen=True)
class Heartbeat(Message):
    code: ClassVar[int] = 5
    commit: int
    context: int = 0


@dataclass(frozen=True)
class HeartbeatResponse(Message):
    code: ClassVar[int] = 6
    context: int = 0
    lastIndex: int = 0
    incarnation: int = 0


@dataclass(frozen=True)
class InstallSnapshot(Message):
    code: ClassVar[int] = 7
    meta: SnapshotMeta
    offset: int
    chunk: bytes
    done: bool
    total: int


@dataclass(frozen=True)
class InstallSnapshotResponse(Message):
    code: ClassVar[int] = 8
    index: int
    nextOffset: int
    done: bool
    incarnation: int = 0


@dataclass(frozen=True)
class TimeoutNow(Message):
    code: ClassVar[int] = 9


@dataclass(frozen=True)
class GroupMismatch(Message):
    """
    The answer to a request from a node of another Raft group: the request
    was refused, and C{reason} says why (C{group} is the refusing node's).
    Never answered, and its term is not taken by anyone.
    """

    code: ClassVar[int] = 10
    reason: str


@dataclass(frozen=True)
class CommitQuery(Message):
    """
    A replica stopped without hearing that a configuration excluding it
    committed asks a member of its group whether the entry at C{index}, of
    term C{entryTerm}, is committed in the member's log
    (L{suite.raft.commitproof}).  C{group}: the asker's group id.  Not a
    Raft RPC: its C{term} is 0 and nobody takes it; a node never handles it
    as one (L{suite.raft.node.RaftNode.receive} drops it).
    """

    code: ClassVar[int] = 11
    index: int
    entryTerm: int


@dataclass(frozen=True)
class CommitAnswer(Message):
    """
    The answer to a L{CommitQuery}: C{committed} when the answering
    member's log holds an entry at C{index} of term C{entryTerm} and its
    commit index is at least C{index}.  C{group}: the answerer's group id.
    Its C{term} is 0, as the query's.
    """

    code: ClassVar[int] = 12
    index: int
    entryTerm: int
    committed: bool


MESSAGE_TYPES: dict[int, type[Message]] = {
    t.code: t
    for t in (
        RequestVote,
        RequestVoteResponse,
        AppendEntries,
        AppendEntriesResponse,
        Heartbeat,
        HeartbeatResponse,
        InstallSnapshot,
        InstallSnapshotResponse,
        TimeoutNow,
        GroupMismatch,
        CommitQuery,
        CommitAnswer,
    )
}
_FIELDS: dict[int, list[tuple[str, Any]]] = {
    code: [(f.name, f.type) for f in fields(t) if f.name != "group"] for code, t in MESSAGE_TYPES.items()
}
#: Longest accepted group-mismatch reason.
MAX_REASON = 512
#: Trailing fields added later (the responder's incarnation, a vote's
#: intactness): left out when they hold their default, so a node without
#: incarnations speaks the earlier format, and accepted when missing.  The
#: group id follows them when it is set (then they are always present).
_OPTIONAL_TAIL: dict[int, tuple[str, Any]] = {
    RequestVoteResponse.code: ("intact", True),
    AppendEntriesResponse.code: ("incarnation", 0),
    HeartbeatResponse.code: ("incarnation", 0),
    InstallSnapshotResponse.code: ("incarnation", 0),
}


def _encodeValue(value: Any) -> Any:
    if isinstance(value, SnapshotMeta):
        return [value.index, value.term, value.configuration.encode()]
    return value


def encodeMessage(message: Message) -> bytes:
    """
    Encode C{message} as a msgpack array.
    """
    if type(message) is AppendEntries:
        # The hot path: entries are tuples msgpack packs as arrays directly.
        m = message
        body = [3, m.src, m.dst, m.term, m.prevLogIndex, m.prevLogTerm, m.entries, m.commit, m.epoch]
        if m.group:
            body.append(m.group)
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed
    values = [_encodeValue(getattr(message, name)) for name, _ in _FIELDS[message.code]]
    if message.group:
        values.append(message.group)
    else:
        tail = _OPTIONAL_TAIL.get(message.code)
        if tail is not None and values[-1] == tail[1] and type(values[-1]) is type(tail[1]):
            values.pop()
    packed = msgpack.packb([message.code, *values], use_bin_type=True)
    return packed


_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "bytes": (bytes,),
}


_KINDS = frozenset((NORMAL, NOOP, CONFIG))


def _entries(value: Any) -> tuple[Entry, ...]:
    """
    Validate and build the entries of an AppendEntries (arrays decoded as
    tuples): exactly six fields of the right types each.
    """
    if type(value) is not tuple:
        raise MalformedMessage("field entries is not an array")
    out = []
    for raw in value:
        if type(raw) is not tuple or len(raw) != 6:
            raise MalformedMessage("entry is not a 6-element array")
        term, index, kind, data, client, seq = raw
        if not (
            type(term) is int
            and type(index) is int
            and kind in _KINDS
            and type(kind) is int
            and type(data) is bytes
            and type(client) is str
            and type(seq) is int
        ):
            raise MalformedMessage("entry has a field of the wrong type")
        out.append(Entry(term, index, kind, data, client, seq))
    return tuple(out)


def _groupId(value: Any) -> int:
    if type(value) is not int or not 0 < value < 1 << 64:
        raise MalformedMessage("field group is not a group id")
    return value


def _decodeAppendEntries(raw: tuple[Any, ...]) -> AppendEntries:
    if len(raw) not in (9, 10):
        raise MalformedMessage(f"message type 3 has {len(raw) - 1} fields, wanted 8 or 9")
    _, src, dst, term, prevIndex, prevTerm, entries, commit, epoch = raw[:9]
    group = _groupId(raw[9]) if len(raw) == 10 else 0
    if not (type(src) is str and type(dst) is str):
        raise MalformedMessage("field src or dst has the wrong type")
    for value in (term, prevIndex, prevTerm, commit, epoch):
        if type(value) is not int:
            raise MalformedMessage("an integer field has the wrong type")
    return AppendEntries(src, dst, term, prevIndex, prevTerm, _entries(entries), commit, epoch, group=group)


def decodeMessage(frame: bytes) -> Message:
    """
    Decode and validate one message; raise L{MalformedMessage} on anything
    that is not exactly a known message.
    """
    try:
        raw = msgpack.unpackb(frame, raw=False, use_list=False, strict_map_key=True, max_bin_len=len(frame))
    except Exception as e:  # untrusted input: any decoder error is malformed
        raise MalformedMessage(f"not msgpack: {e.__class__.__name__}")
    if type(raw) is not tuple or not raw or type(raw[0]) is not int or raw[0] not in MESSAGE_TYPES:
        raise MalformedMessage("unknown message type")
    code = raw[0]
    if code == 3:
        return _decodeAppendEntries(raw)
    spec = _FIELDS[code]
    kwargs: dict[str, Any] = {}
    if len(raw) == len(spec) + 2:
        kwargs["group"] = _groupId(raw[-1])
        raw = raw[:-1]
    elif code in _OPTIONAL_TAIL and len(raw) == len(spec):
        spec = spec[:-1]
    if len(raw) != len(spec) + 1:
        raise MalformedMessage(f"message type {code} has {len(raw) - 1} fields, wanted {len(spec)}")
    for (name, typ), value in zip(spec, raw[1:], strict=True):
        typ = str(typ)
        if typ == "SnapshotMeta":
            if not (isinstance(value, tuple) and len(value) == 3 and isinstance(value[2], bytes)):
                raise MalformedMessage("bad snapshot metadata")
            if not (isinstance(value[0], int) and isinstance(value[1], int)):
                raise MalformedMessage("bad snapshot metadata")
            value = SnapshotMeta(value[0], value[1], Configuration.decode(value[2]))
        elif typ.startswith("tuple"):
            value = _entries(value)
        else:
            if typ == "int" and isinstance(value, bool):
                raise MalformedMessage(f"field {name} has the wrong type")
            if not isinstance(value, _SCALARS[typ]):
                raise MalformedMessage(f"field {name} has the wrong type")
            if name == "reason" and isinstance(value, str) and len(value) > MAX_REASON:
                raise MalformedMessage(f"field {name} is too long")
        kwargs[name] = value
    return MESSAGE_TYPES[code](**kwargs)
