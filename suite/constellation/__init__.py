"""suite.constellation."""

__all__: list[str] = []
