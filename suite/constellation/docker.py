"""
A small Docker Engine API client on treq.

    client = DockerClient(reactor, "unix:/var/run/docker.sock")
    version = await client.negotiate()          # "1.41" on Debian's engine
    for c in await client.containers(labels=["constellation.node=a"]):
        info = await client.inspect(c["Id"])
        container = Container.fromInspect(info)

The API version is negotiated as the Docker CLI does it: C{GET /version}
(unversioned), then every request uses C{/vX.Y/...} with the lower of the
client's newest version (L{CLIENT_API_VERSION}) and the engine's.  Every
request has a timeout and a size limit; every failure is a L{DockerError}
whose message is one line naming the request.  L{DockerClient.events}
follows the engine's event stream (one JSON object a line).

The endpoint is a Twisted client endpoint string (C{unix:/var/run/docker.sock},
C{tcp:host:2375}); C{unix:///path} (Docker's own spelling) is accepted too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from suite.constellation.interfaces import IContainerEngine

__all__ = [
    "CLIENT_API_VERSION",
    "MIN_API_VERSION",
    "Container",
    "DockerClient",
    "DockerError",
    "EventStream",
    "parseDockerEndpoint",
]

#: The newest Engine API version this client speaks (Docker 25's).
CLIENT_API_VERSION = "1.44"
#: The oldest engine API version this client accepts.
MIN_API_VERSION = "1.24"


class DockerError(Exception):
    """
    A Docker request failed; C{str(error)} is one line for the operator.
    """


def _versionTuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        raise DockerError(f"docker: engine API version {v!r} is not a version number") from None


def parseDockerEndpoint(reactor: Any, value: str) -> IStreamClientEndpoint:
    """
    A client endpoint for C{--docker}: C{unix:PATH}, C{unix://PATH} or any
    Twisted client endpoint string.

    @raise ValueError: for a string Twisted cannot parse.
    """
    value = value.strip()
    if value.startswith("unix://"):
        value = "unix:" + value[len("unix://") :]
    if value.startswith("/"):
        value = "unix:" + value
    endpoint: IStreamClientEndpoint = clientFromString(reactor, value)
    return endpoint


@implementer(IAgentEndpointFactory)
class _FixedEndpoint:
    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: object) -> IStreamClientEndpoint:
        return self.endpoint


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Container:
    """
    What the agent needs of one container (from C{GET /containers/{id}/json}).

    @ivar health: C{healthy}, C{unhealthy}, C{starting}, or C{none} when the
        container has no healthcheck.
    @ivar networks: network name -> IP address (empty for none/host).
    @ivar published: C{"80/tcp"} -> host port, for published ports.
    """

    id: str
    name: str
    labels: Mapping[str, str]
    running: bool
    health: str
    networkMode: str = ""
    networks: Mapping[str, str] = field(default_factory=dict)
    exposed: tuple[str, ...] = ()
    published: Mapping[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """
        Running, and healthy by its healthcheck when it has one.
        """
        return self.running and self.health in ("healthy", "none")

    @classmethod
    def fromInspect(cls, data: Mapping[str, Any]) -> Container:
        """
        Build from an inspect document.

        @raise DockerError: if it is not one.
        """
        try:
            state = data.get("State") or {}
            health = (state.get("Health") or {}).get("Status") or "none"
            config = data.get("Config") or {}
            settings = data.get("NetworkSettings") or {}
            networks = {
                str(n): str(v.get("IPAddress") or "")
                for n, v in (settings.get("Networks") or {}).items()
                if isinstance(v, dict) and v.get("IPAddress")
            }
            published: dict[str, int] = {}
            for port, bindings in (settings.get("Ports") or {}).items():
                for b in bindings or ():
                    if b.get("HostPort"):
                        published.setdefault(str(port), int(b["HostPort"]))
            return cls(
                id=str(data["Id"]),
                name=str(data.get("Name") or data["Id"][:12]).lstrip("/"),
                labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
                running=bool(state.get("Running")),
                health=str(health),
                networkMode=str((data.get("HostConfig") or {}).get("NetworkMode") or ""),
                networks=networks,
                exposed=tuple(sorted(str(p) for p in (config.get("ExposedPorts") or {}))),
                published=published,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DockerError(f"docker: container document is malformed ({type(e).__name__}: {e})") from None


class _LineReader(Protocol):
    """
    Deliver a streamed body line by line; fail on an over-long line.
    """

    def __init__(self, onLine: Callable[[bytes], None], maxLine: int, done: Deferred[None]) -> None:
        self.onLine, self.maxLine, self.done = onLine, maxLine, done
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.onLine(line)
            if self.done.called:
                return
        if len(self.buffer) > self.maxLine:
            self.buffer = b""
            self.stop(DockerError(f"docker: event longer than {self.maxLine} bytes"))

    def stop(self, reason: Exception | None = None) -> None:
        if self.transport is not None:
            # A response body's transport is a producer; ITransport does not say so.
            self.transport.stopProducing()  # type: ignore[attr-defined]
        if not self.done.called:
            if reason is None:
                self.done.callback(None)
            else:
                self.done.errback(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss, ConnectionDone):
            self.done.callback(None)
        else:
            self.done.errback(DockerError(f"docker: event stream lost: {reason.getErrorMessage()}"))


class EventStream:
    """
    A running C{GET /events}: C{done} fires when the stream ends (errback
    with L{DockerError} on failure); L{stop} ends it.
    """

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()
        self._reader: _LineReader | None = None
        self._request: Deferred[Any] | None = None

    def stop(self) -> None:
        """
        Close the stream; C{done} fires with None.
        """
        if self._reader is not None:
            self._reader.stop()
        elif self._request is not None:
            self._request.cancel()
        if not self.done.called:
            self.done.callback(None)


@implementer(IContainerEngine)
class DockerClient:
    """
    Engine API requests over C{endpoint}.

    @param timeout: seconds for a whole request (connect, answer, body).
    @param maxBody: largest answer body accepted, in bytes.
    """

    def __init__(
        self,
        reactor: Any,
        endpoint: str | IStreamClientEndpoint,
        timeout: float = 10.0,
        maxBody: int = 8 * 1024 * 1024,
        maxEventBytes: int = 64 * 1024,
        clientVersion: str = CLIENT_API_VERSION,
    ) -> None:
        self.reactor = reactor
        self.description = endpoint if isinstance(endpoint, str) else repr(endpoint)
        if isinstance(endpoint, str):
            endpoint = parseDockerEndpoint(reactor, endpoint)
        self.http = HTTPClient(Agent.usingEndpointFactory(reactor, _FixedEndpoint(endpoint)))
        self.timeout = timeout
        self.maxBody = maxBody
        self.maxEventBytes = maxEventBytes
        self.clientVersion = clientVersion
        #: The negotiated version, after L{negotiate}.
        self.apiVersion: str | None = None
        #: The engine's own C{/version} document, after L{negotiate}.
        self.engine: dict[str, Any] = {}

    # -- plumbing ------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, str] | None = None, versioned: bool = True) -> str:
        prefix = f"/v{self.apiVersion}" if versioned and self.apiVersion else ""
        url = "http://docker" + prefix + path
        if query:
            url += "?" + urlencode(query)
        return url

    def _what(self, method: str, path: str) -> str:
        return f"docker: {method} {path} on {self.description}"

    async def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
        lines: bool = False,
    ) -> Any:
        """
        One request, its whole body decoded as JSON (None for an empty
        body); C{body} is sent as JSON; with C{lines}, the answer is a list
        of JSON objects, one a line (a pull's progress).
        """
        what = self._what(method, path)
        if path != "/version" and self.apiVersion is None:
            await self.negotiate()
        timeout = self.timeout if timeout is None else timeout
        kw: dict[str, Any] = {}
        if body is not None:
            kw["data"] = json.dumps(body).encode("utf-8")
            kw["headers"] = {"Content-Type": ["application/json"]}

        async def run() -> tuple[int, bytes]:
            response = await self.http.request(
                method, self._url(path, query, versioned=path != "/version"), **kw
            )
            chunks: list[bytes] = []
            size = [0]
            streaming = lines and response.code < 400
            # A progress stream (a pull) is read line by line, keeping only
            # its error lines and its last line, however long it runs.
            kept: list[bytes] = []
            tail = [b"", b""]  # unfinished line, last complete line

            def collect(data: bytes) -> None:
                if streaming:
                    *complete, tail[0] = (tail[0] + data).split(b"\n")
                    for line in complete:
                        if line.strip():
                            tail[1] = line[: self.maxEventBytes]
                            if b'"error' in line and len(kept) < 16:
                                kept.append(tail[1])
                    if len(tail[0]) > self.maxEventBytes:
                        raise _TooLarge()
                    return
                size[0] += len(data)
                if size[0] > self.maxBody:
                    raise _TooLarge()
                chunks.append(data)

            await treq.collect(response, collect)
            if streaming:
                return response.code, b"\n".join([*kept, *tail[::-1]])
            return response.code, b"".join(chunks)

        d = Deferred.fromCoroutine(run())
        d.addTimeout(timeout, self.reactor)
        try:
            code, answer = await d
        except _TooLarge:
            limit = f"a line longer than {self.maxEventBytes}" if lines else f"larger than {self.maxBody}"
            raise DockerError(f"{what}: answer {limit} bytes") from None
        except (TimeoutError, CancelledError):
            raise DockerError(f"{what}: no answer within {timeout:g} s") from None
        except ConnectError as e:
            reason = os.strerror(e.osError) if isinstance(e.osError, int) else e.osError or _oneLine(e)
            raise DockerError(f"{what}: cannot connect: {reason}") from None
        except Exception as e:  # one DockerError with the reason
            if _cancelled(e):
                raise DockerError(f"{what}: no answer within {timeout:g} s") from None
            raise DockerError(f"{what}: {_oneLine(e)}") from None
        try:
            if lines and code < 400:
                return [
                    o
                    for o in (json.loads(x) for x in answer.splitlines() if x.strip())
                    if isinstance(o, dict)
                ]
            doc = json.loads(answer) if answer.strip() else None
        except ValueError:
            if code >= 400:
                raise DockerError(f"{what}: HTTP {code}") from None
            raise DockerError(f"{what}: answer is not JSON") from None
        if code >= 400:
            message = doc.get("message") if isinstance(doc, dict) else None
            raise DockerError(f"{what}: HTTP {code}: {str(message or 'error')[:300]}")
        return doc

    # -- the API -------------------------------------------------------

    async def negotiate(self) -> str:
        """
        C{GET /version}; use the lower of the client's and the engine's API
        versions (the Docker CLI's rule).  An engine answering without a
        version means API 1.24, as the CLI assumes.

        @raise DockerError: if the engine is older than L{MIN_API_VERSION}.
        """
        doc = await self._request("GET", "/version")
        if not isinstance(doc, dict):
            raise DockerError(f"{self._what('GET', '/version')}: answer is not an object")
        server = str(doc.get("ApiVersion") or MIN_API_VERSION)
        chosen = min(server, self.clientVersion, key=_versionTuple)
        if _versionTuple(chosen) < _versionTuple(MIN_API_VERSION):
            raise DockerError(
                f"docker: engine API {server} on {self.description} is older than {MIN_API_VERSION}"
            )
        self.engine = doc
        self.apiVersion = chosen
        return chosen

    async def containers(self, labels: Iterable[str] = (), all: bool = False) -> list[dict[str, Any]]:
        """
        C{GET /containers/json}, filtered by C{labels} (C{key} or C{key=value}).
        """
        query = {"all": "1" if all else "0"}
        labels = list(labels)
        if labels:
            query["filters"] = json.dumps({"label": labels})
        doc = await self._request("GET", "/containers/json", query)
        if not isinstance(doc, list):
            raise DockerError(f"{self._what('GET', '/containers/json')}: answer is not a list")
        return [c for c in doc if isinstance(c, dict) and "Id" in c]

    async def inspect(self, containerID: str) -> dict[str, Any]:
        """
        C{GET /containers/{id}/json}.
        """
        doc = await self._request("GET", f"/containers/{quote(containerID, safe='')}/json")
        if not isinstance(doc, dict) or "Id" not in doc:
            raise DockerError(f"{self._what('GET', '/containers/{id}/json')}: answer is not a container")
        return doc

    async def monitored(self, labels: Sequence[str] = ()) -> list[Container]:
        """
        Every running container matching C{labels}, inspected (health and
        networks need the inspect document).  A container that disappears
        between the list and its inspection is left out.
        """
        out: list[Container] = []
        for summary in await self.containers(labels):
            try:
                info = await self.inspect(str(summary["Id"]))
            except DockerError as e:
                if "HTTP 404" in str(e):
                    continue
                raise
            out.append(Container.fromInspect(info))
        return sorted(out, key=lambda c: (c.name, c.id))

    # -- what deployment needs ------------------------------------------

    async def networks(self) -> list[dict[str, Any]]:
        """
        C{GET /networks}: every network's summary (C{Name}, C{Id}, C{Driver}, ...).
        """
        doc = await self._request("GET", "/networks")
        if not isinstance(doc, list):
            raise DockerError(f"{self._what('GET', '/networks')}: answer is not a list")
        return [n for n in doc if isinstance(n, dict) and "Name" in n]

    async def createNetwork(self, config: Mapping[str, Any]) -> str:
        """
        C{POST /networks/create} with C{config} (C{Name}, C{Driver}, ...); the new network's id.
        """
        doc = await self._request("POST", "/networks/create", body=dict(config))
        return str((doc or {}).get("Id", ""))

    async def connectNetwork(self, network: str, containerID: str, aliases: Sequence[str] = ()) -> None:
        """
        C{POST /networks/{id}/connect}: attach a container, with DNS C{aliases}.
        """
        endpoint: dict[str, Any] = {"Aliases": list(aliases)} if aliases else {}
        await self._request(
            "POST",
            f"/networks/{quote(network, safe='')}/connect",
            body={"Container": containerID, "EndpointConfig": endpoint},
        )

    async def image(self, name: str) -> dict[str, Any] | None:
        """
        C{GET /images/{name}/json}; None when the engine has no such image.
        """
        try:
            doc = await self._request("GET", f"/images/{quote(name, safe='')}/json")
        except DockerError as e:
            if "HTTP 404" in str(e):
                return None
            raise
        return doc if isinstance(doc, dict) else None

    async def pull(self, image: str, timeout: float = 600.0) -> None:
        """
        C{POST /images/create}: pull C{image} (C{repo[:tag]} or C{repo@digest}).

        @raise DockerError: with the engine's or the registry's message.
        """
        repo, tag = _splitImage(image)
        query = {"fromImage": repo}
        if tag:
            query["tag"] = tag
        progress = await self._request("POST", "/images/create", query, timeout=timeout, lines=True)
        for item in progress or ():
            if item.get("error") or item.get("errorDetail"):
                message = item.get("error") or (item.get("errorDetail") or {}).get("message")
                raise DockerError(f"docker: pull {image}: {str(message)[:300]}")

    async def createContainer(self, name: str, config: Mapping[str, Any]) -> str:
        """
        C{POST /containers/create?name=NAME}; the new container's id.
        """
        doc = await self._request("POST", "/containers/create", {"name": name}, body=dict(config))
        if not isinstance(doc, dict) or "Id" not in doc:
            raise DockerError(f"{self._what('POST', '/containers/create')}: answer has no Id")
        return str(doc["Id"])

    async def startContainer(self, containerID: str) -> None:
        """
        C{POST /containers/{id}/start} (an already running one is fine).
        """
        await self._request("POST", f"/containers/{quote(containerID, safe='')}/start")

    async def stopContainer(self, containerID: str, grace: int | None = None) -> None:
        """
        C{POST /containers/{id}/stop}: SIGTERM, SIGKILL after C{grace}
        seconds (None: the container's own stop timeout, 10 s unless set;
        up to 5 minutes are waited for).
        """
        await self._request(
            "POST",
            f"/containers/{quote(containerID, safe='')}/stop",
            {"t": str(grace)} if grace is not None else None,
            timeout=self.timeout + (grace if grace is not None else 300),
        )

    async def renameContainer(self, containerID: str, name: str) -> None:
        """
        C{POST /containers/{id}/rename?name=NAME}.
        """
        await self._request("POST", f"/containers/{quote(containerID, safe='')}/rename", {"name": name})

    async def removeContainer(self, containerID: str, force: bool = True) -> None:
        """
        C{DELETE /containers/{id}} (with C{force}, a running one is killed first).
        """
        await self._request(
            "DELETE", f"/containers/{quote(containerID, safe='')}", {"force": "1" if force else "0"}
        )

    async def execute(self, containerID: str, command: Sequence[str], timeout: float = 15.0) -> int:
        """
        C{POST /containers/{id}/exec}, then C{POST /exec/{id}/start}
        detached, then C{GET /exec/{id}/json} every 0.2 s until it ends;
        its exit status.  Its output is not read.
        """
        doc = await self._request(
            "POST",
            f"/containers/{quote(containerID, safe='')}/exec",
            body={"Cmd": list(command), "AttachStdout": False, "AttachStderr": False},
        )
        if not isinstance(doc, dict) or "Id" not in doc:
            raise DockerError(f"{self._what('POST', '/containers/{id}/exec')}: answer has no Id")
        execID = quote(str(doc["Id"]), safe="")
        await self._request("POST", f"/exec/{execID}/start", body={"Detach": True, "Tty": False})
        deadline = self.reactor.seconds() + timeout
        while True:
            state = await self._request("GET", f"/exec/{execID}/json")
            if isinstance(state, dict) and not state.get("Running") and state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            if self.reactor.seconds() >= deadline:
                raise DockerError(
                    f"{self._what('POST', '/exec/{id}/start')}: still running after {timeout:g} s"
                )
            await deferLater(self.reactor, 0.2, lambda: None)

    def events(self, onEvent: Callable[[dict[str, Any]], None], labels: Sequence[str] = ()) -> EventStream:
        """
        Follow C{GET /events} for containers matching C{labels}; call
        C{onEvent} with each event object.  Garbage lines are skipped; a line
        longer than C{maxEventBytes} ends the stream with an error.
        """
        stream = EventStream()
        filters: dict[str, list[str]] = {"type": ["container"]}
        if labels:
            filters["label"] = list(labels)
        what = self._what("GET", "/events")

        def line(raw: bytes) -> None:
            try:
                event = json.loads(raw)
            except ValueError:
                return
            if isinstance(event, dict):
                onEvent(event)

        async def run() -> None:
            if self.apiVersion is None:
                await self.negotiate()
            request = self.http.request("GET", self._url("/events", {"filters": json.dumps(filters)}))
            request.addTimeout(self.timeout, self.reactor)
            stream._request = request
            response: IResponse = await request
            if response.code >= 400:
                raise DockerError(f"{what}: HTTP {response.code}")
            reader = _LineReader(line, self.maxEventBytes, stream.done)
            stream._reader = reader
            response.deliverBody(reader)

        def failed(f: Failure) -> None:
            if stream.done.called:
                return
            if f.check(DockerError):
                stream.done.errback(f)
            elif f.check(TimeoutError, CancelledError) or _cancelled(f.value or Exception()):
                stream.done.errback(DockerError(f"{what}: no answer within {self.timeout:g} s"))
            else:
                stream.done.errback(DockerError(f"{what}: {_oneLine(f.value or Exception())}"))

        Deferred.fromCoroutine(run()).addErrback(failed)
        return stream


def _splitImage(image: str) -> tuple[str, str]:
    """
    C{repo:tag} -> (repo, tag); a digest reference stays whole; no tag is C{latest}.
    """
    if "@" in image:
        return image, ""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def _cancelled(e: BaseException) -> bool:
    reasons = getattr(e, "reasons", None) or []
    return any(r.check(CancelledError, TimeoutError) for r in reasons)


def _oneLine(e: BaseException) -> str:
    if isinstance(e, ConnectionLost | ConnectionDone):
        return "connection closed by the engine"
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(_oneLine(r.value) for r in reasons)
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
