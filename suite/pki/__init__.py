"""suite.pki."""

__all__: list[str] = []
