"""suite.web."""

__all__: list[str] = []
