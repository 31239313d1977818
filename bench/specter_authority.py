"""
CPU per call of the Specter gateway's HTTP/2 and HTTP/3 request head
check and build (L{suite.specter.gateway.http1.buildRequestHead}: the
pseudo-headers, the C{Host}/C{:authority} comparison, the HTTP/1.1 head).

An HTTP/2 connection builds each distinct header list once (later requests
with the same list reuse it); HTTP/3 builds every request's.  Three header
lists of a browser's size: C{:authority} alone, C{:authority} with an equal
C{Host}, and C{:authority} with a C{Host} differing only by case and the
default port (the normalised comparison).  The C{check_} figures are the
authority check alone (L{suite.specter.gateway.http1.checkAuthority}).

The C{covers_} figures are the check that the certificate presented on
the connection covers the request's host (421 otherwise,
L{suite.specter.gateway.certnames}): C{covers_cached} a connection's
remembered verdict (what every request head after the first for a host
pays), C{covers_exact} and C{covers_wildcard} the first look at a host
(a name of the certificate, a name under its wildcard),
C{covers_uncovered} one it does not cover, and C{names_per_connection}
what a new TLS connection pays to find its certificate's names (one
lookup by TLS context).

Usage::

    .venv/bin/python bench/specter_authority.py [--calls 200000]

The last line holds the figures (nanoseconds of CPU per call) as key=value
pairs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import _benchcli  # noqa: E402

from suite.specter.gateway.certnames import CertificateNames, Coverage, presentedNames  # noqa: E402
from suite.specter.gateway.http1 import buildRequestHead, checkAuthority  # noqa: E402

_COMMON = [
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"cookie", b"session=0123456789abcdef"),
    (b"sec-fetch-dest", b"document"),
]
_PSEUDO = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"app.example.com"),
    (b":path", b"/"),
]

CASES = {
    "authority_only": _PSEUDO + _COMMON,
    "authority_host_equal": _PSEUDO + [(b"host", b"app.example.com")] + _COMMON,
    "authority_host_normalised": _PSEUDO + [(b"host", b"App.Example.com:443")] + _COMMON,
}


def measure(headers: list[tuple[bytes, bytes]], calls: int) -> float:
    """
    CPU nanoseconds per L{buildRequestHead} call (best of three runs).
    """
    best = float("inf")
    for _ in range(3):
        start = time.process_time_ns()
        for _ in range(calls):
            buildRequestHead(headers, "192.0.2.7")
        best = min(best, (time.process_time_ns() - start) / calls)
    return best


def measureCheck(headers: list[tuple[bytes, bytes]], calls: int) -> float:
    """
    CPU nanoseconds per L{checkAuthority} call alone, on C{headers}'
    C{:authority} and C{Host} (best of three runs).
    """
    found = dict(headers)
    authority, host = found[b":authority"], found.get(b"host")
    best = float("inf")
    for _ in range(3):
        start = time.process_time_ns()
        for _ in range(calls):
            checkAuthority(authority, host, b"https")
        best = min(best, (time.process_time_ns() - start) / calls)
    return best


def _best(call: Any, calls: int) -> float:
    """
    CPU nanoseconds per C{call()} (best of three runs).
    """
    best = float("inf")
    for _ in range(3):
        start = time.process_time_ns()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time_ns() - start) / calls)
    return best


def measureCoverage(calls: int) -> dict[str, float]:
    """
    CPU nanoseconds per coverage check (see the module's docstring).
    """
    from OpenSSL import SSL
    from twisted.internet.ssl import CertificateOptions

    from suite.pki.mint import mintSelfSigned
    from suite.pki.tlsoptions import presentedCredentials

    cert, key = mintSelfSigned(["example.com", "*.example.com"], days=1)
    names = CertificateNames.fromCertificate(cert)
    coverage = Coverage(names)
    coverage.covers("app.example.com")
    handle = SSL.Connection(CertificateOptions(**presentedCredentials(key, cert, ())).getContext(), None)

    class _TLS:
        def getHandle(self) -> Any:
            return handle

    tls = _TLS()
    return {
        "covers_cached": _best(lambda: coverage.covers("app.example.com"), calls),
        "covers_exact": _best(lambda: names.covers("example.com"), calls),
        "covers_wildcard": _best(lambda: names.covers("app.example.com"), calls),
        "covers_uncovered": _best(lambda: names.covers("shop.customer.com"), calls),
        "names_per_connection": _best(lambda: Coverage(presentedNames(tls)), calls),  # type: ignore[arg-type]
    }


def main() -> None:
    coverage = [
        "covers_cached",
        "covers_exact",
        "covers_wildcard",
        "covers_uncovered",
        "names_per_connection",
    ]
    headline = [*CASES, *("check_" + name for name in CASES), *coverage]
    parser = _benchcli.parser(__doc__, [f"{name}_ns" for name in headline] + ["load"])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per figure")
    args = parser.parse_args()
    _benchcli.setPhase("request head build")
    figures = {name: measure(headers, args.calls) for name, headers in CASES.items()}
    _benchcli.setPhase("authority check")
    figures.update({"check_" + name: measureCheck(headers, args.calls) for name, headers in CASES.items()})
    _benchcli.setPhase("certificate coverage")
    figures.update(measureCoverage(args.calls))
    for name, ns in figures.items():
        print(f"{name}: {ns:.0f} ns CPU per call")
    print(" ".join(f"{name}_ns={ns:.0f}" for name, ns in figures.items()) + f" load={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    _benchcli.run(main)
