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
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

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
        [
            "drain-timeout",
            None,
            "10",
            "On SIGTERM/SIGINT, seconds open streams get to finish before they are reset (0-300).",
        ],
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
        try:
            self["drain-timeout"] = float(self["drain-timeout"])
        except ValueError:
            raise ConfigError(f"--drain-timeout: {self['drain-timeout']!r} is not a number") from None
        if not 0 <= self["drain-timeout"] <= 300:
            raise ConfigError("--drain-timeout: must be between 0 and 300 seconds")


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

    def postOptions(self) -> None:
        self["linger"] = _seconds("--linger", self["linger"], 0, 3600)


class ReleaseOptions(_HostOptions):
    """
    C{release HOST}: forget a hostname you own.
    """


class AcmeOptions(usage.Options):
    """
    C{acme [--hostname H] [--remove] DOMAIN}: claim a custom domain (print
    the CNAME to publish) or forget it.
    """

    optFlags = [["remove", None, "Forget the custom domain (its record in the ring KV)."]]
    optParameters = [
        [
            "hostname",
            None,
            None,
            "Your tunnel hostname that serves DOMAIN (default: your only one).",
        ]
    ]

    def parseArgs(self, domain: str) -> None:  # type: ignore[override]
        self["domain"] = domain.strip().rstrip(".").lower()


class ValidateOptions(usage.Options):
    """
    C{validate DOMAIN}: have the gateway check the CNAME printed by C{acme}.
    """

    def parseArgs(self, domain: str) -> None:  # type: ignore[override]
        self["domain"] = domain.strip().rstrip(".").lower()


class EnrollOptions(usage.Options):
    """
    C{enroll URL --name NAME}: get a client certificate from a server's
    C{/_internal/pki/client} (credentials: --user and env
    SPECTER_INTERNAL_PASS or INTERNAL_PASS) and write it to --cert-dir.
    """

    optFlags = [["force", None, "Replace existing client files."]]
    optParameters = [
        ["name", "n", None, "Common name of the certificate (required; it owns your hostnames)."],
        ["user", "u", None, "User for /_internal (env INTERNAL_USER)."],
        [
            "cacert",
            None,
            None,
            "PEM file trusted for an https:// URL (e.g. the gateway's self-signed certificate).",
        ],
    ]

    def parseArgs(self, url: str) -> None:  # type: ignore[override]
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"enroll: {url!r} must be an http:// or https:// URL of a server's helper or apex"
            )
        self["url"] = url.rstrip("/")

    def postOptions(self) -> None:
        if not self["name"]:
            raise ConfigError("--name: required")
        from suite.pki.names import clientName

        try:
            clientName(self["name"])
        except ValueError as e:
            raise ConfigError(f"--name: {e}") from None
        self["user"] = self["user"] or os.environ.get("INTERNAL_USER")
        self["password"] = os.environ.get("SPECTER_INTERNAL_PASS") or os.environ.get("INTERNAL_PASS")
        if not self["user"] or not self["password"]:
            raise ConfigError(
                "--user: /_internal credentials are required (--user or INTERNAL_USER, and SPECTER_INTERNAL_PASS or INTERNAL_PASS)"
            )


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
        [
            "timeout",
            None,
            "15",
            "Seconds to wait for a gateway's answer (ls, release, connect, acme, validate).",
        ],
    ]
    subCommands = [
        ["tunnel", None, TunnelOptions, "Expose a local target through the gateways."],
        ["ls", None, LsOptions, "List the hostnames you own."],
        ["connect", None, ConnectOptions, "Raw TCP to HOST through the gateway on stdin/stdout."],
        ["release", None, ReleaseOptions, "Release a hostname you own."],
        ["enroll", None, EnrollOptions, "Get a client certificate from a server's /_internal/pki/client."],
        ["acme", None, AcmeOptions, "Custom domain: get the _acme-challenge CNAME to publish."],
        ["validate", None, ValidateOptions, "Custom domain: check that CNAME and validate the domain."],
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
            raise ConfigError(
                "client: a command is required: tunnel, ls, connect, release, enroll, acme, validate"
            )
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
        self["timeout"] = _seconds("--timeout", self["timeout"], 0, 3600, lowOpen=True)


def _seconds(flag: str, text: Any, low: float, high: float, lowOpen: bool = False) -> float:
    """
    A number of seconds between C{low} (excluded with C{lowOpen}) and C{high}.
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: {text!r} is not a number") from None
    if not (low < value if lowOpen else low <= value) or not value <= high:
        above = "more than" if lowOpen else "at least"
        raise ConfigError(f"{flag}: must be {above} {low:g} and at most {high:g} seconds")
    return value


def _identity(options: ClientOptions) -> Any:
    from suite.pki.load import loadClientIdentity

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

    from suite.specter.tunnel.twistedio import leanDispatch

    leanDispatch(reactor)
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

    def shutdown() -> Deferred[None]:
        # SIGTERM/SIGINT: finish the streams in flight (bounded), then exit 0
        drained = client.drain(sub["drain-timeout"])

        def finished(_: None) -> None:
            if not done.called:
                done.callback(0)

        return drained.addCallback(finished)

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


@implementer(IHandshakeListener)
class _Splice(Protocol):
    transport: Any = None
    handshaken = False

    def __init__(self, done: Deferred[int]) -> None:
        self.done = done

    def handshakeCompleted(self) -> None:
        self.handshaken = True

    def dataReceived(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        if self.done.called:
            return
        if self.handshaken:
            self.done.callback(0)
        else:
            self.done.errback(ConfigError(f"TLS with the gateway failed: {reason.getErrorMessage()}"))


class _Stdin(Protocol):
    def __init__(self, remote: _Splice, linger: float, reactor: Any) -> None:
        self.remote = remote
        self.linger = linger
        self.reactor = reactor

    def dataReceived(self, data: bytes) -> None:
        self.remote.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.reactor.callLater(self.linger, self.remote.transport.loseConnection)


@implementer(IOpenSSLClientConnectionCreator)
class _InsecureCreator:
    """
    TLS without certificate checks (C{connect --insecure}), still sending
    SNI and ALPN.
    """

    def __init__(self, hostname: str, alpn: bytes) -> None:
        from twisted.internet import ssl

        self.context = ssl.CertificateOptions(verify=False).getContext()
        self.context.set_alpn_protos([alpn])
        self.name = hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL import SSL

        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self.name)
        connection.set_connect_state()
        return connection


async def _connect(reactor: Any, options: ClientOptions) -> int:
    from twisted.internet import ssl, stdio
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    from suite.specter.gateway.core import TCP_ALPN

    sub = options.subOptions
    hostname = sub["hostname"]
    if sub["insecure"]:
        creator: Any = _InsecureCreator(hostname, TCP_ALPN)
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
    stdio.StandardIO(_Stdin(remote, sub["linger"], reactor), reactor=reactor)
    return await done


async def _enroll(reactor: Any, options: ClientOptions) -> int:
    import json

    import treq
    from twisted.internet import ssl
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    from suite.logging import Secret

    sub = options.subOptions
    directory = options["cert-dir"]
    files = [os.path.join(directory, n) for n in ("client.crt", "client.key", "ca.crt")]
    if not sub["force"] and any(os.path.exists(f) for f in files):
        raise ConfigError(f"--cert-dir: {directory} already holds client files (use --force to replace them)")
    policy = None
    if sub["cacert"]:
        try:
            with open(sub["cacert"], "rb") as f:
                policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(f.read()))
        except (OSError, ValueError) as e:
            raise ConfigError(f"--cacert: cannot read {sub['cacert']}: {e}") from None
    agent = Agent(reactor, contextFactory=policy) if policy is not None else Agent(reactor)
    client = treq.client.HTTPClient(agent)
    password = Secret(sub["password"])
    response = await client.post(
        f"{sub['url']}/_internal/pki/client",
        data={"name": sub["name"]},
        auth=(sub["user"], password.reveal()),
        timeout=options["timeout"],
    )
    body = await response.content()
    if response.code != 200:
        try:
            reason = json.loads(body).get("error", "")
        except ValueError:
            reason = body[:200].decode("utf-8", "replace")
        raise ConfigError(f"enroll: the server answered {response.code}: {reason}")
    answer = json.loads(body)
    os.makedirs(directory, exist_ok=True)
    for path, key, mode in zip(files, ("certificate", "key", "ca"), (0o644, 0o600, 0o644), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), mode)
            out.write(answer[key])
    sys.stdout.write(f"wrote {', '.join(files)}\n")
    return 0


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
    if command == "enroll":
        return await _enroll(reactor, options)
    if command == "acme":
        sub = options.subOptions
        message: dict[str, Any] = {"t": "acme", "id": 1, "domain": sub["domain"]}
        if sub["remove"]:
            message["remove"] = True
        elif sub["hostname"]:
            message["hostname"] = sub["hostname"]
        result = await _command(reactor, options, message)
        if result.get("removed"):
            sys.stdout.write(f"removed {result.get('domain')}\n")
            return 0
        sys.stdout.write(f"{result.get('name')}. CNAME {result.get('cname')}.\n")
        sys.stderr.write(
            f"publish this record, then run 'specter client validate {result.get('domain')}' "
            f"(served by {result.get('hostname')})\n"
        )
        return 0
    if command == "validate":
        result = await _command(
            reactor, options, {"t": "validate", "id": 1, "domain": options.subOptions["domain"]}
        )
        sys.stdout.write(f"{result.get('domain')}. CNAME {result.get('target')}.\n")
        sys.stderr.write(
            f"{result.get('domain')} is validated (served by {result.get('hostname')}); point it at "
            f"{result.get('target')} as above\n"
        )
        return 0
    raise notImplementedYet(f"specter client {command}")


def runClient(options: ClientOptions, argv0: str = "specter client") -> int:
    """
    Run a parsed C{specter client} command; return the exit code.
    """
    from twisted.internet.task import react

    from suite.logging import startLogging

    startLogging(level="info" if options.subCommand == "tunnel" else "warn")
    code = [0]

    def main(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            try:
                code[0] = await _run(reactor, options)
            except usage.UsageError as e:
                sys.stderr.write(errorLine(argv0, e))
                code[0] = 2
            except Exception as e:  # command line: one line, exit 1
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
