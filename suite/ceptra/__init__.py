"""
CEPtra node: options (the C{CEPTRA_*} surface), start-up checks (mTLS
identity, storage layout), readiness and the admin site.  The node follows
the Clustor control plane through L{suite.clustor.feeds}.
"""

__all__: list[str] = []
