"""
suite.acme: an ACMEv2 (RFC 8555) client on treq proving domain control with
DNS-01 through an L{IChallengePublisher}, certificate stores, and a renewal
service that keeps certificates issued and renewed.

Modules: C{interfaces} (L{IChallengePublisher}, L{ICertificateStore},
L{ICertificateIssuer}), C{client} (L{ACMEClient}), C{renewal}
(L{RenewalService} and the lifecycle machine), C{store} (memory and file
stores), C{publisher} (in-memory DNS-01 values), C{keys} (account keys,
certificate keys, CSRs), C{errors}.
"""

__all__: list[str] = []
