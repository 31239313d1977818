"""
Error reporting to Sentry (C{--sentry DSN} / C{SENTRY_DSN}).

L{SentryService} starts a sentry-sdk client and adds L{SentryObserver} to a
log publisher: events at info and warn level become breadcrumbs, events at
error and critical level are sent, as exceptions when they carry a failure
and as messages otherwise.  Every event goes through
L{suite.logging.redactEvent} first, so what Sentry receives is what the
JSON log would show: no tokens, passwords or URL credentials.  sentry-sdk's
own integrations (logging, threading, excepthook, ...) stay off, and so do
stack-frame local variables (they may hold credentials); the only way in is
the Twisted log.

The client queues events to its own background thread, which does the
HTTP; the reactor thread only builds the event.  Stopping the service
flushes that queue in a thread, with a bound.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, LogLevel, LogPublisher, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.logging import redactEvent

__all__ = ["SentryObserver", "SentryService", "checkDSN"]

#: How long stopping waits for queued events to go out.
FLUSH_SECONDS = 2.0
_LEVELS: dict[LogLevel, Any] = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "fatal",
}


def checkDSN(flag: str, dsn: str) -> str:
    """
    Check C{dsn} is a Sentry DSN; the error names C{flag} but never repeats
    the DSN (it holds the project key).
    """
    from sentry_sdk.utils import BadDsn, Dsn

    try:
        Dsn(dsn)
    except BadDsn as e:
        raise ConfigError(f"{flag}: not a Sentry DSN ({e})") from None
    return dsn


@implementer(ILogObserver)
class SentryObserver:
    """
    Forward Twisted log events to the current sentry-sdk client.
    """

    def __init__(self, minimum: LogLevel = LogLevel.info) -> None:
        self.minimum = minimum

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        namespace = str(event.get("log_namespace", ""))
        if level < self.minimum or namespace.startswith("sentry_sdk"):
            return
        import sentry_sdk

        clean = redactEvent(event)
        text = formatEvent(clean) or namespace
        if level < LogLevel.error:
            sentry_sdk.add_breadcrumb(category=namespace, message=text, level=_LEVELS.get(level, "info"))
            return
        failure = event.get("log_failure")
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("logger", namespace)
            scope.set_extra("message", text)
            if isinstance(failure, Failure) and failure.value is not None:
                value = failure.value
                tb = failure.getTracebackObject() or value.__traceback__
                sentry_sdk.capture_exception((type(value), value, tb))
            else:
                sentry_sdk.capture_message(text, level="fatal" if level == LogLevel.critical else "error")


class SentryService(Service):
    """
    A sentry-sdk client for the life of the daemon, fed from C{publisher}.
    """

    def __init__(
        self,
        dsn: str,
        reactor: Any,
        publisher: LogPublisher | None = None,
        release: str | None = None,
        environment: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.reactor = reactor
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self.release = release
        self.environment = environment
        self.observer = SentryObserver()
        self.client: Any = None

    def startService(self) -> None:
        import sentry_sdk

        sentry_sdk.init(
            dsn=self.dsn,
            release=self.release,
            environment=self.environment,
            default_integrations=False,
            auto_enabling_integrations=False,
            integrations=[],
            # no personal data: sentry-sdk's default (send_default_pii off; the
            # option itself is deprecated in favour of data_collection, which
            # older 2.x releases lack), and no integrations that would collect it
            # a frame's locals may hold tokens and keys: never send them
            include_local_variables=False,
            max_breadcrumbs=100,
        )
        self.client = sentry_sdk.get_client()
        self.publisher.addObserver(self.observer)
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.publisher.removeObserver(self.observer)
        client, self.client = self.client, None
        if client is None:
            return Deferred.fromCoroutine(_nothing())
        pool = self.reactor.getThreadPool()

        def close() -> None:
            client.flush(timeout=FLUSH_SECONDS)
            client.close(timeout=FLUSH_SECONDS)

        d: Deferred[None] = deferToThreadPool(self.reactor, pool, close)
        return d


async def _nothing() -> None:
    return None
