"""
CPU per event of each stage an ingested event goes through in a CEPtra
partition, measured in one process (no network, no threads): the part of
bench/ceptra.py's cpu_us_per_event that is not HTTP, TLS or the reactor.

The bench's workload: a sliding 60 s sum of `amount` per `key` over 1,000
keys, event time +1 ms per event, requests of --batch events (1,000 by
default).  Leader: parse and validate the request (JSON), route, build the
entry (E2), encode the AppendEntries for each follower and the WAL record,
apply.  Follower: decode the AppendEntries, encode the WAL record, apply.
The engine is first filled with --warm events (the state the bench's
throughput phase runs against).  The E1 lines are the JSON entries written
before, for comparison.  Figures are CPU time (process_time), best
of --rounds; the machine's load matters little.

    .venv/bin/python bench/ceptra_stages.py [--batch N] [--warm N] [--rounds N]

The snapshot of the warmed state is measured too: C{snapshot_sync_ms} is
the CPU a synchronous snapshot takes (what the reactor thread spent before
snapshots were encoded in a thread), C{snapshot_reactor_ms} the CPU of the
capture that is all the reactor thread spends now (best of --rounds).

The last line: leader_us_per_event=... follower_us_per_event=...
replicas3_us_per_event=... ceiling_events_per_s_one_core=...
snapshot_reactor_ms=... snapshot_sync_ms=...
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _benchcli  # noqa: E402
import msgpack  # noqa: E402

from suite.ceptra.engine import engine  # noqa: E402
from suite.ceptra.engine.codec import encodeEvents  # noqa: E402
from suite.ceptra.ingest import validateEvents  # noqa: E402
from suite.ceptra.machine import PartitionMachine, eventsEntry, rulesEntry  # noqa: E402
from suite.ceptra.routing import Routing  # noqa: E402
from suite.raft.messages import AppendEntries, Entry, decodeMessage, encodeMessage  # noqa: E402

HEADLINE = [
    "leader_us_per_event",
    "follower_us_per_event",
    "replicas3_us_per_event",
    "ceiling_events_per_s_one_core",
    "snapshot_reactor_ms",
    "snapshot_sync_ms",
]

RULES = {
    "version": 1,
    "settings": {"watermark_delay_ms": 1000, "allowed_lateness_ms": 5000},
    "rules": [
        {
            "name": "spend",
            "type": "aggregate",
            "group_by": ["key"],
            "max_groups": 10000,
            "window": {"kind": "sliding", "size_ms": 60000},
            "aggregate": {"fn": "sum", "field": "amount"},
        }
    ],
}


class Source:
    def __init__(self) -> None:
        self.seq = 0

    def events(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            self.seq += 1
            s = self.seq
            out.append(
                {"event_id": f"e{s}", "key": f"user-{s % 1000}", "ts": s, "fields": {"amount": s % 97}}
            )
        return out


def jsonEntry(events: list[dict[str, Any]]) -> bytes:
    """
    The JSON (E1) entry the ingest API wrote before E2.
    """
    return encodeEvents(
        [{**e["fields"], "event_id": e["event_id"], "key": e["key"], "ts": e["ts"]} for e in events]
    )


def best(rounds: int, fn: Callable[[], object]) -> float:
    t = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        t = min(t, time.process_time() - t0)
    return t


def snapshotFigures(machine: PartitionMachine, rounds: int) -> dict[str, float]:
    """
    What a snapshot of C{machine} costs the reactor thread: the synchronous
    C{snapshot()} (as before) against the capture alone; the encoding's CPU
    in its thread; and how a thread making system calls, as the reactor
    does, fares while a thread encodes (its calls per second against an
    idle process's, and its longest wait), paced as the engine does and,
    for comparison, unpaced.
    """
    sync = best(rounds, machine.snapshot)
    capture = best(rounds, machine.captureSnapshot)
    encode = float("inf")
    size = 0
    idle = max(syscalls(lambda: time.sleep(0.2))[0] for _ in range(rounds))
    paced: list[tuple[float, float]] = []
    unpaced: list[tuple[float, float]] = []
    for _ in range(rounds):
        for pace, runs in ((0.001, paced), (float("inf"), unpaced)):
            engine._Pacer.SLICE = pace
            job = machine.captureSnapshot()
            cpu: list[float] = []

            def work(job: Callable[[], bytes] = job, cpu: list[float] = cpu) -> None:
                t0 = time.thread_time()
                cpu.append(len(job()))
                cpu.append(time.thread_time() - t0)

            runs.append(syscalls(work))
            size = int(cpu[0])
            if runs is paced:
                encode = min(encode, cpu[1])
    engine._Pacer.SLICE = 0.001
    return {
        "sync_ms": sync * 1e3,
        "capture_ms": capture * 1e3,
        "encode_ms": encode * 1e3,
        "paced_share": max(r for r, _ in paced) / idle,
        "paced_wait_ms": min(w for _, w in paced) * 1e3,
        "unpaced_share": max(r for r, _ in unpaced) / idle,
        "unpaced_wait_ms": min(w for _, w in unpaced) * 1e3,
        "bytes": size,
    }


def syscalls(target: Callable[[], object]) -> tuple[float, float]:
    """
    Run C{target} in a thread; meanwhile make system calls (a byte through
    a pipe, which lets go of the interpreter lock twice, as a reactor's
    reads and writes do) on this thread: calls per second and the longest
    wait between two (seconds).
    """
    r, w = os.pipe()
    thread = threading.Thread(target=target)
    longest = 0.0
    n = 0
    start = last = time.perf_counter()
    thread.start()
    while thread.is_alive():
        os.write(w, b"x")
        os.read(r, 1)
        n += 1
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    thread.join()
    os.close(r)
    os.close(w)
    return n / (last - start), longest


def main() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE)
    parser.add_argument("--batch", type=int, default=1000, help="events per request")
    parser.add_argument("--warm", type=int, default=200_000, help="events the engine holds before timing")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per stage (best is kept)")
    parser.add_argument("--requests", type=int, default=50, help="requests per timed round")
    args = parser.parse_args()
    gc.freeze()
    gc.set_threshold(20000, 50, 50)
    _benchcli.setPhase("warming the engine")
    src = Source()
    routing = Routing(1, {}, {"p0": ("a", "b", "c")})
    machine = PartitionMachine("p0")
    before = PartitionMachine("p0")  # the same state, fed JSON (E1) entries
    machine.apply(1, rulesEntry(RULES))
    before.apply(1, rulesEntry(RULES))
    index = 2
    for _ in range(args.warm // args.batch):
        events = src.events(args.batch)
        machine.apply(index, eventsEntry(events))
        before.apply(index, jsonEntry(events))
        index += 1
    _benchcli.setPhase("snapshot")
    snap = snapshotFigures(machine, args.rounds)
    _benchcli.setPhase("stages")
    n = args.requests * args.batch
    bodies = [json.dumps(src.events(args.batch)).encode() for _ in range(args.requests)]
    parsed = [validateEvents(b) for b in bodies]
    entries = [eventsEntry(p) for p in parsed]
    raftEntries = [Entry(1, index + i, 0, e) for i, e in enumerate(entries)]
    messages = [
        encodeMessage(AppendEntries("a", "b", 1, e.index - 1, 1, (e,), e.index - 1)) for e in raftEntries
    ]
    stages: dict[str, float] = {}
    stages["parse+validate"] = best(args.rounds, lambda: [validateEvents(b) for b in bodies])
    stages["route"] = best(
        args.rounds, lambda: [[routing.partitionFor(ev["key"]) for ev in p] for p in parsed]
    )
    stages["entry E2"] = best(args.rounds, lambda: [eventsEntry(p) for p in parsed])
    stages["entry E1 (before)"] = best(
        args.rounds,
        lambda: [
            encodeEvents(
                [{**e["fields"], "event_id": e["event_id"], "key": e["key"], "ts": e["ts"]} for e in p]
            )
            for p in parsed
        ],
    )
    stages["AppendEntries x2"] = best(
        args.rounds,
        lambda: [
            encodeMessage(AppendEntries("a", peer, 1, e.index - 1, 1, (e,), e.index - 1))
            for e in raftEntries
            for peer in ("b", "c")
        ],
    )
    stages["WAL record"] = best(
        args.rounds, lambda: [msgpack.packb([-1, [e]], use_bin_type=True) for e in raftEntries]
    )
    stages["decode AppendEntries"] = best(args.rounds, lambda: [decodeMessage(m) for m in messages])

    # Apply: each round applies fresh entries (applying is not idempotent
    # work: old indexes are skipped), against the warmed state.
    def applyRound() -> None:
        nonlocal index
        batches = [src.events(args.batch) for _ in range(args.requests)]
        for target, encode, times in ((machine, eventsEntry, applyTimes), (before, jsonEntry, jsonTimes)):
            fresh = [encode(b) for b in batches]
            t0 = time.process_time()
            for i, e in enumerate(fresh):
                target.apply(index + i, e)
            times.append(time.process_time() - t0)
        index += len(batches)

    applyTimes: list[float] = []
    jsonTimes: list[float] = []
    for _ in range(args.rounds):
        applyRound()
    stages["apply (engine)"] = min(applyTimes)
    stages["apply E1 (before)"] = min(jsonTimes)
    us = {k: v / n * 1e6 for k, v in stages.items()}
    for k, v in us.items():
        sys.stdout.write(f"{k:24s} {v:7.2f} us/event\n")
    leader = sum(
        us[k]
        for k in ("parse+validate", "route", "entry E2", "AppendEntries x2", "WAL record", "apply (engine)")
    )
    follower = sum(us[k] for k in ("decode AppendEntries", "WAL record", "apply (engine)"))
    sys.stdout.write(
        f"load average {os.getloadavg()[0]:.1f}; batch {args.batch}, state warmed with {args.warm} events\n"
    )
    sys.stdout.write(
        f"snapshot of that state ({snap['bytes'] / 1e6:.1f} MB): on the reactor thread before "
        f"{snap['sync_ms']:.1f} ms; now a capture of {snap['capture_ms']:.1f} ms there, then "
        f"{snap['encode_ms']:.1f} ms of CPU encoding in a thread; meanwhile a thread making "
        f"system calls kept {snap['paced_share']:.0%} of its idle rate, longest wait "
        f"{snap['paced_wait_ms']:.1f} ms (unpaced encoding: {snap['unpaced_share']:.0%}, "
        f"{snap['unpaced_wait_ms']:.1f} ms)\n"
    )
    sys.stdout.write(
        f"leader_us_per_event={leader:.2f} follower_us_per_event={follower:.2f} "
        f"replicas3_us_per_event={leader + 2 * follower:.2f} "
        f"ceiling_events_per_s_one_core={1e6 / leader:.0f} "
        f"snapshot_reactor_ms={snap['capture_ms']:.1f} snapshot_sync_ms={snap['sync_ms']:.1f}\n"
    )


if __name__ == "__main__":
    _benchcli.run(main)
