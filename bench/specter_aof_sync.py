"""
Cost and crash safety of Specter's AOF durability levels: put ops/s through
--listen-rpc on one node (aof, R=1, 5 vnodes), clients keeping 64 requests
in flight on each of two connections, and the node's CPU time per put, for
the default (each put's record written before the put returns, fsync
every --aof-flush-interval) and --aof-sync (fsynced before the
acknowledgement), alternated, best of N rounds each; then, per mode, how
many of --kill-puts acknowledged puts a restart finds after kill -9 (with
--aof-flush-interval 300, so no timed fsync runs first).

With --old-tree DIR (a checkout of the code from before acknowledgements
waited for the write, e.g. C{git archive faf45e1 | tar -x -C DIR}), two
more modes run that code (PYTHONPATH=DIR): "memory", its default
(acknowledged from memory, written and fsynced every interval), and
"oldsync", its --aof-sync (written and fsynced in a thread before the
acknowledgement).  With --batched-tree DIR (the code of commit d6d5a4b,
whose default wrote each reactor turn's records with one write at the end
of the turn and acknowledged them after it), "batched" and "batchedsync"
run that code's default and --aof-sync.

    .venv/bin/python bench/specter_aof_sync.py [--rounds 3] [--puts 20000]
        [--kill-puts 2000] [--old-tree DIR] [--batched-tree DIR]
        [--only default,batched,...]

The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import _benchcli  # noqa: E402
from specter_kv import Proc, _inChild, cpuSeconds, rpcToken, runClients  # noqa: E402

HEADLINE = [
    "puts_default",
    "puts_sync",
    "cpu_us_default",
    "cpu_us_sync",
    "kill9_kept_default",
    "kill9_kept_sync",
    "load1",
]

Mode = tuple[str, tuple[str, ...], "dict[str, str] | None"]


def modes(oldTree: str | None, batchedTree: str | None = None) -> list[Mode]:
    out: list[Mode] = [("default", (), None), ("sync", ("--aof-sync",), None)]
    if oldTree:
        old = dict(os.environ, PYTHONPATH=os.path.abspath(oldTree))
        out += [("memory", (), old), ("oldsync", ("--aof-sync",), old)]
    if batchedTree:
        batched = dict(os.environ, PYTHONPATH=os.path.abspath(batchedTree))
        out += [("batched", (), batched), ("batchedsync", ("--aof-sync",), batched)]
    return out


def once(base: str, cert: str, name: str, n: int, mode: Mode) -> tuple[float, float]:
    _, extra, env = mode
    p = Proc(base, name, cert, "--replicas", "1", *extra, env=env)
    try:
        p.ready()
        keys = [b"sync-%d" % i for i in range(n)]
        before = cpuSeconds(p.p.pid)
        rate = float(_inChild(runClients, [(p.rpc, p.data)], "put", keys))
        return rate, (cpuSeconds(p.p.pid) - before) / n
    finally:
        p.kill()


def countPresent(port: int, dataDir: str, keys: list[bytes]) -> int:
    """
    How many of C{keys} the node on RPC C{port} holds (with the value put).
    """
    from twisted.internet import defer, task

    from suite.specter.rpc import connectRPC

    found: list[int] = []

    async def main(reactor: Any) -> None:
        client = await connectRPC(reactor, f"tcp:host=127.0.0.1:port={port}", rpcToken(dataDir))
        values = await defer.gatherResults([client.kv("get", k) for k in keys])
        found.append(sum(v == b"v" * 64 for v in values))
        client.close()

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
    except SystemExit as e:
        if e.code:
            raise
    return found[0]


def survivors(base: str, cert: str, n: int, mode: Mode) -> int:
    """
    Put C{n} keys (all acknowledged), kill -9 the node, restart it and
    count the keys it still has.
    """
    name, extra, env = mode
    p = Proc(base, f"kill-{name}", cert, "--replicas", "1", "--aof-flush-interval", "300", *extra, env=env)
    try:
        p.ready()
        keys = [b"kill-%d" % i for i in range(n)]
        _inChild(runClients, [(p.rpc, p.data)], "put", keys)
        p.kill()
        p.start()
        p.ready()
        return int(_inChild(countPresent, p.rpc, p.data, keys))
    finally:
        p.kill()


def main() -> None:
    parser = _benchcli.parser(
        __doc__,
        HEADLINE,
        "Each mode run adds its puts_MODE, cpu_us_MODE and kill9_kept_MODE (--old-tree: memory, oldsync;"
        " --batched-tree: batched, batchedsync; --only keeps the modes named).",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (best kept)")
    parser.add_argument("--puts", type=int, default=20000, help="puts per round")
    parser.add_argument("--kill-puts", type=int, default=2000, help="acknowledged puts before each kill -9")
    parser.add_argument("--old-tree", help="code from before acknowledgements waited for the write")
    parser.add_argument("--batched-tree", help="code whose acknowledgements waited for an end-of-turn write")
    parser.add_argument("--only", help="the modes to run, comma-separated (default: every mode there is)")
    args = parser.parse_args()
    from suite.pki.ca import initBundle

    base = _benchcli.tempdir("specter-aof-sync-")
    try:
        _benchcli.setPhase("certificates")
        cert = os.path.join(base, "cert")
        initBundle(cert, ["127.0.0.1"])
        todo = modes(args.old_tree, args.batched_tree)
        if args.only:
            wanted = args.only.split(",")
            unknown = set(wanted) - {m[0] for m in todo}
            if unknown:
                parser.error(f"--only: no mode {', '.join(sorted(unknown))} (a tree option missing?)")
            todo = [m for m in todo if m[0] in wanted]
        best = {m[0]: (0.0, 1.0) for m in todo}
        for r in range(args.rounds):
            for mode in todo:
                name = mode[0]
                _benchcli.setPhase(f"round {r} {name}")
                rate, cpu = once(base, cert, f"{name}{r}", args.puts, mode)
                print(f"round {r} {name}: {rate:.0f} puts/s, {cpu * 1e6:.0f} us CPU/put", flush=True)
                best[name] = (max(best[name][0], rate), min(best[name][1], cpu))
        kept = {}
        for mode in todo:
            _benchcli.setPhase(f"kill -9 {mode[0]}")
            kept[mode[0]] = survivors(base, cert, args.kill_puts, mode)
            print(f"kill -9 {mode[0]}: {kept[mode[0]]}/{args.kill_puts} acknowledged puts kept", flush=True)
        load = os.getloadavg()[0]
        figures = [f"puts_{name}={rate:.0f}" for name, (rate, _) in best.items()]
        figures += [f"cpu_us_{name}={cpu * 1e6:.0f}" for name, (_, cpu) in best.items()]
        figures += [f"kill9_kept_{name}={count}/{args.kill_puts}" for name, count in kept.items()]
        print(" ".join(figures) + f" load1={load:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    _benchcli.run(main)
