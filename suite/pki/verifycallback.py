"""
The per-connection OpenSSL verify callback of the suite's TLS endpoints:
OpenSSL checks the peer's chain, a chain error becomes a
L{VerificationError} in plain words, and on the leaf an L{IPeerVerifier}
checks the peer's names.  The refused connection's protocol learns why.
"""

from __future__ import annotations

from collections.abc import Callable

from OpenSSL import SSL, crypto
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from suite.pki.interfaces import IPeerVerifier
from suite.pki.verify import VerificationError

__all__ = ["VerifyCallback", "chainReason", "verifyCallback"]

log = Logger()

VerifyCallback = Callable[[SSL.Connection, crypto.X509, int, int, int], bool]
"""What C{SSL.Connection.set_verify} takes."""


# OpenSSL X509_V_ERR_* codes worth a plain-words reason.
_CHAIN_ERRORS = {
    2: "is not issued by a trusted CA",
    9: "is not valid yet",
    10: "has expired",
    18: "is not issued by a trusted CA",
    19: "is not issued by a trusted CA",
    20: "is not issued by a trusted CA",
    21: "is not issued by a trusted CA",
    24: "is issued by a certificate that is not a CA",
    25: "exceeds the CA's path length",
    26: "is not meant for this use (extended key usage)",
}


def chainReason(errno: int, depth: int) -> str:
    """
    Why OpenSSL refused the peer's chain, in plain words, from its
    C{X509_V_ERR_*} code and the depth of the certificate at fault.
    """
    reason = _CHAIN_ERRORS.get(errno, "failed verification")
    untrusted = reason == _CHAIN_ERRORS[2]
    what = "peer certificate" if depth == 0 or untrusted else f"peer certificate chain (depth {depth})"
    return f"{what} {reason} (OpenSSL verify error {errno})"


def verifyCallback(
    tlsProtocol: TLSMemoryBIOProtocol, verifier: IPeerVerifier | None, sendAlert: bool = False
) -> VerifyCallback:
    """
    A per-connection OpenSSL verify callback.  OpenSSL checks the chain; a
    chain error is turned into a L{VerificationError} with a plain reason,
    and on the leaf (depth 0) C{verifier} checks the peer's names.  The
    protocol learns the reason through C{failVerification}.

    With C{sendAlert} (servers) the connection is not aborted: OpenSSL
    fails the handshake with its TLS alert, which Twisted sends before
    closing, so the refused peer learns why (an abort would drop it); the
    protocol still gets the L{VerificationError} as its reason.
    """
    protocolRef: TLSMemoryBIOProtocol | None = tlsProtocol

    def fail(reason: str) -> bool:
        nonlocal protocolRef
        log.warn("TLS peer certificate refused: {reason}", reason=reason)
        if protocolRef is not None:
            failure = Failure(VerificationError(reason))
            if sendAlert:
                protocolRef._reason = failure  # what failVerification records, without the abort
            else:
                protocolRef.failVerification(failure)
        protocolRef = None
        return False

    def callback(
        connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        nonlocal protocolRef
        try:
            if not ok:
                return fail(chainReason(errno, depth))
            if depth != 0:
                return True
            if verifier is not None:
                try:
                    verifier.verifyPeer(certificate.to_cryptography())
                except VerificationError as e:
                    return fail(str(e))
            # The leaf is the last certificate checked: drop the protocol so
            # no reference cycle outlives the handshake.
            protocolRef = None
            return True
        except BaseException:
            # An exception must not escape into OpenSSL; fail closed.
            log.failure("while verifying a TLS peer certificate")
            protocolRef = None
            return False

    return callback
