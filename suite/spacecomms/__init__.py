"""
SpaceComms: exchange of CCSDS Conjunction Data Messages and object states
between operators over mutual-TLS peer sessions, with a REST API.

Modules: C{cdm} (KVN/XML/JSON codec and validation), C{config} (YAML),
C{store}, C{node} (state, lifecycle, routing), C{router}, C{resync},
C{envelope} and C{session} (wire protocol and its state machine), C{peers}
(listener and reconnecting clients), C{api}/C{records}/C{apibase}/C{openapi}
(REST), C{metrics}, C{service}, C{tap}/C{cli} (front doors).
"""

__all__: list[str] = []
