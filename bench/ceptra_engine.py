"""
Throughput of the CEPtra CEP engine alone (no Raft, no network): how many
events per second one partition's state machine applies.

Each scenario pre-encodes batches of events (as the ingest API would
commit them), then times L{PartitionEngine.apply} over all of them, results
included.  Event times advance by 1 ms per event with a little disorder
(within the watermark delay), over 1,000 keys.

    python bench/ceptra_engine.py [--events 200000] [--batch 500]

The last line holds the headline: C{engine_events_per_s} is one sliding
window sum per key (10 s window, 1,000 keys, one result per event), wall
clock; C{engine_events_per_cpu_s} is the same per CPU second of this process
(the fairer figure on a shared machine); then the other scenarios.
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _benchcli  # noqa: E402

from suite.ceptra.engine import PartitionEngine, encodeEvents, encodeRules  # noqa: E402

HEADLINE = ["engine_events_per_s", "engine_events_per_cpu_s"]

SETTINGS = {"watermark_delay_ms": 50, "allowed_lateness_ms": 1000, "late_events": "retract"}


def rule(
    name: str, window: dict[str, Any], fn: str, field: str | None = "amount", **params: Any
) -> dict[str, Any]:
    agg: dict[str, Any] = {"fn": fn, **params}
    if field is not None:
        agg["field"] = field
    return {"name": name, "type": "aggregate", "group_by": ["key"], "window": window, "aggregate": agg}


SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "sliding_sum": [rule("s", {"kind": "sliding", "size_ms": 10_000}, "sum")],
    "sliding_count_sum": [
        rule("n", {"kind": "sliding", "size_ms": 10_000}, "count", None),
        rule("s", {"kind": "sliding", "size_ms": 10_000}, "sum"),
    ],
    "tumbling_count": [rule("n", {"kind": "tumbling", "size_ms": 1000}, "count", None)],
    "hopping_avg": [rule("a", {"kind": "hopping", "size_ms": 10_000, "hop_ms": 2000}, "avg")],
    "session_max": [rule("m", {"kind": "session", "gap_ms": 2000}, "max")],
    "tumbling_sketches": [
        rule("d", {"kind": "tumbling", "size_ms": 10_000}, "distinct", "user"),
        rule("q", {"kind": "tumbling", "size_ms": 10_000}, "quantiles"),
        rule("t", {"kind": "tumbling", "size_ms": 10_000}, "topk", "user", k=5),
    ],
    "pattern_relaxed": [
        {
            "name": "p",
            "type": "pattern",
            "group_by": ["key"],
            "first": {"kind": "cart"},
            "then": {"kind": "buy"},
            "within_ms": 5000,
        }
    ],
}


def payloads(n: int, batch: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        events.append(
            {
                "event_id": f"ev-{i}",
                "key": f"k{rng.randrange(1000)}",
                "ts": 1_000_000 + i - rng.randrange(20),
                "amount": rng.randrange(1, 500),
                "user": f"u{rng.randrange(5000)}",
                "kind": rng.choice(("cart", "view", "buy")),
            }
        )
    return [encodeEvents(events[i : i + batch]) for i in range(0, n, batch)]


def measure(rules: list[dict[str, Any]], entries: list[bytes], events: int) -> tuple[float, float, int]:
    """
    Events per wall-clock second and per CPU second of this process, and
    the number of results.
    """
    eng = PartitionEngine(partition=0)
    eng.apply(1, encodeRules({"version": 1, "settings": SETTINGS, "rules": rules}))
    results = 0
    start = time.perf_counter()
    cpu = time.process_time()
    for i, payload in enumerate(entries):
        results += len(eng.apply(2 + i, payload))
    cpu = time.process_time() - cpu
    elapsed = time.perf_counter() - start
    return events / elapsed, events / cpu, results


def main() -> None:
    others = [f"{name}_events_per_s" for name in SCENARIOS if name != "sliding_sum"]
    parser = _benchcli.parser(__doc__, HEADLINE + others)
    parser.add_argument("--events", type=int, default=200_000, help="events per scenario")
    parser.add_argument("--batch", type=int, default=500, help="events per committed entry")
    args = parser.parse_args()
    _benchcli.setPhase("encoding the events")
    entries = payloads(args.events, args.batch, 1)
    figures = {}
    for name, rules in SCENARIOS.items():
        _benchcli.setPhase(f"scenario {name}")
        rate, cpuRate, results = measure(rules, entries, args.events)
        figures[name] = rate
        print(f"{name}: {rate:,.0f} events/s ({cpuRate:,.0f} per CPU second), {results} results")
        if name == "sliding_sum":
            headlineCpu = cpuRate
    headline = figures.pop("sliding_sum")
    print(
        f"engine_events_per_s={headline:.0f} engine_events_per_cpu_s={headlineCpu:.0f} "
        + " ".join(f"{name}_events_per_s={rate:.0f}" for name, rate in figures.items())
    )


if __name__ == "__main__":
    _benchcli.run(main)
