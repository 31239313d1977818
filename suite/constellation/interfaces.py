"""
Interfaces of the Constellation agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from suite.constellation.catalog import NodeEntry, ServiceEntry
    from suite.constellation.docker import Container, EventStream

__all__ = ["IServiceCatalog", "IContainerEngine", "IDNSProvider"]


class IServiceCatalog(Interface):
    """
    The services this agent knows about (its own node's, and, once gossip
    runs, its peers').  The Traefik HTTP provider and C{/api/state} read it;
    the Docker monitor and gossip (when built) write it.
    """

    nodeName = Attribute("This node's name.")

    def services() -> list[ServiceEntry]:
        """
        All known L{suite.constellation.catalog.ServiceEntry} values, sorted by name then node.
        """

    def nodes() -> list[NodeEntry]:
        """
        All known L{suite.constellation.catalog.NodeEntry} values (this node first).
        """


class IContainerEngine(Interface):
    """
    A container engine's API as the agent uses it
    (L{suite.constellation.docker.DockerClient}); the Docker monitor reads
    it, and so can WARP monitoring and deployment tools.  Every method is
    asynchronous and fails with a one-line
    L{suite.constellation.docker.DockerError}.
    """

    description = Attribute("Where the engine is (C{str}, for log lines).")
    apiVersion = Attribute("The negotiated API version (C{str}), or None before L{negotiate}.")

    def negotiate() -> Awaitable[str]:
        """
        Agree on an API version with the engine; a Deferred/coroutine firing with it.
        """

    def containers(labels: Iterable[str] = (), all: bool = False) -> Awaitable[list[dict[str, Any]]]:
        """
        The engine's container summaries matching C{labels} (C{KEY} or C{KEY=VALUE}).
        """

    def inspect(containerID: str) -> Awaitable[dict[str, Any]]:
        """
        One container's inspect document.
        """

    def monitored(labels: Sequence[str] = ()) -> Awaitable[list[Container]]:
        """
        Every running container matching C{labels}, as
        L{suite.constellation.docker.Container} values sorted by name.
        """

    def events(onEvent: Callable[[dict[str, Any]], None], labels: Sequence[str] = ()) -> EventStream:
        """
        Follow the engine's container events; return an
        L{suite.constellation.docker.EventStream}.
        """

    def networks() -> Awaitable[list[dict[str, Any]]]:
        """
        Every network's summary.
        """

    def createNetwork(config: Mapping[str, Any]) -> Awaitable[str]:
        """
        Create a network from an engine network config; its id.
        """

    def connectNetwork(network: str, containerID: str, aliases: Sequence[str] = ()) -> Awaitable[None]:
        """
        Attach a container to a network under DNS C{aliases}.
        """

    def image(name: str) -> Awaitable[dict[str, Any] | None]:
        """
        An image's inspect document, or None when the engine lacks it.
        """

    def pull(image: str, timeout: float = 600.0) -> Awaitable[None]:
        """
        Pull an image from its registry.
        """

    def createContainer(name: str, config: Mapping[str, Any]) -> Awaitable[str]:
        """
        Create a container from an engine container config; its id.
        """

    def startContainer(containerID: str) -> Awaitable[None]:
        """
        Start a container.
        """

    def stopContainer(containerID: str, grace: int | None = None) -> Awaitable[None]:
        """
        Stop a container (killed after C{grace} seconds; None: its own stop timeout).
        """

    def renameContainer(containerID: str, name: str) -> Awaitable[None]:
        """
        Rename a container.
        """

    def removeContainer(containerID: str, force: bool = True) -> Awaitable[None]:
        """
        Remove a container.
        """

    def execute(containerID: str, command: Sequence[str], timeout: float = 15.0) -> Awaitable[int]:
        """
        Run C{command} inside a running container; its exit status.
        """


class IDNSProvider(Interface):
    """
    Where the DNS writer puts the cluster's A/AAAA records.  Names are
    absolute without the trailing dot (C{example.org}, C{*.example.org}).
    """

    name = Attribute("Short name of the provider for logs and /api/state.")
    fencing = Attribute("One sentence: what the provider guarantees about a deposed writer's writes.")

    def records(names: Sequence[str]) -> Awaitable[dict[str, list[str]]]:
        """
        An awaitable of C{{name: sorted addresses}} of the
        address records at C{names} (absent names left out).
        """

    def apply(changes: Sequence[tuple[str, Sequence[str]]], token: int) -> Awaitable[None]:
        """
        Apply C{changes} (a list of C{(name, addresses)}; empty addresses:
        delete) under fencing token C{token}; an awaitable finishing when
        done, failing with L{suite.constellation.dns.Fenced} when a writer
        with a higher token has written since.
        """
