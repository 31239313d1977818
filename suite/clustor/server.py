"""
The control-plane server: a store holding the validated state file, HTTP
resources publishing C{/routing}, C{/features}, C{/warmup} and
C{/activation}, and a service reloading the file on SIGHUP or when it
changes on disk.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from suite.clustor.interfaces import IControlPlaneStore
from suite.clustor.state import (
    FEEDS,
    ControlPlaneState,
    FeedDocument,
    StateError,
    checkTransition,
    loadStateFile,
)
from suite.serial import SerialJob
from suite.web.conditional import etagMatches
from suite.web.errors import JSONMethodsMixin, JSONNoResource

__all__ = ["ControlPlaneStore", "FeedResource", "StateReloader", "addFeedResources", "runSynchronously"]

log = Logger(namespace="clustor.cp")

SignalInstaller = Callable[[Callable[[], None]], Callable[[], None]]


@implementer(IControlPlaneStore)
class ControlPlaneStore:
    """
    The current control-plane state and its published documents.

    @param path: the state file (YAML or JSON).
    @raise StateError: at construction when the file is unreadable or invalid.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.revision = 1
        self.reloadFailures = 0
        self.state: ControlPlaneState = loadStateFile(path)
        self._documents: dict[str, FeedDocument] = self.state.documents(self.revision)
        self._stamp = self._statStamp()

    def _statStamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def document(self, feed: str) -> FeedDocument:
        return self._documents[feed]

    def changedOnDisk(self) -> bool:
        """
        C{True} when the file's mtime, size or inode differ from the last read.
        """
        return self._statStamp() != self._stamp

    def markRead(self) -> None:
        """
        Remember the file's current stamp (call when starting to read it).
        """
        self._stamp = self._statStamp()

    def reload(self) -> bool:
        self.markRead()
        try:
            state = loadStateFile(self.path)
        except StateError as e:
            return self.refuse(e)
        return self.apply(state)

    def refuse(self, error: StateError) -> bool:
        """
        Count and log a reload whose file was invalid; keep the current state.
        """
        self.reloadFailures += 1
        log.error(
            "state reload failed, keeping revision {revision}: {reason}",
            revision=self.revision,
            reason=str(error),
        )
        return False

    def apply(self, state: ControlPlaneState) -> bool:
        """
        Publish C{state} (read and validated elsewhere, e.g. in a thread) if
        its content differs; return whether it did.
        """
        if state.content() == self.state.content():
            log.info("state file re-read, content unchanged (revision {revision})", revision=self.revision)
            return False
        try:
            checkTransition(self.state, state, self.path)
        except StateError as e:
            return self.refuse(e)
        self.state = state
        self.revision += 1
        self._documents = state.documents(self.revision)
        log.info(
            "state reloaded: revision {revision}, {partitions} partitions",
            revision=self.revision,
            partitions=len(state.partitions),
        )
        return True


class FeedResource(JSONMethodsMixin, Resource):
    """
    C{GET /<feed>}: the feed's JSON document with C{ETag} and
    C{X-Clustor-Revision}; C{304} when C{If-None-Match} matches.  Another
    method is a JSON C{405}, a path below the feed a JSON C{404}.
    """

    def __init__(self, store: IControlPlaneStore, feed: str) -> None:
        super().__init__()
        self.store = IControlPlaneStore(store)
        self.feed = feed

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return JSONNoResource(f"no feed {request.path.decode('utf-8', 'replace')}")

    def render_GET(self, request: Request) -> bytes:
        doc = self.store.document(self.feed)
        request.setHeader(b"etag", doc.etag.encode())
        request.setHeader(b"x-clustor-revision", str(self.store.revision).encode())
        request.setHeader(b"cache-control", b"no-cache")
        if etagMatches(request.getHeader(b"if-none-match"), doc.etag.encode()):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", b"application/json")
        return doc.body

    def render_HEAD(self, request: Request) -> bytes:
        body = self.render_GET(request)
        if body:
            request.setHeader(b"content-length", str(len(body)).encode())
        return b""


def addFeedResources(root: Resource, store: IControlPlaneStore) -> None:
    """
    Mount one L{FeedResource} per feed under C{root}.
    """
    for feed in FEEDS:
        root.putChild(feed.encode(), FeedResource(store, feed))


def installSighup(handler: Callable[[], None]) -> Callable[[], None]:
    """
    Call C{handler} on SIGHUP (main thread only); return the uninstaller.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGHUP)

    def onSignal(signum: int, frame: Any) -> None:
        handler()

    signal.signal(signal.SIGHUP, onSignal)

    def uninstall() -> None:
        signal.signal(signal.SIGHUP, previous)

    return uninstall


def runSynchronously(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """
    Run C{f} now (for reactors without a thread pool, and tests).
    """
    return maybeDeferred(f, *args)


class StateReloader(Service):
    """
    Reload the store on SIGHUP and, every C{interval} seconds, when the file
    changed on disk (C{interval} 0 turns polling off).

    The file is read and validated through C{runInThread} (a thread pool in
    the daemon), so a large state file never stalls the reactor; the new
    state is published on the reactor thread.  A reload asked for while one
    runs is done once more after it.

    @param callFromSignal: how a signal handler hands work to the reactor
        thread (C{reactor.callFromThread}).
    @param runInThread: C{runInThread(f, *args) -> Deferred}.
    """

    def __init__(
        self,
        store: ControlPlaneStore,
        clock: IReactorTime,
        interval: float,
        callFromSignal: Callable[[Callable[[], object]], object],
        signalInstaller: SignalInstaller | None = installSighup,
        runInThread: Callable[..., Deferred[Any]] = runSynchronously,
    ) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.callFromSignal = callFromSignal
        self.signalInstaller = signalInstaller
        self.runInThread = runInThread
        self._uninstall: Callable[[], None] | None = None
        self._poll: LoopingCall | None = None
        # One reload at a time; one asked for while it runs is done once more after it.
        self._reloads = SerialJob(self._reload, "state reload", log=log)

    def _onSighup(self) -> None:
        self.callFromSignal(self._reloadFromSignal)

    def _reloadFromSignal(self) -> None:
        log.info("SIGHUP received, reloading {path}", path=self.store.path)
        self.reloadNow()

    def reloadNow(self) -> None:
        """
        Read the file off the reactor thread and publish it if valid (once
        more after the reload in progress, if one runs).
        """
        self._reloads.request()

    def _reload(self) -> Deferred[None]:
        self.store.markRead()
        d = self.runInThread(loadStateFile, self.store.path)

        def failed(f: Failure) -> None:
            if isinstance(f.value, StateError):
                self.store.refuse(f.value)
            else:
                log.failure("state reload failed", f)

        d.addCallbacks(self.store.apply, failed)
        return d

    def checkFile(self) -> None:
        """
        Reload when the state file changed on disk (unless a reload runs:
        a change made after it read the file is seen by the next check).
        """
        if self.store.changedOnDisk():
            log.info("state file {path} changed on disk, reloading", path=self.store.path)
            self._reloads.poll()

    def startService(self) -> None:
        super().startService()
        if self.signalInstaller is not None:
            self._uninstall = self.signalInstaller(self._onSighup)
        if self.interval > 0:
            self._poll = LoopingCall(self.checkFile)
            self._poll.clock = self.clock
            self._poll.start(self.interval, now=False).addErrback(
                lambda f: log.failure("state file watch failed", f)
            )

    def stopService(self) -> None:
        self._reloads.stop()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        if self._uninstall is not None:
            self._uninstall()
            self._uninstall = None
        super().stopService()
