"""The rendezvous hub: peer registry, publish endpoint, SSE events, template store, shared peer DB."""

__all__: list[str] = []
