"""
One Twisted protocol server suite running five distributed systems.

Shared building blocks live in C{suite.pki}, C{suite.web}, C{suite.cred},
C{suite.kv}, C{suite.raft}, C{suite.gossip} and C{suite.acme}; each daemon
lives in its own subpackage (C{suite.specter}, C{suite.spacecomms},
C{suite.ceptra}, C{suite.clustor}, C{suite.constellation}, C{suite.goop}).
"""

__all__: list[str] = []
