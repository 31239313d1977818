"""
Host names for certificates: sorting the names a node is known by into DNS
names and IP addresses, and checking each is one or the other, before they
become subject alternative names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Union

__all__ = ["IPLike", "CLIENT_NAME_RULE", "clientName", "dnsName", "splitNames"]

IPLike = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]
"""An IP address as text or as an C{ipaddress} object."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?$")


_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: What a client certificate's common name may be (it names the owner of
#: tunnel hostnames and custom domains, and is a part of KV keys).
CLIENT_NAME_RULE = "1-64 characters from A-Z a-z 0-9 . _ @ - (the first a letter or digit)"


def clientName(name: str) -> str:
    """
    Check C{name} as a client certificate's common name (L{CLIENT_NAME_RULE}).

    @raise ValueError: naming the rule.
    """
    if not _CLIENT_NAME.fullmatch(name):
        raise ValueError(f"must be {CLIENT_NAME_RULE}")
    return name


def dnsName(name: str) -> str:
    """
    Check C{name} as a DNS name (a leading C{*.} wildcard allowed; IDNs
    encoded to their ASCII form) and return it lowercased, without a
    trailing dot.

    @raise ValueError: for a name that is not a valid DNS name.
    """
    ascii = name
    if not name.isascii():
        try:
            ascii = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{name!r} is not a valid DNS name")
    if len(ascii) > 253 or not _DNS_NAME.fullmatch(ascii):
        raise ValueError(f"{name!r} is neither an IP address nor a valid DNS name")
    return ascii.rstrip(".").lower()


def splitNames(names: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """
    Sort host names into DNS names and IP addresses (compressed text).

    @raise ValueError: for a name that is neither.
    """
    dnsNames: list[str] = []
    ips: list[str] = []
    for name in names:
        name = name.strip()
        try:
            ip = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            dns = dnsName(name)
            if dns not in dnsNames:
                dnsNames.append(dns)
        else:
            if ip.compressed not in ips:
                ips.append(ip.compressed)
    return tuple(dnsNames), tuple(ips)
