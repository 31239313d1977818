"""suite.spacecomms."""

__all__: list[str] = []
