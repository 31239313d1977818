"""twistd plugin declarations for the suite: one ServiceMaker per daemon."""

from twisted.application.service import ServiceMaker

specter = ServiceMaker(
    "Specter edge gateway and ACME DNS solver",
    "suite.specter.tap",
    "Specter: Chord ring node with replicated KV, RPC and edge gateway (server); ACME DNS-01 solver (dns)",
    "specter",
)
spacecomms = ServiceMaker(
    "SpaceComms node",
    "suite.spacecomms.tap",
    "SpaceComms: CCSDS CDM exchange between operators over authenticated peer sessions",
    "spacecomms",
)
ceptra = ServiceMaker(
    "CEPtra node",
    "suite.ceptra.tap",
    "CEPtra node: complex event processing on Raft-replicated partitions placed by the Clustor control plane",
    "ceptra",
)
clustorControlPlane = ServiceMaker(
    "Clustor control plane",
    "suite.clustor.tap",
    "Clustor control plane: routing, feature, warmup and activation feeds for CEPtra",
    "clustor-cp",
)
constellation = ServiceMaker(
    "Constellation agent",
    "suite.constellation.tap",
    "Constellation agent: gossip membership, replicated cluster state, Docker health, Traefik HTTP provider",
    "constellation",
)
goop = ServiceMaker(
    "Goop2 peer and rendezvous server",
    "suite.goop.tap",
    "Goop2: P2P site peer (peer DIR) and rendezvous hub (rendezvous DIR)",
    "goop",
)
