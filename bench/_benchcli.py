"""
What every benchmark script under bench/ shares: its command line, its
phases, and how it ends.

Not an entry point.  A script builds its parser with L{parser} (usage names
the key=value pairs its last line holds), names what it is doing with
L{phase}, runs its Twisted part with L{react} and its main function with
L{run}.  Then:

  - C{--help} prints the usage and exits 0 without running anything; an
    unknown flag is one usage line and exit 2 (argparse);
  - a failed phase ends with one line on stderr naming the phase and the
    reason, and exit status 1;
  - SIGINT, SIGTERM or SIGHUP ends with one line naming the signal and the
    phase, and exit status 128 + the signal number;
  - either way the script's own clean-up (try/finally) runs, then every
    process this one started that is still running (and its process group,
    when the child leads one) gets SIGTERM, then SIGKILL; temporary
    directories made with L{tempdir} are removed.

A second signal (2 s or more after the first) while cleaning up kills the
children at once and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: Epytext markup (C{code}, L{link} ...) in a docstring, shown bare in --help.
_EPYTEXT = re.compile(r"\b[CILBUM]\{([^{}]*)\}")


class Interrupted(BaseException):
    """
    A signal asked the benchmark to stop.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _State:
    phase = "start-up"
    signum = 0
    #: What the script was doing when the signal came.
    signalled = ""
    signalledAt = 0.0
    cancel: Callable[[int], None] | None = None
    tempdirs: list[str] = []


_state = _State()


def script() -> str:
    """
    This script's path as an operator typed it (bench/NAME.py).
    """
    return os.path.join("bench", os.path.basename(sys.argv[0]))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the usage block: the operator asks --help for that.
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser(doc: str | None, headline: list[str], note: str = "") -> argparse.ArgumentParser:
    """
    An argument parser whose usage says what the script measures (C{doc},
    the script's docstring) and names the keys of its last line.
    """
    description = _EPYTEXT.sub(r"\1", (doc or "").strip())
    epilog = "The last line holds the headline figures as key=value pairs:\n  " + " ".join(headline)
    if note:
        epilog += "\n" + note
    return _Parser(
        prog=script(),
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """
    Name what the script does inside the block; a failure or a signal
    inside it is reported with this name.
    """
    previous = _state.phase
    _state.phase = name
    yield
    _state.phase = previous


def setPhase(name: str) -> None:
    _state.phase = name


def tempdir(prefix: str, dir: str | None = None) -> str:
    """
    A temporary directory removed when the script ends, however it ends.
    """
    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    _state.tempdirs.append(path)
    return path


def keep(path: str) -> None:
    """
    Leave C{path} (made by L{tempdir}) in place at the end.
    """
    if path in _state.tempdirs:
        _state.tempdirs.remove(path)


def _onSignal(signum: int, frame: Any) -> None:
    if _state.signum:
        if time.monotonic() - _state.signalledAt < 2.0:
            # The same request twice (timeout(1) signals the process, then
            # its process group; a terminal's ^C reaches the whole group).
            return
        # A second request: no more waiting for the clean-up.
        _reapChildren(grace=0.0)
        for path in _state.tempdirs:
            shutil.rmtree(path, ignore_errors=True)
        _say(f"interrupted again by {signal.Signals(signum).name} during {_state.phase}; stopped")
        os._exit(128 + signum)
    _state.signum = signum
    _state.signalled = _state.phase
    _state.signalledAt = time.monotonic()
    if _state.cancel is not None:
        # The reactor is running: cancel the benchmark's Deferred from the
        # reactor's thread so that its finally blocks run.
        _state.cancel(signum)
        return
    raise Interrupted(signum)


def react(main: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """
    Run C{main(reactor)} to completion and return its result, or raise its
    exception (L{Interrupted} after a signal).  Unlike L{task.react} this
    does not exit, and a signal cancels C{main} (its finally blocks run)
    instead of stopping the reactor under it.  The reactor runs once per
    process.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
    from twisted.python.failure import Failure

    r: Any = reactor
    outcome: list[object] = []
    running: list[Deferred[T]] = []

    def start() -> None:
        # The reactor has installed its signal handlers by now: keep its
        # SIGCHLD handling (child processes are reaped through it), take
        # the stop signals back.
        for signum in SIGNALS:
            signal.signal(signum, _onSignal)
        d = ensureDeferred(main(r))
        running.append(d)

        def done(result: object) -> None:
            outcome.append(result)
            r.stop()

        d.addBoth(done)

    def cancel(signum: int) -> None:
        def go() -> None:
            if running and not outcome:
                running[0].cancel()

        r.callFromThread(go)

    _state.cancel = cancel
    try:
        r.callWhenRunning(start)
        r.run()
    finally:
        _state.cancel = None
        for signum in SIGNALS:
            signal.signal(signum, _onSignal)
    if _state.signum:
        raise Interrupted(_state.signum)
    if not outcome:
        raise RuntimeError("the reactor stopped (by a signal?) before the benchmark finished")
    result = outcome[0]
    if isinstance(result, Failure):
        if isinstance(result.value, CancelledError) and _state.signum:
            raise Interrupted(_state.signum)
        result.raiseException()
    return result  # type: ignore[return-value]


def _say(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"{script()}: {text}\n")
    sys.stderr.flush()


def _children() -> list[int]:
    """
    Every process descended from this one, parents first.
    """
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [os.getpid()]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
    with contextlib.suppress(OSError):
        os.kill(pid, signum)


def _reapChildren(grace: float = 5.0) -> None:
    pids = _children()
    if not pids:
        return
    for pid in pids:
        _signal(pid, signal.SIGTERM if grace else signal.SIGKILL)
    deadline = time.monotonic() + grace
    while grace and time.monotonic() < deadline:
        for pid in list(pids):
            if _zombie(pid):
                # dead: reap it if it is a child of this process (a zombie
                # does not block), else its own parent does
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, 0)
                pids.remove(pid)
        if not pids:
            break
        time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def cleanUp() -> None:
    """
    Stop every process this one started and remove L{tempdir}s.
    """
    _reapChildren()
    for path in _state.tempdirs:
        shutil.rmtree(path, ignore_errors=True)
    _state.tempdirs = []


def _threadFailed(args: threading.ExceptHookArgs) -> None:
    """
    An exception in a thread of the benchmark: one line, no traceback;
    none at all once a signal has asked the benchmark to stop (its
    clean-up stops the servers such threads talk to).
    """
    if _state.signum or args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    _say(f"{name} failed during {_state.phase}: {args.exc_type.__name__}: {_oneLine(str(args.exc_value))}")


def run(main: Callable[[], object]) -> NoReturn:
    """
    Run a benchmark's C{main} and exit: 0 on success, 1 with one line on
    stderr when a phase fails, 128 + N after signal N.
    """
    for signum in SIGNALS:
        signal.signal(signum, _onSignal)
    threading.excepthook = _threadFailed
    code = 0
    try:
        main()
    except Interrupted as e:
        code = 128 + e.signum
        _say(f"interrupted by {signal.Signals(e.signum).name} during {_state.signalled}; stopped, cleaned up")
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
        _say(f"interrupted by SIGINT during {_state.phase}; stopped, cleaned up")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            code = 1
            _say(f"{_state.phase} failed: {_oneLine(str(e.code))}")
    except BaseException as e:
        code = 1
        _say(f"{_state.phase} failed: {type(e).__name__}: {_oneLine(str(e)) or '(no detail)'}")
    finally:
        # Late signals must not interrupt the clean-up itself.
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        cleanUp()
    sys.stdout.flush()
    if _state.signum:
        # Threads a signal left running must not hold the exit up.
        os._exit(code)
    sys.exit(code)


def _oneLine(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0]
    # The first line says what failed, the last one (a log's tail, a
    # traceback's exception) usually why.
    return f"{lines[0]} ... {lines[-1]}"
