"""
C{specter client tunnel|ls|connect|release}: run under L{task.react}.

The client's identity is a directory written by C{specter pki client SRC
--name NAME --out DIR} (C{client.crt}, C{client.key}, C{ca.crt}).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from suite.daemon import ConfigError, errorLine, notImplementedYet
from suite.specter.client.link import TunnelClient, splitHostPort, tunnelCreator

__all__ = ["ClientOptions", "runClient"]

log = Logger()
DEFAULT_SERVER = "127.0.0.1:443"


def _parseTarget(value: str) -> tuple[str, tuple[str, int]]:
    for scheme, kind in (("http://", "http"), ("tcp://", "tcp")):
        if value.startswith(scheme):
            rest = value[len(scheme) :].split("/", 1)[0]
            try:
                host, port = splitHostPort(rest, 80 if kind == "http" else 0)
            except ValueError:
                break
            if not host or not 0 < port < 65536:
                break
            return kind, (host, port)
    raise ConfigError(f"--target: {value!r} must be http://HOST:PORT or tcp://HOST:PORT")


class TunnelOptions(usage.Options):
    """
    C{tunnel --target URL [--hostname H]}.
    """

    optParameters = [
        ["target", "t", None, "What to expose: http://HOST:PORT or tcp://HOST:PORT (required)."],
        ["hostname", None, None, "Reuse a hostname you own (default: a new one under the apex)."],
        ["links", None, "3", "Gateways to link to at once (1-3)."],
    ]
    optFlags = [
        ["proxy-protocol", None, "Send a PROXY protocol v1 line naming the visitor to the target first."]
    ]

    def postOptions(self) -> None:
        if not self["target"]:
            raise ConfigError("--target: required (http://HOST:PORT or tcp://HOST:PORT)")
        self["kind"], self["address"] = _parseTarget(self["target"])
        if self["links"] not in ("1", "2", "3"):
            raise ConfigError("--links: must be 1, 2 or 3")
        self["links"] = int(self["links"])


class _HostOptions(usage.Options):
    def parseArgs(self, hostname: str) -> None:  # type: ignore[override]
        self["hostname"] = hostname.rstrip(".").lower()


class ConnectOptions(_HostOptions):
    """
    C{connect HOST}: stdin/stdout through the raw-TCP tunnel C{HOST}.
    """

    optFlags = [["insecure", "k", "Do not verify the gateway's public certificate."]]
    optParameters = [
        [
            "cacert",
            None,
            None,
            "PEM file trusted for the gateway's public certificate (e.g. its self-signed one).",
        ],
        ["linger", None, "2", "Seconds to keep reading after stdin ends."],
    ]


class ReleaseOptions(_HostOptions):
    """
    C{release HOST}: forget a hostname you own.
    """


class LsOptions(usage.Options):
    """
    C{ls}: the hostnames you own.
    """


class ClientOptions(usage.Options):
    """
    C{specter client [--server HOST:PORT]... [--cert-dir DIR] COMMAND}.
    """

    optParameters = [
        [
            "cert-dir",
            None,
            None,
            "Client identity directory from 'specter pki client' (env SPECTER_CLIENT_CERT_DIR; default ~/.specter).",
        ],
        ["timeout", None, "15", "Seconds to wait for a gateway's answer (ls, release, connect)."],
    ]
    subCommands = [
        ["tunnel", None, TunnelOptions, "Expose a local target through the gateways."],
        ["ls", None, LsOptions, "List the hostnames you own."],
        ["connect", None, ConnectOptions, "Raw TCP to HOST through the gateway on stdin/stdout."],
        ["release", None, ReleaseOptions, "Release a hostname you own."],
        ["acme", None, _HostOptions, "Custom domain: get the CNAME to publish (not implemented yet)."],
        ["validate", None, _HostOptions, "Custom domain: validate it (not implemented yet)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["server"] = []

    def opt_server(self, value: str) -> None:
        """
        Gateway HOST:PORT (repeatable; env SPECTER_SERVER, comma-separated; default 127.0.0.1:443).
        """
        self["server"].extend(v.strip() for v in value.split(",") if v.strip())

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise ConfigError("client: a command is required: tunnel, ls, connect, release")
        if not self["server"]:
            self["server"] = [
                v.strip() for v in os.environ.get("SPECTER_SERVER", DEFAULT_SERVER).split(",") if v.strip()
            ]
        for s in self["server"]:
            try:
                host, port = splitHostPort(s)
            except ValueError:
                raise ConfigError(f"--server: {s!r} must be HOST:PORT") from None
            if not host or not 0 < port < 65536:
                raise ConfigError(f"--server: {s!r} must be HOST:PORT")
        self["cert-dir"] = (
            self["cert-dir"] or os.environ.get("SPECTER_CLIENT_CERT_DIR") or os.path.expanduser("~/.specter")
        )
        try:
            self["timeout"] = float(self["timeout"])
        except ValueError:
            raise ConfigError(f"--timeout: {self['timeout']!r} is not a number") from None


def _identity(options: ClientOptions) -> Any:
    from suite.pki.bundle import loadClientIdentity

    return loadClientIdentity(options["cert-dir"])


async def _tunnel(reactor: Any, options: ClientOptions) -> int:
    sub = options.subOptions
    identity = _identity(options)
    done: Deferred[int] = Deferred()

    def registered(hostname: str) -> None:
        sys.stdout.write(f"{hostname}\n")
        sys.stdout.flush()

    def fatal(reason: str) -> None:
        sys.stderr.write(errorLine("specter client tunnel", Exception(reason)))
        if not done.called:
            done.callback(1)

    client = TunnelClient(
        reactor,
        identity,
        options["server"],
        sub["address"],
        sub["kind"],
        hostname=sub["hostname"],
        maxLinks=sub["links"],
        onRegistered=registered,
        onFatal=fatal,
        proxyProtocol=bool(sub["proxy-protocol"]),
    )
    client.start()

    def shutdown() -> None:
        client.stop()
        if not done.called:
            done.callback(0)

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    code = await done
    client.stop()
    return code


class _OneShot(Protocol):
    transport: Any = None
    """
    A command connection: send one control message, wait for its answer.
    """

    def __init__(self, message: dict[str, Any], answer: Deferred[dict[str, Any]]) -> None:
        from suite.specter.tunnel.frames import FrameDecoder

        self.message = message
        self.answer = answer
        self.decoder = FrameDecoder(self._frame)

    def connectionMade(self) -> None:
        from suite.specter.tunnel.frames import encodeControl

        self.transport.write(encodeControl(self.message))

    def dataReceived(self, data: bytes) -> None:
        self.decoder.feed(data)

    def _frame(self, kind: int, sid: int, payload: bytes) -> None:
        from suite.specter.tunnel.frames import CONTROL, decodeControl

        if kind == CONTROL and not self.answer.called:
            self.answer.callback(decodeControl(payload))
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        if not self.answer.called:
            self.answer.errback(reason)


async def _command(reactor: Any, options: ClientOptions, message: dict[str, Any]) -> dict[str, Any]:
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    identity = _identity(options)
    host, port = splitHostPort(options["server"][0])
    endpoint = wrapClientTLS(tunnelCreator(identity, host), HostnameEndpoint(reactor, host, port, timeout=10))
    answer: Deferred[dict[str, Any]] = Deferred()
    timer = reactor.callLater(options["timeout"], answer.cancel)
    try:
        await endpoint.connect(Factory.forProtocol(lambda: _OneShot(message, answer)))
        result = await answer
    finally:
        if timer.active():
            timer.cancel()
    if result.get("t") == "error":
        raise ConfigError(str(result.get("reason")))
    return result


class _Splice(Protocol):
    transport: Any = None

    def __init__(self, done: Deferred[int]) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        if not self.done.called:
            self.done.callback(0)


class _Stdin(Protocol):
    def __init__(self, remote: _Splice, linger: float, reactor: Any) -> None:
        self.remote = remote
        self.linger = linger
        self.reactor = reactor

    def dataReceived(self, data: bytes) -> None:
        self.remote.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.reactor.callLater(self.linger, self.remote.transport.loseConnection)


async def _connect(reactor: Any, options: ClientOptions) -> int:
    from twisted.internet import ssl, stdio
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    from suite.specter.gateway.core import TCP_ALPN

    sub = options.subOptions
    hostname = sub["hostname"]
    if sub["insecure"]:
        context = ssl.CertificateOptions(verify=False, acceptableProtocols=[TCP_ALPN]).getContext()
        creator: Any = ssl.ClientTLSOptions(hostname, context)  # type: ignore[attr-defined]
        creator._ctx.set_verify(0, lambda *a: True)
    else:
        trust: Any = None
        if sub["cacert"]:
            try:
                with open(sub["cacert"], "rb") as f:
                    trust = ssl.Certificate.loadPEM(f.read())
            except (OSError, ValueError) as e:
                raise ConfigError(f"--cacert: cannot read {sub['cacert']}: {e}") from None
        creator = ssl.optionsForClientTLS(hostname, trustRoot=trust, acceptableProtocols=[TCP_ALPN])
    host, port = splitHostPort(options["server"][0])
    done: Deferred[int] = Deferred()
    remote = _Splice(done)
    endpoint = wrapClientTLS(creator, HostnameEndpoint(reactor, host, port, timeout=options["timeout"]))
    await endpoint.connect(Factory.forProtocol(lambda: remote))
    try:
        linger = float(sub["linger"])
    except ValueError:
        raise ConfigError(f"--linger: {sub['linger']!r} is not a number") from None
    stdio.StandardIO(_Stdin(remote, linger, reactor), reactor=reactor)
    return await done


async def _run(reactor: Any, options: ClientOptions) -> int:
    command = options.subCommand
    if command == "tunnel":
        return await _tunnel(reactor, options)
    if command == "ls":
        result = await _command(reactor, options, {"t": "ls", "id": 1})
        for name in result.get("hostnames", []):
            sys.stdout.write(f"{name}\n")
        return 0
    if command == "release":
        host = options.subOptions["hostname"]
        result = await _command(reactor, options, {"t": "release", "id": 1, "hostname": host})
        if not result.get("existed"):
            sys.stderr.write(f"specter client release: {host}: not found\n")
            return 1
        sys.stdout.write(f"released {host}\n")
        return 0
    if command == "connect":
        return await _connect(reactor, options)
    raise notImplementedYet(f"specter client {command} (custom domains)")


def runClient(options: ClientOptions, argv0: str = "specter client") -> int:
    """
    Run a parsed C{specter client} command; return the exit code.
    """
    from twisted.internet.task import react

    from suite.logging import startLogging

    startLogging()
    code = [0]

    def main(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            try:
                code[0] = await _run(reactor, options)
            except usage.UsageError as e:
                sys.stderr.write(errorLine(argv0, e))
                code[0] = 2
            except Exception as e:
                sys.stderr.write(errorLine(argv0, Exception(f"--server {options['server'][0]}: {e}")))
                code[0] = 1

        return Deferred.fromCoroutine(go())

    try:
        react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return code[0]


def main(argv: list[str] | None = None) -> None:
    """
    C{python -m suite.specter.client ...} (same as C{specter client ...}).
    """
    options = ClientOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(errorLine("specter client", e))
        raise SystemExit(2) from None
    raise SystemExit(runClient(options))
