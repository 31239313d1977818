"""suite.kv."""

__all__: list[str] = []
