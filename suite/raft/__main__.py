"""
Run one replicated KV node: C{python -m suite.raft --help}; change the
group's membership: C{python -m suite.raft member --help}; inspect, export
or drop a group of a stopped node's WAL: C{python -m suite.raft wal}.
"""

from __future__ import annotations

import gc
import sys

from twisted.python import usage


def main(argv: list[str] | None = None) -> int:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from suite.daemon import ConfigError, StartupBarrier
    from suite.logging import observer
    from suite.raft.service import Options, makeService

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["member"]:
        from suite.raft.admin import main as member

        return member(args[1:])
    if args[:1] == ["wal"]:
        from suite.raft.walctl import main as wal

        return wal(args[1:])
    options = Options()
    try:
        options.parseOptions(args)
        service = makeService(options, reactor)
        barrier = StartupBarrier("suite.raft", reactor, stopOnFailure=True).attach(service)
    except (usage.UsageError, ConfigError, OSError) as e:
        sys.stderr.write(f"suite.raft: {e}\n")
        return 2
    globalLogBeginner.beginLoggingTo([observer()], redirectStandardIO=False)
    # Fewer, later collections: the log and state machine hold many small
    # long-lived objects, and full collections show up as latency spikes.
    gc.freeze()
    gc.set_threshold(20000, 50, 50)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    if service.failure is not None:
        sys.stderr.write(f"suite.raft: {service.failure}\n")
        return 1
    if barrier.failed is not None:
        sys.stderr.write(f"suite.raft: {barrier.failed}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
