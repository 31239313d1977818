"""suite.acme."""

__all__: list[str] = []
