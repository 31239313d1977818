"""
What the parts of a SpaceComms node share: its id, its configuration
(replaced whole on a reload), the record store, the clock, the routing
rules, the metrics and the signing identity.

The node (L{suite.spacecomms.node.SpaceNode}) builds one L{NodeCore} and
hands it to each part: the peer table (L{suite.spacecomms.peering}), the
ledger of records (L{suite.spacecomms.ledger}), outbound routing
(L{suite.spacecomms.forwarding}), local updates
(L{suite.spacecomms.local}) and the inbound path
(L{suite.spacecomms.inbound}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from suite.spacecomms.config import Config
from suite.spacecomms.interfaces import IRecordStore
from suite.spacecomms.router import Router
from suite.spacecomms.signing import Signer

if TYPE_CHECKING:
    from suite.spacecomms.metrics import NodeMetrics

__all__ = ["NodeCore", "log"]

#: The one logger of the node's parts (their lines keep the node's namespace).
log = Logger(namespace="spacecomms.node")


@dataclass(eq=False)
class NodeCore:
    """
    The node's collaborators and its mutable settings.
    """

    nodeId: str
    config: Config
    store: IRecordStore
    clock: IReactorTime
    router: Router
    metrics: NodeMetrics
    #: This node's signing identity (set when TLS is on); with it every
    #: routed message must carry a valid signature of its originator.
    signer: Signer | None = None

    def now(self) -> float:
        """
        The current time on the node's clock.
        """
        return self.clock.seconds()
