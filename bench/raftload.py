"""
Closed-loop write load for bench/raft.py: N connections to the leader
(mTLS), each carrying K sessions (C{--inflight}, default 1; a session is a
client id with one write outstanding at a time), so K requests are
pipelined per connection, speaking the client protocol of suite.raft.api
(length-prefixed msgpack, request C{[id, op, key, value, client, seq]},
response C{[id, ok, value, error, leader]}).

Only acknowledged writes (C{ok} true, matching request id) are counted; a
refusal is retried with the same sequence number (as
L{suite.raft.client.RaftClient} does) and counted once it is acknowledged.
It uses the standard library's C{ssl} and C{selectors} instead of Twisted
and pyOpenSSL so that the generator, which shares the machine's cores with
the three nodes, spends as little CPU per write as it can (wrk plays the
same role for etcd).

    python bench/raftload.py --cert-dir DIR --server n1=127.0.0.1:7101 ... \\
        --clients 64 --seconds 8 [--inflight K]

Prints one line: C{writes=N seconds=S retries=R leader=ID cpu=S} (cpu: this
process's CPU time over the run).
"""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import struct
import sys
import time
import uuid

import _benchcli
import msgpack

HEADLINE = ["writes", "seconds", "retries", "leader", "cpu"]

LENGTH = struct.Struct(">I")


def context(certDir: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(os.path.join(certDir, "ca.crt"))
    ctx.load_cert_chain(os.path.join(certDir, "node.crt"), os.path.join(certDir, "node.key"))
    return ctx


def dial(ctx: ssl.SSLContext, address: str) -> ssl.SSLSocket:
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname=host)


def frame(request: list[object]) -> bytes:
    body: bytes = msgpack.packb(request, use_bin_type=True)
    return LENGTH.pack(len(body)) + body


def roundTrip(sock: ssl.SSLSocket, request: list[object]) -> list[object]:
    sock.sendall(frame(request))
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + LENGTH.unpack_from(buf)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return msgpack.unpackb(buf[4 : 4 + LENGTH.unpack_from(buf)[0]], raw=False)  # type: ignore[no-any-return]


def findLeader(ctx: ssl.SSLContext, servers: dict[str, str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for address in servers.values():
            try:
                with dial(ctx, address) as sock:
                    _, ok, status, _, leader = roundTrip(sock, [0, "status", "", None, "", 0])
            except OSError:
                continue
            if ok and isinstance(leader, str) and leader in servers:
                return leader
        time.sleep(0.1)
    raise SystemExit("no leader found")


class Session:
    """
    One client session (client id and sequence numbers): one write
    outstanding at a time.
    """

    def __init__(self, number: int) -> None:
        self.number = number
        self.id = uuid.uuid4().hex
        self.seq = 0
        self.n = 0
        self.frame = b""


class Client:
    """
    One mTLS connection carrying C{inflight} sessions, so up to that many
    requests are outstanding on it (pipelining); replies come back in any
    order and are matched by request id.  What a pass over the replies
    produces goes out in one C{send}.
    """

    def __init__(self, number: int, sock: ssl.SSLSocket, inflight: int) -> None:
        self.number = number
        self.sock = sock
        self.sessions = [Session(number * inflight + i) for i in range(inflight)]
        self.waiting: dict[int, Session] = {}
        self.reqId = 0
        self.buffer = bytearray()
        self.out: list[bytes] = []

    def next(self, session: Session) -> None:
        session.seq += 1
        self.reqId += 1
        key = f"k{session.number}-{session.n % 100}"
        session.frame = frame([self.reqId, "put", key, "v" * 16, session.id, session.seq])
        self.waiting[self.reqId] = session
        self.out.append(session.frame)

    def retry(self, reqId: int, session: Session) -> None:
        # Same request id and sequence number: applied at most once.
        self.waiting[reqId] = session
        self.out.append(session.frame)

    def flush(self) -> None:
        data = b"".join(self.out)
        self.out.clear()
        while data:
            try:
                sent = self.sock.send(data)
            except (ssl.SSLWantWriteError, BlockingIOError):
                selectors.DefaultSelector().select(0.01)
                continue
            data = data[sent:]

    def readFrames(self) -> list[list[object]]:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
            if not chunk:
                raise ConnectionError(f"client {self.number}: connection closed by the server")
            self.buffer += chunk
            if not self.sock.pending():
                break
        out = []
        buf = self.buffer
        offset = 0
        while len(buf) - offset >= 4:
            (length,) = LENGTH.unpack_from(buf, offset)
            if len(buf) - offset - 4 < length:
                break
            out.append(msgpack.unpackb(bytes(buf[offset + 4 : offset + 4 + length]), raw=False))
            offset += 4 + length
        del buf[:offset]
        return out


def run(
    certDir: str, servers: dict[str, str], clients: int, seconds: float, inflight: int = 1
) -> tuple[int, float, int, str]:
    ctx = context(certDir)
    leader = findLeader(ctx, servers)
    pool = []
    for i in range(clients):
        sock = dial(ctx, servers[leader])
        sock.setblocking(False)
        pool.append(Client(i, sock, inflight))
    selector = selectors.EpollSelector()
    for c in pool:
        selector.register(c.sock, selectors.EVENT_READ, c)
    writes = retries = 0
    started = time.monotonic()
    end = started + seconds
    for c in pool:
        for session in c.sessions:
            c.next(session)
        c.flush()
    busy = len(pool) * inflight
    while busy:
        for key, _ in selector.select(2.0):
            c = key.data
            for reqId, ok, _value, error, _leader in c.readFrames():
                session = c.waiting.pop(reqId, None)  # type: ignore[call-overload]
                if session is None:
                    raise SystemExit(f"client {c.number}: answer to unknown request {reqId}")
                if not ok:
                    retries += 1
                    if retries > 1000:
                        raise SystemExit(f"too many refusals; last: {error}")
                    c.retry(reqId, session)  # type: ignore[arg-type]
                    continue
                writes += 1
                session.n += 1
                if time.monotonic() < end:
                    c.next(session)
                else:
                    busy -= 1
            if c.out:
                c.flush()
        if time.monotonic() > end + 10:
            raise SystemExit("writes still outstanding 10 s after the end")
    elapsed = time.monotonic() - started
    for c in pool:
        c.sock.close()
    return writes, elapsed, retries, leader


def main() -> None:
    import gc

    # As in the node processes and bench/raft.py: keep the collector out of the way.
    gc.freeze()
    gc.set_threshold(20000, 50, 50)
    parser = _benchcli.parser(__doc__, HEADLINE)
    parser.add_argument("--cert-dir", required=True, help="the client's certificate directory")
    parser.add_argument("--server", action="append", required=True, help="ID=HOST:PORT (repeat)")
    parser.add_argument("--clients", type=int, default=64, help="connections")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the run")
    parser.add_argument(
        "--inflight", type=int, default=1, help="sessions (outstanding writes) per connection"
    )
    args = parser.parse_args()
    servers = dict(s.split("=", 1) for s in args.server)
    cpu = time.process_time()
    _benchcli.setPhase("closed-loop writes")
    writes, elapsed, retries, leader = run(args.cert_dir, servers, args.clients, args.seconds, args.inflight)
    cpu = time.process_time() - cpu
    sys.stdout.write(
        f"writes={writes} seconds={elapsed:.3f} retries={retries} leader={leader} cpu={cpu:.3f}\n"
    )


if __name__ == "__main__":
    _benchcli.run(main)
