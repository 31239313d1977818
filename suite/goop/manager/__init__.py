"""The local multi-peer manager page (C{goop2} with no arguments)."""

__all__: list[str] = []
