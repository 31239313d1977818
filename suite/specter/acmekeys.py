"""
Where ACME DNS-01 challenge values live in the ring KV: the one place that
names the keys, shared by C{specter dns} (which answers them) and whatever
publishes them (the ACME client, operators with C{specter kv}).

Each challenge name in the ACME zone is one label under the zone apex and
maps to one KV I{prefix set} (C{append}/C{remove}/C{list} of the ring KV):

    managed.<ACME_ZONE>   TXT   members of  acme/challenge/managed
    <token>.<ACME_ZONE>   TXT   members of  acme/challenge/<token>

Every member of the set is answered as one TXT record, so the values for an
apex and its wildcard (two authorizations at one name) are served together.
A token name whose set is empty does not exist (NXDOMAIN); C{managed} always
exists.  Labels are stored lower-case.

A custom domain (C{specter client acme DOMAIN}) is one JSON record:

    acme/custom/<domain>   {"domain", "token", "owner", "hostname", "validated"}

whose C{token} names its challenge set: C{_acme-challenge.<domain>} is a
CNAME to C{<token>.<ACME_ZONE>}.  The prefix set C{acme/domains} lists the
validated ones (every gateway gets and renews their certificates).
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

__all__ = [
    "CHALLENGE_PREFIX",
    "CUSTOM_PREFIX",
    "VALIDATED_SET",
    "customKey",
    "validDomain",
    "MANAGED",
    "MAX_VALUE",
    "challengeKey",
    "validLabel",
    "newToken",
    "publish",
    "unpublish",
]

#: KV key prefix of every challenge set.
CHALLENGE_PREFIX = b"acme/challenge/"

#: KV key prefix of custom-domain records.
CUSTOM_PREFIX = b"acme/custom/"

#: KV prefix set of the validated custom domains.
VALIDATED_SET = b"acme/domains"

_HOSTLABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

#: The label apex certificates use: C{_acme-challenge.<apex>} is a CNAME to
#: C{managed.<ACME_ZONE>}.
MANAGED = "managed"

#: Longest TXT value accepted (a DNS-01 value is 43 characters; a TXT string
#: holds at most 255 bytes).
MAX_VALUE = 255

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def validLabel(label: str) -> bool:
    """
    Whether C{label} (lower-case) can name a challenge: one DNS label of
    letters, digits, C{-} and C{_}.
    """
    return bool(_LABEL.fullmatch(label))


def challengeKey(label: str) -> bytes:
    """
    The KV prefix-set key holding the TXT values of C{<label>.<ACME_ZONE>}.
    """
    label = label.lower()
    if not validLabel(label):
        raise ValueError(f"{label!r} is not a valid challenge label")
    return CHALLENGE_PREFIX + label.encode("ascii")


def validDomain(domain: str) -> bool:
    """
    Whether C{domain} (lower-case, no trailing dot) is a hostname of at least
    two labels that can have a certificate of its own (no wildcard, no IP
    address, at most 253 characters).
    """
    if not domain or len(domain) > 253:
        return False
    labels = domain.split(".")
    if len(labels) < 2 or not all(_HOSTLABEL.fullmatch(label) for label in labels):
        return False
    return not labels[-1].isdigit()


def customKey(domain: str) -> bytes:
    """
    The KV key of the record of custom domain C{domain}.
    """
    domain = domain.rstrip(".").lower()
    if not validDomain(domain):
        raise ValueError(f"{domain!r} is not a valid domain name")
    return CUSTOM_PREFIX + domain.encode("ascii")


def newToken() -> str:
    """
    A fresh random label for a custom domain: C{_acme-challenge.<domain>} is
    a CNAME to C{<token>.<ACME_ZONE>}.
    """
    return base64.b32encode(os.urandom(15)).decode("ascii").lower()


def _value(value: str | bytes) -> bytes:
    data = value.encode("ascii") if isinstance(value, str) else value
    if not 0 < len(data) <= MAX_VALUE:
        raise ValueError(f"a TXT value must be 1 to {MAX_VALUE} bytes")
    return data


def publish(client: Any, label: str, value: str | bytes) -> Any:
    """
    Add C{value} to the TXT values of C{<label>.<ACME_ZONE>} through an
    L{suite.specter.rpc.RPCClient} (or anything with its C{kv} method).
    """
    return client.kv("append", challengeKey(label), _value(value))


def unpublish(client: Any, label: str, value: str | bytes) -> Any:
    """
    Remove C{value} from the TXT values of C{<label>.<ACME_ZONE>}.
    """
    return client.kv("remove", challengeKey(label), _value(value))
