"""
The host's link to one group member (L{HostLinkMachine}), fed by the
member connection's flow control (L{HostMember} is its producer):

  inputs:  send, paused, resumed, closed, stopped; private: drain, drained,
           overflowed
  outputs: write (straight out, or queued), writeNext, dropSlowMember,
           closeLink
  states:  Writable -> Paused -> Draining -> Writable ...; Dropped (final)

The backlog (L{HostLinkCore}'s queue, bounded by C{maxQueue}) fills only in
Paused and Draining; Draining writes it one message per C{drain}, so a
connection that pushes back mid-way stops it.  A message that takes it past
the limit drops the member (closed, and its groups told it left), so a slow
member never delays the others.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["MAX_QUEUE", "HostLinkCore", "HostLinkInputs", "HostLinkMachine", "HostMember"]

log = Logger(namespace="suite.goop.groups")
#: Messages queued for one member while its connection pushes back.
MAX_QUEUE = 1000


class HostLinkInputs(Protocol):
    def send(self, message: dict[str, Any]) -> None:
        """The host has a message for the member."""

    def paused(self) -> None:
        """The member's connection pushes back."""

    def resumed(self) -> None:
        """The member's connection takes writes again."""

    def drain(self) -> None:
        """(Private) write the next queued message."""

    def drained(self) -> None:
        """(Private) the queue is empty."""

    def overflowed(self) -> None:
        """(Private) the queue grew past its limit."""

    def closed(self) -> None:
        """The host closes the member's connection."""

    def stopped(self) -> None:
        """The connection went away (the transport stopped its producer)."""


@dataclass
class HostLinkCore:
    """
    One member connection as the host sees it: how to write to it and close
    it, and its bounded backlog (filled only while the connection pushes
    back; it never exceeds C{maxQueue} while the link lives).
    """

    peerId: str
    write: Callable[[dict[str, Any]], None]
    close: Callable[[], None]
    maxQueue: int = MAX_QUEUE
    onOverflow: Callable[[], None] | None = None
    queue: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)

    def enqueue(self, inputs: HostLinkInputs, message: dict[str, Any]) -> None:
        self.queue.append(message)
        if len(self.queue) > self.maxQueue:
            inputs.overflowed()


def _buildHostLink() -> TypeMachine[HostLinkInputs, HostLinkCore]:
    b = TypeMachineBuilder(HostLinkInputs, HostLinkCore)
    writable = b.state("Writable")
    paused = b.state("Paused")

    draining = b.state("Draining")
    dropped = b.state("Dropped")

    # Writable: the backlog is empty; messages go straight out.
    @writable.upon(HostLinkInputs.send).loop()
    def writeNow(inputs: HostLinkInputs, core: HostLinkCore, message: dict[str, Any]) -> None:
        core.write(message)

    writable.upon(HostLinkInputs.paused).to(paused).returns(None)
    writable.upon(HostLinkInputs.resumed).loop().returns(None)
    writable.upon(HostLinkInputs.drain).loop().returns(None)  # stale: impossible
    writable.upon(HostLinkInputs.drained).loop().returns(None)  # stale: impossible
    writable.upon(HostLinkInputs.overflowed).loop().returns(None)  # impossible

    def queueMessage(inputs: HostLinkInputs, core: HostLinkCore, message: dict[str, Any]) -> None:
        core.enqueue(inputs, message)

    # Paused: messages wait in the backlog.
    paused.upon(HostLinkInputs.send).loop()(queueMessage)
    paused.upon(HostLinkInputs.paused).loop().returns(None)

    @paused.upon(HostLinkInputs.resumed).to(draining)
    def startDraining(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        # Delivered once this transition completes: the backlog goes out one
        # message at a time, so a connection that pushes back again mid-way
        # stops the drain (its pause arrives before the next drain).
        inputs.drain()

    paused.upon(HostLinkInputs.drain).loop().returns(None)  # paused mid-drain: wait
    paused.upon(HostLinkInputs.drained).loop().returns(None)  # paused as the drain ended

    # Draining: the backlog goes out in order; new messages queue behind it.
    draining.upon(HostLinkInputs.send).loop()(queueMessage)
    draining.upon(HostLinkInputs.paused).to(paused).returns(None)
    draining.upon(HostLinkInputs.resumed).loop().returns(None)

    @draining.upon(HostLinkInputs.drain).loop()
    def writeNext(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        if core.queue:
            core.write(core.queue.popleft())
        if core.queue:
            inputs.drain()
        else:
            inputs.drained()

    draining.upon(HostLinkInputs.drained).to(writable).returns(None)

    @paused.upon(HostLinkInputs.overflowed).to(dropped)
    @draining.upon(HostLinkInputs.overflowed).to(dropped)
    def dropSlowMember(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        log.info("dropping slow group member {peer}", peer=core.peerId[:16])
        core.queue.clear()
        core.close()
        if core.onOverflow is not None:
            core.onOverflow()

    def closeLink(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        core.queue.clear()
        core.close()

    def forgetLink(inputs: HostLinkInputs, core: HostLinkCore) -> None:
        core.queue.clear()

    for st in (writable, paused, draining):
        st.upon(HostLinkInputs.closed).to(dropped)(closeLink)
        st.upon(HostLinkInputs.stopped).to(dropped)(forgetLink)

    # Dropped: final; nothing is written or queued again.
    for name in ("send", "paused", "resumed", "drain", "drained", "overflowed", "closed", "stopped"):
        dropped.upon(getattr(HostLinkInputs, name)).loop().returns(None)
    return b.build()


#: The host's link to one member: C{HostLinkMachine(HostLinkCore(...))}.
HostLinkMachine = _buildHostLink()


@implementer(IPushProducer)
class HostMember:
    """
    The host's handle on one member connection: the connection's producer,
    feeding its flow control to the link machine (L{HostLinkMachine}).
    """

    def __init__(
        self,
        peerId: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        transport: Any,
        clock: Any,
        maxQueue: int = MAX_QUEUE,
        onOverflow: Callable[[], None] | None = None,
    ) -> None:
        self.peerId = peerId
        self.core = HostLinkCore(peerId, send, close, maxQueue, onOverflow)
        self.link: HostLinkInputs = HostLinkMachine(self.core)
        self.lastHeard = clock.seconds()
        if transport is not None and hasattr(transport, "registerProducer"):
            try:
                transport.registerProducer(self, True)
            except RuntimeError:
                pass

    def sendMessage(self, message: dict[str, Any]) -> None:
        self.link.send(message)

    def close(self) -> None:
        self.link.closed()

    def pauseProducing(self) -> None:
        self.link.paused()

    def resumeProducing(self) -> None:
        self.link.resumed()

    def stopProducing(self) -> None:
        self.link.stopped()
