"""
The suite's private CA and mTLS layer.

  - L{suite.pki.keys}: key generation, PEM encoding, key/certificate match.
  - L{suite.pki.names}: host names and IP addresses as certificate SANs.
  - L{suite.pki.validity}: validity periods of new and loaded certificates.
  - L{suite.pki.mint}: certificate profiles (CA, leaf, self-signed).
  - L{suite.pki.ca}: the private CA: issue node and client bundles.
  - L{suite.pki.bundle}: the L{Bundle<suite.pki.bundle.Bundle>} value and
    L{BundleError<suite.pki.bundle.BundleError>}.
  - L{suite.pki.layout}: bundle file and variable names; reading and atomic
    writing of bundle files.
  - L{suite.pki.check}: parse and check PEM inputs into a bundle.
  - L{suite.pki.load}: load bundles (directory, base64 env, separate
    identity files, client directory); check this node's names.
  - L{suite.pki.tls}: mTLS server/client connection creators, peer identity.
  - L{suite.pki.verify}: DNS/IP/SPIFFE peer verification.
  - L{suite.pki.tlsoptions}: pyOpenSSL options (trust, TLS version, ALPN).
  - L{suite.pki.verifycallback}: the per-connection verify callback.
  - L{suite.pki.peer}: the certificate and names a TLS peer presented.
  - L{suite.pki.endpoints}: TLS stream endpoints.
  - L{suite.pki.options}: flags of the C{pki init|node|client} commands.
  - L{suite.pki.command}: C{pki init|node|client} command-line front ends.
"""

__all__ = [
    "keys",
    "names",
    "validity",
    "mint",
    "ca",
    "bundle",
    "layout",
    "check",
    "load",
    "tls",
    "tlsoptions",
    "verifycallback",
    "peer",
    "endpoints",
    "options",
    "verify",
    "command",
    "interfaces",
]
