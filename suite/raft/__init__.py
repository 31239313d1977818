"""suite.raft."""

__all__: list[str] = []
