"""
The forwarding headers every tunnelled HTTP request carries, whatever the
visitor's protocol (HTTP/1.1, HTTP/2 or HTTP/3): C{X-Forwarded-For},
C{X-Forwarded-Proto} and C{Forwarded} (RFC 7239) are set by the gateway
(a visitor's own values are dropped), and C{Host} is what the visitor
asked for, port included.

HTTP/1.1 connections are spliced, so L{RequestRewriter} follows the
request framing of the visitor-to-target byte stream (heads, bodies by
C{Content-Length} or chunks) and rewrites each request head on the way;
a connection is bound to its first request's host, and a later head that
names another host is refused (L{HostChanged}), never forwarded.
"""

from __future__ import annotations

__all__ = [
    "FORWARDING_HEADERS",
    "forwardingLines",
    "forwardedValue",
    "hostConflict",
    "missingHost",
    "targetAuthority",
    "RequestRewriter",
    "RequestError",
    "HostChanged",
    "normalHost",
]

#: Request headers the gateway owns (lower case).
FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"})
#: Longest chunk-size or trailer line accepted in a chunked request body.
_LINE_LIMIT = 8 * 1024

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _OPAQUE = range(7)


class RequestError(Exception):
    """
    A later request on a spliced HTTP/1.1 connection broke the framing or
    the size limit; the connection is closed.
    """


class HostChanged(RequestError):
    """
    A later request on an HTTP/1.1 connection names another host than the
    one the connection is bound to (its first request's): it must not
    reach the first host's tunnel.

    @ivar host: the host the request names (normalised, L{normalHost}).
    @ivar bound: the host the connection is bound to.
    """

    def __init__(self, host: bytes, bound: bytes) -> None:
        self.host = host.decode("ascii", "replace")
        self.bound = bound.decode("ascii", "replace")
        super().__init__(
            f"a later request names {self.host}, this connection is bound to {self.bound}: "
            "send the request on a new connection"
        )


def forwardingLines(ip: str, host: str) -> bytes:
    """
    The forwarding header lines (CRLF-terminated) for visitor address
    C{ip} asking for C{host} (the Host / C{:authority} value) over TLS.
    """
    return (
        f"X-Forwarded-For: {ip}\r\nX-Forwarded-Proto: https\r\n".encode("ascii", "replace")
        + b"Forwarded: "
        + forwardedValue(ip, host)
        + b"\r\n"
    )


def forwardedValue(ip: str, host: str) -> bytes:
    """
    The RFC 7239 C{Forwarded} value for visitor C{ip} asking for C{host}.
    """
    node = f'"[{ip}]"' if ":" in ip else ip
    safeHost = "".join(c for c in host if c.isprintable() and c not in '"\\')
    return f'for={node};proto=https;host="{safeHost}"'.encode("ascii", "replace")


def _headerValue(lower: bytes, head: bytes, name: bytes) -> bytes | None:
    """
    The value of the first header C{name} (lower case, with its CRLF before
    and colon after) in C{head}, found through its lower-cased copy.
    """
    start = lower.find(name)
    if start < 0:
        return None
    start += len(name)
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


_HOST = b"\r\nhost:"


def _bareHost(authority: bytes) -> bytes:
    """
    The host of a (lower-case) authority C{[USERINFO@]HOST[:PORT]}: its port
    and user information dropped, IPv6 brackets kept.
    """
    authority = authority.rpartition(b"@")[2]
    if authority.startswith(b"["):
        return authority[: authority.find(b"]") + 1]
    return authority.rpartition(b":")[0] if b":" in authority else authority


def normalHost(authority: bytes) -> bytes:
    """
    The host of an authority (a C{Host} value) as the gateway compares it:
    lower case, without port, user information or a trailing dot (the
    rules of L{suite.specter.gateway.certnames}).
    """
    host = _bareHost(authority.strip().lower())
    return host[:-1] if host.endswith(b".") else host


def targetAuthority(lower: bytes) -> bytes | None:
    """
    The authority of an absolute-form request target (C{http://AUTHORITY/...})
    or of a C{CONNECT} request's authority-form target (C{HOST:PORT}), None
    for any other form.

    @param lower: the head, lower-cased.
    """
    if lower.startswith(b"connect "):
        line = lower[: lower.find(b"\r\n")] if b"\r\n" in lower else lower
        return line[8:].partition(b" ")[0] or None
    space = lower.find(b" ")
    if lower[space + 1 : space + 5] != b"http":
        return None  # the usual origin-form target
    line = lower[: lower.find(b"\r\n")] if b"\r\n" in lower else lower
    target = line[space + 1 :].partition(b" ")[0]
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme not in (b"http", b"https"):
        return None
    for stop in b"/?#":
        rest = rest.split(bytes((stop,)), 1)[0]
    return rest


def hostConflict(lower: bytes) -> str | None:
    """
    Why a request head must be refused for its C{Host} (RFC 9112 3.2 and
    5.1): a second C{Host} line, whitespace before a C{Host} colon, or a
    C{Host} naming another host than an absolute-form target or a
    C{CONNECT} target; None when nothing is wrong.

    @param lower: the head, lower-cased, without its blank line.
    """
    first = lower.find(_HOST)
    if first >= 0 and lower.find(_HOST, first + 7) >= 0:
        return "more than one Host header (RFC 9112 3.2)"
    if b"\r\nhost " in lower or b"\r\nhost\t" in lower:
        return "whitespace between the Host header name and its colon"
    if first < 0:
        return None
    rest = targetAuthority(lower)
    if rest is None:
        return None
    end = lower.find(b"\r\n", first + 7)
    named = lower[first + 7 : end if end >= 0 else len(lower)].strip()
    if _bareHost(rest) != _bareHost(named):
        return "the Host header disagrees with the request target's host (RFC 9112 3.2.2)"
    return None


def missingHost(lower: bytes) -> str | None:
    """
    Why a request head without a C{Host} line must be refused: every
    request of a version other than HTTP/1.0 needs one (RFC 9112 3.2);
    None when the head has one or is HTTP/1.0 (routed by its absolute-form
    target's authority, else by the connection's SNI).

    @param lower: the head, lower-cased, without its blank line.
    """
    if lower.find(_HOST) >= 0:
        return None
    end = lower.find(b"\r\n")
    line = lower[:end] if end >= 0 else lower
    if line.endswith(b" http/1.0"):
        return None
    return "no Host header in an HTTP/1.1 request (RFC 9112 3.2)"


def _withoutForwarding(head: bytes) -> bytes:
    """
    C{head} without its forwarding header lines.

    @raise RequestError: if a header line has no colon.
    """
    lines = head.split(b"\r\n")
    kept = [lines[0]]
    for line in lines[1:]:
        name, sep, _ = line.partition(b":")
        if not sep:
            raise RequestError("malformed header line")
        if name.strip().lower() not in FORWARDING_HEADERS:
            kept.append(line)
    return b"\r\n".join(kept)


def _rewriteHead(
    head: bytes, ip: str, cache: dict[bytes, bytes], bound: bytes | None
) -> tuple[bytes, int, bool]:
    """
    Rewrite one request head (without its final blank line): the
    forwarding headers replaced.  Return the new head (with the blank
    line), the body length (-1: chunked) and whether the rest of the
    connection is opaque (CONNECT or an upgrade).  C{cache} keeps the
    forwarding lines by Host (a connection's requests share one).

    @param bound: the host (L{normalHost}) the connection is bound to, or
        None; a head naming another one (by its C{Host}, else its
        absolute-form target) is a L{HostChanged}.
    """
    lower = head.lower()
    if b"\r\nx-forwarded-" in lower or b"\r\nforwarded" in lower:
        head = _withoutForwarding(head)
        lower = head.lower()
    first = lower.find(b"\r\nhost")
    if (
        first >= 0
        and lower[first + 6 : first + 7] == b":"
        and lower.find(b"\r\nhost", first + 6) < 0
        and not lower.startswith(b"http", lower.find(b" ") + 1)
        and not lower.startswith(b"connect ")
    ):
        # the usual head: one Host line and an origin-form target
        end = lower.find(b"\r\n", first + 7)
        host = head[first + 7 : end if end >= 0 else len(head)].strip()
    else:
        target = targetAuthority(lower)
        if bound is not None and target and target not in cache and normalHost(target) != bound:
            # an absolute-form or CONNECT target naming another host: a
            # host change whatever its Host line says
            raise HostChanged(normalHost(target), bound)
        conflict = hostConflict(lower) or missingHost(lower)
        if conflict is not None:
            raise RequestError(conflict)
        # without a Host line (HTTP/1.0), the target's authority is the host
        host = _headerValue(lower, head, _HOST) or target or b""
    if bound is not None and host and host not in cache:
        # the host this head is for; a value seen before (a key of cache)
        # was found bound
        named = normalHost(host)
        if named != bound:
            raise HostChanged(named, bound)
    length = 0
    chunked = False
    encoding = _headerValue(lower, lower, b"\r\ntransfer-encoding:")
    if encoding is not None:
        chunked = b"chunked" in encoding
    else:
        declared = _headerValue(lower, head, b"\r\ncontent-length:")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise RequestError("malformed Content-Length") from None
            if length < 0:
                raise RequestError("negative Content-Length")
    opaque = b"\r\nupgrade:" in lower or head.startswith(b"CONNECT ")
    lines = cache.get(host)
    if lines is None:
        if len(cache) > 16:
            cache.clear()
        lines = cache[host] = forwardingLines(ip, host.decode("ascii", "replace"))
    return head + b"\r\n" + lines + b"\r\n", -1 if chunked else length, opaque


class RequestRewriter:
    """
    Follows the requests a visitor sends on one HTTP/1.1 connection and
    rewrites each head (see L{_rewriteHead}); bodies pass unchanged.
    A head with two C{Host} lines, a C{Host} other than its
    absolute-form or C{CONNECT} target's host, or no C{Host} in a request
    other than HTTP/1.0, is a L{RequestError}, and one naming (by its
    C{Host}, else its target, and a C{CONNECT} by its target too) another
    host than C{bound} a L{HostChanged} (checked once per distinct
    head: repeated heads come from L{heads}, which keeps only heads that
    passed, and C{bound} is set before the first head and never changes).
    After a CONNECT or an C{Upgrade} request the rest is passed through.

    @ivar limit: the longest request head accepted.
    """

    def __init__(self, ip: str, limit: int, bound: bytes | None = None) -> None:
        self.ip = ip
        self.limit = limit
        #: The host (L{normalHost}) the connection is bound to: a head
        #: naming another is a L{HostChanged}; None: not checked.
        self.bound = bound
        self.state = _HEAD
        self.buffer = b""
        self.remaining = 0
        self.cache: dict[bytes, bytes] = {}
        #: Rewritten heads by the head the visitor sent: clients repeat
        #: the same request head (the rewrite depends only on it and C{ip}).
        self.heads: dict[bytes, tuple[bytes, int, bool]] = {}

    def feed(self, data: bytes) -> bytes:
        """
        Bytes from the visitor in; the bytes for the target out.

        @raise RequestError: if a head is too long or malformed.
        """
        if self.state == _HEAD and not self.buffer and data[-4:] == b"\r\n\r\n":
            # the common read: one bodiless request whose head was seen
            # before (a known head holds no blank line, so it is all of it)
            known = self.heads.get(data[:-4])
            if known is not None and known[1] == 0 and not known[2]:
                return known[0]
        out: list[bytes] = []
        data = self.buffer + data
        self.buffer = b""
        while data:
            state = self.state
            if state == _OPAQUE:
                out.append(data)
                break
            if state == _BODY or state == _CHUNK_DATA:
                take = data[: self.remaining]
                out.append(take)
                self.remaining -= len(take)
                data = data[len(take) :]
                if self.remaining == 0:
                    self.state = _HEAD if state == _BODY else _CHUNK_END
                continue
            if state == _HEAD:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > self.limit:
                        raise RequestError(f"request headers exceed {self.limit} bytes")
                    self.buffer = data
                    break
                if end + 4 > self.limit:
                    raise RequestError(f"request headers exceed {self.limit} bytes")
                if data.startswith(b"\r\n"):  # stray CRLF between requests
                    out.append(b"\r\n")
                    data = data[2:]
                    continue
                head, data = data[:end], data[end + 4 :]
                known = self.heads.get(head)
                if known is None:
                    known = _rewriteHead(head, self.ip, self.cache, self.bound)
                    if len(self.heads) >= 32:
                        self.heads.clear()
                    if len(head) <= 2048:
                        self.heads[head] = known
                rewritten, length, opaque = known
                out.append(rewritten)
                if opaque:
                    self.state = _OPAQUE
                elif length < 0:
                    self.state = _CHUNK_SIZE
                elif length > 0:
                    self.state, self.remaining = _BODY, length
                continue
            # chunked body: size lines, data, CRLF, trailers
            end = data.find(b"\r\n")
            if end < 0:
                if len(data) > _LINE_LIMIT:
                    raise RequestError("chunked request body line too long")
                self.buffer = data
                break
            line, data = data[:end], data[end + 2 :]
            out.append(line + b"\r\n")
            if state == _CHUNK_SIZE:
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise RequestError("malformed chunk size") from None
                if size < 0:
                    raise RequestError("malformed chunk size")
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self.state, self.remaining = _CHUNK_DATA, size
            elif state == _CHUNK_END:
                if line:
                    raise RequestError("chunk data longer than its size")
                self.state = _CHUNK_SIZE
            elif state == _TRAILERS and not line:
                self.state = _HEAD
        return b"".join(out)
