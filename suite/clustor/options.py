"""
Options for C{twistd clustor-cp} / C{clustor-cp}: the CEPtra control plane.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from suite.daemon import ConfigError, DaemonOptions
from suite.pki.verify import parseSpiffeId

__all__ = ["Options", "DEFAULT_LISTEN"]

#: Loopback by default; use TLS (the three --tls-* flags) to listen wider.
DEFAULT_LISTEN = "tcp:26010:interface=127.0.0.1"

_ENV = {
    "state": "CLUSTOR_CP_STATE",
    "listen": "CLUSTOR_CP_LISTEN",
    "tls-identity-cert": "CLUSTOR_CP_TLS_IDENTITY_CERT",
    "tls-identity-key": "CLUSTOR_CP_TLS_IDENTITY_KEY",
    "tls-trust-bundle": "CLUSTOR_CP_TLS_TRUST_BUNDLE",
    "reload-interval": "CLUSTOR_CP_RELOAD_INTERVAL",
    "client-spiffe": "CLUSTOR_CP_CLIENT_SPIFFE",
}


class Options(DaemonOptions):
    """
    C{clustor-cp --state FILE [--listen ENDPOINT] [--tls-identity-cert ...]}.

    Every flag falls back to the environment variable named in its help.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve the Clustor control-plane feeds (/routing, /features, /warmup, "
        "/activation) from a YAML or JSON state file, reloaded on SIGHUP and when "
        "the file changes; /healthz, /readyz and /metrics on the same listener. "
        "Plain HTTP listens on loopback or a unix socket only; with the three "
        "--tls-* flags the listener is mTLS (clients need a certificate signed by "
        "the trust bundle) and may bind any interface."
    )

    optParameters: list[list[Any]] = [
        [
            "state",
            None,
            None,
            "State file (YAML or JSON): partitions, features, warmup, activation. Required. [env CLUSTOR_CP_STATE]",
        ],
        ["listen", None, None, f"Listen endpoint (default {DEFAULT_LISTEN}). [env CLUSTOR_CP_LISTEN]"],
        [
            "tls-identity-cert",
            None,
            None,
            "PEM certificate of this server (enables mTLS). [env CLUSTOR_CP_TLS_IDENTITY_CERT]",
        ],
        [
            "tls-identity-key",
            None,
            None,
            "PEM private key of --tls-identity-cert. [env CLUSTOR_CP_TLS_IDENTITY_KEY]",
        ],
        [
            "tls-trust-bundle",
            None,
            None,
            "PEM CA bundle trusted for client certificates. [env CLUSTOR_CP_TLS_TRUST_BUNDLE]",
        ],
        [
            "client-spiffe",
            None,
            None,
            "With mTLS, accept only clients whose certificate carries this SPIFFE ID, or a SPIFFE ID "
            "in this trust domain (spiffe://example.org). Default: any certificate from the trust "
            "bundle. [env CLUSTOR_CP_CLIENT_SPIFFE]",
        ],
        [
            "reload-interval",
            None,
            None,
            "Seconds between checks of the state file for changes; 0 turns the check off (SIGHUP still reloads). Default 2. [env CLUSTOR_CP_RELOAD_INTERVAL]",
        ],
    ] + DaemonOptions.optParameters

    compData = usage.Completions(
        optActions={
            "state": usage.CompleteFiles("*.yaml *.yml *.json"),
            "tls-identity-cert": usage.CompleteFiles("*.crt *.pem"),
            "tls-identity-key": usage.CompleteFiles("*.key *.pem"),
            "tls-trust-bundle": usage.CompleteFiles("*.crt *.pem"),
        }
    )

    def postOptions(self) -> None:
        super().postOptions()
        for key, env in _ENV.items():
            self.envFallback(key, env)
        if not self["state"]:
            raise ConfigError("--state (CLUSTOR_CP_STATE): a state file is required")
        if not self["listen"]:
            self["listen"] = DEFAULT_LISTEN
        raw = self["reload-interval"]
        if raw in (None, ""):
            self["reload-interval"] = 2.0
        else:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"--reload-interval (CLUSTOR_CP_RELOAD_INTERVAL): {raw!r} is not a number of seconds"
                ) from None
            if not 0 <= value <= 86400 or value != value:
                raise ConfigError(
                    "--reload-interval (CLUSTOR_CP_RELOAD_INTERVAL): must be from 0 to 86400 seconds"
                )
            self["reload-interval"] = value
        tls = [self[k] for k in ("tls-identity-cert", "tls-identity-key", "tls-trust-bundle")]
        if any(tls) and not all(tls):
            missing = [
                f"--{k} ({_ENV[k]})"
                for k in ("tls-identity-cert", "tls-identity-key", "tls-trust-bundle")
                if not self[k]
            ]
            raise ConfigError(f"{', '.join(missing)}: required when any --tls-* flag is given")
        self["tls"] = all(tls)
        spiffe = self["client-spiffe"]
        if spiffe:
            if not self["tls"]:
                raise ConfigError(
                    "--client-spiffe (CLUSTOR_CP_CLIENT_SPIFFE): needs mTLS (the three --tls-* flags)"
                )
            try:
                parseSpiffeId(spiffe)
            except ValueError as e:
                raise ConfigError(f"--client-spiffe (CLUSTOR_CP_CLIENT_SPIFFE): {e}") from None
