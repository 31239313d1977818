"""
Container HEALTHCHECK: exit 0 when C{HEALTH_URL} (the daemon's health
endpoint inside the container) answers 2xx within 2 s, else 1 with one line.
No shell or curl is needed in the image.

An C{https} URL is checked against the trust bundle and, when the listener
wants a client certificate (CEPtra's admin API, an mTLS clustor-cp),
presents the daemon's own identity: C{HEALTH_TLS_CERT}, C{HEALTH_TLS_KEY},
C{HEALTH_TLS_CA}, or else the daemon's C{CEPTRA_TLS_*} or
C{CLUSTOR_CP_TLS_*} variables.  The probe dials 127.0.0.1, which need not
be among the certificate's names: the chain is verified, the name is not.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

_IDENTITIES = (
    ("HEALTH_TLS_CERT", "HEALTH_TLS_KEY", "HEALTH_TLS_CA"),
    ("CEPTRA_TLS_IDENTITY_CERT", "CEPTRA_TLS_IDENTITY_KEY", "CEPTRA_TLS_TRUST_BUNDLE"),
    ("CLUSTOR_CP_TLS_IDENTITY_CERT", "CLUSTOR_CP_TLS_IDENTITY_KEY", "CLUSTOR_CP_TLS_TRUST_BUNDLE"),
)


def tlsContext(environ: dict[str, str]) -> ssl.SSLContext:
    """
    The client context of an C{https} probe, from the first identity set.
    """
    for certVar, keyVar, caVar in _IDENTITIES:
        if environ.get(certVar) or environ.get(caVar):
            context = ssl.create_default_context(cafile=environ.get(caVar) or None)
            context.check_hostname = False
            if environ.get(certVar):
                context.load_cert_chain(environ[certVar], environ.get(keyVar) or None)
            return context
    return ssl.create_default_context()


def main() -> int:
    url = os.environ.get("HEALTH_URL", "http://127.0.0.1:8080/health")
    try:
        context = tlsContext(dict(os.environ)) if url.startswith("https:") else None
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            ok = 200 <= response.status < 300
    except (OSError, ValueError) as e:
        sys.stderr.write(f"unhealthy: {url}: {e}\n")
        return 1
    if not ok:
        sys.stderr.write(f"unhealthy: {url}: HTTP {response.status}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
