"""suite.specter."""

__all__: list[str] = []
