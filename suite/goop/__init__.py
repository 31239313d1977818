"""suite.goop."""

__all__: list[str] = []
