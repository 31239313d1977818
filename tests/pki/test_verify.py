"""
Tests for L{suite.pki.verify}: SPIFFE IDs, identities and peer policies.
"""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.pki.interfaces import IPeerVerifier
from suite.pki.mint import mintCertificate
from suite.pki.verify import (
    PeerPolicy,
    SpiffeId,
    VerificationError,
    identityOf,
    parseSpiffeId,
    verifyCertificate,
)

from . import helpers


class SpiffeTests(SynchronousTestCase):
    """
    L{parseSpiffeId} and L{SpiffeId.matches}.
    """

    def test_parse(self) -> None:
        """
        Workload IDs and trust domains parse into their parts.
        """
        self.assertEqual(parseSpiffeId("spiffe://example.org/ns/a"), SpiffeId("example.org", "/ns/a"))
        self.assertEqual(parseSpiffeId("spiffe://example.org"), SpiffeId("example.org"))
        self.assertEqual(parseSpiffeId("spiffe://example.org/"), SpiffeId("example.org"))
        self.assertEqual(str(parseSpiffeId("spiffe://example.org/ns/a")), "spiffe://example.org/ns/a")

    def test_malformed(self) -> None:
        """
        Malformed IDs are refused with a reason.
        """
        for text, reason in [
            ("https://example.org/a", "must start with spiffe://"),
            ("SPIFFE://example.org/a", "must start with spiffe://"),
            ("spiffe:///a", "trust domain is empty"),
            ("spiffe://Example.org/a", "lowercase"),
            ("spiffe://example.org:8080/a", "lowercase"),
            ("spiffe://user@example.org/a", "lowercase"),
            ("spiffe://example.org/a//b", "empty path segment"),
            ("spiffe://example.org/a/", "trailing"),
            ("spiffe://example.org/a/../b", "'..'"),
            ("spiffe://example.org/a?b=c", "query"),
            ("spiffe://example.org/a b", "path segments"),
            ("spiffe://example.org/" + "a" * 2100, "longer than"),
        ]:
            e = self.assertRaises(ValueError, parseSpiffeId, text)
            self.assertIn(reason, str(e), text)
        e = self.assertRaises(ValueError, parseSpiffeId, "spiffe://example.org", allowTrustDomain=False)
        self.assertIn("trust domain", str(e))

    def test_matches(self) -> None:
        """
        An exact ID matches only itself; a trust domain matches every ID in
        it and none outside; paths are case-sensitive.
        """
        exact = parseSpiffeId("spiffe://example.org/a/b")
        domain = parseSpiffeId("spiffe://example.org")
        self.assertTrue(exact.matches(parseSpiffeId("spiffe://example.org/a/b")))
        self.assertFalse(exact.matches(parseSpiffeId("spiffe://example.org/a/B")))
        self.assertFalse(exact.matches(parseSpiffeId("spiffe://example.org/a")))
        self.assertFalse(exact.matches(parseSpiffeId("spiffe://example.org/a/b/c")))
        self.assertTrue(domain.matches(parseSpiffeId("spiffe://example.org/x")))
        self.assertFalse(domain.matches(parseSpiffeId("spiffe://example.org.evil/x")))
        self.assertFalse(domain.matches(parseSpiffeId("spiffe://evil.org/x")))


class IdentityTests(SynchronousTestCase):
    """
    L{identityOf} and L{PeerIdentity}.
    """

    def test_identity(self) -> None:
        """
        Every name of a certificate is extracted; only well-formed workload
        URIs count as SPIFFE IDs.
        """
        caCert, caKey = helpers.nodeCA()
        cert, _ = mintCertificate(
            caCert,
            caKey,
            "n1",
            dnsNames=["n1.example"],
            ipAddresses=["2001:db8:0::1", "10.0.0.1"],
            uris=["https://example.org/x", "spiffe://example.org/n1"],
        )
        identity = identityOf(cert)
        self.assertEqual(identity.commonName, "n1")
        self.assertEqual(identity.dnsNames, ("n1.example",))
        self.assertEqual(identity.ipAddresses, ("2001:db8::1", "10.0.0.1"))
        self.assertEqual(identity.uris, ("https://example.org/x", "spiffe://example.org/n1"))
        self.assertEqual(identity.spiffeIds, ("spiffe://example.org/n1",))
        self.assertEqual(identity.spiffeId, "spiffe://example.org/n1")
        self.assertEqual(len(identity.fingerprint), 64)
        self.assertEqual(
            identity.describe(),
            "CN=n1 DNS:n1.example IP:2001:db8::1 IP:10.0.0.1 URI:https://example.org/x "
            "URI:spiffe://example.org/n1",
        )

    def test_noNames(self) -> None:
        """
        A certificate without SANs has only its common name.
        """
        caCert, caKey = helpers.nodeCA()
        cert, _ = mintCertificate(caCert, caKey, "bare")
        identity = identityOf(cert)
        self.assertEqual((identity.dnsNames, identity.ipAddresses, identity.uris), ((), (), ()))
        self.assertIsNone(identity.spiffeId)


class PolicyTests(SynchronousTestCase):
    """
    L{PeerPolicy} and L{verifyCertificate}.
    """

    def test_interface(self) -> None:
        """
        L{PeerPolicy} provides L{IPeerVerifier}.
        """
        self.assertTrue(verifyObject(IPeerVerifier, PeerPolicy(hostname="a.example")))

    def test_description(self) -> None:
        """
        The description names every expectation.
        """
        self.assertEqual(PeerPolicy().description, "any certificate from a trusted CA")
        self.assertEqual(
            PeerPolicy(hostname="a.example", ipAddress="::1", spiffeId="spiffe://e.org").description,
            "host name 'a.example', IP address ::1, trust domain spiffe://e.org",
        )

    def test_badExpectations(self) -> None:
        """
        Malformed expected names are refused when the policy is built.
        """
        self.assertRaises(ValueError, PeerPolicy, ipAddress="not-an-ip")
        self.assertRaises(ValueError, PeerPolicy, spiffeId="spiffe://UP/x")
        self.assertRaises(ValueError, PeerPolicy, hostname="")

    def test_matching(self) -> None:
        """
        DNS names (wildcards included), IP addresses and SPIFFE IDs are
        checked; every given name must match.
        """
        cert = helpers.serverBundle().nodeCert
        verifyCertificate(cert, hostname="server.example")
        verifyCertificate(cert, hostname="SERVER.example")
        verifyCertificate(cert, hostname="x.wild.example")
        verifyCertificate(cert, hostname="127.0.0.1")
        verifyCertificate(cert, ipAddress="127.0.0.1", spiffeId=helpers.SPIFFE_SERVER)
        verifyCertificate(cert, spiffeId="spiffe://example.org")
        for kwargs in [
            {"hostname": "x.y.wild.example"},
            {"hostname": "server.example.evil"},
            {"ipAddress": "127.0.0.2"},
            {"hostname": "server.example", "ipAddress": "::1"},
            {"spiffeId": "spiffe://example.org/ns/prod"},
            {"spiffeId": "spiffe://other.org"},
        ]:
            self.assertRaises(VerificationError, verifyCertificate, cert, **kwargs)

    def test_noSANs(self) -> None:
        """
        A certificate without SANs matches no host name (the common name is
        not used) and no SPIFFE ID.
        """
        caCert, caKey = helpers.nodeCA()
        cert, _ = mintCertificate(caCert, caKey, "bare.example")
        e = self.assertRaises(VerificationError, verifyCertificate, cert, hostname="bare.example")
        self.assertIn("CN=bare.example", str(e))
        e = self.assertRaises(VerificationError, verifyCertificate, cert, spiffeId="spiffe://e.org")
        self.assertIn("its SPIFFE IDs: none", str(e))


_segment = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
_domain = st.text(alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=20)


class SpiffePropertyTests(SynchronousTestCase):
    """
    Properties of SPIFFE ID parsing and matching.
    """

    @given(_domain, st.lists(_segment, min_size=1, max_size=4), st.lists(_segment, min_size=1, max_size=4))
    def test_roundTripAndMatching(self, domain: str, path: list[str], other: list[str]) -> None:
        """
        A well-formed ID parses and prints back unchanged, matches itself and
        its trust domain, and matches another path only if they are equal.
        """
        text = f"spiffe://{domain}/" + "/".join(path)
        parsed = parseSpiffeId(text)
        self.assertEqual(str(parsed), text)
        self.assertTrue(parsed.matches(parsed))
        self.assertTrue(parseSpiffeId(f"spiffe://{domain}").matches(parsed))
        otherId = parseSpiffeId(f"spiffe://{domain}/" + "/".join(other))
        self.assertEqual(parsed.matches(otherId), path == other)
