"""suite.clustor."""

__all__: list[str] = []
