"""
Validity periods: the window a new certificate is given, whether a loaded
certificate is valid at a given time, and how such times read in messages.
"""

from __future__ import annotations

import datetime

from cryptography import x509

from suite.pki.bundle import BundleError

__all__ = ["BACKDATE", "utcNow", "formatTime", "validityPeriod", "checkValidity"]

BACKDATE = datetime.timedelta(minutes=5)
"""How far before now a new certificate's validity starts (clock skew)."""


def utcNow(now: datetime.datetime | None = None) -> datetime.datetime:
    """
    C{now} when given (tests pass a fixed time), else the current UTC time.
    """
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def formatTime(when: datetime.datetime) -> str:
    """
    A certificate time as messages show it: C{2026-01-31 12:00:00 UTC}.
    """
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def validityPeriod(
    issuerNotAfter: datetime.datetime | None,
    days: int,
    notBefore: datetime.datetime | None,
    notAfter: datetime.datetime | None,
    now: datetime.datetime | None,
) -> tuple[datetime.datetime, datetime.datetime]:
    """
    The C{(notBefore, notAfter)} of a new certificate: from
    L{BACKDATE} before now for C{days}, capped at the issuer's expiry,
    unless explicit bounds are given.

    @raise ValueError: for fewer than one day or an empty period.
    """
    if days < 1:
        raise ValueError(f"validity must be at least one day, not {days}")
    start = notBefore if notBefore is not None else utcNow(now) - BACKDATE
    end = notAfter if notAfter is not None else utcNow(now) + datetime.timedelta(days=days)
    if issuerNotAfter is not None and notAfter is None:
        end = min(end, issuerNotAfter)
    if end <= start:
        raise ValueError("certificate would expire before it becomes valid")
    return start, end


def checkValidity(label: str, certificate: x509.Certificate, now: datetime.datetime) -> None:
    """
    @raise BundleError: naming C{label}, if C{certificate} is expired or not
        yet valid at C{now}.
    """
    if certificate.not_valid_after_utc <= now:
        raise BundleError(f"{label}: certificate expired on {formatTime(certificate.not_valid_after_utc)}")
    if certificate.not_valid_before_utc > now:
        raise BundleError(
            f"{label}: certificate not valid until {formatTime(certificate.not_valid_before_utc)}"
        )
