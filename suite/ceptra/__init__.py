"""suite.ceptra."""

__all__: list[str] = []
