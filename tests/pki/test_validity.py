"""
Tests for L{suite.pki.validity} and L{suite.pki.names}: validity windows of
new certificates, validity checks of loaded ones, and SAN names.
"""

from __future__ import annotations

import datetime

from twisted.trial.unittest import SynchronousTestCase

from suite.pki.bundle import BundleError
from suite.pki.mint import mintCertificate
from suite.pki.names import dnsName
from suite.pki.validity import BACKDATE, checkValidity, formatTime, utcNow, validityPeriod
from tests.pki import helpers

NOON = datetime.datetime(2030, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)


class ValidityPeriodTests(SynchronousTestCase):
    """
    L{validityPeriod} gives a new certificate its window.
    """

    def test_default(self) -> None:
        """
        The window starts L{BACKDATE} before now and lasts C{days}.
        """
        start, end = validityPeriod(None, 10, None, None, NOON)
        self.assertEqual(start, NOON - BACKDATE)
        self.assertEqual(end, NOON + datetime.timedelta(days=10))

    def test_cappedByIssuer(self) -> None:
        """
        The end is capped at the issuer's expiry, unless given explicitly.
        """
        issuerEnd = NOON + datetime.timedelta(days=2)
        self.assertEqual(validityPeriod(issuerEnd, 10, None, None, NOON)[1], issuerEnd)
        explicit = NOON + datetime.timedelta(days=5)
        self.assertEqual(validityPeriod(issuerEnd, 10, None, explicit, NOON)[1], explicit)

    def test_refused(self) -> None:
        """
        Less than a day, or an end before the start, is refused with the
        reason.
        """
        e = self.assertRaises(ValueError, validityPeriod, None, 0, None, None, NOON)
        self.assertEqual(str(e), "validity must be at least one day, not 0")
        e = self.assertRaises(
            ValueError, validityPeriod, NOON - datetime.timedelta(days=1), 10, None, None, NOON
        )
        self.assertEqual(str(e), "certificate would expire before it becomes valid")

    def test_utcNow(self) -> None:
        """
        L{utcNow} returns the given time, else an aware current UTC time.
        """
        self.assertIs(utcNow(NOON), NOON)
        self.assertEqual(utcNow().tzinfo, datetime.UTC)


class CheckValidityTests(SynchronousTestCase):
    """
    L{checkValidity} refuses certificates outside their window at a given
    time, naming the input and the date.
    """

    def setUp(self) -> None:
        caCert, caKey = helpers.nodeCA()
        self.certificate, _ = mintCertificate(
            caCert, caKey, "n", notBefore=NOON, notAfter=NOON + datetime.timedelta(days=1)
        )

    def test_inside(self) -> None:
        """
        Inside the window nothing is raised.
        """
        checkValidity("x.crt", self.certificate, NOON + datetime.timedelta(hours=1))

    def test_expired(self) -> None:
        """
        At or after C{notAfter} the certificate has expired.
        """
        e = self.assertRaises(
            BundleError, checkValidity, "x.crt", self.certificate, NOON + datetime.timedelta(days=1)
        )
        self.assertEqual(str(e), "x.crt: certificate expired on 2030-06-02 12:00:00 UTC")

    def test_notYetValid(self) -> None:
        """
        Before C{notBefore} the certificate is not valid yet.
        """
        e = self.assertRaises(
            BundleError, checkValidity, "x.crt", self.certificate, NOON - datetime.timedelta(seconds=1)
        )
        self.assertEqual(str(e), "x.crt: certificate not valid until 2030-06-01 12:00:00 UTC")

    def test_formatTime(self) -> None:
        """
        Times read as UTC to the second.
        """
        self.assertEqual(formatTime(NOON.replace(microsecond=5)), "2030-06-01 12:00:00 UTC")


class DNSNameTests(SynchronousTestCase):
    """
    L{dnsName} checks and normalises one DNS name.
    """

    def test_normalised(self) -> None:
        """
        Names are lowercased without a trailing dot; wildcards and IDNs
        are accepted, IDNs in their ASCII form.
        """
        self.assertEqual(dnsName("Node.Example."), "node.example")
        self.assertEqual(dnsName("*.apps.example"), "*.apps.example")
        self.assertEqual(dnsName("bücher.example"), "xn--bcher-kva.example")

    def test_refused(self) -> None:
        """
        Bad labels, inner wildcards and over-long names are refused, naming
        the name.
        """
        for bad in [
            "a..b",
            "-a.example",
            "a.*.example",
            "under_score",
            "a" * 64 + ".example",
            "x." * 127 + "x",
        ]:
            e = self.assertRaises(ValueError, dnsName, bad)
            self.assertIn(repr(bad), str(e))
