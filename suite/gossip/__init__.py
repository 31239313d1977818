"""suite.gossip."""

__all__: list[str] = []
