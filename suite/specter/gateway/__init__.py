"""
The Specter gateway: one TLS port routed by ALPN (visitors over HTTP/1.1
and HTTP/2, tunnel links, raw TCP), route lookup and byte splicing.
"""

__all__: list[str] = []
