"""
SWIM-style gossip membership with Lifeguard's refinements: failure
detection by direct and indirect probes, suspicion with refutation by
incarnation, piggybacked dissemination, push-pull state sync, graceful
leave.  See docs/gossip.md.
"""

__all__: list[str] = []
