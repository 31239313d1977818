"""
Interfaces of the Constellation agent.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IServiceCatalog", "IContainerEngine", "IDNSProvider"]


class IServiceCatalog(Interface):
    """
    The services this agent knows about (its own node's, and, once gossip
    runs, its peers').  The Traefik HTTP provider and C{/api/state} read it;
    the Docker monitor and gossip (when built) write it.
    """

    nodeName = Attribute("This node's name.")

    def services():  # type: ignore[no-untyped-def]
        """
        All known L{suite.constellation.catalog.ServiceEntry} values, sorted by name then node.
        """

    def nodes():  # type: ignore[no-untyped-def]
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

    def negotiate():  # type: ignore[no-untyped-def]
        """
        Agree on an API version with the engine; a Deferred/coroutine firing with it.
        """

    def containers(labels, all):  # type: ignore[no-untyped-def]
        """
        The engine's container summaries matching C{labels} (C{KEY} or C{KEY=VALUE}).
        """

    def inspect(containerID):  # type: ignore[no-untyped-def]
        """
        One container's inspect document.
        """

    def monitored(labels):  # type: ignore[no-untyped-def]
        """
        Every running container matching C{labels}, as
        L{suite.constellation.docker.Container} values sorted by name.
        """

    def events(onEvent, labels):  # type: ignore[no-untyped-def]
        """
        Follow the engine's container events; return an
        L{suite.constellation.docker.EventStream}.
        """

    def networks():  # type: ignore[no-untyped-def]
        """
        Every network's summary.
        """

    def createNetwork(config):  # type: ignore[no-untyped-def]
        """
        Create a network from an engine network config; its id.
        """

    def connectNetwork(network, containerID, aliases):  # type: ignore[no-untyped-def]
        """
        Attach a container to a network under DNS C{aliases}.
        """

    def image(name):  # type: ignore[no-untyped-def]
        """
        An image's inspect document, or None when the engine lacks it.
        """

    def pull(image, timeout=600.0):  # type: ignore[no-untyped-def]
        """
        Pull an image from its registry.
        """

    def createContainer(name, config):  # type: ignore[no-untyped-def]
        """
        Create a container from an engine container config; its id.
        """

    def startContainer(containerID):  # type: ignore[no-untyped-def]
        """
        Start a container.
        """

    def stopContainer(containerID, grace=None):  # type: ignore[no-untyped-def]
        """
        Stop a container (killed after C{grace} seconds; None: its own stop timeout).
        """

    def renameContainer(containerID, name):  # type: ignore[no-untyped-def]
        """
        Rename a container.
        """

    def removeContainer(containerID, force):  # type: ignore[no-untyped-def]
        """
        Remove a container.
        """


class IDNSProvider(Interface):
    """
    Where the DNS writer puts the cluster's A/AAAA records.  Names are
    absolute without the trailing dot (C{example.org}, C{*.example.org}).
    """

    name = Attribute("Short name of the provider for logs and /api/state.")
    fencing = Attribute("One sentence: what the provider guarantees about a deposed writer's writes.")

    def records(names):  # type: ignore[no-untyped-def]
        """
        A L{Deferred} firing with C{{name: sorted addresses}} of the
        address records at C{names} (absent names left out).
        """

    def apply(changes, token):  # type: ignore[no-untyped-def]
        """
        Apply C{changes} (a list of C{(name, addresses)}; empty addresses:
        delete) under fencing token C{token}; a L{Deferred} firing when
        done, failing with L{suite.constellation.dns.Fenced} when a writer
        with a higher token has written since.
        """
