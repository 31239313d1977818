"""
Interfaces of the ACME layer.

The ACME client (L{suite.acme.client}) proves control of a domain by handing
DNS-01 TXT values to an L{IChallengePublisher}; the renewal service
(L{suite.acme.renewal}) asks an L{ICertificateIssuer} (the client) for
certificates and keeps them, with the ACME account key, in an
L{ICertificateStore}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from suite.acme.store import StoredCertificate

__all__ = ["IChallengePublisher", "ICertificateStore", "ICertificateIssuer"]


class IChallengePublisher(Interface):
    """
    Where DNS-01 validation values go: whatever answers TXT queries for
    C{_acme-challenge.<domain>} (an in-memory zone in tests; later the
    Specter ring KV behind C{specter dns}).

    A name may hold several values at once (a certificate for
    C{example.test} and C{*.example.test} validates two values under the
    same name), so values are added and removed one by one, like members
    of a set.  The ACME client calls C{publish} for every challenge before
    answering any of them, and C{unpublish} for every value it published
    once validation is over, whether it succeeded or not.
    """

    def publish(name: str, value: str) -> Deferred[None]:
        """
        Make C{value} one of the TXT values of C{name}.

        @param name: the record name without a trailing dot, such as
            C{_acme-challenge.example.test}.
        @type name: L{str}
        @param value: the base64url key-authorization digest.
        @type value: L{str}
        @return: a L{Deferred} that fires with C{None} once resolvers asking
            the authoritative servers see the value.
        """

    def unpublish(name: str, value: str) -> Deferred[None]:
        """
        Remove C{value} from the TXT values of C{name}; removing a value that
        is not there is not an error.

        @return: a L{Deferred} firing with C{None}.
        """


class ICertificateStore(Interface):
    """
    Durable home of the ACME account key and of each certificate with its
    private key.  Every method returns a L{Deferred}; blocking work (file
    I/O) happens off the reactor thread.
    """

    def loadAccountKey() -> Deferred[bytes | None]:
        """
        Fire with the account's private key as PEM L{bytes}, or C{None} when
        no account key was saved yet.
        """

    def saveAccountKey(pem: bytes) -> Deferred[None]:
        """
        Keep the account's private key (PEM L{bytes}); fire with C{None}.
        """

    def loadCertificate(name: str) -> Deferred[StoredCertificate | None]:
        """
        Fire with the L{suite.acme.store.StoredCertificate} saved under
        C{name} (a certificate's first domain name), or C{None}.
        """

    def saveCertificate(name: str, certificate: StoredCertificate) -> Deferred[None]:
        """
        Keep C{certificate} (a L{suite.acme.store.StoredCertificate}) under
        C{name}, replacing what was there as one step; fire with C{None}.
        """


class ICertificateIssuer(Interface):
    """
    Something that obtains certificates: the ACME client, or a fake in tests
    of the renewal service.
    """

    description = Attribute("Where certificates come from, for logs (the ACME directory URL).")

    def issue(names: Sequence[str]) -> Deferred[StoredCertificate]:
        """
        Obtain a certificate for the domain names C{names} (a sequence of
        L{str}, wildcards such as C{*.example.test} allowed) with a fresh
        private key.

        @return: a L{Deferred} firing with a L{suite.acme.store.StoredCertificate}
            or failing with an L{suite.acme.errors.ACMEError}.
        """
