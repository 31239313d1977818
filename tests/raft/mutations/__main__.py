"""
C{python -m tests.raft.mutations [-m NAME]... [-f FAMILY]... [--seeds N] [--first]}:
run the scenarios CI runs (or C{--seeds N} per family) against every
planted bug and print which scenarios catch each one, as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tests.raft.mutations import MUTATIONS, Mutation, run
from tests.raft.scenarios import FAMILIES


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.raft.mutations")
    p.add_argument("-m", "--mutation", action="append", help="only these mutations")
    p.add_argument("-f", "--family", action="append", help="only these scenario families")
    p.add_argument("--seeds", type=int, help="scenarios per family (default: as many as CI runs)")
    p.add_argument("--first", action="store_true", help="stop each mutation at its first catch")
    p.add_argument("-j", "--jobs", type=int, default=2)
    a = p.parse_args(argv)
    mutations = [m for m in MUTATIONS if not a.mutation or m.name in a.mutation]
    families = [f for f in FAMILIES if not a.family or f in a.family]

    def one(m: Mutation | None) -> tuple[str, dict[str, tuple[int, int]], str, float]:
        start = time.monotonic()
        preferred = list(m.families) if m else []
        order = preferred + [f for f in families if f not in preferred]
        scenarios = [
            (f, s) for f in order if f in families for s in range(a.seeds if a.seeds else FAMILIES[f].ci)
        ]
        outcomes = run(m, scenarios, stopAtFirst=a.first)
        counts: dict[str, tuple[int, int]] = {}
        for o in outcomes:
            c, n = counts.get(o.family, (0, 0))
            counts[o.family] = (c + o.caught, n + 1)
        first = next((f"{o.family}#{o.seed}: {o.why}" for o in outcomes if o.caught), "")
        return (m.name if m else "(none)", counts, first, time.monotonic() - start)

    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(one, [None, *mutations]))
    print("| mutation | " + " | ".join(families) + " | first catch |")
    print("|---|" + "---|" * len(families) + "---|")
    missed = 0
    for name, counts, first, _ in results:
        cells = [f"{counts[f][0]}/{counts[f][1]}" if f in counts else "–" for f in families]
        print(f"| {name} | " + " | ".join(cells) + f" | {first[:120]} |")
        if name != "(none)" and not first:
            missed += 1
        if name == "(none)" and first:
            missed += 1
    for name, _, _, took in results:
        print(f"{name}: {took:.1f} s", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
