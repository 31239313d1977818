"""suite.cred."""

__all__: list[str] = []
