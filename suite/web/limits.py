"""
A L{Site} that enforces request size limits.

Every HTTP surface of the suite serves through L{LimitedSite}:

  - a request line plus headers larger than C{maxHeaderBytes}, or more than
    C{maxHeaderCount} header lines, is answered C{431} with a JSON reason
    and the connection is closed;
  - a body declared (C{Content-Length}) larger than C{maxBodyBytes} is
    answered C{413} before any of it is read; a chunked body is counted as
    it arrives and answered C{413} as soon as it passes the limit.  The
    excess is discarded, never buffered.

HTTP/1.1 connections are checked at the channel; requests arriving over
HTTP/2 are checked by the request object (the excess body is dropped and
the request answered C{413}; headers past the same limits, as HPACK
decoded them, are answered C{431}, with one log line); a header block more
than four times C{maxHeaderBytes} (as sent or decoded) ends the HTTP/2
connection with C{GOAWAY} (L{suite.web.http2}).

A site made with C{localHostsOnly} (the admin sites, Constellation's
provider, clustor-cp and CEPtra's admin listener without TLS) also defends
its loopback connections against web pages: a request that arrived on a
loopback address must name a loopback address or C{localhost} in C{Host}
(C{421} otherwise: a DNS-rebinding page sends its own name there), and a
request other than GET/HEAD/OPTIONS carrying an C{Origin} that is not
loopback is answered C{403} (a page on another site posting to
C{http://127.0.0.1:PORT/...}).  Clients that are not browsers send no
C{Origin}, and C{Host} as they dialled.

A process whose Twisted has no HTTP/2 (C{twisted.web.http.H2_ENABLED} is
false: hyper-h2 missing, or C{twisted.web._http2} kept out of the process,
as the C{goop2} console script does) serves HTTP/1.1 through Twisted's own
switch and never imports L{suite.web.http2} or hyper-h2.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ISSLTransport, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from suite.netutil import peerText
from suite.web.endpoint import isLoopbackHost

if http.H2_ENABLED:
    from suite.web.http2 import LimitedHTTPChannelProtocol as _ChannelSwitch
else:
    # Without HTTP/2 only ALPN could ask for h2, and Twisted's switch refuses
    # it; hyper-h2 (about 1.4 MB resident) stays out of the process.
    _ChannelSwitch = http._GenericHTTPChannelProtocol  # type: ignore[misc]

__all__ = [
    "LimitedSite",
    "LimitedRequest",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_HEADER_COUNT",
    "DEFAULT_HEADER_TIMEOUT",
    "MIN_BODY_RATE",
]

log = Logger()
accessLog = Logger(namespace="suite.web.access")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_HEADER_COUNT = 100
#: Over HTTP/2 a header block up to this many times C{maxHeaderBytes} is
#: decoded and answered C{431}; a larger one ends the connection (GOAWAY).
HEADER_BLOCK_FACTOR = 4
#: How long a rejected connection keeps draining (and discarding) the
#: client's unread body so the client can read the error before the close.
DRAIN_SECONDS = 2.0
#: Idle connection timeout (seconds) unless the caller passes C{timeout}.
DEFAULT_IDLE_TIMEOUT = 60
#: Seconds from the first byte of a request to the end of its headers, and
#: the grace period of its body (see L{MIN_BODY_RATE}); unless the caller
#: passes C{headerTimeout}.  The idle timeout alone restarts on every byte,
#: so a client trickling a byte a minute would hold the connection forever.
DEFAULT_HEADER_TIMEOUT = 30
#: After the grace period a request body must average at least this many
#: bytes a second since its headers ended, or the request is answered 408.
MIN_BODY_RATE = 1024
DRAIN_BYTES = 1024 * 1024

_REASONS = {
    408: b"Request Timeout",
    421: b"Misdirected Request",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}


def _rawResponse(code: int, reason: str) -> bytes:
    body = json.dumps({"error": reason}, separators=(",", ":")).encode("utf-8") + b"\n"
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (code, _REASONS.get(code, b"Error")),
            b"Content-Type: application/json; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % (len(body),),
            b"Connection: close\r\n\r\n",
            body,
        ]
    )


#: Methods a page on another site may send without a preflight it cannot pass.
_SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


def _hostName(value: str) -> str:
    """
    The name or address of a C{Host} header value, without its port.
    """
    value = value.strip()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def _isLocalName(name: str) -> bool:
    name = name.rstrip(".").lower()
    return isLoopbackHost(name) or name.endswith(".localhost")


class LimitedRequest(Request):
    """
    A request that counts its body and drops whatever passes the site's
    C{maxBodyBytes}; it then answers C{413} instead of running the resource.
    """

    bodyTooLarge = False
    _bodyBytes = 0

    def _limit(self) -> int | None:
        site = getattr(self.channel, "site", None)
        return getattr(site, "maxBodyBytes", None)

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if length is not None and limit is not None and length > limit:
            self.bodyTooLarge = True
            super().gotLength(0)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.bodyTooLarge:
            return
        self._bodyBytes += len(data)
        limit = self._limit()
        if limit is not None and self._bodyBytes > limit:
            self.bodyTooLarge = True
            channel = self.channel
            reject = getattr(channel, "rejectBody", None)
            if reject is not None:
                reject()
            return
        super().handleContentChunk(data)

    def _refuse(self, code: int, reason: str) -> None:
        if self.clientproto == b"HTTP/2":
            # Over HTTP/1.1 the channel has logged its own line.
            log.info(
                "rejected request from {peer}: {code} {reason}",
                peer=str(getattr(self.getClientAddress(), "host", None) or self.getClientAddress()),
                code=code,
                reason=reason,
            )
        self.setResponseCode(code, _REASONS.get(code))
        self.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        if self.clientproto != b"HTTP/2":
            self.setHeader(b"Connection", b"close")
        self.write(json.dumps({"error": reason}).encode("utf-8") + b"\n")
        self.finish()

    def _headersTooLarge(self) -> str | None:
        """
        Over HTTP/2 the channel's header checks do not run: the same limits,
        applied to the decoded request line and headers.
        """
        if self.clientproto != b"HTTP/2":
            return None
        site = getattr(self.channel, "site", None)
        maxBytes = getattr(site, "maxHeaderBytes", None)
        maxCount = getattr(site, "maxHeaderCount", None)
        values = [(k, v) for k, vs in self.requestHeaders.getAllRawHeaders() for v in vs]
        size = len(self.method) + len(self.uri) + sum(len(k) + len(v) + 4 for k, v in values)
        if maxBytes is not None and size > maxBytes:
            return f"request headers larger than {maxBytes} bytes"
        if maxCount is not None and len(values) > maxCount:
            return f"more than {maxCount} request headers"
        return None

    def _foreignPage(self) -> tuple[int, str] | None:
        """
        On a C{localHostsOnly} site, why a request that arrived on a
        loopback address is refused as coming from a web page: a C{Host}
        that is not local (DNS rebinding), or an unsafe method with an
        C{Origin} that is not local (a cross-site post).
        """
        site = getattr(self.channel, "site", None)
        if not getattr(site, "localHostsOnly", False):
            return None
        local = self.getHost()
        if not isinstance(local, (IPv4Address, IPv6Address)) or not isLoopbackHost(local.host):
            return None
        rawHost = self.getHeader(b"host")
        host = None if rawHost is None else rawHost.decode("latin-1")
        if host is not None and not _isLocalName(_hostName(host)):
            return 421, (
                f"Host {host[:100]!r} is not this loopback listener: "
                f"use 127.0.0.1, [::1] or localhost (a page on another site cannot use it)"
            )
        rawOrigin = self.getHeader(b"origin")
        origin = None if rawOrigin is None else rawOrigin.decode("latin-1")
        if self.method not in _SAFE_METHODS and origin is not None:
            try:
                name = urlsplit(origin.strip()).hostname
            except ValueError:
                name = None
            if name is None or not _isLocalName(name):
                return (
                    403,
                    f"{self.method.decode('ascii', 'replace')} from a web page (Origin {origin[:100]!r}) refused",
                )
        return None

    def process(self) -> None:
        foreign = self._foreignPage()
        if foreign is not None:
            if self.clientproto != b"HTTP/2":  # _refuse logs those
                log.info(
                    "rejected request from {peer}: {code} {reason}",
                    peer=str(getattr(self.getClientAddress(), "host", None) or self.getClientAddress()),
                    code=foreign[0],
                    reason=foreign[1],
                )
            self._refuse(*foreign)
            return
        if self.bodyTooLarge:
            self._refuse(413, f"request body larger than {self._limit()} bytes")
            return
        tooLarge = self._headersTooLarge()
        if tooLarge is not None:
            self._refuse(431, tooLarge)
            return
        super().process()

    def processingFailed(self, reason: Failure) -> Failure:
        """
        A resource raised: log the traceback, answer a JSON 500 without it.
        """
        log.failure("request {method} {path} failed", reason, method=self.method, path=self.path)
        if self.startedWriting:
            self.finish()
            return reason
        body = json.dumps({"error": "internal error"}).encode("utf-8") + b"\n"
        self.setResponseCode(500)
        self.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        self.setHeader(b"Content-Length", b"%d" % (len(body),))
        self.write(body)
        self.finish()
        return reason


class LimitedChannel(http.HTTPChannel):
    """
    An HTTP/1.1 channel enforcing the owning site's header and body limits.
    """

    site: LimitedSite
    _rejected = False
    _drained = 0
    _headerBytes = 0
    _headerCount = 0
    _inHeaders = False
    _drainCall: Any = None
    #: The header deadline of the request being read, if one is running.
    _headCall: Any = None
    #: When the body of the request being read started (its headers ended).
    _bodyStarted: float | None = None
    _bodyRead = 0

    def _limits(self) -> LimitedSite:
        return self.site

    def reject(self, code: int, reason: str) -> None:
        """
        Answer C{code} with a JSON C{reason} now and close the connection,
        discarding (not buffering) whatever the client still sends.
        """
        if self._rejected:
            return
        self._rejected = True
        log.info(
            "rejected request from {peer}: {code} {reason}",
            peer=peerText(self.transport),
            code=code,
            reason=reason,
        )
        self.setTimeout(None)
        self._cancelHead()
        self._bodyStarted = None
        assert self.transport is not None
        self.transport.write(_rawResponse(code, reason))
        self.persistent = False
        # Half-close: the client sees the end of the response at once while
        # we keep reading (and discarding) what it is still sending.
        # Not over TLS: its wrapper would half-close the TCP connection under
        # the TLS session, which then fails (a traceback) at the client's
        # close_notify; the drain timer closes it instead.
        halfClose = getattr(self.transport, "loseWriteConnection", None)
        if halfClose is not None and not ISSLTransport.providedBy(self.transport):
            halfClose()
        self._drainCall = self.callLater(DRAIN_SECONDS, self._closeRejected)

    def _closeRejected(self) -> None:
        self._drainCall = None
        if self.transport is not None:
            self.transport.loseConnection()

    def rejectBody(self) -> None:
        """
        A chunked body passed C{maxBodyBytes}.
        """
        self.reject(413, f"request body larger than {self._limits().maxBodyBytes} bytes")

    def _cancelHead(self) -> None:
        if self._headCall is not None and self._headCall.active():
            self._headCall.cancel()
        self._headCall = None

    def _headLate(self) -> None:
        self._headCall = None
        self.reject(408, f"request headers not received within {self._limits().headerTimeout:g} seconds")

    def _bodyTooSlow(self, size: int) -> bool:
        """
        Count C{size} more body bytes; whether the body has fallen below
        L{MIN_BODY_RATE} after the grace period (then it is answered 408).
        """
        if self._bodyStarted is None:
            return False
        self._bodyRead += size
        limits = self._limits()
        elapsed = limits.reactor.seconds() - self._bodyStarted - limits.headerTimeout
        if elapsed <= 0 or self._bodyRead >= elapsed * MIN_BODY_RATE:
            return False
        self.reject(
            408,
            f"request body slower than {MIN_BODY_RATE} bytes a second after {limits.headerTimeout:g} seconds",
        )
        return True

    def dataReceived(self, data: bytes) -> None:
        if self._rejected:
            self._drained += len(data)
            if self._drained > DRAIN_BYTES:
                if ITCPTransport.providedBy(self.transport):
                    self.transport.abortConnection()
                elif self.transport is not None:
                    self.transport.loseConnection()
            return
        limits = self._limits()
        if self.line_mode and self._headCall is None and limits.headerTimeout:
            # The first bytes of a request's head: it must end in time.
            self._headCall = self.callLater(limits.headerTimeout, self._headLate)
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self._rejected:
            self._drained += len(data)
            return
        if self._bodyTooSlow(len(data)):
            return
        super().rawDataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        self._cancelHead()
        super().connectionLost(reason)

    def lineReceived(self, line: bytes) -> None:
        if self._rejected:
            return
        limits = self._limits()
        if not self._inHeaders:
            self._inHeaders = True
            self._headerBytes = 0
            self._headerCount = 0
        self._headerBytes += len(line) + 2
        if self._headerBytes > limits.maxHeaderBytes:
            self.reject(431, f"request headers larger than {limits.maxHeaderBytes} bytes")
            return
        if line and line[:1] not in (b" ", b"\t"):
            self._headerCount += 1
            # The request line is not a header.
            if self._headerCount - 1 > limits.maxHeaderCount:
                self.reject(431, f"more than {limits.maxHeaderCount} request headers")
                return
        if not line and self._headerCount > 0:
            self._inHeaders = False
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reject(431, f"request headers larger than {self._limits().maxHeaderBytes} bytes")

    def allHeadersReceived(self) -> None:
        self._cancelHead()
        limits = self._limits()
        length = self.length
        if length is not None and length > limits.maxBodyBytes:
            self.reject(413, f"request body larger than {limits.maxBodyBytes} bytes")
            return
        self._bodyStarted = limits.reactor.seconds() if limits.headerTimeout else None
        self._bodyRead = 0
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._bodyStarted = None
        if self._rejected:
            return
        super().allContentReceived()


class LimitedSite(Site):
    """
    A L{Site} with request size limits (see the module docstring).

    @param maxBodyBytes: largest accepted request body (default 1 MiB).
    @param maxHeaderBytes: largest request line plus headers (default 16 KiB).
    @param maxHeaderCount: most header lines (default 100).
    @param maxHeaderBlockBytes: over HTTP/2, the largest header block
        (compressed, C{HEADERS} plus C{CONTINUATION}s, and decoded) before
        the connection ends with C{GOAWAY} (default four times
        C{maxHeaderBytes}); smaller ones over the limits above get C{431}.
    @param accessLogLevel: level of the one access-log event per request
        (method, path without the query string, code, bytes, peer); debug by
        default so health probes and scrapes stay quiet.
    @param localHostsOnly: refuse, on connections that arrived on a
        loopback address, requests from web pages (see the module
        docstring: C{421} for a foreign C{Host}, C{403} for a foreign
        C{Origin} on an unsafe method).
    @param headerTimeout: seconds from a request's first byte to the end of
        its headers, and the grace period after which its body must average
        L{MIN_BODY_RATE} (default 30; 0 turns both off); a request that
        misses either is answered C{408} and the connection closed.
    """

    requestFactory = LimitedRequest

    def __init__(
        self,
        resource: IResource,
        maxBodyBytes: int = DEFAULT_MAX_BODY_BYTES,
        maxHeaderBytes: int = DEFAULT_MAX_HEADER_BYTES,
        maxHeaderCount: int = DEFAULT_MAX_HEADER_COUNT,
        maxHeaderBlockBytes: int | None = None,
        accessLogLevel: LogLevel = LogLevel.debug,
        headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
        localHostsOnly: bool = False,
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("maxBodyBytes", maxBodyBytes),
            ("maxHeaderBytes", maxHeaderBytes),
            ("maxHeaderCount", maxHeaderCount),
            ("maxHeaderBlockBytes", 0 if maxHeaderBlockBytes is None else maxHeaderBlockBytes),
        ):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        if not isinstance(headerTimeout, (int, float)) or not headerTimeout >= 0:
            raise ValueError(f"headerTimeout must be a non-negative number of seconds, not {headerTimeout!r}")
        kwargs.setdefault("timeout", DEFAULT_IDLE_TIMEOUT)
        super().__init__(resource, **kwargs)
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.maxHeaderBlockBytes = (
            HEADER_BLOCK_FACTOR * maxHeaderBytes if maxHeaderBlockBytes is None else maxHeaderBlockBytes
        )
        self.accessLogLevel = accessLogLevel
        self.headerTimeout = headerTimeout
        self.localHostsOnly = localHostsOnly

    def log(self, request: Any) -> None:
        """
        One structured access-log event per request, through
        L{twisted.logger} (never a log file, never the query string, which
        may carry tokens).
        """
        try:
            peer = request.getClientAddress()
            who = getattr(peer, "host", None) or str(peer)
        except Exception:  # only names the peer in the access log
            who = "-"
        path = (getattr(request, "path", b"") or b"").decode("utf-8", "replace")
        method = (getattr(request, "method", b"") or b"").decode("ascii", "replace")
        accessLog.emit(
            self.accessLogLevel,
            "{method} {path} {code} {bytes}",
            method=method,
            path=path,
            code=getattr(request, "code", 0),
            bytes=getattr(request, "sentLength", 0),
            peer=who,
        )

    def protocol(self) -> Any:
        channel = LimitedChannel()
        channel.MAX_LENGTH = self.maxHeaderBytes + 2
        # Let our own checks answer first; these are the stock backstops.
        channel.totalHeadersSize = self.maxHeaderBytes + 1024
        channel.maxHeaders = self.maxHeaderCount + 1
        protocol = _ChannelSwitch(channel)
        protocol.maxHeaderBlockBytes = self.maxHeaderBlockBytes
        return protocol
