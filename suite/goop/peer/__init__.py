"""A Goop2 peer: goop.json, data.db, site/, the viewer and the service wiring."""

__all__: list[str] = []
