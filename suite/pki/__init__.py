"""
The suite's private CA and mTLS layer.

  - L{suite.pki.ca}: mint CA, node and client certificates; write bundles.
  - L{suite.pki.bundle}: load and check bundles (directory, base64 env,
    separate identity files); L{suite.pki.bundle.BundleError}.
  - L{suite.pki.tls}: mTLS server/client connection creators, peer identity.
  - L{suite.pki.verify}: DNS/IP/SPIFFE peer verification.
  - L{suite.pki.command}: C{pki init|node|client} command-line front ends.
"""

__all__ = ["ca", "bundle", "tls", "verify", "command", "keys", "interfaces"]
