"""
The command line of every benchmark script under bench/ (no benchmark is
run): C{--help} prints the usage, naming the keys of the script's last
line, and exits 0 without side effects; an unknown flag is one line on
stderr and exit status 2.  Then how a benchmark ends (bench/_benchcli.py),
with small scripts built on it: a failed phase is one line and exit 1, a
signal is one line and exit 128 + N, and either way the processes the
script started are stopped and its temporary directories removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")

#: Each entry point under bench/ and headline keys of its last line (those
#: docs/performance.md quotes; --help must name them).  A script added to
#: bench/ must be listed here (helper modules start with "_").
HEADLINES: dict[str, list[str]] = {
    "ceptra": ["events_per_s_partition", "p99_ms", "lost_events", "late_dropped_events", "cpu_us_per_event"],
    "ceptra_engine": ["engine_events_per_s", "engine_events_per_cpu_s", "session_max_events_per_s"],
    "ceptra_stages": ["leader_us_per_event", "follower_us_per_event", "snapshot_reactor_ms"],
    "constellation": [
        "detect_ms_median",
        "sim50_detect_ms_median",
        "converge_ms_p99",
        "failover_dns_ms_median",
    ],
    "goop_memory": ["peer_rss_mb", "hub_rss_mb", "peer_uss_mb", "peer_work_rss_mb", "lua_workers_rss_mb"],
    "lua": ["lua_calls_per_s", "lua_p99_ms", "lua_db_calls_per_s", "cpu_us_per_call"],
    "raft": [
        "raft_writes_per_s_64",
        "raft_writes_per_s_1",
        "raft_p99_ms_at_1000",
        "raft_failover_ms_median",
        "etcd_writes_per_s_64",
        "raft_cpu_us_per_write_64",
        "raft_vs_etcd_64",
        "raft_vs_etcd_same_outstanding",
    ],
    "raftload": ["writes", "seconds", "retries", "leader", "cpu"],
    "rendezvous": [
        "peers",
        "publish_p50_ms",
        "publish_p99_ms",
        "peers_json_ms",
        "mb_per_1k_peers",
        "sse_clients_ok",
    ],
    "spacecomms": ["ingest_cdms_per_s", "ingest_kvn_cdms_per_s", "hop3_p99_ms", "converge_after_burst_s"],
    "spacecomms_hotpaths": ["log_onepass_us", "guard_sync_us", "decode_json_new_us", "decode_json_old_us"],
    "spacecomms_resync": ["relay_b_to_c_msgs", "restore_b_to_a_bytes", "cpu_s", "max_turn_ms"],
    "specter_aof_sync": ["puts_default", "puts_sync", "cpu_us_sync", "kill9_kept_sync"],
    "specter_authority": ["authority_only_ns", "check_authority_only_ns", "covers_cached_ns"],
    "specter_dns": ["dns_qps", "knot_qps", "dns_vs_knot", "dns_latency_ms"],
    "specter_frames": ["frame_cpu_us_per_call"],
    "specter_h2_inprocess": ["h2_inprocess_cpu_us_per_request", "h2_inprocess_cpu_us_median"],
    "specter_http1_inprocess": ["http1_inprocess_cpu_us_per_request", "http1_inprocess_cpu_us_median"],
    "specter_kv": [
        "ring_puts_per_s",
        "aof_puts_per_s",
        "handover_100k_s",
        "hops_1024",
        "ring_cpu_us_per_put",
    ],
    "specter_tunnel": ["tunnel_rps", "c_over_b", "h2_tunnel_rps", "h2_gateway_cpu_us", "tunnel_bulk_MBps"],
}

#: Flags a script cannot start without (argparse names missing ones first).
REQUIRED = {"raftload": ["--cert-dir", "certs", "--server", "n1=127.0.0.1:1"]}


def _scripts() -> list[str]:
    return sorted(
        name[: -len(".py")] for name in os.listdir(BENCH) if name.endswith(".py") and not name.startswith("_")
    )


def _run(argv: list[str], tmp: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # A temporary directory of the test's own: whatever the script leaves in
    # its TMPDIR shows.
    env = dict(os.environ, TMPDIR=tmp)
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


class ScriptListTests(SynchronousTestCase):
    def test_everyScriptListed(self) -> None:
        """
        Every entry point under bench/ has its headline keys listed here
        (so each gets the command-line tests below).
        """
        self.assertEqual(_scripts(), sorted(HEADLINES))


class HelpTests(SynchronousTestCase):
    """
    C{--help} and an unknown flag, for each script (test methods added
    below, one per script).
    """

    def checkHelp(self, name: str) -> None:
        tmp = self.mktemp()
        os.makedirs(tmp)
        done = _run([os.path.join("bench", name + ".py"), "--help"], tmp)
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertTrue(done.stdout.startswith(f"usage: bench/{name}.py"), done.stdout[:200])
        missing = [key for key in HEADLINES[name] if key not in done.stdout]
        self.assertEqual(missing, [], f"bench/{name}.py --help does not name these keys")
        self.assertEqual(os.listdir(tmp), [], "--help left files behind")

    def checkUnknownFlag(self, name: str) -> None:
        tmp = self.mktemp()
        os.makedirs(tmp)
        done = _run([os.path.join("bench", name + ".py"), *REQUIRED.get(name, []), "--no-such-flag"], tmp)
        self.assertEqual(done.returncode, 2)
        self.assertEqual(done.stdout, "")
        lines = done.stderr.splitlines()
        self.assertEqual(len(lines), 1, done.stderr)
        self.assertIn("--no-such-flag", lines[0])
        self.assertTrue(lines[0].startswith(f"bench/{name}.py: "), lines[0])
        self.assertEqual(os.listdir(tmp), [])


def _addScriptTests() -> None:
    for name in _scripts():

        def help(self: HelpTests, name: str = name) -> None:
            self.checkHelp(name)

        def unknown(self: HelpTests, name: str = name) -> None:
            self.checkUnknownFlag(name)

        help.__doc__ = f"bench/{name}.py --help: usage naming its keys, exit 0, nothing left behind."
        unknown.__doc__ = f"bench/{name}.py --no-such-flag: one line, exit 2."
        setattr(HelpTests, f"test_help_{name}", help)
        setattr(HelpTests, f"test_unknownFlag_{name}", unknown)


_addScriptTests()


#: A benchmark built on bench/_benchcli.py: starts a child process (its
#: process group's leader, as the benchmarks start daemons) and a plain
#: child, makes a temporary directory, prints their pids and the
#: directory, then does what argv[1] says.
DRIVER = textwrap.dedent(
    """
    import os, subprocess, sys
    sys.path.insert(0, {bench!r})
    import _benchcli

    def main():
        parser = _benchcli.parser(__doc__, ["figure"])
        parser.add_argument("mode")
        mode = parser.parse_args().mode
        with _benchcli.phase("the phase"):
            work = _benchcli.tempdir("driver-")
            leader = subprocess.Popen(["sleep", "600"], start_new_session=True)
            plain = subprocess.Popen(["sleep", "600"])
            print(leader.pid, plain.pid, work, flush=True)
            if mode == "fail":
                raise RuntimeError("it broke\\nbadly")
            if mode == "exit":
                raise SystemExit("no answer from the node")
            if mode == "wait":
                sys.stdin.readline()
            if mode == "react":
                from twisted.internet.defer import Deferred

                async def go(reactor):
                    try:
                        print("waiting", flush=True)
                        await Deferred()
                    finally:
                        print("finally ran", flush=True)

                _benchcli.react(go)
        print("figure=1")

    _benchcli.run(main)
    """
)


class EndingTests(SynchronousTestCase):
    """
    How a benchmark built on bench/_benchcli.py ends.
    """

    def start(self, mode: str) -> tuple[subprocess.Popen[str], list[int], str]:
        path = self.script = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write(DRIVER.format(bench=BENCH))
        proc = subprocess.Popen(
            [sys.executable, path, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.addCleanup(self.reap, proc)
        assert proc.stdout is not None
        leader, plain, work = proc.stdout.readline().split()
        return proc, [int(leader), int(plain)], work

    def reap(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)

    def assertCleanedUp(self, pids: list[int], work: str) -> None:
        for pid in pids:
            # Reaped by the benchmark (not a zombie of it) and not running.
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"process {pid} left running")
        self.assertFalse(os.path.exists(work))
        self.assertTrue(work.startswith(tempfile.gettempdir()))

    def finish(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        # Not communicate(): the first line, read already, may have brought
        # more of the output into the pipe's buffer.
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait(60)
        return out, err

    def test_success(self) -> None:
        """
        A benchmark that succeeds exits 0 with its figures last; what it
        started is stopped.
        """
        proc, pids, work = self.start("ok")
        out, err = self.finish(proc)
        self.assertEqual((proc.returncode, err), (0, ""))
        self.assertEqual(out.splitlines()[-1], "figure=1")
        self.assertCleanedUp(pids, work)

    def test_failedPhase(self) -> None:
        """
        An exception in a phase is one line on stderr naming the phase and
        the reason, exit status 1, no traceback.
        """
        proc, pids, work = self.start("fail")
        out, err = self.finish(proc)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(out, "")
        self.assertEqual(
            err.splitlines(),
            [f"bench/{os.path.basename(self.script)}: the phase failed: RuntimeError: it broke ... badly"],
        )
        self.assertCleanedUp(pids, work)

    def test_exitWithMessage(self) -> None:
        """
        C{SystemExit("why")} in a phase is the same one line and exit 1.
        """
        proc, pids, work = self.start("exit")
        _, err = self.finish(proc)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.endswith(": the phase failed: no answer from the node\n"), err)
        self.assertCleanedUp(pids, work)

    def test_sigterm(self) -> None:
        """
        SIGTERM (twice, as timeout(1) sends it) is one line naming the
        signal and the phase, exit status 143; the children and the
        temporary directory are gone.
        """
        proc, pids, work = self.start("wait")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        _, err = self.finish(proc)
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("interrupted by SIGTERM during the phase", err)
        self.assertCleanedUp(pids, work)

    def test_sigintInReactor(self) -> None:
        """
        SIGINT while the reactor runs the benchmark cancels it: its
        finally blocks run, then the one line and exit 130.
        """
        proc, pids, work = self.start("react")
        assert proc.stdout is not None
        self.assertEqual(proc.stdout.readline(), "waiting\n")
        proc.send_signal(signal.SIGINT)
        out, err = self.finish(proc)
        self.assertEqual(proc.returncode, 128 + signal.SIGINT)
        self.assertEqual(out, "finally ran\n")
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("interrupted by SIGINT during the phase", err)
        self.assertCleanedUp(pids, work)
