"""
Cost of C{specter server --aof-sync}: put ops/s through --listen-rpc on one
node (aof, R=1, 5 vnodes), clients keeping 64 requests in flight on each of
two connections, with and without --aof-sync (alternated, best of N rounds
each), and the node's CPU time per put.

    .venv/bin/python bench/specter_aof_sync.py [--rounds 3] [--puts 20000]

The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from specter_kv import Proc, _inChild, cpuSeconds, runClients  # noqa: E402


def once(base: str, cert: str, name: str, n: int, *extra: str) -> tuple[float, float]:
    p = Proc(base, name, cert, "--replicas", "1", *extra)
    try:
        p.ready()
        keys = [b"sync-%d" % i for i in range(n)]
        before = cpuSeconds(p.p.pid)
        rate = float(_inChild(runClients, [(p.rpc, p.data)], "put", keys))
        return rate, (cpuSeconds(p.p.pid) - before) / n
    finally:
        p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--puts", type=int, default=20000)
    args = parser.parse_args()
    from suite.pki.ca import initBundle

    base = tempfile.mkdtemp(prefix="specter-aof-sync-")
    try:
        cert = os.path.join(base, "cert")
        initBundle(cert, ["127.0.0.1"])
        best: dict[str, tuple[float, float]] = {"default": (0.0, 1.0), "sync": (0.0, 1.0)}
        for r in range(args.rounds):
            for mode, extra in (("default", ()), ("sync", ("--aof-sync",))):
                rate, cpu = once(base, cert, f"{mode}{r}", args.puts, *extra)
                print(f"round {r} {mode}: {rate:.0f} puts/s, {cpu * 1e6:.0f} us CPU/put", flush=True)
                best[mode] = (max(best[mode][0], rate), min(best[mode][1], cpu))
        load = os.getloadavg()[0]
        print(
            f"puts_default={best['default'][0]:.0f} puts_sync={best['sync'][0]:.0f} "
            f"cpu_us_default={best['default'][1] * 1e6:.0f} cpu_us_sync={best['sync'][1] * 1e6:.0f} "
            f"load1={load:.2f}"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
