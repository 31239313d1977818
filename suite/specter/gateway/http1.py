"""
The HTTP/1.1 the gateway speaks to tunnel targets for HTTP/2 and HTTP/3
visitors: request heads built from a visitor's header list, response heads
parsed, response bodies framed (C{Content-Length}, chunked, until close).

Pure functions and small parsers over bytes, no I/O: L{exchange} drives
them over a tunnel stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from suite.specter.gateway.forwarded import FORWARDING_HEADERS, forwardingLines

__all__ = [
    "BadMessage",
    "RequestHead",
    "ResponseHead",
    "ChunkedDecoder",
    "HeadCache",
    "buildRequestHead",
    "checkAuthority",
    "parseResponseHead",
    "HEAD_LIMIT",
    "HOP_BY_HOP",
]

#: Longest response head, or chunk-size / trailer line, accepted from a target.
HEAD_LIMIT = 64 * 1024
#: Connection-specific headers, never forwarded (lower case).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_DROP = HOP_BY_HOP | FORWARDING_HEADERS | {b"host", b"content-length"}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: Bytes never allowed in a value that ends up in an HTTP/1.1 head.
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
#: What an authority (RFC 3986 3.2: reg-name or IP literal, port) may hold,
#: user information aside.
_AUTHORITY = re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]+\Z")
#: The port a scheme's authority may leave out (RFC 3986 6.2.3).
_DEFAULT_PORTS = {b"https": b":443", b"http": b":80"}
_BODYLESS_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})


class BadMessage(Exception):
    """
    A message broke HTTP framing or header rules; the text says how.
    """


def _normalised(authority: bytes, scheme: bytes) -> bytes:
    """
    C{authority} after scheme-based normalisation (RFC 3986 6.2.3): lower
    case, the scheme's default port (else 443) left out.
    """
    authority = authority.lower()
    port = _DEFAULT_PORTS.get(scheme, b":443")
    if authority.endswith(port):
        return authority[: -len(port)]
    return authority


def checkAuthority(authority: bytes | None, host: bytes | None, scheme: bytes) -> bytes:
    """
    The one authority of an HTTP/2 or HTTP/3 request (RFC 9113 8.3.1, RFC
    9114 4.3.1): its C{:authority}, else its C{Host} header.  When both are
    present they must name the same host and port (compared after
    scheme-based normalisation: case, and the default port written out or
    not); neither may be empty, and the authority may not carry user
    information.  The caller has refused a second C{Host} or
    C{:authority}.

    @param authority: the C{:authority} value, None when absent.
    @param host: the C{Host} header's value, None when absent.
    @param scheme: the C{:scheme} value (C{b""} when absent).

    @raise BadMessage: when the request is malformed for its authority.
    """
    if authority is None:
        if host is None:
            raise BadMessage("no :authority or Host header")
        authority = host
    elif (
        host is not None and host != authority and _normalised(host, scheme) != _normalised(authority, scheme)
    ):
        raise BadMessage("the Host header disagrees with :authority (RFC 9113 8.3.1)")
    if not _AUTHORITY.match(authority):
        if b"@" in authority:
            raise BadMessage(":authority with user information (RFC 9113 8.3.1)")
        raise BadMessage("missing or malformed :authority")
    return authority


@dataclass(frozen=True)
class RequestHead:
    """
    An HTTP/2 or HTTP/3 request as the target will see it.

    @ivar host: the routing key: C{:authority} (else C{Host}) in lower
        case, without the port.
    @ivar authority: what the visitor asked for, port included (the
        C{Host} the target sees).
    @ivar head: the HTTP/1.1 request head up to and including the
        forwarding lines, without the body framing line and final CRLF.
    @ivar length: the declared C{Content-Length}, or -1.
    """

    method: bytes
    host: str
    authority: str
    head: bytes
    length: int

    def encode(self, bodyFollows: bool) -> bytes:
        """
        The complete head: with C{bodyFollows}, a body of the declared
        length or (none declared) chunked; without, an empty body.
        """
        if bodyFollows:
            if self.length >= 0:
                return b"%sContent-Length: %d\r\n\r\n" % (self.head, self.length)
            return self.head + b"Transfer-Encoding: chunked\r\n\r\n"
        if self.method in _BODYLESS_METHODS:
            return self.head + b"\r\n"
        return self.head + b"Content-Length: 0\r\n\r\n"


def buildRequestHead(headers: Sequence[tuple[bytes, bytes]], ip: str) -> RequestHead:
    """
    The L{RequestHead} of an HTTP/2 or HTTP/3 request from visitor C{ip}
    (C{headers}: pseudo-headers first, lower-case names).  Hop-by-hop and
    forwarding headers are dropped, cookies joined, the forwarding lines
    added (L{forwardingLines}).

    The request's authority is the one of L{checkAuthority}: routing and
    the target's C{Host} use that one value.

    @raise BadMessage: if the request is malformed (missing or unknown
        pseudo-headers, a header name that is not a lower-case token, a
        value with CR, LF or NUL, CONNECT, an authority refused by
        L{checkAuthority}).
    """
    method = path = scheme = b""
    authority: bytes | None = None
    regular: list[bytes] = []
    cookies: list[bytes] = []
    hostHeader: bytes | None = None
    length = -1
    pseudoDone = False
    for name, value in headers:
        if name[:1] == b":":
            if pseudoDone:
                raise BadMessage("pseudo-header after a regular header")
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                if authority is not None:
                    raise BadMessage("more than one :authority")
                authority = value
            elif name == b":scheme":
                scheme = value
            else:
                raise BadMessage(f"unknown pseudo-header {name.decode('ascii', 'replace')}")
            continue
        pseudoDone = True
        if not _TOKEN.match(name):
            raise BadMessage("header name is not a lower-case token")
        if _BAD_VALUE.search(value):
            raise BadMessage("header value with CR, LF or NUL")
        if name in _DROP:
            if name == b"host":
                if hostHeader is not None:
                    raise BadMessage("more than one Host header")
                hostHeader = value
            elif name == b"content-length":
                if not value.isdigit():
                    raise BadMessage("malformed content-length")
                length = int(value)
            elif name == b"te" and value.strip().lower() != b"trailers":
                raise BadMessage("te other than trailers")
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        regular += [name, b": ", value.strip(b" \t"), b"\r\n"]
    if method == b"CONNECT":
        raise BadMessage("CONNECT is not supported")
    if not method or not _METHOD.match(method):
        raise BadMessage("missing or malformed :method")
    if not path or _BAD_TARGET.search(path) or not (path[:1] == b"/" or path == b"*"):
        raise BadMessage("missing or malformed :path")
    authority = checkAuthority(authority, hostHeader, scheme)
    text = authority.decode("ascii", "replace")
    host = text.lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    if cookies:
        regular += [b"cookie: ", b"; ".join(cookies), b"\r\n"]
    head = b"".join(
        [method, b" ", path, b" HTTP/1.1\r\nHost: ", authority, b"\r\n", *regular, forwardingLines(ip, text)]
    )
    return RequestHead(method, host, text, head, length)


@dataclass(frozen=True)
class ResponseHead:
    """
    A target's response head.

    @ivar headers: the end-to-end headers (hop-by-hop ones dropped), names
        in lower case as HTTP/2 and HTTP/3 want them.
    @ivar length: the C{Content-Length}, or -1 when none applies.
    @ivar chunked: the body is chunked.
    @ivar keepAlive: the connection may carry another request afterwards
        (HTTP/1.1 without C{Connection: close}).
    @ivar interim: a 1xx answer (other than 101): the real one follows.
    """

    code: int
    phrase: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    length: int
    chunked: bool
    keepAlive: bool
    interim: bool = False


def parseResponseHead(block: bytes) -> ResponseHead:
    """
    Parse a response head (status line and header lines, without the
    blank line).

    @raise BadMessage: if it is malformed.
    """
    lines = block.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or len(status[1]) != 3:
        raise BadMessage("malformed status line")
    try:
        code = int(status[1])
    except ValueError:
        raise BadMessage("malformed status line") from None
    if code < 100:
        raise BadMessage("malformed status line")
    keepAlive = status[0] != b"HTTP/1.0"
    length = -1
    chunked = False
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadMessage("malformed header line")
        lower = name.strip().lower()
        value = value.strip()
        if not _TOKEN.match(lower):
            raise BadMessage("malformed header name")
        if lower in HOP_BY_HOP:
            if lower == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
            elif lower == b"connection" and b"close" in value.lower():
                keepAlive = False
            continue
        if lower == b"content-length":
            if not value.isdigit():
                raise BadMessage("malformed Content-Length")
            if length >= 0 and int(value) != length:
                raise BadMessage("conflicting Content-Length")
            length = int(value)
        headers.append((lower, value))
    interim = 100 <= code < 200 and code != 101
    return ResponseHead(
        code, status[2] if len(status) > 2 else b"", tuple(headers), length, chunked, keepAlive, interim
    )


class HeadCache:
    """
    Parsed response heads by their bytes: a target answers many requests
    with the same head (the C{Date} changes once a second).
    """

    def __init__(self, entries: int = 256) -> None:
        self.entries = entries
        self._heads: dict[bytes, ResponseHead] = {}

    def parse(self, block: bytes) -> ResponseHead:
        """
        L{parseResponseHead}, remembered.
        """
        found = self._heads.get(block)
        if found is None:
            found = parseResponseHead(block)
            if len(self._heads) >= self.entries:
                self._heads.clear()
            self._heads[block] = found
        return found


class ChunkedDecoder:
    """
    Decodes a chunked body: C{feed} hands the data of each chunk to
    C{deliver} and says where the body ended (after its trailers, which
    are skipped).
    """

    _SIZE, _DATA, _DATA_END, _TRAILERS = range(4)

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self.deliver = deliver
        self.state = self._SIZE
        self.left = 0
        self.buffer = b""

    def feed(self, data: bytes) -> int:
        """
        Decode C{data}; return -1 while the body goes on, else how many
        bytes of C{data} belong to it (the rest follows the response).

        @raise BadMessage: if the framing is broken.
        """
        buffered = len(self.buffer)
        buf = self.buffer + data if buffered else data
        self.buffer = b""
        pos = 0
        size = len(buf)
        while pos < size:
            state = self.state
            if state == self._DATA:
                take = min(self.left, size - pos)
                self.deliver(buf[pos : pos + take])
                pos += take
                self.left -= take
                if not self.left:
                    self.state = self._DATA_END
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if size - pos > HEAD_LIMIT:
                    raise BadMessage("chunk line too long")
                self.buffer = buf[pos:]
                return -1
            line = buf[pos:eol]
            pos = eol + 2
            if state == self._SIZE:
                text = line.split(b";", 1)[0].strip()
                try:
                    chunk = int(text, 16)
                except ValueError:
                    raise BadMessage("malformed chunk size") from None
                if chunk < 0 or text[:1] in (b"+", b"-"):
                    raise BadMessage("malformed chunk size")
                self.state = self._DATA if chunk else self._TRAILERS
                self.left = chunk
            elif state == self._DATA_END:
                if line:
                    raise BadMessage("chunk data longer than its size")
                self.state = self._SIZE
            elif not line:  # the blank line after the trailers
                return pos - buffered
        return -1
